//! # oxccl-collectives: the communicator and the algorithms
//!
//! What users call: `comm.all_reduce(...)`. Algorithms are data: each one is a function that
//! returns a [`schedule::Schedule`], which a verifier checks symbolically, an executor runs over
//! the transports and kernels, and a simulator runs over a model of a cluster.
//!
//! (Being built: see the collectives issue.)

pub mod algorithms;
pub mod schedule;
pub mod tuner;
pub mod verify;
pub mod sim;
