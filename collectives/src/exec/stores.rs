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
//! kind is measured twice; then the kind with the faster moving speed, except that the last
//! two of every [`EXPLORE_EVERY`] calls of a kind take ordinary and then non-temporal stores,
//! whichever is in use (one try of the other kind per [`EXPLORE_EVERY`] calls). The sequence
//! follows the count of calls of the kind, which every rank of the communicator makes alike
//! (whatever its size class: `CallStores::ticks`), so the ranks try together and each sees the
//! effect of both ends' choice, even where their measurements led them to different kinds.
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

/// Calls below this many bytes keep ordinary stores: their ring writes are a few KiB, where
/// the fence and the misses cost more than the hand-over they save.
pub(crate) const MIN_CALL_BYTES: usize = 64 << 10;
/// The calls of a class that alternate the kinds before the faster one is kept (a benchmark's
/// warm-up, typically: 5).
pub(crate) const FIRST_CALLS: u32 = 5;
/// One call in this many (per kind and size class) tries the kind that is not the faster one,
/// so that a change of the machine's state is noticed (at most ~3% of the calls).
pub(crate) const EXPLORE_EVERY: u32 = 32;

/// The record of one kind and size class of call.
#[derive(Clone, Copy, Default)]
struct Class {
    /// Calls made so far.
    calls: u32,
    /// Moving speeds, bytes per microsecond, [ordinary, non-temporal] (0: not measured).
    speed: [u32; 2],
    /// The faster kind (true: non-temporal).
    nt: bool,
}

/// What [`CallStores::pick`] chose for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    key: (u8, u32),
    /// Non-temporal stores for this call's ring writes.
    pub(crate) nt: bool,
    /// The count of calls of its class before it.
    call: u32,
}

/// The per-call choice of stores of one communicator (see the module documentation).
#[derive(Default)]
pub(crate) struct CallStores {
    classes: HashMap<(u8, u32), Class>,
    /// Calls of each kind so far, whatever their size: the clock of the tries. Every rank makes
    /// the same calls of a kind, but not always in the same size class (an all-to-all-v's
    /// bytes differ per rank, and at a power of two some ranks fall below it, some above).
    /// Timed by a class's own count, the tries fell on different calls on different ranks:
    /// each rank tried the other kind alone, timed a mix of both, and stayed where it was (4
    /// ranks on 2 cores, all-to-all-v at 128 KiB-2 MiB in the slow state ran at the speed of
    /// ordinary stores, 2-3x slower than with non-temporal ones; bench/RESULTS.md, session 12).
    ticks: HashMap<u8, u32>,
}

impl CallStores {
    /// The stores of a call of `kind` (a header kind) over `bytes`; `None` below
    /// [`MIN_CALL_BYTES`] (ordinary stores, nothing measured).
    pub(crate) fn pick(&mut self, kind: u8, bytes: usize) -> Option<Pick> {
        if bytes < MIN_CALL_BYTES {
            return None;
        }
        let key = (kind, usize::BITS - 1 - bytes.leading_zeros());
        let tick = self.ticks.entry(kind).or_default();
        let t = *tick;
        *tick = t.saturating_add(1);
        let class = self.classes.entry(key).or_default();
        let c = class.calls;
        class.calls = c.saturating_add(1);
        // By the kind's clock, which all ranks share: the first calls of a class alternate,
        // and the last two of every EXPLORE_EVERY calls take ordinary, then non-temporal
        // stores (one of them the kind in use: one try of the other per EXPLORE_EVERY calls).
        let nt = match c {
            0 => false,
            _ if c < FIRST_CALLS => t % 2 == 0,
            _ if t % EXPLORE_EVERY == EXPLORE_EVERY - 2 => false,
            _ if t % EXPLORE_EVERY == EXPLORE_EVERY - 1 => true,
            _ => class.nt,
        };
        Some(Pick { key, nt, call: c })
    }

    /// Folds in the time `took` of a call of `bytes` that ran with `pick`.
    pub(crate) fn record(&mut self, pick: Pick, bytes: usize, took: Duration) {
        if pick.call == 0 {
            return;
        }
        let Some(class) = self.classes.get_mut(&pick.key) else {
            return;
        };
        let mbps = (bytes as u128 * 1000 / took.as_nanos().max(1)).clamp(1, u32::MAX.into()) as u32;
        let k = usize::from(pick.nt);
        let old = class.speed[k];
        class.speed[k] = if old > 0 && pick.call < FIRST_CALLS {
            // The first measurements of each kind: their mean.
            ((u64::from(old) + u64::from(mbps)) / 2) as u32
        } else if pick.nt == class.nt && old > 0 {
            // The kind in use: a moving speed, a quarter of the weight on each call, so that
            // one preempted call does not flip the choice.
            ((3 * u64::from(old) + u64::from(mbps)) / 4) as u32
        } else {
            // A try of the other kind: its last value is as old as the last try, so the new
            // one replaces it (a state that came back is followed at the next try).
            mbps
        };
        let [plain, nt] = class.speed.map(u64::from);
        if plain > 0 && nt > 0 {
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
}

impl Engine {
    /// Sets the stores of the ring writes to `peers` for a call of `kind` over `bytes`, where
    /// this engine chooses them; what to hand to [`Engine::end_call_stores`] after the call.
    pub(crate) fn begin_call_stores(
        &mut self,
        kind: u8,
        bytes: usize,
        peers: &[usize],
    ) -> Option<(Pick, std::time::Instant)> {
        let pick = self.call_stores.as_mut()?.pick(kind, bytes)?;
        if pick.nt {
            self.set_ring_nt(peers, RingNt::On);
        }
        Some((pick, std::time::Instant::now()))
    }

    /// After a call that [`Engine::begin_call_stores`] set up: ordinary stores again, and the
    /// call's time folded in when it succeeded.
    pub(crate) fn end_call_stores(
        &mut self,
        started: Option<(Pick, std::time::Instant)>,
        bytes: usize,
        peers: &[usize],
        ok: bool,
    ) {
        let Some((pick, t0)) = started else {
            return;
        };
        let took = t0.elapsed();
        if pick.nt {
            self.set_ring_nt(peers, RingNt::Call);
        }
        if let (true, Some(stores)) = (ok, self.call_stores.as_mut()) {
            stores.record(pick, bytes, took);
        }
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `n` calls of `bytes` taking `plain` or `nt` ms by kind; the kinds chosen.
    fn run(s: &mut CallStores, n: usize, bytes: usize, plain: u64, nt: u64) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let p = s.pick(KIND, bytes).expect("large enough");
                s.record(p, bytes, ms(if p.nt { nt } else { plain }));
                p.nt
            })
            .collect()
    }

    #[test]
    fn small_calls_are_left_alone() {
        let mut s = CallStores::default();
        assert_eq!(s.pick(KIND, MIN_CALL_BYTES - 1), None);
        assert!(s.pick(KIND, MIN_CALL_BYTES).is_some());
    }

    #[test]
    fn both_kinds_are_measured_then_the_faster_kept_and_the_other_tried() {
        let mut s = CallStores::default();
        let mib = 1 << 20;
        // Ordinary stores 4x faster (the fast state, data in the caches).
        let first = run(&mut s, FIRST_CALLS as usize, mib, 1, 4);
        assert_eq!(first, [false, false, true, false, true], "each kind twice");
        let next = run(&mut s, 2 * EXPLORE_EVERY as usize - 2, mib, 1, 4);
        let tries: Vec<usize> = (next.iter().enumerate().filter(|(_, &nt)| nt))
            .map(|(i, _)| i + FIRST_CALLS as usize)
            .collect();
        assert_eq!(
            tries,
            [EXPLORE_EVERY as usize - 1, 2 * EXPLORE_EVERY as usize - 1],
            "one try of the slower kind every EXPLORE_EVERY calls"
        );
        // The state flips: ordinary stores 5x slower. The moving speed falls within a dozen
        // calls, and non-temporal stores take over.
        let flipped = run(&mut s, 16, mib, 5, 4);
        assert!(!flipped[0] && flipped[15], "{flipped:?}");
        let after = run(&mut s, EXPLORE_EVERY as usize, mib, 5, 4);
        assert_eq!(after.iter().filter(|&&nt| !nt).count(), 1, "one try");
        // And back: one try of ordinary stores at their old speed is enough.
        let back = run(&mut s, 2 * EXPLORE_EVERY as usize, mib, 1, 4);
        assert!(back[0], "non-temporal until the try");
        let settled = &back[EXPLORE_EVERY as usize..];
        assert_eq!(settled.iter().filter(|&&nt| nt).count(), 1, "{back:?}");
    }

    #[test]
    fn ranks_in_different_classes_or_with_different_choices_try_together() {
        let mib = 1 << 20;
        let (mut a, mut b) = (CallStores::default(), CallStores::default());
        // Rank a's calls below 1 MiB, then above; rank b's below throughout (an uneven
        // all-to-all-v around a power of two). Rank a measured ordinary stores faster, b
        // non-temporal ones.
        run(&mut a, 7, mib - 4096, 1, 4);
        run(&mut b, 7, mib - 8192, 4, 1);
        let n = 2 * EXPLORE_EVERY as usize;
        let (ka, kb) = (
            run(&mut a, n, mib + 4096, 1, 4),
            run(&mut b, n, mib - 8192, 4, 1),
        );
        for i in FIRST_CALLS as usize..n {
            let tick = (7 + i) % EXPLORE_EVERY as usize;
            if tick == EXPLORE_EVERY as usize - 2 {
                assert!(!ka[i] && !kb[i], "call {i}: both ordinary");
            } else if tick == EXPLORE_EVERY as usize - 1 {
                assert!(ka[i] && kb[i], "call {i}: both non-temporal");
            } else {
                assert!(!ka[i] && kb[i], "call {i}: each its own kind");
            }
        }
    }

    #[test]
    fn a_slower_call_does_not_flip_the_choice_and_classes_are_apart() {
        let mut s = CallStores::default();
        let mib = 1 << 20;
        run(&mut s, FIRST_CALLS as usize, mib, 4, 1);
        // Non-temporal in the lead; one call 3x slower does not hand it back.
        let p = s.pick(KIND, mib).unwrap();
        assert!(p.nt);
        s.record(p, mib, ms(3));
        assert!(s.pick(KIND, mib).unwrap().nt);
        // Another size class, and another kind of call, start over.
        assert!(!s.pick(KIND, 4 * mib).unwrap().nt);
        assert!(!s.pick(KIND + 1, mib).unwrap().nt);
        // Within an eighth the incumbent stays.
        let mut t = CallStores::default();
        let speeds = run(&mut t, FIRST_CALLS as usize, mib, 100, 95);
        assert_eq!(speeds, [false, false, true, false, true]);
        assert!(run(&mut t, 20, mib, 100, 95).iter().all(|&nt| !nt));
    }
}
