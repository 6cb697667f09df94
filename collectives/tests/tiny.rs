//! The tiny all-reduce (up to 368 bytes per rank, through each shared-memory ring's mailbox):
//! every dtype and reduction at every tiny size, in place and out of place, many calls in a
//! row (the two mailbox slots alternate), mixed with stream calls; disagreeing ranks get a
//! mismatch, an absent rank a timeout naming it, a dead one an error, all within the deadline.

mod common;

use common::{
    assert_every_rank_failed_with_a_mismatch, check, data, each, expected, on_ranks, opts,
};
use oxccl_collectives::{Communicator, DataType, Error, LocalTransport, Options, ReduceOp};
use std::time::Duration;

/// Bytes per rank the tiny path carries.
const TINY: usize = 368;

fn ops_for(dtype: DataType) -> [ReduceOp; 6] {
    let scale = if dtype.is_float() { 0.5 } else { 3.0 };
    [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
        ReduceOp::PreMulSum(scale),
    ]
}

fn every_dtype_op_and_size(c: Communicator) {
    let p = c.size();
    let me = c.rank();
    let mut seed = 11;
    for dtype in DataType::ALL {
        let es = dtype.size();
        for op in ops_for(dtype) {
            for count in 0..=TINY / es {
                seed += 1;
                let input = data(dtype, op, seed, me, count);
                let what = format!("{p} ranks {dtype:?} {op:?} count {count}");
                let mut out = vec![0u8; input.len()];
                c.all_reduce_bytes(&input, &mut out, dtype, op).unwrap();
                check(&what, dtype, &out, |i| expected(dtype, op, seed, p, i));
                let mut buf = input.clone();
                c.all_reduce_in_place_bytes(&mut buf, dtype, op).unwrap();
                check(&format!("{what} in place"), dtype, &buf, |i| {
                    expected(dtype, op, seed, p, i)
                });
            }
        }
    }
    // Tiny calls between stream calls keep both in step.
    let mut b = vec![me as u32; 1000];
    c.broadcast(&mut b, p - 1).unwrap();
    assert!(b.iter().all(|&x| x == (p - 1) as u32));
    let mut one = [me as u64 + 1];
    c.all_reduce_in_place(&mut one, ReduceOp::Sum).unwrap();
    assert_eq!(one[0], (p * (p + 1) / 2) as u64);
    c.barrier().unwrap();
}

#[test]
fn every_dtype_and_op_at_every_tiny_size() {
    for p in [2, 3, 5] {
        on_ranks(
            p,
            LocalTransport::Memory,
            Options::default(),
            every_dtype_op_and_size,
        );
    }
    on_ranks(
        2,
        LocalTransport::Shm,
        Options::default(),
        every_dtype_op_and_size,
    );
}

#[test]
fn many_calls_in_a_row_alternate_slots_correctly() {
    // More ranks than the fast path keeps on its stack, and thousands of calls.
    for p in [2, 17] {
        let calls = if p == 2 { 5000 } else { 200 };
        on_ranks(p, LocalTransport::Memory, Options::default(), move |c| {
            let me = c.rank() as i64;
            for k in 0..calls as i64 {
                let v = [me * 1000 + k, k - me];
                let mut out = [0i64; 2];
                c.all_reduce(&v, &mut out, ReduceOp::Sum).unwrap();
                let ranks = (0..p as i64).sum::<i64>();
                assert_eq!(
                    out,
                    [ranks * 1000 + k * p as i64, k * p as i64 - ranks],
                    "call {k}"
                );
            }
        });
    }
}

/// Runs `f(rank, comm)` on `p` thread ranks and returns each rank's result and duration.
#[test]
fn disagreeing_ranks_get_a_mismatch() {
    type Case = fn(usize, &Communicator) -> Result<(), Error>;
    let cases: Vec<(&str, Case)> = vec![
        ("count", |r, c| {
            c.all_reduce(&vec![1f32; 2 + r], &mut vec![0f32; 2 + r], ReduceOp::Sum)
        }),
        ("dtype", |r, c| {
            if r == 0 {
                c.all_reduce(&[1f32; 2], &mut [0f32; 2], ReduceOp::Sum)
            } else {
                c.all_reduce(&[1i32; 2], &mut [0i32; 2], ReduceOp::Sum)
            }
        }),
        ("op", |r, c| {
            let op = if r == 1 { ReduceOp::Min } else { ReduceOp::Sum };
            c.all_reduce(&[1f64; 1], &mut [0f64; 1], op)
        }),
        ("scale", |r, c| {
            let op = ReduceOp::PreMulSum(if r == 1 { 0.25 } else { 0.5 });
            c.all_reduce(&[1f32; 2], &mut [0f32; 2], op)
        }),
        ("largest tiny against small", |r, c| {
            let n = if r == 0 { 92 } else { 93 };
            c.all_reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum)
        }),
        ("tiny against a stream all-reduce", |r, c| {
            let n = if r == 0 { 2 } else { 10_000 };
            c.all_reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum)
        }),
        ("tiny against a broadcast", |r, c| {
            let mut b = [1u64; 3];
            if r == 2 {
                c.broadcast(&mut b, 0)
            } else {
                c.all_reduce_in_place(&mut b, ReduceOp::Max)
            }
        }),
        ("a skipped tiny call", |r, c| {
            if r != 1 {
                c.all_reduce_in_place(&mut [1u8; 8], ReduceOp::Sum)?;
            }
            c.all_reduce_in_place(&mut [1u32; 100], ReduceOp::Sum)
        }),
    ];
    for (name, case) in cases {
        // A rank whose own peers agreed may finish the call; its next one then fails.
        let res = each(3, opts(20.0), move |r, c| {
            case(r, c).and_then(|()| c.barrier())
        });
        assert_every_rank_failed_with_a_mismatch(name, &res);
    }
}

#[test]
fn an_absent_rank_times_out_and_a_failed_one_stops_the_others() {
    let res = each(3, opts(0.5), |r, c| {
        if r == 2 {
            // Alive past the others' deadline, never calling.
            std::thread::sleep(Duration::from_secs(2));
            return Ok(());
        }
        c.all_reduce_in_place(&mut [1f32; 2], ReduceOp::Sum)
    });
    for (r, (out, took)) in res.iter().take(2).enumerate() {
        let e = out.as_ref().expect_err("must time out");
        assert!(
            *took < Duration::from_millis(1900),
            "rank {r} took {took:?}"
        );
        assert!(matches!(e, Error::Timeout { peer: 2, .. }), "rank {r}: {e}");
    }
    // A rank that aborts makes the others' tiny calls fail long before their deadline.
    let res = each(3, opts(30.0), |r, c| -> Result<(), Error> {
        if r == 0 {
            std::thread::sleep(Duration::from_millis(100));
            c.abort();
            return Err(Error::Aborted {
                op: "test",
                reason: "by the test".into(),
            });
        }
        loop {
            c.all_reduce_in_place(&mut [1u8; 4], ReduceOp::Sum)?;
        }
    });
    for (r, (out, took)) in res.iter().enumerate().skip(1) {
        let e = out.as_ref().expect_err("must fail");
        assert!(
            *took < Duration::from_secs(10),
            "rank {r} took {took:?}: {e}"
        );
    }
}

#[test]
fn a_small_bytes_of_zero_turns_the_tiny_path_off() {
    // The schedule path and the tiny path must agree in results.
    let o = Options {
        small_bytes: 0,
        ..Options::default()
    };
    on_ranks(3, LocalTransport::Memory, o, |c| {
        let me = c.rank();
        let seed = 5;
        let input = data(DataType::F32, ReduceOp::Sum, seed, me, 5);
        let mut out = vec![0u8; input.len()];
        c.all_reduce_bytes(&input, &mut out, DataType::F32, ReduceOp::Sum)
            .unwrap();
        check("schedule path", DataType::F32, &out, |i| {
            expected(DataType::F32, ReduceOp::Sum, seed, 3, i)
        });
    });
}
