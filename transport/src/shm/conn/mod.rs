//! A `shm` connection: the sending and receiving halves of the ring protocol.
//!
//! A record starts on a 128-byte boundary with a 32-byte header — a marker word, tag, length,
//! and how many data bytes were published with the header — followed by the data, padded to
//! 128 bytes. The producer writes the marker (the record's own stream position plus one) last,
//! with release ordering; the consumer polls the marker at its tail, so for a small message
//! one cache line carries the signal, the header and the payload, and the consumer never
//! touches the producer's `head` line. A message larger than the free space is streamed:
//! the producer publishes `head` after every piece and the consumer copies (or hands out)
//! what is published, so a 1 GiB message passes through a 4 MiB ring.
//!
//! Receiving follows one rule: the bytes at the ring's tail belong to the message being read
//! (`Cur`), whose owner is the receive that matched it, or a spill buffer when the receive
//! that wants those bytes is not the one being tested (another tag, or an unmatched message),
//! so testing any receive never waits on another one.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ring::{Mapping, ACK_SLOTS};
use crate::api::Tag;
use crate::error::{Error, Result};
use crate::matching::Seqs;

mod recv;

pub(super) const NAME: &str = "shm";
/// Record header: marker (u64, written last), tag, length, bytes of data published with the
/// header. Records start on 128-byte boundaries, so a small message shares the header's line,
/// and the line the consumer polls next is never the adjacent-line prefetch partner of the one
/// the producer is writing (64-byte records measured 2-4x slower one-way here).
const HDR: u64 = 32;
const REC_ALIGN: u64 = 128;
/// Largest message length accepted from a header; anything above is a corrupted ring.
pub(super) const MAX_MESSAGE: u64 = 1 << 40;
/// The producer publishes `head` at least this often, so the consumer copies in parallel.
const PIECE: usize = 64 << 10;
/// How often a waiting receiver looks for a dead peer process.
const LIVENESS_EVERY: Duration = Duration::from_millis(100);

/// A spill buffer for a message no receive was ready for; a length that cannot be allocated
/// is an error, not an abort.
fn alloc_spill(len: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        transport: NAME,
        len,
        limit: isize::MAX as usize,
    })?;
    v.resize(len, 0);
    Ok(v)
}

fn align_rec(x: u64) -> u64 {
    (x + REC_ALIGN - 1) & !(REC_ALIGN - 1)
}

pub(super) struct Tx {
    head: u64,
    tail_cache: u64,
    /// Sequence number of the next send to post, and of the send allowed to write.
    next_seq: u64,
    active: u64,
    cancelled: Vec<u64>,
    broken: Option<String>,
    rdv_next: u64,
}

/// Where a large message waits in the sender's memory (single-copy path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rdv {
    pid: u32,
    addr: u64,
    seq: u64,
    pub(super) len: usize,
}

/// Progress of one send.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SendState {
    /// The record header is in the ring.
    pub(super) header: bool,
    /// Data bytes written into the ring.
    pub(super) written: usize,
    /// Sent by rendezvous with this sequence number: complete once acknowledged.
    pub(super) rdv: Option<u64>,
}

struct Spill {
    data: Vec<u8>,
    filled: usize,
    rdv: Option<Rdv>,
}

/// A message found waiting for a receive.
pub(super) enum Taken {
    /// Its bytes: (data, bytes filled, complete).
    Bytes(Vec<u8>, usize, bool),
    /// A rendezvous message, still in the sender's memory.
    Rdv(Rdv),
}

/// `first` value of a rendezvous record header.
const RDV_FIRST: u64 = u64::MAX;
/// Acknowledgement slot values: 2s+1 pending, 2s+2 done, this: cancelled by the sender.
const ACK_CANCELLED: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    /// A receive (copying or zero-copy) identified by (tag, seq).
    Recv(Tag, u64),
    /// Spilled into the unexpected queue of its tag (no receive matched yet).
    Unexpected,
    /// Matched by (tag, seq) at byte `base`, then spilled because another receive was tested.
    SpillFor(Tag, u64, usize),
    /// Skipped: its receive failed (too long) or was dropped.
    Discard,
}

struct Cur {
    tag: Tag,
    len: usize,
    done: usize,
    owner: Owner,
}

pub(super) struct Rx {
    tail: u64,
    published_tail: u64,
    head_cache: u64,
    cur: Option<Cur>,
    pub(super) seqs: Seqs,
    unexpected: Vec<(Tag, VecDeque<Spill>)>,
    spilled_for: Vec<((Tag, u64), Spill)>,
    idle_polls: u32,
    last_liveness: Option<Instant>,
    failed: Option<String>,
}

/// What a pump call does with the bytes of the caller's own message.
pub(super) enum Sink<'b> {
    /// Copy into this buffer (a longer message is `Truncated`).
    Copy(&'b mut [u8]),
    /// Zero-copy of a message of exactly this length: report published bytes instead of
    /// consuming them.
    View(usize),
}

/// What happened for the caller's own message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pumped {
    /// Not matched yet.
    Waiting,
    /// Matched; `done` of `len` bytes are in the caller's buffer (or handed out).
    Progress { done: usize, len: usize },
    /// For a view: `len` published bytes at stream position `pos`, message offset `offset`.
    Visible { pos: u64, offset: usize, len: usize },
    /// Matched a rendezvous message: the receive copies it from the sender itself.
    Rendezvous(Rdv),
}

/// One end of a shared-memory connection.
pub struct ShmConnection {
    pub(super) map: Arc<Mapping>,
    pub(super) side: usize,
    pub(super) peer: String,
    pub(super) peer_pid: u32,
    pub(super) tx: RefCell<Tx>,
    pub(super) rx: RefCell<Rx>,
    pub(super) chunk_out: Cell<bool>,
    /// Messages of at least this many bytes go by rendezvous when the peer can read us.
    pub(super) cma_min: usize,
    /// The rings now belong to a stream (`into_stream`): dropping this leaves them open.
    pub(super) detached: bool,
}

impl ShmConnection {
    pub(super) fn new(map: Arc<Mapping>, side: usize, peer: String, cma_min: usize) -> Self {
        let peer_pid = map.pid(1 - side).load(Ordering::Acquire);
        // Can we read the peer's memory? (Its probe address was published before the file
        // was renamed into place or marked accepted.)
        let addr = map.probe_addr(1 - side).load(Ordering::Acquire);
        let ok = super::cma::probe(peer_pid, addr);
        map.cma_ok(side)
            .store(if ok { 1 } else { 2 }, Ordering::Release);
        ShmConnection {
            map,
            side,
            peer,
            peer_pid,
            tx: RefCell::new(Tx {
                head: 0,
                tail_cache: 0,
                next_seq: 0,
                active: 0,
                cancelled: Vec::new(),
                broken: None,
                rdv_next: 0,
            }),
            rx: RefCell::new(Rx {
                tail: 0,
                published_tail: 0,
                head_cache: 0,
                cur: None,
                seqs: Seqs::default(),
                unexpected: Vec::new(),
                spilled_for: Vec::new(),
                idle_polls: 0,
                last_liveness: None,
                failed: None,
            }),
            chunk_out: Cell::new(false),
            cma_min,
            detached: false,
        }
    }

    fn peer_closed(&self) -> bool {
        self.map.closed(1 - self.side).load(Ordering::Acquire) != 0
    }

    pub(super) fn closed_error(&self, during: String) -> Error {
        Error::PeerClosed {
            transport: NAME,
            peer: self.peer.clone(),
            during,
        }
    }

    /// True when the peer process is gone (checked at most every [`LIVENESS_EVERY`]).
    fn peer_dead(&self, rx: &mut Rx) -> bool {
        rx.idle_polls += 1;
        if rx.idle_polls < 1024 {
            return false;
        }
        rx.idle_polls = 0;
        let now = Instant::now();
        match rx.last_liveness {
            Some(t) if now.duration_since(t) < LIVENESS_EVERY => return false,
            _ => rx.last_liveness = Some(now),
        }
        self.peer_pid != 0
            && self.peer_pid != std::process::id()
            && !crate::shm::process_alive(self.peer_pid)
    }

    // ---- sending ----

    pub(super) fn post_send(&self) -> Result<u64> {
        let mut tx = self.tx.borrow_mut();
        if let Some(why) = &tx.broken {
            return Err(Error::Broken {
                transport: NAME,
                peer: self.peer.clone(),
                reason: why.clone(),
            });
        }
        tx.next_seq += 1;
        Ok(tx.next_seq - 1)
    }

    /// Writes as much of send `seq` as fits. `state` is (header written, data bytes written).
    /// Returns true when the whole record is in the ring.
    pub(super) fn push(
        &self,
        seq: u64,
        tag: Tag,
        buf: &[u8],
        state: &mut SendState,
    ) -> Result<bool> {
        if let Some(s) = state.rdv {
            return self.rdv_acked(s, tag, buf.len());
        }
        let mut tx = self.tx.borrow_mut();
        while tx.cancelled.contains(&tx.active) {
            let a = tx.active;
            tx.cancelled.retain(|&c| c != a);
            tx.active += 1;
        }
        if tx.active != seq {
            return Ok(false);
        }
        let cap = self.map.ring_bytes as u64;
        let ring = self.side;
        let len = buf.len();
        if !state.header
            && self.cma_min > 0
            && len >= self.cma_min
            && self.map.cma_ok(1 - self.side).load(Ordering::Acquire) == 1
        {
            return self.post_rdv(&mut tx, tag, buf, state);
        }
        loop {
            let header_done = state.header;
            let mut free = cap - (tx.head - tx.tail_cache);
            let whole = align_rec(HDR + len as u64);
            let need = if !header_done {
                if len <= PIECE {
                    whole
                } else {
                    HDR + 1
                }
            } else if state.written < len {
                1
            } else {
                align_rec(tx.head) - tx.head
            };
            if free < need {
                tx.tail_cache = self.map.tail(ring).load(Ordering::Acquire);
                free = cap - (tx.head - tx.tail_cache);
                let least = if header_done { need } else { need.min(HDR + 1) };
                if free < least || (len == 0 && free < whole) {
                    if self.peer_closed() {
                        return Err(
                            self.closed_error(format!(" during a {len}-byte send with tag {tag}"))
                        );
                    }
                    return Ok(false);
                }
            }
            let mut head = tx.head;
            let complete;
            if !header_done {
                // The whole record at once when it is small and fits; otherwise a first piece
                // strictly shorter than the message (so `first == len` means "complete").
                let n = if len <= PIECE && free >= whole {
                    len
                } else {
                    (len - 1).min((free - HDR) as usize).min(PIECE)
                };
                // The record's first line is assembled here and stored in one go: the consumer
                // polls that line, and every separate store would have to take it back.
                let mut line = [0u8; REC_ALIGN as usize];
                line[8..16].copy_from_slice(&tag.to_ne_bytes());
                line[16..24].copy_from_slice(&(len as u64).to_ne_bytes());
                line[24..32].copy_from_slice(&(n as u64).to_ne_bytes());
                let inline = n.min(REC_ALIGN as usize - HDR as usize);
                line[HDR as usize..HDR as usize + inline].copy_from_slice(&buf[..inline]);
                // SAFETY: we are this ring's only producer and HDR + n bytes are free; the
                // marker word (the first 8 bytes) is written below, atomically and last.
                unsafe {
                    self.map
                        .write(ring, head + 8, &line[8..HDR as usize + inline]);
                    self.map
                        .write(ring, head + HDR + inline as u64, &buf[inline..n]);
                }
                self.map
                    .marker(ring, head)
                    .store(head + 1, Ordering::Release);
                state.header = true;
                state.written = n;
                complete = n == len;
                head = if complete {
                    head + whole
                } else {
                    head + HDR + n as u64
                };
            } else {
                let n = (len - state.written).min(free as usize).min(PIECE);
                if n > 0 {
                    // SAFETY: only producer; n <= free bytes.
                    unsafe {
                        self.map
                            .write(ring, head, &buf[state.written..state.written + n])
                    };
                    head += n as u64;
                    free -= n as u64;
                    state.written += n;
                }
                complete = state.written == len && free >= align_rec(head) - head;
                if complete {
                    head = align_rec(head);
                }
            }
            tx.head = head;
            self.map.head(ring).store(head, Ordering::Release);
            if complete {
                tx.active += 1;
                return Ok(true);
            }
        }
    }

    /// Posts a rendezvous record: the receiver copies `buf` out of this process itself, and the
    /// send completes when it acknowledges.
    fn post_rdv(&self, tx: &mut Tx, tag: Tag, buf: &[u8], state: &mut SendState) -> Result<bool> {
        let ring = self.side;
        let s = tx.rdv_next;
        let slot = self.map.ack(ring, s as usize);
        if s >= ACK_SLOTS as u64 && slot.load(Ordering::Acquire) == 2 * (s - ACK_SLOTS as u64) + 1 {
            // The slot's previous message is still being read.
            return Ok(false);
        }
        let cap = self.map.ring_bytes as u64;
        if cap - (tx.head - tx.tail_cache) < REC_ALIGN {
            tx.tail_cache = self.map.tail(ring).load(Ordering::Acquire);
            if cap - (tx.head - tx.tail_cache) < REC_ALIGN {
                if self.peer_closed() {
                    return Err(self.closed_error(format!(
                        " during a {}-byte send with tag {tag}",
                        buf.len()
                    )));
                }
                return Ok(false);
            }
        }
        let mut rec = [0u8; 48];
        rec[..8].copy_from_slice(&tag.to_ne_bytes());
        rec[8..16].copy_from_slice(&(buf.len() as u64).to_ne_bytes());
        rec[16..24].copy_from_slice(&RDV_FIRST.to_ne_bytes());
        rec[24..32].copy_from_slice(&u64::from(std::process::id()).to_ne_bytes());
        rec[32..40].copy_from_slice(&(buf.as_ptr() as u64).to_ne_bytes());
        rec[40..48].copy_from_slice(&s.to_ne_bytes());
        slot.store(2 * s + 1, Ordering::Release);
        let head = tx.head;
        // SAFETY: only producer; a whole record slot (REC_ALIGN bytes) is free.
        unsafe { self.map.write(ring, head + 8, &rec) };
        self.map
            .marker(ring, head)
            .store(head + 1, Ordering::Release);
        tx.head = head + REC_ALIGN;
        self.map.head(ring).store(tx.head, Ordering::Release);
        tx.rdv_next += 1;
        tx.active += 1;
        state.header = true;
        state.rdv = Some(s);
        self.rdv_acked(s, tag, buf.len())
    }

    fn rdv_acked(&self, s: u64, tag: Tag, len: usize) -> Result<bool> {
        let v = self.map.ack(self.side, s as usize).load(Ordering::Acquire);
        if v == 2 * s + 2 {
            return Ok(true);
        }
        if self.peer_closed() {
            return Err(self.closed_error(format!(
                " before reading a {len}-byte message with tag {tag}"
            )));
        }
        Ok(false)
    }

    /// The receiver's side: copies `dst.len()` bytes at offset `off` of a rendezvous message.
    pub(super) fn rdv_read(&self, r: &Rdv, off: usize, dst: &mut [u8]) -> Result<()> {
        super::cma::read(r.pid, r.addr + off as u64, dst).map_err(|e| {
            let slot = self
                .map
                .ack(1 - self.side, r.seq as usize)
                .load(Ordering::Acquire);
            if slot == ACK_CANCELLED || e.raw_os_error() == Some(libc::ESRCH) {
                self.closed_error(format!(
                    " during a {}-byte message (it abandoned the send)",
                    r.len
                ))
            } else {
                Error::io(
                    NAME,
                    format!("reading a {}-byte message from {}", r.len, self.peer),
                    e,
                )
            }
        })
    }

    /// Acknowledges a rendezvous message (read, refused or dropped). Fails when the sender
    /// gave up on it meanwhile: then what was read cannot be trusted.
    pub(super) fn rdv_finish(&self, r: &Rdv) -> Result<()> {
        std::sync::atomic::fence(Ordering::SeqCst);
        let slot = self.map.ack(1 - self.side, r.seq as usize);
        match slot.compare_exchange(
            2 * r.seq + 1,
            2 * r.seq + 2,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(_) => Err(self.closed_error(format!(
                " during a {}-byte message (it abandoned the send)",
                r.len
            ))),
        }
    }

    /// A send that never reached the ring is skipped; one that partly did breaks the stream;
    /// a rendezvous send is withdrawn (the receiver then fails that one receive).
    pub(super) fn abandon_send(&self, seq: u64, state: SendState) {
        if let Some(s) = state.rdv {
            let slot = self.map.ack(self.side, s as usize);
            let _ = slot.compare_exchange(
                2 * s + 1,
                ACK_CANCELLED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            std::sync::atomic::fence(Ordering::SeqCst);
            return;
        }
        let started = state.header;
        let mut tx = self.tx.borrow_mut();
        if started {
            tx.broken = Some(format!("send #{seq} was dropped half-written"));
            // The stream is unusable: tell the peer, who will see PeerClosed.
            self.map.closed(self.side).store(1, Ordering::Release);
        } else if seq >= tx.active {
            tx.cancelled.push(seq);
        }
    }
}

impl Drop for ShmConnection {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.map.closed(self.side).store(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The producer stores a record's marker (header and first piece) before it moves its head
    /// past them. A consumer that took the first piece on the marker's word and then reads
    /// the head finds it behind its own tail: it must wait for the rest, not read past the
    /// head (the view of the head once moved back, and `head - tail` wrapped: a panic in a
    /// debug build, bytes not yet written in a release one; seen under load in the 4 KiB-ring
    /// conformance run).
    #[test]
    fn a_marker_ahead_of_the_head_is_not_read_past() {
        let ring_bytes = 4096;
        let path = std::env::temp_dir().join(format!("oxccl-marker-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(super::super::ring::file_len(ring_bytes) as u64)
            .unwrap();
        let map = Arc::new(Mapping::map(&file, ring_bytes, "the test file").unwrap());
        std::fs::remove_file(&path).unwrap();
        map.init(std::process::id());
        map.pid(1).store(std::process::id(), Ordering::Relaxed);
        // Side 1 reads ring 0; this test is ring 0's producer.
        let rx = ShmConnection::new(map.clone(), 1, "the test's producer".into(), 0);
        let (tag, len, first) = (7u64, 100usize, 40usize);
        let msg: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();

        // The producer's first store: the record's line with its first piece, then the marker.
        let mut line = [0u8; REC_ALIGN as usize];
        line[8..16].copy_from_slice(&tag.to_ne_bytes());
        line[16..24].copy_from_slice(&(len as u64).to_ne_bytes());
        line[24..32].copy_from_slice(&(first as u64).to_ne_bytes());
        line[HDR as usize..HDR as usize + first].copy_from_slice(&msg[..first]);
        // SAFETY: this test is ring 0's only producer; the ring is empty.
        unsafe { map.write(0, 8, &line[8..HDR as usize + first]) };
        map.marker(0, 0).store(1, Ordering::Release);

        let mut buf = vec![0u8; len];
        let seq = rx.rx.borrow_mut().seqs.post(tag);
        let got = rx.pump(tag, seq, false, Sink::Copy(&mut buf)).unwrap();
        assert!(
            matches!(got, Pumped::Progress { done, len: l } if done == first && l == len),
            "{got:?}"
        );
        // Looked at again before the producer moved its head: still the first piece only.
        let got = rx.pump(tag, seq, true, Sink::Copy(&mut buf)).unwrap();
        assert!(
            matches!(got, Pumped::Progress { done, .. } if done == first),
            "{got:?}"
        );

        // The producer publishes the rest and moves its head past the record.
        // SAFETY: as above; the bytes after the first piece are free.
        unsafe { map.write(0, HDR + first as u64, &msg[first..]) };
        map.head(0)
            .store(align_rec(HDR + len as u64), Ordering::Release);
        let got = rx.pump(tag, seq, true, Sink::Copy(&mut buf)).unwrap();
        assert!(
            matches!(got, Pumped::Progress { done, len: l } if done == len && l == len),
            "{got:?}"
        );
        assert_eq!(buf, msg);
    }
}
