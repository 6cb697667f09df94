//! The shared file: a header and two single-producer single-consumer byte rings.
//!
//! All raw memory access of `shm` lives here. Layout (offsets in bytes):
//!
//! ```text
//! 0       magic u64, version u32, ring_bytes u64 (at 16), state u32 (at 24), pid[2] u32 (at 32)
//! 48      probe address[2] u64, 64: cma_ok[2] u32 (side s can read its peer: 1 yes, 2 no)
//! 80      single_copy_min[2] u64: each side's stream-face single-copy threshold (0 off)
//! 128     closed[0] u32      own cache line pair
//! 256     closed[1] u32
//! 1024    rendezvous acknowledgement slots: ring 0 (64 x u64), 1536: ring 1
//! 4096    ring 0: head u64 (producer), 4096+128: tail u64 (consumer)
//! 4608    ring 1: head, 4608+128: tail
//! 5120    the stream face's mailboxes (ring 0, then ring 1 at 6144)
//! 8192    ring 0 data (ring_bytes), then ring 1 data (ring_bytes)
//! ```
//!
//! From 128 on this is the ring layout of `crate::stream::ring`, the one every native stream
//! uses: the message face below writes records into the rings, the stream face
//! (`ShmConnection::into_stream`) plain bytes.
//!
//! Side 0 (the dialer) writes ring 0 and reads ring 1. `head` and `tail` are monotonically
//! increasing byte counts (they never wrap in practice: 2^64 bytes); the position in the ring
//! is `count % ring_bytes` (a mask: `ring_bytes` is a power of two). Each sits on its own
//! 128-byte line (two 64-byte lines: the adjacent
//! line prefetcher pulls pairs), so producer and consumer never write the same line.

use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::error::{Error, Result};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"oxccshm1");
pub(crate) const VERSION: u32 = 2;
use crate::stream::ring as layout;

pub(crate) const DATA_OFFSET: usize = layout::HEADER;

/// Rendezvous messages that may await acknowledgement at once, per direction.
pub(crate) const ACK_SLOTS: usize = 64;

pub(crate) const STATE_DIALING: u32 = 0;
pub(crate) const STATE_ACCEPTED: u32 = 1;

/// Bytes of the shared file for rings of `ring_bytes`.
pub(crate) fn file_len(ring_bytes: usize) -> usize {
    layout::block_len(ring_bytes)
}

/// The largest connection file mapped with its pages faulted in at setup (the default
/// 1 MiB rings make a 2 MiB file).
const POPULATE_MAX: usize = 16 << 20;

/// A mapped connection file.
pub(crate) struct Mapping {
    // Kept only to hold the mapping alive; all access goes through `base`.
    _map: MmapMut,
    base: *mut u8,
    pub(crate) ring_bytes: usize,
}

// SAFETY: the mapping is shared memory whose control words are only accessed atomically and
// whose data bytes are handed between threads by the ring protocol (release/acquire on
// head/tail), so moving or sharing the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `file`, which must be `file_len(ring_bytes)` long.
    pub(crate) fn map(file: &File, ring_bytes: usize, what: &str) -> Result<Self> {
        // Rings up to POPULATE_MAX are faulted in now, at setup: otherwise the first lap of
        // each ring pays a page fault (a tmpfs page allocated and zeroed, and in a VM a nested
        // fault) every 4 KiB, which made the first thousands of medium messages 3-8x slower
        // than the rest (the 512 B-8 KiB "hole" of short benchmark loops). Larger rings are
        // left to fault in as used, so that a big OXCCL_RING_BYTES costs no memory up front.
        let mut opts = memmap2::MmapOptions::new();
        opts.len(file_len(ring_bytes));
        if file_len(ring_bytes) <= POPULATE_MAX {
            opts.populate();
        }
        // SAFETY: the file lives in a private directory of this job; other processes map it
        // only through this same protocol, and every access to it goes through atomics or
        // ring-protocol-owned byte ranges.
        let mut map = unsafe { opts.map_mut(file) }
            .map_err(|e| Error::io("shm", format!("mapping {what}"), e))?;
        let base = map.as_mut_ptr();
        Ok(Mapping {
            _map: map,
            base,
            ring_bytes,
        })
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off < DATA_OFFSET);
        // SAFETY: off is 8-aligned inside the header pages of a page-aligned mapping that
        // lives as long as &self; AtomicU64 has the layout of u64.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 4 == 0 && off < DATA_OFFSET);
        // SAFETY: as in u64_at.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    /// Writes the header of a fresh file (dialer side, before anyone else sees it).
    pub(crate) fn init(&self, pid: u32) {
        self.u64_at(0).store(MAGIC, Ordering::Relaxed);
        self.u32_at(8).store(VERSION, Ordering::Relaxed);
        self.u64_at(16)
            .store(self.ring_bytes as u64, Ordering::Relaxed);
        self.u32_at(32).store(pid, Ordering::Relaxed);
        self.probe_addr(0).store(
            std::ptr::addr_of!(super::cma::PROBE) as u64,
            Ordering::Relaxed,
        );
        self.state().store(STATE_DIALING, Ordering::Release);
    }

    /// Checks the header written by `init`.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let magic = self.u64_at(0).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(format!("wrong magic {magic:#x}"));
        }
        let version = self.u32_at(8).load(Ordering::Relaxed);
        if version != VERSION {
            return Err(format!("version {version}, this build speaks {VERSION}"));
        }
        let rb = self.u64_at(16).load(Ordering::Relaxed);
        if rb != self.ring_bytes as u64 {
            return Err(format!("ring size {rb} does not match the file"));
        }
        Ok(())
    }

    /// Ring size recorded in a header (read before mapping the full length).
    pub(crate) fn header_ring_bytes(header: &[u8]) -> Option<u64> {
        let magic = u64::from_le_bytes(header.get(0..8)?.try_into().ok()?);
        (magic == MAGIC).then(|| u64::from_le_bytes(header[16..24].try_into().unwrap_or_default()))
    }

    pub(crate) fn state(&self) -> &AtomicU32 {
        self.u32_at(24)
    }

    pub(crate) fn pid(&self, side: usize) -> &AtomicU32 {
        self.u32_at(32 + 4 * side)
    }

    /// Address of side `side`'s cross-memory-attach probe value.
    pub(crate) fn probe_addr(&self, side: usize) -> &AtomicU64 {
        self.u64_at(48 + 8 * side)
    }

    /// Whether side `side` can read its peer's memory (0 unknown, 1 yes, 2 no).
    pub(crate) fn cma_ok(&self, side: usize) -> &AtomicU32 {
        self.u32_at(64 + 4 * side)
    }

    /// Side `side`'s single-copy threshold for the stream face, written before the other side
    /// can see the file (dialer) or the acceptance (acceptor).
    pub(crate) fn single_copy_min(&self, side: usize) -> &AtomicU64 {
        self.u64_at(80 + 8 * side)
    }

    /// The threshold both sides use: the larger one, or off (0) when either is off.
    pub(crate) fn agreed_single_copy_min(&self) -> usize {
        let a = self.single_copy_min(0).load(Ordering::Acquire);
        let b = self.single_copy_min(1).load(Ordering::Acquire);
        if a == 0 || b == 0 {
            0
        } else {
            a.max(b) as usize
        }
    }

    /// Acknowledgement slot `slot` (of [`ACK_SLOTS`]) of rendezvous messages on ring `ring`.
    pub(crate) fn ack(&self, ring: usize, slot: usize) -> &AtomicU64 {
        self.u64_at(1024 + 512 * ring + 8 * (slot % ACK_SLOTS))
    }

    /// Set when side `side` closed (or dropped) its end.
    pub(crate) fn closed(&self, side: usize) -> &AtomicU32 {
        self.u32_at(layout::closed_at(side))
    }

    pub(crate) fn head(&self, ring: usize) -> &AtomicU64 {
        self.u64_at(layout::head_at(ring))
    }

    pub(crate) fn tail(&self, ring: usize) -> &AtomicU64 {
        self.u64_at(layout::tail_at(ring))
    }

    /// The start of the mapping (for the stream face, which shares its layout).
    pub(crate) fn base(&self) -> *mut u8 {
        self.base
    }

    /// The record marker at stream position `pos` (8-aligned) of ring `ring`.
    pub(crate) fn marker(&self, ring: usize, pos: u64) -> &AtomicU64 {
        let at = (pos & (self.ring_bytes as u64 - 1)) as usize;
        debug_assert!(at % 8 == 0);
        // SAFETY: at is 8-aligned inside the ring (rings are page-aligned), the mapping lives
        // as long as &self, and the word is only ever accessed atomically while a record's
        // marker (the ring protocol keeps producer data writes away from the consumer's tail).
        unsafe { &*(self.data(ring).add(at) as *const AtomicU64) }
    }

    fn data(&self, ring: usize) -> *mut u8 {
        // SAFETY: both rings lie inside the mapping (file_len).
        unsafe { self.base.add(layout::data_at(ring, self.ring_bytes)) }
    }

    /// Copies `src` into ring `ring` at stream position `pos`, wrapping at the end.
    ///
    /// # Safety
    /// The caller is the ring's only producer and `[pos, pos + src.len())` is free space
    /// (at most `ring_bytes` ahead of the consumer's tail).
    pub(crate) unsafe fn write(&self, ring: usize, pos: u64, src: &[u8]) {
        let cap = self.ring_bytes;
        let at = (pos & (cap as u64 - 1)) as usize;
        let first = src.len().min(cap - at);
        let d = self.data(ring);
        // SAFETY: per the contract the range is free, inside the ring, and not read by the
        // consumer until head is published past it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), d.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), d, src.len() - first);
        }
    }

    /// Copies from ring `ring` at stream position `pos` into `dst`, wrapping at the end.
    ///
    /// # Safety
    /// The caller is the ring's only consumer and `[pos, pos + dst.len())` was published by
    /// the producer (below an acquired head) and not yet released (at or above tail).
    pub(crate) unsafe fn read(&self, ring: usize, pos: u64, dst: &mut [u8]) {
        let cap = self.ring_bytes;
        let at = (pos & (cap as u64 - 1)) as usize;
        let first = dst.len().min(cap - at);
        let d = self.data(ring);
        // SAFETY: per the contract the bytes are published and the producer will not touch
        // them until tail moves past them.
        unsafe {
            std::ptr::copy_nonoverlapping(d.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(d, dst.as_mut_ptr().add(first), dst.len() - first);
        }
    }

    /// A borrowed view of `len` published bytes at `pos`, not crossing the ring's end
    /// (`len` must be at most `ring_bytes - pos % ring_bytes`).
    ///
    /// # Safety
    /// As for [`Mapping::read`], and the bytes stay unreleased while the slice lives.
    pub(crate) unsafe fn view(&self, ring: usize, pos: u64, len: usize) -> &[u8] {
        let at = (pos & (self.ring_bytes as u64 - 1)) as usize;
        debug_assert!(at + len <= self.ring_bytes);
        // SAFETY: per the contract the bytes are published, stable and inside the ring.
        unsafe { std::slice::from_raw_parts(self.data(ring).add(at), len) }
    }
}
