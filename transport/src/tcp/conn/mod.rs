//! A `tcp` connection: framed, striped messages over nonblocking sockets.
//!
//! The receive side follows the same ownership rule as `shm`: the message being read belongs
//! to the receive that matched it, or to a spill buffer when another receive is being tested,
//! so testing one receive never waits on another. Socket 0 is read through a small buffer so a
//! small message costs one `recv`; large parts are read straight into their destination.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};

use socket2::Socket;

use super::wire::{self, Frame, FRAME_LEN, KIND_MESSAGE, KIND_PART};
use super::NAME;
use crate::api::Tag;
use crate::error::{Error, Result};
use crate::matching::Seqs;

mod recv;

const INBUF: usize = 64 << 10;
/// Reads of at least this many bytes skip socket 0's buffer and land in place.
const DIRECT: usize = 16 << 10;

pub(super) struct TxPart {
    sock: usize,
    hdr: [u8; FRAME_LEN],
    hdr_done: usize,
    off: usize,
    len: usize,
    done: usize,
}

pub(super) struct Tx {
    next_seq: u64,
    active: u64,
    cancelled: Vec<u64>,
    cur: Option<(u64, Vec<TxPart>)>,
    broken: Option<String>,
}

struct RxPart {
    sock: usize,
    off: usize,
    len: usize,
    done: usize,
    /// Part header (parts on sockets > 0); `hdr_fill == FRAME_LEN` once checked.
    hdr: [u8; FRAME_LEN],
    hdr_fill: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    Recv(Tag, u64),
    Unexpected,
    /// Spilled after receive (tag, seq) had taken part of it; `base` per part in `Spill`.
    SpillFor(Tag, u64),
    Discard,
}

struct Cur {
    tag: Tag,
    len: usize,
    parts: Vec<RxPart>,
    owner: Owner,
}

struct Spill {
    data: Vec<u8>,
    /// Per part, the bytes the owning receive already held when this spill began.
    base: Vec<usize>,
    complete: bool,
}

pub(super) struct Rx {
    pub(super) seqs: Seqs,
    hdr: [u8; FRAME_LEN],
    hdr_fill: usize,
    inbuf: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    eof: Vec<bool>,
    cur: Option<Cur>,
    unexpected: Vec<(Tag, VecDeque<Spill>)>,
    spilled_for: Vec<((Tag, u64), Spill)>,
    failed: Option<String>,
}

/// Where the caller's own bytes go.
pub(super) enum Sink<'b> {
    Copy(&'b mut [u8]),
    View { want: usize, staging: &'b mut [u8] },
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pumped {
    Waiting,
    /// Matched; `done` of `len` bytes delivered (copied into the buffer).
    Progress {
        done: usize,
        len: usize,
    },
    /// View: `n` bytes in staging belong at message offset `offset`.
    Staged {
        offset: usize,
        n: usize,
        done: usize,
        len: usize,
    },
    /// The message (the bytes this receive does not hold yet: `ranges`) is in a spill buffer.
    Spilled {
        data: Vec<u8>,
        ranges: Vec<(usize, usize)>,
    },
}

/// One end of a TCP connection.
pub struct TcpConnection {
    pub(super) socks: Vec<Socket>,
    pub(super) peer: String,
    pub(super) peer_max: u64,
    pub(super) my_max: u64,
    pub(super) stripe_min: usize,
    pub(super) tx: RefCell<Tx>,
    pub(super) rx: RefCell<Rx>,
}

fn alloc(len: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        transport: NAME,
        len,
        limit: isize::MAX as usize,
    })?;
    v.resize(len, 0);
    Ok(v)
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

impl TcpConnection {
    pub(super) fn new(
        socks: Vec<Socket>,
        peer: String,
        peer_max: u64,
        my_max: u64,
        stripe_min: usize,
    ) -> Self {
        let n = socks.len();
        TcpConnection {
            socks,
            peer,
            peer_max,
            my_max,
            stripe_min,
            tx: RefCell::new(Tx {
                next_seq: 0,
                active: 0,
                cancelled: Vec::new(),
                cur: None,
                broken: None,
            }),
            rx: RefCell::new(Rx {
                seqs: Seqs::default(),
                hdr: [0; FRAME_LEN],
                hdr_fill: 0,
                inbuf: vec![0u8; INBUF].into_boxed_slice(),
                in_start: 0,
                in_end: 0,
                eof: vec![false; n],
                cur: None,
                unexpected: Vec::new(),
                spilled_for: Vec::new(),
                failed: None,
            }),
        }
    }

    fn closed(&self, during: String) -> Error {
        Error::PeerClosed {
            transport: NAME,
            peer: self.peer.clone(),
            during,
        }
    }

    fn broken(&self, why: &str) -> Error {
        Error::Broken {
            transport: NAME,
            peer: self.peer.clone(),
            reason: why.to_string(),
        }
    }

    /// Closes every socket so the peer notices at once (after a bad frame or a broken stream).
    fn shut(&self) {
        for s in &self.socks {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// What socket 0 read past the last message (the peer's first stream bytes), once
    /// nothing is in flight either way; an error when something is (the conversion would
    /// take message bytes for stream bytes).
    pub(super) fn idle_leftover(&self) -> Result<Vec<u8>> {
        let (tx, rx) = (self.tx.borrow(), self.rx.borrow());
        if let Some(why) = tx.broken.as_ref().or(rx.failed.as_ref()) {
            return Err(self.broken(why));
        }
        let busy = if tx.cur.is_some() {
            Some("a send is half-written")
        } else if rx.cur.is_some() || rx.hdr_fill > 0 {
            Some("a message is half-read")
        } else if !rx.unexpected.is_empty() || !rx.spilled_for.is_empty() {
            Some("a message arrived that nobody received")
        } else {
            None
        };
        if let Some(why) = busy {
            return Err(self.broken(&format!(
                "cannot become a stream while messages are in flight ({why})"
            )));
        }
        Ok(rx.inbuf[rx.in_start..rx.in_end].to_vec())
    }

    // ---- sending ----

    pub(super) fn post_send(&self, len: usize) -> Result<u64> {
        let mut tx = self.tx.borrow_mut();
        if let Some(why) = &tx.broken {
            return Err(self.broken(why));
        }
        if len as u64 > self.peer_max {
            return Err(Error::TooLarge {
                transport: NAME,
                len,
                limit: self.peer_max as usize,
            });
        }
        tx.next_seq += 1;
        Ok(tx.next_seq - 1)
    }

    /// Writes what the sockets take of send `seq`; true once all of it is written.
    pub(super) fn push(&self, seq: u64, tag: Tag, buf: &[u8]) -> Result<bool> {
        let mut guard = self.tx.borrow_mut();
        let tx = &mut *guard;
        if let Some(why) = &tx.broken {
            return Err(self.broken(why));
        }
        while tx.cancelled.contains(&tx.active) {
            let a = tx.active;
            tx.cancelled.retain(|&c| c != a);
            tx.active += 1;
        }
        if tx.active != seq {
            return Ok(false);
        }
        if tx.cur.as_ref().map(|c| c.0) != Some(seq) {
            let parts = wire::stripe(buf.len(), self.socks.len(), self.stripe_min)
                .into_iter()
                .enumerate()
                .map(|(k, (off, len))| {
                    let (kind, flen) = if k == 0 {
                        (KIND_MESSAGE, buf.len())
                    } else {
                        (KIND_PART, len)
                    };
                    TxPart {
                        sock: k,
                        hdr: Frame {
                            kind,
                            tag,
                            len: flen as u64,
                        }
                        .encode(),
                        hdr_done: 0,
                        off,
                        len,
                        done: 0,
                    }
                })
                .collect();
            tx.cur = Some((seq, parts));
        }
        let Some((_, parts)) = tx.cur.as_mut() else {
            return Ok(false);
        };
        loop {
            let mut progressed = false;
            let mut pending = false;
            for p in parts.iter_mut() {
                if p.hdr_done == FRAME_LEN && p.done == p.len {
                    continue;
                }
                let data = &buf[p.off + p.done..p.off + p.len];
                let bufs = [IoSlice::new(&p.hdr[p.hdr_done..]), IoSlice::new(data)];
                match self.socks[p.sock].send_vectored_with_flags(&bufs, libc::MSG_NOSIGNAL) {
                    Ok(mut n) => {
                        let h = n.min(FRAME_LEN - p.hdr_done);
                        p.hdr_done += h;
                        n -= h;
                        p.done += n;
                        progressed = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let during = format!(" during a {}-byte send with tag {tag}", buf.len());
                        tx.broken = Some(format!("send failed: {e}"));
                        return Err(if gone(&e) {
                            self.closed(during)
                        } else {
                            Error::io(NAME, format!("sending to {}{during}", self.peer), e)
                        });
                    }
                }
                if p.hdr_done < FRAME_LEN || p.done < p.len {
                    pending = true;
                }
            }
            if !pending {
                tx.cur = None;
                tx.active += 1;
                return Ok(true);
            }
            if !progressed {
                return Ok(false);
            }
        }
    }

    /// Bytes of send `seq` written so far (headers included).
    pub(super) fn send_progress(&self, seq: u64) -> usize {
        match &self.tx.borrow().cur {
            Some((s, parts)) if *s == seq => parts.iter().map(|p| p.hdr_done + p.done).sum(),
            _ => 0,
        }
    }

    pub(super) fn abandon_send(&self, seq: u64) {
        let mut tx = self.tx.borrow_mut();
        let started = tx.cur.as_ref().is_some_and(|c| c.0 == seq);
        if started {
            tx.broken = Some(format!("send #{seq} was dropped half-written"));
            tx.cur = None;
            drop(tx);
            self.shut();
        } else if seq >= tx.active {
            tx.cancelled.push(seq);
        }
    }
}
