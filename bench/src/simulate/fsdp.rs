//! ZeRO-3 / FSDP full sharding: each rank keeps `1/N` of the parameters, gradients and
//! optimizer state; a unit's parameters are all-gathered before its forward and again before
//! its backward, and its gradients reduce-scattered after its backward (Rajbhandari et al.
//! 2020, "ZeRO", stage 3; PyTorch FSDP's `FULL_SHARD`, Zhao et al. 2023).
//!
//! The units are those of a transformer auto-wrap policy: one per repeated block, plus a root
//! unit with everything else (embeddings, final norm, heads), gathered once at the start of the
//! step and kept until the end of the backward pass, where its gradients are reduce-scattered
//! last. Prefetching as FSDP does it: the next block's all-gather is issued when the current
//! block's forward (or backward) starts, so one gather runs ahead of compute. All collectives
//! share one queue in the order they are issued (they share the same links).

use super::resnet::Tensor;

/// One FSDP unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// Parameters in the unit.
    pub elems: u64,
    /// Forward multiply-adds of the unit's layers per sample.
    pub macs: f64,
}

/// The root unit (tensors outside every block) first, then one unit per block in forward order.
pub fn units(tensors: &[Tensor]) -> Vec<Unit> {
    let blocks = tensors
        .iter()
        .filter_map(|t| t.block)
        .max()
        .map_or(0, |b| b as usize + 1);
    let mut out = vec![
        Unit {
            elems: 0,
            macs: 0.0
        };
        blocks + 1
    ];
    for t in tensors {
        let u = &mut out[t.block.map_or(0, |b| b as usize + 1)];
        u.elems += t.elems;
        u.macs += t.macs;
    }
    out
}

/// Collective times of each unit (same indices as the units).
pub struct CommTimes {
    pub all_gather: Vec<f64>,
    pub reduce_scatter: Vec<f64>,
}

/// One training step under FSDP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Wall time of the step.
    pub time: f64,
    /// Time the collectives keep the links busy (every gather twice, every scatter once).
    pub comm: f64,
}

/// The step time of `units` (root first) computing for `compute` seconds in all (forward 1/3,
/// backward 2/3, each unit's share in proportion to its multiply-adds) with collectives `c`.
pub fn step(units: &[Unit], compute: f64, c: &CommTimes) -> Step {
    let total: f64 = units.iter().map(|u| u.macs).sum();
    let share = |i: usize| {
        if total > 0.0 {
            units[i].macs / total
        } else {
            1.0 / units.len() as f64
        }
    };
    let fwd = |i: usize| compute / 3.0 * share(i);
    let bwd = |i: usize| compute * 2.0 / 3.0 * share(i);
    let n = units.len() - 1;
    // The collective queue: each operation starts when issued and the queue is free.
    let mut queue = 0.0f64;
    let mut run = |issued: f64, t: f64| {
        queue = queue.max(issued) + t;
        queue
    };
    // Forward: the root's gather, then block i's gather issued when block i-1's forward starts.
    let root_ready = run(0.0, c.all_gather[0]);
    let mut clock = root_ready;
    let mut started = 0.0;
    for i in 1..=n {
        let gathered = run(if i == 1 { 0.0 } else { started }, c.all_gather[i]);
        started = clock.max(gathered);
        clock = started + fwd(i);
    }
    // The root's own layers (the head) end the forward pass and start the backward pass.
    clock += fwd(0);
    let forward_end = clock;
    clock += bwd(0);
    // Backward, last block first: block i's gather issued when block i+1's backward starts
    // (for the last block, when the backward pass starts), then block i+1's scatter when its
    // backward ends.
    let mut next_started = forward_end;
    let mut next_ended = None;
    for i in (1..=n).rev() {
        let gathered = run(next_started, c.all_gather[i]);
        if let Some(end) = next_ended {
            run(end, c.reduce_scatter[i + 1]);
        }
        next_started = clock.max(gathered);
        clock = next_started + bwd(i);
        next_ended = Some(clock);
    }
    if n > 0 {
        run(clock, c.reduce_scatter[1]);
    }
    // The root's gradients (embeddings: complete only now) last.
    let end = run(clock, c.reduce_scatter[0]);
    let comm = c.all_gather[0]
        + c.all_gather[1..].iter().map(|t| 2.0 * t).sum::<f64>()
        + c.reduce_scatter.iter().sum::<f64>();
    Step {
        time: end.max(clock),
        comm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(macs: f64) -> Unit {
        Unit { elems: 1, macs }
    }

    fn times(n: usize, ag: f64, rs: f64) -> CommTimes {
        CommTimes {
            all_gather: vec![ag; n],
            reduce_scatter: vec![rs; n],
        }
    }

    #[test]
    fn units_group_blocks_and_the_rest() {
        let t = |block, elems| Tensor {
            name: String::new(),
            elems,
            macs: elems as f64,
            block,
        };
        let u = units(&[
            t(None, 5),
            t(Some(0), 2),
            t(Some(0), 3),
            t(Some(1), 4),
            t(None, 1),
        ]);
        assert_eq!(u.iter().map(|x| x.elems).collect::<Vec<_>>(), [6, 5, 4]);
        let r = units(&super::super::resnet::resnet50());
        assert_eq!(r.len(), 17);
        assert_eq!(r.iter().map(|x| x.elems).sum::<u64>(), 25_557_032);
    }

    #[test]
    fn free_collectives_cost_nothing_and_slow_ones_add_up() {
        let u = [unit(1.0), unit(1.0), unit(1.0), unit(1.0)];
        let s = step(&u, 0.3, &times(4, 0.0, 0.0));
        assert!((s.time - 0.3).abs() < 1e-12, "{s:?}");
        assert_eq!(s.comm, 0.0);
        // Collectives far slower than compute: the queue is the step (every gather twice,
        // the root's once, every scatter once), plus the compute it cannot hide: the last
        // block's backward waits for its gather, and the root's scatter waits for the end.
        let s = step(&u, 0.003, &times(4, 1.0, 1.0));
        assert!((s.comm - (1.0 + 2.0 * 3.0 + 4.0)).abs() < 1e-12);
        assert!(s.time >= s.comm && s.time < s.comm + 0.003, "{s:?}");
    }

    #[test]
    fn one_gather_ahead_hides_gathers_shorter_than_a_block() {
        // 4 blocks of 1 ms forward (3 ms with backward): gathers of 0.5 ms and scatters of
        // 0.5 ms hide behind compute except the first two gathers (root, block 1), the last
        // block's gather again when the backward pass starts, and the last two scatters
        // (block 1, root).
        let u = [unit(0.0), unit(1.0), unit(1.0), unit(1.0), unit(1.0)];
        let s = step(&u, 12e-3, &times(5, 0.5e-3, 0.5e-3));
        let exposed = s.time - 12e-3;
        assert!((exposed - 2.5e-3).abs() < 1e-9, "{exposed}");
    }
}
