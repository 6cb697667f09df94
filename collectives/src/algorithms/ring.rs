//! Ring: the bandwidth-optimal algorithm (Patarasuk & Yuan 2009).
//!
//! All-reduce is a reduce-scatter followed by an all-gather around one ring; with the fused ops
//! it reads like NCCL's device loop: `send`, `d - 2` x `recvReduceSend`, one `recvReduceSend`
//! that completes my segment and starts the all-gather with it, `d - 2` x `recvCopySend`, `recv`.
//! Broadcast and reduce are pipelined chains (a tree with one child per rank).

use super::tree::{emit_broadcast, emit_reduce, Tree};
use super::{owned_in_rank_order, put, wavefront, wavefront_all, Built, StageTable};
use crate::schedule::{Blocks, Collective, Op, Program, Rank};

/// Which part of the ring a phase runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingKind {
    ReduceScatter,
    AllGather,
    AllReduce,
}

/// Member `i`'s stage table of one ring phase among `members` (in ring order), for one chunk:
/// `segs[x]` is the segment member `x` owns at the end of a reduce-scatter (and at the start of
/// an all-gather). Built per member, since all tables of a 4096-rank ring at once are gigabytes.
pub(crate) fn ring_table(
    kind: RingKind,
    members: &[Rank],
    segs: &[Blocks],
    i: usize,
) -> StageTable {
    let d = members.len();
    let mut t = StageTable::new();
    if d < 2 {
        return t;
    }
    let table = &mut t;
    let next = members[(i + 1) % d];
    let prev = members[(i + d - 1) % d];
    // Segment `i - x` (mod d): the one I send or receive at a given stage.
    let seg = |x: usize| segs[(i + d * 2 - x % d) % d];
    let rs = matches!(kind, RingKind::ReduceScatter | RingKind::AllReduce);
    if rs {
        // Stage j sends segment i - j - 1; stage j >= 1 receives it, reduced, from prev.
        put(
            table,
            0,
            Op::Send {
                to: next,
                blocks: seg(1),
            },
        );
        for j in 1..d - 1 {
            let blocks = seg(j + 1);
            put(
                table,
                j,
                Op::RecvReduceSend {
                    from: prev,
                    to: next,
                    blocks,
                },
            );
        }
        // Stage d - 1 completes my own segment; in an all-reduce it also starts the gather.
        let blocks = seg(0);
        let last = if kind == RingKind::AllReduce {
            Op::RecvReduceSend {
                from: prev,
                to: next,
                blocks,
            }
        } else {
            Op::RecvReduce { from: prev, blocks }
        };
        put(table, d - 1, last);
    }
    // The all-gather: stage `base + j` receives segment i - j (which prev finished or got
    // one stage earlier) and forwards it, except the last one.
    let base = match kind {
        RingKind::ReduceScatter => return t,
        RingKind::AllReduce => d - 1,
        RingKind::AllGather => {
            put(
                table,
                0,
                Op::Send {
                    to: next,
                    blocks: seg(0),
                },
            );
            0
        }
    };
    for j in 1..d - 1 {
        put(
            table,
            base + j,
            Op::RecvCopySend {
                from: prev,
                to: next,
                blocks: seg(j),
            },
        );
    }
    put(
        table,
        base + d - 1,
        Op::Recv {
            from: prev,
            blocks: seg(d - 1),
        },
    );
    t
}

pub(super) fn build(collective: Collective, p: usize, k: usize, lanes: usize) -> Built {
    let kind = match collective {
        Collective::AllReduce => RingKind::AllReduce,
        Collective::ReduceScatter => RingKind::ReduceScatter,
        Collective::AllGather => RingKind::AllGather,
        // A chain (`Algorithm::supports` keeps gather and scatter away).
        Collective::Broadcast { root }
        | Collective::Reduce { root }
        | Collective::Gather { root }
        | Collective::Scatter { root } => {
            let chain = Tree::chain(p, root as usize);
            let seg = Blocks::new(0, k as u32);
            let mut tables = vec![StageTable::new(); p];
            if matches!(collective, Collective::Broadcast { .. }) {
                emit_broadcast(&chain, seg, &mut tables, 0, false);
            } else {
                emit_reduce(&chain, seg, &mut tables, false);
            }
            let tables = tables.into_iter().map(|t| vec![t]).collect();
            return (k, Vec::new(), wavefront_all(tables, k, lanes));
        }
        Collective::AllToAll => return super::direct::pairwise_all_to_all(p, k),
    };
    let members: Vec<Rank> = (0..p as Rank).collect();
    let segs: Vec<Blocks> = owned_in_rank_order(p, k);
    let programs = (0..p)
        .map(|i| {
            let mut program = Program::new();
            wavefront(
                &mut program,
                &mut [ring_table(kind, &members, &segs, i)],
                k,
                lanes,
            );
            program
        })
        .collect();
    let owned = if kind == RingKind::AllReduce {
        Vec::new()
    } else {
        segs
    };
    (p * k, owned, programs)
}
