//! # oxccl-transport: one trait that moves bytes between ranks
//!
//! Every fabric oxccl speaks — shared memory between processes of one node ([`shm`]), TCP
//! ([`tcp`]), an in-process queue for thread ranks ([`loopback`]), ibverbs RDMA (feature
//! `rdma`) — implements the same small non-blocking [`Transport`] trait family, shaped after
//! NCCL's net plugin API and rust-ibverbs' type-state connections. Built-in fabrics get no
//! private shortcuts: porting oxccl to a new fabric means implementing these traits and passing
//! [`conformance::run_all`] (see `transport/README.md`).
//!
//! ## The objects
//!
//! * [`Transport`]: a fabric, one value per rank. `listen` gives a [`Listener`] whose
//!   [`Address`] serialises to bytes (that is what a bootstrap store carries); `connect` to an
//!   address and `poll_accept` on a listener give a [`PendingConnection`], which can only be
//!   polled until it yields a [`Connection`] (type state: a half-open connection cannot send).
//!   `register` allocates memory the fabric moves fastest ([`MemoryRegion`]).
//! * [`Connection`]: bidirectional. `isend`/`irecv` post a message with a [`Tag`] and return a
//!   `#[must_use]` [`Request`] that borrows the connection and the buffer until it completes;
//!   either may answer [`Post::Retry`] ("out of resources, try again"; `irecv` hands the buffer
//!   back). `irecv_view` is the zero-copy receive: a [`RecvView`] hands out [`Chunk`]s that
//!   point into the transport's own memory (the shared-memory ring), so a collective reduces
//!   straight from them into its destination. `close` is explicit; drop closes too.
//! * [`Request::test`] drives progress and reports completion with the byte count. There is no
//!   background thread: a request progresses only while it (or another request of the same
//!   connection) is tested. The [`wait`] helpers block with a deadline.
//! * [`stream`]: the stream face. [`Connection::into_stream`] turns any connection into a
//!   [`Stream`] (write / peek / consume, and a [`Mailbox`] for whole tiny messages where the
//!   ends share memory): what a collective's executor moves its bytes over. `shm` and
//!   `loopback` implement it on one ring layout, every other fabric through the generic
//!   proxy ([`stream::ProxyStream`]).
//! * [`dynamic`]: object-safe mirrors ([`dynamic::DynTransport`]) to pick a fabric at run
//!   time; `Box<dyn DynTransport>` is itself a [`Transport`].
//! * [`fault::Faulty`] wraps any transport and injects delay, a dropped connection, a
//!   corrupted byte or a stall, for reliability tests.
//! * [`conformance`]: the suite every transport passes; `transport/README.md` is the porting
//!   guide, with `examples/mailbox.rs` as a complete minimal transport.
//!
//! ## Contracts
//!
//! * **Ordering**: on one connection, messages with the same tag are matched in the order
//!   they were sent and the receives posted; different tags are independent (a message whose
//!   receive is not posted yet is buffered, so receiving tags out of order never deadlocks).
//! * **Sizes**: a message longer than the receive buffer fails that receive with
//!   [`Error::Truncated`]; a shorter one completes with its length; a view must match exactly
//!   ([`Error::SizeMismatch`]). Both discard the message and keep the connection usable.
//!   Zero-length messages are legal.
//! * **Sends progress only while tested**, in posting order: a rank that sends and receives at
//!   once waits on both ([`wait::wait_all`]), as a collective's step does.
//! * **Dropping** an incomplete request abandons it; the buffer is free again when drop returns.
//!   A message abandoned half-way breaks the connection ([`Error::Broken`]).
//! * **Peer death**: a peer that closes or dies makes pending and later receives that nothing
//!   can satisfy fail with [`Error::PeerClosed`] — never a hang. Messages completed before
//!   the close are still delivered.
//! * **Threads**: connections are `Send` (move one per thread), not `Sync`; requests stay on
//!   the connection's thread. Connections keep what they need alive (`Arc`s), so the transport
//!   and listener may be dropped first.
//! * **Deadlines**: every blocking helper takes a [`wait::Deadline`]; the default is
//!   `OXCCL_TIMEOUT` seconds, else [`wait::DEFAULT_TIMEOUT`] (60 s). Waiting spins for
//!   `OXCCL_SPIN_US` (50 us), then yields the core, then sleeps ([`wait::Backoff`]).
//!
//! ## Errors
//!
//! One [`Error`] type. Errors about a peer name it ([`Connection::peer`]); a bad frame from a
//! peer closes that connection; a taken port is [`Error::AddrInUse`] with the address; an
//! absent fabric is [`Error::NotAvailable`]. [`Error::is_fatal`] tells whether the connection
//! can still be used.
//!
//! ## Example
//!
//! ```
//! use oxccl_transport::{loopback::Loopback, wait, Connection};
//!
//! # fn main() -> oxccl_transport::Result<()> {
//! let (a, b) = (Loopback::new(), Loopback::new());
//! let deadline = wait::Deadline::after(std::time::Duration::from_secs(10));
//! let (ca, cb) = wait::connect_pair(&a, &b, deadline)?;
//! wait::send(&ca, 7, b"hello", deadline)?;
//! let mut buf = [0u8; 16];
//! let n = wait::recv(&cb, 7, &mut buf, deadline)?;
//! assert_eq!(&buf[..n], b"hello");
//! ca.close()?;
//! # Ok(())
//! # }
//! ```

mod api;
pub mod conformance;
pub mod dynamic;
mod error;
pub mod fault;
pub mod loopback;
mod matching;
pub mod rdma;
mod region;
pub mod shm;
pub mod stream;
pub mod tcp;
pub mod wait;

pub use api::{
    Address, Chunk, Connection, Listener, MemoryRegion, PendingConnection, Post, RecvView, Release,
    Request, Setup, Tag, Transport,
};
pub use error::{Error, Result};
pub use region::HostRegion;
pub use stream::{Mailbox, Stream, StreamConfig};
