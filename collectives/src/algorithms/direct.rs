//! Direct exchanges: every message goes straight from the rank that has the data to the rank
//! that needs it, in one step (`direct`), or in `p - 1` pairwise shifts (`ring`'s all-to-all).
//!
//! * Gather: every rank sends its part to the root, which receives all of them at once.
//! * Scatter: the root sends every rank its part at once.
//! * All-gather: every rank sends its part to every other rank, and receives theirs, at once.
//! * All-to-all: every rank sends block `(r, q)` to each `q` and receives `(q, r)`, at once;
//!   the pairwise form (`ring`) runs `p - 1` steps, step `s` sending to `r + s` and receiving
//!   from `r - s`, so that each rank has one message in flight each way, as MPI's pairwise
//!   exchange does.
//!
//! Peers are visited from `r + 1` upwards, so that not every rank talks to rank 0 first.
//! Pipelining buys nothing here (one hop per message): `k` only refines the block grid, each
//! rank's part (each `(s, d)` pair of the all-to-all) being `k` consecutive blocks.

use super::{owned_in_rank_order, Built};
use crate::schedule::{Blocks, Collective, Op, Program, Rank};

/// The `k` blocks of part `i`.
fn part(i: usize, k: usize) -> Blocks {
    Blocks::new((i * k) as u32, k as u32)
}

/// Peers of `r` in the order it visits them: `r + 1`, `r + 2`, ... (mod `p`).
fn others(r: usize, p: usize) -> impl Iterator<Item = usize> {
    (1..p).map(move |s| (r + s) % p)
}

/// Appends `ops` as one step, unless there are none (one rank has nothing to do).
fn push(prog: &mut Program, ops: impl IntoIterator<Item = Op>) {
    let ops: Vec<Op> = ops.into_iter().collect();
    if !ops.is_empty() {
        prog.push_step(ops);
    }
}

pub(super) fn build(collective: Collective, p: usize, k: usize) -> Built {
    let mut programs = vec![Program::new(); p];
    match collective {
        Collective::Gather { root } => {
            let root = root as usize;
            for (r, prog) in programs.iter_mut().enumerate() {
                if r == root {
                    push(
                        prog,
                        others(r, p).map(|q| Op::Recv {
                            from: q as Rank,
                            blocks: part(q, k),
                        }),
                    );
                } else {
                    prog.push_step([Op::Send {
                        to: root as Rank,
                        blocks: part(r, k),
                    }]);
                }
            }
        }
        Collective::Scatter { root } => {
            let root = root as usize;
            for (r, prog) in programs.iter_mut().enumerate() {
                if r == root {
                    push(
                        prog,
                        others(r, p).map(|q| Op::Send {
                            to: q as Rank,
                            blocks: part(q, k),
                        }),
                    );
                } else {
                    prog.push_step([Op::Recv {
                        from: root as Rank,
                        blocks: part(r, k),
                    }]);
                }
            }
        }
        Collective::AllGather => {
            for (r, prog) in programs.iter_mut().enumerate() {
                push(
                    prog,
                    (1..p).flat_map(|s| {
                        let (to, from) = ((r + s) % p, (r + p - s) % p);
                        [
                            Op::Send {
                                to: to as Rank,
                                blocks: part(r, k),
                            },
                            Op::Recv {
                                from: from as Rank,
                                blocks: part(from, k),
                            },
                        ]
                    }),
                );
            }
        }
        Collective::AllToAll => {
            for (r, prog) in programs.iter_mut().enumerate() {
                push(
                    prog,
                    (1..p).flat_map(|s| {
                        let (to, from) = ((r + s) % p, (r + p - s) % p);
                        [
                            Op::Send {
                                to: to as Rank,
                                blocks: part(r * p + to, k),
                            },
                            Op::Recv {
                                from: from as Rank,
                                blocks: part(from * p + r, k),
                            },
                        ]
                    }),
                );
            }
            return (p * p * k, Vec::new(), programs);
        }
        // `Algorithm::supports` keeps the other collectives away.
        _ => {}
    }
    (p * k, owned_in_rank_order(p, k), programs)
}

/// All-to-all in `p - 1` pairwise shifts (see the module docs).
pub(super) fn pairwise_all_to_all(p: usize, k: usize) -> Built {
    let programs = (0..p)
        .map(|r| {
            let mut prog = Program::new();
            for s in 1..p {
                let (to, from) = ((r + s) % p, (r + p - s) % p);
                prog.push_step([
                    Op::Send {
                        to: to as Rank,
                        blocks: part(r * p + to, k),
                    },
                    Op::Recv {
                        from: from as Rank,
                        blocks: part(from * p + r, k),
                    },
                ]);
            }
            prog
        })
        .collect();
    (p * p * k, Vec::new(), programs)
}
