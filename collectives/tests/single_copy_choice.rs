//! The sender's per-message choice between pulled and through the ring
//! (`OXCCL_SINGLE_COPY_CHOICE`, `oxccl_transport::stream::choice`): every collective gets the
//! same results whichever path each message takes: all-reduce (every dtype), all-to-all-v with
//! uneven counts, and a group exchange, with the threshold at its floor so that nearly every
//! send is a candidate (a collective's messages from `COLLECTIVE_SINGLE_COPY_MIN`), on shm (2 ranks) and thread ranks (3), for `auto` (both paths,
//! switching as the measurements come in), `pull` and `stream`. Reductions are checked on
//! every element against the reference (`common::check`: exact integer-valued inputs, float
//! tolerance `common::tolerance`), moved data bit for bit.
//!
//! Only messages that may be pulled travel as an offer (a header first); a reduction's go
//! plainly through the stream at any size. Both ends decide from the job, so a group mixing
//! the two kinds, at sizes around the threshold, must keep every stream's framing in step.

mod common;

use common::{all_reduce_sum_checked, check, data, expected, on_ranks};
use oxccl_collectives::{
    DataType, LocalTransport, Options, Parts, ReduceOp, COLLECTIVE_SINGLE_COPY_MIN,
};
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
                    let what = format!("{choice:?} all-reduce {dtype:?} x{n}");
                    all_reduce_sum_checked(&comm, dtype, n, round * 1000 + n as u64, &what);
                }
            }
        }
        // All-to-all-v: rank r sends (r + q + 1) * 90_000 bytes to q (below and above the
        // collectives' single-copy threshold), none to itself on odd r.
        let amount = |from: usize, to: usize| {
            if from == to && from % 2 == 1 {
                0
            } else {
                (from + to + 1) * 90_000
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

/// The threshold of the mixed-group test: above the floor, below the small all-reduce's limit
/// (16 KiB), so that a small all-reduce queued behind the group's sends crosses it too.
const MIXED_MIN: usize = 8 << 10;

/// A group of point-to-point sends and receives (may pull) at sizes around [`MIXED_MIN`],
/// all-reduces (never pull, small ones queued behind the sends) of the same sizes, and
/// all-gathers and all-gather-v (may pull) with parts as far around
/// [`COLLECTIVE_SINGLE_COPY_MIN`], every result checked. The all-gather-v's odd ranks take the parts in
/// reverse order with gaps, so that a message in one piece at its sender lands in several
/// places at its receiver, and the other way round. `rhd` sends several blocks per message.
fn mixed(choice: Choice, transport: LocalTransport, p: usize, algorithm: Option<&'static str>) {
    let opts = Options {
        single_copy_min: MIXED_MIN,
        algorithm: algorithm.map(str::to_string),
        ..options(choice)
    };
    on_ranks(p, transport, opts, move |comm| {
        let (me, p) = (comm.rank(), comm.size());
        let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
        let dtype = DataType::F32;
        for bytes in [
            MIXED_MIN - 64,
            MIXED_MIN - 32,
            MIXED_MIN - 4,
            MIXED_MIN,
            MIXED_MIN + 4,
            MIXED_MIN + 32,
            2 * MIXED_MIN,
            200_004,
        ] {
            let n = bytes / 4;
            // The all-gathers' parts: as far from the collectives' threshold.
            let part_bytes = bytes + COLLECTIVE_SINGLE_COPY_MIN - MIXED_MIN;
            let pn = part_bytes / 4;
            let seed = bytes as u64;
            let out_next: Vec<u8> = (0..bytes).map(|i| byte(me, next, i)).collect();
            let out_prev: Vec<u8> = (0..bytes).map(|i| byte(me, prev, i + 7)).collect();
            let (mut from_prev, mut from_next) = (vec![0u8; bytes], vec![0u8; bytes]);
            let mut reduced = data(dtype, ReduceOp::Sum, seed, me, n);
            let mine = data(dtype, ReduceOp::Sum, seed + 1, me, pn);
            let mut gathered = vec![0u8; part_bytes * p];
            // All-gather-v: rank q's part (q + 1) * n / p elements, reversed with gaps here on
            // odd ranks.
            let counts: Vec<usize> = (0..p).map(|q| (q + 1) * pn / p).collect();
            let displs: Vec<usize> = if me % 2 == 1 {
                let mut at = 0;
                let mut d = vec![0; p];
                for q in (0..p).rev() {
                    d[q] = at;
                    at += counts[q] + 3;
                }
                d
            } else {
                counts
                    .iter()
                    .scan(0, |at, c| Some(std::mem::replace(at, *at + c)))
                    .collect()
            };
            let room = (0..p).map(|q| displs[q] + counts[q]).max().unwrap_or(0);
            let part = data(dtype, ReduceOp::Sum, seed + 2, me, counts[me]);
            let mut gathered_v = vec![0u8; room * 4];
            let g = comm.group();
            g.send(&out_next, next).unwrap();
            g.send(&out_prev, prev).unwrap();
            g.call(|c| c.all_reduce_in_place_bytes(&mut reduced, dtype, ReduceOp::Sum));
            g.call(|c| c.all_gather_bytes(&mine, &mut gathered, dtype));
            g.call(|c| {
                let parts = oxccl_collectives::Parts::with_displs(&counts, &displs);
                c.all_gather_v_bytes(&part, &mut gathered_v, parts, dtype)
            });
            g.recv(&mut from_prev, prev).unwrap();
            g.recv(&mut from_next, next).unwrap();
            g.end().unwrap();
            let what = format!("{choice:?} {algorithm:?} mixed group, {bytes} bytes");
            // prev sends us its out_next, next its out_prev; with 2 ranks they are one peer,
            // whose two messages arrive in send order, which is the same thing.
            assert!(
                (0..bytes).all(|i| from_prev[i] == byte(prev, me, i)),
                "{what}: from prev"
            );
            assert!(
                (0..bytes).all(|i| from_next[i] == byte(next, me, i + 7)),
                "{what}: from next"
            );
            check(&format!("{what}: all-reduce"), dtype, &reduced, |i| {
                expected(dtype, ReduceOp::Sum, seed, p, i)
            });
            for q in 0..p {
                assert_eq!(
                    gathered[q * part_bytes..(q + 1) * part_bytes],
                    data(dtype, ReduceOp::Sum, seed + 1, q, pn),
                    "{what}: all-gather, rank {q}'s part"
                );
                let at = displs[q] * 4;
                assert_eq!(
                    gathered_v[at..at + counts[q] * 4],
                    data(dtype, ReduceOp::Sum, seed + 2, q, counts[q]),
                    "{what}: all-gather-v, rank {q}'s part"
                );
            }
        }
    });
}

#[test]
fn a_group_of_pulled_and_plain_messages_keeps_its_framing_over_shm() {
    for choice in [Choice::Auto, Choice::Pull, Choice::Stream] {
        mixed(choice, LocalTransport::Shm, 2, None);
    }
}

#[test]
fn a_group_of_pulled_and_plain_messages_keeps_its_framing_over_thread_rings() {
    for choice in [Choice::Auto, Choice::Pull, Choice::Stream] {
        for algorithm in [None, Some("rhd")] {
            mixed(choice, LocalTransport::Memory, 4, algorithm);
        }
    }
}
