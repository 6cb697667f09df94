//! Hierarchical multi-dimensional all-reduce (PowerAI DDL, Cho et al. 2019; BlueConnect).
//!
//! Ranks are mixed-radix coordinates over dims `d1 x d2 x ... x dm`, the first dim varying
//! fastest (the ranks of one node are consecutive). All-reduce runs a ring reduce-scatter among
//! the `d1` ranks that share every other coordinate, then one along dim 2 on the shard that
//! came out of it (now `1/d1` of the data), and so on; the last dim runs a full ring all-reduce
//! on its shard, and all-gathers retrace the dims in reverse. Only `1/(d1...d(j-1))` of the
//! data crosses the links of dim `j`, so the slow outer tiers carry the least. A 2D torus is the
//! two-dimensional case.
//!
//! Blocks are laid out so that every shard is one contiguous range: a rank's final shard is
//! number `x1 * (p/d1) + x2 * (p/(d1 d2)) + ... + xm` (dim 1 varies slowest in block order),
//! `k` blocks each. That is not rank order, so reduce-scatter and all-gather report it in
//! `Schedule::owned`.

use super::ring::{ring_table, RingKind};
use super::{wavefront, Built};
use crate::schedule::{Blocks, Collective, Program, Rank};

pub(super) fn build(collective: Collective, dims: &[usize], k: usize) -> Built {
    let p: usize = dims.iter().product();
    let m = dims.len();
    // stride[j]: rank distance between neighbours along dim j; width[j]: groups in a shard
    // after reduce-scattering dims 0..=j (width[m-1] = 1).
    let mut stride = vec![1; m];
    let mut width = vec![p / dims[0]; m];
    for j in 1..m {
        stride[j] = stride[j - 1] * dims[j - 1];
        width[j] = width[j - 1] / dims[j];
    }
    let coord = |r: usize, j: usize| (r / stride[j]) % dims[j];
    // The shard rank r holds after reduce-scattering dims 0..j (j = 0: the whole buffer).
    let shard = |r: usize, j: usize| -> Blocks {
        let start: usize = (0..j).map(|i| coord(r, i) * width[i]).sum();
        let len = if j == 0 { p } else { width[j - 1] };
        Blocks::new((start * k) as u32, (len * k) as u32)
    };

    let mut phases: Vec<(usize, RingKind)> = Vec::new();
    match collective {
        Collective::ReduceScatter => phases.extend((0..m).map(|j| (j, RingKind::ReduceScatter))),
        Collective::AllGather => phases.extend((0..m).rev().map(|j| (j, RingKind::AllGather))),
        _ => {
            phases.extend((0..m - 1).map(|j| (j, RingKind::ReduceScatter)));
            phases.push((m - 1, RingKind::AllReduce));
            phases.extend((0..m - 1).rev().map(|j| (j, RingKind::AllGather)));
        }
    }

    let mut programs = vec![Program::new(); p];
    for (j, kind) in phases {
        let d = dims[j];
        if d == 1 {
            continue;
        }
        // One ring per set of ranks that differ only in coordinate j; its segments are the d
        // parts of the shard they share.
        for r0 in (0..p).filter(|&r| coord(r, j) == 0) {
            let members: Vec<Rank> = (0..d).map(|x| (r0 + x * stride[j]) as Rank).collect();
            let whole = shard(r0, j);
            let part = whole.len / d as u32;
            let segs: Vec<Blocks> = (0..d as u32)
                .map(|x| Blocks::new(whole.start + x * part, part))
                .collect();
            for (i, &rank) in members.iter().enumerate() {
                let table = ring_table(kind, &members, &segs, i);
                wavefront(&mut programs[rank as usize], &mut [table], k);
            }
        }
    }
    let owned = match collective {
        Collective::AllReduce => Vec::new(),
        _ => (0..p).map(|r| shard(r, m)).collect(),
    };
    (p * k, owned, programs)
}
