//! The generic proxy: the stream face for any fabric that moves messages (TCP, RDMA, a port).
//!
//! A fabric moves tagged messages whose requests borrow their buffers until they complete; the
//! executor wants a byte stream it can peek at and consume piecemeal. A proxy thread per
//! connection joins the two, as NCCL's proxy thread does for its network transports: the
//! executor reads and writes a ring pair in memory (the same layout and code as `shm`'s), and
//! the proxy moves what it finds there through the fabric.
//!
//! Each piece of the stream crosses the fabric as two messages, an 8-byte length (tag
//! [`TAG_LEN`]) and the bytes themselves (tag [`TAG_DATA`]), so the receiving proxy takes the
//! bytes with a zero-copy view of exactly that length. Outgoing pieces are sent straight from
//! the executor's ring. Incoming chunks that arrive in order are written straight into the
//! executor's ring (one copy, the one any receive needs); only chunks a fabric hands out of
//! order (TCP striped over several sockets) are put together in a buffer first, and only
//! bytes the ring has no room for yet wait in a second one.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ring::{HeapBlock, RingReader, RingWriter};
use super::{Doorbell, Stream, StreamConfig};
use crate::api::{Post, RecvView, Request, Tag};
use crate::dynamic::{BoxRequest, BoxView, DynConnection};
use crate::error::{Error, Result};
use crate::wait::Backoff;

/// Tag of the 8-byte length that announces each piece of the stream.
pub const TAG_LEN: Tag = 0x6f78_6c65_6e00_0001;
/// Tag of the piece itself.
pub const TAG_DATA: Tag = 0x6f78_6461_7461_0002;
/// Largest piece the proxy moves at once.
pub const PIECE: usize = 1 << 20;

/// How long dropping a stream waits for its proxy to hand the last bytes to the fabric.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle proxy polls before it yields its core: the transport's `OXCCL_SPIN_US`,
/// except when this host's `threads` (executors and proxies) outnumber its cores and the
/// variable is not set. A spinning proxy then holds the core that its own rank, or the rank it
/// waits for, needs: measured on 2 cores, 4 ranks over TCP, 8 B all-reduce 833 us spinning
/// 50 us against 237 us not spinning.
pub fn proxy_spin(threads: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cores && std::env::var_os("OXCCL_SPIN_US").is_none() {
        Duration::ZERO
    } else {
        crate::wait::spin_budget()
    }
}

/// How the executor wakes its idle proxy: an eventfd the proxy sleeps on in `ppoll(2)` (beside
/// its sockets, for `tcp`), written by the executor after it publishes something the proxy
/// waits for (bytes to send, space for bytes received, a close or an abort). Without it an
/// idle proxy only saw the executor's bytes at the end of a timed sleep (TCP's one-way stream
/// latency was 120-170 us, the socket's ~8). The write costs a system call only while the
/// proxy sleeps: the executor's publish is a `SeqCst` store followed by a load of `sleeping`,
/// the proxy's is a store of `sleeping`, a `SeqCst` fence and a look at the rings, so one of
/// the two sees the other (as for the doorbells of `stream::doorbell`).
pub(crate) struct Wake {
    /// What the sleeping proxy waits for from the executor: [`AWAKE`], [`FOR_BYTES`] or
    /// [`FOR_SPACE`] (bytes, or also room in the ring for what arrived).
    sleeping: AtomicU8,
    fd: File,
}

const AWAKE: u8 = 0;
const FOR_BYTES: u8 = 1;
const FOR_SPACE: u8 = 2;

impl Wake {
    fn new(fabric: &'static str) -> Result<Self> {
        // SAFETY: eventfd has no memory arguments; a non-negative result is a new descriptor
        // that nothing else owns, so `OwnedFd` may take it.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(
                fabric,
                "creating a proxy's eventfd".to_string(),
                e,
            ));
        }
        // SAFETY: see above: `raw` is a fresh descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Wake {
            sleeping: AtomicU8::new(AWAKE),
            fd: File::from(fd),
        })
    }

    /// The executor's side, after it published bytes, a close or an abort: wakes the proxy
    /// if it sleeps.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.sleeping.load(Ordering::SeqCst) != AWAKE {
            self.kick();
        }
    }

    /// The executor's side, after it consumed (freed ring space): wakes the proxy only if it
    /// sleeps waiting for space, so that a receive costs no system call and no needless
    /// wake-up of a proxy that waits on its sockets.
    #[inline]
    pub(crate) fn notify_space(&self) {
        if self.sleeping.load(Ordering::SeqCst) == FOR_SPACE {
            self.kick();
        }
    }

    fn kick(&self) {
        // A full counter (2^64 - 2 unread wake-ups) cannot happen: the proxy drains it.
        let _ = (&self.fd).write(&1u64.to_ne_bytes());
    }

    /// The proxy's side, before its last look at the rings: from here on the executor's
    /// publishes (and its consumes, with `space`: the proxy holds bytes the ring had no room
    /// for) write the eventfd.
    pub(crate) fn arm(&self, space: bool) {
        let what = if space { FOR_SPACE } else { FOR_BYTES };
        self.sleeping.store(what, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The proxy's side, after its sleep (or instead of it): stops the writes and empties the
    /// counter so that the next sleep waits again.
    pub(crate) fn disarm(&self) {
        self.sleeping.store(AWAKE, Ordering::SeqCst);
        let mut buf = [0u8; 8];
        let _ = (&self.fd).read(&mut buf);
    }

    /// The descriptor to poll for `POLLIN`.
    pub(crate) fn fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }
}

/// How an idle proxy waits: it polls for `spin` (where the host has a core to spare, see
/// [`proxy_spin`]), then sleeps in `ppoll(2)` on the executor's eventfd ([`Wake`]) and on the
/// fabric's descriptors it was given (`tcp`'s sockets; none for a generic fabric, whose
/// arrivals are seen when the sleep times out). The timeout grows from 20 us to 1 ms with the
/// idle time (as [`crate::wait::Backoff`]'s sleeps do), except for a proxy whose descriptors
/// cover everything it waits for (`tcp`) and that has nothing in flight ([`Idle::wait`]'s
/// `quiet`): that one sleeps up to [`SAFETY_NAP`], its timeouts only cost wake-ups. They were
/// most of them: on the emulated cluster (8 ranks, 2 cores) 186 339 of 191 364 `ppoll` returns
/// of the TCP proxies in a 64-256 KiB ring sweep were timeouts, ~50 000 wake-ups a second that
/// took the cores from the executors. A long sleep in the middle of a large message, though,
/// made 16-64 MiB 0.6-0.8x slower (machine loaded; no wake-up was found lost, the cause is not
/// known), so a proxy with a chunk half sent or half received keeps the short naps.
pub(crate) struct Idle {
    since: Option<Instant>,
    spin: Duration,
}

/// The longest sleep of a proxy whose descriptors cover every wake-up: only a net against a
/// lost wake-up, never the way an event is seen.
const SAFETY_NAP: Duration = Duration::from_millis(50);

impl Idle {
    pub(crate) fn new(spin: Duration) -> Self {
        Idle { since: None, spin }
    }

    /// Something moved: the next wait starts polling again.
    pub(crate) fn reset(&mut self) {
        self.since = None;
    }

    /// One idle step. `busy` is the proxy's last look at the rings, made after the executor
    /// was told to wake it: true (something to do) returns at once. `space`: the proxy holds
    /// bytes for the executor's ring that did not fit (a consume must wake it too). `quiet`:
    /// nothing is in flight and `fds` (with the eventfd) covers every wake-up.
    pub(crate) fn wait(
        &mut self,
        wake: &Wake,
        space: bool,
        quiet: bool,
        fds: &mut Vec<libc::pollfd>,
        busy: impl FnOnce() -> bool,
    ) {
        let now = Instant::now();
        let idle = now - *self.since.get_or_insert(now);
        if idle < self.spin {
            std::hint::spin_loop();
            return;
        }
        wake.arm(space);
        if !busy() {
            fds.push(libc::pollfd {
                fd: wake.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            let timeout = if quiet {
                SAFETY_NAP
            } else {
                Duration::from_micros((20 + idle.as_micros() as u64 / 100).min(1000))
            };
            poll_fds(fds, timeout);
        }
        wake.disarm();
    }
}

/// Sleeps in `ppoll(2)` until one of `fds` is ready or `timeout` passes (spurious returns are
/// possible: the caller looks again).
pub(crate) fn poll_fds(fds: &mut [libc::pollfd], timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(1) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds` holds fds.len() initialised pollfds, `ts` is a valid timespec, and no
    // signal mask is passed.
    let _ = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
}

/// What the proxy saw go wrong: the error itself until someone takes it, then its text.
#[derive(Default)]
pub(crate) struct Failure {
    error: Option<Error>,
    text: Option<String>,
}

/// The executor's end of a proxied connection.
pub struct ProxyStream {
    tx: RingWriter,
    rx: RingReader,
    failure: Arc<Mutex<Failure>>,
    /// Set by `close`: the proxy sends what is left, then closes the connection.
    closing: Arc<AtomicBool>,
    /// Wakes the proxy when it sleeps.
    wake: Arc<Wake>,
    /// Disconnected when the proxy thread ends (its sender is dropped).
    finished: mpsc::Receiver<()>,
    fabric: &'static str,
    peer: String,
}

impl ProxyStream {
    /// Starts the proxy thread for `conn`, a connection of fabric `fabric`.
    pub fn start(
        conn: Box<dyn DynConnection>,
        fabric: &'static str,
        config: &StreamConfig,
    ) -> Result<Self> {
        let peer = conn.dyn_peer().to_string();
        Self::spawn(fabric, peer, config, move |ends| {
            let ProxyEnds {
                to_net,
                from_net,
                closing,
                spin,
                failure,
                wake,
            } = ends;
            let proxy = Proxy {
                to_net,
                inbox: Inbox {
                    from_net,
                    assembly: Vec::new(),
                    pending: Vec::new(),
                    sent: 0,
                },
                failure,
                closing,
                spin,
                wake,
            };
            proxy.run(conn)
        })
    }

    /// Starts a proxy thread running `body` with the rings' far ends: the generic proxy, or a
    /// fabric's own (`tcp` reads its sockets straight into the executor's ring).
    pub(crate) fn spawn(
        fabric: &'static str,
        peer: String,
        config: &StreamConfig,
        body: impl FnOnce(ProxyEnds) + Send + 'static,
    ) -> Result<Self> {
        config.validate()?;
        let cap = config.ring_bytes;
        let block = HeapBlock::new(cap);
        let (mut tx, rx) = block.ends(cap, 0);
        tx.set_ring_nt(config.ring_nt);
        let (from_net, to_net) = block.ends(cap, 1);
        let failure = Arc::new(Mutex::new(Failure::default()));
        let closing = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wake::new(fabric)?);
        let ends = ProxyEnds {
            to_net,
            from_net,
            closing: Arc::clone(&closing),
            spin: config.spin,
            failure: Arc::clone(&failure),
            wake: Arc::clone(&wake),
        };
        let (done, finished) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("oxccl-proxy-{peer}"))
            .spawn(move || {
                let _done = done;
                body(ends)
            })
            .map_err(|e| Error::io(fabric, "starting a proxy thread".to_string(), e))?;
        Ok(ProxyStream {
            tx,
            rx,
            failure,
            closing,
            wake,
            finished,
            fabric,
            peer,
        })
    }

    /// The proxy's failure if it had one, else "the peer closed".
    fn error(&self, during: &str) -> Error {
        failure_error(&self.failure, self.fabric, &self.peer, during)
    }

    fn failed(&self) -> bool {
        self.failure
            .lock()
            .map_or(true, |f| f.error.is_some() || f.text.is_some())
    }
}

impl Stream for ProxyStream {
    fn fabric(&self) -> &'static str {
        self.fabric
    }
    fn peer(&self) -> &str {
        &self.peer
    }
    #[inline]
    fn write(&mut self, data: &[u8]) -> Result<usize> {
        match self.tx.write(data) {
            Ok(n) => {
                if n > 0 {
                    self.wake.notify();
                }
                Ok(n)
            }
            Err(()) => Err(self.error(" while a stream write waited")),
        }
    }
    #[inline]
    fn peek(&mut self) -> Result<&[u8]> {
        let (failure, fabric, peer) = (&self.failure, self.fabric, &self.peer);
        self.rx
            .peek()
            .map_err(|()| failure_error(failure, fabric, peer, " while a stream read waited"))
    }
    #[inline]
    fn consume(&mut self, n: usize) {
        self.rx.consume(n);
        // The proxy may wait for this space to put what arrived.
        self.wake.notify_space();
    }
    /// The executor's side of the rings in memory: the proxy thread rings it when it puts
    /// bytes from the network, frees space by sending, or closes, so an idle executor sleeps
    /// in the kernel instead of yielding its core to a dozen other yielding ranks (8 ranks of
    /// an emulated cluster on 2 cores: about 1 ms a step before).
    fn doorbell(&self) -> Option<Doorbell> {
        Some(self.rx.doorbell())
    }
    fn check_alive(&mut self) -> Result<()> {
        // A closed connection is an error only when this rank waits for data on it, and then
        // `peek` says so; here only the fabric's own failures count.
        if self.failed() {
            Err(self.error(""))
        } else {
            Ok(())
        }
    }
    fn close(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        self.wake.notify();
    }
    fn abort(&mut self) {
        self.tx.abort();
        self.wake.notify();
    }
}

impl Drop for ProxyStream {
    /// A communicator that finished its last call may still have bytes on their way (the last
    /// barrier's message): the proxy sends them before it closes, and the drop waits for that
    /// (up to `FLUSH_TIMEOUT`), since a process that exits first takes its proxy threads with
    /// it and its peers would find the connection closed before the last message.
    fn drop(&mut self) {
        self.close();
        if self.finished.recv_timeout(FLUSH_TIMEOUT) == Err(RecvTimeoutError::Timeout) {
            tracing::warn!(
                "a {} proxy did not finish sending within {FLUSH_TIMEOUT:?}; closing it",
                self.fabric
            );
            self.abort();
        }
    }
}

/// The proxy's failure if it had one (the error itself the first time, then its text), else
/// "the peer closed".
fn failure_error(
    failure: &Mutex<Failure>,
    fabric: &'static str,
    peer: &str,
    during: &str,
) -> Error {
    let mut f = match failure.lock() {
        Ok(f) => f,
        Err(p) => p.into_inner(),
    };
    if let Some(e) = f.error.take() {
        f.text = Some(e.to_string());
        return e;
    }
    match &f.text {
        Some(t) => Error::Broken {
            transport: fabric,
            peer: peer.to_string(),
            reason: t.clone(),
        },
        None => Error::PeerClosed {
            transport: fabric,
            peer: peer.to_string(),
            during: during.to_string(),
        },
    }
}

/// What a proxy thread works with: the executor's outgoing ring (to send), its incoming ring
/// (to fill), the executor's close flag, how long to poll before sleeping, where to put a
/// failure ([`stopped`]), and the eventfd the executor wakes it with.
pub(crate) struct ProxyEnds {
    pub(crate) to_net: RingReader,
    pub(crate) from_net: RingWriter,
    pub(crate) closing: Arc<AtomicBool>,
    pub(crate) spin: Duration,
    pub(crate) failure: Arc<Mutex<Failure>>,
    pub(crate) wake: Arc<Wake>,
}

/// Ends a proxy: a failure is kept for the executor and aborts its incoming ring; a clean end
/// (the executor closed, or the peer closed: an error only for a rank that still waits for
/// data from it, which the empty, closed ring tells) closes it.
pub(crate) fn stopped(
    failure: &Mutex<Failure>,
    from_net: &RingWriter,
    peer: &str,
    stop: std::result::Result<(), Stop>,
) {
    let why = match stop {
        Ok(()) | Err(Stop::Executor) => None,
        Err(Stop::Peer(Error::PeerClosed { .. })) => None,
        Err(Stop::Peer(e)) => Some(e),
        Err(Stop::Malformed(what)) => Some(Error::BadFrame {
            transport: "proxy",
            peer: peer.to_string(),
            reason: format!("malformed stream: {what}"),
        }),
    };
    match why {
        Some(e) => {
            tracing::debug!(peer, "proxy stops: {e}");
            if let Ok(mut f) = failure.lock() {
                f.error = Some(e);
            }
            from_net.abort();
        }
        None => from_net.close(),
    }
}

struct Proxy {
    /// What the executor wrote, to send (straight from the ring: the executor does not reuse
    /// the space until the proxy consumes it, after the fabric is done with it).
    to_net: RingReader,
    inbox: Inbox,
    failure: Arc<Mutex<Failure>>,
    closing: Arc<AtomicBool>,
    spin: Duration,
    wake: Arc<Wake>,
}

/// The receiving half of the proxy, a separate value so that it can run while a send borrows
/// the executor's outgoing ring.
struct Inbox {
    /// Where what arrived goes, for the executor.
    from_net: RingWriter,
    /// A piece whose chunks came out of order, put together by offset.
    assembly: Vec<u8>,
    /// Bytes the executor's ring had no room for yet: `pending[sent..]`.
    pending: Vec<u8>,
    sent: usize,
}

/// The receiving half of the proxy: waiting for a length, then for that many bytes.
enum Inbound<'c> {
    Idle,
    Len(BoxView<'c>, [u8; 8], usize),
    /// A piece: its view, the bytes of it already handed on in order, and whether later
    /// chunks go to the assembly buffer (one came out of order).
    Data(BoxView<'c>, usize, bool),
}

/// Why a proxy stops.
pub(crate) enum Stop {
    /// The executor closed or aborted the stream.
    Executor,
    /// The fabric reported an error, or the peer closed the connection.
    Peer(Error),
    /// The peer's proxy sent something that is not a stream piece.
    Malformed(String),
}

impl Proxy {
    fn run(mut self, conn: Box<dyn DynConnection>) {
        let stop = self.pump(&*conn);
        stopped(&self.failure, &self.inbox.from_net, conn.dyn_peer(), stop);
        let _ = conn.dyn_close();
    }

    /// Moves bytes both ways until the executor closes the stream (Ok) or the fabric fails.
    fn pump(&mut self, conn: &dyn DynConnection) -> std::result::Result<(), Stop> {
        let mut inbound = Inbound::Idle;
        let mut backoff = Backoff::with_spin(self.spin);
        let mut idle = Idle::new(self.spin);
        let spin = self.spin;
        let inbox = &mut self.inbox;
        let mut fds = Vec::with_capacity(1);
        loop {
            if inbox.from_net.aborted() {
                return Ok(());
            }
            let out = match self.to_net.peek() {
                Ok(out) => out,
                // The executor's end is gone (dropped without a close, or aborted).
                Err(()) => return Err(Stop::Executor),
            };
            let n = out.len().min(PIECE);
            if n == 0 {
                if self.closing.load(Ordering::Acquire) {
                    return Ok(());
                }
                if inbox.receive(conn, &mut inbound)? {
                    idle.reset();
                } else {
                    fds.clear();
                    let (to_net, closing) = (&mut self.to_net, &self.closing);
                    let space = inbox.sent < inbox.pending.len();
                    idle.wait(&self.wake, space, false, &mut fds, || {
                        closing.load(Ordering::SeqCst)
                            || to_net.peek().map_or(true, |v| !v.is_empty())
                            || inbox.from_net.aborted()
                    });
                }
                continue;
            }
            let len = (n as u64).to_le_bytes();
            {
                let mut len_req = post_send(conn, TAG_LEN, &len, spin, || {
                    inbox.receive(conn, &mut inbound)
                })?;
                let mut data_req = post_send(conn, TAG_DATA, &out[..n], spin, || {
                    inbox.receive(conn, &mut inbound)
                })?;
                let (mut len_done, mut data_done) = (false, false);
                backoff.reset();
                while !(len_done && data_done) {
                    len_done = len_done || len_req.test().map_err(Stop::Peer)?.is_some();
                    data_done = data_done || data_req.test().map_err(Stop::Peer)?.is_some();
                    // Keep receiving while sending: two proxies that only sent would deadlock
                    // on a fabric whose sends wait for the receiver.
                    if inbox.receive(conn, &mut inbound)? {
                        backoff.reset();
                    } else if !(len_done && data_done) {
                        if inbox.from_net.aborted() {
                            return Ok(());
                        }
                        backoff.snooze();
                    }
                }
            }
            self.to_net.consume(n);
        }
    }
}

impl Inbox {
    /// Hands `pending[sent..]` to the executor's ring; true once all of it is there.
    fn flush(&mut self, moved: &mut bool) -> std::result::Result<bool, Stop> {
        if self.sent < self.pending.len() {
            let n = self
                .from_net
                .write(&self.pending[self.sent..])
                .map_err(|()| Stop::Executor)?;
            self.sent += n;
            *moved |= n > 0;
        }
        Ok(self.sent == self.pending.len())
    }

    /// Advances the receiving half; true if anything moved.
    fn receive<'c>(
        &mut self,
        conn: &'c dyn DynConnection,
        inbound: &mut Inbound<'c>,
    ) -> std::result::Result<bool, Stop> {
        // Every wait of the proxy passes here, so an aborted stream stops it even while a
        // send is stuck (a stalled peer, a fabric that keeps answering "retry").
        if self.from_net.aborted() {
            return Err(Stop::Executor);
        }
        let mut moved = false;
        loop {
            if !self.flush(&mut moved)? {
                return Ok(moved);
            }
            match inbound {
                Inbound::Idle => match conn.dyn_irecv_view(TAG_LEN, 8).map_err(Stop::Peer)? {
                    Some(view) => *inbound = Inbound::Len(view, [0; 8], 0),
                    None => return Ok(moved),
                },
                Inbound::Len(view, bytes, got) => {
                    while let Some(chunk) = view.next_chunk().map_err(Stop::Peer)? {
                        let at = chunk.offset();
                        if at + chunk.len() > 8 {
                            return Err(Stop::Malformed("a stream length".into()));
                        }
                        bytes[at..at + chunk.len()].copy_from_slice(&chunk);
                        *got += chunk.len();
                        moved = true;
                    }
                    if !view.is_complete() || *got < 8 {
                        return Ok(moved);
                    }
                    let len = u64::from_le_bytes(*bytes);
                    if len == 0 || len > PIECE as u64 {
                        return Err(Stop::Malformed(format!("a stream piece of {len} bytes")));
                    }
                    match conn
                        .dyn_irecv_view(TAG_DATA, len as usize)
                        .map_err(Stop::Peer)?
                    {
                        Some(data) => *inbound = Inbound::Data(data, 0, false),
                        None => return Ok(moved),
                    }
                }
                Inbound::Data(view, delivered, assembling) => {
                    // One chunk at a time, and only once what the ring could not take is in.
                    let total = view.len();
                    if let Some(chunk) = view.next_chunk().map_err(Stop::Peer)? {
                        moved = true;
                        let at = chunk.offset();
                        if at + chunk.len() > total {
                            return Err(Stop::Malformed("a stream piece".into()));
                        }
                        if !*assembling && at == *delivered {
                            let n = self.from_net.write(&chunk).map_err(|()| Stop::Executor)?;
                            if n < chunk.len() {
                                self.pending.clear();
                                self.pending.extend_from_slice(&chunk[n..]);
                                self.sent = 0;
                            }
                            *delivered += chunk.len();
                        } else {
                            if !*assembling {
                                *assembling = true;
                                self.assembly.clear();
                                self.assembly.resize(total, 0);
                            }
                            self.assembly[at..at + chunk.len()].copy_from_slice(&chunk);
                        }
                        continue;
                    }
                    if !view.is_complete() {
                        return Ok(moved);
                    }
                    if *assembling {
                        self.pending.clear();
                        self.pending.extend_from_slice(&self.assembly[*delivered..]);
                        self.sent = 0;
                    }
                    *inbound = Inbound::Idle;
                }
            }
        }
    }
}

/// Posts a send, receiving meanwhile while the fabric says "retry".
fn post_send<'a>(
    conn: &'a dyn DynConnection,
    tag: Tag,
    buf: &'a [u8],
    spin: Duration,
    mut meanwhile: impl FnMut() -> std::result::Result<bool, Stop>,
) -> std::result::Result<BoxRequest<'a>, Stop> {
    let mut backoff = Backoff::with_spin(spin);
    loop {
        match conn.dyn_isend(tag, buf).map_err(Stop::Peer)? {
            Post::Posted(r) => return Ok(r),
            Post::Retry(_) => {
                if !meanwhile()? {
                    backoff.snooze();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(wake: &Wake) -> bool {
        let mut fds = [libc::pollfd {
            fd: wake.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        poll_fds(&mut fds, Duration::ZERO);
        fds[0].revents & libc::POLLIN != 0
    }

    #[test]
    fn the_executor_wakes_only_a_sleeping_proxy_and_each_sleep_waits_again() {
        let wake = Wake::new("test").unwrap();
        // Busy proxy: a publish costs no write.
        wake.notify();
        assert!(!readable(&wake));
        // Sleeping proxy: a publish makes its ppoll return.
        wake.arm(false);
        wake.notify_space();
        assert!(!readable(&wake));
        wake.notify();
        wake.notify();
        assert!(readable(&wake));
        // Awake again: the counter is drained, so the next sleep waits.
        wake.disarm();
        assert!(!readable(&wake));
        wake.notify();
        assert!(!readable(&wake));
        // Sleeping for space: a consume wakes it.
        wake.arm(true);
        wake.notify_space();
        assert!(readable(&wake));
        wake.disarm();
    }

    #[test]
    fn an_idle_proxy_sleeps_until_woken_from_another_thread() {
        let wake = Arc::new(Wake::new("test").unwrap());
        let mut idle = Idle::new(Duration::ZERO);
        let flag = Arc::new(AtomicBool::new(false));
        let (w, f) = (Arc::clone(&wake), Arc::clone(&flag));
        let waker = std::thread::spawn(move || {
            // Publish, then notify, as the executor does.
            while w.sleeping.load(Ordering::SeqCst) == AWAKE {
                std::thread::yield_now();
            }
            f.store(true, Ordering::SeqCst);
            w.notify();
        });
        let mut fds = Vec::new();
        while !flag.load(Ordering::SeqCst) {
            fds.clear();
            idle.wait(&wake, false, false, &mut fds, || {
                flag.load(Ordering::SeqCst)
            });
        }
        waker.join().unwrap();
        assert_eq!(wake.sleeping.load(Ordering::SeqCst), AWAKE);
        assert!(!readable(&wake));
    }
}
