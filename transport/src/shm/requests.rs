//! The message face of a `shm` connection: the `Connection` impl and its requests (sends,
//! copying receives, zero-copy views) over the ring protocol of `conn`.

use super::conn::{Pumped, Rdv, SendState, ShmConnection, Sink, Taken, NAME};
use crate::api::{Chunk, Connection, Post, RecvView, Release, Request, Tag};
use crate::error::{Error, Result};

impl Release for ShmConnection {
    fn release(&self, token: usize) {
        self.release_chunk(token);
    }
}

impl Connection for ShmConnection {
    type SendRequest<'a> = ShmSend<'a>;
    type RecvRequest<'a> = ShmRecv<'a>;
    type RecvView<'a> = ShmView<'a>;

    fn peer(&self) -> &str {
        &self.peer
    }

    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<ShmSend<'a>, &'a [u8]>> {
        let seq = self.post_send()?;
        let mut req = ShmSend {
            conn: self,
            tag,
            buf,
            seq,
            state: SendState::default(),
            done: false,
        };
        // Eager: a message that fits leaves now, and the request is already complete.
        req.done = self.push(seq, tag, buf, &mut req.state)?;
        Ok(Post::Posted(req))
    }

    fn irecv<'a>(&'a self, tag: Tag, buf: &'a mut [u8]) -> Result<Post<ShmRecv<'a>, &'a mut [u8]>> {
        let seq = self.rx.borrow_mut().seqs.post(tag);
        Ok(Post::Posted(ShmRecv {
            conn: self,
            tag,
            seq,
            buf,
            matched: false,
            done: 0,
            result: None,
            failed: false,
            rdv: None,
        }))
    }

    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<ShmView<'_>>> {
        let seq = self.rx.borrow_mut().seqs.post(tag);
        Ok(Some(ShmView {
            conn: self,
            tag,
            seq,
            len,
            matched: false,
            handed: 0,
            local: None,
            failed: false,
            rdv: None,
            staging: Vec::new(),
        }))
    }

    /// Native: the stream runs over this connection's own rings (see [`crate::stream`]).
    fn into_stream(
        self,
        _fabric: &'static str,
        config: &crate::stream::StreamConfig,
    ) -> Result<Box<dyn crate::stream::Stream>> {
        Ok(Box::new(self.stream(config)?))
    }

    fn close(self) -> Result<()> {
        drop(self);
        Ok(())
    }
}

/// A posted shared-memory send.
#[must_use = "a request does nothing unless tested"]
pub struct ShmSend<'a> {
    conn: &'a ShmConnection,
    tag: Tag,
    buf: &'a [u8],
    seq: u64,
    state: SendState,
    done: bool,
}

impl Request for ShmSend<'_> {
    fn test(&mut self) -> Result<Option<usize>> {
        if !self.done {
            self.done = self
                .conn
                .push(self.seq, self.tag, self.buf, &mut self.state)?;
        }
        Ok(self.done.then_some(self.buf.len()))
    }
    fn progress(&self) -> usize {
        self.state.written + usize::from(self.state.header)
    }
}

impl Drop for ShmSend<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.conn.abandon_send(self.seq, self.state);
        }
    }
}

/// A posted shared-memory receive into a caller buffer.
#[must_use = "a request does nothing unless tested"]
pub struct ShmRecv<'a> {
    conn: &'a ShmConnection,
    tag: Tag,
    seq: u64,
    buf: &'a mut [u8],
    matched: bool,
    done: usize,
    result: Option<usize>,
    failed: bool,
    rdv: Option<Rdv>,
}

/// A rendezvous copy proceeds in pieces of this size, so `test` returns now and then.
const RDV_PIECE: usize = 8 << 20;

impl ShmRecv<'_> {
    /// Takes on a rendezvous message, or refuses it when it does not fit.
    fn start_rdv(&mut self, r: Rdv) -> Result<Option<usize>> {
        self.matched = true;
        if r.len > self.buf.len() {
            let _ = self.conn.rdv_finish(&r);
            return Err(Error::Truncated {
                transport: NAME,
                peer: self.conn.peer.clone(),
                tag: self.tag,
                message: r.len,
                buffer: self.buf.len(),
            });
        }
        self.rdv = Some(r);
        self.copy_rdv()
    }

    fn copy_rdv(&mut self) -> Result<Option<usize>> {
        let Some(r) = self.rdv else { return Ok(None) };
        let n = (r.len - self.done).min(RDV_PIECE);
        self.conn
            .rdv_read(&r, self.done, &mut self.buf[self.done..self.done + n])?;
        self.done += n;
        if self.done < r.len {
            return Ok(None);
        }
        self.rdv = None;
        self.conn.rdv_finish(&r)?;
        Ok(Some(r.len))
    }

    fn step(&mut self) -> Result<Option<usize>> {
        if self.rdv.is_some() {
            return self.copy_rdv();
        }
        let taken = self.conn.spill_of(self.tag, self.seq);
        if let Some(Taken::Rdv(r)) = taken {
            return self.start_rdv(r);
        }
        if let Some(Taken::Bytes(data, filled, complete)) = taken {
            self.matched = true;
            let total = self.done + data.len();
            if total > self.buf.len() {
                self.conn.abandon_recv(self.tag, self.seq, true);
                return Err(Error::Truncated {
                    transport: NAME,
                    peer: self.conn.peer.clone(),
                    tag: self.tag,
                    message: total,
                    buffer: self.buf.len(),
                });
            }
            self.buf[self.done..self.done + filled].copy_from_slice(&data[..filled]);
            self.done += filled;
            if complete {
                return Ok(Some(total));
            }
        }
        match self
            .conn
            .pump(self.tag, self.seq, self.matched, Sink::Copy(self.buf))?
        {
            Pumped::Progress { done, len } => {
                self.matched = true;
                self.done = done;
                Ok((done == len).then_some(len))
            }
            Pumped::Rendezvous(r) => self.start_rdv(r),
            _ => Ok(None),
        }
    }
}

impl Request for ShmRecv<'_> {
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
        match self.step() {
            Ok(r) => {
                self.result = r;
                Ok(r)
            }
            Err(e) => {
                // Every error path above has settled the message (taken, discarded or spilled).
                self.failed = true;
                self.matched = true;
                Err(e)
            }
        }
    }
    fn progress(&self) -> usize {
        self.done + usize::from(self.matched)
    }
}

impl Drop for ShmRecv<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.rdv.take() {
            // Release the sender (its message is dropped with this receive).
            let _ = self.conn.rdv_finish(&r);
        } else if self.result.is_none() && !self.failed {
            self.conn.abandon_recv(self.tag, self.seq, self.matched);
        }
    }
}

/// A posted zero-copy receive: chunks point into the ring.
#[must_use = "a request does nothing unless tested"]
pub struct ShmView<'a> {
    conn: &'a ShmConnection,
    tag: Tag,
    seq: u64,
    len: usize,
    matched: bool,
    handed: usize,
    /// Bytes that arrived before this view was tested (spilled): (data, filled, complete,
    /// message offset of data[0]).
    local: Option<(Vec<u8>, usize, bool, usize)>,
    failed: bool,
    /// A rendezvous message being copied through `staging`.
    rdv: Option<Rdv>,
    staging: Vec<u8>,
}

impl RecvView for ShmView<'_> {
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
            self.local = None;
            return Ok(None);
        }
        if self.rdv.is_some() {
            return self.rdv_chunk();
        }
        if self.local.is_none() {
            let taken = self.conn.spill_of(self.tag, self.seq);
            if let Some(Taken::Rdv(r)) = taken {
                return self.start_rdv(r);
            }
            if let Some(Taken::Bytes(data, filled, complete)) = taken {
                self.matched = true;
                let total = self.handed + data.len();
                if total != self.len {
                    self.failed = true;
                    self.conn.abandon_recv(self.tag, self.seq, true);
                    return Err(Error::SizeMismatch {
                        transport: NAME,
                        peer: self.conn.peer.clone(),
                        tag: self.tag,
                        message: total,
                        expected: self.len,
                    });
                }
                self.local = Some((data, filled, complete, self.handed));
            }
        }
        if let Some((filled, complete, base)) = self.local.as_ref().map(|l| (l.1, l.2, l.3)) {
            let from = self.handed - base;
            if from < filled {
                self.handed = base + filled;
                let data = self.local.as_ref().map_or(&[][..], |l| &l.0[from..filled]);
                return Ok(Some(Chunk::new(base + from, data)));
            }
            if complete || self.handed == self.len {
                return Ok(None);
            }
            // The rest streams through the ring, which this view owns again.
            self.local = None;
        }
        let pumped = self
            .conn
            .pump(self.tag, self.seq, self.matched, Sink::View(self.len));
        match pumped {
            Err(e) => {
                self.failed = true;
                self.matched = true;
                Err(e)
            }
            Ok(Pumped::Waiting) => Ok(None),
            Ok(Pumped::Rendezvous(r)) => self.start_rdv(r),
            Ok(Pumped::Progress { done, .. }) => {
                self.matched = true;
                self.handed = done;
                Ok(None)
            }
            Ok(Pumped::Visible { pos, offset, len }) => {
                self.matched = true;
                self.handed = offset + len;
                self.conn.chunk_out.set(true);
                // SAFETY: the bytes are published and unreleased; `chunk_out` stops every other
                // receive of this connection from moving the tail until the chunk is dropped,
                // and the chunk cannot outlive `self` (which borrows the connection).
                let data = unsafe { self.conn.map.view(1 - self.conn.side, pos, len) };
                Ok(Some(Chunk::with_release(offset, data, self.conn, len)))
            }
        }
    }
}

impl ShmView<'_> {
    fn start_rdv(&mut self, r: Rdv) -> Result<Option<Chunk<'_>>> {
        self.matched = true;
        if r.len != self.len {
            self.failed = true;
            let _ = self.conn.rdv_finish(&r);
            return Err(Error::SizeMismatch {
                transport: NAME,
                peer: self.conn.peer.clone(),
                tag: self.tag,
                message: r.len,
                expected: self.len,
            });
        }
        self.rdv = Some(r);
        self.rdv_chunk()
    }

    /// Copies the next piece of a rendezvous message into the staging buffer (one copy, as
    /// through the ring) and hands it out.
    fn rdv_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        let Some(r) = self.rdv else { return Ok(None) };
        if self.staging.is_empty() {
            self.staging = vec![0u8; r.len.clamp(1, 1 << 20)];
        }
        let off = self.handed;
        let n = (r.len - off).min(self.staging.len());
        if let Err(e) = self.conn.rdv_read(&r, off, &mut self.staging[..n]) {
            self.failed = true;
            self.rdv = None;
            let _ = self.conn.rdv_finish(&r);
            return Err(e);
        }
        self.handed += n;
        if self.handed == r.len {
            self.rdv = None;
            if let Err(e) = self.conn.rdv_finish(&r) {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(Some(Chunk::new(off, &self.staging[..n])))
    }
}

impl Drop for ShmView<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.rdv.take() {
            let _ = self.conn.rdv_finish(&r);
            return;
        }
        if !self.failed && !self.is_complete() {
            self.conn.abandon_recv(self.tag, self.seq, self.matched);
        }
    }
}
