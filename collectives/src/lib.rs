//! # oxccl-collectives: the communicator and the algorithms
//!
//! What users call: `comm.all_reduce(...)`. Algorithms are data: each one is a function that
//! returns a [`schedule::Schedule`], which a verifier checks symbolically, an executor runs over
//! the transports and kernels, and a simulator runs over a model of a cluster.
//!
//! (Being built: see the collectives issue.)

pub mod algorithms;
pub mod bootstrap;
mod comm;
pub mod error;
mod exec;
mod link;
mod ops;
pub mod options;
pub mod schedule;
pub mod sim;
pub mod tuner;
pub mod verify;

pub use bootstrap::{Bootstrap, StoreAddr};
pub use comm::{Communicator, Topology};
pub use error::{Error, Result};
pub use link::LinkKind;
pub use ops::Pending;
pub use options::{LocalTransport, Options, TransportChoice};
pub use oxccl_kernels::{DataType, Element, ReduceOp};
