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
//! How: the first [`FIRST_CALLS`] calls of one kind and power-of-two size class alternate,
//! ordinary first (the very first is not timed: first touches of the buffers), so that each
//! kind is timed [`SAMPLES`] times; the kind whose best call was faster is kept. The last
//! `2 * SAMPLES` of every [`EXPLORE_EVERY`] calls of a kind measure again ([`SAMPLES`]
//! ordinary, then [`SAMPLES`] non-temporal, whichever is in use). The best call and not the
//! mean: a rank's call also waits for peers that lost their core, which only ever slows it,
//! and one such call among the tries kept the slower kind for a whole window (4 ranks on 2
//! cores, session 13). The sequence follows the count of calls of the kind, which every rank
//! of the communicator makes alike (whatever its size class, small calls included:
//! `CallStores::ticks`), so the ranks measure together and each sees the effect of both ends'
//! choice, even where their measurements led them to different kinds. Every collective call
//! takes part, the uneven ones (`vcalls.rs`) too.
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
/// the fence and the misses cost more than the hand-over they save.
pub(crate) const MIN_CALL_BYTES: usize = 64 << 10;
/// Calls of each kind timed per measurement: a call's time on a rank includes its peers'
/// turns on the cores (4 ranks on 2 cores: single calls vary 2-3x), which only ever slows it,
/// so each kind's speed is the best of this many calls, not one call's.
pub(crate) const SAMPLES: u32 = 2;
/// The calls of a class that alternate the kinds before the faster one is kept (a benchmark's
/// warm-up, typically: 5): the first, untimed, then [`SAMPLES`] of each kind.
pub(crate) const FIRST_CALLS: u32 = 1 + 2 * SAMPLES;
/// The last `2 * SAMPLES` calls in every this many of a kind measure both kinds again
/// ([`SAMPLES`] ordinary, then [`SAMPLES`] non-temporal), so that a change of the machine's
/// state is noticed (~3% of the calls take the slower kind).
pub(crate) const EXPLORE_EVERY: u32 = 64;

/// The record of one kind and size class of call.
#[derive(Clone, Copy, Default)]
struct Class {
    /// Calls made so far.
    calls: u32,
    /// The best speed of each kind in the current measurement, bytes per microsecond,
    /// [ordinary, non-temporal], and how many of its calls were timed.
    best: [u32; 2],
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
    /// measuring calls of each [`EXPLORE_EVERY`]; the others just run).
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
        // and the last 2 * SAMPLES of every EXPLORE_EVERY calls take ordinary, then
        // non-temporal stores.
        let slot = t % EXPLORE_EVERY;
        let (nt, timed) = match c {
            0 => (false, false),
            _ if c < FIRST_CALLS => (t % 2 == 0, true),
            _ if slot >= EXPLORE_EVERY - 2 * SAMPLES => (slot >= EXPLORE_EVERY - SAMPLES, true),
            _ => (class.nt, false),
        };
        Some(Pick { key, nt, timed })
    }

    /// Folds in the time `took` of a call of `bytes` that ran with `pick`: once both kinds
    /// have [`SAMPLES`] timed calls, the faster by its best call is kept.
    pub(crate) fn record(&mut self, pick: Pick, bytes: usize, took: Duration) {
        if !pick.timed {
            return;
        }
        let Some(class) = self.classes.get_mut(&pick.key) else {
            return;
        };
        let mbps = (bytes as u128 * 1000 / took.as_nanos().max(1)).clamp(1, u32::MAX.into()) as u32;
        let k = usize::from(pick.nt);
        class.best[k] = class.best[k].max(mbps);
        class.timed[k] += 1;
        if class.timed.iter().any(|&n| n < SAMPLES) {
            return;
        }
        let [plain, nt] = class.best.map(u64::from);
        (class.best, class.timed) = ([0; 2], [0; 2]);
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
    const E: usize = EXPLORE_EVERY as usize;
    const S: usize = SAMPLES as usize;

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

    /// The calls of `kinds` (indexed from tick `from`) that took non-temporal stores.
    fn nt_calls(kinds: &[bool], from: usize) -> Vec<usize> {
        (kinds.iter().enumerate().filter(|(_, &nt)| nt))
            .map(|(i, _)| i + from)
            .collect()
    }

    #[test]
    fn small_calls_are_left_alone() {
        let mut s = CallStores::default();
        assert_eq!(s.pick(KIND, MIN_CALL_BYTES - 1), None);
        assert!(s.pick(KIND, MIN_CALL_BYTES).is_some());
    }

    #[test]
    fn both_kinds_are_measured_then_the_faster_kept_and_both_measured_again() {
        let mut s = CallStores::default();
        // Ordinary stores 4x faster (the fast state, data in the caches).
        let first = run(&mut s, FIRST_CALLS as usize, MIB, 100, 400);
        assert_eq!(first, [false, false, true, false, true], "each kind twice");
        let f = FIRST_CALLS as usize;
        let next = run(&mut s, 2 * E - f, MIB, 100, 400);
        let window = |w: usize| (w * E - S..w * E).collect::<Vec<_>>();
        assert_eq!(
            nt_calls(&next, f),
            [window(1), window(2)].concat(),
            "the last SAMPLES calls of every EXPLORE_EVERY try the slower kind"
        );
        // The state flips: ordinary stores 5x slower. Non-temporal stores take over at the
        // next measurement, and ordinary ones are tried once per window.
        let flipped = run(&mut s, 2 * E, MIB, 500, 400);
        let ordinary: Vec<usize> = (0..2 * E).filter(|&i| !flipped[i]).collect();
        let measure = |w: usize| (w * E - 2 * S..w * E - S).collect::<Vec<_>>();
        assert_eq!(
            ordinary,
            [(0..E - S).collect(), measure(2)].concat(),
            "{flipped:?}"
        );
        // And back at the next measurement.
        let back = run(&mut s, 2 * E, MIB, 100, 400);
        assert_eq!(
            nt_calls(&back, 0),
            [(0..E - 2 * S).collect(), window(1), window(2)].concat()
        );
    }

    #[test]
    fn one_preempted_call_does_not_hide_the_faster_kind() {
        let mut s = CallStores::default();
        // Non-temporal stores twice as fast, but one of their first calls waited 10x on a
        // peer that lost its core: the best of each kind's calls still ranks them.
        let times = [100, 100, 500, 100, 50];
        for &t in &times {
            let p = s.pick(KIND, MIB).unwrap();
            s.record(p, MIB, us(if p.nt { t } else { 100 }));
        }
        assert!(s.pick(KIND, MIB).unwrap().nt);
    }

    #[test]
    fn ranks_in_different_classes_or_with_different_choices_measure_together() {
        let (mut a, mut b) = (CallStores::default(), CallStores::default());
        // Rank a's calls below 1 MiB, then above; rank b's below throughout (an uneven
        // all-to-all-v around a power of two). Rank a measured ordinary stores faster, b
        // non-temporal ones.
        run(&mut a, 7, MIB - 4096, 100, 400);
        run(&mut b, 7, MIB - 8192, 400, 100);
        let n = 2 * E;
        let (ka, kb) = (
            run(&mut a, n, MIB + 4096, 100, 400),
            run(&mut b, n, MIB - 8192, 400, 100),
        );
        for i in FIRST_CALLS as usize..n {
            let slot = (7 + i) % E;
            if (E - 2 * S..E - S).contains(&slot) {
                assert!(!ka[i] && !kb[i], "call {i}: both ordinary");
            } else if slot >= E - S {
                assert!(ka[i] && kb[i], "call {i}: both non-temporal");
            } else {
                assert!(!ka[i] && kb[i], "call {i}: each its own kind");
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
        let f = FIRST_CALLS as usize;
        assert_eq!(ka[f..], kb[f..], "tries on the same calls");
        assert_eq!(nt_calls(&ka[f..], 0).len(), 2 * S, "{ka:?}");
    }

    #[test]
    fn classes_are_apart_and_within_an_eighth_the_incumbent_stays() {
        let mut s = CallStores::default();
        run(&mut s, FIRST_CALLS as usize, MIB, 400, 100);
        assert!(s.pick(KIND, MIB).unwrap().nt);
        // Another size class, and another kind of call, start over.
        assert!(!s.pick(KIND, 4 * MIB).unwrap().nt);
        assert!(!s.pick(KIND + 1, MIB).unwrap().nt);
        let mut t = CallStores::default();
        let kinds = run(&mut t, FIRST_CALLS as usize, MIB, 100, 95);
        assert_eq!(kinds, [false, false, true, false, true]);
        let later = run(&mut t, 2 * E, MIB, 100, 95);
        assert_eq!(nt_calls(&later, 0).len(), 2 * S, "only the measurements");
    }
}
