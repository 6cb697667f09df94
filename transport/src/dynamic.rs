//! Object-safe mirrors of the trait family, to pick a fabric at run time.
//!
//! Every [`Transport`] is a [`DynTransport`] (blanket impl), and `Box<dyn DynTransport>` is
//! itself a [`Transport`], so code generic over `T: Transport` (a communicator, the
//! conformance suite) runs unchanged over a fabric chosen from configuration. The price is a
//! box per request and a virtual call per operation; the static path has neither.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::api::{
    Address, Chunk, Connection, Listener, MemoryRegion, PendingConnection, Post, RecvView, Request,
    Setup, Tag, Transport,
};
use crate::error::{Error, Result};
use crate::stream::{Stream, StreamConfig};

/// A boxed request.
pub type BoxRequest<'a> = Box<dyn Request + 'a>;
/// A boxed zero-copy receive.
pub type BoxView<'a> = Box<dyn RecvView + 'a>;

/// Object-safe [`Transport`].
pub trait DynTransport: Send + Sync {
    /// See [`Transport::name`].
    fn dyn_name(&self) -> &'static str;
    /// See [`Transport::listen`].
    fn dyn_listen(&self) -> Result<Box<dyn DynListener>>;
    /// See [`Transport::connect`].
    fn dyn_connect(&self, addr: &DynAddress) -> Result<Box<dyn DynPending>>;
    /// See [`Transport::register`].
    fn dyn_register(&self, len: usize) -> Result<DynRegion>;
}

/// Object-safe [`Listener`].
pub trait DynListener: Send {
    /// See [`Listener::address`].
    fn dyn_address(&self) -> DynAddress;
    /// See [`Listener::poll_accept`].
    fn dyn_poll_accept(&mut self) -> Result<Option<Box<dyn DynPending>>>;
}

/// Object-safe [`PendingConnection`].
pub trait DynPending: Send {
    /// See [`PendingConnection::poll`].
    fn dyn_poll(self: Box<Self>) -> Result<Setup<Box<dyn DynConnection>, Box<dyn DynPending>>>;
}

/// Object-safe [`Connection`].
pub trait DynConnection: Send {
    /// See [`Connection::peer`].
    fn dyn_peer(&self) -> &str;
    /// See [`Connection::isend`].
    fn dyn_isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<BoxRequest<'a>, &'a [u8]>>;
    /// See [`Connection::irecv`].
    fn dyn_irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<BoxRequest<'a>, &'a mut [u8]>>;
    /// See [`Connection::irecv_view`].
    fn dyn_irecv_view(&self, tag: Tag, len: usize) -> Result<Option<BoxView<'_>>>;
    /// See [`Connection::close`].
    fn dyn_close(self: Box<Self>) -> Result<()>;
    /// See [`Connection::into_stream`].
    fn dyn_into_stream(
        self: Box<Self>,
        fabric: &'static str,
        config: &StreamConfig,
    ) -> Result<Box<dyn Stream>>;
}

/// An address of a run-time-chosen fabric: the fabric's name and its address bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct DynAddress {
    name: String,
    bytes: Vec<u8>,
}

impl DynAddress {
    /// Wraps a concrete address of the fabric called `name`.
    pub fn new<A: Address>(name: &str, addr: &A) -> Self {
        DynAddress {
            name: name.to_string(),
            bytes: addr.to_bytes(),
        }
    }
    /// The fabric's name.
    pub fn transport(&self) -> &str {
        &self.name
    }
    /// The fabric's own address bytes.
    pub fn inner_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for DynAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for DynAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.name)?;
        for b in self.bytes.iter().take(32) {
            write!(f, "{b:02x}")?;
        }
        if self.bytes.len() > 32 {
            write!(f, "..")?;
        }
        Ok(())
    }
}

impl Address for DynAddress {
    /// One byte of name length, the name, then the fabric's bytes.
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.name.len() + self.bytes.len());
        v.push(self.name.len() as u8);
        v.extend_from_slice(self.name.as_bytes());
        v.extend_from_slice(&self.bytes);
        v
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| Error::BadAddress {
            transport: "dyn",
            reason: reason.to_string(),
        };
        let (&n, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        let n = n as usize;
        if n == 0 || rest.len() < n {
            return Err(bad("bad fabric-name length"));
        }
        let name = std::str::from_utf8(&rest[..n]).map_err(|_| bad("fabric name is not UTF-8"))?;
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("fabric name has odd characters"));
        }
        Ok(DynAddress {
            name: name.to_string(),
            bytes: rest[n..].to_vec(),
        })
    }
}

trait ErasedRegion: Send {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl<R: MemoryRegion> ErasedRegion for R {
    fn bytes(&self) -> &[u8] {
        self
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// A boxed [`MemoryRegion`].
pub struct DynRegion(Box<dyn ErasedRegion>);

impl Deref for DynRegion {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.bytes()
    }
}
impl DerefMut for DynRegion {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
}
impl MemoryRegion for DynRegion {}

impl<T: Transport> DynTransport for T {
    fn dyn_name(&self) -> &'static str {
        self.name()
    }
    fn dyn_listen(&self) -> Result<Box<dyn DynListener>> {
        Ok(Box::new(Named {
            name: self.name(),
            inner: self.listen()?,
        }))
    }
    fn dyn_connect(&self, addr: &DynAddress) -> Result<Box<dyn DynPending>> {
        if addr.name != self.name() {
            return Err(Error::ConnectFailed {
                transport: self.name(),
                addr: addr.to_string(),
                reason: format!("the address belongs to fabric {:?}", addr.name),
            });
        }
        let inner = T::Address::from_bytes(&addr.bytes)?;
        Ok(Box::new(self.connect(&inner)?))
    }
    fn dyn_register(&self, len: usize) -> Result<DynRegion> {
        Ok(DynRegion(Box::new(self.register(len)?)))
    }
}

struct Named<L> {
    name: &'static str,
    inner: L,
}

impl<L> DynListener for Named<L>
where
    L: Listener,
    L::Pending: PendingConnection + 'static,
    <L::Pending as PendingConnection>::Connection: Connection + 'static,
{
    fn dyn_address(&self) -> DynAddress {
        DynAddress::new(self.name, &self.inner.address())
    }
    fn dyn_poll_accept(&mut self) -> Result<Option<Box<dyn DynPending>>> {
        Ok(self
            .inner
            .poll_accept()?
            .map(|p| Box::new(p) as Box<dyn DynPending>))
    }
}

impl<P> DynPending for P
where
    P: PendingConnection + 'static,
    P::Connection: Connection + 'static,
{
    fn dyn_poll(self: Box<Self>) -> Result<Setup<Box<dyn DynConnection>, Box<dyn DynPending>>> {
        Ok(match (*self).poll()? {
            Setup::Connected(c) => Setup::Connected(Box::new(c)),
            Setup::Pending(p) => Setup::Pending(Box::new(p)),
        })
    }
}

impl<C: Connection + 'static> DynConnection for C {
    fn dyn_peer(&self) -> &str {
        self.peer()
    }
    fn dyn_isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<BoxRequest<'a>, &'a [u8]>> {
        Ok(match self.isend(tag, buf)? {
            Post::Posted(r) => Post::Posted(Box::new(r)),
            Post::Retry(b) => Post::Retry(b),
        })
    }
    fn dyn_irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<BoxRequest<'a>, &'a mut [u8]>> {
        Ok(match self.irecv(tag, buf)? {
            Post::Posted(r) => Post::Posted(Box::new(r)),
            Post::Retry(b) => Post::Retry(b),
        })
    }
    fn dyn_irecv_view(&self, tag: Tag, len: usize) -> Result<Option<BoxView<'_>>> {
        Ok(self
            .irecv_view(tag, len)?
            .map(|v| Box::new(v) as BoxView<'_>))
    }
    fn dyn_into_stream(
        self: Box<Self>,
        fabric: &'static str,
        config: &StreamConfig,
    ) -> Result<Box<dyn Stream>> {
        (*self).into_stream(fabric, config)
    }
    fn dyn_close(self: Box<Self>) -> Result<()> {
        (*self).close()
    }
}

impl<R: Request + ?Sized> Request for Box<R> {
    fn test(&mut self) -> Result<Option<usize>> {
        (**self).test()
    }
    fn progress(&self) -> usize {
        (**self).progress()
    }
}

impl<V: RecvView + ?Sized> RecvView for Box<V> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn received(&self) -> usize {
        (**self).received()
    }
    fn is_complete(&self) -> bool {
        (**self).is_complete()
    }
    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        (**self).next_chunk()
    }
}

impl Listener for Box<dyn DynListener> {
    type Address = DynAddress;
    type Pending = Box<dyn DynPending>;
    fn address(&self) -> DynAddress {
        (**self).dyn_address()
    }
    fn poll_accept(&mut self) -> Result<Option<Box<dyn DynPending>>> {
        (**self).dyn_poll_accept()
    }
}

impl PendingConnection for Box<dyn DynPending> {
    type Connection = Box<dyn DynConnection>;
    fn poll(self) -> Result<Setup<Box<dyn DynConnection>, Self>> {
        <dyn DynPending>::dyn_poll(self)
    }
}

impl Connection for Box<dyn DynConnection> {
    type SendRequest<'a> = BoxRequest<'a>;
    type RecvRequest<'a> = BoxRequest<'a>;
    type RecvView<'a> = BoxView<'a>;
    fn peer(&self) -> &str {
        (**self).dyn_peer()
    }
    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<BoxRequest<'a>, &'a [u8]>> {
        (**self).dyn_isend(tag, buf)
    }
    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<BoxRequest<'a>, &'a mut [u8]>> {
        (**self).dyn_irecv(tag, buf)
    }
    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<BoxView<'_>>> {
        (**self).dyn_irecv_view(tag, len)
    }
    fn into_stream(self, fabric: &'static str, config: &StreamConfig) -> Result<Box<dyn Stream>> {
        self.dyn_into_stream(fabric, config)
    }
    fn close(self) -> Result<()> {
        <dyn DynConnection>::dyn_close(self)
    }
}

impl Transport for Box<dyn DynTransport> {
    type Address = DynAddress;
    type Listener = Box<dyn DynListener>;
    type Pending = Box<dyn DynPending>;
    type Connection = Box<dyn DynConnection>;
    type Region = DynRegion;
    fn name(&self) -> &'static str {
        (**self).dyn_name()
    }
    fn listen(&self) -> Result<Box<dyn DynListener>> {
        (**self).dyn_listen()
    }
    fn connect(&self, addr: &DynAddress) -> Result<Box<dyn DynPending>> {
        (**self).dyn_connect(addr)
    }
    fn register(&self, len: usize) -> Result<DynRegion> {
        (**self).dyn_register(len)
    }
}
