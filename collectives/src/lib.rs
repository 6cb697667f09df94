//! # oxccl-collectives: the communicator and the algorithms
//!
//! What users call: `comm.all_reduce(...)`. A [`Communicator`] is a group of ranks (threads of
//! one process, processes of one host, or processes across hosts) with a link to every peer;
//! its operations are the collectives of NCCL and MPI: [`Communicator::all_reduce`] (and
//! `_in_place`), [`Communicator::reduce_scatter`], [`Communicator::all_gather`],
//! [`Communicator::broadcast`], [`Communicator::reduce`], [`Communicator::all_to_all`],
//! [`Communicator::barrier`], [`Communicator::send`] / [`Communicator::recv`], typed over every
//! [`Element`] and on bytes with a run-time [`DataType`] (`*_bytes`), blocking, or
//! non-blocking: on owned buffers with `start_*` / [`Communicator::start`] and
//! [`Pending::wait`], on borrowed ones inside [`Communicator::scope`] ([`Request`]), and
//! several together in a [`Communicator::group`] (NCCL's `ncclGroupStart/End`).
//! Gather, scatter and the uneven collectives ([`Communicator::gather`],
//! [`Communicator::scatter`], [`Communicator::all_gather_v`], [`Communicator::reduce_scatter_v`],
//! [`Communicator::all_to_all_v`], with per-rank counts and displacements as [`Parts`]) are
//! typed and on bytes.
//!
//! Algorithms are data: each one is a function that returns a [`schedule::Schedule`], which a
//! verifier checks symbolically ([`verify`]), an executor runs over the links and the kernels,
//! and a simulator ([`sim`]) runs over a model of a cluster. The executor pipelines chunks and
//! fuses the reduction into the receive: a receive-reduce reads the peer's bytes straight out
//! of the shared-memory ring and the local operand from the caller's input, and writes the
//! result once, where the schedule wants it.
//!
//! ## Making a communicator
//! - [`Communicator::local`]`(n)`: `n` ranks as threads (tests, embedding), over in-memory rings
//!   ([`Communicator::local_with`] picks shared-memory files or TCP instead).
//! - [`Communicator::from_env`] / [`Communicator::init`]: one rank of a job started by `mpirun`,
//!   `srun`, `torchrun`, `oxccl-bench --ranks N` or by hand with `OXCCL_RANK`, `OXCCL_SIZE`,
//!   `OXCCL_STORE_ADDR` ([`Bootstrap`] lists the variables). Rank 0 serves a small TCP store
//!   where the ranks exchange addresses; every rank proves it knows the job's secret
//!   (`OXCCL_SECRET`), and a stranger is refused. Each rank reports where it runs on its
//!   host's `oxccl-topo` map (host, package, NUMA node, cores, GPUs and NICs near it;
//!   `OXCCL_TOPO_FILE`, `OXCCL_BIND`), and every rank gets the whole [`Topology`] ([`map`]).
//!   The fabric of each pair is the first that can connect it on that map: shared-memory
//!   rings within a host (same kernel boot id, hostname, network and pid namespace), the
//!   network fabric across.
//!
//! - [`Communicator::split`] / [`Communicator::dup`]: child communicators of a communicator
//!   (a collective, made over the parent's links: no second bootstrap).
//!
//! ## Contracts
//! - Every rank makes the same calls in the same order, with the same counts, dtypes, ops and
//!   roots. A call opens each stream it uses with a 32-byte header saying what it is; a rank
//!   whose peer called something else gets [`Error::Mismatch`] instead of corrupt data.
//! - Calls on one communicator run one at a time, in the order they were made (also across
//!   threads, and for the non-blocking forms, whose order is taken when they start). Sends and
//!   receives that are posted (a [`Group`], [`Scope::send`] / [`Scope::recv`],
//!   [`Communicator::start_send`] / [`Communicator::start_recv`]) take their place in that order
//!   when posted and then progress together with everything queued after them, so any matched
//!   pattern of them completes whatever the sizes; per pair of ranks they match in order, and a
//!   collective between them must sit in the same place on both ranks (NCCL's rule).
//! - Results are identical on every rank (each element is reduced once and then copied), and
//!   reduced in a fixed order for a given algorithm, size and rank count. Avg is Sum with the
//!   division fused into the reduction that completes each element.
//!
//! ## Errors
//! Bad arguments are [`Error::Invalid`] before anything is sent. Every wait is bounded:
//! no progress for [`Options::timeout`] (`OXCCL_TIMEOUT`) is [`Error::Timeout`] naming the
//! peer; a peer whose process died, whose connection broke or that aborted is
//! [`Error::PeerFailed`]. After any failure during a call the communicator aborts: it closes its
//! links (so its peers fail at once instead of at their timeout) and every later call returns
//! [`Error::Aborted`]. [`Communicator::abort`] does the same on request, from any thread. A rank
//! whose call broke because another rank failed first gets [`Error::Remote`], naming that rank,
//! its operation and the cause ([`Error::failed_rank`]): the ranks leave a notice on a shared
//! board (rank 0's store) before they abort.
//!
//! ## Example
//! ```
//! use oxccl_collectives::{Communicator, ReduceOp};
//!
//! let ranks = Communicator::local(3)?;
//! let threads: Vec<_> = ranks
//!     .into_iter()
//!     .map(|comm| {
//!         std::thread::spawn(move || -> oxccl_collectives::Result<Vec<f32>> {
//!             let mine = vec![comm.rank() as f32 + 1.0; 4];
//!             let mut sum = vec![0.0; 4];
//!             comm.all_reduce(&mine, &mut sum, ReduceOp::Sum)?;
//!             let mut everyone = vec![0.0; 3];
//!             comm.all_gather(&[comm.rank() as f32], &mut everyone)?;
//!             assert_eq!(everyone, [0.0, 1.0, 2.0]);
//!             Ok(sum)
//!         })
//!     })
//!     .collect();
//! for t in threads {
//!     assert_eq!(t.join().unwrap()?, vec![6.0; 4]);
//! }
//! # Ok::<(), oxccl_collectives::Error>(())
//! ```

pub mod algorithms;
pub mod bootstrap;
mod comm;
pub mod error;
mod exec;
mod group;
mod link;
pub mod logging;
pub mod map;
mod ops;
mod ops_v;
pub mod options;
pub mod schedule;
pub mod sim;
mod split;
pub mod tuner;
pub mod verify;

pub use bootstrap::{Bootstrap, StoreAddr};
pub use comm::Communicator;
pub use error::{Error, Result};
pub use group::{Group, Request, Scope};
pub use link::LinkKind;
pub use map::{Locality, Topology};
pub use ops::Pending;
pub use ops_v::Parts;
pub use options::{
    Bind, LocalTransport, NetChoice, Options, TransportChoice, COLLECTIVE_SINGLE_COPY_MIN,
};
pub use oxccl_kernels::{DataType, Element, ReduceOp};
