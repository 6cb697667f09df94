//! `Communicator::split` and `dup` on thread ranks: who lands in which child, in which order,
//! and that each child works on its own (an all-reduce and an all-gather of the parent ranks,
//! checked element by element).

mod common;

use common::on_ranks;
use oxccl_collectives::{Communicator, LocalTransport, Options, ReduceOp};

/// Splits `p` ranks with `plan(rank) -> (color, key)` and checks every child against the
/// membership the plan implies.
fn check_split(p: usize, transport: LocalTransport, plan: fn(usize) -> (Option<u32>, i64)) {
    on_ranks(
        p,
        transport,
        Options::default(),
        move |comm: Communicator| {
            let me = comm.rank();
            let (color, key) = plan(me);
            let child = comm.split(color, key).expect("split");
            let Some(color) = color else {
                assert!(child.is_none(), "rank {me} opted out but joined a child");
                // The parent is still usable after a split.
                let mut v = [me as u64 + 1];
                comm.all_reduce_in_place(&mut v, ReduceOp::Sum)
                    .expect("parent");
                return;
            };
            let child = child.expect("a rank with a color joins a child");
            let mut members: Vec<usize> = (0..p).filter(|&q| plan(q).0 == Some(color)).collect();
            members.sort_by_key(|&q| (plan(q).1, q));
            assert_eq!(child.size(), members.len(), "rank {me}: child size");
            assert_eq!(
                members[child.rank()],
                me,
                "rank {me}: child rank {}",
                child.rank()
            );
            // Who is who in the child, from the child itself.
            let mut parents = vec![0u64; members.len()];
            child
                .all_gather(&[me as u64], &mut parents)
                .expect("all_gather");
            let want: Vec<u64> = members.iter().map(|&q| q as u64).collect();
            assert_eq!(parents, want, "rank {me}: child order");
            // A reduction on data that differs per rank and element.
            let input: Vec<i64> = (0..1000)
                .map(|i| (me as i64 * 7919 + i * 31) % 1009 - 500)
                .collect();
            let mut sum = vec![0i64; input.len()];
            child.all_reduce(&input, &mut sum, ReduceOp::Sum).unwrap();
            for (i, s) in sum.iter().enumerate() {
                let want: i64 = members
                    .iter()
                    .map(|&q| (q as i64 * 7919 + i as i64 * 31) % 1009 - 500)
                    .sum();
                assert_eq!(*s, want, "rank {me}: element {i}");
            }
            // The parent still works, with the child alive.
            let mut v = [me as u64 + 1];
            comm.all_reduce_in_place(&mut v, ReduceOp::Sum)
                .expect("parent");
            assert_eq!(v[0], (p * (p + 1) / 2) as u64);
        },
    );
}

#[test]
fn halves() {
    for p in 1..=9 {
        check_split(p, LocalTransport::Memory, |r| {
            (Some(u32::from(r >= 2)), r as i64)
        });
    }
}

#[test]
fn evens_and_odds_with_reversed_keys() {
    for p in 1..=9 {
        check_split(p, LocalTransport::Memory, |r| {
            (Some((r % 2) as u32), -(r as i64))
        });
    }
}

#[test]
fn halves_over_shared_memory_and_tcp() {
    check_split(4, LocalTransport::Shm, |r| {
        (Some(u32::from(r >= 2)), r as i64)
    });
    check_split(3, LocalTransport::Tcp, |r| (Some((r % 2) as u32), r as i64));
}

#[test]
fn equal_keys_keep_the_parent_order() {
    check_split(4, LocalTransport::Shm, |_| (Some(7), 0));
}

#[test]
fn singletons() {
    for p in 1..=9 {
        check_split(p, LocalTransport::Memory, |r| (Some(r as u32 * 10), 0));
    }
}

/// Rows and columns of a 2 x 3 grid (data x tensor parallelism): on every rank, the row
/// communicator all-reduces, the column communicator all-gathers and the parent all-reduces,
/// each from its own thread at the same time, many times over; every result is checked.
#[test]
fn grid_children_and_parent_from_different_threads() {
    const ROUNDS: usize = 40;
    on_ranks(6, LocalTransport::Memory, Options::default(), |comm| {
        let me = comm.rank();
        let (row, col) = (me / 3, me % 3);
        let rows = comm.split(Some(row as u32), col as i64).unwrap().unwrap();
        let cols = comm
            .split(Some(100 + col as u32), row as i64)
            .unwrap()
            .unwrap();
        assert_eq!(
            (rows.size(), rows.rank(), cols.size(), cols.rank()),
            (3, col, 2, row)
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 0..ROUNDS {
                    // Sizes from one element to past the ring (multi-chunk) and back.
                    let n = 1 + (round * 7919) % 300_000;
                    let input: Vec<i64> = (0..n)
                        .map(|i| (me * 1000 + i % 997 + round) as i64)
                        .collect();
                    let mut out = vec![0i64; n];
                    rows.all_reduce(&input, &mut out, ReduceOp::Sum).unwrap();
                    for (i, o) in out.iter().enumerate() {
                        let want: i64 = (0..3)
                            .map(|c| ((row * 3 + c) * 1000 + i % 997 + round) as i64)
                            .sum();
                        assert_eq!(*o, want, "rank {me} row round {round} element {i}");
                    }
                }
            });
            s.spawn(|| {
                for round in 0..ROUNDS {
                    let n = 1 + (round * 104_729) % 200_000;
                    let input: Vec<u32> =
                        (0..n).map(|i| (me * 7 + i * 13 + round) as u32).collect();
                    let mut out = vec![0u32; 2 * n];
                    cols.all_gather(&input, &mut out).unwrap();
                    for r in 0..2 {
                        let q = r * 3 + col;
                        for i in 0..n {
                            assert_eq!(
                                out[r * n + i],
                                (q * 7 + i * 13 + round) as u32,
                                "rank {me} column"
                            );
                        }
                    }
                }
            });
            s.spawn(|| {
                for round in 0..ROUNDS {
                    let mut v: Vec<f64> = (0..1000).map(|i| (me + i + round) as f64).collect();
                    comm.all_reduce_in_place(&mut v, ReduceOp::Max).unwrap();
                    for (i, x) in v.iter().enumerate() {
                        assert_eq!(*x, (5 + i + round) as f64, "rank {me} parent");
                    }
                }
            });
        });
    });
}

#[test]
fn opting_out() {
    check_split(4, LocalTransport::Tcp, |r| {
        (if r == 1 { None } else { Some(3) }, r as i64)
    });
    // Everyone opts out: no child anywhere, the parent still works.
    check_split(3, LocalTransport::Memory, |_| (None, 0));
}

#[test]
fn dup_is_independent_of_the_parent() {
    on_ranks(3, LocalTransport::Memory, Options::default(), |comm| {
        let dup = comm.dup().expect("dup");
        assert_eq!((dup.rank(), dup.size()), (comm.rank(), comm.size()));
        let mut a = [comm.rank() as u32 + 1; 5];
        dup.all_reduce_in_place(&mut a, ReduceOp::Prod).unwrap();
        assert_eq!(a, [6; 5]);
        drop(comm);
        let mut b = [dup.rank() as f64];
        dup.all_reduce_in_place(&mut b, ReduceOp::Max).unwrap();
        assert_eq!(b, [2.0]);
    });
}
