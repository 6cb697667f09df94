//! The trait family every fabric implements. See the crate documentation for the contracts.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::error::Result;
use crate::stream::{Stream, StreamConfig};

/// A message tag. Messages with the same tag on one connection are matched in the order they
/// were sent and posted; messages with different tags may be received in any order.
pub type Tag = u64;

/// An endpoint address that can travel through a bootstrap store as bytes.
pub trait Address: Clone + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Serialises the address (what a bootstrap store carries).
    fn to_bytes(&self) -> Vec<u8>;
    /// Parses bytes written by [`Address::to_bytes`]; bad bytes give
    /// [`crate::Error::BadAddress`], never a panic.
    fn from_bytes(bytes: &[u8]) -> Result<Self>;

    /// The address as text (lower-case hex of [`Address::to_bytes`]), for stores, environment
    /// variables and command lines that carry strings.
    fn to_text(&self) -> String {
        use fmt::Write as _;
        self.to_bytes().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Parses [`Address::to_text`]; text that is not even-length hex gives
    /// [`crate::Error::BadAddress`].
    fn from_text(text: &str) -> Result<Self> {
        let bad = || crate::Error::BadAddress {
            transport: "address",
            reason: format!("{text:?} is not even-length hex"),
        };
        if text.len() % 2 != 0 {
            return Err(bad());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad)?;
        Self::from_bytes(&bytes)
    }
}

/// The answer of a non-blocking setup step: done, or still pending (poll it again).
#[derive(Debug)]
pub enum Setup<C, P> {
    /// The connection is up.
    Connected(C),
    /// Not yet; call `poll` again on this value.
    Pending(P),
}

/// The answer of `isend`/`irecv`: posted, or "not now" with the buffer handed back (the
/// fabric is out of resources: test earlier requests, then post again).
#[derive(Debug)]
#[must_use = "a posted request must be tested; a retry must be posted again"]
pub enum Post<R, B> {
    /// The request is in flight.
    Posted(R),
    /// Nothing was posted; here is the buffer back.
    Retry(B),
}

impl<R, B> Post<R, B> {
    /// The request, or `None` on retry (dropping the buffer borrow).
    pub fn posted(self) -> Option<R> {
        match self {
            Post::Posted(r) => Some(r),
            Post::Retry(_) => None,
        }
    }
}

/// A fabric: a factory for listeners, connections and registered memory.
///
/// Two values of the same transport type stand for two ranks (in two processes, or two threads
/// of one process). Methods never block: setup is polled through [`PendingConnection`].
pub trait Transport: Send + Sync + 'static {
    /// Where a listener can be reached.
    type Address: Address;
    /// A listening endpoint that accepts connections.
    type Listener: Listener<Address = Self::Address, Pending = Self::Pending>;
    /// A connection in setup (type state): it can only be polled until it yields a
    /// [`Self::Connection`].
    type Pending: PendingConnection<Connection = Self::Connection>;
    /// An established, bidirectional connection.
    type Connection: Connection;
    /// Memory the fabric can move fastest (pinned and registered for RDMA, plain page-aligned
    /// memory elsewhere).
    type Region: MemoryRegion;

    /// Short lower-case name (`"shm"`, `"tcp"`), used in errors and benchmarks.
    fn name(&self) -> &'static str;
    /// Opens a listening endpoint. A taken address is [`crate::Error::AddrInUse`].
    fn listen(&self) -> Result<Self::Listener>;
    /// Starts connecting to a listener; poll the result until it is connected.
    fn connect(&self, addr: &Self::Address) -> Result<Self::Pending>;
    /// Allocates `len` bytes of memory registered with the fabric. Sending from or receiving
    /// into a region may be faster than plain memory; any memory works.
    fn register(&self, len: usize) -> Result<Self::Region>;
}

/// A listening endpoint.
pub trait Listener: Send {
    /// The transport's address type.
    type Address: Address;
    /// The transport's pending connection type.
    type Pending;
    /// The address peers connect to.
    fn address(&self) -> Self::Address;
    /// Takes one incoming connection if one is waiting (`Ok(None)`: nobody yet, try again).
    fn poll_accept(&mut self) -> Result<Option<Self::Pending>>;
}

/// A connection being set up, on either side. Consumed by `poll`, so a half-open connection
/// can never be used to send.
pub trait PendingConnection: Send + Sized {
    /// What it turns into.
    type Connection;
    /// Advances the handshake without blocking.
    fn poll(self) -> Result<Setup<Self::Connection, Self>>;
}

/// An established bidirectional connection between two ranks.
///
/// Operations take `&self` so that many requests can be in flight at once; a connection is
/// `Send` but not meant to be shared between threads (transports use single-threaded interior
/// mutability). Requests borrow both the connection and their buffer until they complete, so
/// the borrow checker forbids closing a connection, or touching a buffer, while a request on it
/// is alive.
pub trait Connection: Send {
    /// A posted send.
    type SendRequest<'a>: Request
    where
        Self: 'a;
    /// A posted receive into a caller buffer.
    type RecvRequest<'a>: Request
    where
        Self: 'a;
    /// A posted zero-copy receive.
    type RecvView<'a>: RecvView
    where
        Self: 'a;

    /// Human-readable description of the peer, used in every error about it.
    fn peer(&self) -> &str;

    /// Posts a send of `buf` with `tag`. [`Post::Retry`] means "not now" (the fabric is out of
    /// resources); nothing was sent then.
    fn isend<'a>(
        &'a self,
        tag: Tag,
        buf: &'a [u8],
    ) -> Result<Post<Self::SendRequest<'a>, &'a [u8]>>;

    /// Posts a receive of the next message with `tag` into `buf`. A shorter message completes
    /// with its length; a longer one fails with [`crate::Error::Truncated`] (and is discarded).
    /// [`Post::Retry`] hands the buffer back: post again later.
    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<Self::RecvRequest<'a>, &'a mut [u8]>>;

    /// Posts a zero-copy receive of the next message with `tag`, which must be exactly `len`
    /// bytes long (else [`crate::Error::SizeMismatch`]). The data is handed out in chunks that
    /// point into the transport's own buffers (the shared-memory ring, a socket staging
    /// buffer), so a collective can reduce straight from them into its destination.
    /// `Ok(None)` means "retry later".
    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<Self::RecvView<'_>>>;

    /// Closes the connection. Messages whose send completed are still delivered; the peer then
    /// sees [`crate::Error::PeerClosed`] on receives that nothing can satisfy. Dropping a
    /// connection closes it too, ignoring errors.
    fn close(self) -> Result<()>;

    /// This connection as a byte stream ([`crate::stream`]), for a collective's executor.
    /// `fabric` is the transport's [`Transport::name`]. The default starts the generic proxy
    /// ([`crate::stream::ProxyStream`]), so every fabric has a stream face; fabrics whose
    /// ends share memory override it with a native ring. Call it when no message is in
    /// flight, on both ends.
    fn into_stream(self, fabric: &'static str, config: &StreamConfig) -> Result<Box<dyn Stream>>
    where
        Self: Sized + 'static,
    {
        Ok(Box::new(crate::stream::ProxyStream::start(
            Box::new(self),
            fabric,
            config,
        )?))
    }
}

/// A posted operation. Progress happens inside `test` (there is no background thread), so a
/// request that is never tested never completes.
///
/// Dropping an incomplete request abandons it: the transport stops using its buffer before the
/// drop returns. If the message was partly on the wire, the connection is then broken
/// ([`crate::Error::Broken`]) because the byte stream cannot be resynchronised.
pub trait Request {
    /// Drives progress. `Ok(Some(n))`: complete, `n` bytes moved. `Ok(None)`: not yet.
    /// After completion or an error, further calls repeat the outcome's byte count or
    /// report [`crate::Error::Usage`].
    fn test(&mut self) -> Result<Option<usize>>;

    /// Bytes moved so far (a counter that grows while a large message streams). Blocking
    /// helpers use it to tell a slow transfer from an idle wait, so they keep spinning while
    /// data moves. The default (0) is right for requests that complete in one step.
    fn progress(&self) -> usize {
        0
    }
}

/// A zero-copy receive in progress. Call [`RecvView::next_chunk`] until
/// [`RecvView::is_complete`]; each chunk must be dropped before the next is asked for (the
/// borrow checker sees to it), and dropping it gives its buffer space back to the sender.
pub trait RecvView {
    /// Length of the message (the `len` it was posted with).
    fn len(&self) -> usize;
    /// True for a zero-length message.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes handed out so far.
    fn received(&self) -> usize;
    /// True once the message was matched and every byte was handed out.
    fn is_complete(&self) -> bool;
    /// Drives progress and returns the next piece of the message, if one arrived.
    /// `Ok(None)`: nothing new yet (or already complete).
    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>>;
}

/// Gives a chunk's buffer space back when the chunk is dropped.
pub trait Release {
    /// Called once, with the token the chunk was created with.
    fn release(&self, token: usize);
}

/// A piece of a received message, borrowed from the transport.
pub struct Chunk<'c> {
    offset: usize,
    data: &'c [u8],
    release: Option<(&'c dyn Release, usize)>,
}

impl<'c> Chunk<'c> {
    /// A chunk of `data` at byte `offset` of its message, with nothing to release.
    pub fn new(offset: usize, data: &'c [u8]) -> Self {
        Chunk {
            offset,
            data,
            release: None,
        }
    }

    /// A chunk that calls `releaser.release(token)` when dropped.
    pub fn with_release(
        offset: usize,
        data: &'c [u8],
        releaser: &'c dyn Release,
        token: usize,
    ) -> Self {
        Chunk {
            offset,
            data,
            release: Some((releaser, token)),
        }
    }

    /// Where this chunk starts in its message.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl Deref for Chunk<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for Chunk<'_> {
    fn drop(&mut self) {
        if let Some((releaser, token)) = self.release.take() {
            releaser.release(token);
        }
    }
}

impl fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("offset", &self.offset)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Registered memory: bytes the caller reads and writes, owned by the fabric.
pub trait MemoryRegion: Deref<Target = [u8]> + DerefMut + Send {}
