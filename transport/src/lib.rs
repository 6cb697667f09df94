//! # oxccl-transport: one trait that moves bytes between ranks
//!
//! Shared memory, TCP and ibverbs RDMA behind one small non-blocking trait, the porting point
//! for new fabrics.
//!
//! (Being built: see the transport issue.)

pub mod rdma;
