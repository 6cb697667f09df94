//! The group cases, shared by the shared-memory (`tests/group.rs`) and TCP (`tests/group_tcp.rs`)
//! runs: exchanges far larger than a link's buffer must complete inside a group.

use super::{init_ranks, ok, on_ranks, random_bytes, Comm};
use oxccl::*;
use std::ffi::c_void;

const NULL: *mut c_void = std::ptr::null_mut();
const U8: oxcclDataType_t = oxcclDataType::oxcclUint8 as oxcclDataType_t;
const F64: oxcclDataType_t = oxcclDataType::oxcclFloat64 as oxcclDataType_t;
const I64: oxcclDataType_t = oxcclDataType::oxcclInt64 as oxcclDataType_t;
const SUM: oxcclRedOp_t = oxcclRedOp::oxcclSum as oxcclRedOp_t;

/// Each rank sends `bytes` to the next and receives as many from the previous, in one group.
pub fn ring_exchange(n: usize, bytes: usize) {
    on_ranks(n, move |comm, me| {
        let (next, prev) = ((me + 1) % n, (me + n - 1) % n);
        let mine = random_bytes(7, me, bytes);
        let mut got = vec![0u8; bytes];
        ok(oxcclGroupStart(), comm);
        // SAFETY: both buffers outlive the group and have `bytes` bytes.
        ok(
            unsafe { oxcclSend(mine.as_ptr().cast(), bytes, U8, next as i32, comm, NULL) },
            comm,
        );
        // SAFETY: as above.
        ok(
            unsafe { oxcclRecv(got.as_mut_ptr().cast(), bytes, U8, prev as i32, comm, NULL) },
            comm,
        );
        ok(oxcclGroupEnd(), comm);
        assert!(
            got == random_bytes(7, prev, bytes),
            "rank {me}: data from {prev}"
        );
    });
}

/// Elements rank `from` sends to rank `to` (differs per pair, so chunk counts differ).
fn pair_count(from: usize, to: usize, base: usize) -> usize {
    base * (1 + (from + 2 * to) % 3) + 5 * from + to
}

fn pair_data(from: usize, to: usize, base: usize) -> Vec<u8> {
    random_bytes(1000 + to as u64, from, pair_count(from, to, base) * 8)
}

/// Every rank sends a message of its own size to every rank (itself included), and an
/// all-reduce is posted in the middle of the group: one group end completes it all.
pub fn pairwise_with_a_collective(n: usize, base: usize) {
    on_ranks(n, move |comm, me| {
        let outgoing: Vec<Vec<u8>> = (0..n).map(|q| pair_data(me, q, base)).collect();
        let mut incoming: Vec<Vec<u8>> = (0..n)
            .map(|q| vec![0u8; pair_count(q, me, base) * 8])
            .collect();
        let mine: Vec<i64> = (0..1000).map(|i| (me * 1000 + i) as i64).collect();
        let mut sum = vec![0i64; 1000];
        ok(oxcclGroupStart(), comm);
        for q in (0..n).rev() {
            // SAFETY: the message outlives the group and has pair_count elements.
            ok(
                unsafe {
                    oxcclSend(
                        outgoing[q].as_ptr().cast(),
                        pair_count(me, q, base),
                        F64,
                        q as i32,
                        comm,
                        NULL,
                    )
                },
                comm,
            );
            if q == n / 2 {
                // SAFETY: both vectors have 1000 elements and outlive the group.
                ok(
                    unsafe {
                        oxcclAllReduce(
                            mine.as_ptr().cast(),
                            sum.as_mut_ptr().cast(),
                            1000,
                            I64,
                            SUM,
                            comm,
                            NULL,
                        )
                    },
                    comm,
                );
            }
        }
        for (q, buf) in incoming.iter_mut().enumerate() {
            // SAFETY: the buffer outlives the group and has pair_count elements.
            ok(
                unsafe {
                    oxcclRecv(
                        buf.as_mut_ptr().cast(),
                        pair_count(q, me, base),
                        F64,
                        q as i32,
                        comm,
                        NULL,
                    )
                },
                comm,
            );
        }
        ok(oxcclGroupEnd(), comm);
        for (q, buf) in incoming.iter().enumerate() {
            assert!(
                *buf == pair_data(q, me, base),
                "rank {me}: message from {q}"
            );
        }
        for (i, s) in sum.iter().enumerate() {
            let want: i64 = (0..n).map(|q| (q * 1000 + i) as i64).sum();
            assert_eq!(*s, want, "rank {me}: all-reduce element {i}");
        }
    });
}

/// One thread drives every rank (NCCL's single-process pattern): a group over all the
/// communicators with an all-reduce and a ring exchange on each.
pub fn one_thread_drives_all_ranks(n: usize, bytes: usize) {
    let comms: Vec<Comm> = init_ranks(n);
    let mine: Vec<Vec<u8>> = (0..n).map(|r| random_bytes(3, r, bytes)).collect();
    let mut got: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; bytes]).collect();
    let mut sums: Vec<Vec<f64>> = (0..n).map(|_| vec![0.0; 64]).collect();
    let values: Vec<Vec<f64>> = (0..n)
        .map(|r| (0..64).map(|i| (r * 64 + i) as f64).collect())
        .collect();
    ok(oxcclGroupStart(), NULL.cast());
    for (r, c) in comms.iter().enumerate() {
        let comm = c.raw();
        // SAFETY: every buffer outlives the group and has the size given.
        unsafe {
            ok(
                oxcclAllReduce(
                    values[r].as_ptr().cast(),
                    sums[r].as_mut_ptr().cast(),
                    64,
                    F64,
                    SUM,
                    comm,
                    NULL,
                ),
                comm,
            );
            ok(
                oxcclSend(
                    mine[r].as_ptr().cast(),
                    bytes,
                    U8,
                    ((r + 1) % n) as i32,
                    comm,
                    NULL,
                ),
                comm,
            );
            ok(
                oxcclRecv(
                    got[r].as_mut_ptr().cast(),
                    bytes,
                    U8,
                    ((r + n - 1) % n) as i32,
                    comm,
                    NULL,
                ),
                comm,
            );
        }
    }
    ok(oxcclGroupEnd(), NULL.cast());
    for r in 0..n {
        assert!(got[r] == mine[(r + n - 1) % n], "rank {r}: ring data");
        for (i, s) in sums[r].iter().enumerate() {
            let want: f64 = (0..n).map(|q| (q * 64 + i) as f64).sum();
            assert_eq!(*s, want, "rank {r}: all-reduce element {i}");
        }
    }
    for c in comms {
        ok(oxcclCommDestroy(c.raw()), c.raw());
    }
}
