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

use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Which messages without a header (below the single-copy threshold, and every reduction's
/// bytes) a ring's writer copies with non-temporal stores (`OXCCL_RING_NT`). Large messages
/// with a header choose for themselves (`stream::choice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RingNt {
    /// Ordinary stores.
    Off,
    /// Non-temporal stores for every write of at least [`NT_MIN_WRITE`] bytes.
    On,
    /// Each writer chooses for its writes of at least [`NT_MIN_WRITE`] bytes, from its own
    /// copy speed and its reader's consume speed with each kind of store (`AutoNt` here).
    Auto,
    /// Ordinary stores, until the stream's user says otherwise for a while
    /// ([`crate::stream::Stream::set_ring_nt`]): the collectives choose per call, by the
    /// measured time of the calls of each size (`oxccl-collectives`, `exec/stores.rs`). The
    /// default.
    #[default]
    Call,
}

/// The smallest write copied with non-temporal stores under [`RingNt::On`]: below it the
/// fence and the line misses cost more than the cache hand-over they avoid.
pub const NT_MIN_WRITE: usize = 4096;

impl RingNt {
    /// The smallest write that takes non-temporal stores (`usize::MAX`: none).
    pub(crate) fn min_write(self) -> usize {
        match self {
            RingNt::Off | RingNt::Call => usize::MAX,
            RingNt::On | RingNt::Auto => NT_MIN_WRITE,
        }
    }
}

impl std::str::FromStr for RingNt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "off" | "0" => Ok(RingNt::Off),
            "on" | "1" => Ok(RingNt::On),
            "auto" => Ok(RingNt::Auto),
            "call" => Ok(RingNt::Call),
            other => Err(Error::Config {
                var: "OXCCL_RING_NT",
                value: other.to_string(),
                reason: "expected off, on, auto or call".into(),
            }),
        }
    }
}

/// `OXCCL_RING_NT`, else [`RingNt::Call`].
pub fn ring_nt_from_env() -> Result<RingNt> {
    match std::env::var("OXCCL_RING_NT") {
        Err(_) => Ok(RingNt::Call),
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

/// What a writer tells its reader about its stores (a word beside the ring's head): fixed
/// (nothing to measure), or chosen by [`AutoNt`] and now ordinary or non-temporal.
pub(crate) const MODE_FIXED: u32 = 0;
pub(crate) const MODE_AUTO_PLAIN: u32 = 2;
pub(crate) const MODE_AUTO_NT: u32 = 3;

/// An [`AutoNt`] writer decides (and times its copy) once per this many candidate writes: the
/// clock costs ~25 ns, 5% of a 4 KiB copy in the fast state.
pub(crate) const DECIDE_EVERY: u32 = 8;
/// How long a try of the other kind of store lasts.
pub(crate) const TRY_FOR: Duration = Duration::from_millis(2);
/// How long after its last use the other kind is tried again (a try costs at most
/// `TRY_FOR / TRY_EVERY` = 2% of the time at the slower speed).
pub(crate) const TRY_EVERY: Duration = Duration::from_millis(100);

/// A writer's choice of stores for writes without a header (`OXCCL_RING_NT=auto`): each kind
/// is scored by the time a byte costs the writer (its own copy, timed every
/// [`DECIDE_EVERY`] writes) plus the time it costs the reader (its peek-to-consume speed of
/// views of at least [`NT_MIN_WRITE`] bytes, which it measures while the writer's mode word
/// says which kind it is reading, and shows in the ring's control block). The better kind is
/// kept, the other tried for [`TRY_FOR`] every [`TRY_EVERY`], so that a change of the
/// machine's state is noticed; a kind takes the lead only once it is an eighth better.
#[derive(Debug, Default)]
pub(crate) struct AutoNt {
    nt: bool,
    writes: u32,
    /// The reader's consume speeds (ordinary, non-temporal), MB/s, as last read.
    reader: [u32; 2],
    /// This writer's copy speeds, moving averages, MB/s.
    writer: [u32; 2],
    used: [Option<Instant>; 2],
    trying_until: Option<Instant>,
}

impl AutoNt {
    /// Whether this candidate write should be timed and decided again.
    #[inline]
    pub(crate) fn due(&mut self) -> bool {
        self.writes = self.writes.wrapping_add(1);
        self.writes % DECIDE_EVERY == 1
    }

    /// The kind of store the last decision took (true: non-temporal).
    #[inline]
    pub(crate) fn nt(&self) -> bool {
        self.nt
    }

    /// Bytes per microsecond end to end, from what each side spends per byte (0: unmeasured).
    fn score(&self, k: usize) -> u64 {
        let (r, w) = (u64::from(self.reader[k]), u64::from(self.writer[k]));
        if r == 0 || w == 0 {
            return 0;
        }
        r * w / (r + w)
    }

    /// Decides the kind of store at `now`, given the reader's speeds `[ordinary,
    /// non-temporal]`; true: non-temporal.
    pub(crate) fn decide(&mut self, now: Instant, reader: [u32; 2]) -> bool {
        self.reader = reader;
        if self.trying_until.is_some_and(|t| now < t) {
            return self.nt;
        }
        self.trying_until = None;
        let s = [self.score(0), self.score(1)];
        // The kind not measured yet leads until it is; else the better by an eighth.
        let best = if s[0] == 0 {
            false
        } else if s[1] == 0 {
            true
        } else if self.nt {
            s[0] <= s[1] + s[1] / 8
        } else {
            s[1] > s[0] + s[0] / 8
        };
        let other = !best;
        let stale = self.used[usize::from(other)]
            .is_none_or(|t| now.saturating_duration_since(t) >= TRY_EVERY);
        self.nt = if s[usize::from(best)] > 0 && stale {
            self.trying_until = Some(now + TRY_FOR);
            other
        } else {
            best
        };
        self.used[usize::from(self.nt)] = Some(now);
        self.nt
    }

    /// Folds in one timed copy of `bytes` that took `took` with the kind `nt`.
    pub(crate) fn copied(&mut self, nt: bool, bytes: usize, took: Duration) {
        fold(&mut self.writer[usize::from(nt)], mbps(bytes, took));
    }
}

/// Bytes per microsecond (MB/s), at least 1.
pub(crate) fn mbps(bytes: usize, took: Duration) -> u32 {
    (bytes as u128 * 1000 / took.as_nanos().max(1)).clamp(1, u128::from(u32::MAX)) as u32
}

/// A moving average with a quarter of the weight on the new value.
pub(crate) fn fold(avg: &mut u32, new: u32) {
    *avg = match *avg {
        0 => new,
        old => ((3 * u64::from(old) + u64::from(new)) / 4) as u32,
    }
    .max(1);
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
        assert_eq!("auto".parse::<RingNt>().unwrap(), RingNt::Auto);
        assert_eq!("call".parse::<RingNt>().unwrap(), RingNt::Call);
        assert_eq!(RingNt::default(), RingNt::Call);
        let e = "always".parse::<RingNt>().unwrap_err().to_string();
        assert!(
            e.contains("OXCCL_RING_NT") && e.contains("off, on, auto or call"),
            "{e}"
        );
        assert_eq!(RingNt::Off.min_write(), usize::MAX);
        assert_eq!(RingNt::Call.min_write(), usize::MAX);
        assert_eq!(RingNt::On.min_write(), NT_MIN_WRITE);
    }

    #[test]
    fn auto_measures_both_kinds_keeps_the_better_and_tries_the_other() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut a = AutoNt::default();
        // Nothing measured: ordinary stores, until they are measured on both sides.
        assert!(!a.decide(t0, [0, 0]));
        a.copied(false, 4 << 20, Duration::from_micros(100)); // 41.9 GB/s
        assert!(!a.decide(ms(1), [0, 0]));
        // Then the non-temporal kind is measured (a try).
        assert!(a.decide(ms(2), [2_000, 0]));
        a.copied(true, 4 << 20, Duration::from_micros(400)); // 10.5 GB/s
                                                             // The slow state: the reader takes ordinary lines at 2 GB/s, non-temporal ones at 10.
        assert!((3..100).all(|i| a.decide(ms(i), [2_000, 10_000])));
        // Every TRY_EVERY the ordinary kind gets a try of TRY_FOR.
        assert!(!a.decide(ms(103), [2_000, 10_000]));
        assert!(!a.decide(ms(104), [2_000, 10_000]));
        assert!(a.decide(ms(106), [2_000, 10_000]));
        // The fast state: ordinary lines at 11 GB/s and the faster copy beat 10 GB/s.
        assert!(!a.decide(ms(107), [11_000, 10_000]));
        assert!((108..200).all(|i| !a.decide(ms(i), [11_000, 10_000])));
        // Scores within an eighth keep the incumbent.
        a.writer = [10_000, 10_000];
        a.used = [Some(ms(300)); 2];
        assert!(!a.decide(ms(301), [10_000, 11_000]));
        assert!(a.decide(ms(302), [10_000, 15_000]));
        assert!(a.decide(ms(303), [10_500, 10_000]));
        assert!(!a.decide(ms(304), [15_000, 10_000]));
        // Every DECIDE_EVERY-th candidate write is due, the first one included.
        let mut b = AutoNt::default();
        let due: Vec<bool> = (0..2 * DECIDE_EVERY).map(|_| b.due()).collect();
        assert_eq!(due.iter().filter(|&&d| d).count(), 2);
        assert!(due[0] && due[DECIDE_EVERY as usize]);
        assert!(b.nt() == b.nt);
        assert_eq!(mbps(1 << 20, Duration::from_micros(100)), 10_485);
        let mut avg = 0;
        fold(&mut avg, 8_000);
        fold(&mut avg, 12_000);
        assert_eq!(avg, 9_000);
    }
}
