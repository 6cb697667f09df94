//! `loopback`: an in-process transport for thread ranks and tests.
//!
//! Messages are moved whole through a mutex-protected queue per direction; a send copies the
//! buffer at `isend` and completes at once. Listeners live in a process-wide registry keyed by
//! a number, so two `Loopback` values in one process connect like two ranks would. A queue
//! holding more than [`MAX_QUEUED`] bytes answers `isend` with "retry", which exercises the
//! callers' retry paths.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::api::{
    Address, Chunk, Connection, Listener, PendingConnection, Post, RecvView, Request, Setup, Tag,
    Transport,
};
use crate::error::{Error, Result};
use crate::matching::Seqs;
use crate::region::HostRegion;
use crate::stream::ring::HeapBlock;
use crate::stream::{RingStream, SingleCopy, Stream, StreamConfig};

const NAME: &str = "loopback";
const MAGIC: &[u8; 4] = b"oxlb";

/// Bytes a direction may hold before `isend` says "retry" (a single larger message is allowed
/// when the queue is empty).
pub const MAX_QUEUED: usize = 64 << 20;

/// The in-process transport. Every value shares one process-wide registry of listeners.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loopback;

impl Loopback {
    /// A loopback transport.
    pub fn new() -> Self {
        Loopback
    }
}

/// A listener's number in the process-wide registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoopbackAddress(u64);

impl fmt::Display for LoopbackAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loopback:{}", self.0)
    }
}

impl Address for LoopbackAddress {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&self.0.to_le_bytes());
        v
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match bytes {
            [m0, m1, m2, m3, rest @ ..] if [*m0, *m1, *m2, *m3] == *MAGIC && rest.len() == 8 => {
                let mut id = [0u8; 8];
                id.copy_from_slice(rest);
                Ok(LoopbackAddress(u64::from_le_bytes(id)))
            }
            _ => Err(Error::BadAddress {
                transport: NAME,
                reason: format!(
                    "expected 12 bytes starting with \"oxlb\", got {} bytes",
                    bytes.len()
                ),
            }),
        }
    }
}

type Registry = Mutex<HashMap<u64, Arc<Mutex<VecDeque<Arc<Pair>>>>>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(Default::default)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data that is still consistent enough to
    // report errors with; never propagate the poison as a second panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Dir {
    msgs: VecDeque<(Tag, Vec<u8>)>,
    bytes: usize,
    closed: bool,
}

const DIALING: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

struct Pair {
    /// `dirs[s]` carries messages sent by side `s`.
    dirs: [Mutex<Dir>; 2],
    state: AtomicU8,
    id: u64,
    /// The ring pair of the stream face and its size, made by the first end to convert.
    rings: Mutex<Option<(Arc<HeapBlock>, usize, usize)>>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A listening loopback endpoint; unregistered on drop.
pub struct LoopbackListener {
    addr: LoopbackAddress,
    queue: Arc<Mutex<VecDeque<Arc<Pair>>>>,
}

impl Listener for LoopbackListener {
    type Address = LoopbackAddress;
    type Pending = LoopbackPending;
    fn address(&self) -> LoopbackAddress {
        self.addr
    }
    fn poll_accept(&mut self) -> Result<Option<LoopbackPending>> {
        Ok(lock(&self.queue).pop_front().map(|pair| {
            pair.state.store(ACCEPTED, Ordering::Release);
            LoopbackPending(PendingState::Accepted(pair))
        }))
    }
}

impl Drop for LoopbackListener {
    fn drop(&mut self) {
        lock(registry()).remove(&self.addr.0);
        for pair in lock(&self.queue).drain(..) {
            pair.state.store(REFUSED, Ordering::Release);
        }
    }
}

/// A loopback connection in setup.
pub struct LoopbackPending(PendingState);

enum PendingState {
    /// Waiting for the listener to accept.
    Dialing(Arc<Pair>, LoopbackAddress),
    /// Accepted; connected on the next poll.
    Accepted(Arc<Pair>),
}

impl PendingConnection for LoopbackPending {
    type Connection = LoopbackConnection;
    fn poll(self) -> Result<Setup<LoopbackConnection, Self>> {
        match self.0 {
            PendingState::Dialing(pair, addr) => match pair.state.load(Ordering::Acquire) {
                ACCEPTED => Ok(Setup::Connected(LoopbackConnection::new(pair, 0, addr))),
                REFUSED => Err(Error::ConnectFailed {
                    transport: NAME,
                    addr: addr.to_string(),
                    reason: "the listener closed before accepting".into(),
                }),
                _ => Ok(Setup::Pending(LoopbackPending(PendingState::Dialing(
                    pair, addr,
                )))),
            },
            PendingState::Accepted(pair) => {
                let addr = LoopbackAddress(pair.id);
                Ok(Setup::Connected(LoopbackConnection::new(pair, 1, addr)))
            }
        }
    }
}

impl Transport for Loopback {
    type Address = LoopbackAddress;
    type Listener = LoopbackListener;
    type Pending = LoopbackPending;
    type Connection = LoopbackConnection;
    type Region = HostRegion;

    fn name(&self) -> &'static str {
        NAME
    }
    fn listen(&self) -> Result<LoopbackListener> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        lock(registry()).insert(id, queue.clone());
        Ok(LoopbackListener {
            addr: LoopbackAddress(id),
            queue,
        })
    }
    fn connect(&self, addr: &LoopbackAddress) -> Result<LoopbackPending> {
        let queue = lock(registry())
            .get(&addr.0)
            .cloned()
            .ok_or_else(|| Error::ConnectFailed {
                transport: NAME,
                addr: addr.to_string(),
                reason: "no listener with this number in this process".into(),
            })?;
        let pair = Arc::new(Pair {
            dirs: Default::default(),
            state: AtomicU8::new(DIALING),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            rings: Mutex::new(None),
        });
        lock(&queue).push_back(pair.clone());
        Ok(LoopbackPending(PendingState::Dialing(pair, *addr)))
    }
    fn register(&self, len: usize) -> Result<HostRegion> {
        HostRegion::new(len)
    }
}

#[derive(Default)]
struct RecvState {
    seqs: Seqs,
    unexpected: HashMap<Tag, VecDeque<Vec<u8>>>,
}

/// One end of a loopback connection.
pub struct LoopbackConnection {
    pair: Arc<Pair>,
    side: usize,
    peer: String,
    state: RefCell<RecvState>,
}

impl LoopbackConnection {
    fn new(pair: Arc<Pair>, side: usize, addr: LoopbackAddress) -> Self {
        let peer = format!("{addr}/conn{}/side{}", pair.id, 1 - side);
        LoopbackConnection {
            pair,
            side,
            peer,
            state: RefCell::new(RecvState::default()),
        }
    }

    fn post_recv(&self, tag: Tag) -> u64 {
        self.state.borrow_mut().seqs.post(tag)
    }

    /// The message for receive `seq` of `tag`, if it arrived.
    fn take_message(&self, tag: Tag, seq: u64) -> Result<Option<Vec<u8>>> {
        let mut st = self.state.borrow_mut();
        let closed = {
            let mut incoming = lock(&self.pair.dirs[1 - self.side]);
            while let Some((t, m)) = incoming.msgs.pop_front() {
                incoming.bytes -= m.len();
                st.unexpected.entry(t).or_default().push_back(m);
            }
            incoming.closed
        };
        if !st.seqs.is_next(tag, seq) {
            return Ok(None);
        }
        if let Some(m) = st.unexpected.get_mut(&tag).and_then(VecDeque::pop_front) {
            st.seqs.take(tag, seq);
            return Ok(Some(m));
        }
        if closed {
            return Err(Error::PeerClosed {
                transport: NAME,
                peer: self.peer.clone(),
                during: format!(" while a receive with tag {tag} was waiting"),
            });
        }
        Ok(None)
    }

    fn cancel(&self, tag: Tag, seq: u64) {
        self.state.borrow_mut().seqs.cancel(tag, seq);
    }
}

impl Connection for LoopbackConnection {
    type SendRequest<'a> = LoopbackSend;
    type RecvRequest<'a> = LoopbackRecv<'a>;
    type RecvView<'a> = LoopbackView<'a>;

    fn peer(&self) -> &str {
        &self.peer
    }

    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<LoopbackSend, &'a [u8]>> {
        if lock(&self.pair.dirs[1 - self.side]).closed {
            return Err(Error::PeerClosed {
                transport: NAME,
                peer: self.peer.clone(),
                during: format!(" before a {}-byte send with tag {tag}", buf.len()),
            });
        }
        let mut out = lock(&self.pair.dirs[self.side]);
        if !out.msgs.is_empty() && out.bytes + buf.len() > MAX_QUEUED {
            return Ok(Post::Retry(buf));
        }
        out.bytes += buf.len();
        out.msgs.push_back((tag, buf.to_vec()));
        Ok(Post::Posted(LoopbackSend { len: buf.len() }))
    }

    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<LoopbackRecv<'a>, &'a mut [u8]>> {
        let seq = self.post_recv(tag);
        Ok(Post::Posted(LoopbackRecv {
            conn: self,
            tag,
            seq,
            buf,
            state: Outcome::Waiting,
        }))
    }

    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<LoopbackView<'_>>> {
        let seq = self.post_recv(tag);
        Ok(Some(LoopbackView {
            conn: self,
            tag,
            seq,
            len,
            msg: None,
            handed: false,
        }))
    }

    /// Native: both ends share one ring pair in this process's memory, made by the first end
    /// to convert (with its `config.ring_bytes`).
    fn into_stream(self, _fabric: &'static str, config: &StreamConfig) -> Result<Box<dyn Stream>> {
        config.validate()?;
        let (block, cap, single_copy_min) = lock(&self.pair.rings)
            .get_or_insert_with(|| {
                (
                    HeapBlock::new(config.ring_bytes),
                    config.ring_bytes,
                    config.single_copy_min,
                )
            })
            .clone();
        // The threshold is the pair's (the first end's); the choice is each sender's own.
        let ends = block.ends(cap, self.side);
        // Both ends live in this process: the single-copy path is a plain copy.
        let single = SingleCopy::new(
            single_copy_min,
            config.single_copy_choice,
            Arc::new(|| true),
            None,
        );
        Ok(Box::new(
            RingStream::new(ends, NAME, self.peer.clone(), None)
                .with_single_copy(single)
                .with_ring_nt(config.ring_nt),
        ))
    }

    fn close(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}

impl Drop for LoopbackConnection {
    fn drop(&mut self) {
        lock(&self.pair.dirs[self.side]).closed = true;
    }
}

/// A loopback send: the data was copied at `isend`, so it is complete at once.
#[must_use = "a request does nothing unless tested"]
#[derive(Debug)]
pub struct LoopbackSend {
    len: usize,
}

impl Request for LoopbackSend {
    fn test(&mut self) -> Result<Option<usize>> {
        Ok(Some(self.len))
    }
}

enum Outcome {
    Waiting,
    Done(usize),
    Failed,
}

/// A loopback receive into a caller buffer.
#[must_use = "a request does nothing unless tested"]
pub struct LoopbackRecv<'a> {
    conn: &'a LoopbackConnection,
    tag: Tag,
    seq: u64,
    buf: &'a mut [u8],
    state: Outcome,
}

impl Request for LoopbackRecv<'_> {
    fn test(&mut self) -> Result<Option<usize>> {
        match self.state {
            Outcome::Done(n) => return Ok(Some(n)),
            Outcome::Failed => {
                return Err(Error::Usage {
                    transport: NAME,
                    reason: "test called again on a failed receive".into(),
                })
            }
            Outcome::Waiting => {}
        }
        let msg = match self.conn.take_message(self.tag, self.seq) {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.state = Outcome::Failed;
                return Err(e);
            }
        };
        if msg.len() > self.buf.len() {
            self.state = Outcome::Failed;
            return Err(Error::Truncated {
                transport: NAME,
                peer: self.conn.peer.clone(),
                tag: self.tag,
                message: msg.len(),
                buffer: self.buf.len(),
            });
        }
        self.buf[..msg.len()].copy_from_slice(&msg);
        self.state = Outcome::Done(msg.len());
        Ok(Some(msg.len()))
    }
}

impl Drop for LoopbackRecv<'_> {
    fn drop(&mut self) {
        if matches!(self.state, Outcome::Waiting) {
            self.conn.cancel(self.tag, self.seq);
        }
    }
}

/// A loopback zero-copy receive: the whole message is one chunk.
#[must_use = "a request does nothing unless tested"]
pub struct LoopbackView<'a> {
    conn: &'a LoopbackConnection,
    tag: Tag,
    seq: u64,
    len: usize,
    msg: Option<Vec<u8>>,
    handed: bool,
}

impl RecvView for LoopbackView<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn received(&self) -> usize {
        if self.handed {
            self.len
        } else {
            0
        }
    }
    fn is_complete(&self) -> bool {
        self.handed
    }
    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        if self.handed {
            return Ok(None);
        }
        if self.msg.is_none() {
            let Some(m) = self.conn.take_message(self.tag, self.seq)? else {
                return Ok(None);
            };
            if m.len() != self.len {
                self.handed = true;
                return Err(Error::SizeMismatch {
                    transport: NAME,
                    peer: self.conn.peer.clone(),
                    tag: self.tag,
                    message: m.len(),
                    expected: self.len,
                });
            }
            self.msg = Some(m);
        }
        self.handed = true;
        Ok(self.msg.as_deref().map(|m| Chunk::new(0, m)))
    }
}

impl Drop for LoopbackView<'_> {
    fn drop(&mut self) {
        if self.msg.is_none() && !self.handed {
            self.conn.cancel(self.tag, self.seq);
        }
    }
}
