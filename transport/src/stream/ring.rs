//! The one ring layout of oxccl: two single-producer single-consumer byte rings (one per
//! direction) and their control words in one block of memory, a shared file mapping for `shm`
//! (where the message face's records use the same rings) or a heap block for `loopback` and
//! the proxy.
//!
//! Layout (offsets in bytes; the first 4096 belong to whoever owns the block, e.g. the `shm`
//! file header):
//!
//! ```text
//! 128 * (s + 1)   closed[s] u32: side s closed or aborted its end (own 128-byte line)
//! 4096 + 512 r    head of ring r: bytes produced (u64), own 128-byte line pair
//! + 8             store mode of ring r's writer (u32, `stream::nt`: what its reader measures)
//! + 128           tail of ring r: bytes consumed (u64), own 128-byte line pair
//! + 256           doorbell of side r: sequence (u32), + 4: sleepers (u32), own line pair
//! 5120 + 1024 r   mailbox of ring r: two slots of SLOT bytes
//! 7168 + 128 r    pulled[r] u64: single-copy messages of ring r its reader has copied
//! 7424 + 128 r    pulling[r] u32: ring r's reader is copying out of the writer's memory
//! 7680 + 256 r    speeds[r]: [u32; 3 * SIZE_CLASSES], what ring r's reader measured of its
//!                 large messages per size class, through the ring, pulled, and through the
//!                 ring written with non-temporal stores (MB/s, 0: none yet; written by the
//!                 reader, read by the writer to choose, `stream::choice`)
//! + 192           consume speeds of ring r's reader: [u32; 2], MB/s of its views of writes
//!                 with ordinary and with non-temporal stores (`stream::nt::AutoNt`)
//! 8192 + r * cap  data of ring r
//! ```
//!
//! Side `s` writes ring `s` and reads ring `1 - s`. Positions only grow; `pos % cap` is the
//! offset (`cap` is a power of two). Each counter sits on its own pair of 128-byte lines, so
//! the adjacent-line prefetcher never makes producer and consumer share one. The reader hands
//! out a view straight into the ring, so a receive is reduced from there into its
//! destination without a copy.
//!
//! The mailbox carries a whole tiny message (a sequence word, a fingerprint, up to
//! [`MAILBOX_BYTES`] of payload) written by the ring's writer in one burst of stores and
//! polled by its reader, so a tiny all-reduce of up to 48 bytes moves one line per peer
//! instead of a stream's data lines plus its `head` line.
//!
//! The doorbell of side `s` (`stream/doorbell.rs`) is what side `s` sleeps on when idle; the
//! other side rings it after each publish of `head` (bytes for `s`), of `tail` (space for
//! `s`), of a mailbox message and of a close or abort. Those publishes are `SeqCst` stores so
//! that they and the sleeper's count are ordered (one load on the fast path, no system call
//! unless `s` sleeps).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::choice::{Path, PATHS};
use super::doorbell::{BellWords, Doorbell};
use super::nt::{self, AutoNt, RingNt, MODE_AUTO_NT, MODE_AUTO_PLAIN, MODE_FIXED, NT_MIN_WRITE};
use std::time::Instant;

/// Bytes before the data of the first ring.
pub(crate) const HEADER: usize = 8192;
const CTRL: usize = 4096;
const CTRL_STRIDE: usize = 512;
const MAILBOXES: usize = 5120;
const MAILBOX_STRIDE: usize = 1024;
/// A mailbox slot: a sequence word (u32; 0 = never written), a fingerprint (u32), a word that
/// must also agree (u64), then the payload. Whole 128-byte line pairs, so the two slots never
/// share a prefetch pair.
pub const SLOT: usize = 384;
/// Largest mailbox payload.
pub const MAILBOX_BYTES: usize = SLOT - 16;
/// What [`crate::stream::Mailbox::poll`] copies out: fingerprint, extra word, payload.
pub type MailboxMessage = [u8; SLOT - 4];

/// Offset of side `side`'s closed flag.
pub(crate) const fn closed_at(side: usize) -> usize {
    128 * (side + 1)
}
/// Offset of ring `ring`'s produced count.
pub(crate) const fn head_at(ring: usize) -> usize {
    CTRL + ring * CTRL_STRIDE
}
/// Offset of ring `ring`'s consumed count.
pub(crate) const fn tail_at(ring: usize) -> usize {
    head_at(ring) + 128
}
/// Offset of ring `ring`'s count of single-copy messages pulled (see `stream::large`).
pub(crate) const fn pulled_at(ring: usize) -> usize {
    7168 + 128 * ring
}
/// Offset of ring `ring`'s "reader is copying out of the writer's memory" flag.
pub(crate) const fn pulling_at(ring: usize) -> usize {
    7424 + 128 * ring
}

/// Size classes of the measured speeds (see `stream::choice`).
pub(crate) const SIZE_CLASSES: usize = 16;
const SPEEDS: usize = 7680;
const SPEEDS_STRIDE: usize = 256;
const _: () =
    assert!(SPEEDS + 2 * SPEEDS_STRIDE <= HEADER && 4 * PATHS * SIZE_CLASSES + 8 <= SPEEDS_STRIDE);

/// Offset of ring `ring`'s reader's consume speed of writes with non-temporal stores (`nt`)
/// or ordinary ones.
pub(crate) const fn consume_speed_at(ring: usize, nt: bool) -> usize {
    SPEEDS + ring * SPEEDS_STRIDE + 4 * PATHS * SIZE_CLASSES + 4 * nt as usize
}

/// Offset of ring `ring`'s writer's store mode (on the line of its head: the reader loads it
/// with the head).
pub(crate) const fn mode_at(ring: usize) -> usize {
    head_at(ring) + 8
}

/// Offset of ring `ring`'s speed of size class `class` by path `path` ([`Path`] as index).
pub(crate) const fn speed_at(ring: usize, class: usize, path: usize) -> usize {
    SPEEDS + ring * SPEEDS_STRIDE + 4 * PATHS * class + 4 * path
}

/// Offset of side `side`'s doorbell sequence word (its sleeper count follows it).
pub(crate) const fn bell_at(side: usize) -> usize {
    head_at(side) + 256
}
/// Offset of ring `ring`'s data.
pub(crate) const fn data_at(ring: usize, cap: usize) -> usize {
    HEADER + ring * cap
}
/// Bytes of a block holding two rings of `cap` bytes.
pub(crate) const fn block_len(cap: usize) -> usize {
    HEADER + 2 * cap
}

/// Whether `cap` is a valid ring size.
pub(crate) fn valid_cap(cap: usize) -> bool {
    cap.is_power_of_two() && (4096..=1 << 30).contains(&cap)
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A zeroed heap block for two rings (rings with a zeroed block start empty).
pub(crate) struct HeapBlock {
    _pages: Vec<Page>,
    base: *mut u8,
}

// SAFETY: the block is only reached through raw pointers whose concurrent use follows the ring
// protocol (one writer, one reader, positions published with release/acquire).
unsafe impl Send for HeapBlock {}
// SAFETY: as above.
unsafe impl Sync for HeapBlock {}

impl HeapBlock {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        let mut pages: Vec<Page> = (0..block_len(cap) / 4096)
            .map(|_| Page([0; 4096]))
            .collect();
        let base = pages.as_mut_ptr().cast::<u8>();
        Arc::new(HeapBlock {
            _pages: pages,
            base,
        })
    }

    /// The two ends of side `side`.
    pub(crate) fn ends(self: &Arc<Self>, cap: usize, side: usize) -> (RingWriter, RingReader) {
        // SAFETY: the block is block_len(cap) bytes, 4096-aligned, zeroed at creation, and kept
        // alive by the Arc each end holds.
        unsafe { ends(self.base, cap, side, self.clone()) }
    }
}

/// Shared pointers into one ring and the two closed flags.
struct Ring {
    /// Keeps the memory alive as long as this end.
    _keep: Arc<dyn Send + Sync>,
    base: *mut u8,
    index: usize,
    side: usize,
    data: *mut u8,
    cap: usize,
    /// The doorbell the peer sleeps on.
    peer_bell: BellWords,
}

// SAFETY: see HeapBlock; each end is owned by one thread at a time.
unsafe impl Send for Ring {}

impl Ring {
    fn atomic64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is a 128-aligned control offset below HEADER of a 4096-aligned block
        // that `_keep` holds alive (the `ends` contract); atomics are the only way both ends
        // touch it.
        unsafe { &*(self.base.add(at) as *const AtomicU64) }
    }

    fn head(&self) -> &AtomicU64 {
        self.atomic64(head_at(self.index))
    }

    fn tail(&self) -> &AtomicU64 {
        self.atomic64(tail_at(self.index))
    }

    fn closed(&self, side: usize) -> &AtomicU32 {
        self.atomic32(closed_at(side))
    }

    fn atomic32(&self, at: usize) -> &AtomicU32 {
        // SAFETY: as atomic64, for a 4-aligned u32 word on its own line.
        unsafe { &*(self.base.add(at) as *const AtomicU32) }
    }

    fn pulled(&self) -> &AtomicU64 {
        self.atomic64(pulled_at(self.index))
    }

    fn pulling(&self) -> &AtomicU32 {
        self.atomic32(pulling_at(self.index))
    }

    fn speed(&self, class: usize, path: Path) -> &AtomicU32 {
        self.atomic32(speed_at(
            self.index,
            class.min(SIZE_CLASSES - 1),
            path as usize,
        ))
    }

    fn consume_speed(&self, nt: bool) -> &AtomicU32 {
        self.atomic32(consume_speed_at(self.index, nt))
    }

    fn mode(&self) -> &AtomicU32 {
        self.atomic32(mode_at(self.index))
    }

    fn slot(&self, seq: u64) -> *mut u8 {
        let at = MAILBOXES + self.index * MAILBOX_STRIDE + (seq % 2) as usize * SLOT;
        // SAFETY: both slots of both rings end below HEADER, inside the block.
        unsafe { self.base.add(at) }
    }

    fn slot_seq(&self, seq: u64) -> &AtomicU32 {
        // SAFETY: the slot is 128-aligned inside the block (see `slot`); its first word is only
        // touched through this atomic by both ends.
        unsafe { &*(self.slot(seq) as *const AtomicU32) }
    }

    /// Either side closed or aborted.
    fn closed_any(&self) -> bool {
        self.closed(0).load(Ordering::Acquire) | self.closed(1).load(Ordering::Acquire) != 0
    }

    /// Either side aborted (gave up, rather than finished).
    fn aborted_any(&self) -> bool {
        self.closed(0).load(Ordering::Acquire) == ABORTED
            || self.closed(1).load(Ordering::Acquire) == ABORTED
    }

    fn close(&self) {
        self.closed(self.side).fetch_max(CLOSED, Ordering::SeqCst);
        self.peer_bell.ring();
    }

    fn abort(&self) {
        self.closed(self.side).store(ABORTED, Ordering::SeqCst);
        self.peer_bell.ring();
    }
}

/// Values of a closed flag: the side finished (what it wrote is still delivered), or gave up.
const CLOSED: u32 = 1;
const ABORTED: u32 = 2;

/// The doorbell words of side `side` in the block at `base`.
///
/// # Safety
/// `base` is a block laid out as the module says, kept alive as long as the words are used
/// (a Ring's or Doorbell's `keep`).
pub(crate) unsafe fn bell_words(base: *mut u8, side: usize) -> BellWords {
    // SAFETY: both words lie below HEADER on their own line of the block (the caller's
    // contract); they are only touched atomically.
    unsafe { BellWords::new(base.add(bell_at(side)), base.add(bell_at(side) + 4)) }
}

/// The writer of ring `side` and the reader of ring `1 - side` of the block at `base`.
///
/// # Safety
/// `base` is 4096-aligned, points to [`block_len`]`(cap)` bytes that `keep` keeps alive, laid
/// out as the module documentation says; nobody else writes ring `side` or reads ring
/// `1 - side` of it; `cap` is a power of two of at least 4096.
pub(crate) unsafe fn ends(
    base: *mut u8,
    cap: usize,
    side: usize,
    keep: Arc<dyn Send + Sync>,
) -> (RingWriter, RingReader) {
    debug_assert!(valid_cap(cap) && side < 2 && base as usize % 4096 == 0);
    let ring = |index: usize| Ring {
        _keep: keep.clone(),
        base,
        index,
        side,
        // SAFETY: data_at(index, cap) + cap <= block_len(cap), inside the block.
        data: unsafe { base.add(data_at(index, cap)) },
        cap,
        // SAFETY: the block is kept alive by `keep`, which the Ring holds (this fn's contract).
        peer_bell: unsafe { bell_words(base, 1 - side) },
    };
    let w = ring(side);
    let r = ring(1 - side);
    let head = w.head().load(Ordering::Acquire);
    let cached_tail = w.tail().load(Ordering::Acquire);
    let tail = r.tail().load(Ordering::Acquire);
    (
        RingWriter {
            ring: w,
            head,
            cached_tail,
            nt_min: usize::MAX,
            chosen_until: 0,
            chosen_nt: false,
            auto: None,
        },
        RingReader {
            ring: r,
            tail,
            cached_head: tail,
            timing: None,
            writer_mode: MODE_FIXED,
            consume_speed: [0; 2],
            shown: [0; 2],
        },
    )
}

/// The producing end of a ring.
pub struct RingWriter {
    ring: Ring,
    head: u64,
    cached_tail: u64,
    /// Writes of at least this many bytes take non-temporal stores (`stream::nt`), or, with
    /// `auto`, the stores it chooses.
    nt_min: usize,
    /// Bytes before this position take the stores `chosen_nt` says (a large message whose
    /// sender chose its path, `stream::choice`).
    chosen_until: u64,
    chosen_nt: bool,
    /// The choice of stores of `OXCCL_RING_NT=auto`.
    auto: Option<AutoNt>,
}

impl RingWriter {
    /// The ring's size in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.ring.cap
    }

    /// Copies as much of `data` as fits; returns how many bytes, or `Err` when either side
    /// closed the rings and nothing fits.
    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<usize, ()> {
        let cap = self.ring.cap as u64;
        let mut space = cap - (self.head - self.cached_tail);
        if (space as usize) < data.len() {
            self.cached_tail = self.ring.tail().load(Ordering::Acquire);
            space = cap - (self.head - self.cached_tail);
        }
        let n = data.len().min(space as usize);
        if n == 0 {
            return if self.ring.closed_any() {
                Err(())
            } else {
                Ok(0)
            };
        }
        let off = (self.head % cap) as usize;
        let first = n.min(self.ring.cap - off);
        let (data, wrapped) = data[..n].split_at(first);
        let mut timed = None;
        let nt = if self.head < self.chosen_until {
            self.chosen_nt
        } else if n < self.nt_min {
            false
        } else if let Some(auto) = &mut self.auto {
            if auto.due() {
                let now = Instant::now();
                let speeds =
                    [false, true].map(|k| self.ring.consume_speed(k).load(Ordering::Relaxed));
                let was = auto.nt();
                if auto.decide(now, speeds) != was {
                    let mode = if auto.nt() {
                        MODE_AUTO_NT
                    } else {
                        MODE_AUTO_PLAIN
                    };
                    self.ring.mode().store(mode, Ordering::Relaxed);
                }
                timed = Some(now);
            }
            auto.nt()
        } else {
            true
        };
        if nt {
            // SAFETY: as in the plain copy below.
            unsafe {
                nt::copy(data, self.ring.data.add(off));
                nt::copy(wrapped, self.ring.data);
            }
            // Non-temporal stores are weakly ordered, even against the locked store that
            // publishes `head` below: without the fence the reader could see the new head
            // while some of these bytes still sit in a write-combining buffer, and read what
            // the ring held before.
            nt::fence();
        } else {
            // SAFETY: [off, off + first) and [0, n - first) lie in the data area, and the
            // reader does not read them until `head` is published below (they are free space:
            // the reader consumed them, as cached_tail proves).
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), self.ring.data.add(off), first);
                std::ptr::copy_nonoverlapping(wrapped.as_ptr(), self.ring.data, n - first);
            }
        }
        if let (Some(t), Some(auto)) = (timed, &mut self.auto) {
            auto.copied(nt, n, t.elapsed());
        }
        self.head += n as u64;
        self.ring.head().store(self.head, Ordering::SeqCst);
        self.ring.peer_bell.ring();
        Ok(n)
    }

    /// Which writes take non-temporal stores from now on.
    pub(crate) fn set_ring_nt(&mut self, ring_nt: RingNt) {
        self.nt_min = ring_nt.min_write();
        self.auto = (ring_nt == RingNt::Auto).then(AutoNt::default);
        let mode = match ring_nt {
            RingNt::Auto => MODE_AUTO_PLAIN,
            RingNt::On | RingNt::Off | RingNt::Call => MODE_FIXED,
        };
        self.ring.mode().store(mode, Ordering::Relaxed);
    }

    /// The next `len` bytes written take non-temporal stores (`nt`) or ordinary ones,
    /// whatever their pieces' sizes (a large message whose sender chose its path).
    pub(crate) fn stores_next(&mut self, len: usize, nt: bool) {
        self.chosen_until = self.head + len as u64;
        self.chosen_nt = nt;
    }

    /// The free space that is contiguous in the ring, for a producer that fills it in place
    /// (a socket read) and then publishes what it filled with [`RingWriter::commit`]; `Err`
    /// when either side closed the rings and nothing fits.
    pub(crate) fn free_space(&mut self) -> Result<&mut [u8], ()> {
        let cap = self.ring.cap as u64;
        let off = (self.head % cap) as usize;
        let mut space = cap - (self.head - self.cached_tail);
        if (space as usize) < self.ring.cap - off {
            self.cached_tail = self.ring.tail().load(Ordering::Acquire);
            space = cap - (self.head - self.cached_tail);
        }
        let n = (space as usize).min(self.ring.cap - off);
        if n == 0 && self.ring.closed_any() {
            return Err(());
        }
        // SAFETY: [off, off + n) lies in the data area and is free space (the reader consumed
        // it, as cached_tail proves); the reader does not read it before `commit` publishes it.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ring.data.add(off), n) })
    }

    /// Publishes the first `n` bytes of the last [`RingWriter::free_space`] (at most its
    /// length).
    pub(crate) fn commit(&mut self, n: usize) {
        let cap = self.ring.cap as u64;
        let off = (self.head % cap) as usize;
        let free = (cap - (self.head - self.cached_tail)) as usize;
        let n = n.min(free).min(self.ring.cap - off);
        self.head += n as u64;
        self.ring.head().store(self.head, Ordering::SeqCst);
        self.ring.peer_bell.ring();
    }

    /// Copies all of `data` or nothing (a single-copy header must arrive whole); whether it
    /// did, or `Err` when either side closed and it does not fit.
    pub(crate) fn write_whole(&mut self, data: &[u8]) -> Result<bool, ()> {
        let cap = self.ring.cap as u64;
        if ((cap - (self.head - self.cached_tail)) as usize) < data.len() {
            self.cached_tail = self.ring.tail().load(Ordering::Acquire);
            if ((cap - (self.head - self.cached_tail)) as usize) < data.len() {
                return if self.ring.closed_any() {
                    Err(())
                } else {
                    Ok(false)
                };
            }
        }
        self.write(data).map(|n| n == data.len())
    }

    /// What the reader measured of size class `class` by each path (indexed by [`Path`]),
    /// MB/s, 0 where it has no measurement yet.
    pub(crate) fn speeds(&self, class: usize) -> [u32; PATHS] {
        let mut speeds = [0; PATHS];
        for p in Path::ALL {
            speeds[p as usize] = self.ring.speed(class, p).load(Ordering::Relaxed);
        }
        speeds
    }

    /// How many single-copy messages of this ring the reader has finished copying.
    pub(crate) fn pulled(&self) -> u64 {
        self.ring.pulled().load(Ordering::Acquire)
    }

    /// Waits (up to `limit`) until the reader is not inside a copy out of our memory: called
    /// after closing or aborting with a single-copy message out, so that the memory may be
    /// freed. The reader checks the closed flags after raising its flag and before copying
    /// (Dekker's pattern, hence the SeqCst fence), so after this returns it copies no more.
    pub(crate) fn wait_unpulled(&self, limit: std::time::Duration) {
        std::sync::atomic::fence(Ordering::SeqCst);
        let start = std::time::Instant::now();
        while self.ring.pulling().load(Ordering::SeqCst) != 0 && start.elapsed() < limit {
            std::thread::yield_now();
        }
    }

    /// Either side closed or aborted.
    pub(crate) fn closed_any(&self) -> bool {
        self.ring.closed_any()
    }

    /// Marks this side closed: the peer sees an error once it has read what is here.
    pub(crate) fn close(&self) {
        self.ring.close();
    }

    /// Marks this side aborted: the peer's idle check fails at once.
    pub(crate) fn abort(&self) {
        self.ring.abort();
    }

    /// Either side aborted.
    pub(crate) fn aborted(&self) -> bool {
        self.ring.aborted_any()
    }

    /// Posts tiny message number `seq` (counted from 0) to the mailbox: `fp` and `extra`
    /// describe it, `data` (at most [`MAILBOX_BYTES`]) is its payload. The caller guarantees
    /// the reader is done with message `seq - 2` (it shares the slot).
    #[inline]
    pub(crate) fn post(&mut self, seq: u64, fp: u32, extra: u64, data: &[u8]) -> Result<(), ()> {
        if data.len() > MAILBOX_BYTES {
            return Err(());
        }
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&fp.to_le_bytes());
        head[4..].copy_from_slice(&extra.to_le_bytes());
        let slot = self.ring.slot(seq);
        // SAFETY: [slot + 4, slot + 16 + data.len()) is inside the slot (checked length); the
        // reader reads it only after the release store of the sequence word below, and not
        // again once done with `seq - 2` (the caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), slot.add(4), head.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), slot.add(16), data.len());
        }
        self.ring
            .slot_seq(seq)
            .store(seq_word(seq), Ordering::SeqCst);
        self.ring.peer_bell.ring();
        Ok(())
    }
}

/// What a slot's sequence word holds for message `seq`: never 0 (a fresh slot), and the two
/// messages sharing a slot always differ.
fn seq_word(seq: u64) -> u32 {
    (seq % u64::from(u32::MAX - 1)) as u32 + 1
}

/// The consuming end of a ring.
pub struct RingReader {
    ring: Ring,
    tail: u64,
    cached_head: u64,
    /// When the view being taken was first shown, and whether its writer's stores were
    /// non-temporal (measured for an `OXCCL_RING_NT=auto` writer only).
    timing: Option<(Instant, bool)>,
    /// The writer's mode word as read with its head.
    writer_mode: u32,
    /// Moving consume speeds of such views (ordinary, non-temporal), MB/s, and what the
    /// writer was last shown (shown again when moved by more than an eighth).
    consume_speed: [u32; 2],
    shown: [u32; 2],
}

impl RingReader {
    /// The readable bytes that are contiguous in the ring (possibly none); `Err` once either
    /// side closed and nothing is left.
    #[inline]
    pub(crate) fn peek(&mut self) -> Result<&[u8], ()> {
        let cap = self.ring.cap as u64;
        let to_end = cap - self.tail % cap;
        // Look at the writer's head again unless the cached view already reaches the end of
        // the ring (a newer head could not lengthen it). Refreshing only when the view is
        // empty is not enough: a reader that needs more than it sees (a reduction takes whole
        // elements) leaves the bytes of a part element unconsumed and would be shown them,
        // and nothing else, forever. The proxy writes TCP reads of any length, so its head
        // often stops inside an element: that hung large reduces over TCP.
        if self.cached_head - self.tail < to_end {
            self.cached_head = self.ring.head().load(Ordering::Acquire);
            // The mode word shares the head's line, which this load just brought here; read
            // anywhere else it would pull that line from the writer once more per view.
            self.writer_mode = self.ring.mode().load(Ordering::Relaxed);
            if self.cached_head == self.tail {
                if !self.ring.closed_any() {
                    return Ok(&[]);
                }
                // Bytes published before the close flag are visible after it.
                self.cached_head = self.ring.head().load(Ordering::Acquire);
                if self.cached_head == self.tail {
                    return Err(());
                }
            }
        }
        let off = (self.tail % cap) as usize;
        let len = ((self.cached_head - self.tail) as usize).min(self.ring.cap - off);
        if len >= NT_MIN_WRITE && self.writer_mode >= MODE_AUTO_PLAIN && self.timing.is_none() {
            self.timing = Some((Instant::now(), self.writer_mode == MODE_AUTO_NT));
        }
        // SAFETY: [off, off + len) was published by the writer (acquire load of head) and the
        // writer will not overwrite it before `tail` moves past it in `consume`.
        Ok(unsafe { std::slice::from_raw_parts(self.ring.data.add(off), len) })
    }

    /// Marks `n` bytes of the last view as read (at most what it showed).
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        let n = (n as u64).min(self.cached_head - self.tail);
        if let Some((start, nt)) = self.timing.take() {
            if n as usize >= NT_MIN_WRITE {
                self.measured(nt, nt::mbps(n as usize, start.elapsed()));
            }
        }
        self.tail += n;
        self.ring.tail().store(self.tail, Ordering::SeqCst);
        self.ring.peer_bell.ring();
    }

    /// Folds in a consume speed of views of one kind of stores, and shows it to the writer
    /// when it moved by more than an eighth.
    #[cold]
    fn measured(&mut self, nt: bool, mbps: u32) {
        let k = usize::from(nt);
        nt::fold(&mut self.consume_speed[k], mbps);
        let (new, shown) = (self.consume_speed[k], self.shown[k]);
        if new.abs_diff(shown) > shown / 8 || shown == 0 {
            self.shown[k] = new;
            self.ring.consume_speed(nt).store(new, Ordering::Relaxed);
        }
    }

    /// The doorbell this end's side sleeps on (rung by the peer).
    pub(crate) fn doorbell(&self) -> Doorbell {
        // SAFETY: the block at `base` is kept alive by `_keep`, which the doorbell holds too.
        let words = unsafe { bell_words(self.ring.base, self.ring.side) };
        Doorbell::new(words, self.ring._keep.clone())
    }

    /// Bytes of this ring consumed so far (a message ends at a known position).
    #[inline]
    pub(crate) fn position(&self) -> u64 {
        self.tail
    }

    /// Shows the writer a speed (MB/s) of size class `class` by one path, for its choice (only
    /// this end writes the word).
    pub(crate) fn show_speed(&self, class: usize, path: Path, mbps: u32) {
        self.ring.speed(class, path).store(mbps, Ordering::Relaxed);
    }

    /// Counts one more single-copy message of this ring as copied (the writer may reuse it).
    pub(crate) fn add_pulled(&self) {
        self.ring.pulled().fetch_add(1, Ordering::SeqCst);
        // The writer may sleep on its doorbell until its message is taken.
        self.ring.peer_bell.ring();
    }

    /// Raises (`true`) or lowers the "copying out of the writer's memory" flag. Raising it
    /// returns false, with the flag lowered again, when either side closed or aborted: the
    /// writer may have freed the memory then (see `RingWriter::wait_unpulled`).
    pub(crate) fn set_pulling(&self, on: bool) -> bool {
        if !on {
            self.ring.pulling().store(0, Ordering::Release);
            return true;
        }
        self.ring.pulling().store(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.ring.closed_any() {
            self.ring.pulling().store(0, Ordering::Release);
            return false;
        }
        true
    }

    /// Stream bytes that arrived and are not consumed yet (`Err` once closed and empty).
    #[inline]
    pub(crate) fn pending(&mut self) -> Result<bool, ()> {
        Ok(!self.peek()?.is_empty())
    }

    /// Whether tiny message `seq` is in the mailbox.
    #[inline]
    pub(crate) fn posted(&self, seq: u64) -> bool {
        self.ring.slot_seq(seq).load(Ordering::Acquire) == seq_word(seq)
    }

    /// Copies the first `len` bytes of tiny message `seq` (fingerprint, extra word, payload)
    /// into `out` if it is in.
    #[inline]
    pub(crate) fn poll(&self, seq: u64, out: &mut MailboxMessage, len: usize) -> bool {
        if !self.posted(seq) {
            return false;
        }
        let len = len.min(SLOT - 4);
        // SAFETY: the acquire load above saw the writer's release store that followed its
        // writes of the slot, and the writer leaves the slot alone until we are done with it
        // (the `post` contract); `len` is clamped to the slot.
        unsafe { std::ptr::copy_nonoverlapping(self.ring.slot(seq).add(4), out.as_mut_ptr(), len) };
        true
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
