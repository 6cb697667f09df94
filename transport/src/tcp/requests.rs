//! The message face of a `tcp` connection: the `Connection` impl and its requests (sends,
//! copying receives, zero-copy views) over the framed sockets of `conn`.

use super::conn::{Pumped, Sink, TcpConnection};
use super::NAME;
use crate::api::{Chunk, Connection, Post, RecvView, Request, Tag};
use crate::error::{Error, Result};
use crate::stream::{Stream, StreamConfig};
use socket2::SockRef;

impl Connection for TcpConnection {
    type SendRequest<'a> = TcpSend<'a>;
    type RecvRequest<'a> = TcpRecv<'a>;
    type RecvView<'a> = TcpView<'a>;

    fn peer(&self) -> &str {
        &self.peer
    }

    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<TcpSend<'a>, &'a [u8]>> {
        let seq = self.post_send(buf.len())?;
        let mut req = TcpSend {
            conn: self,
            tag,
            buf,
            seq,
            done: false,
        };
        req.done = self.push(seq, tag, buf)?;
        Ok(Post::Posted(req))
    }

    fn irecv<'a>(&'a self, tag: Tag, buf: &'a mut [u8]) -> Result<Post<TcpRecv<'a>, &'a mut [u8]>> {
        let seq = self.rx.borrow_mut().seqs.post(tag);
        Ok(Post::Posted(TcpRecv {
            conn: self,
            tag,
            seq,
            buf,
            matched: false,
            done: 0,
            result: None,
            failed: false,
        }))
    }

    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<TcpView<'_>>> {
        let seq = self.rx.borrow_mut().seqs.post(tag);
        Ok(Some(TcpView {
            conn: self,
            tag,
            seq,
            len,
            matched: false,
            handed: 0,
            staging: Vec::new(),
            whole: None,
            failed: false,
        }))
    }

    fn into_stream(self, fabric: &'static str, config: &StreamConfig) -> Result<Box<dyn Stream>> {
        self.start_stream(fabric, config)
    }

    fn close(self) -> Result<()> {
        for s in &self.socks {
            // Sends already completed sit in the kernel and are still delivered before the FIN.
            let _ = SockRef::from(s).shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// A posted TCP send.
#[must_use = "a request does nothing unless tested"]
pub struct TcpSend<'a> {
    conn: &'a TcpConnection,
    tag: Tag,
    buf: &'a [u8],
    seq: u64,
    done: bool,
}

impl Request for TcpSend<'_> {
    fn test(&mut self) -> Result<Option<usize>> {
        if !self.done {
            self.done = self.conn.push(self.seq, self.tag, self.buf)?;
        }
        Ok(self.done.then_some(self.buf.len()))
    }
    fn progress(&self) -> usize {
        if self.done {
            self.buf.len()
        } else {
            self.conn.send_progress(self.seq)
        }
    }
}

impl Drop for TcpSend<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.abandon_send(self.seq);
        }
    }
}

/// A posted TCP receive into a caller buffer.
#[must_use = "a request does nothing unless tested"]
pub struct TcpRecv<'a> {
    conn: &'a TcpConnection,
    tag: Tag,
    seq: u64,
    buf: &'a mut [u8],
    matched: bool,
    done: usize,
    result: Option<usize>,
    failed: bool,
}

impl Request for TcpRecv<'_> {
    fn test(&mut self) -> Result<Option<usize>> {
        if let Some(n) = self.result {
            return Ok(Some(n));
        }
        if self.failed {
            return Err(Error::Usage {
                transport: NAME,
                reason: "test called again on a failed receive".into(),
            });
        }
        match self
            .conn
            .pump(self.tag, self.seq, self.matched, Sink::Copy(self.buf))
        {
            Ok(Pumped::Progress { done, len }) => {
                self.matched = true;
                self.done = done;
                self.result = (done == len).then_some(len);
                Ok(self.result)
            }
            Ok(_) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
    fn progress(&self) -> usize {
        self.done + usize::from(self.matched)
    }
}

impl Drop for TcpRecv<'_> {
    fn drop(&mut self) {
        if self.result.is_none() && !self.failed {
            self.conn.abandon_recv(self.tag, self.seq, self.matched);
        }
    }
}

/// Message byte ranges still to hand out.
type Ranges = std::collections::VecDeque<(usize, usize)>;

/// Staging bytes per view read: big enough for full-speed reads, small enough for the cache.
const STAGING: usize = 256 << 10;

/// A posted TCP zero-copy receive: chunks come from a staging buffer the socket is read into
/// (one copy, like `irecv`), so a collective can reduce from them without another.
#[must_use = "a request does nothing unless tested"]
pub struct TcpView<'a> {
    conn: &'a TcpConnection,
    tag: Tag,
    seq: u64,
    len: usize,
    matched: bool,
    handed: usize,
    staging: Vec<u8>,
    /// A message that arrived in a spill: the data and the ranges still to hand out.
    whole: Option<(Vec<u8>, Ranges)>,
    failed: bool,
}

impl RecvView for TcpView<'_> {
    fn len(&self) -> usize {
        self.len
    }
    fn received(&self) -> usize {
        self.handed
    }
    fn is_complete(&self) -> bool {
        self.matched && self.handed == self.len
    }
    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        if self.failed {
            return Err(Error::Usage {
                transport: NAME,
                reason: "next_chunk called again on a failed view".into(),
            });
        }
        if self.is_complete() {
            return Ok(None);
        }
        if let Some((_, ranges)) = &mut self.whole {
            let Some((a, b)) = ranges.pop_front() else {
                self.handed = self.len;
                return Ok(None);
            };
            self.handed += b - a;
            if ranges.is_empty() {
                self.handed = self.len;
            }
            let data = self.whole.as_ref().map_or(&[][..], |w| &w.0[a..b]);
            return Ok(Some(Chunk::new(a, data)));
        }
        if self.staging.is_empty() {
            self.staging = vec![0u8; self.len.clamp(1, STAGING)];
        }
        let pumped = self.conn.pump(
            self.tag,
            self.seq,
            self.matched,
            Sink::View {
                want: self.len,
                staging: &mut self.staging,
            },
        );
        match pumped {
            Err(e) => {
                self.failed = true;
                Err(e)
            }
            Ok(Pumped::Waiting) => Ok(None),
            Ok(Pumped::Progress { done, len }) => {
                self.matched = true;
                if len != self.len {
                    self.failed = true;
                    return Err(Error::SizeMismatch {
                        transport: NAME,
                        peer: self.conn.peer.clone(),
                        tag: self.tag,
                        message: len,
                        expected: self.len,
                    });
                }
                self.handed = done;
                Ok(None)
            }
            Ok(Pumped::Staged { offset, n, .. }) => {
                self.matched = true;
                self.handed += n;
                Ok(Some(Chunk::new(offset, &self.staging[..n])))
            }
            Ok(Pumped::Spilled { data, ranges }) => {
                self.matched = true;
                if data.len() != self.len {
                    self.failed = true;
                    return Err(Error::SizeMismatch {
                        transport: NAME,
                        peer: self.conn.peer.clone(),
                        tag: self.tag,
                        message: data.len(),
                        expected: self.len,
                    });
                }
                self.whole = Some((data, ranges.into()));
                self.next_chunk()
            }
        }
    }
}

impl Drop for TcpView<'_> {
    fn drop(&mut self) {
        if !self.failed && !self.is_complete() {
            self.conn.abandon_recv(self.tag, self.seq, self.matched);
        }
    }
}
