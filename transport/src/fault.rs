//! Fault injection around any transport, for reliability tests.
//!
//! [`Faulty<T>`] wraps a transport; every connection it makes (dialed or accepted) misbehaves
//! on its *sending* side as its [`FaultPlan`] says:
//!
//! * `delay`: each send is held back this long before it reaches the inner transport;
//! * `drop_after_bytes`: once this many bytes were sent, the connection is "dropped": every
//!   later operation on this side fails with [`Error::Injected`] and nothing more is sent; the
//!   peer sees [`Error::PeerClosed`] as soon as this side drops the connection (which callers do
//!   on error);
//! * `corrupt_byte`: the byte at this offset of the outgoing stream (all messages' payloads
//!   back to back) is inverted; the message that holds it is sent from a copy, which is leaked
//!   (one message per connection, a test tool's price for keeping the sender's buffer borrowed);
//! * `stall_after_bytes`: once this many bytes were sent, sends and receives stop progressing
//!   (a hung peer): both sides' deadlines must fire.
//!
//! Receives and zero-copy views pass through unchanged, except under a stall or a drop.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::api::{
    Chunk, Connection, Listener, PendingConnection, Post, RecvView, Request, Setup, Tag, Transport,
};
use crate::error::{Error, Result};

/// What goes wrong, and when.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Added delay before each send.
    pub delay: Option<Duration>,
    /// Drop the connection once this many payload bytes were sent.
    pub drop_after_bytes: Option<u64>,
    /// Invert the byte at this offset of the outgoing payload stream.
    pub corrupt_byte: Option<u64>,
    /// Stop all progress once this many payload bytes were sent.
    pub stall_after_bytes: Option<u64>,
}

/// A transport whose connections misbehave as planned.
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    inner: T,
    plan: FaultPlan,
}

impl<T> Faulty<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, plan: FaultPlan) -> Self {
        Faulty { inner, plan }
    }
}

impl<T: Transport> Transport for Faulty<T> {
    type Address = T::Address;
    type Listener = FaultyListener<T::Listener>;
    type Pending = FaultyPending<T::Pending>;
    type Connection = FaultyConnection<T::Connection>;
    type Region = T::Region;

    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn listen(&self) -> Result<Self::Listener> {
        Ok(FaultyListener {
            inner: self.inner.listen()?,
            plan: self.plan.clone(),
        })
    }
    fn connect(&self, addr: &T::Address) -> Result<Self::Pending> {
        Ok(FaultyPending {
            inner: self.inner.connect(addr)?,
            plan: self.plan.clone(),
        })
    }
    fn register(&self, len: usize) -> Result<T::Region> {
        self.inner.register(len)
    }
}

/// A listener whose connections misbehave.
pub struct FaultyListener<L> {
    inner: L,
    plan: FaultPlan,
}

impl<L: Listener> Listener for FaultyListener<L> {
    type Address = L::Address;
    type Pending = FaultyPending<L::Pending>;
    fn address(&self) -> L::Address {
        self.inner.address()
    }
    fn poll_accept(&mut self) -> Result<Option<Self::Pending>> {
        Ok(self.inner.poll_accept()?.map(|p| FaultyPending {
            inner: p,
            plan: self.plan.clone(),
        }))
    }
}

/// A pending connection that will misbehave.
pub struct FaultyPending<P> {
    inner: P,
    plan: FaultPlan,
}

impl<P> PendingConnection for FaultyPending<P>
where
    P: PendingConnection,
    P::Connection: Connection,
{
    type Connection = FaultyConnection<P::Connection>;
    fn poll(self) -> Result<Setup<Self::Connection, Self>> {
        Ok(match self.inner.poll()? {
            Setup::Connected(c) => Setup::Connected(FaultyConnection {
                inner: c,
                plan: self.plan,
                sent: Cell::new(0),
                corrupted: Cell::new(false),
            }),
            Setup::Pending(p) => Setup::Pending(FaultyPending {
                inner: p,
                plan: self.plan,
            }),
        })
    }
}

/// A connection that misbehaves as planned.
pub struct FaultyConnection<C> {
    inner: C,
    plan: FaultPlan,
    /// Payload bytes handed to the inner transport so far.
    sent: Cell<u64>,
    corrupted: Cell<bool>,
}

impl<C: Connection> FaultyConnection<C> {
    fn dropped(&self) -> bool {
        self.plan
            .drop_after_bytes
            .is_some_and(|n| self.sent.get() >= n)
    }
    fn stalled(&self) -> bool {
        self.plan
            .stall_after_bytes
            .is_some_and(|n| self.sent.get() >= n)
    }
    fn injected(&self, what: &str) -> Error {
        Error::Injected {
            peer: self.inner.peer().to_string(),
            what: what.to_string(),
        }
    }
    fn check(&self) -> Result<()> {
        if self.dropped() {
            return Err(self.injected(&format!(
                "connection dropped after {} bytes",
                self.sent.get()
            )));
        }
        Ok(())
    }

    /// The buffer to send: the caller's, or a leaked corrupted copy when it holds the byte.
    fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let start = self.sent.get();
        match self.plan.corrupt_byte {
            Some(k) if !self.corrupted.get() && k >= start && k < start + buf.len() as u64 => {
                self.corrupted.set(true);
                let mut copy = buf.to_vec();
                copy[(k - start) as usize] ^= 0xff;
                Box::leak(copy.into_boxed_slice())
            }
            _ => buf,
        }
    }
}

impl<C: Connection> Connection for FaultyConnection<C> {
    type SendRequest<'a>
        = FaultySend<'a, C>
    where
        Self: 'a;
    type RecvRequest<'a>
        = FaultyRecv<'a, C>
    where
        Self: 'a;
    type RecvView<'a>
        = FaultyView<'a, C>
    where
        Self: 'a;

    fn peer(&self) -> &str {
        self.inner.peer()
    }

    fn isend<'a>(
        &'a self,
        tag: Tag,
        buf: &'a [u8],
    ) -> Result<Post<Self::SendRequest<'a>, &'a [u8]>> {
        self.check()?;
        let until = self.plan.delay.map(|d| Instant::now() + d);
        Ok(Post::Posted(FaultySend {
            conn: self,
            tag,
            buf,
            until,
            inner: None,
            done: false,
        }))
    }

    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<Self::RecvRequest<'a>, &'a mut [u8]>> {
        self.check()?;
        Ok(match self.inner.irecv(tag, buf)? {
            Post::Posted(r) => Post::Posted(FaultyRecv {
                conn: self,
                inner: r,
            }),
            Post::Retry(b) => Post::Retry(b),
        })
    }

    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<Self::RecvView<'_>>> {
        self.check()?;
        Ok(self.inner.irecv_view(tag, len)?.map(|v| FaultyView {
            conn: self,
            inner: v,
        }))
    }

    fn close(self) -> Result<()> {
        self.inner.close()
    }
}

/// A send that may be delayed, corrupted, dropped or stalled.
#[must_use = "a request does nothing unless tested"]
pub struct FaultySend<'a, C: Connection + 'a> {
    conn: &'a FaultyConnection<C>,
    tag: Tag,
    buf: &'a [u8],
    until: Option<Instant>,
    inner: Option<C::SendRequest<'a>>,
    done: bool,
}

impl<'a, C: Connection + 'a> Request for FaultySend<'a, C> {
    fn test(&mut self) -> Result<Option<usize>> {
        if self.done {
            return Ok(Some(self.buf.len()));
        }
        self.conn.check()?;
        if self.conn.stalled() {
            return Ok(None);
        }
        if self.inner.is_none() {
            if self.until.is_some_and(|t| Instant::now() < t) {
                return Ok(None);
            }
            let payload = self.conn.payload(self.buf);
            match self.conn.inner.isend(self.tag, payload)? {
                Post::Posted(r) => self.inner = Some(r),
                Post::Retry(_) => return Ok(None),
            }
            self.conn
                .sent
                .set(self.conn.sent.get() + self.buf.len() as u64);
        }
        if let Some(r) = self.inner.as_mut() {
            if r.test()?.is_some() {
                self.done = true;
                return Ok(Some(self.buf.len()));
            }
        }
        Ok(None)
    }
    fn progress(&self) -> usize {
        self.inner.as_ref().map_or(0, Request::progress)
    }
}

/// A receive that stops under a stall or a drop.
#[must_use = "a request does nothing unless tested"]
pub struct FaultyRecv<'a, C: Connection + 'a> {
    conn: &'a FaultyConnection<C>,
    inner: C::RecvRequest<'a>,
}

impl<'a, C: Connection + 'a> Request for FaultyRecv<'a, C> {
    fn test(&mut self) -> Result<Option<usize>> {
        self.conn.check()?;
        if self.conn.stalled() {
            return Ok(None);
        }
        self.inner.test()
    }
    fn progress(&self) -> usize {
        self.inner.progress()
    }
}

/// A zero-copy receive that stops under a stall or a drop.
#[must_use = "a request does nothing unless tested"]
pub struct FaultyView<'a, C: Connection + 'a> {
    conn: &'a FaultyConnection<C>,
    inner: C::RecvView<'a>,
}

impl<'a, C: Connection + 'a> RecvView for FaultyView<'a, C> {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn received(&self) -> usize {
        self.inner.received()
    }
    fn is_complete(&self) -> bool {
        self.inner.is_complete()
    }
    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        self.conn.check()?;
        if self.conn.stalled() {
            return Ok(None);
        }
        self.inner.next_chunk()
    }
}
