//! The schedules of the collectives that only move data (gather, scatter, all-to-all, and the
//! direct all-gather) pass the symbolic verifier at every rank count 1..=64 and at 100 and 256,
//! for every algorithm that implements them. The uneven (`*_v`) collectives run these same
//! schedules (and the reduce-scatter and all-gather ones `schedules.rs` checks) with a block
//! layout of the call's counts, so this is their check too.

use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::{Collective, Op};
use oxccl_collectives::verify::{verify, VerifyError};

fn rank_counts() -> impl Iterator<Item = usize> {
    (1..=64).chain([100, 256])
}

fn algorithms() -> Vec<Algorithm> {
    vec![Algorithm::Ring, Algorithm::Tree, Algorithm::Direct]
}

fn check(a: &Algorithm, c: Collective, p: usize, k: usize) {
    let s = a
        .schedule(c, p, k)
        .unwrap_or_else(|e| panic!("{a} {c:?} p={p} k={k}: {e}"));
    if let Err(e) = verify(&s) {
        panic!("{a} {c:?} p={p} k={k}: {e}");
    }
}

#[test]
fn gather_and_scatter_are_correct_for_every_rank_count_and_root() {
    for p in rank_counts() {
        // Roots at both ends and in the middle: the binomial tree's ranges wrap past p - 1.
        let mut roots = vec![0, p / 2, p - 1];
        roots.dedup();
        let pipelines: &[usize] = if p > 64 { &[1] } else { &[1, 3] };
        for root in roots {
            for c in [
                Collective::Gather { root: root as u32 },
                Collective::Scatter { root: root as u32 },
            ] {
                for a in algorithms().iter().filter(|a| a.supports(c)) {
                    for &k in pipelines {
                        check(a, c, p, k);
                    }
                }
            }
        }
    }
}

#[test]
fn all_to_all_and_direct_all_gather_are_correct_for_every_rank_count() {
    for p in rank_counts() {
        let pipelines: &[usize] = if p > 64 { &[1] } else { &[1, 2] };
        for &k in pipelines {
            check(&Algorithm::Direct, Collective::AllGather, p, k);
            // All-to-all's symbolic state is p^3 bits per chunk (512 MiB at 256 ranks), so
            // the large counts run unpipelined.
            check(&Algorithm::Direct, Collective::AllToAll, p, k);
            check(&Algorithm::Ring, Collective::AllToAll, p, k);
        }
    }
}

#[test]
fn moving_schedules_send_each_part_once() {
    let p = 13;
    // Direct gather: p - 1 messages of one part; the tree sends as many parts in fewer rounds.
    let direct = verify(
        &Algorithm::Direct
            .schedule(Collective::Gather { root: 5 }, p, 1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(direct.messages, p - 1);
    assert_eq!(direct.depth, 1);
    let tree = Algorithm::Tree
        .schedule(Collective::Gather { root: 5 }, p, 1)
        .unwrap();
    assert_eq!(tree.depth(), 2);
    assert!(verify(&tree).unwrap().per_rank[5].blocks_received == p - 1);
    // All-to-all: every rank sends p - 1 parts, in one step or in p - 1.
    for (a, depth) in [(Algorithm::Direct, 1), (Algorithm::Ring, p - 1)] {
        let r = verify(&a.schedule(Collective::AllToAll, p, 1).unwrap()).unwrap();
        assert_eq!(r.depth, depth);
        assert!(r.per_rank.iter().all(|t| t.blocks_sent == p - 1));
    }
}

#[test]
fn a_broken_moving_schedule_is_caught() {
    // A scatter whose root sends rank 2's part to rank 1, and rank 2 waits for it.
    let mut s = Algorithm::Direct
        .schedule(Collective::Scatter { root: 0 }, 3, 1)
        .unwrap();
    let programs: Vec<Vec<Op>> = s.programs.iter().map(|p| p.ops().to_vec()).collect();
    let mut root = oxccl_collectives::schedule::Program::new();
    let mut ops = programs[0].clone();
    ops.retain(|op| op.send_to() != Some(2));
    if let Some(Op::Send { blocks, .. }) = ops.first_mut() {
        *blocks = oxccl_collectives::schedule::Blocks::one(2);
    }
    root.push_step(ops);
    s.programs[0] = root;
    let e = verify(&s).unwrap_err();
    assert!(
        matches!(
            e,
            VerifyError::Deadlock { rank: 2, .. } | VerifyError::Mismatch { .. }
        ),
        "{e}"
    );
}
