//! Every rank of a failed call learns what failed first: a mismatched call fails on every rank
//! in that call (ranks that only send included), in words (`float32`, `sum`, `root 1`), and a
//! rank that aborts is named by every other rank's error, with the operation.

mod common;

use common::{each, opts};
use oxccl_collectives::{Communicator, Error, ReduceOp};
use std::time::Duration;

type Case = fn(usize, &Communicator) -> Result<(), Error>;

/// Each case with the words every rank's error must contain.
fn cases() -> Vec<(&'static str, Case, &'static [&'static str])> {
    vec![
        (
            "broadcast roots",
            |r, c| c.broadcast(&mut [0u32; 5000], usize::from(r == 2)),
            &["broadcast", "uint32", "root 0", "root 1"],
        ),
        (
            "broadcast counts",
            |r, c| c.broadcast(&mut vec![1f32; 100 + usize::from(r == 2)], 0),
            &["broadcast", "float32", "count 100", "count 101"],
        ),
        (
            "reduce counts",
            |r, c| {
                let n = 100 + usize::from(r == 1);
                c.reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum, 0)
            },
            &["reduce", "float32", "sum", "count 101"],
        ),
        (
            "reduce roots",
            |r, c| {
                let root = usize::from(r == 2);
                c.reduce(&[1f64; 64], &mut [0f64; 64], ReduceOp::Max, root)
            },
            &["reduce", "float64", "max", "root 1"],
        ),
        (
            "all_reduce dtypes",
            |r, c| {
                if r == 0 {
                    c.all_reduce(&[1f32; 4], &mut [0f32; 4], ReduceOp::Sum)
                } else {
                    c.all_reduce(&[1i32; 4], &mut [0i32; 4], ReduceOp::Sum)
                }
            },
            &["all_reduce", "float32", "int32", "sum"],
        ),
        (
            "all_reduce ops, large",
            |r, c| {
                let op = if r == 1 { ReduceOp::Max } else { ReduceOp::Sum };
                c.all_reduce(&vec![1f32; 300_000], &mut vec![0f32; 300_000], op)
            },
            &["all_reduce", "float32", "sum", "max"],
        ),
    ]
}

#[test]
fn every_rank_of_a_mismatched_call_fails_in_it_with_names() {
    for p in [3, 4] {
        for (name, case, words) in cases() {
            // No call after: the mismatched call itself must fail on every rank.
            let res = each(p, opts(20.0), case);
            for (r, (out, took)) in res.iter().enumerate() {
                let e = match out {
                    Err(e) => e.to_string(),
                    Ok(()) => panic!("{name}, {p} ranks: rank {r} returned Ok"),
                };
                eprintln!("{name}, {p} ranks, rank {r} after {took:?}: {e}");
                // A generous bound for a loaded machine; the acceptance script measures 1 s.
                assert!(*took < Duration::from_secs(5), "{name}: rank {r}: {took:?}");
                for w in words {
                    assert!(
                        e.contains(w),
                        "{name}, {p} ranks, rank {r}: no {w:?} in: {e}"
                    );
                }
                assert!(
                    !e.contains('#') || e.contains("call #"),
                    "{name}: a code instead of a name: {e}"
                );
            }
        }
    }
}

#[test]
fn a_p2p_count_mismatch_names_both_sides_on_the_receiver_and_reaches_the_sender() {
    let res = each(2, opts(20.0), |r, c| {
        if r == 0 {
            // The send waits for the receiver's receipt: it fails in this call.
            c.send(&[1f32; 100], 1)
        } else {
            c.recv(&mut [0f32; 101], 0)
        }
    });
    let receiver = res[1]
        .0
        .as_ref()
        .expect_err("the receiver must fail")
        .to_string();
    for w in ["send/recv", "count 100", "count 101", "float32"] {
        assert!(receiver.contains(w), "no {w:?} in: {receiver}");
    }
    let sender = res[0]
        .0
        .as_ref()
        .expect_err("the sender must fail")
        .to_string();
    assert!(sender.contains("count 101"), "{sender}");
}

#[test]
fn every_survivor_names_the_rank_that_failed_first_and_its_operation() {
    for p in [2, 3, 4] {
        let victim = p - 1;
        let res = each(p, opts(30.0), move |r, c| {
            if r == victim {
                std::thread::sleep(Duration::from_millis(100));
                c.abort();
                return Ok(());
            }
            c.all_reduce(
                &vec![1f32; 1 << 20],
                &mut vec![0f32; 1 << 20],
                ReduceOp::Sum,
            )
        });
        for (r, (out, _)) in res.iter().enumerate().filter(|&(r, _)| r != victim) {
            let e = out.as_ref().expect_err("a survivor must fail");
            eprintln!("{p} ranks, rank {r}: {e}");
            assert_eq!(e.failed_rank(), Some(victim), "{p} ranks, rank {r}: {e}");
            let text = e.to_string();
            assert!(text.contains(&format!("rank {victim}")), "{text}");
            assert!(text.contains("all_reduce"), "{text}");
        }
    }
}

#[test]
fn a_mismatch_far_away_is_named_by_every_rank() {
    // Rank 3 disagrees with its neighbours only; ranks 0 and 1 hear of it through the board.
    let res = each(4, opts(20.0), |r, c| {
        let n = 200_000 + if r == 3 { 8 } else { 0 };
        c.all_reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum)
    });
    for (r, (out, _)) in res.iter().enumerate() {
        let e = out.as_ref().expect_err("every rank must fail").to_string();
        eprintln!("rank {r}: {e}");
        assert!(
            e.contains("count 200008") && e.contains("float32"),
            "rank {r}: {e}"
        );
    }
}
