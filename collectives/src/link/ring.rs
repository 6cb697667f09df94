//! A single-producer single-consumer byte ring in memory both ends can see: a heap block for
//! ranks that are threads of one process, a shared file mapping for processes of one host.
//!
//! Layout: the reader's position (`head`) and the writer's (`tail`) sit on their own 128-byte
//! lines (two lines, so the adjacent-line prefetcher does not make them share), a flag word
//! after them, and the data from offset 4096. Positions only grow; `pos % cap` is the offset.
//! The reader hands out a view straight into the ring, so a receive can be reduced from there
//! into its destination without a copy.
//!
//! The header page also holds a two-slot mailbox (six cache lines per slot, at [`MAILBOX`]):
//! a whole tiny message (a sequence word, a fingerprint, up to [`MAILBOX_BYTES`] of payload)
//! written by the ring's writer with one burst of stores and polled by its reader, so a tiny
//! all-reduce of up to 48 bytes moves one line per peer (more lines only past that, fetched
//! together) instead of a stream's data lines plus its `tail` line.

use memmap2::MmapMut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const HEAD: usize = 0;
const TAIL: usize = 128;
const FLAGS: usize = 256;
/// Bytes before the data of each ring.
pub const HEADER: usize = 4096;
const ABORTED: u32 = 1;
/// The two mailbox slots (off the `head`/`tail`/flag lines; each slot is whole 128-byte pairs
/// of lines, so the adjacent-line prefetcher never couples the two).
pub const MAILBOX: usize = 512;
const SLOT_STRIDE: usize = SLOT;
/// A slot: a sequence word (u32; 0 = never written), a fingerprint (u32), a word that must
/// also agree (u64), then the payload.
pub const SLOT: usize = 384;
pub const MAILBOX_BYTES: usize = SLOT - 16;

#[repr(C, align(4096))]
pub struct Page([u8; 4096]);

/// The memory that holds one or more rings, kept alive by every end that uses it.
pub enum RingMem {
    Heap(#[allow(dead_code)] Vec<Page>, *mut u8),
    Map(MmapMut),
}

// SAFETY: the memory is only reached through raw pointers whose concurrent use follows the
// ring protocol (one writer, one reader, positions published with release/acquire).
unsafe impl Send for RingMem {}
// SAFETY: as above.
unsafe impl Sync for RingMem {}

impl RingMem {
    /// Zeroed heap memory for `rings` rings of `cap` bytes.
    pub fn heap(rings: usize, cap: usize) -> Arc<Self> {
        let pages = rings * (HEADER + cap) / 4096;
        let mut v: Vec<Page> = (0..pages).map(|_| Page([0; 4096])).collect();
        let ptr = v.as_mut_ptr().cast::<u8>();
        Arc::new(RingMem::Heap(v, ptr))
    }

    pub fn map(map: MmapMut) -> Arc<Self> {
        Arc::new(RingMem::Map(map))
    }

    fn base(&self) -> *mut u8 {
        match self {
            RingMem::Heap(_, p) => *p,
            RingMem::Map(m) => m.as_ptr() as *mut u8,
        }
    }

    fn len(&self) -> usize {
        match self {
            RingMem::Heap(v, _) => v.len() * 4096,
            RingMem::Map(m) => m.len(),
        }
    }

    /// Bytes needed for `rings` rings of `cap` bytes.
    pub fn size(rings: usize, cap: usize) -> usize {
        rings * (HEADER + cap)
    }
}

/// Shared pointers to ring `index` of `mem`.
struct Ring {
    /// Keeps the memory alive as long as this end.
    _mem: Arc<RingMem>,
    ctrl: *mut u8,
    data: *mut u8,
    cap: usize,
}

// SAFETY: see RingMem; each end is owned by one thread at a time.
unsafe impl Send for Ring {}

impl Ring {
    fn new(mem: Arc<RingMem>, index: usize, cap: usize) -> Self {
        assert!(
            cap.is_power_of_two() && cap >= 4096,
            "ring capacity must be a power of two >= 4096"
        );
        let offset = index * (HEADER + cap);
        assert!(
            offset + HEADER + cap <= mem.len(),
            "ring outside its memory"
        );
        // SAFETY: offset + HEADER + cap is within the allocation (asserted above).
        let ctrl = unsafe { mem.base().add(offset) };
        // SAFETY: as above.
        let data = unsafe { ctrl.add(HEADER) };
        Self {
            _mem: mem,
            ctrl,
            data,
            cap,
        }
    }

    fn atomic64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: ctrl is 4096-aligned and at is a multiple of 128 below HEADER, so the u64 is
        // aligned and inside the mapping, which self.mem keeps alive; atomics are the only way
        // both ends touch it.
        unsafe { &*(self.ctrl.add(at) as *const AtomicU64) }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as atomic64, for the flag word at FLAGS.
        unsafe { &*(self.ctrl.add(FLAGS) as *const AtomicU32) }
    }

    fn slot(&self, seq: u64) -> *mut u8 {
        // SAFETY: MAILBOX + 2 * SLOT_STRIDE <= HEADER, so both slots lie in this ring's header.
        unsafe { self.ctrl.add(MAILBOX + (seq % 2) as usize * SLOT_STRIDE) }
    }

    fn slot_seq(&self, seq: u64) -> &AtomicU32 {
        // SAFETY: the slot is 128-aligned inside the mapping (see `slot`); its first word is
        // only touched through this atomic by both ends.
        unsafe { &*(self.slot(seq) as *const AtomicU32) }
    }

    fn aborted(&self) -> bool {
        self.flags().load(Ordering::Relaxed) & ABORTED != 0
    }

    fn abort(&self) {
        self.flags().fetch_or(ABORTED, Ordering::Release);
    }
}

/// Makes the two ends of ring `index` in `mem` (rings with a zeroed header start empty).
pub fn ends(mem: &Arc<RingMem>, index: usize, cap: usize) -> (RingWriter, RingReader) {
    (
        RingWriter::attach(mem.clone(), index, cap),
        RingReader::attach(mem.clone(), index, cap),
    )
}

pub struct RingWriter {
    ring: Ring,
    tail: u64,
    cached_head: u64,
}

impl RingWriter {
    pub fn attach(mem: Arc<RingMem>, index: usize, cap: usize) -> Self {
        let ring = Ring::new(mem, index, cap);
        let tail = ring.atomic64(TAIL).load(Ordering::Acquire);
        let cached_head = ring.atomic64(HEAD).load(Ordering::Acquire);
        Self {
            ring,
            tail,
            cached_head,
        }
    }

    /// Copies as much of `data` as fits; returns how many bytes, or `Err` when the ring was
    /// aborted by either end.
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> Result<usize, ()> {
        let cap = self.ring.cap as u64;
        let mut space = cap - (self.tail - self.cached_head);
        if (space as usize) < data.len() {
            self.cached_head = self.ring.atomic64(HEAD).load(Ordering::Acquire);
            space = cap - (self.tail - self.cached_head);
        }
        let n = data.len().min(space as usize);
        if n == 0 {
            return if self.ring.aborted() { Err(()) } else { Ok(0) };
        }
        let off = (self.tail % cap) as usize;
        let first = n.min(self.ring.cap - off);
        // SAFETY: [off, off + first) and [0, n - first) lie in the data area, and the reader
        // does not read them until `tail` is published below (they are free space: the reader
        // consumed them, as cached_head proves).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ring.data.add(off), first);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(first), self.ring.data, n - first);
        }
        self.tail += n as u64;
        self.ring.atomic64(TAIL).store(self.tail, Ordering::Release);
        Ok(n)
    }

    pub fn abort(&self) {
        self.ring.abort();
    }

    pub fn aborted(&self) -> bool {
        self.ring.aborted()
    }

    /// Posts tiny message number `seq` (counted from 0) to the mailbox: `fp` and `extra`
    /// describe it, `data` (at most [`MAILBOX_BYTES`]) is its payload. The caller guarantees
    /// the reader is done with message `seq - 2` (it shares the slot).
    #[inline]
    pub fn post(&mut self, seq: u64, fp: u32, extra: u64, data: &[u8]) {
        assert!(data.len() <= MAILBOX_BYTES, "mailbox payload too large");
        let mut head = [0u8; 12];
        head[..4].copy_from_slice(&fp.to_le_bytes());
        head[4..].copy_from_slice(&extra.to_le_bytes());
        let slot = self.ring.slot(seq);
        // SAFETY: [slot + 4, slot + 16 + data.len()) is inside the slot, inside the header
        // (see `slot`); the reader reads it only after the release store of the sequence word
        // below, and not again once done with `seq - 2` (the caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(head.as_ptr(), slot.add(4), head.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), slot.add(16), data.len());
        }
        self.ring
            .slot_seq(seq)
            .store(seq_word(seq), Ordering::Release);
    }
}

/// What a slot's sequence word holds for message `seq`: never 0 (a fresh slot), and the two
/// messages sharing a slot always differ.
fn seq_word(seq: u64) -> u32 {
    (seq % u64::from(u32::MAX - 1)) as u32 + 1
}

pub struct RingReader {
    ring: Ring,
    head: u64,
    cached_tail: u64,
}

impl RingReader {
    pub fn attach(mem: Arc<RingMem>, index: usize, cap: usize) -> Self {
        let ring = Ring::new(mem, index, cap);
        let head = ring.atomic64(HEAD).load(Ordering::Acquire);
        Self {
            ring,
            head,
            cached_tail: head,
        }
    }

    /// The readable bytes that are contiguous in the ring (possibly none).
    #[inline]
    pub fn peek(&mut self) -> Result<&[u8], ()> {
        if self.cached_tail == self.head {
            self.cached_tail = self.ring.atomic64(TAIL).load(Ordering::Acquire);
            if self.cached_tail == self.head {
                return if self.ring.aborted() {
                    Err(())
                } else {
                    Ok(&[])
                };
            }
        }
        let cap = self.ring.cap as u64;
        let off = (self.head % cap) as usize;
        let len = ((self.cached_tail - self.head) as usize).min(self.ring.cap - off);
        // SAFETY: [off, off + len) was published by the writer (acquire load of tail) and the
        // writer will not overwrite it before `head` moves past it in `consume`.
        Ok(unsafe { std::slice::from_raw_parts(self.ring.data.add(off), len) })
    }

    /// Marks `n` bytes of the last view as read.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.head + n as u64 <= self.cached_tail);
        self.head += n as u64;
        self.ring.atomic64(HEAD).store(self.head, Ordering::Release);
    }

    pub fn abort(&self) {
        self.ring.abort();
    }

    /// Stream bytes that arrived and are not consumed yet (`Err` once aborted and empty).
    #[inline]
    pub fn pending(&mut self) -> Result<bool, ()> {
        Ok(!self.peek()?.is_empty())
    }

    /// Whether tiny message `seq` is in the mailbox.
    #[inline]
    pub fn posted(&self, seq: u64) -> bool {
        self.ring.slot_seq(seq).load(Ordering::Acquire) == seq_word(seq)
    }

    /// Copies the first `len` bytes of tiny message `seq` (fingerprint, extra word, payload)
    /// into `out` if it is in.
    #[inline]
    pub fn poll(&self, seq: u64, out: &mut [u8; SLOT - 4], len: usize) -> bool {
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
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_across_wraps() {
        let mem = RingMem::heap(1, 4096);
        let (mut w, mut r) = ends(&mem, 0, 4096);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let t = std::thread::spawn(move || {
            let mut sent = 0;
            while sent < data.len() {
                sent += w.write(&data[sent..(sent + 1000).min(data.len())]).unwrap();
            }
            data
        });
        let mut got = Vec::new();
        while got.len() < 100_000 {
            let v = r.peek().unwrap();
            let n = v.len().min(777);
            got.extend_from_slice(&v[..n]);
            r.consume(n);
        }
        assert_eq!(got, t.join().unwrap());
        r.abort();
        assert!(r.peek().is_err());
    }

    #[test]
    fn mailbox_alternates_slots_and_keeps_the_stream_apart() {
        let mem = RingMem::heap(1, 4096);
        let (mut w, mut r) = ends(&mem, 0, 4096);
        let mut out = [0u8; SLOT - 4];
        assert!(!r.poll(0, &mut out, SLOT - 4));
        for seq in 0..5u64 {
            let data: Vec<u8> = (0..MAILBOX_BYTES).map(|b| b as u8 ^ seq as u8).collect();
            w.post(seq, 7 + seq as u32, !seq, &data);
            assert!(r.poll(seq, &mut out, SLOT - 4));
            assert!(!r.posted(seq + 1) && !r.posted(seq + 2));
            assert_eq!(out[..4], (7 + seq as u32).to_le_bytes());
            assert_eq!(out[4..12], (!seq).to_le_bytes());
            assert_eq!(out[12..], data[..]);
        }
        assert_eq!(r.pending(), Ok(false));
        w.write(&[1, 2, 3]).unwrap();
        assert_eq!(r.pending(), Ok(true));
        assert_eq!(seq_word(u64::from(u32::MAX - 1)), 1);
    }
}
