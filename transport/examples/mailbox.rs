//! A complete, minimal transport written the way `transport/README.md` describes: in-process
//! "mailboxes" built on `std::sync::mpsc` channels. It implements every trait of the family
//! with nothing but the public API and passes the conformance suite:
//!
//! ```sh
//! cargo run -p oxccl-transport --example mailbox
//! ```
//!
//! Start a port to a real fabric from here: replace the channels with the fabric's queues.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock};

use oxccl_transport::{
    Address, Chunk, Connection, Error, HostRegion, Listener, PendingConnection, Post, RecvView,
    Request, Result, Setup, Tag, Transport,
};

const NAME: &str = "mailbox";

/// The fabric: stateless here; a real one holds its device handle.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mailbox;

/// 1. An address that serialises to bytes (a bootstrap store carries it between ranks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxAddress(u64);

impl fmt::Display for MailboxAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mailbox:{}", self.0)
    }
}

impl Address for MailboxAddress {
    fn to_bytes(&self) -> Vec<u8> {
        [b"mb".as_slice(), &self.0.to_le_bytes()].concat()
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        match b
            .strip_prefix(b"mb")
            .and_then(|r| <[u8; 8]>::try_from(r).ok())
        {
            Some(id) => Ok(MailboxAddress(u64::from_le_bytes(id))),
            None => Err(Error::BadAddress {
                transport: NAME,
                reason: format!("{} bytes, expected \"mb\" + 8", b.len()),
            }),
        }
    }
}

type Msg = (Tag, Vec<u8>);
/// What a dialer leaves in a listener's queue: the acceptor's ends, and the "accepted" flag.
type Dial = (Sender<Msg>, Receiver<Msg>, Arc<AtomicBool>);

fn registry() -> &'static Mutex<HashMap<u64, Sender<Dial>>> {
    static R: OnceLock<Mutex<HashMap<u64, Sender<Dial>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// 2. A listener: `poll_accept` never blocks.
pub struct MailboxListener {
    addr: MailboxAddress,
    queue: Receiver<Dial>,
}

impl Drop for MailboxListener {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.addr.0);
    }
}

impl Listener for MailboxListener {
    type Address = MailboxAddress;
    type Pending = MailboxPending;
    fn address(&self) -> MailboxAddress {
        self.addr
    }
    fn poll_accept(&mut self) -> Result<Option<MailboxPending>> {
        match self.queue.try_recv() {
            Ok((tx, rx, accepted)) => {
                accepted.store(true, Ordering::Release);
                Ok(Some(MailboxPending {
                    tx,
                    rx,
                    accepted,
                    peer: format!("{} (acceptor side)", self.addr),
                }))
            }
            Err(_) => Ok(None),
        }
    }
}

/// 3. A connection in setup (type state): it can only be polled.
pub struct MailboxPending {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    accepted: Arc<AtomicBool>,
    peer: String,
}

impl PendingConnection for MailboxPending {
    type Connection = MailboxConnection;
    fn poll(self) -> Result<Setup<MailboxConnection, Self>> {
        if !self.accepted.load(Ordering::Acquire) {
            return Ok(Setup::Pending(self));
        }
        Ok(Setup::Connected(MailboxConnection {
            tx: self.tx,
            rx: self.rx,
            peer: self.peer,
            state: RefCell::default(),
        }))
    }
}

impl Transport for Mailbox {
    type Address = MailboxAddress;
    type Listener = MailboxListener;
    type Pending = MailboxPending;
    type Connection = MailboxConnection;
    type Region = HostRegion;

    fn name(&self) -> &'static str {
        NAME
    }
    fn listen(&self) -> Result<MailboxListener> {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (tx, queue) = channel();
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        Ok(MailboxListener {
            addr: MailboxAddress(id),
            queue,
        })
    }
    fn connect(&self, addr: &MailboxAddress) -> Result<MailboxPending> {
        let listener = registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr.0)
            .cloned();
        let listener = listener.ok_or_else(|| Error::ConnectFailed {
            transport: NAME,
            addr: addr.to_string(),
            reason: "no such mailbox".into(),
        })?;
        let (to_acceptor, acceptor_rx) = channel();
        let (acceptor_tx, from_acceptor) = channel();
        let accepted = Arc::new(AtomicBool::new(false));
        listener
            .send((acceptor_tx, acceptor_rx, accepted.clone()))
            .map_err(|_| Error::ConnectFailed {
                transport: NAME,
                addr: addr.to_string(),
                reason: "listener gone".into(),
            })?;
        Ok(MailboxPending {
            tx: to_acceptor,
            rx: from_acceptor,
            accepted,
            peer: addr.to_string(),
        })
    }
    fn register(&self, len: usize) -> Result<HostRegion> {
        // Nothing to register on this fabric: plain page-aligned memory.
        HostRegion::new(len)
    }
}

/// Per-tag bookkeeping: messages that arrived before their receive, and receive tickets so
/// that receives of one tag take messages in the order they were posted.
#[derive(Default)]
struct State {
    unexpected: HashMap<Tag, VecDeque<Vec<u8>>>,
    posted: HashMap<Tag, u64>,
    matched: HashMap<Tag, u64>,
    closed: bool,
}

/// 4. The connection.
pub struct MailboxConnection {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    peer: String,
    state: RefCell<State>,
}

impl MailboxConnection {
    fn ticket(&self, tag: Tag) -> u64 {
        let mut st = self.state.borrow_mut();
        let n = st.posted.entry(tag).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// The message for receive `ticket` of `tag`, once it arrived and its turn came.
    fn take(&self, tag: Tag, ticket: u64) -> Result<Option<Vec<u8>>> {
        let mut st = self.state.borrow_mut();
        loop {
            match self.rx.try_recv() {
                Ok((t, m)) => st.unexpected.entry(t).or_default().push_back(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    st.closed = true;
                    break;
                }
            }
        }
        if st.matched.get(&tag).copied().unwrap_or(0) != ticket {
            return Ok(None);
        }
        if let Some(m) = st.unexpected.get_mut(&tag).and_then(VecDeque::pop_front) {
            *st.matched.entry(tag).or_insert(0) += 1;
            return Ok(Some(m));
        }
        if st.closed {
            return Err(Error::PeerClosed {
                transport: NAME,
                peer: self.peer.clone(),
                during: format!(" while receiving tag {tag}"),
            });
        }
        Ok(None)
    }
}

impl MailboxConnection {
    /// A receive dropped at its turn passes the turn on (a real port would also cancel a
    /// posted hardware receive here). Kept simple: a receive dropped before its turn keeps the
    /// later ones of its tag waiting; `oxccl-transport`'s own fabrics track cancelled tickets.
    fn give_up(&self, tag: Tag, ticket: u64) {
        let mut st = self.state.borrow_mut();
        let m = st.matched.entry(tag).or_insert(0);
        if *m == ticket {
            *m += 1;
        }
    }
}

impl Connection for MailboxConnection {
    type SendRequest<'a> = MailboxSend;
    type RecvRequest<'a> = MailboxRecv<'a>;
    type RecvView<'a> = MailboxView<'a>;

    fn peer(&self) -> &str {
        &self.peer
    }
    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<MailboxSend, &'a [u8]>> {
        // The channel copies, so the send is complete at once.
        self.tx
            .send((tag, buf.to_vec()))
            .map_err(|_| Error::PeerClosed {
                transport: NAME,
                peer: self.peer.clone(),
                during: format!(" before a send with tag {tag}"),
            })?;
        Ok(Post::Posted(MailboxSend(buf.len())))
    }
    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<MailboxRecv<'a>, &'a mut [u8]>> {
        let ticket = self.ticket(tag);
        Ok(Post::Posted(MailboxRecv {
            conn: self,
            tag,
            ticket,
            buf,
            done: None,
        }))
    }
    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<MailboxView<'_>>> {
        let ticket = self.ticket(tag);
        Ok(Some(MailboxView {
            conn: self,
            tag,
            ticket,
            len,
            msg: None,
            handed: false,
        }))
    }
    fn close(self) -> Result<()> {
        Ok(()) // dropping the sender is the close the peer sees
    }
}

/// 5. Requests: `#[must_use]`, borrowing their buffers until complete.
#[must_use]
pub struct MailboxSend(usize);

impl Request for MailboxSend {
    fn test(&mut self) -> Result<Option<usize>> {
        Ok(Some(self.0))
    }
}

#[must_use]
pub struct MailboxRecv<'a> {
    conn: &'a MailboxConnection,
    tag: Tag,
    ticket: u64,
    buf: &'a mut [u8],
    done: Option<usize>,
}

impl Request for MailboxRecv<'_> {
    fn test(&mut self) -> Result<Option<usize>> {
        if self.done.is_some() {
            return Ok(self.done);
        }
        let Some(m) = self.conn.take(self.tag, self.ticket)? else {
            return Ok(None);
        };
        if m.len() > self.buf.len() {
            return Err(Error::Truncated {
                transport: NAME,
                peer: self.conn.peer.clone(),
                tag: self.tag,
                message: m.len(),
                buffer: self.buf.len(),
            });
        }
        self.buf[..m.len()].copy_from_slice(&m);
        self.done = Some(m.len());
        Ok(self.done)
    }
}

impl Drop for MailboxRecv<'_> {
    fn drop(&mut self) {
        if self.done.is_none() {
            self.conn.give_up(self.tag, self.ticket);
        }
    }
}

/// The zero-copy receive: this fabric delivers whole messages, so the view is one chunk.
#[must_use]
pub struct MailboxView<'a> {
    conn: &'a MailboxConnection,
    tag: Tag,
    ticket: u64,
    len: usize,
    msg: Option<Vec<u8>>,
    handed: bool,
}

impl RecvView for MailboxView<'_> {
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
            let Some(m) = self.conn.take(self.tag, self.ticket)? else {
                return Ok(None);
            };
            self.handed = true;
            if m.len() != self.len {
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
        Ok(self.msg.as_deref().map(|m| Chunk::new(0, m)))
    }
}

impl Drop for MailboxView<'_> {
    fn drop(&mut self) {
        if !self.handed {
            self.conn.give_up(self.tag, self.ticket);
        }
    }
}

#[allow(dead_code)] // also compiled into tests/example_transport.rs, which has its own main
fn main() {
    oxccl_transport::conformance::run_all(|| Mailbox);
    println!("mailbox: the conformance suite passed");
}
