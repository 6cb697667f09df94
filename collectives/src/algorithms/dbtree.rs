//! Double binary tree (NCCL 2.4; Sanders, Speck & Träff 2009): two complementary binary trees,
//! each reducing and broadcasting half of the data, pipelined. A rank is a leaf in one tree and
//! interior in the other, so every rank sends and receives about the same amount, and the
//! latency is logarithmic while the bandwidth term approaches the ring's at large messages.

use super::tree::{double_binary_trees, emit_all_reduce};
use super::{wavefront_all, Built, StageTable};
use crate::schedule::Blocks;

/// All-reduce only: tree `t` carries blocks `t * k..(t + 1) * k`.
pub(super) fn build(p: usize, k: usize, lanes: usize) -> Built {
    let trees = double_binary_trees(p);
    let mut tables = vec![vec![StageTable::new(); 2]; p];
    for (t, tree) in trees.iter().enumerate() {
        let seg = Blocks::new((t * k) as u32, k as u32);
        let mut lane: Vec<StageTable> = vec![StageTable::new(); p];
        emit_all_reduce(tree, seg, &mut lane);
        for (rank, table) in lane.into_iter().enumerate() {
            tables[rank][t] = table;
        }
    }
    (2 * k, Vec::new(), wavefront_all(tables, k, lanes))
}
