//! An established RDMA connection and its requests: thin wrappers that borrow the caller's
//! buffer and drive the [`Engine`] from `test`.

use std::cell::RefCell;
use std::time::Duration;

use super::protocol::{Engine, RecvId, SendId};
use super::transport::map_err;
use super::verbs::Verbs;
use crate::api::{Chunk, Connection, Post, RecvView, Request, Tag};
use crate::error::{Error, Result};

const NAME: &str = "rdma";

/// An established RDMA connection (`Send`, not `Sync`: one thread drives it).
pub struct RdmaConnection<V: Verbs> {
    engine: RefCell<Engine<V>>,
    peer: String,
    close_timeout: Duration,
}

impl<V: Verbs> RdmaConnection<V> {
    pub(crate) fn new(engine: Engine<V>, close_timeout: Duration) -> Self {
        let peer = engine.peer().to_string();
        RdmaConnection {
            engine: RefCell::new(engine),
            peer,
            close_timeout,
        }
    }

    /// The most chunks that were ever in flight towards the peer; never more than its slots.
    pub fn max_outstanding(&self) -> u64 {
        self.engine.borrow().max_outstanding()
    }
}

impl<V: Verbs> Connection for RdmaConnection<V> {
    type SendRequest<'a> = RdmaSend<'a, V>;
    type RecvRequest<'a> = RdmaRecv<'a, V>;
    type RecvView<'a> = RdmaView<'a, V>;

    fn peer(&self) -> &str {
        &self.peer
    }

    fn isend<'a>(&'a self, tag: Tag, buf: &'a [u8]) -> Result<Post<RdmaSend<'a, V>, &'a [u8]>> {
        let posted = self
            .engine
            .borrow_mut()
            .isend(tag, buf)
            .map_err(|e| map_err(e, "isend"))?;
        Ok(match posted {
            Some(id) => Post::Posted(RdmaSend {
                conn: self,
                id,
                buf,
                outcome: None,
            }),
            None => Post::Retry(buf),
        })
    }

    fn irecv<'a>(
        &'a self,
        tag: Tag,
        buf: &'a mut [u8],
    ) -> Result<Post<RdmaRecv<'a, V>, &'a mut [u8]>> {
        let id = self.engine.borrow_mut().post_recv(tag);
        Ok(Post::Posted(RdmaRecv {
            conn: self,
            id,
            buf,
            outcome: None,
        }))
    }

    fn irecv_view(&self, tag: Tag, len: usize) -> Result<Option<RdmaView<'_, V>>> {
        let id = self.engine.borrow_mut().post_recv(tag);
        Ok(Some(RdmaView {
            conn: self,
            id,
            tag,
            len,
            checked: false,
            received: 0,
            complete: false,
            piece: Vec::new(),
        }))
    }

    fn close(self) -> Result<()> {
        let timeout = self.close_timeout;
        self.engine
            .borrow_mut()
            .close(timeout)
            .map_err(|e| map_err(e, "close"))
    }
}

/// How long dropping a connection waits to tell the peer it is closing (best effort: the peer
/// may have no free slot for the CLOSE).
const DROP_CLOSE_TIMEOUT: Duration = Duration::from_millis(100);

impl<V: Verbs> Drop for RdmaConnection<V> {
    fn drop(&mut self) {
        if let Err(e) = self.engine.get_mut().close(DROP_CLOSE_TIMEOUT) {
            tracing::debug!(peer = %self.peer, error = %e, "closing a dropped rdma connection");
        }
    }
}

/// What a finished request reports on later calls to `test`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Done(usize),
    Failed,
}

fn repeat(outcome: Outcome) -> Result<Option<usize>> {
    match outcome {
        Outcome::Done(n) => Ok(Some(n)),
        Outcome::Failed => Err(Error::Usage {
            transport: NAME,
            reason: "test called again on a request that failed".into(),
        }),
    }
}

/// A posted send; holds its buffer until complete.
#[must_use = "a send progresses only while tested"]
pub struct RdmaSend<'a, V: Verbs> {
    conn: &'a RdmaConnection<V>,
    id: SendId,
    buf: &'a [u8],
    outcome: Option<Outcome>,
}

impl<V: Verbs> Request for RdmaSend<'_, V> {
    fn test(&mut self) -> Result<Option<usize>> {
        if let Some(o) = self.outcome {
            return repeat(o);
        }
        let r = self
            .conn
            .engine
            .borrow_mut()
            .send_test(&mut self.id, self.buf);
        match r {
            Ok(Some(n)) => {
                self.outcome = Some(Outcome::Done(n));
                Ok(Some(n))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.outcome = Some(Outcome::Failed);
                Err(map_err(e, "send"))
            }
        }
    }
}

impl<V: Verbs> Drop for RdmaSend<'_, V> {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            self.conn.engine.borrow_mut().abandon_send(&self.id);
        }
    }
}

/// A posted receive; holds its buffer until complete.
#[must_use = "a receive progresses only while tested"]
pub struct RdmaRecv<'a, V: Verbs> {
    conn: &'a RdmaConnection<V>,
    id: RecvId,
    buf: &'a mut [u8],
    outcome: Option<Outcome>,
}

impl<V: Verbs> Request for RdmaRecv<'_, V> {
    fn test(&mut self) -> Result<Option<usize>> {
        if let Some(o) = self.outcome {
            return repeat(o);
        }
        let r = self.conn.engine.borrow_mut().recv_test(self.id, self.buf);
        match r {
            Ok(Some(n)) => {
                self.outcome = Some(Outcome::Done(n));
                Ok(Some(n))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.outcome = Some(Outcome::Failed);
                Err(map_err(e, "receive"))
            }
        }
    }
}

impl<V: Verbs> Drop for RdmaRecv<'_, V> {
    fn drop(&mut self) {
        if self.outcome.is_none() {
            self.conn.engine.borrow_mut().cancel_recv(self.id);
        }
    }
}

/// A receive handed out in pieces. The slots of a queue pair's arena can be rewritten by the
/// NIC as soon as they are credited back, so pieces are copies (one per `next_chunk`, of
/// everything that arrived since the last one), not views into the arena.
#[must_use = "a view progresses only while polled"]
pub struct RdmaView<'a, V: Verbs> {
    conn: &'a RdmaConnection<V>,
    id: RecvId,
    tag: Tag,
    len: usize,
    checked: bool,
    received: usize,
    complete: bool,
    piece: Vec<u8>,
}

impl<V: Verbs> RecvView for RdmaView<'_, V> {
    fn len(&self) -> usize {
        self.len
    }

    fn received(&self) -> usize {
        self.received
    }

    fn is_complete(&self) -> bool {
        self.complete
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        if self.complete {
            return Ok(None);
        }
        let mut engine = self.conn.engine.borrow_mut();
        if !self.checked {
            match engine
                .claimed_len(self.id)
                .map_err(|e| map_err(e, "view"))?
            {
                None => {
                    // Not matched yet: still report a dead or closed peer.
                    engine
                        .check_waiting(self.id)
                        .map_err(|e| map_err(e, "view"))?;
                    return Ok(None);
                }
                Some(n) if n != self.len => {
                    engine.cancel_recv(self.id);
                    self.complete = true;
                    let peer = self.conn.peer.clone();
                    return Err(Error::SizeMismatch {
                        transport: NAME,
                        peer,
                        tag: self.tag,
                        message: n,
                        expected: self.len,
                    });
                }
                Some(_) => self.checked = true,
            }
        }
        let Some((offset, done)) = engine
            .take_arrived(self.id, &mut self.piece)
            .map_err(|e| map_err(e, "view"))?
        else {
            return Ok(None);
        };
        drop(engine);
        self.received += self.piece.len();
        self.complete = done;
        if self.piece.is_empty() {
            return Ok(None);
        }
        Ok(Some(Chunk::new(offset, &self.piece)))
    }
}

impl<V: Verbs> Drop for RdmaView<'_, V> {
    fn drop(&mut self) {
        if !self.complete {
            self.conn.engine.borrow_mut().cancel_recv(self.id);
        }
    }
}
