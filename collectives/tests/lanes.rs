//! Lanes (independent parts of the buffer, each running the whole schedule, in flight
//! together): every algorithm's lane schedules pass the verifier for each collective that has
//! lanes, at rank counts 1..=64, 100 and 256; lanes that share a block are caught; the
//! simulator runs them without deadlock on a two-tier cluster (bench's
//! `hier_keeps_the_adapter_busy_on_ddl_with_and_without_lanes` checks hier on DDL's cluster);
//! and the real executor runs them correctly, element by element.

mod common;

use common::{check, data, expected, on_ranks};
use oxccl_collectives::algorithms::{Algorithm, AlgorithmError};
use oxccl_collectives::schedule::{Blocks, Collective, Op, Program, Schedule};
use oxccl_collectives::sim::{simulate, ClusterSpec, Network};
use oxccl_collectives::verify::{verify, VerifyError};
use oxccl_collectives::{DataType, LocalTransport, Options, ReduceOp};

fn lane_collectives(p: usize) -> Vec<Collective> {
    let mut all = vec![Collective::AllReduce];
    for root in [0, (p / 2) as u32] {
        all.push(Collective::Broadcast { root });
        all.push(Collective::Reduce { root });
    }
    all
}

#[test]
fn lane_schedules_verify_for_every_algorithm_and_rank_count() {
    for p in (1..=64).chain([100, 256]) {
        let mut algos = vec![
            Algorithm::Ring,
            Algorithm::Tree,
            Algorithm::DoubleBinaryTree,
        ];
        algos.extend(
            [p / 4, p / 2]
                .into_iter()
                .filter(|&d| d > 1 && p % d == 0)
                .map(|d| Algorithm::Hierarchical(vec![d, p / d])),
        );
        // 256 ranks in a debug build: one lane count is enough.
        let lanes: &[usize] = if cfg!(debug_assertions) && p > 16 {
            &[3]
        } else {
            &[2, 3, 4]
        };
        for a in &algos {
            for c in lane_collectives(p) {
                if !a.supports(c) {
                    continue;
                }
                for &l in lanes {
                    let s = a
                        .schedule_lanes(c, p, l.max(2), l)
                        .unwrap_or_else(|e| panic!("{a} {c:?} p={p} lanes={l}: {e}"));
                    let one = a.schedule(c, p, l.max(2)).unwrap();
                    assert_eq!(s.blocks, one.blocks);
                    assert!(s.lanes() <= l, "{a} p={p}");
                    if p > 1 && !matches!(a, Algorithm::Tree) {
                        assert_eq!(s.lanes(), l, "{a} {c:?} p={p}");
                    }
                    verify(&s).unwrap_or_else(|e| panic!("{a} {c:?} p={p} lanes={l}: {e}"));
                }
            }
        }
    }
}

#[test]
fn bad_lane_requests_are_errors() {
    let ring = Algorithm::Ring;
    for (c, l) in [
        (Collective::AllReduce, 0),
        (Collective::AllReduce, 17),
        (Collective::ReduceScatter, 2),
        (Collective::AllGather, 2),
        (Collective::AllToAll, 2),
    ] {
        assert!(matches!(
            ring.schedule_lanes(c, 4, 1, l),
            Err(AlgorithmError::BadLanes { .. })
        ));
    }
    // One lane is the plain schedule, for every collective.
    assert_eq!(
        ring.schedule_lanes(Collective::AllGather, 4, 2, 1).unwrap(),
        ring.schedule(Collective::AllGather, 4, 2).unwrap()
    );
}

#[test]
fn lanes_sharing_a_block_are_caught() {
    // Rank 0 sends block 0 to rank 1 in lane 0 and again in lane 1: the two lanes would run at
    // once on one block.
    let mut p0 = Program::new();
    let mut p1 = Program::new();
    for lane in 0..2 {
        p0.push_step_in(
            lane,
            [Op::Send {
                to: 1,
                blocks: Blocks::one(0),
            }],
        );
        p1.push_step_in(
            lane,
            [Op::Recv {
                from: 0,
                blocks: Blocks::one(0),
            }],
        );
    }
    let s = Schedule {
        algorithm: "shared".into(),
        collective: Collective::Broadcast { root: 0 },
        ranks: 2,
        blocks: 1,
        owned: vec![],
        programs: vec![p0, p1],
    };
    match verify(&s) {
        Err(VerifyError::Malformed {
            rank: 0, reason, ..
        }) => {
            assert!(reason.contains("lanes 0 and 1"), "{reason}")
        }
        other => panic!("expected a lane conflict, got {other:?}"),
    }
}

#[test]
fn lanes_cut_the_same_ops_into_lane_steps() {
    for algo in ["ring", "tree", "dbtree", "hier:2x3"] {
        let a: Algorithm = algo.parse().unwrap();
        let one = a.schedule(Collective::AllReduce, 6, 4).unwrap();
        let two = a.schedule_lanes(Collective::AllReduce, 6, 4, 2).unwrap();
        for (p1, p2) in one.programs.iter().zip(&two.programs) {
            // The same ops; each lane-step holds only chunks of its own lane.
            let mut o1 = p1.ops().to_vec();
            let mut o2 = p2.ops().to_vec();
            let key = |o: &Op| format!("{o:?}");
            o1.sort_by_key(key);
            o2.sort_by_key(key);
            assert_eq!(o1, o2, "{algo}");
            assert!(p2.len() >= p1.len(), "{algo}");
        }
        assert_eq!(two.lanes(), 2, "{algo}");
    }
}

#[test]
fn lanes_simulate_on_two_tiers_without_deadlock() {
    let mut spec = ClusterSpec::flat("two-level", 4, 12.5, 3.0, 50.0);
    spec.node.devices = 4;
    spec.node.switches = vec!["sw".into()];
    spec.node.links = (0..4)
        .map(|d| oxccl_collectives::sim::LinkSpec {
            between: [format!("dev{d}"), "sw".into()],
            bandwidth_gb_s: 100.0,
            latency_us: 1.0,
            kind: "nvlink".into(),
        })
        .chain(std::iter::once(oxccl_collectives::sim::LinkSpec {
            between: ["sw".into(), "nic0".into()],
            bandwidth_gb_s: 50.0,
            latency_us: 0.0,
            kind: "pcie".into(),
        }))
        .collect();
    let net = Network::new(&spec).unwrap();
    for algo in ["ring", "tree", "dbtree", "hier:4x4", "hier:4x2x2"] {
        let a: Algorithm = algo.parse().unwrap();
        for c in lane_collectives(16) {
            if !a.supports(c) {
                continue;
            }
            for lanes in [1, 2, 4] {
                let s = a.schedule_lanes(c, 16, 3, lanes).unwrap();
                let r = simulate(&net, &s, 10_000_000, 4)
                    .unwrap_or_else(|e| panic!("{algo} {c:?} lanes={lanes}: {e}"));
                assert!(r.time > 0.0, "{algo}");
                // The NIC bound holds whatever the lanes (all-reduce: 2 (N-1)/N of the data
                // leaves each of the 4 nodes).
                if c == Collective::AllReduce {
                    let bound = 2.0 * 3.0 / 4.0 * 10e6 / (12.5e9);
                    assert!(r.time >= bound * 0.999, "{algo} lanes={lanes}");
                }
            }
        }
    }
}

#[test]
fn the_executor_runs_lanes_correctly() {
    for (algo, p) in [
        ("ring", 3),
        ("tree", 5),
        ("dbtree", 4),
        ("hier:2x2", 4),
        ("hier:2x3", 6),
    ] {
        for lanes in [2, 3] {
            let opts = Options {
                algorithm: Some(algo.into()),
                lanes: Some(lanes),
                ring_bytes: 8192,
                chunk_bytes: 1024,
                small_bytes: 0,
                ..Options::default()
            };
            on_ranks(p, LocalTransport::Memory, opts, move |c| {
                let me = c.rank();
                for (k, n) in [1usize, 7, 1024 * p + 3, 10_007].into_iter().enumerate() {
                    let k = k as u64;
                    for (dt, op) in [
                        (DataType::F32, ReduceOp::Sum),
                        (DataType::F64, ReduceOp::Avg),
                        (DataType::I32, ReduceOp::Max),
                    ] {
                        let tag = format!("{algo} lanes={lanes} p={p} n={n} {dt} {op}");
                        let es = dt.size();
                        let input = data(dt, op, k, me, n);
                        let mut out = vec![0u8; n * es];
                        c.all_reduce_bytes(&input, &mut out, dt, op)
                            .unwrap_or_else(|e| panic!("{tag}: {e}"));
                        check(&tag, dt, &out, |i| expected(dt, op, k, p, i));
                        let root = (k as usize + 1) % p;
                        let mut buf = data(dt, op, k, me, n);
                        c.broadcast_bytes(&mut buf, dt, root).unwrap();
                        check(&format!("{tag} bcast"), dt, &buf, |i| {
                            common::value(dt, op, k, root, i)
                        });
                        let mut red = vec![0u8; n * es];
                        c.reduce_bytes(&input, &mut red, dt, op, root).unwrap();
                        if me == root {
                            check(&format!("{tag} reduce"), dt, &red, |i| {
                                expected(dt, op, k, p, i)
                            });
                        }
                    }
                }
            });
        }
    }
}
