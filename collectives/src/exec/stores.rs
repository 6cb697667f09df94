//! Which stores a call's ring writes take (`OXCCL_RING_NT=call`, the default): ordinary ones,
//! or non-temporal ones (`oxccl_transport::stream::RingNt`), chosen per kind and size of
//! call by the measured time of the whole call.
//!
//! Why: on the development machine the two cores hand freshly written lines to each other at
//! ~11 GB/s in one state and ~2 GB/s in another that comes and goes every few minutes. Lines
//! written with non-temporal stores go through memory and reach the other core at ~10 GB/s in
//! both states, but cost speed in the fast state where the data fits in the caches (the
//! 2-rank all-reduce at 1 MiB: 60 against 140-175 us). So neither kind wins everywhere, and
//! only the end-to-end time ranks them: the writer's copy speed and the reader's consume
//! speed did not (`OXCCL_RING_NT=auto`, `bench/RESULTS.md`, session 9, `nt`).
//!
//! How: the first calls of one kind and power-of-two size class alternate, ordinary first (the
//! very first is not timed: first touches of the buffers), so that each kind is timed over a
//! block of calls; the kind that moved its block's bytes faster is kept. At the end of every
//! window of calls of a kind both are measured again (a block of ordinary stores, then one of
//! non-temporal ones, whichever kind is in use). The block and the window depend on the size
//! ([`SMALL`], [`LARGE`]). Blocks, not single calls: a rank's call also waits for peers that
//! entered it late or lost their core, and single calls, compared by a moving mean or by the
//! best of a few, flipped the choice every few windows (4 ranks on 2 cores, session 13). The
//! sequence follows the count of calls of the kind, which every rank of the communicator makes
//! alike (whatever its size class, small calls included: `CallStores::ticks`), so the ranks
//! measure together and each sees the effect of both ends' choice, even where their
//! measurements led them to different kinds. Every collective call takes part, the uneven
//! ones (`vcalls.rs`) too.
//! Also where ranks share the cores: a peer on the same core would read the ring from the
//! cache, but the ranks are not pinned and most steps cross cores; per write (`auto`, `on`)
//! non-temporal stores lost there (4 ranks on 2 cores, session 9), per call they won in the
//! slow state and kept the fast state's speed (4 ranks, session 11: 1.24-1.73x of Open MPI at
//! 64 KiB-16 MiB against 0.56-0.91x with ordinary stores alone; `bench/RESULTS.md`, "Session
//! 11").

use std::collections::HashMap;
use std::time::Duration;

use oxccl_transport::stream::RingNt;

use super::engine::Engine;
use crate::error::Result;

/// Calls below this many bytes keep ordinary stores: their ring writes are a few KiB, where
/// the fence and the misses cost more than the hand-over they save. 32 KiB and not 64: a
/// 2-rank all-to-all-v of 64 KiB gives one rank less than 64 KiB, whose ordinary stores held
/// the slow state's calls at 0.34-0.52x of Open MPI (1.08-1.55x from 32 KiB; the fast state
/// unchanged at 2 and 4 ranks; session 13).
pub(crate) const MIN_CALL_BYTES: usize = 32 << 10;
/// When a class of calls measures both kinds: over a block of `block` consecutive calls of
/// each kind, their times summed, and again at the end of every `every` calls of the kind (a
/// block of ordinary stores, then one of non-temporal ones, whichever kind is in use), so that
/// a change of the machine's state is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cadence {
    pub(crate) block: u32,
    pub(crate) every: u32,
}

/// Calls under [`LARGE_CALL_BYTES`]: blocks of 8 (~1.6% of the calls take the slower kind). A
/// call's time on a rank depends on when its peers entered it and whether they kept their
/// cores (4 ranks on 2 cores: single calls of one kind vary 2-4x), which a block averages out;
/// single calls, compared by a moving mean or by the best of a few, flipped the choice every
/// few windows in the fast state (4 ranks, all-to-all-v at 128-256 KiB, session 13: 290
/// switches in one two-size sweep, 8 with blocks).
pub(crate) const SMALL: Cadence = Cadence {
    block: 8,
    every: 512,
};
/// Calls from [`LARGE_CALL_BYTES`]: a millisecond or more each, so a peer's late entry is
/// small beside them, while a block of 8 would keep a sweep's few calls of a size (Open MPI's
/// side and ours time ~0.25 s a size: 5 calls of 256 MiB) alternating the kinds throughout.
pub(crate) const LARGE: Cadence = Cadence {
    block: 2,
    every: 64,
};
/// Where [`LARGE`] takes over from [`SMALL`].
pub(crate) const LARGE_CALL_BYTES: usize = 8 << 20;

/// The cadence of a size class (`log2` of its smallest call).
fn cadence(log2: u32) -> Cadence {
    if log2 >= LARGE_CALL_BYTES.trailing_zeros() {
        LARGE
    } else {
        SMALL
    }
}

impl Cadence {
    /// The calls of a class that alternate the kinds before the faster one is kept (a
    /// benchmark's warm-up and first timed calls): the first, untimed, then a block of each.
    pub(crate) fn first_calls(self) -> u32 {
        1 + 2 * self.block
    }

    /// Whether the call at tick `t` of its kind measures a kind of stores, and which (true:
    /// non-temporal).
    fn measuring(self, t: u32) -> Option<bool> {
        let slot = t % self.every;
        (slot >= self.every - 2 * self.block).then_some(slot >= self.every - self.block)
    }
}

/// The record of one kind and size class of call.
#[derive(Clone, Copy, Default)]
struct Class {
    /// Calls made so far.
    calls: u32,
    /// The current measurement of each kind, [ordinary, non-temporal]: bytes, nanoseconds
    /// and count of its timed calls.
    bytes: [u64; 2],
    nanos: [u64; 2],
    timed: [u32; 2],
    /// The faster kind (true: non-temporal).
    nt: bool,
}

/// What [`CallStores::pick`] chose for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    key: (u8, u32),
    /// Non-temporal stores for this call's ring writes.
    pub(crate) nt: bool,
    /// Whether the call's time counts in a measurement (the class's first calls and the
    /// measuring blocks of each window; the others just run).
    timed: bool,
}

/// The per-call choice of stores of one communicator (see the module documentation).
#[derive(Default)]
pub(crate) struct CallStores {
    classes: HashMap<(u8, u32), Class>,
    /// Calls of each kind so far, whatever their size: the clock of the measurements. Every
    /// rank makes the same calls of a kind, but not always in the same size class (an
    /// all-to-all-v's bytes differ per rank, and at a power of two some ranks fall below it,
    /// some above). Timed by a class's own count, the tries fell on different calls on
    /// different ranks: each rank tried the other kind alone, timed a mix of both, and stayed
    /// where it was (4 ranks on 2 cores, all-to-all-v at 128 KiB-2 MiB in the slow state ran
    /// at the speed of ordinary stores, 2-3x slower than with non-temporal ones;
    /// bench/RESULTS.md, session 12).
    ///
    /// Indexed by kind: every call of the communicator ticks, so no hashing here.
    ticks: Vec<u32>,
}

impl CallStores {
    /// The stores of a call of `kind` (a header kind) over `bytes`; `None` below
    /// [`MIN_CALL_BYTES`] (ordinary stores, nothing measured).
    pub(crate) fn pick(&mut self, kind: u8, bytes: usize) -> Option<Pick> {
        // Every call ticks, small ones too: one rank's part of an all-to-all-v may fall below
        // MIN_CALL_BYTES where its peers' do not.
        let k = usize::from(kind);
        if self.ticks.len() <= k {
            self.ticks.resize(k + 1, 0);
        }
        let t = self.ticks[k];
        self.ticks[k] = t.wrapping_add(1);
        if bytes < MIN_CALL_BYTES {
            return None;
        }
        let key = (kind, usize::BITS - 1 - bytes.leading_zeros());
        let class = self.classes.entry(key).or_default();
        let c = class.calls;
        class.calls = c.saturating_add(1);
        // By the kind's clock, which all ranks share: the first calls of a class alternate,
        // then the measuring blocks at the end of each window take their kind.
        let cad = cadence(key.1);
        let (nt, timed) = match (c, cad.measuring(t)) {
            (0, _) => (false, false),
            _ if c < cad.first_calls() => (t % 2 == 0, true),
            (_, Some(nt)) => (nt, true),
            (_, None) => (class.nt, false),
        };
        Some(Pick { key, nt, timed })
    }

    /// Folds in the time `took` of a call of `bytes` that ran with `pick`: once both kinds
    /// have a block of timed calls, the faster over its block is kept.
    pub(crate) fn record(&mut self, pick: Pick, bytes: usize, took: Duration) {
        if !pick.timed {
            return;
        }
        let Some(class) = self.classes.get_mut(&pick.key) else {
            return;
        };
        let k = usize::from(pick.nt);
        class.bytes[k] = class.bytes[k].saturating_add(bytes as u64);
        class.nanos[k] = class.nanos[k].saturating_add(took.as_nanos().max(1) as u64);
        class.timed[k] = class.timed[k].saturating_add(1);
        if class.timed.iter().any(|&n| n < cadence(pick.key.1).block) {
            return;
        }
        // Bytes per microsecond of each kind.
        let [plain, nt] = [0, 1].map(|k| {
            (u128::from(class.bytes[k]) * 1000 / u128::from(class.nanos[k])).min(u64::MAX.into())
                as u64
        });
        (class.bytes, class.nanos, class.timed) = ([0; 2], [0; 2], [0; 2]);
        // The other kind takes the lead once it is an eighth faster.
        let lead = if class.nt {
            plain <= nt + nt / 8
        } else {
            nt > plain + plain / 8
        };
        if lead != class.nt {
            class.nt = lead;
            tracing::debug!(
                kind = pick.key.0,
                class_bytes = 1usize << pick.key.1,
                plain_mbps = plain,
                nt_mbps = nt,
                "ring writes: {} stores are now the faster for this call size",
                if lead { "non-temporal" } else { "ordinary" }
            );
        }
    }
}

impl Engine {
    /// Runs `call` (one collective call of `kind` over `bytes`) with its ring writes to `peers`
    /// in the stores chosen for its kind and size, where this engine chooses them, and folds
    /// its time in when it succeeds.
    pub(crate) fn with_call_stores<R>(
        &mut self,
        kind: u8,
        bytes: usize,
        peers: &[usize],
        call: impl FnOnce(&mut Engine) -> Result<R>,
    ) -> Result<R> {
        let Some(pick) = self.call_stores.as_mut().and_then(|s| s.pick(kind, bytes)) else {
            return call(self);
        };
        if pick.nt {
            self.set_ring_nt(peers, RingNt::On);
        }
        let t0 = std::time::Instant::now();
        let r = call(self);
        let took = t0.elapsed();
        if pick.nt {
            self.set_ring_nt(peers, RingNt::Call);
        }
        if let (true, Some(stores)) = (r.is_ok(), self.call_stores.as_mut()) {
            stores.record(pick, bytes, took);
        }
        r
    }

    fn set_ring_nt(&mut self, peers: &[usize], nt: RingNt) {
        for &q in peers {
            if let Some(link) = self.links.get_mut(q).and_then(Option::as_mut) {
                link.stream().set_ring_nt(nt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: u8 = 1;
    const MIB: usize = 1 << 20;
    // 1 MiB calls, the small cadence.
    const E: usize = SMALL.every as usize;
    const B: usize = SMALL.block as usize;
    const F: usize = 1 + 2 * B;

    fn measuring(t: u32) -> Option<bool> {
        SMALL.measuring(t)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// `n` calls of `bytes` taking `plain` or `nt` us by kind; the kinds chosen.
    fn run(s: &mut CallStores, n: usize, bytes: usize, plain: u64, nt: u64) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let p = s.pick(KIND, bytes).expect("large enough");
                s.record(p, bytes, us(if p.nt { nt } else { plain }));
                p.nt
            })
            .collect()
    }

    /// The stores of the call at tick `t` of a class past its first calls, whose kept kind is
    /// `kept`.
    fn settled(t: usize, kept: bool) -> bool {
        measuring(t as u32).unwrap_or(kept)
    }

    #[test]
    fn small_calls_are_left_alone() {
        let mut s = CallStores::default();
        assert_eq!(s.pick(KIND, MIN_CALL_BYTES - 1), None);
        assert!(s.pick(KIND, MIN_CALL_BYTES).is_some());
    }

    #[test]
    fn each_window_ends_with_a_block_of_each_kind() {
        let kinds: Vec<Option<bool>> = (0..SMALL.every).map(measuring).collect();
        let (quiet, blocks) = kinds.split_at(E - 2 * B);
        assert!(quiet.iter().all(Option::is_none));
        assert_eq!(blocks[..B], [Some(false); B], "ordinary first");
        assert_eq!(blocks[B..], [Some(true); B]);
    }

    #[test]
    fn both_kinds_are_measured_then_the_faster_kept_and_both_measured_again() {
        let mut s = CallStores::default();
        // Ordinary stores 4x faster (the fast state, data in the caches).
        let first = run(&mut s, F, MIB, 100, 400);
        let alternate: Vec<bool> = (0..F).map(|t| t > 0 && t % 2 == 0).collect();
        assert_eq!(first, alternate, "the first untimed, then alternating");
        let next = run(&mut s, 2 * E - F, MIB, 100, 400);
        for (i, &nt) in next.iter().enumerate() {
            assert_eq!(nt, settled(F + i, false), "call {}", F + i);
        }
        assert_eq!(
            next.iter().filter(|&&nt| nt).count(),
            2 * B,
            "a block a window"
        );
        // The state flips: ordinary stores 5x slower. Non-temporal stores take over when the
        // next window's measurements are in, at its end.
        let flipped = run(&mut s, 2 * E, MIB, 500, 400);
        for (i, &nt) in flipped.iter().enumerate() {
            assert_eq!(nt, settled(2 * E + i, i >= E), "call {}", 2 * E + i);
        }
        // And back.
        let back = run(&mut s, 2 * E, MIB, 100, 400);
        for (i, &nt) in back.iter().enumerate() {
            assert_eq!(nt, settled(4 * E + i, i < E), "call {}", 4 * E + i);
        }
    }

    #[test]
    fn large_calls_measure_in_short_blocks_more_often() {
        let mut s = CallStores::default();
        let large = LARGE_CALL_BYTES;
        assert_eq!(cadence(20), SMALL);
        assert_eq!(cadence(large.trailing_zeros()), LARGE);
        assert_eq!(cadence(63), LARGE);
        let first = run(&mut s, LARGE.first_calls() as usize, large, 100, 400);
        assert_eq!(first, [false, false, true, false, true]);
        let n = 2 * LARGE.every as usize;
        let later = run(&mut s, n, large, 100, 400);
        assert_eq!(
            later.iter().filter(|&&nt| nt).count(),
            2 * LARGE.block as usize
        );
    }

    #[test]
    fn a_block_is_ranked_by_its_total_not_by_one_call() {
        let mut s = CallStores::default();
        // Non-temporal stores faster, but the first of their timed calls waited 6x on a peer
        // that lost its core: the block's total still ranks them (300 + 7 x 50 against 800 us).
        let mut nt_times = std::iter::once(300).chain(std::iter::repeat(50));
        for _ in 0..F {
            let p = s.pick(KIND, MIB).unwrap();
            let t = if p.nt { nt_times.next().unwrap() } else { 100 };
            s.record(p, MIB, us(t));
        }
        assert!(s.pick(KIND, MIB).unwrap().nt);
    }

    #[test]
    fn ranks_in_different_classes_or_with_different_choices_measure_together() {
        let (mut a, mut b) = (CallStores::default(), CallStores::default());
        // Rank a's calls below 1 MiB, then above; rank b's below throughout (an uneven
        // all-to-all-v around a power of two). Rank a measured ordinary stores faster, b
        // non-temporal ones.
        run(&mut a, F, MIB - 4096, 100, 400);
        run(&mut b, F, MIB - 8192, 400, 100);
        let n = 2 * E;
        let (ka, kb) = (
            run(&mut a, n, MIB + 4096, 100, 400),
            run(&mut b, n, MIB - 8192, 400, 100),
        );
        for i in F..n {
            let t = F + i;
            assert_eq!(
                (ka[i], kb[i]),
                (settled(t, false), settled(t, true)),
                "call {t}"
            );
            if measuring(t as u32).is_some() {
                assert_eq!(ka[i], kb[i], "call {t}: both measure the same kind");
            }
        }
    }

    #[test]
    fn calls_below_the_smallest_size_keep_the_clock() {
        let (mut a, mut b) = (CallStores::default(), CallStores::default());
        // Rank a's first calls of the kind are small (its part of an uneven all-to-all-v), its
        // peer b's are not; the measurements must still fall on the same calls.
        for _ in 0..3 {
            assert_eq!(a.pick(KIND, MIN_CALL_BYTES - 1), None);
            assert!(b.pick(KIND, MIB).is_some());
        }
        let n = 2 * E;
        let (ka, kb) = (run(&mut a, n, MIB, 100, 400), run(&mut b, n, MIB, 100, 400));
        assert_eq!(ka[F..], kb[F..], "tries on the same calls");
        assert_eq!(ka[F..].iter().filter(|&&nt| nt).count(), 2 * B, "{ka:?}");
    }

    #[test]
    fn classes_are_apart_and_within_an_eighth_the_incumbent_stays() {
        let mut s = CallStores::default();
        run(&mut s, F, MIB, 400, 100);
        assert!(s.pick(KIND, MIB).unwrap().nt);
        // Another size class, and another kind of call, start over.
        assert!(!s.pick(KIND, 4 * MIB).unwrap().nt);
        assert!(!s.pick(KIND + 1, MIB).unwrap().nt);
        let mut t = CallStores::default();
        run(&mut t, F, MIB, 100, 95);
        let later = run(&mut t, 2 * E, MIB, 100, 95);
        assert_eq!(
            later.iter().filter(|&&nt| nt).count(),
            2 * B,
            "only the measurements"
        );
    }
}
