//! The single-copy path of native streams: a large message crosses memory once.
//!
//! Through the ring every byte is copied twice (sender buffer -> ring -> destination). For a
//! message of at least the connection's threshold (negotiated at connect, so both ends agree
//! from the length alone), the sender instead writes a 32-byte header into the stream; if the
//! peer can read its memory the header carries the buffer's address and the receiver copies
//! straight out of it into its destination (`process_vm_readv` between processes, a plain copy
//! between threads of one process), in pieces, then counts the message as pulled in the
//! connection's header (`pulled[r]`, see `stream::ring`), which completes the sender's job.
//! Otherwise the header says "inline" and the bytes follow in the stream as usual: where
//! cross-memory attach is refused (ptrace rules, containers), where not all bytes are ready
//! yet, and where the ring is the faster path now (the sender's choice per message,
//! `stream::choice`, from what the receiver measured of both paths). Open MPI's vader moves
//! large messages the same way (`btl_vader_single_copy_mechanism`).
//!
//! Header: magic u32, mode u32 (1 pull, 2 inline, 3 inline with the bytes not all ready: not
//! a measure of the ring's speed, 4 inline written with non-temporal stores: `stream::nt`),
//! length u64, address u64, ticket u64 (the sender's count of pull offers before this one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::choice::{size_class, Choice, Chooser, Path, Timing};
use super::{RingStream, Stream};
use crate::error::{Error, Result};

const MAGIC: u32 = u32::from_le_bytes(*b"OXSC");
const MODE_PULL: u32 = 1;
const MODE_INLINE: u32 = 2;
const MODE_INLINE_PARTIAL: u32 = 3;
const MODE_INLINE_NT: u32 = 4;
/// Bytes of a large message's header in the stream.
pub const LARGE_HEADER: usize = 32;

/// How long closing or aborting waits for a peer that is inside a copy out of our memory.
const UNPULL_WAIT: Duration = Duration::from_secs(2);

/// What the sender of a large message knows of it when it offers it ([`crate::Stream::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offering {
    /// All its bytes are ready at the address given: it may be pulled. Otherwise they follow
    /// through the stream as they come.
    pub whole: bool,
    /// Bytes the sender sends its peers in the same call alongside this message (it
    /// included; 0 where it does not say): an all-to-all's to every peer. On a crowded host
    /// the ring's size is weighed against the larger of this and the message
    /// (`stream::choice`, "Crowded hosts").
    pub alongside: usize,
}

impl Offering {
    /// A message whose bytes are all ready, sent on its own.
    pub const WHOLE: Offering = Offering {
        whole: true,
        alongside: 0,
    };
    /// A message whose bytes are not all ready yet: they follow through the stream.
    pub const PARTIAL: Offering = Offering {
        whole: false,
        alongside: 0,
    };
}

/// What [`crate::Stream::offer`] did with a large message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The peer copies the bytes out of our memory; they stay unchanged until
    /// [`crate::Stream::taken`] says so.
    Pull(u64),
    /// The bytes follow through [`crate::Stream::write`] as usual.
    Inline,
}

/// What arrived for a large message ([`crate::Stream::arrival`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Copy it out of the sender with [`crate::Stream::pull`], then [`crate::Stream::pulled`].
    Pull(Pull),
    /// The bytes follow in the stream.
    Inline,
}

/// A large message the receiver copies out of the sender's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull {
    addr: u64,
    /// Its length.
    pub len: usize,
}

/// A native stream's single-copy setup: the agreed threshold and how to reach the peer.
pub(crate) struct SingleCopy {
    /// Messages of at least this many bytes take the large path (both ends use one value).
    pub(crate) min: usize,
    /// Whether the peer can read this process's memory now (the sender's choice per message).
    pub(crate) peer_reads_us: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The peer's process, or `None` when it is this process (a plain copy).
    pub(crate) peer_pid: Option<u32>,
    /// Pull offers made so far (the next one's ticket).
    offered: u64,
    /// Whether a fallback to the ring was logged already.
    told: bool,
    /// Pull, ring or ring with non-temporal stores, per message.
    chooser: Chooser,
}

impl SingleCopy {
    pub(crate) fn new(
        min: usize,
        choice: Choice,
        peer_reads_us: Arc<dyn Fn() -> bool + Send + Sync>,
        peer_pid: Option<u32>,
    ) -> Option<Self> {
        (min > 0).then(|| SingleCopy {
            min,
            peer_reads_us,
            peer_pid: peer_pid.filter(|&p| p != std::process::id()),
            offered: 0,
            told: false,
            chooser: Chooser::new(choice),
        })
    }
}

/// A stream's single-copy state, or the error of a stream that has none (a free function, so
/// that `offer_large` can hold it beside the stream's other fields).
fn single_of<'a>(
    single: &'a mut Option<SingleCopy>,
    fabric: &'static str,
    peer: &str,
) -> Result<&'a mut SingleCopy> {
    single.as_mut().ok_or_else(|| Error::Usage {
        transport: fabric,
        reason: format!("the stream to {peer} has no single-copy path"),
    })
}

impl RingStream {
    fn single(&mut self) -> Result<&mut SingleCopy> {
        single_of(&mut self.single, self.fabric, &self.peer)
    }

    pub(super) fn offer_large(
        &mut self,
        ptr: *const u8,
        len: usize,
        how: Offering,
    ) -> Result<Option<Offer>> {
        let whole = how.whole;
        let (fabric, peer, tx) = (self.fabric, &self.peer, &self.tx);
        let sc = single_of(&mut self.single, fabric, peer)?;
        let can_pull = whole && (sc.peer_reads_us)();
        if !can_pull && whole && !sc.told {
            sc.told = true;
            tracing::debug!(fabric, %peer, "single-copy: the peer cannot read our memory; large messages go through the ring");
        }
        let path = if whole {
            sc.chooser.path(
                len,
                how.alongside,
                can_pull,
                |class| tx.speeds(class),
                Instant::now(),
            )
        } else {
            sc.chooser.ring_path(len)
        };
        let pull = path == Path::Pull;
        let mode = match (path, whole) {
            (Path::Pull, _) => MODE_PULL,
            (_, false) => MODE_INLINE_PARTIAL,
            (Path::Ring, true) => MODE_INLINE,
            (Path::RingNt, true) => MODE_INLINE_NT,
        };
        let ticket = sc.offered;
        let mut h = [0u8; LARGE_HEADER];
        h[..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&mode.to_le_bytes());
        h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        h[16..24].copy_from_slice(&(ptr as u64).to_le_bytes());
        h[24..32].copy_from_slice(&ticket.to_le_bytes());
        match self.tx.write_whole(&h) {
            Err(()) => Err(self.closed(" while a large send waited")),
            Ok(false) => Ok(None),
            Ok(true) if pull => {
                self.single()?.offered += 1;
                Ok(Some(Offer::Pull(ticket)))
            }
            Ok(true) => {
                self.tx.stores_next(len, path == Path::RingNt);
                Ok(Some(Offer::Inline))
            }
        }
    }

    /// A crowded host pulls the messages at least as large as the ring (`stream::choice`).
    pub(super) fn set_crowded_large(&mut self, crowded: bool) {
        let ring = self.tx.capacity();
        if let Some(sc) = self.single.as_mut() {
            sc.chooser.pull_from = crowded.then_some(ring);
        }
    }

    pub(super) fn taken_large(&mut self, ticket: u64) -> Result<bool> {
        if self.tx.pulled() > ticket {
            return Ok(true);
        }
        // The peer counts its pull before it closes: seen closed, the count is read again.
        if self.tx.closed_any() && self.tx.pulled() <= ticket {
            return Err(self.closed(" before it copied a large message out of our memory"));
        }
        Ok(self.tx.pulled() > ticket)
    }

    pub(super) fn arrival_large(&mut self, len: usize) -> Result<Option<Arrival>> {
        let view = self.peek()?;
        if view.len() < LARGE_HEADER {
            // The header is written whole, but may straddle the ring's end: copy it in two.
            if view.is_empty() {
                return Ok(None);
            }
        }
        let mut h = [0u8; LARGE_HEADER];
        let first = view.len().min(LARGE_HEADER);
        h[..first].copy_from_slice(&view[..first]);
        if first < LARGE_HEADER {
            self.rx.consume(first);
            let rest = self.peek()?;
            if rest.len() < LARGE_HEADER - first {
                return Err(self.bad("a large message's header arrived in part"));
            }
            h[first..].copy_from_slice(&rest[..LARGE_HEADER - first]);
            self.rx.consume(LARGE_HEADER - first);
        } else {
            self.rx.consume(LARGE_HEADER);
        }
        let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let magic = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
        let mode = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if magic != MAGIC || word(8) != len as u64 {
            return Err(self.bad(&format!(
                "expected the header of a {len}-byte large message, got magic {magic:#x} length {}",
                word(8)
            )));
        }
        let (arrival, path) = match mode {
            MODE_INLINE | MODE_INLINE_PARTIAL => (Arrival::Inline, Path::Ring),
            MODE_INLINE_NT => (Arrival::Inline, Path::RingNt),
            MODE_PULL => (
                Arrival::Pull(Pull {
                    addr: word(16),
                    len,
                }),
                Path::Pull,
            ),
            m => return Err(self.bad(&format!("unknown large-message mode {m}"))),
        };
        // Measured from here to its last byte (`stream::choice`), unless its bytes were not
        // all ready when it was sent (then it would time the sender's producer).
        self.timing = (mode != MODE_INLINE_PARTIAL).then(|| Timing {
            class: size_class(len),
            path,
            len,
            start: Instant::now(),
            end: self.rx.position() + len as u64,
        });
        Ok(Some(arrival))
    }

    pub(super) fn pull_large(&mut self, p: &Pull, pos: usize, dst: &mut [u8]) -> Result<()> {
        if pos + dst.len() > p.len {
            return Err(Error::Usage {
                transport: self.fabric,
                reason: format!(
                    "pulling [{pos}, +{}) of a {}-byte message",
                    dst.len(),
                    p.len
                ),
            });
        }
        let pid = self.single()?.peer_pid;
        if !self.rx.set_pulling(true) {
            return Err(self.closed(" (it gave up on a large message we were copying)"));
        }
        let addr = p.addr + pos as u64;
        let r = match pid {
            Some(pid) => crate::shm::cma::read(pid, addr, dst),
            None => {
                // SAFETY: the sender of this process keeps [addr, addr + len) valid and
                // unchanged until it sees the message pulled, and before it may free it after
                // giving up it waits for our `pulling` flag to drop (`wait_unpulled`), which
                // we raised above after checking that it had not given up.
                let src = unsafe { std::slice::from_raw_parts(addr as *const u8, dst.len()) };
                dst.copy_from_slice(src);
                Ok(())
            }
        };
        self.rx.set_pulling(false);
        match r {
            Ok(()) if !self.tx.closed_any() => Ok(()),
            // What we copied may be stale: the sender gave up while we read (it closes only
            // after the message is pulled, or when it gives up).
            Ok(()) => Err(self.closed(" (it aborted while we copied a large message)")),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || self.tx.closed_any() => {
                Err(self.closed(&format!(" (while we copied a large message: {e})")))
            }
            Err(e) => Err(Error::io(
                self.fabric,
                format!("copying a {}-byte message out of {}", p.len, self.peer),
                e,
            )),
        }
    }

    pub(super) fn pulled_large(&mut self) {
        self.rx.add_pulled();
        if let Some(t) = self.timing.take().filter(|t| t.path == Path::Pull) {
            self.measured(t);
        }
    }

    /// After a consume: the large message taken through the ring is complete once its last
    /// byte is consumed.
    #[inline]
    pub(super) fn consumed_large(&mut self) {
        if let Some(t) = self
            .timing
            .filter(|t| t.path != Path::Pull && self.rx.position() >= t.end)
        {
            self.timing = None;
            self.measured(t);
        }
    }

    fn measured(&mut self, t: Timing) {
        if let Some(show) = self.measured.add(t.class, t.path, t.mbps(Instant::now())) {
            self.rx.show_speed(t.class, t.path, show);
        }
    }

    /// After closing or aborting: a peer thread inside a plain copy out of our memory finishes
    /// before the memory may be freed. A peer process needs no wait (`process_vm_readv` on
    /// freed memory is `EFAULT`, and it checks the closed flags after each piece), and must
    /// not get one: a process killed inside a copy leaves its flag raised for good.
    pub(super) fn settle_pulls(&self) {
        let same_process = self
            .single
            .as_ref()
            .is_some_and(|s| s.peer_pid.is_none() && s.offered > self.tx.pulled());
        if same_process {
            self.tx.wait_unpulled(UNPULL_WAIT);
        }
    }

    fn bad(&self, reason: &str) -> Error {
        Error::BadFrame {
            transport: self.fabric,
            peer: self.peer.clone(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ring::HeapBlock;

    const CAP: usize = 1 << 16;
    const MIN: usize = 8 << 10;
    /// One size class (16-32 KiB); fits the ring whole, so one thread can send and receive.
    const LEN: usize = 24 << 10;

    /// Two native streams over one heap ring pair, choosing automatically, trying the slower
    /// path again only after `explore` (tests pass an hour: the choice is then the speeds').
    fn pair(explore: Duration) -> (RingStream, RingStream) {
        let block = HeapBlock::new(CAP);
        let end = |side: usize| {
            let mut sc = SingleCopy::new(MIN, Choice::Auto, Arc::new(|| true), None).unwrap();
            sc.chooser = Chooser::new(Choice::Auto).exploring_every(explore);
            RingStream::new(
                block.ends(CAP, side),
                "loopback",
                format!("{}", 1 - side),
                None,
            )
            .with_single_copy(Some(sc))
        };
        (end(0), end(1))
    }

    /// Sends `data` from `a` to `b` as one large message; the path the receiver was told.
    /// Every byte is checked.
    fn send(a: &mut RingStream, b: &mut RingStream, data: &[u8]) -> Path {
        // SAFETY: `data` outlives the offer: it is taken before this returns.
        let offer = unsafe { a.offer(data.as_ptr(), data.len(), Offering::WHOLE) };
        let offer = offer.unwrap().expect("room for the header");
        let arrival = b.arrival(data.len()).unwrap().expect("the header");
        let path = b.timing.expect("a whole message is measured").path;
        let mut got = vec![0u8; data.len()];
        match (offer, arrival) {
            (Offer::Pull(ticket), Arrival::Pull(p)) => {
                assert!(!a.taken(ticket).unwrap());
                b.pull(&p, 0, &mut got).unwrap();
                b.pulled();
                assert!(a.taken(ticket).unwrap());
                assert_eq!(path, Path::Pull);
            }
            (Offer::Inline, Arrival::Inline) => {
                // In odd pieces from a misaligned start: non-temporal stores must still
                // deliver every byte.
                let mut sent = 0;
                let mut step = 1;
                while sent < data.len() {
                    step = (step * 7 + 13) % 5000 + 1;
                    let end = (sent + step).min(data.len());
                    sent += a.write(&data[sent..end]).unwrap();
                }
                let mut at = 0;
                while at < got.len() {
                    let v = b.peek().unwrap();
                    let n = v.len().min(got.len() - at);
                    got[at..at + n].copy_from_slice(&v[..n]);
                    b.consume(n);
                    at += n;
                }
                assert_ne!(path, Path::Pull);
            }
            other => panic!("the offer and the arrival disagree: {other:?}"),
        }
        assert!(got == data, "a {}-byte message arrived changed", data.len());
        path
    }

    fn message(seed: usize) -> Vec<u8> {
        (0..LEN)
            .map(|i| (i * 31 + seed * 7 + i / 4099) as u8)
            .collect()
    }

    #[test]
    fn every_path_is_taken_and_measured_by_the_receiver() {
        let (mut a, mut b) = pair(Duration::from_secs(3600));
        let class = size_class(LEN);
        assert_eq!(a.tx.speeds(class), [0; 3]);
        // Pulled first (nothing measured), then each ring is tried; the first message of
        // each path is left out of the speeds (first touches), so each is taken once more
        // while it shows none, the unmeasured counting as the best.
        assert_eq!(send(&mut a, &mut b, &message(1)), Path::Pull);
        assert_eq!(send(&mut a, &mut b, &message(2)), Path::Ring);
        assert_eq!(send(&mut a, &mut b, &message(3)), Path::RingNt);
        assert_eq!(a.tx.speeds(class), [0; 3]);
        assert_eq!(send(&mut a, &mut b, &message(4)), Path::Pull);
        assert_eq!(send(&mut a, &mut b, &message(5)), Path::Ring);
        assert_eq!(send(&mut a, &mut b, &message(6)), Path::RingNt);
        let speeds = a.tx.speeds(class);
        assert!(speeds.iter().all(|&s| s > 0), "speeds {speeds:?}");
        // The other direction and other classes have their own.
        assert_eq!(b.tx.speeds(class), [0; 3]);
        assert_eq!(a.tx.speeds(class + 1), [0; 3]);
        // A message whose bytes are not all ready goes through the ring and is not measured.
        let data = message(3);
        // SAFETY: inline: the stream does not keep the pointer.
        let offer = unsafe { a.offer(data.as_ptr(), data.len(), Offering::PARTIAL) };
        assert_eq!(offer.unwrap(), Some(Offer::Inline));
        assert_eq!(b.arrival(LEN).unwrap(), Some(Arrival::Inline));
        assert!(b.timing.is_none());
    }

    #[test]
    fn the_choice_follows_the_speeds_mid_stream() {
        // No tries of the slower paths during the test: the choice is the speeds' alone.
        let (mut a, mut b) = pair(Duration::from_secs(3600));
        let class = size_class(LEN);
        for (i, path) in [Path::Pull, Path::Ring, Path::RingNt]
            .into_iter()
            .enumerate()
        {
            assert_eq!(send(&mut a, &mut b, &message(i)), path);
        }
        // One path is far faster than the others (one slow measurement moves a speed by a
        // quarter at most, so what these messages measure cannot turn it): it is taken.
        for (k, fast) in [Path::Ring, Path::Pull, Path::RingNt, Path::Ring]
            .into_iter()
            .enumerate()
        {
            for p in Path::ALL {
                let s = if p == fast { 1_000_000 } else { 1 };
                b.rx.show_speed(class, p, s);
            }
            for i in 0..5 {
                assert_eq!(
                    send(&mut a, &mut b, &message(10 * k + i)),
                    fast,
                    "round {k} message {i}"
                );
            }
        }
        // The fixed choices ignore the speeds.
        a.single.as_mut().unwrap().chooser = Chooser::new(Choice::StreamNt);
        assert_eq!(send(&mut a, &mut b, &message(30)), Path::RingNt);
        a.single.as_mut().unwrap().chooser = Chooser::new(Choice::Pull);
        assert_eq!(send(&mut a, &mut b, &message(31)), Path::Pull);
        a.single.as_mut().unwrap().chooser = Chooser::new(Choice::Stream);
        assert_eq!(send(&mut a, &mut b, &message(32)), Path::Ring);
    }
}
