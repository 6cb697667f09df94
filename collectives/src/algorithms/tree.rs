//! Trees: the binomial tree (`tree`), the chain (ring broadcast and reduce) and the binary trees
//! of `dbtree`, all scheduled by the same two functions.
//!
//! [`emit_reduce`] sends each subtree's sum up as soon as it is complete: a node receives its
//! children one stage apart (two receives into the same block in one step would race), the
//! child with the longest subtree last, and forwards the last one fused (`RecvReduceSend`). A
//! node's stage is assigned top-down from the root, so every message is received exactly one
//! stage after it is sent, which is what makes [`super::wavefront`] pipelining sound.
//! [`emit_broadcast`] is the mirror image: a node receives from its parent and forwards to its
//! deepest child fused (`RecvCopySend`), then sends to the others one stage apart.

use super::{put, wavefront_all, Built, StageTable};
use crate::schedule::{Blocks, Collective, Op, Rank};

/// A spanning tree over ranks `0..n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub root: usize,
    pub parent: Vec<Option<usize>>,
    pub children: Vec<Vec<usize>>,
}

impl Tree {
    /// The tree with these parents (exactly one `None`: the root). Children keep rank order.
    pub fn from_parents(parent: Vec<Option<usize>>) -> Tree {
        let mut children = vec![Vec::new(); parent.len()];
        let mut root = 0;
        for (v, p) in parent.iter().enumerate() {
            match p {
                Some(p) => children[*p].push(v),
                None => root = v,
            }
        }
        Tree {
            root,
            parent,
            children,
        }
    }

    /// The chain `root -> root + 1 -> ... -> root - 1` (mod `n`).
    pub fn chain(n: usize, root: usize) -> Tree {
        Tree::from_parents(
            (0..n)
                .map(|r| (r != root).then_some((r + n - 1) % n))
                .collect(),
        )
    }

    /// Nodes in breadth-first order from the root.
    fn bfs(&self) -> Vec<usize> {
        let mut order = vec![self.root];
        let mut i = 0;
        while i < order.len() {
            order.extend_from_slice(&self.children[order[i]]);
            i += 1;
        }
        order
    }

    /// Longest root-to-leaf path, in edges.
    pub fn height(&self) -> usize {
        let mut depth = vec![0; self.parent.len()];
        let mut h = 0;
        for v in self.bfs() {
            if let Some(p) = self.parent[v] {
                depth[v] = depth[p] + 1;
                h = h.max(depth[v]);
            }
        }
        h
    }
}

/// Binomial tree rooted at `root`: relative rank `v` (`(r - root) mod n`) has parent `v` with
/// its lowest set bit cleared, so the root's children head subtrees of 1, 2, 4, ... ranks.
pub fn binomial_tree(n: usize, root: usize) -> Tree {
    Tree::from_parents(
        (0..n)
            .map(|r| {
                let v = (r + n - root) % n;
                (v != 0).then(|| ((v & (v - 1)) + root) % n)
            })
            .collect(),
    )
}

/// NCCL's pair of complementary binary trees. Tree 0 is the in-order tree on ranks in which
/// odd ranks are leaves: rank `v` with lowest set bit `b` has children `v - b/2` and `v + b/2`
/// (or the largest `v + b/2^i` below `n`), and rank 0 is a root with one child, the largest
/// power of two below `n`. Tree 1 is tree 0 on the mirrored ranks `n - 1 - r` (even `n`) or on
/// ranks shifted by one (odd `n`), so every leaf of tree 0 is interior in tree 1.
pub fn double_binary_trees(n: usize) -> [Tree; 2] {
    let parent_of = |v: usize| -> Option<usize> {
        if v == 0 {
            return None;
        }
        let b = v & v.wrapping_neg();
        let up = (v ^ b) | (b << 1);
        Some(if up >= n { v ^ b } else { up })
    };
    let first = Tree::from_parents((0..n).map(parent_of).collect());
    // `to_virtual` maps a rank to its position in tree 0's numbering; `to_rank` maps back.
    let even = n % 2 == 0;
    let to_virtual = |r: usize| if even { n - 1 - r } else { (r + 1) % n };
    let to_rank = |v: usize| if even { n - 1 - v } else { (v + n - 1) % n };
    let second = Tree::from_parents(
        (0..n)
            .map(|r| parent_of(to_virtual(r)).map(&to_rank))
            .collect(),
    );
    [first, second]
}

/// Reduce stages: `finish[v]` is the stage at which `v` sends its subtree's sum to its parent
/// (or, at the root, receives its last child), and `order[v]` the order it receives children.
fn reduce_plan(tree: &Tree) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = tree.parent.len();
    let bfs = tree.bfs();
    // need[v]: stages from the first send in v's subtree to v's own send.
    let mut need = vec![0usize; n];
    let mut order = tree.children.clone();
    for &v in bfs.iter().rev() {
        order[v].sort_by_key(|&u| need[u]);
        let m = order[v].len();
        need[v] = order[v]
            .iter()
            .enumerate()
            .map(|(i, &u)| need[u] + m - i)
            .max()
            .unwrap_or(0);
    }
    let mut finish = vec![0usize; n];
    finish[tree.root] = need[tree.root];
    for &v in &bfs {
        let m = order[v].len();
        for (i, &u) in order[v].iter().enumerate() {
            // Received at stage finish[v] - m + i + 1, so sent one stage before.
            finish[u] = finish[v] + i - m;
        }
    }
    (finish, order)
}

/// Broadcast stages, the root holding the data at stage `start`: `recv[v]` is the stage `v`
/// receives at, `order[v]` the order it sends to its children (deepest subtree first).
fn broadcast_plan(tree: &Tree, start: usize) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = tree.parent.len();
    let bfs = tree.bfs();
    let mut need = vec![0usize; n];
    let mut order = tree.children.clone();
    for &v in bfs.iter().rev() {
        order[v].sort_by_key(|&c| std::cmp::Reverse(need[c]));
        need[v] = order[v]
            .iter()
            .enumerate()
            .map(|(i, &c)| i + 1 + need[c])
            .max()
            .unwrap_or(0);
    }
    let mut recv = vec![start; n];
    for &v in &bfs {
        for (i, &c) in order[v].iter().enumerate() {
            recv[c] = recv[v] + i + 1;
        }
    }
    (recv, order)
}

/// Adds a reduction of `seg` to `tree.root` to `tables` (indexed by rank). With
/// `then_broadcast`, the root's last receive is fused with the broadcast's first send (see
/// [`emit_broadcast`]). Returns the stage at which the root holds the sum.
pub(crate) fn emit_reduce(
    tree: &Tree,
    seg: Blocks,
    tables: &mut [StageTable],
    then_broadcast: bool,
) -> usize {
    let (finish, order) = reduce_plan(tree);
    let first_bcast_child = broadcast_plan(tree, 0).1[tree.root].first().copied();
    for (v, children) in order.iter().enumerate() {
        let m = children.len();
        let to = match tree.parent[v] {
            Some(p) => Some(p),
            None if then_broadcast => first_bcast_child,
            None => None,
        };
        for (i, &u) in children.iter().enumerate() {
            let from = u as Rank;
            let op = match to {
                Some(to) if i + 1 == m => Op::RecvReduceSend {
                    from,
                    to: to as Rank,
                    blocks: seg,
                },
                _ => Op::RecvReduce { from, blocks: seg },
            };
            put(&mut tables[v], finish[v] + i + 1 - m, op);
        }
        if let (0, Some(p)) = (m, tree.parent[v]) {
            put(
                &mut tables[v],
                finish[v],
                Op::Send {
                    to: p as Rank,
                    blocks: seg,
                },
            );
        }
    }
    finish[tree.root]
}

/// Adds a broadcast of `seg` from `tree.root`, which holds it at stage `start`, to `tables`.
/// With `root_fused`, the root's first send is already in place (fused by [`emit_reduce`]).
pub(crate) fn emit_broadcast(
    tree: &Tree,
    seg: Blocks,
    tables: &mut [StageTable],
    start: usize,
    root_fused: bool,
) {
    let (recv, order) = broadcast_plan(tree, start);
    for (v, children) in order.iter().enumerate() {
        let mut first_plain = 0;
        if let Some(p) = tree.parent[v] {
            let from = p as Rank;
            let op = match children.first() {
                Some(&c) => Op::RecvCopySend {
                    from,
                    to: c as Rank,
                    blocks: seg,
                },
                None => Op::Recv { from, blocks: seg },
            };
            put(&mut tables[v], recv[v], op);
            first_plain = 1;
        } else if root_fused {
            first_plain = 1;
        }
        for (i, &c) in children.iter().enumerate().skip(first_plain) {
            put(
                &mut tables[v],
                recv[v] + i,
                Op::Send {
                    to: c as Rank,
                    blocks: seg,
                },
            );
        }
    }
}

/// Shape of a pipelined all-reduce over `tree`, for cost models: the hops on its critical
/// path (its last stage), and per rank the messages it receives and sends and the reductions
/// it runs for each chunk.
pub fn all_reduce_shape(tree: &Tree) -> (usize, Vec<(usize, usize, usize)>) {
    let (finish, _) = reduce_plan(tree);
    let (recv, _) = broadcast_plan(tree, finish[tree.root]);
    let hops = recv.iter().copied().max().unwrap_or(0);
    let loads = (0..tree.parent.len())
        .map(|v| {
            let kids = tree.children[v].len();
            let up = usize::from(tree.parent[v].is_some());
            (kids + up, up + kids, kids)
        })
        .collect();
    (hops, loads)
}

/// All-reduce of `seg` over `tree`: reduce to the root, then broadcast from it.
pub(crate) fn emit_all_reduce(tree: &Tree, seg: Blocks, tables: &mut [StageTable]) {
    let done = emit_reduce(tree, seg, tables, true);
    emit_broadcast(tree, seg, tables, done, true);
}

pub(super) fn build(collective: Collective, p: usize, k: usize, lanes: usize) -> Built {
    let seg = Blocks::new(0, k as u32);
    let mut tables = vec![StageTable::new(); p];
    match collective {
        Collective::Broadcast { root } => {
            emit_broadcast(&binomial_tree(p, root as usize), seg, &mut tables, 0, false)
        }
        Collective::Reduce { root } => {
            emit_reduce(&binomial_tree(p, root as usize), seg, &mut tables, false);
        }
        _ => emit_all_reduce(&binomial_tree(p, 0), seg, &mut tables),
    }
    let tables = tables.into_iter().map(|t| vec![t]).collect();
    (k, Vec::new(), wavefront_all(tables, k, lanes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_spanning(t: &Tree) {
        let n = t.parent.len();
        assert_eq!(t.parent.iter().filter(|p| p.is_none()).count(), 1);
        assert_eq!(t.bfs().len(), n, "every rank reachable from the root");
    }

    #[test]
    fn trees_span_all_ranks() {
        for n in 1..=300 {
            assert_spanning(&binomial_tree(n, n / 3));
            assert_spanning(&Tree::chain(n, n / 2));
            let [a, b] = double_binary_trees(n);
            for t in [&a, &b] {
                assert_spanning(t);
                assert!(t.children.iter().all(|c| c.len() <= 2), "binary");
                assert!(t.children[t.root].len() <= 1, "root has one child");
            }
            assert!(a.height() <= 2 * (usize::BITS - n.leading_zeros()) as usize);
            if n % 2 == 0 {
                // Each rank is a leaf in at least one of the two trees.
                for r in 0..n {
                    assert!(
                        a.children[r].is_empty() || b.children[r].is_empty(),
                        "n={n} r={r}"
                    );
                }
            }
        }
    }

    #[test]
    fn binomial_all_reduce_takes_twice_log_hops() {
        for (n, hops) in [(1, 0), (2, 2), (8, 6), (9, 8), (64, 12)] {
            assert_eq!(all_reduce_shape(&binomial_tree(n, 0)).0, hops, "n={n}");
        }
    }

    #[test]
    fn binomial_reduce_takes_log_stages() {
        for (n, stages) in [(1, 0), (2, 1), (8, 3), (9, 4), (64, 6)] {
            let (finish, _) = reduce_plan(&binomial_tree(n, 0));
            assert_eq!(finish[0], stages, "n={n}");
        }
    }
}
