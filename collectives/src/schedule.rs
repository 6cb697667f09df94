//! Algorithms as data.
//!
//! A [`Schedule`] says, for every rank, which blocks of the buffer it sends, receives and reduces,
//! step by step. The same value is checked by the verifier, run by the executor over real
//! transports, and run by the simulator over a network model, so an algorithm is written once.
//!
//! ## The model
//!
//! The collective's buffer (the whole vector for all-reduce, the `p x chunk` total for
//! reduce-scatter and all-gather) is cut into [`Schedule::blocks`] blocks of nearly equal size:
//! block `i` of `b` covers elements `[i * n / b, (i + 1) * n / b)` of an `n`-element buffer (see
//! [`block_elems`]), so a block may be empty when `n < b`. Every rank works on its own *work
//! buffer* of all `b` blocks; what it holds at the start and must hold at the end depends on the
//! [`Collective`] (each variant's documentation says).
//!
//! Each rank runs its [`Program`]: a list of steps in order. The [`Op`]s of one step run
//! concurrently: a step's sends read the work buffer as it was when the step began, its receives
//! write it when they complete, and no block may be both sent and received by plain ops of one
//! step. The fused ops ([`Op::RecvReduceSend`], [`Op::RecvCopySend`]) forward what they produced.
//! A step is finished when its receives are finished; its sends may still be in flight, and the
//! executor must not let a later step overwrite a block an in-flight send still reads.
//! Messages from one rank to another are matched in the order they were posted (per pair FIFO),
//! and that order is program order: the k-th message rank `a` sends to rank `b` (counting steps
//! in order, and a step's ops in the order listed) is taken by the k-th receive from `a` in
//! `b`'s program. So a plain send goes out when its step begins and a fused op's forward when
//! its receive is done, but neither overtakes an earlier op's message to the same peer. (The
//! built-in algorithms never list a plain send to a peer after a fused op to it in one step, and
//! the fused ops of a step that forward to one peer all receive from one peer; so posting a
//! step's plain sends when it begins and each forward when its receive completes keeps program
//! order by itself.) Within one step no block is written twice (receives, `Copy` targets), and
//! no block a plain send or `Copy` reads is written; the verifier ([`crate::verify`]) rejects
//! schedules that break this.
//!
//! ## Lanes
//!
//! A program's steps may belong to several *lanes* (NCCL's channels): independent streams of
//! steps on disjoint blocks, e.g. a pipeline's chunks dealt out to lanes in turn
//! ([`crate::algorithms::Algorithm::schedule_lanes`]). The steps of all lanes are still listed
//! in one order (the *issue order*), and that order is the program order above: per-pair messages are
//! matched in it, so the wire needs no lane tags. What lanes change is when a step may begin: a
//! step begins once every earlier step has begun and the earlier steps *of its own lane* have
//! finished, so a rank has up to one step of each lane in flight and one lane's sends go out
//! while another lane waits for its receives. A send still leaves in program order on its pair
//! (a forward that is not ready holds back the later messages to that peer). The blocks one
//! lane touches on a rank (sends, receives, copies) must be disjoint from every other lane's on
//! that rank; the verifier checks it. One lane (every step in lane 0) is the synchronous model.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A rank's index within the schedule (0..ranks). `u32` keeps [`Op`] at 20 bytes, which matters
/// when the simulator holds a 4096-rank ring (tens of millions of ops) in memory.
pub type Rank = u32;

/// A contiguous range of blocks, `start..start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Blocks {
    pub start: u32,
    pub len: u32,
}

impl Blocks {
    pub const fn new(start: u32, len: u32) -> Self {
        Self { start, len }
    }

    /// One block.
    pub const fn one(index: u32) -> Self {
        Self {
            start: index,
            len: 1,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }

    pub fn end(self) -> u32 {
        self.start + self.len
    }

    /// Element range these blocks cover in a buffer of `elems` elements cut into `blocks` blocks.
    pub fn elems(self, elems: usize, blocks: usize) -> Range<usize> {
        block_boundary(self.start as usize, elems, blocks)
            ..block_boundary(self.end() as usize, elems, blocks)
    }

    pub fn overlaps(self, other: Blocks) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

/// Elements covered by block `index` of a buffer of `elems` elements cut into `blocks` blocks.
pub fn block_elems(index: usize, elems: usize, blocks: usize) -> Range<usize> {
    block_boundary(index, elems, blocks)..block_boundary(index + 1, elems, blocks)
}

/// Where each block of a schedule lies in one call's buffer, in elements: the one description
/// of blocks that the executor reads.
///
/// Every layout is a list of *parts* of explicit sizes at explicit places, each cut into
/// `chunks` blocks of nearly equal size (block `q * chunks + j` is chunk `j` of part `q`). The
/// even layout of the model above is the one-part case: [`BlockLayout::even`]`(n, b)` is one
/// part of `n` elements cut into `b` blocks, so it gives exactly [`block_elems`]. Uneven
/// collectives (`all_gather_v`, `gather`, ...) give one part per rank with the rank's count
/// and displacement; parts may be empty and need not be in order or adjacent, but must not
/// overlap (the caller checks that).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// `(start, len)` of each part, in elements.
    parts: Vec<(usize, usize)>,
    chunks: usize,
}

impl BlockLayout {
    /// One part of `elems` elements at 0, cut into `blocks` blocks.
    pub fn even(elems: usize, blocks: usize) -> Self {
        Self {
            parts: vec![(0, elems)],
            chunks: blocks.max(1),
        }
    }

    /// Parts `(start, len)` in block order, each cut into `chunks` blocks.
    pub fn parts(parts: impl IntoIterator<Item = (usize, usize)>, chunks: usize) -> Self {
        Self {
            parts: parts.into_iter().collect(),
            chunks: chunks.max(1),
        }
    }

    /// How many blocks the layout describes.
    pub fn blocks(&self) -> usize {
        self.parts.len() * self.chunks
    }

    /// The elements of block `index`.
    pub fn block(&self, index: usize) -> Range<usize> {
        let (start, len) = self.parts[index / self.chunks];
        let r = block_elems(index % self.chunks, len, self.chunks);
        start + r.start..start + r.end
    }

    /// Elements `blocks` cover in all (the size of a message that carries them).
    pub fn len(&self, blocks: Blocks) -> usize {
        blocks.range().map(|i| self.block(i).len()).sum()
    }

    /// The element ranges of `blocks` as maximal contiguous runs, in block order, skipping
    /// empty blocks.
    pub fn runs(&self, blocks: Blocks) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut i = blocks.start as usize;
        let end = blocks.end() as usize;
        std::iter::from_fn(move || {
            while i < end && self.block(i).is_empty() {
                i += 1;
            }
            if i >= end {
                return None;
            }
            let mut run = self.block(i);
            i += 1;
            while i < end {
                let next = self.block(i);
                if next.is_empty() {
                    i += 1;
                } else if next.start == run.end {
                    run.end = next.end;
                    i += 1;
                } else {
                    break;
                }
            }
            Some(run)
        })
    }
}

/// First element of block `index` (or `elems` for `index == blocks`).
fn block_boundary(index: usize, elems: usize, blocks: usize) -> usize {
    ((index as u128 * elems as u128) / blocks.max(1) as u128) as usize
}

/// One operation of a step. Peers are ranks of the same schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Send my current value of `blocks` to `to`.
    Send { to: Rank, blocks: Blocks },
    /// Receive `blocks` from `from`, overwriting mine.
    Recv { from: Rank, blocks: Blocks },
    /// Receive `blocks` from `from` and reduce them into mine.
    RecvReduce { from: Rank, blocks: Blocks },
    /// Receive `blocks` from `from`, reduce them into mine, and send the result to `to`.
    RecvReduceSend {
        from: Rank,
        to: Rank,
        blocks: Blocks,
    },
    /// Receive `blocks` from `from`, keep them, and forward them to `to`.
    RecvCopySend {
        from: Rank,
        to: Rank,
        blocks: Blocks,
    },
    /// Copy my blocks `from` onto my blocks `to` (same length, no overlap).
    Copy { from: Blocks, to: Blocks },
}

impl Op {
    /// The peer this op receives from, if any.
    pub fn recv_from(&self) -> Option<Rank> {
        match *self {
            Op::Recv { from, .. }
            | Op::RecvReduce { from, .. }
            | Op::RecvReduceSend { from, .. }
            | Op::RecvCopySend { from, .. } => Some(from),
            Op::Send { .. } | Op::Copy { .. } => None,
        }
    }

    /// The peer this op sends to, if any.
    pub fn send_to(&self) -> Option<Rank> {
        match *self {
            Op::Send { to, .. } | Op::RecvReduceSend { to, .. } | Op::RecvCopySend { to, .. } => {
                Some(to)
            }
            Op::Recv { .. } | Op::RecvReduce { .. } | Op::Copy { .. } => None,
        }
    }

    /// The blocks this op moves (for `Copy`, the destination).
    pub fn blocks(&self) -> Blocks {
        match *self {
            Op::Send { blocks, .. }
            | Op::Recv { blocks, .. }
            | Op::RecvReduce { blocks, .. }
            | Op::RecvReduceSend { blocks, .. }
            | Op::RecvCopySend { blocks, .. } => blocks,
            Op::Copy { to, .. } => to,
        }
    }

    /// Whether the received data is reduced (rather than copied) into the work buffer.
    pub fn reduces(&self) -> bool {
        matches!(self, Op::RecvReduce { .. } | Op::RecvReduceSend { .. })
    }
}

/// One rank's steps, in order. Stored flat (all ops in one vector, plus where each step starts)
/// because schedules at thousands of ranks hold tens of millions of ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    ops: Vec<Op>,
    /// `ops[step_starts[i]..step_starts[i + 1]]` is step `i`; the last step ends at `ops.len()`.
    step_starts: Vec<u32>,
    /// The lane of each step; empty while every step is in lane 0 (the common case costs
    /// nothing at thousands of ranks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    step_lanes: Vec<Lane>,
}

/// A lane's index within a program (see "Lanes" above).
pub type Lane = u8;

/// The most lanes a schedule may have.
pub const MAX_LANES: usize = 16;

impl Program {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `ops` more ops in `steps` more steps (builders of large schedules).
    pub fn reserve(&mut self, ops: usize, steps: usize) {
        self.ops.reserve(ops);
        self.step_starts.reserve(steps);
    }

    /// Appends a step whose ops run concurrently. An empty step is kept (it does nothing).
    pub fn push_step(&mut self, ops: impl IntoIterator<Item = Op>) {
        self.push_step_in(0, ops);
    }

    /// Appends a step of lane `lane`.
    pub fn push_step_in(&mut self, lane: Lane, ops: impl IntoIterator<Item = Op>) {
        if lane != 0 && self.step_lanes.is_empty() {
            self.step_lanes = vec![0; self.step_starts.len()];
        }
        if !self.step_lanes.is_empty() {
            self.step_lanes.push(lane);
        }
        self.step_starts.push(self.ops.len() as u32);
        self.ops.extend(ops);
    }

    /// The lane of step `index`.
    pub fn lane(&self, index: usize) -> Lane {
        self.step_lanes.get(index).copied().unwrap_or(0)
    }

    /// One more than the highest lane a step is in (1 for a synchronous program).
    pub fn lanes(&self) -> usize {
        self.step_lanes.iter().max().map_or(1, |&l| l as usize + 1)
    }

    /// The flat index of step `index`'s first op.
    pub fn step_start(&self, index: usize) -> usize {
        self.step_starts[index] as usize
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.step_starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.step_starts.is_empty()
    }

    /// The ops of step `index`.
    pub fn step(&self, index: usize) -> &[Op] {
        let start = self.step_starts[index] as usize;
        let end = self
            .step_starts
            .get(index + 1)
            .map_or(self.ops.len(), |&e| e as usize);
        &self.ops[start..end]
    }

    /// The steps in order, each as the slice of its ops.
    pub fn steps(&self) -> impl ExactSizeIterator<Item = &[Op]> + '_ {
        (0..self.len()).map(move |i| self.step(i))
    }

    /// Every op of every step, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
}

/// Which collective a schedule implements; decides the initial and required block contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Collective {
    /// Every rank starts with its contribution in every block and ends with the reduction of
    /// all ranks' contributions in every block.
    AllReduce,
    /// Every rank starts with its contribution in every block; rank `r` must end with the full
    /// reduction in the blocks [`Schedule::owned`] gives it.
    ReduceScatter,
    /// Rank `r` starts with its own blocks ([`Schedule::owned`]) only; every rank ends with every
    /// block, each holding its owner's data.
    AllGather,
    /// `root` starts with every block; every rank ends with root's data in every block.
    Broadcast { root: Rank },
    /// Every rank starts with its contribution in every block; `root` must end with the full
    /// reduction in every block.
    Reduce { root: Rank },
    /// Rank `r` starts with its own blocks ([`Schedule::owned`]) only; `root` ends with every
    /// block, each holding its owner's data.
    Gather { root: Rank },
    /// `root` starts with every block; rank `r` ends with root's data in its own blocks
    /// ([`Schedule::owned`]).
    Scatter { root: Rank },
    /// `ranks x ranks` blocks: block `s * ranks + d` is what rank `s` sends rank `d`. Rank `r`
    /// starts with row `r` (blocks `r * ranks..(r + 1) * ranks`) and must end with column `r`
    /// (blocks `s * ranks + r`, each holding rank `s`'s data).
    AllToAll,
}

impl Collective {
    /// The root of a rooted collective.
    pub fn root(self) -> Option<Rank> {
        match self {
            Collective::Broadcast { root }
            | Collective::Reduce { root }
            | Collective::Gather { root }
            | Collective::Scatter { root } => Some(root),
            _ => None,
        }
    }

    /// Whether the schedule gives every rank its own blocks ([`Schedule::owned`]).
    pub fn has_owners(self) -> bool {
        matches!(
            self,
            Collective::ReduceScatter
                | Collective::AllGather
                | Collective::Gather { .. }
                | Collective::Scatter { .. }
        )
    }

    /// Whether the collective reduces (rather than only moves) data.
    pub fn reduces(self) -> bool {
        matches!(
            self,
            Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce { .. }
        )
    }
}

/// A complete algorithm for one collective on `ranks` ranks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Algorithm name as the user selects it (`ring`, `rhd`, `tree`, `dbtree`, `hier:4x8x8`).
    pub algorithm: String,
    pub collective: Collective,
    pub ranks: usize,
    /// Number of blocks the buffer is cut into.
    pub blocks: usize,
    /// For reduce-scatter, all-gather, gather and scatter: the blocks rank `r` owns (its
    /// output, or its input). Empty for the other collectives.
    pub owned: Vec<Blocks>,
    /// One program per rank.
    pub programs: Vec<Program>,
}

impl Schedule {
    /// The blocks rank `rank` owns, for reduce-scatter and all-gather.
    pub fn owned(&self, rank: Rank) -> Option<Blocks> {
        self.owned.get(rank as usize).copied()
    }

    /// The longest program, in steps.
    pub fn depth(&self) -> usize {
        self.programs.iter().map(Program::len).max().unwrap_or(0)
    }

    /// How many lanes the programs use (1: synchronous steps).
    pub fn lanes(&self) -> usize {
        self.programs.iter().map(Program::lanes).max().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_split_elements_evenly_and_cover_the_buffer() {
        for (elems, blocks) in [(0, 3), (1, 4), (7, 3), (100, 7), (1 << 20, 256)] {
            let mut next = 0;
            for b in 0..blocks {
                let r = block_elems(b, elems, blocks);
                assert_eq!(r.start, next);
                assert!(r.len() <= elems / blocks + 1);
                next = r.end;
            }
            assert_eq!(next, elems);
            assert_eq!(Blocks::new(0, blocks as u32).elems(elems, blocks), 0..elems);
        }
    }

    #[test]
    fn layouts_describe_even_and_uneven_blocks_one_way() {
        for (elems, blocks) in [(0, 3), (7, 3), (100, 7)] {
            let even = BlockLayout::even(elems, blocks);
            assert_eq!(even.blocks(), blocks);
            for b in 0..blocks {
                assert_eq!(even.block(b), block_elems(b, elems, blocks));
            }
            let all = Blocks::new(0, blocks as u32);
            assert_eq!(even.len(all), elems);
            assert_eq!(
                even.runs(all).collect::<Vec<_>>().len(),
                usize::from(elems > 0)
            );
        }
        // Counts 3, 0, 5 at displacements 10, 0, 0, two chunks each.
        let l = BlockLayout::parts([(10, 3), (0, 0), (0, 5)], 2);
        assert_eq!(l.blocks(), 6);
        assert_eq!(l.block(0), 10..11);
        assert_eq!(l.block(1), 11..13);
        assert!(l.block(2).is_empty() && l.block(3).is_empty());
        assert_eq!(l.block(5), 2..5);
        assert_eq!(l.len(Blocks::new(0, 6)), 8);
        let runs: Vec<_> = l.runs(Blocks::new(0, 6)).collect();
        assert_eq!(runs, vec![10..13, 0..5]);
    }

    #[test]
    fn program_keeps_step_boundaries() {
        let mut p = Program::new();
        p.push_step([Op::Send {
            to: 1,
            blocks: Blocks::one(0),
        }]);
        p.push_step([]);
        p.push_step([
            Op::Recv {
                from: 1,
                blocks: Blocks::one(1),
            },
            Op::Send {
                to: 1,
                blocks: Blocks::one(0),
            },
        ]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.step(0).len(), 1);
        assert!(p.step(1).is_empty());
        assert_eq!(p.step(2).len(), 2);
        assert_eq!(std::mem::size_of::<Op>(), 20);
    }
}
