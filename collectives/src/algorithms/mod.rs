//! The algorithms, each a function from (collective, ranks, pipeline) to a [`Schedule`].
//!
//! Every algorithm is written the same way: for one chunk of the data it says which ops each rank
//! runs at each *stage* (a message sent at stage `s` is received at stage `s + 1`), and
//! `wavefront` lays `pipeline` chunks over those stages so that chunk `c` runs stage `s` at step
//! `s + c`. That one rule pipelines chains and trees (a rank forwards chunk `c` while it receives
//! chunk `c + 1`), and it keeps the per-pair message order identical on both ends, which the
//! schedule's FIFO matching needs. Recursive halving-doubling does not pipeline (its messages
//! halve each step) and builds its programs directly.
//!
//! | name     | all-reduce | reduce-scatter | all-gather | broadcast | reduce | gather, scatter | all-to-all |
//! |----------|------------|----------------|------------|-----------|--------|-----------------|------------|
//! | `ring`   | yes        | yes            | yes        | chain     | chain  |                 | pairwise   |
//! | `rhd`    | yes        | yes            | yes        |           |        |                 |            |
//! | `tree`   | yes        |                |            | yes       | yes    | binomial        |            |
//! | `dbtree` | yes        |                |            |           |        |                 |            |
//! | `hier`   | yes        | yes            | yes        |           |        |                 |            |
//! | `direct` |            |                | yes        |           |        | yes             | yes        |
//!
//! Uneven collectives (`all_gather_v`, `reduce_scatter_v`, `gather_v`, `scatter_v`,
//! `all_to_all_v`) run these same schedules: a schedule's blocks are symbolic, and the call
//! says where each block lies in its buffers ([`crate::schedule::BlockLayout`]).
//!
//! `ALGORITHMS.md` (next to this crate's `Cargo.toml`) gives each algorithm's steps, bytes on the
//! wire and cost; [`crate::tuner`] holds the same formulas as code.
//!
//! ```
//! use oxccl_collectives::algorithms::Algorithm;
//! use oxccl_collectives::schedule::Collective;
//! use oxccl_collectives::verify::verify;
//!
//! let ring: Algorithm = "ring".parse()?;
//! let schedule = ring.schedule(Collective::AllReduce, 4, 2)?;
//! let report = verify(&schedule)?;
//! // 2 (p - 1) segments of p x 2 blocks: the bandwidth-optimal 2 (p - 1) / p of the buffer.
//! assert_eq!(schedule.blocks, 8);
//! assert_eq!(report.max_blocks_sent(), 12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dbtree;
mod direct;
mod gather;
mod hier;
/// Stages of one chunk's trip through `hier`'s all-reduce: the pipeline's depth (the tuner's
/// lanes rule).
pub(crate) use hier::all_reduce_stages as hier_all_reduce_stages;
mod rhd;
mod ring;
mod tree;

use crate::schedule::{Blocks, Collective, Lane, Op, Program, Rank, Schedule};
use std::fmt;
use std::str::FromStr;

pub use tree::{all_reduce_shape, binomial_tree, double_binary_trees, Tree};

/// A collective algorithm, as the user names it (`OXCCL_ALGO`, `--algo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ring: reduce-scatter then all-gather around one ring; a pipelined chain for broadcast
    /// and reduce.
    Ring,
    /// Recursive halving-doubling (Rabenseifner), any rank count.
    Rhd,
    /// Binomial tree, pipelined.
    Tree,
    /// Double binary tree (two complementary trees, each carrying half the data), pipelined.
    DoubleBinaryTree,
    /// Hierarchical multi-dimensional ring (DDL/BlueConnect), dims fastest-varying first. Empty
    /// dims (`hier` alone) mean "take them from the topology", which the communicator resolves
    /// before asking for a schedule.
    Hierarchical(Vec<usize>),
    /// Every message straight from the rank that has the data to the rank that needs it, all
    /// at once: gather, scatter, all-gather, all-to-all.
    Direct,
}

/// Why an algorithm cannot produce a schedule, or a name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    #[error("algorithm `{algorithm}` does not implement {collective:?}")]
    Unsupported {
        algorithm: String,
        collective: Collective,
    },
    #[error("algorithm `{algorithm}`: {ranks} ranks is not valid ({reason})")]
    BadRanks {
        algorithm: String,
        ranks: usize,
        reason: String,
    },
    #[error("pipeline must be at least 1 chunk (got {0})")]
    BadPipeline(usize),
    #[error(
        "{lanes} lanes is not valid for {collective:?} (1 to {max} lanes; more than one only \
         for all-reduce, broadcast and reduce, whose blocks have no owners)",
        max = crate::schedule::MAX_LANES
    )]
    BadLanes {
        lanes: usize,
        collective: Collective,
    },
    #[error("root {root} is not a rank of a {ranks}-rank schedule")]
    BadRoot { root: Rank, ranks: usize },
    #[error(
        "hierarchical dims {dims:?} do not fit {ranks} ranks (their product must equal the rank count; \
         `hier` without dims must be resolved from the topology first)"
    )]
    BadDims { dims: Vec<usize>, ranks: usize },
    #[error(
        "unknown algorithm `{0}` (expected ring, rhd, tree, dbtree, direct, hier or hier:AxBxC)"
    )]
    Parse(String),
}

impl Algorithm {
    /// Every algorithm, with `hier` given the dims `dims` (skipped when `None`).
    pub fn all(dims: Option<&[usize]>) -> Vec<Algorithm> {
        let mut all = vec![
            Algorithm::Ring,
            Algorithm::Rhd,
            Algorithm::Tree,
            Algorithm::DoubleBinaryTree,
        ];
        if let Some(d) = dims {
            all.push(Algorithm::Hierarchical(d.to_vec()));
        }
        all.push(Algorithm::Direct);
        all
    }

    /// Whether this algorithm implements `collective` (for every rank count).
    pub fn supports(&self, collective: Collective) -> bool {
        use Collective::*;
        match self {
            Algorithm::Ring => !matches!(collective, Gather { .. } | Scatter { .. }),
            Algorithm::Rhd | Algorithm::Hierarchical(_) => {
                matches!(collective, AllReduce | ReduceScatter | AllGather)
            }
            Algorithm::Tree => matches!(
                collective,
                AllReduce | Broadcast { .. } | Reduce { .. } | Gather { .. } | Scatter { .. }
            ),
            Algorithm::DoubleBinaryTree => matches!(collective, AllReduce),
            Algorithm::Direct => {
                matches!(
                    collective,
                    AllGather | Gather { .. } | Scatter { .. } | AllToAll
                )
            }
        }
    }

    /// The schedule of `collective` on `ranks` ranks, each block stream cut into `pipeline` chunks.
    pub fn schedule(
        &self,
        collective: Collective,
        ranks: usize,
        pipeline: usize,
    ) -> Result<Schedule, AlgorithmError> {
        self.schedule_lanes(collective, ranks, pipeline, 1)
    }

    /// [`Algorithm::schedule`] with the `pipeline` chunks dealt to `lanes` lanes (chunk `c` to
    /// lane `c % lanes`; see "Lanes" in [`crate::schedule`]): each lane's steps wait only for
    /// its own receives, so one lane's transfers fill the time another waits, and for `hier`
    /// the intra-node phase of one chunk overlaps the network phase of another across lanes
    /// as well as within a step. Blocks and messages are those of the one-lane schedule; only
    /// the steps are cut by lane. More lanes than chunks give one lane per chunk. Lanes apply
    /// to the pipelined all-reduce, broadcast and reduce (`rhd` does not pipeline and keeps
    /// one lane); reduce-scatter and all-gather, whose `hier` phases cut chunks differently,
    /// only take one.
    pub fn schedule_lanes(
        &self,
        collective: Collective,
        ranks: usize,
        pipeline: usize,
        lanes: usize,
    ) -> Result<Schedule, AlgorithmError> {
        let lanes_ok = matches!(
            collective,
            Collective::AllReduce | Collective::Broadcast { .. } | Collective::Reduce { .. }
        );
        if lanes == 0 || lanes > crate::schedule::MAX_LANES || (lanes > 1 && !lanes_ok) {
            return Err(AlgorithmError::BadLanes { lanes, collective });
        }
        if !self.supports(collective) {
            return Err(AlgorithmError::Unsupported {
                algorithm: self.to_string(),
                collective,
            });
        }
        if ranks == 0 || ranks > Rank::MAX as usize / 2 {
            return Err(AlgorithmError::BadRanks {
                algorithm: self.to_string(),
                ranks,
                reason: "need 1 to 2^31 ranks".into(),
            });
        }
        if pipeline == 0 || pipeline > u32::MAX as usize / ranks / 2 {
            return Err(AlgorithmError::BadPipeline(pipeline));
        }
        if let Some(root) = collective.root() {
            if root as usize >= ranks {
                return Err(AlgorithmError::BadRoot { root, ranks });
            }
        }
        if collective == Collective::AllToAll && ranks > (u32::MAX as usize / pipeline).isqrt() {
            return Err(AlgorithmError::BadRanks {
                algorithm: self.to_string(),
                ranks,
                reason: "an all-to-all of ranks^2 x pipeline blocks needs fewer than 2^32".into(),
            });
        }
        let (blocks, owned, programs) = match self {
            Algorithm::Ring => ring::build(collective, ranks, pipeline, lanes),
            Algorithm::Rhd => rhd::build(collective, ranks, pipeline),
            Algorithm::Tree
                if matches!(
                    collective,
                    Collective::Gather { .. } | Collective::Scatter { .. }
                ) =>
            {
                gather::build(collective, ranks, pipeline)
            }
            Algorithm::Tree => tree::build(collective, ranks, pipeline, lanes),
            Algorithm::Direct => direct::build(collective, ranks, pipeline),
            Algorithm::DoubleBinaryTree => dbtree::build(ranks, pipeline, lanes),
            Algorithm::Hierarchical(dims) => {
                if !dims_fit(dims, ranks) {
                    return Err(AlgorithmError::BadDims {
                        dims: dims.clone(),
                        ranks,
                    });
                }
                hier::build(collective, dims, pipeline, lanes)
            }
        };
        Ok(Schedule {
            algorithm: self.to_string(),
            collective,
            ranks,
            blocks,
            owned,
            programs,
        })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Algorithm::Ring => f.write_str("ring"),
            Algorithm::Rhd => f.write_str("rhd"),
            Algorithm::Tree => f.write_str("tree"),
            Algorithm::DoubleBinaryTree => f.write_str("dbtree"),
            Algorithm::Direct => f.write_str("direct"),
            Algorithm::Hierarchical(dims) if dims.is_empty() => f.write_str("hier"),
            Algorithm::Hierarchical(dims) => {
                f.write_str("hier:")?;
                for (i, d) in dims.iter().enumerate() {
                    if i > 0 {
                        f.write_str("x")?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Algorithm {
    type Err = AlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        Ok(match name.as_str() {
            "ring" => Algorithm::Ring,
            "rhd" => Algorithm::Rhd,
            "tree" => Algorithm::Tree,
            "dbtree" => Algorithm::DoubleBinaryTree,
            "direct" => Algorithm::Direct,
            "hier" => Algorithm::Hierarchical(Vec::new()),
            _ => {
                let dims = name
                    .strip_prefix("hier:")
                    .ok_or_else(|| AlgorithmError::Parse(s.to_string()))?;
                let dims = dims
                    .split('x')
                    .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| AlgorithmError::Parse(s.to_string()))?;
                Algorithm::Hierarchical(dims)
            }
        })
    }
}

/// Whether `hier`'s all-reduce on `dims` runs its first (node) dim by recursive halving
/// instead of a ring (see `hier.rs`): its first message is then half a chunk, and it takes
/// `2 log2 d` hops there instead of `2 (d - 1)`.
pub(crate) fn hier_all_reduce_halves_first_dim(dims: &[usize]) -> bool {
    hier::all_reduce_stage_dims(dims).len() != dims.len()
}

/// Whether hierarchical `dims` are usable for `ranks` ranks: non-empty, and their product (which
/// must not overflow) is the rank count.
pub fn dims_fit(dims: &[usize], ranks: usize) -> bool {
    !dims.is_empty() && dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) == Some(ranks)
}

/// What every builder returns: block count, owned ranges (reduce-scatter, all-gather), programs.
type Built = (usize, Vec<Blocks>, Vec<Program>);

/// One rank's ops for one chunk, by stage. Op blocks name the whole segment (all chunks);
/// [`wavefront`] narrows them to one chunk. Stored sparse, as (stage, op) pairs in the order
/// added, because a chain rank acts at one stage of `p` and a 4096-rank schedule must stay small.
#[derive(Clone, Debug, Default)]
pub(crate) struct StageTable {
    ops: Vec<(usize, Op)>,
}

impl StageTable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// One past the last stage that has an op (0 when empty).
    pub(crate) fn stages(&self) -> usize {
        self.ops.iter().map(|e| e.0 + 1).max().unwrap_or(0)
    }

    /// Adds `other`'s ops, each `offset` stages later (chains phases into one table).
    pub(crate) fn append_shifted(&mut self, other: StageTable, offset: usize) {
        self.ops
            .extend(other.ops.into_iter().map(|(s, op)| (s + offset, op)));
    }

    /// The ops at `stage` (the table sorted by stage).
    fn at(&self, stage: usize) -> &[(usize, Op)] {
        let lo = self.ops.partition_point(|e| e.0 < stage);
        let hi = self.ops.partition_point(|e| e.0 <= stage);
        &self.ops[lo..hi]
    }
}

/// Adds `op` at `stage` of `table`.
pub(crate) fn put(table: &mut StageTable, stage: usize, op: Op) {
    table.ops.push((stage, op));
}

/// Chunk `c` of `k` of a segment (the segment's length is a multiple of `k`).
fn chunk(blocks: Blocks, c: usize, k: usize) -> Blocks {
    let len = blocks.len / k as u32;
    Blocks::new(blocks.start + c as u32 * len, len)
}

fn with_blocks(op: Op, blocks: Blocks) -> Op {
    match op {
        Op::Send { to, .. } => Op::Send { to, blocks },
        Op::Recv { from, .. } => Op::Recv { from, blocks },
        Op::RecvReduce { from, .. } => Op::RecvReduce { from, blocks },
        Op::RecvReduceSend { from, to, .. } => Op::RecvReduceSend { from, to, blocks },
        Op::RecvCopySend { from, to, .. } => Op::RecvCopySend { from, to, blocks },
        Op::Copy { from, to } => Op::Copy { from, to },
    }
}

/// Appends to `program` the steps of `streams` (stage tables of independent data streams, e.g.
/// the two trees of dbtree) pipelined over `k` chunks: step `t` runs, for each chunk `c` and each
/// stream, the ops of stage `t - c`. Chunks are listed last first (earliest stage first), so that
/// a chunk's plain sends come before the forwards of older chunks to the same peer: an executor
/// that posts plain sends when a step begins then keeps program order.
///
/// With `lanes > 1`, chunk `c` belongs to lane `c % lanes`, and step `t` becomes one step per
/// lane (lane 0 first), each holding its chunks' ops. A message sent at stage `t` is received
/// at `t + 1` (the stage tables' rule), so on every pair both ends order messages by (stage,
/// lane, chunk), and per-pair FIFO matching holds whatever the lanes.
pub(crate) fn wavefront(program: &mut Program, streams: &mut [StageTable], k: usize, lanes: usize) {
    wavefront_with(program, streams, k, lanes, |blocks, c| chunk(blocks, c, k));
}

/// [`wavefront`] with the chunk layout given by `narrow(blocks, c)`: the blocks chunk `c` of
/// an op that names `blocks` in the stage tables works on.
pub(crate) fn wavefront_with(
    program: &mut Program,
    streams: &mut [StageTable],
    k: usize,
    lanes: usize,
    narrow: impl Fn(Blocks, usize) -> Blocks,
) {
    let lanes = lanes.clamp(1, k.clamp(1, crate::schedule::MAX_LANES));
    for lane in streams.iter_mut() {
        // Stable: ops of one stage keep the order they were added in.
        lane.ops.sort_by_key(|e| e.0);
    }
    let first = streams
        .iter()
        .filter_map(|l| l.ops.first())
        .map(|e| e.0)
        .min();
    let last = streams
        .iter()
        .filter_map(|l| l.ops.last())
        .map(|e| e.0)
        .max();
    let (Some(first), Some(last)) = (first, last) else {
        return;
    };
    let total: usize = streams.iter().map(|l| l.ops.len()).sum();
    program.reserve(total * k, (last + k - first) * lanes);
    let mut ops = Vec::new();
    for t in first..last + k {
        for lane in 0..lanes {
            // Chunks of this lane whose stage t - c lies in first..=last, newest first.
            for c in (t.saturating_sub(last)..=(t - first).min(k - 1)).rev() {
                if c % lanes != lane {
                    continue;
                }
                for stream in streams.iter() {
                    ops.extend(
                        stream
                            .at(t - c)
                            .iter()
                            .map(|&(_, op)| with_blocks(op, narrow(op.blocks(), c))),
                    );
                }
            }
            push_ordered(program, &mut ops, lane as Lane);
        }
    }
}

/// Appends `ops` as one step, split where needed so that the fused ops of a step that forward
/// to one peer all receive from one peer, and no plain send to a peer follows a forward to it.
/// Receives from one peer complete in order, so any executor that posts plain sends when a step
/// begins and forwards when their receives complete then sends in program order. (dbtree needs
/// this where a rank forwards to the same peer in both trees.) An empty step is dropped: it
/// does nothing, and matching is per pair, not by step number.
fn push_ordered(program: &mut Program, ops: &mut Vec<Op>, lane: Lane) {
    // (destination, source) of the forwards in the step being built.
    let mut forwards: Vec<(Rank, Rank)> = Vec::new();
    let mut start = 0;
    for i in 0..ops.len() {
        let op = ops[i];
        let Some(to) = op.send_to() else { continue };
        let conflict = forwards
            .iter()
            .any(|&(t, f)| t == to && Some(f) != op.recv_from());
        if conflict {
            program.push_step_in(lane, ops[start..i].iter().copied());
            start = i;
            forwards.clear();
        }
        if let Some(from) = op.recv_from() {
            forwards.push((to, from));
        }
    }
    if start < ops.len() {
        program.push_step_in(lane, ops[start..].iter().copied());
    }
    ops.clear();
}

/// `ranks` programs, each the wavefront of that rank's streams.
pub(crate) fn wavefront_all(tables: Vec<Vec<StageTable>>, k: usize, lanes: usize) -> Vec<Program> {
    tables
        .into_iter()
        .map(|mut streams| {
            let mut p = Program::new();
            wavefront(&mut p, &mut streams, k, lanes);
            p
        })
        .collect()
}

/// `ranks` contiguous ranges of `per_rank` blocks each: rank `r` owns `r * per_rank..`.
pub(crate) fn owned_in_rank_order(ranks: usize, per_rank: usize) -> Vec<Blocks> {
    (0..ranks)
        .map(|r| Blocks::new((r * per_rank) as u32, per_rank as u32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "ring",
            "rhd",
            "tree",
            "dbtree",
            "direct",
            "hier",
            "hier:4x8x8",
            "hier:2x3",
        ] {
            let a: Algorithm = name.parse().unwrap();
            assert_eq!(a.to_string(), name);
        }
        assert_eq!(
            "HIER:4x2".parse::<Algorithm>().unwrap(),
            Algorithm::Hierarchical(vec![4, 2])
        );
        for bad in ["", "rings", "hier:", "hier:4x", "hier:0x2", "hier:ax2"] {
            assert!(matches!(
                bad.parse::<Algorithm>(),
                Err(AlgorithmError::Parse(_))
            ));
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let ar = Collective::AllReduce;
        assert!(matches!(
            Algorithm::Ring.schedule(ar, 0, 1),
            Err(AlgorithmError::BadRanks { .. })
        ));
        assert!(matches!(
            Algorithm::Ring.schedule(ar, 4, 0),
            Err(AlgorithmError::BadPipeline(0))
        ));
        assert!(matches!(
            Algorithm::Tree.schedule(Collective::Broadcast { root: 4 }, 4, 1),
            Err(AlgorithmError::BadRoot { root: 4, ranks: 4 })
        ));
        assert!(matches!(
            Algorithm::DoubleBinaryTree.schedule(Collective::AllGather, 4, 1),
            Err(AlgorithmError::Unsupported { .. })
        ));
        assert!(matches!(
            Algorithm::Hierarchical(vec![2, 3]).schedule(ar, 7, 1),
            Err(AlgorithmError::BadDims { .. })
        ));
        assert!(matches!(
            Algorithm::Hierarchical(vec![]).schedule(ar, 4, 1),
            Err(AlgorithmError::BadDims { .. })
        ));
        // A product that overflows is an error, not a panic.
        let huge: Algorithm = "hier:4294967296x4294967296x16".parse().unwrap();
        assert!(matches!(
            huge.schedule(ar, 16, 1),
            Err(AlgorithmError::BadDims { .. })
        ));
    }

    #[test]
    fn wavefront_offsets_chunks_by_one_step() {
        let seg = Blocks::new(0, 2);
        let mut table = StageTable::new();
        put(
            &mut table,
            1,
            Op::Recv {
                from: 1,
                blocks: seg,
            },
        );
        put(&mut table, 0, Op::Send { to: 1, blocks: seg });
        let mut p = Program::new();
        wavefront(&mut p, &mut [table], 2, 1);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.step(1),
            &[
                Op::Send {
                    to: 1,
                    blocks: Blocks::one(1)
                },
                Op::Recv {
                    from: 1,
                    blocks: Blocks::one(0)
                }
            ]
        );
    }
}
