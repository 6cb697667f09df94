//! Binomial-tree gather and scatter (`tree`): `ceil(log2 p)` rounds instead of the root's
//! `p - 1` messages, for small parts where latency dominates.
//!
//! On the binomial tree of [`super::binomial_tree`], relative rank `v` (`(r - root) mod p`)
//! heads the ranks `v..v + lowbit(v)` (relative, clipped to `p`), and its children `v + 1`,
//! `v + 2`, `v + 4`, ... head the sub-ranges `[v + 2^i, v + 2^(i+1))`. Gather: a rank receives
//! every child's range at once (they are disjoint blocks), then sends its whole range to its
//! parent. Scatter is the mirror: a rank receives its range from its parent, then sends every
//! child its sub-range at once, the largest first. Parts are in rank order, so a relative range
//! that wraps past rank `p - 1` is two block ranges, sent as two messages.

use super::{owned_in_rank_order, Built};
use crate::schedule::{Blocks, Collective, Op, Program, Rank};

/// The blocks of relative ranks `lo..hi` (`k` blocks per rank), as one or two ranges.
fn span(lo: usize, hi: usize, root: usize, p: usize, k: usize) -> Vec<Blocks> {
    let (a, b) = ((lo + root) % p, (hi + root - 1) % p + 1);
    let blocks = |x: usize, y: usize| Blocks::new((x * k) as u32, ((y - x) * k) as u32);
    if a < b {
        vec![blocks(a, b)]
    } else {
        vec![blocks(a, p), blocks(0, b)]
    }
}

pub(super) fn build(collective: Collective, p: usize, k: usize) -> Built {
    let (root, gather) = match collective {
        Collective::Gather { root } => (root as usize, true),
        Collective::Scatter { root } => (root as usize, false),
        // `Algorithm::supports` keeps the other collectives away.
        _ => return (p * k, owned_in_rank_order(p, k), vec![Program::new(); p]),
    };
    let abs = |v: usize| ((v + root) % p) as Rank;
    let programs = (0..p)
        .map(|r| {
            let v = (r + p - root) % p;
            // The size of v's range: its lowest set bit (all of p at the root).
            let reach = if v == 0 { p } else { v & v.wrapping_neg() };
            let mut children = Vec::new();
            let mut bit = 1;
            while bit < reach && v + bit < p {
                children.push((v + bit, (v + 2 * bit).min(v + reach).min(p)));
                bit *= 2;
            }
            let parent = (v != 0).then(|| abs(v & (v - 1)));
            let mine = span(v, (v + reach).min(p), root, p, k);
            let mut prog = Program::new();
            if gather {
                let recvs: Vec<Op> = children
                    .iter()
                    .flat_map(|&(lo, hi)| {
                        span(lo, hi, root, p, k)
                            .into_iter()
                            .map(move |blocks| Op::Recv {
                                from: abs(lo),
                                blocks,
                            })
                    })
                    .collect();
                if !recvs.is_empty() {
                    prog.push_step(recvs);
                }
                if let Some(to) = parent {
                    prog.push_step(mine.into_iter().map(|blocks| Op::Send { to, blocks }));
                }
            } else {
                if let Some(from) = parent {
                    prog.push_step(mine.into_iter().map(|blocks| Op::Recv { from, blocks }));
                }
                let sends: Vec<Op> = children
                    .iter()
                    .rev()
                    .flat_map(|&(lo, hi)| {
                        span(lo, hi, root, p, k)
                            .into_iter()
                            .map(move |blocks| Op::Send {
                                to: abs(lo),
                                blocks,
                            })
                    })
                    .collect();
                if !sends.is_empty() {
                    prog.push_step(sends);
                }
            }
            prog
        })
        .collect();
    (p * k, owned_in_rank_order(p, k), programs)
}
