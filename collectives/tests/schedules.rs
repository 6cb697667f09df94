//! Every algorithm's schedule passes the symbolic verifier, for every collective it implements,
//! at every rank count 1..=64 and at 100 and 256, unpipelined and pipelined; and broken
//! schedules are caught with the right error.

use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::{Blocks, Collective, Op, Program, Schedule};
use oxccl_collectives::verify::{verify, VerifyError};

fn rank_counts() -> impl Iterator<Item = usize> {
    (1..=64).chain([100, 256])
}

/// The collectives to check at `p` ranks (rooted ones at root 0 and at a rank in the middle).
fn collectives(p: usize) -> Vec<Collective> {
    let mut all = vec![
        Collective::AllReduce,
        Collective::ReduceScatter,
        Collective::AllGather,
    ];
    for root in [0, (p / 2) as u32] {
        all.push(Collective::Broadcast { root });
        all.push(Collective::Reduce { root });
    }
    all
}

fn check(algorithm: &Algorithm, collective: Collective, p: usize, pipeline: usize) {
    let schedule = algorithm
        .schedule(collective, p, pipeline)
        .unwrap_or_else(|e| panic!("{algorithm} {collective:?} p={p}: {e}"));
    assert_eq!(schedule.ranks, p);
    if let Err(e) = verify(&schedule) {
        panic!("{algorithm} {collective:?} p={p} pipeline={pipeline}: {e}");
    }
}

fn check_all_rank_counts(algorithm: Algorithm) {
    for p in rank_counts() {
        // At 256 ranks the pipelined ring is 256 x 1 000 steps; in a debug build one pipelined
        // size (2 chunks) is enough there, release builds also try 3.
        let pipelines: &[usize] = if cfg!(debug_assertions) && p > 64 {
            &[1, 2]
        } else {
            &[1, 2, 3]
        };
        for c in collectives(p) {
            if !algorithm.supports(c) {
                continue;
            }
            for &k in pipelines {
                check(&algorithm, c, p, k);
            }
        }
    }
}

#[test]
fn ring_is_correct_for_every_rank_count() {
    check_all_rank_counts(Algorithm::Ring);
}

#[test]
fn rhd_is_correct_for_every_rank_count() {
    check_all_rank_counts(Algorithm::Rhd);
}

#[test]
fn tree_is_correct_for_every_rank_count() {
    check_all_rank_counts(Algorithm::Tree);
}

#[test]
fn dbtree_is_correct_for_every_rank_count() {
    check_all_rank_counts(Algorithm::DoubleBinaryTree);
}

#[test]
fn hier_is_correct_for_the_required_shapes() {
    let shapes: &[&[usize]] = &[
        &[2, 3],
        &[4, 4],
        &[4, 8, 8],
        &[4, 16, 4],
        &[1, 5],
        &[3, 1, 2],
        &[7],
    ];
    for dims in shapes {
        let p = dims.iter().product();
        let hier = Algorithm::Hierarchical(dims.to_vec());
        for c in [
            Collective::AllReduce,
            Collective::ReduceScatter,
            Collective::AllGather,
        ] {
            // k = 3: chunks of the all-reduce overlap across dims (more chunks than stages in
            // the 2-dim shapes).
            for k in [1, 2, 3] {
                check(&hier, c, p, k);
            }
        }
    }
}

#[test]
fn ring_all_reduce_moves_the_optimal_amount() {
    let p = 8;
    let s = Algorithm::Ring
        .schedule(Collective::AllReduce, p, 1)
        .unwrap();
    let report = verify(&s).unwrap();
    // 2 (p - 1) blocks of n / p each: the bandwidth lower bound.
    assert!(report
        .per_rank
        .iter()
        .all(|t| t.blocks_sent == 2 * (p - 1) && t.blocks_received == 2 * (p - 1)));
    assert_eq!(report.messages, p * 2 * (p - 1));
    // Fused ops: send, p - 1 recv-reduce-send, p - 2 recv-copy-send, recv.
    assert_eq!(report.depth, 2 * p - 1);
}

#[test]
fn hier_sends_less_over_the_outer_dim() {
    let s = Algorithm::Hierarchical(vec![4, 2])
        .schedule(Collective::AllReduce, 8, 1)
        .unwrap();
    let report = verify(&s).unwrap();
    // Out of 8 blocks: dim 1 ring of 4 reduce-scatters (3 x 2 blocks) and gathers (3 x 2); the
    // dim 2 ring of 2 all-reduces the 2-block shard (1 + 1 block).
    assert!(report.per_rank.iter().all(|t| t.blocks_sent == 14));
    let outer: usize = s.programs[0]
        .ops()
        .iter()
        .filter(|op| op.send_to() == Some(4))
        .map(|op| op.blocks().len as usize)
        .sum();
    assert_eq!(outer, 2);
}

#[test]
fn hier_all_reduce_halves_a_power_of_two_node_dim() {
    let depth = |dims: &[usize], c: Collective| {
        let p = dims.iter().product();
        let s = Algorithm::Hierarchical(dims.to_vec())
            .schedule(c, p, 1)
            .unwrap();
        let report = verify(&s).unwrap();
        // What rank 0 sends inside its node (ranks 0..dims[0]): messages, and to whom.
        let mut peers: Vec<u32> = s.programs[0]
            .ops()
            .iter()
            .filter_map(|op| op.send_to())
            .filter(|&to| (to as usize) < dims[0])
            .collect();
        let messages = peers.len();
        peers.sort_unstable();
        peers.dedup();
        (report.depth, peers, messages)
    };
    let ar = Collective::AllReduce;
    // Below another tier, a node of 4 or 8 runs recursive halving (partners 1, 2, 4 apart)
    // instead of a ring: the same schedule as the dims split into 2s.
    assert_eq!(depth(&[4, 2], ar).0, depth(&[2, 2, 2], ar).0);
    assert_eq!(depth(&[8, 3], ar).0, depth(&[2, 2, 2, 3], ar).0);
    assert_eq!(depth(&[4, 2], ar).1, vec![1, 2]);
    assert_eq!(depth(&[8, 3], ar).1, vec![1, 2, 4]);
    // 2 log2 d hops (one message each at k = 1) in the node dim instead of 2 (d - 1).
    assert_eq!(depth(&[8, 3], ar).2, 6);
    assert_eq!(depth(&[6, 3], ar).2, 10);
    // A ring (rank 0 sends to rank 1 only) where it is not a power of two, alone, or not an
    // all-reduce.
    assert_eq!(depth(&[6, 2], ar).1, vec![1]);
    assert_eq!(depth(&[4], ar).1, vec![1]);
    assert_eq!(depth(&[4, 2], Collective::ReduceScatter).1, vec![1]);
}

#[test]
fn rhd_takes_logarithmic_steps() {
    for (p, steps) in [(8, 6), (16, 8), (12, 8), (100, 14)] {
        let s = Algorithm::Rhd
            .schedule(Collective::AllReduce, p, 1)
            .unwrap();
        assert_eq!(verify(&s).unwrap().depth, steps, "p={p}");
    }
}

fn ring8() -> Schedule {
    Algorithm::Ring
        .schedule(Collective::AllReduce, 8, 1)
        .unwrap()
}

/// The schedule with rank `rank`'s program rebuilt by `edit` from its steps.
fn edit(mut s: Schedule, rank: usize, edit: impl FnOnce(&mut Vec<Vec<Op>>)) -> Schedule {
    let mut steps: Vec<Vec<Op>> = s.programs[rank].steps().map(<[Op]>::to_vec).collect();
    edit(&mut steps);
    let mut p = Program::new();
    for ops in steps {
        p.push_step(ops);
    }
    s.programs[rank] = p;
    s
}

#[test]
fn a_dropped_step_is_caught() {
    // Rank 3 skips its final receive: its block stays incomplete, and rank 2's message is
    // never received.
    let s = edit(ring8(), 3, |steps| {
        steps.pop();
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Unreceived { from: 2, to: 3, .. })
    ));
    // Dropping rank 3's first send shifts everything it forwards to rank 4 by one block.
    let s = edit(ring8(), 3, |steps| {
        steps.remove(0);
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Mismatch {
            rank: 4,
            step: 1,
            from: 3,
            expected: Blocks { start: 2, len: 1 },
            got: Blocks { start: 1, len: 1 },
            ..
        })
    ));
}

#[test]
fn a_double_reduce_is_caught() {
    // Rank 0 reduces its own data twice by sending to 1 and back.
    let mut s = Algorithm::Ring
        .schedule(Collective::AllReduce, 2, 1)
        .unwrap();
    let mut p0 = Program::new();
    p0.push_step([Op::Send {
        to: 1,
        blocks: Blocks::new(0, 2),
    }]);
    let mut p1 = Program::new();
    p1.push_step([Op::RecvReduceSend {
        from: 0,
        to: 0,
        blocks: Blocks::new(0, 2),
    }]);
    s.programs = vec![p0, p1];
    // Fix rank 0's program so it reduces the echo back into itself.
    let s = edit(s, 0, |steps| {
        steps.push(vec![Op::RecvReduce {
            from: 1,
            blocks: Blocks::new(0, 2),
        }])
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::DoubleContribution {
            rank: 0,
            step: 1,
            contributor: 0,
            ..
        })
    ));
}

#[test]
fn a_mismatched_receive_is_caught() {
    let s = edit(ring8(), 5, |steps| {
        // Rank 5's last receive asks for the wrong block.
        let last = steps.last_mut().unwrap();
        last[0] = Op::Recv {
            from: 4,
            blocks: Blocks::one(0),
        };
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Mismatch {
            rank: 5,
            from: 4,
            expected: Blocks { start: 0, len: 1 },
            got: Blocks { start: 6, len: 1 },
            ..
        })
    ));
}

#[test]
fn a_deadlock_is_caught() {
    // Both ranks receive before they send.
    let mut s = Algorithm::Ring
        .schedule(Collective::AllReduce, 2, 1)
        .unwrap();
    let prog = |peer| {
        let mut p = Program::new();
        p.push_step([Op::RecvReduce {
            from: peer,
            blocks: Blocks::new(0, 2),
        }]);
        p.push_step([Op::Send {
            to: peer,
            blocks: Blocks::new(0, 2),
        }]);
        p
    };
    s.programs = vec![prog(1), prog(0)];
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Deadlock {
            rank: 0,
            step: 0,
            from: 1,
            stuck: 2,
            ..
        })
    ));
}

#[test]
fn reading_an_empty_block_is_caught() {
    // A broadcast in which a non-root rank forwards before it has received.
    let s = Algorithm::Ring
        .schedule(Collective::Broadcast { root: 0 }, 3, 1)
        .unwrap();
    let s = edit(s, 1, |steps| {
        steps.insert(
            0,
            vec![Op::Send {
                to: 2,
                blocks: Blocks::one(0),
            }],
        )
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::EmptyRead {
            rank: 1,
            step: 0,
            block: 0,
            ..
        })
    ));
}

#[test]
fn hazards_within_a_step_are_malformed() {
    let s = edit(ring8(), 2, |steps| {
        // Send and receive the same block in one step.
        let blocks = steps[1][0].blocks();
        steps[1].push(Op::Send { to: 3, blocks })
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Malformed {
            rank: 2,
            step: 1,
            ..
        })
    ));
    let s = edit(ring8(), 2, |steps| {
        steps[0].push(Op::Send {
            to: 2,
            blocks: Blocks::one(0),
        })
    });
    assert!(matches!(
        verify(&s),
        Err(VerifyError::Malformed { rank: 2, .. })
    ));
}

#[test]
fn an_incomplete_result_is_caught() {
    // A "ring" reduce-scatter that stops one step short.
    let mut s = Algorithm::Ring
        .schedule(Collective::ReduceScatter, 4, 1)
        .unwrap();
    for r in 0..4 {
        s = edit(s, r, |steps| {
            let last = steps.last_mut().unwrap();
            last.clear();
        });
        s = edit(s, r, |steps| {
            // Turn the second-to-last forward into a plain receive.
            let n = steps.len();
            if let Op::RecvReduceSend { from, blocks, .. } = steps[n - 2][0] {
                steps[n - 2][0] = Op::RecvReduce { from, blocks };
            }
        });
    }
    assert!(matches!(verify(&s), Err(VerifyError::Incomplete { .. })));
}

/// Within a step, no plain send to a peer follows a fused forward to it, and the forwards to
/// one peer all receive from one peer. Receives from one peer complete in order, so an executor
/// (or the simulator) that posts a step's plain sends when it begins and each forward when its
/// receive completes sends in program order, which is the order receivers match in.
fn posting_order_is_natural(s: &Schedule) -> Result<(), String> {
    for (r, prog) in s.programs.iter().enumerate() {
        for (st, ops) in prog.steps().enumerate() {
            for (i, op) in ops.iter().enumerate() {
                let (Some(to), Some(from)) = (op.send_to(), op.recv_from()) else {
                    continue;
                };
                for later in &ops[i + 1..] {
                    if later.send_to() == Some(to) && later.recv_from() != Some(from) {
                        return Err(format!("rank {r} step {st}: {op:?} then {later:?}"));
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn built_in_schedules_post_in_program_order_naturally() {
    for p in (1..=40).chain([64, 100]) {
        let mut algs = Algorithm::all(None);
        if p % 4 == 0 {
            algs.push(Algorithm::Hierarchical(vec![4, p / 4]));
        }
        for a in algs {
            for c in collectives(p) {
                if !a.supports(c) {
                    continue;
                }
                for k in [1, 2, 5] {
                    let s = a.schedule(c, p, k).unwrap();
                    if let Err(e) = posting_order_is_natural(&s) {
                        panic!("{a} {c:?} p={p} k={k}: {e}");
                    }
                }
            }
        }
    }
}

/// A small deterministic generator, so the fuzz cases below are reproducible.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn the_verifier_never_panics_on_mutated_schedules() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut caught = 0;
    for case in 0..600 {
        let p = 1 + rng.below(12) as usize;
        let algs = Algorithm::all(None);
        let a = &algs[rng.below(algs.len() as u64) as usize];
        let cs: Vec<Collective> = collectives(p)
            .into_iter()
            .filter(|&c| a.supports(c))
            .collect();
        let c = cs[rng.below(cs.len() as u64) as usize];
        let mut s = a.schedule(c, p, 1 + rng.below(3) as usize).unwrap();
        // Mutate one rank's program: drop, duplicate, swap or corrupt an op.
        let r = rng.below(p as u64) as usize;
        let mut steps: Vec<Vec<Op>> = s.programs[r].steps().map(<[Op]>::to_vec).collect();
        if steps.is_empty() {
            continue;
        }
        let st = rng.below(steps.len() as u64) as usize;
        let i = rng.below(steps[st].len() as u64) as usize;
        match case % 5 {
            0 => {
                steps[st].remove(i);
            }
            1 => {
                let op = steps[st][i];
                steps[st].push(op);
            }
            2 => {
                let other = rng.below(steps.len() as u64) as usize;
                steps.swap(st, other);
            }
            3 => {
                let peer = rng.below(p as u64 + 1) as u32;
                let blocks =
                    Blocks::new(rng.below(s.blocks as u64 + 1) as u32, rng.below(3) as u32);
                steps[st][i] = match rng.below(4) {
                    0 => Op::Send { to: peer, blocks },
                    1 => Op::Recv { from: peer, blocks },
                    2 => Op::RecvReduceSend {
                        from: peer,
                        to: peer,
                        blocks,
                    },
                    _ => Op::Copy {
                        from: blocks,
                        to: Blocks::new(blocks.start.wrapping_add(1), blocks.len),
                    },
                };
            }
            _ => {
                steps[st][i] = Op::Send {
                    to: 0,
                    blocks: Blocks::new(u32::MAX, u32::MAX),
                };
            }
        }
        let mut prog = Program::new();
        for ops in steps {
            prog.push_step(ops);
        }
        s.programs[r] = prog;
        // Any answer will do, as long as it is an answer; most mutations are wrong.
        if verify(&s).is_err() {
            caught += 1;
        }
    }
    assert!(caught > 400, "only {caught} of 600 mutations caught");
}
