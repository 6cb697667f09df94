//! Hierarchical multi-dimensional all-reduce (PowerAI DDL, Cho et al. 2019; BlueConnect).
//!
//! Ranks are mixed-radix coordinates over dims `d1 x d2 x ... x dm`, the first dim varying
//! fastest (the ranks of one node are consecutive). All-reduce runs a ring reduce-scatter among
//! the `d1` ranks that share every other coordinate, then one along dim 2 on the shard that
//! came out of it (now `1/d1` of the data), and so on; the last dim runs a full ring all-reduce
//! on its shard, and all-gathers retrace the dims in reverse. Only `1/(d1...d(j-1))` of the
//! data crosses the links of dim `j`, so the slow outer tiers carry the least. A 2D torus is the
//! two-dimensional case. In the all-reduce, a node's dim of `2^m >= 4` ranks under another tier
//! runs by recursive halving and doubling instead (see `all_reduce_stage_dims`).
//!
//! Blocks are laid out so that every shard is one contiguous range: a rank's final shard is
//! number `x1 * (p/d1) + x2 * (p/(d1 d2)) + ... + xm` (dim 1 varies slowest in block order),
//! `k` blocks each. That is not rank order, so reduce-scatter and all-gather report it in
//! `Schedule::owned`.
//!
//! The all-reduce is pipelined *across* dims: the buffer is cut into `k` chunks of `p` blocks,
//! and chunk `c` enters dim 2 one step after it leaves dim 1, while chunk `c + 1` is still in
//! dim 1. With `k` well above the number of stages, NVLink, the node's bus and the network all
//! carry data at the same time and the all-reduce takes about as long as its slowest tier alone;
//! run one dim after the other, the tiers' times add up.

use super::ring::{ring_table, RingKind};
use super::{wavefront, wavefront_with, Built, StageTable};
use crate::schedule::{Blocks, Collective, Program, Rank};

pub(super) fn build(collective: Collective, dims: &[usize], k: usize, lanes: usize) -> Built {
    let p: usize = dims.iter().product();
    if collective != Collective::AllReduce {
        // Reduce-scatter and all-gather must leave each rank's shard contiguous, so the chunks
        // cut each segment (as in the flat ring) and the dims run one after the other.
        let m = dims.len();
        let grid = Grid::new(dims);
        let phases: Vec<(usize, RingKind)> = if collective == Collective::ReduceScatter {
            (0..m).map(|j| (j, RingKind::ReduceScatter)).collect()
        } else {
            (0..m).rev().map(|j| (j, RingKind::AllGather)).collect()
        };
        let mut programs = vec![Program::new(); p];
        for &(j, kind) in &phases {
            for (rank, table) in grid.phase_tables(j, kind, k) {
                wavefront(&mut programs[rank as usize], &mut [table], k, lanes);
            }
        }
        let owned = (0..p).map(|r| grid.shard(r, m, k)).collect();
        return (p * k, owned, programs);
    }

    // All-reduce: the node's dim runs by recursive halving where it can (see
    // `all_reduce_stage_dims`), so the grid is over the stage dims.
    let dims = &all_reduce_stage_dims(dims);
    let m = dims.len();
    let mut phases: Vec<(usize, RingKind)> =
        (0..m - 1).map(|j| (j, RingKind::ReduceScatter)).collect();
    phases.push((m - 1, RingKind::AllReduce));
    phases.extend((0..m - 1).rev().map(|j| (j, RingKind::AllGather)));
    let grid = Grid::new(dims);

    // Chunk `c` is the whole algorithm on blocks `c * p..(c + 1) * p`, and the dims
    // are chained stage after stage in one table, so the wavefront runs chunk `c` in dim `j + 1`
    // while chunk `c + 1` is still in dim `j`: every tier's links work at once (DDL's point),
    // and the inner dims' time hides behind the slowest tier instead of adding to it.
    let mut tables = vec![StageTable::new(); p];
    let mut offset = 0;
    for &(j, kind) in &phases {
        let mut len = 0;
        for (rank, table) in grid.phase_tables(j, kind, 1) {
            len = len.max(table.stages());
            tables[rank as usize].append_shifted(table, offset);
        }
        offset += len;
    }
    let programs = tables
        .into_iter()
        .map(|table| {
            let mut program = Program::new();
            wavefront_with(&mut program, &mut [table], k, lanes, |b, c| {
                Blocks::new(b.start + (c * p) as u32, b.len)
            });
            program
        })
        .collect();
    (p * k, Vec::new(), programs)
}

/// The dims the all-reduce's phases run over: `dims`, except that a first dim (the ranks of
/// one node) of `2^m >= 4` ranks, below at least one more tier, becomes `m` dims of 2: a
/// reduce-scatter by recursive halving (partners `1, 2, 4...` apart, so the largest exchange
/// is between the nearest ranks) and an all-gather by doubling. That moves the same bytes out
/// of each rank as the ring, `(d - 1)/d` of the data, in `log2 d` hops instead of `d - 1`.
/// The node's tier is the fast one and the pipeline's steady state is set by the network, so
/// what the node's phases cost is the pipeline's fill and drain, one hop latency each: on DDL's
/// cluster at 16 MiB this takes `hier:4x16x4` from 0.981 to 0.988 of the ring, `4x8x8` from
/// 0.990 to 0.995 (`bench/results/simulator.md`, section 9). Outer dims keep their rings:
/// halving there makes the network's per-step messages unequal (half the shard, then a
/// quarter...), and the largest one sets every step (4x2x2x2x2x4: 0.95 of the ring).
pub(crate) fn all_reduce_stage_dims(dims: &[usize]) -> Vec<usize> {
    let tiers = dims.iter().filter(|&&d| d > 1).count();
    match dims.iter().position(|&d| d > 1) {
        Some(j) if tiers >= 2 && dims[j] >= 4 && dims[j].is_power_of_two() => {
            let mut out = dims[..j].to_vec();
            out.extend(std::iter::repeat_n(2, dims[j].trailing_zeros() as usize));
            out.extend_from_slice(&dims[j + 1..]);
            out
        }
        _ => dims.to_vec(),
    }
}

/// Stages of one chunk's trip through the all-reduce's phases on `dims` (the wavefront's
/// depth): `d` for each reduce-scatter and each all-gather ring, `2d - 1` for the last dim's
/// all-reduce, over the stage dims.
pub(crate) fn all_reduce_stages(dims: &[usize]) -> usize {
    let dims = all_reduce_stage_dims(dims);
    let m = dims.len();
    dims.iter()
        .enumerate()
        .filter(|&(_, &d)| d > 1)
        .map(|(j, &d)| if j + 1 == m { 2 * d - 1 } else { 2 * d })
        .sum()
}

/// Ranks as mixed-radix coordinates over the dims, and the shards they hold between phases.
struct Grid<'a> {
    dims: &'a [usize],
    /// Ranks: the product of the dims.
    p: usize,
    /// `stride[j]`: rank distance between neighbours along dim `j`.
    stride: Vec<usize>,
    /// `width[j]`: groups in a shard after reduce-scattering dims `0..=j` (`width[m-1] = 1`).
    width: Vec<usize>,
}

impl<'a> Grid<'a> {
    fn new(dims: &'a [usize]) -> Self {
        let p: usize = dims.iter().product();
        let m = dims.len();
        let mut stride = vec![1; m];
        let mut width = vec![p / dims[0]; m];
        for j in 1..m {
            stride[j] = stride[j - 1] * dims[j - 1];
            width[j] = width[j - 1] / dims[j];
        }
        Self {
            dims,
            p,
            stride,
            width,
        }
    }

    fn coord(&self, r: usize, j: usize) -> usize {
        (r / self.stride[j]) % self.dims[j]
    }

    /// The shard rank `r` holds after reduce-scattering dims `0..j` (`j = 0`: the whole
    /// buffer), with `k` blocks per group.
    fn shard(&self, r: usize, j: usize, k: usize) -> Blocks {
        let start: usize = (0..j).map(|i| self.coord(r, i) * self.width[i]).sum();
        let len = if j == 0 { self.p } else { self.width[j - 1] };
        Blocks::new((start * k) as u32, (len * k) as u32)
    }

    /// Every rank's stage table for phase `kind` along dim `j`: one ring per set of ranks that
    /// differ only in coordinate `j`, its segments the `d` parts of the shard they share.
    fn phase_tables(
        &self,
        j: usize,
        kind: RingKind,
        k: usize,
    ) -> impl Iterator<Item = (Rank, StageTable)> + '_ {
        let d = self.dims[j];
        (0..self.p)
            .filter(move |&r| d > 1 && self.coord(r, j) == 0)
            .flat_map(move |r0| {
                let members: Vec<Rank> =
                    (0..d).map(|x| (r0 + x * self.stride[j]) as Rank).collect();
                let whole = self.shard(r0, j, k);
                let part = whole.len / d as u32;
                let segs: Vec<Blocks> = (0..d as u32)
                    .map(|x| Blocks::new(whole.start + x * part, part))
                    .collect();
                (0..d).map(move |i| (members[i], ring_table(kind, &members, &segs, i)))
            })
    }
}
