//! Recursive halving-doubling (Rabenseifner; Thakur, Rabenseifner & Gropp 2005), any rank count.
//!
//! With `p' = 2^floor(log2 p)` and `r = p - p'`, the first `2r` ranks pair up: each even one
//! folds its whole vector into its odd neighbour and sits out. The `p'` remaining ranks run a
//! reduce-scatter by recursive halving (exchange half of the current window with the partner
//! at distance `p'/2`, then `p'/4`, ..., reducing the half kept) and an all-gather by recursive
//! doubling (distance 1, 2, ..., `p'/2`), and the odd ranks finally hand the result back.
//!
//! Windows are ranges of *groups*: group `v` belongs to the remaining rank of new index `v`.
//! For all-reduce the `p'` groups are equal (`k` blocks each). For reduce-scatter and
//! all-gather, group `v` holds the segments of the original ranks folded into it (two for
//! `v < r`, one after), which keeps every rank's output in rank order and every window one
//! contiguous block range. Messages halve each step, so pipelining buys nothing here: `k` only
//! refines the block grid.

use super::{owned_in_rank_order, Built};
use crate::schedule::{Blocks, Collective, Op, Program, Rank};

pub(super) fn build(collective: Collective, p: usize, k: usize) -> Built {
    let p2 = 1usize << (usize::BITS - 1 - p.leading_zeros());
    let r = p - p2;
    let old = |v: usize| (if v < r { 2 * v + 1 } else { v + r }) as Rank;
    // First block of group v (v = p2 gives the end of the buffer).
    let (blocks, bound): (usize, Box<dyn Fn(usize) -> u32>) = match collective {
        Collective::AllReduce => (p2 * k, Box::new(move |v| (v * k) as u32)),
        _ => (p * k, Box::new(move |v| ((v + v.min(r)) * k) as u32)),
    };
    let groups = |lo: usize, n: usize| Blocks::new(bound(lo), bound(lo + n) - bound(lo));
    let all = Blocks::new(0, blocks as u32);
    let seg = |q: usize| Blocks::new((q * k) as u32, k as u32);

    let mut programs = vec![Program::new(); p];
    for (q, prog) in programs.iter_mut().enumerate() {
        let peer_below = (q as Rank).wrapping_sub(1);
        if q < 2 * r && q % 2 == 0 {
            // Folded out: hand my data to q + 1, get my result back.
            let to = q as Rank + 1;
            match collective {
                Collective::AllGather => {
                    prog.push_step([Op::Send { to, blocks: seg(q) }]);
                    prog.push_step([Op::Recv {
                        from: to,
                        blocks: all,
                    }]);
                }
                Collective::ReduceScatter => {
                    prog.push_step([Op::Send { to, blocks: all }]);
                    prog.push_step([Op::Recv {
                        from: to,
                        blocks: seg(q),
                    }]);
                }
                _ => {
                    prog.push_step([Op::Send { to, blocks: all }]);
                    prog.push_step([Op::Recv {
                        from: to,
                        blocks: all,
                    }]);
                }
            }
            continue;
        }
        let folded = q < 2 * r;
        if folded {
            let blocks = if collective == Collective::AllGather {
                seg(q - 1)
            } else {
                all
            };
            let op = if collective == Collective::AllGather {
                Op::Recv {
                    from: peer_below,
                    blocks,
                }
            } else {
                Op::RecvReduce {
                    from: peer_below,
                    blocks,
                }
            };
            prog.push_step([op]);
        }
        let v = if folded { q / 2 } else { q - r };
        if collective != Collective::AllGather {
            // Recursive halving: keep the half of the window that holds my group.
            let mut d = p2 / 2;
            while d >= 1 {
                let lo = v & !(2 * d - 1);
                let (mine, theirs) = if v & d == 0 {
                    (lo, lo + d)
                } else {
                    (lo + d, lo)
                };
                let partner = old(v ^ d);
                prog.push_step([
                    Op::Send {
                        to: partner,
                        blocks: groups(theirs, d),
                    },
                    Op::RecvReduce {
                        from: partner,
                        blocks: groups(mine, d),
                    },
                ]);
                d /= 2;
            }
        }
        if collective != Collective::ReduceScatter {
            // Recursive doubling: swap windows with the partner, doubling them.
            let mut d = 1;
            while d < p2 {
                let partner = old(v ^ d);
                prog.push_step([
                    Op::Send {
                        to: partner,
                        blocks: groups(v & !(d - 1), d),
                    },
                    Op::Recv {
                        from: partner,
                        blocks: groups((v ^ d) & !(d - 1), d),
                    },
                ]);
                d *= 2;
            }
        }
        if folded {
            let blocks = if collective == Collective::ReduceScatter {
                seg(q - 1)
            } else {
                all
            };
            prog.push_step([Op::Send {
                to: peer_below,
                blocks,
            }]);
        }
    }
    let owned = match collective {
        Collective::AllReduce => Vec::new(),
        _ => owned_in_rank_order(p, k),
    };
    (blocks, owned, programs)
}
