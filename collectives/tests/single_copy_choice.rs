//! The sender's per-message choice between pulled and through the ring
//! (`OXCCL_SINGLE_COPY_CHOICE`, `oxccl_transport::stream::choice`): every collective gets the
//! same results whichever path each message takes: all-reduce (every dtype), all-to-all-v with
//! uneven counts, and a group exchange, with the threshold at its floor so that nearly every
//! message is a candidate, on shm (2 ranks) and thread ranks (3), for `auto` (both paths,
//! switching as the measurements come in), `pull` and `stream`. Reductions are checked on
//! every element against the reference (`common::check`: exact integer-valued inputs, float
//! tolerance `common::tolerance`), moved data bit for bit.

mod common;

use common::{check, data, expected, on_ranks};
use oxccl_collectives::{DataType, LocalTransport, Options, Parts, ReduceOp};
use oxccl_transport::stream::{Choice, MIN_SINGLE_COPY};

const DTYPES: [DataType; 4] = [DataType::F32, DataType::F64, DataType::BF16, DataType::I32];
/// Elements per all-reduce: below the floor, a few size classes, and one over a ring's size.
const COUNTS: [usize; 4] = [300, 5_000, 70_001, 300_000];

fn options(choice: Choice) -> Options {
    Options {
        single_copy_min: MIN_SINGLE_COPY,
        single_copy_choice: choice,
        ..Options::default()
    }
}

/// Bytes for (sender, receiver, index), never all zero.
fn byte(from: usize, to: usize, i: usize) -> u8 {
    ((i * 131 + from * 17 + to * 5 + i / 251) % 251) as u8 + 1
}

fn run(choice: Choice, transport: LocalTransport, p: usize) {
    on_ranks(p, transport, options(choice), move |comm| {
        let (me, p) = (comm.rank(), comm.size());
        // Repeated, so that `auto` measures both paths and then chooses between them.
        for round in 0..2u64 {
            for dtype in DTYPES {
                for n in COUNTS {
                    let seed = round * 1000 + n as u64;
                    let mut buf = data(dtype, ReduceOp::Sum, seed, me, n);
                    comm.all_reduce_in_place_bytes(&mut buf, dtype, ReduceOp::Sum)
                        .unwrap();
                    check(
                        &format!("{choice:?} all-reduce {dtype:?} x{n}"),
                        dtype,
                        &buf,
                        |i| expected(dtype, ReduceOp::Sum, seed, p, i),
                    );
                }
            }
        }
        // All-to-all-v: rank r sends (r + q + 1) * 9_000 bytes to q, none to itself on odd r.
        let amount = |from: usize, to: usize| {
            if from == to && from % 2 == 1 {
                0
            } else {
                (from + to + 1) * 9_000
            }
        };
        let send: Vec<usize> = (0..p).map(|q| amount(me, q)).collect();
        let recv: Vec<usize> = (0..p).map(|q| amount(q, me)).collect();
        let input: Vec<u8> = (0..p)
            .flat_map(|q| (0..amount(me, q)).map(move |i| byte(me, q, i)))
            .collect();
        for _ in 0..3 {
            let mut out = vec![0u8; recv.iter().sum()];
            comm.all_to_all_v(&input, Parts::packed(&send), &mut out, Parts::packed(&recv))
                .unwrap();
            let mut at = 0;
            for q in 0..p {
                for i in 0..amount(q, me) {
                    assert_eq!(
                        out[at + i],
                        byte(q, me, i),
                        "{choice:?} all-to-all-v from {q}"
                    );
                }
                at += amount(q, me);
            }
        }
        // A group exchange around the ring, both ways, 3 MiB each.
        let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
        let n = 3 << 20;
        let out_next: Vec<u8> = (0..n).map(|i| byte(me, next, i)).collect();
        let out_prev: Vec<u8> = (0..n).map(|i| byte(me, prev, i)).collect();
        let (mut from_prev, mut from_next) = (vec![0u8; n], vec![0u8; n]);
        let g = comm.group();
        g.send(&out_next, next).unwrap();
        g.send(&out_prev, prev).unwrap();
        g.recv(&mut from_prev, prev).unwrap();
        g.recv(&mut from_next, next).unwrap();
        g.end().unwrap();
        // With 2 ranks next and prev are one peer: its two messages arrive in send order,
        // both with the same bytes.
        assert!(
            (0..n).all(|i| from_prev[i] == byte(prev, me, i)),
            "{choice:?} group"
        );
        assert!(
            (0..n).all(|i| from_next[i] == byte(next, me, i)),
            "{choice:?} group"
        );
    });
}

#[test]
fn collectives_are_right_on_either_path_over_shm() {
    for choice in [Choice::Auto, Choice::Pull, Choice::Stream] {
        run(choice, LocalTransport::Shm, 2);
    }
}

#[test]
fn collectives_are_right_on_either_path_over_thread_rings() {
    for choice in [Choice::Auto, Choice::Pull, Choice::Stream] {
        run(choice, LocalTransport::Memory, 3);
    }
}
