//! Ring writes with non-temporal stores: the one copy of oxccl that bypasses the writer's
//! cache, and when the rings use it (`OXCCL_RING_NT`).
//!
//! Why: on the development machine (a KVM guest on an EPYC) the two cores hand freshly
//! written cache lines to each other at ~10-12 GB/s in one state and ~2 GB/s in another that
//! comes and goes every few minutes; a ring written with ordinary stores is capped by that
//! hand-over. Lines written with non-temporal stores go to memory instead of the writer's
//! cache, and the reader takes them from there at ~10-13 GB/s in BOTH states
//! (`bench/scripts/xcore_probe.c`, `xcore_probe 2 nt`; `bench/RESULTS.md`, "Session 8, big").
//! In the fast state they cost speed at some sizes (the reader then waits on memory rather than
//! a cache), so large messages choose per size class from the receiver's measurements
//! (`stream::choice`), and messages with no header use them only where `OXCCL_RING_NT` says.

use crate::error::{Error, Result};

/// Which messages without a header (below the single-copy threshold, and every reduction's
/// bytes) a ring's writer copies with non-temporal stores (`OXCCL_RING_NT`). Large messages
/// with a header choose for themselves (`stream::choice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RingNt {
    /// Ordinary stores (the default).
    #[default]
    Off,
    /// Non-temporal stores for every write of at least [`NT_MIN_WRITE`] bytes.
    On,
}

/// The smallest write copied with non-temporal stores under [`RingNt::On`]: below it the
/// fence and the line misses cost more than the cache hand-over they avoid.
pub const NT_MIN_WRITE: usize = 4096;

impl RingNt {
    /// The smallest write that takes non-temporal stores (`usize::MAX`: none).
    pub(crate) fn min_write(self) -> usize {
        match self {
            RingNt::Off => usize::MAX,
            RingNt::On => NT_MIN_WRITE,
        }
    }
}

impl std::str::FromStr for RingNt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "off" | "0" => Ok(RingNt::Off),
            "on" | "1" => Ok(RingNt::On),
            other => Err(Error::Config {
                var: "OXCCL_RING_NT",
                value: other.to_string(),
                reason: "expected off or on".into(),
            }),
        }
    }
}

/// `OXCCL_RING_NT`, else [`RingNt::Off`].
pub fn ring_nt_from_env() -> Result<RingNt> {
    match std::env::var("OXCCL_RING_NT") {
        Err(_) => Ok(RingNt::Off),
        Ok(v) => v.parse(),
    }
}

/// Copies `src` to `dst` with non-temporal stores where the CPU has them (x86_64: SSE2, part
/// of the baseline), a plain copy elsewhere. The unaligned first and last bytes (up to 15 at
/// each end) take ordinary stores: `_mm_stream_si128` needs a 16-byte aligned destination.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes and does not overlap `src`. The stores are
/// weakly ordered: call [`fence`] before publishing them to another core.
#[inline]
pub(crate) unsafe fn copy(src: &[u8], dst: *mut u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let len = src.len();
        let s = src.as_ptr();
        let lead = dst.align_offset(16).min(len);
        let body_end = lead + (len - lead) / 16 * 16;
        // SAFETY: every offset below stays under `len`, inside `src` and (the caller's
        // contract) inside `dst`; the stores in the loop are 16-byte aligned because `lead`
        // aligns `dst + lead`; the loads are unaligned loads.
        unsafe {
            std::ptr::copy_nonoverlapping(s, dst, lead);
            let mut i = lead;
            while i < body_end {
                let v = _mm_loadu_si128(s.add(i).cast::<__m128i>());
                _mm_stream_si128(dst.add(i).cast::<__m128i>(), v);
                i += 16;
            }
            std::ptr::copy_nonoverlapping(s.add(body_end), dst.add(body_end), len - body_end);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len())
    };
}

/// Orders the non-temporal stores before every later store (x86_64: `sfence`; elsewhere the
/// copy used ordinary stores, which the release of the ring's head already orders).
#[inline]
pub(crate) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` is part of SSE, which every x86_64 CPU has.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_and_misalignment_arrives_exactly() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let src: Vec<u8> = (0..4096 + 64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut dst = vec![0u8; 4096 + 128];
        for len in (0..70).chain([255, 256, 257, 1000, 4095, 4096]) {
            for s_off in [0, 1, 7, 15, 16, 33] {
                for d_off in [0, 1, 8, 15, 16, 31, 63] {
                    dst.fill(0xa5);
                    // SAFETY: d_off + len < dst.len(); the two vectors do not overlap.
                    unsafe { copy(&src[s_off..s_off + len], dst.as_mut_ptr().add(d_off)) };
                    fence();
                    assert!(
                        dst[d_off..d_off + len] == src[s_off..s_off + len],
                        "len {len} src +{s_off} dst +{d_off}"
                    );
                    assert!(dst[..d_off].iter().all(|&b| b == 0xa5), "before, len {len}");
                    assert!(
                        dst[d_off + len..].iter().all(|&b| b == 0xa5),
                        "after, len {len} src +{s_off} dst +{d_off}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_variable_is_read_and_checked() {
        assert_eq!("on".parse::<RingNt>().unwrap(), RingNt::On);
        assert_eq!(" off ".parse::<RingNt>().unwrap(), RingNt::Off);
        let e = "always".parse::<RingNt>().unwrap_err().to_string();
        assert!(
            e.contains("OXCCL_RING_NT") && e.contains("off or on"),
            "{e}"
        );
        assert_eq!(RingNt::Off.min_write(), usize::MAX);
        assert_eq!(RingNt::On.min_write(), NT_MIN_WRITE);
    }
}
