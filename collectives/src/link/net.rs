//! Links to ranks on other hosts, through any `oxccl-transport` fabric (TCP, RDMA, a port).
//!
//! The executor wants a byte stream it can peek at and consume piecemeal; a fabric moves tagged
//! messages whose requests borrow their buffers until they complete. A proxy thread per peer
//! joins the two, as NCCL's proxy thread does for its network transports: the executor reads and
//! writes a pair of in-memory rings, and the proxy moves what it finds there through the fabric.
//! Each piece of the stream crosses the fabric as two messages, an 8-byte length (tag
//! [`TAG_LEN`]) and the bytes themselves (tag [`TAG_DATA`]), so the receiving proxy can take the
//! bytes with a zero-copy view of exactly that length. Outgoing pieces are sent straight from
//! the executor's ring; incoming ones are copied into it once, the price of the stream
//! interface (on a network link the wire, not the copy, sets the pace).

use super::ring::{self, RingMem, RingReader, RingWriter};
use oxccl_transport::dynamic::{BoxView, DynConnection};
use oxccl_transport::wait::Backoff;
use oxccl_transport::{Post, RecvView, Request, Tag};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tag of the 8-byte length that announces each piece of the stream.
pub const TAG_LEN: Tag = 0x6f78_6c65_6e00_0001;
/// Tag of the piece itself.
pub const TAG_DATA: Tag = 0x6f78_6461_7461_0002;
/// Largest piece the proxy moves at once.
const PIECE: usize = 1 << 20;

/// The executor's ends of a proxied link, and what the proxy saw go wrong.
pub struct NetLink {
    pub tx: RingWriter,
    pub rx: RingReader,
    pub failure: Arc<Mutex<Option<String>>>,
    /// Set when the link is dropped: the proxy sends what is left, then closes.
    closing: Arc<AtomicBool>,
    /// Disconnected when the proxy thread ends (its sender is dropped).
    finished: mpsc::Receiver<()>,
    fabric: &'static str,
}

/// How long dropping a link waits for its proxy to hand the last bytes to the fabric.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong on a proxied link, for an error message.
pub fn describe(failure: &Mutex<Option<String>>) -> String {
    failure
        .lock()
        .ok()
        .and_then(|f| f.clone())
        .unwrap_or_else(|| "the peer closed the connection".into())
}

impl NetLink {
    /// Starts the proxy thread for `conn` (a connection of fabric `fabric`), with rings of
    /// `cap` bytes per direction; an idle proxy polls for `spin` before it yields its core (see
    /// [`proxy_spin`]).
    pub fn start(
        conn: Box<dyn DynConnection>,
        fabric: &'static str,
        cap: usize,
        spin: Duration,
    ) -> std::io::Result<Self> {
        let mem = RingMem::heap(2, cap);
        let (tx, to_net) = ring::ends(&mem, 0, cap);
        let (from_net, rx) = ring::ends(&mem, 1, cap);
        let failure = Arc::new(Mutex::new(None));
        let closing = Arc::new(AtomicBool::new(false));
        let proxy = Proxy {
            to_net,
            inbox: Inbox {
                from_net,
                assembly: Vec::new(),
                pending: Vec::new(),
                sent: 0,
            },
            failure: Arc::clone(&failure),
            closing: Arc::clone(&closing),
            spin,
        };
        let (done, finished) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("oxccl-proxy-{}", conn.dyn_peer()))
            .spawn(move || {
                let _done = done;
                proxy.run(conn)
            })?;
        Ok(Self {
            tx,
            rx,
            failure,
            closing,
            finished,
            fabric,
        })
    }

    /// The fabric's name (`tcp`, `rdma`, ...).
    pub fn fabric(&self) -> &'static str {
        self.fabric
    }

    /// Why the proxy gave up, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Lets the proxy send what is left and close, without waiting for it (dropping the link
    /// waits). Closing every link of a communicator first lets their proxies flush together.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Stops the proxy at once, dropping what it has not sent; the peer sees the connection
    /// close.
    pub fn abort(&self) {
        self.tx.abort();
        self.rx.abort();
    }
}

impl Drop for NetLink {
    /// A communicator that finished its last call may still have bytes on their way (the last
    /// barrier's message): the proxy sends them before it closes, and the drop waits for that
    /// (up to [`FLUSH_TIMEOUT`]), since a process that exits first takes its proxy threads with
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

struct Proxy {
    /// What the executor wrote, to send (straight from the ring: the executor does not reuse
    /// the space until the proxy consumes it, after the fabric is done with it).
    to_net: RingReader,
    inbox: Inbox,
    failure: Arc<Mutex<Option<String>>>,
    closing: Arc<AtomicBool>,
    spin: Duration,
}

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
        oxccl_transport::wait::spin_budget()
    }
}

/// The receiving half of the proxy, a separate value so that it can run while a send borrows
/// the executor's outgoing ring.
struct Inbox {
    /// Where what arrived goes, for the executor.
    from_net: RingWriter,
    /// The piece being received, put together by offset.
    assembly: Vec<u8>,
    /// A whole piece the executor's ring had no room for yet: `pending[sent..]`.
    pending: Vec<u8>,
    sent: usize,
}

/// The receiving half of the proxy: waiting for a length, then for that many bytes.
enum Inbound<'c> {
    Idle,
    Len(BoxView<'c>, [u8; 8], usize),
    Data(BoxView<'c>),
}

impl Proxy {
    fn run(mut self, conn: Box<dyn DynConnection>) {
        let why = match self.pump(&*conn) {
            Ok(()) | Err(Stop::Executor) => None,
            // A peer that finished its last call closes its links; that is only an error for
            // a rank that still waits for data from it, which the empty, closed ring tells.
            Err(Stop::Peer(oxccl_transport::Error::PeerClosed { .. })) => None,
            Err(Stop::Peer(e)) => Some(e.to_string()),
            Err(Stop::Malformed(what)) => Some(format!("malformed stream from the peer: {what}")),
        };
        if let Some(why) = why {
            tracing::debug!(peer = conn.dyn_peer(), "proxy stops: {why}");
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(format!("{why} ({})", conn.dyn_peer()));
            }
        }
        // Either side's end closes both rings, so the executor and the peer both notice.
        self.to_net.abort();
        self.inbox.from_net.abort();
        let _ = conn.dyn_close();
    }

    /// Moves bytes both ways until the executor closes the link (Ok) or the fabric fails (Err).
    fn pump(&mut self, conn: &dyn DynConnection) -> Result<(), Stop> {
        let mut inbound = Inbound::Idle;
        let mut backoff = Backoff::with_spin(self.spin);
        let spin = self.spin;
        let inbox = &mut self.inbox;
        loop {
            if inbox.from_net.aborted() {
                return Ok(());
            }
            let out = self.to_net.peek().map_err(|()| Stop::Executor)?;
            let n = out.len().min(PIECE);
            if n == 0 {
                if self.closing.load(Ordering::Acquire) {
                    return Ok(());
                }
                if inbox.receive(conn, &mut inbound)? {
                    backoff.reset();
                } else {
                    backoff.snooze();
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
    /// Advances the receiving half; true if anything moved.
    fn receive<'c>(
        &mut self,
        conn: &'c dyn DynConnection,
        inbound: &mut Inbound<'c>,
    ) -> Result<bool, Stop> {
        // Every wait of the proxy passes here, so an aborted link stops it even while a send is
        // stuck (a stalled peer, a fabric that keeps answering "retry").
        if self.from_net.aborted() {
            return Err(Stop::Executor);
        }
        let mut moved = false;
        if self.sent < self.pending.len() {
            let n = self
                .from_net
                .write(&self.pending[self.sent..])
                .map_err(|()| Stop::Executor)?;
            self.sent += n;
            moved |= n > 0;
            if self.sent < self.pending.len() {
                return Ok(moved);
            }
        }
        loop {
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
                        Some(data) => *inbound = Inbound::Data(data),
                        None => return Ok(moved),
                    }
                }
                Inbound::Data(view) => {
                    // A fabric may hand the chunks of one message out of order (TCP striped
                    // over several sockets), so they are put in place by offset, and the piece
                    // goes to the executor once it is whole.
                    self.assembly.resize(view.len(), 0);
                    while let Some(chunk) = view.next_chunk().map_err(Stop::Peer)? {
                        let at = chunk.offset();
                        if at + chunk.len() > self.assembly.len() {
                            return Err(Stop::Malformed("a stream piece".into()));
                        }
                        self.assembly[at..at + chunk.len()].copy_from_slice(&chunk);
                        moved = true;
                    }
                    if !view.is_complete() {
                        return Ok(moved);
                    }
                    *inbound = Inbound::Idle;
                    let n = self
                        .from_net
                        .write(&self.assembly)
                        .map_err(|()| Stop::Executor)?;
                    if n < self.assembly.len() {
                        std::mem::swap(&mut self.assembly, &mut self.pending);
                        self.sent = n;
                        return Ok(true);
                    }
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
    mut meanwhile: impl FnMut() -> Result<bool, Stop>,
) -> Result<oxccl_transport::dynamic::BoxRequest<'a>, Stop> {
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

/// Why a proxy stops.
enum Stop {
    /// The executor closed or aborted the link.
    Executor,
    /// The fabric reported an error, or the peer closed the connection.
    Peer(oxccl_transport::Error),
    /// The peer's proxy sent something that is not a stream piece.
    Malformed(String),
}
