//! The stream face: a connection as an ordered byte stream that a collective writes into and
//! reduces straight out of (NCCL's connection FIFO).
//!
//! The message face ([`crate::Connection`]) moves tagged messages whose requests borrow their
//! buffers; a collective's executor wants something simpler and faster: per peer, one byte
//! stream in each direction, non-blocking, where a receive is a view of what arrived
//! ([`Stream::peek`]) that the executor reduces from and then releases ([`Stream::consume`]).
//!
//! Every connection becomes a stream with [`crate::Connection::into_stream`]:
//!
//! * `shm` and `loopback` implement it natively over one ring pair (the layout in
//!   `stream/ring.rs`: for `shm` the very rings of the connection's file, so the view is the
//!   shared memory itself), with a mailbox per direction for whole tiny messages
//!   ([`Stream::mailbox`]).
//! * Every other fabric (TCP, RDMA, a port) gets the default: the generic proxy
//!   ([`ProxyStream`]), a thread per connection that moves what the executor writes into an
//!   in-memory ring through the fabric's messages, and what arrives into the executor's
//!   incoming ring, as NCCL's proxy thread does for its network transports.
//!
//! ## Contract (checked by [`crate::conformance`])
//!
//! * Bytes arrive in order, exactly once, whatever the split of writes and consumes.
//! * `write` takes what fits (possibly 0) and never blocks; `peek` shows contiguous arrived
//!   bytes (possibly none) and never blocks; `consume(n)` releases the first `n` of them.
//! * Closing or dropping one end (or aborting it) lets the peer read what was written before,
//!   then its `peek` fails with [`Error::PeerClosed`] (a fabric failure is that failure,
//!   carried as the error itself, so [`Error::is_fatal`] and the source chain survive).
//!   [`Stream::check_alive`] notices a dead peer process or a failed fabric while idle.
//! * Where a stream has a [`Stream::doorbell`], the peer rings it after every write, consume,
//!   mailbox post, close and abort, so an idle waiter can sleep in the kernel on it
//!   ([`doorbell`] says how) instead of polling.
//! * A connection becomes a stream only when no message is in flight on it; both ends must
//!   convert (messages before that, e.g. a greeting, are fine).
//! * Where [`Stream::single_copy_min`] is `Some(min)` (native streams with the single-copy path
//!   on, the same value at both ends), every message of at least `min` bytes starts with
//!   [`Stream::offer`] at the sender and [`Stream::arrival`] at the receiver; then either the
//!   receiver copies it straight out of the sender's memory ([`Stream::pull`]) or its bytes
//!   follow in the stream as usual (see `stream/large.rs`), as the sender chose for this
//!   message from what the receiver measured of both paths (`stream/choice.rs`).

mod choice;
pub mod doorbell;
mod large;
mod nt;
mod proxy;
pub(crate) mod ring;

pub use choice::{single_copy_choice_from_env, Choice};
pub use doorbell::Doorbell;
pub(crate) use large::SingleCopy;
pub use large::{Arrival, Offer, Offering, Pull, LARGE_HEADER};
pub use nt::{ring_nt_from_env, RingNt, NT_MIN_WRITE};
pub use proxy::{proxy_spin, ProxyStream, PIECE, TAG_DATA, TAG_LEN};
pub(crate) use proxy::{stopped, Idle, ProxyEnds, Stop};
pub use ring::{MailboxMessage, MAILBOX_BYTES};

use std::time::Duration;

use crate::error::{Error, Result};
use ring::{RingReader, RingWriter};

/// Default bytes per ring and direction (`OXCCL_RING_BYTES`).
pub const DEFAULT_RING_BYTES: usize = 1 << 20;

/// Default smallest message of the single-copy path (`OXCCL_SINGLE_COPY_MIN`; 0 turns it
/// off): from here on each message starts with a header and its sender chooses pulled, through
/// the ring, or through the ring with non-temporal stores (`choice`). 8 KiB by measurement: in
/// the development VM's slow cross-core state a ring moves 2-3 GB/s where a pull or
/// non-temporal stores move ~10, and the choice is what lets a point-to-point send of 8-128 KiB
/// keep up with Open MPI there (2-rank `sendrecv`, session 11: 0.22-0.51x of Open MPI at
/// 16-128 KiB with 256 KiB, 1.34-2.08x with 8 KiB; `bench/RESULTS.md`, "Session 11"). The
/// collectives offer only messages that may be pulled, and their own schedules' messages only
/// from `oxccl_collectives::COLLECTIVE_SINGLE_COPY_MIN` (256 KiB), where a call's stores are
/// chosen per call instead.
pub const DEFAULT_SINGLE_COPY_MIN: usize = 8 << 10;

/// Bytes a pulled (single-copy) receive copies per step: large enough that the system call and
/// its page pinning are paid rarely, small enough that deadlines, aborts and forwarding see
/// progress often (about 100 us a piece). `process_vm_readv` out of a forked child on this
/// machine, thread CPU time per byte: 1 MiB pieces move 12.0 GB/s of a 2 MiB buffer and 7.7 of
/// a 32 MiB one, 256 KiB pieces 10.9 and 7.3, 128 KiB pieces 10.2 and 6.7 (loaded machine,
/// median of 5; `bench/RESULTS.md`, issue 12 session 6). `oxccl-bench transport` pulls the same.
pub const PULL_PIECE: usize = 1 << 20;

/// How streams are built: the ring size of in-memory rings (`loopback`, the proxy's; `shm`
/// rings have the size of the connection's file, set by the same variable), how long an idle
/// proxy polls before it yields its core, and the single-copy threshold of in-memory native
/// streams (`loopback`; `shm` agrees on its own at connect, from `ShmConfig`).
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Bytes per ring and direction, a power of two from 4 KiB to 1 GiB.
    pub ring_bytes: usize,
    /// How long an idle proxy polls before it yields (see [`proxy_spin`]).
    pub spin: Duration,
    /// Messages of at least this many bytes take the single-copy path (0: off).
    pub single_copy_min: usize,
    /// How the sender of such a message chooses between pulled and through the ring
    /// (`OXCCL_SINGLE_COPY_CHOICE`; native streams, `shm` included).
    pub single_copy_choice: Choice,
    /// Which writes without a header take non-temporal stores (`OXCCL_RING_NT`; every
    /// stream whose executor end writes a ring: native ones and the proxy's).
    pub ring_nt: RingNt,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            ring_bytes: DEFAULT_RING_BYTES,
            spin: crate::wait::spin_budget(),
            single_copy_min: DEFAULT_SINGLE_COPY_MIN,
            single_copy_choice: Choice::Auto,
            ring_nt: RingNt::Call,
        }
    }
}

impl StreamConfig {
    /// The defaults, with `OXCCL_RING_BYTES`, `OXCCL_SINGLE_COPY_MIN`,
    /// `OXCCL_SINGLE_COPY_CHOICE` and `OXCCL_RING_NT` when set.
    pub fn from_env() -> Result<Self> {
        Ok(StreamConfig {
            ring_bytes: ring_bytes_from_env()?,
            single_copy_min: single_copy_min_from_env()?,
            single_copy_choice: single_copy_choice_from_env()?,
            ring_nt: ring_nt_from_env()?,
            ..StreamConfig::default()
        })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_ring_bytes(self.ring_bytes)
    }
}

/// `OXCCL_RING_BYTES`, else [`DEFAULT_RING_BYTES`].
pub fn ring_bytes_from_env() -> Result<usize> {
    match std::env::var("OXCCL_RING_BYTES") {
        Err(_) => Ok(DEFAULT_RING_BYTES),
        Ok(v) => {
            let r = v.trim().parse().map_err(|_| Error::Config {
                var: "OXCCL_RING_BYTES",
                value: v.clone(),
                reason: "expected a number of bytes".into(),
            })?;
            check_ring_bytes(r)?;
            Ok(r)
        }
    }
}

/// `OXCCL_SINGLE_COPY_MIN` (bytes, 0: off), else [`DEFAULT_SINGLE_COPY_MIN`]. Values below
/// [`LARGE_HEADER`]` * 64` are raised to it: a header per message would cost more than the copy
/// it saves.
pub fn single_copy_min_from_env() -> Result<usize> {
    match std::env::var("OXCCL_SINGLE_COPY_MIN") {
        Err(_) => Ok(DEFAULT_SINGLE_COPY_MIN),
        Ok(v) => {
            let n: usize = v.trim().parse().map_err(|_| Error::Config {
                var: "OXCCL_SINGLE_COPY_MIN",
                value: v.clone(),
                reason: "expected a number of bytes (0: off)".into(),
            })?;
            Ok(if n == 0 { 0 } else { n.max(MIN_SINGLE_COPY) })
        }
    }
}

/// The smallest threshold accepted (smaller values are raised to it).
pub const MIN_SINGLE_COPY: usize = 64 * LARGE_HEADER;

pub(crate) fn check_ring_bytes(r: usize) -> Result<()> {
    if ring::valid_cap(r) {
        Ok(())
    } else {
        Err(Error::Config {
            var: "OXCCL_RING_BYTES",
            value: r.to_string(),
            reason: "must be a power of two from 4096 to 1073741824".into(),
        })
    }
}

/// One end of a byte stream between two ranks (see the module documentation).
pub trait Stream: Send {
    /// The fabric underneath (`shm`, `loopback`, `tcp`, `rdma`, ...).
    fn fabric(&self) -> &'static str;
    /// The peer, as the fabric describes it.
    fn peer(&self) -> &str;
    /// Copies as much of `data` as fits without waiting; how many bytes.
    fn write(&mut self, data: &[u8]) -> Result<usize>;
    /// The bytes that arrived and are contiguous (possibly none), without waiting. Each call
    /// shows what arrived since the last one too, even when the caller left part of the last
    /// view unconsumed (a reduction waiting for the rest of an element).
    fn peek(&mut self) -> Result<&[u8]>;
    /// Releases the first `n` bytes of the last view (at most its length).
    fn consume(&mut self, n: usize);
    /// The mailbox for whole tiny messages, on fabrics that have one (`shm`, `loopback`).
    fn mailbox(&mut self) -> Option<Mailbox<'_>> {
        None
    }
    /// Messages of at least this many bytes take the single-copy path (both ends of a stream
    /// return the same value); `None`: this stream has none.
    fn single_copy_min(&self) -> Option<usize> {
        None
    }
    /// Starts a large message of `len` bytes at `ptr` (at least [`Stream::single_copy_min`]):
    /// writes its header, whole or not at all (`Ok(None)`: no room yet, call again). Where not
    /// all bytes are ready yet (`how.whole` false) they always follow in the stream.
    ///
    /// # Safety
    /// When it returns [`Offer::Pull`], `[ptr, ptr + len)` stays valid and unchanged until
    /// [`Stream::taken`] says so or the stream is closed or aborted (which waits for a peer
    /// inside a copy).
    unsafe fn offer(&mut self, ptr: *const u8, len: usize, how: Offering) -> Result<Option<Offer>> {
        let _ = (ptr, len, how);
        Err(no_single_copy(self.fabric()))
    }
    /// Whether the peer has copied pull offer `ticket` out of our memory.
    fn taken(&mut self, ticket: u64) -> Result<bool> {
        let _ = ticket;
        Err(no_single_copy(self.fabric()))
    }
    /// Reads the header of the next message, a large one of `len` bytes (`Ok(None)`: not in
    /// yet). A header that does not match is [`Error::BadFrame`].
    fn arrival(&mut self, len: usize) -> Result<Option<Arrival>> {
        let _ = len;
        Err(no_single_copy(self.fabric()))
    }
    /// Copies bytes `[pos, pos + dst.len())` of a pulled message into `dst`.
    fn pull(&mut self, message: &Pull, pos: usize, dst: &mut [u8]) -> Result<()> {
        let _ = (message, pos, dst);
        Err(no_single_copy(self.fabric()))
    }
    /// Done with the oldest pulled message: the sender may reuse its memory.
    fn pulled(&mut self) {}
    /// Which of this end's writes without a header take non-temporal stores from now on
    /// (`OXCCL_RING_NT`'s rules), where this end writes a ring in shared memory (`shm`);
    /// elsewhere nothing changes.
    fn set_ring_nt(&mut self, nt: RingNt) {
        let _ = nt;
    }
    /// Whether this end's host has more ranks than cores (`crowded`): then its messages at
    /// least as large as the ring, or sent alongside others that together are
    /// ([`Offering::alongside`]), are pulled wherever the peer can read our memory, whatever
    /// the speeds measured (`stream::choice`, "Crowded hosts"). Streams without the
    /// single-copy path ignore it.
    fn set_crowded(&mut self, crowded: bool) {
        let _ = crowded;
    }

    /// The doorbell this end can sleep on while it waits for the peer, on fabrics that have
    /// one (`shm`, `loopback`): the peer rings it when it writes, consumes (frees space),
    /// posts to the mailbox, closes or aborts; a proxied stream's is rung by its proxy thread.
    /// Without one, waiters poll with a backoff.
    fn doorbell(&self) -> Option<Doorbell> {
        None
    }
    /// Slow checks for an idle waiter: is the peer (its process, the fabric) still there?
    fn check_alive(&mut self) -> Result<()>;
    /// Starts an orderly close without waiting: what was written still reaches the peer
    /// (dropping the stream waits for that where a proxy must send it).
    fn close(&mut self);
    /// Gives up at once: the peer sees the stream closed at its next wait.
    fn abort(&mut self);
}

fn no_single_copy(fabric: &'static str) -> Error {
    Error::Usage {
        transport: fabric,
        reason: "this stream has no single-copy path (single_copy_min is None)".into(),
    }
}

/// The mailbox of a native stream: whole tiny messages, two slots per direction, polled by
/// sequence number (message `n` goes to slot `n % 2`; the sender posts `n` only after the
/// receiver is done with `n - 2`, which the tiny all-reduce's rounds guarantee).
pub struct Mailbox<'a> {
    tx: &'a mut RingWriter,
    rx: &'a mut RingReader,
    fabric: &'static str,
    peer: &'a str,
}

impl Mailbox<'_> {
    /// Posts message `seq` with fingerprint `fp`, an `extra` word and up to
    /// [`MAILBOX_BYTES`] of payload.
    pub fn post(&mut self, seq: u64, fp: u32, extra: u64, data: &[u8]) -> Result<()> {
        self.tx
            .post(seq, fp, extra, data)
            .map_err(|()| Error::TooLarge {
                transport: "mailbox",
                len: data.len(),
                limit: MAILBOX_BYTES,
            })
    }
    /// Whether the peer's message `seq` is in.
    pub fn posted(&self, seq: u64) -> bool {
        self.rx.posted(seq)
    }
    /// Copies the first `len` bytes of message `seq` (fingerprint, extra word, payload) into
    /// `out` if it is in.
    pub fn poll(&self, seq: u64, out: &mut MailboxMessage, len: usize) -> bool {
        self.rx.poll(seq, out, len)
    }
    /// Whether stream bytes wait to be read ([`Error::PeerClosed`] once the stream is
    /// closed and empty).
    pub fn stream_pending(&mut self) -> Result<bool> {
        self.rx.pending().map_err(|()| Error::PeerClosed {
            transport: self.fabric,
            peer: self.peer.to_string(),
            during: " while a mailbox waited".into(),
        })
    }
}

/// A native stream: the two ends of a ring pair in memory both ranks see.
pub(crate) struct RingStream {
    tx: RingWriter,
    rx: RingReader,
    fabric: &'static str,
    peer: String,
    /// The peer's process where it is another process of this host, to notice its death.
    peer_pid: Option<u32>,
    /// The single-copy path, where on.
    single: Option<SingleCopy>,
    /// The large message being received, timed for the sender's choice of path.
    timing: Option<choice::Timing>,
    /// What this end measured of the large messages it received.
    measured: choice::Measured,
}

impl RingStream {
    pub(crate) fn new(
        (tx, rx): (RingWriter, RingReader),
        fabric: &'static str,
        peer: String,
        peer_pid: Option<u32>,
    ) -> Self {
        RingStream {
            tx,
            rx,
            fabric,
            peer,
            peer_pid: peer_pid.filter(|&p| p != 0 && p != std::process::id()),
            single: None,
            timing: None,
            measured: choice::Measured::default(),
        }
    }

    /// With non-temporal stores for the writes `nt` says.
    pub(crate) fn with_ring_nt(mut self, nt: RingNt) -> Self {
        self.tx.set_ring_nt(nt);
        self
    }

    /// With the single-copy path (`None`: without).
    pub(crate) fn with_single_copy(mut self, single: Option<SingleCopy>) -> Self {
        self.single = single;
        self
    }

    fn closed(&self, during: &str) -> Error {
        Error::PeerClosed {
            transport: self.fabric,
            peer: self.peer.clone(),
            during: during.to_string(),
        }
    }
}

impl Stream for RingStream {
    fn fabric(&self) -> &'static str {
        self.fabric
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    #[inline]
    fn write(&mut self, data: &[u8]) -> Result<usize> {
        self.tx
            .write(data)
            .map_err(|()| self.closed(" while a stream write waited"))
    }
    #[inline]
    fn peek(&mut self) -> Result<&[u8]> {
        match self.rx.peek() {
            Ok(v) => Ok(v),
            Err(()) => Err(Error::PeerClosed {
                transport: self.fabric,
                peer: self.peer.clone(),
                during: " while a stream read waited".into(),
            }),
        }
    }
    #[inline]
    fn consume(&mut self, n: usize) {
        self.rx.consume(n);
        if self.timing.is_some() {
            self.consumed_large();
        }
    }
    fn mailbox(&mut self) -> Option<Mailbox<'_>> {
        Some(Mailbox {
            tx: &mut self.tx,
            rx: &mut self.rx,
            fabric: self.fabric,
            peer: &self.peer,
        })
    }
    fn single_copy_min(&self) -> Option<usize> {
        self.single.as_ref().map(|s| s.min)
    }
    unsafe fn offer(&mut self, ptr: *const u8, len: usize, how: Offering) -> Result<Option<Offer>> {
        self.offer_large(ptr, len, how)
    }
    fn taken(&mut self, ticket: u64) -> Result<bool> {
        self.taken_large(ticket)
    }
    fn arrival(&mut self, len: usize) -> Result<Option<Arrival>> {
        self.arrival_large(len)
    }
    fn pull(&mut self, message: &Pull, pos: usize, dst: &mut [u8]) -> Result<()> {
        self.pull_large(message, pos, dst)
    }
    fn pulled(&mut self) {
        self.pulled_large();
    }
    fn set_ring_nt(&mut self, nt: RingNt) {
        self.tx.set_ring_nt(nt);
    }
    fn set_crowded(&mut self, crowded: bool) {
        self.set_crowded_large(crowded);
    }

    fn doorbell(&self) -> Option<Doorbell> {
        Some(self.rx.doorbell())
    }
    fn check_alive(&mut self) -> Result<()> {
        // A peer that finished is an error only for a read that waits on it (`peek` says so).
        if self.tx.aborted() {
            return Err(self.closed(" (it aborted)"));
        }
        match self.peer_pid {
            Some(pid) if !crate::shm::process_alive(pid) => {
                Err(self.closed(&format!(" (its process {pid} has exited)")))
            }
            _ => Ok(()),
        }
    }
    fn close(&mut self) {}
    fn abort(&mut self) {
        self.tx.abort();
        self.settle_pulls();
    }
}

impl Drop for RingStream {
    fn drop(&mut self) {
        self.tx.close();
        self.settle_pulls();
    }
}
