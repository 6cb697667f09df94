//! The calls that move data without reducing it, through the C entry points on random bytes:
//! broadcast, all-gather, all-to-all, send/receive, out of place and in place (NCCL's
//! arrangements), with element sizes 1 and 8, and counts 0, 1 and odd.

// Every unsafe block here calls a C entry point with buffers of the sizes the call reads and
// writes (NULL only where the call reads nothing), which is all those functions require.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{ok, on_ranks, random_bytes};
use oxccl::*;
use std::ffi::c_void;

const NULL: *mut c_void = std::ptr::null_mut();
const TYPES: [(oxcclDataType, usize); 2] = [
    (oxcclDataType::oxcclUint8, 1),
    (oxcclDataType::oxcclFloat64, 8),
];

fn each_case(
    n: usize,
    f: impl Fn(oxcclComm_t, usize, oxcclDataType_t, usize, usize, u64) + Send + Sync + Clone + 'static,
) {
    on_ranks(n, move |comm, me| {
        for (t, (dt, es)) in TYPES.into_iter().enumerate() {
            for (c, count) in [0usize, 1, 1237].into_iter().enumerate() {
                f(
                    comm,
                    me,
                    dt as oxcclDataType_t,
                    es,
                    count,
                    (t * 10 + c) as u64,
                );
            }
        }
    });
}

#[test]
fn broadcast_from_every_root() {
    for n in [2, 3] {
        each_case(n, move |comm, me, dt, es, count, seed| {
            for root in 0..n {
                let data = random_bytes(seed, root, count * es);
                let mut out = vec![0u8; count * es];
                let send = if me == root {
                    data.as_ptr().cast()
                } else {
                    std::ptr::null()
                };
                ok(
                    unsafe {
                        oxcclBroadcast(
                            send,
                            out.as_mut_ptr().cast(),
                            count,
                            dt,
                            root as i32,
                            comm,
                            NULL,
                        )
                    },
                    comm,
                );
                assert_eq!(out, data, "broadcast from {root} to {me}");
                let mut buf = if me == root {
                    data.clone()
                } else {
                    vec![0u8; count * es]
                };
                let p = buf.as_mut_ptr().cast::<c_void>();
                ok(
                    unsafe { oxcclBroadcast(p, p, count, dt, root as i32, comm, NULL) },
                    comm,
                );
                assert_eq!(buf, data, "in-place broadcast from {root} to {me}");
            }
        });
    }
}

#[test]
fn all_gather() {
    for n in [2, 4] {
        each_case(n, move |comm, me, dt, es, count, seed| {
            let blocks: Vec<Vec<u8>> = (0..n).map(|q| random_bytes(seed, q, count * es)).collect();
            let want = blocks.concat();
            let mut out = vec![0u8; n * count * es];
            ok(
                unsafe {
                    oxcclAllGather(
                        blocks[me].as_ptr().cast(),
                        out.as_mut_ptr().cast(),
                        count,
                        dt,
                        comm,
                        NULL,
                    )
                },
                comm,
            );
            assert_eq!(out, want, "all-gather on {me}");
            let mut buf = vec![0u8; n * count * es];
            buf[me * count * es..(me + 1) * count * es].copy_from_slice(&blocks[me]);
            let r = buf.as_mut_ptr();
            let s = unsafe { r.add(me * count * es) };
            ok(
                unsafe { oxcclAllGather(s.cast(), r.cast(), count, dt, comm, NULL) },
                comm,
            );
            assert_eq!(buf, want, "in-place all-gather on {me}");
        });
    }
}

#[test]
fn all_to_all() {
    for n in [2, 3] {
        each_case(n, move |comm, me, dt, es, count, seed| {
            let block = count * es;
            let inputs: Vec<Vec<u8>> = (0..n).map(|q| random_bytes(seed, q, n * block)).collect();
            let want: Vec<u8> = (0..n)
                .flat_map(|q| inputs[q][me * block..(me + 1) * block].to_vec())
                .collect();
            let mut out = vec![0u8; n * block];
            ok(
                unsafe {
                    oxcclAlltoAll(
                        inputs[me].as_ptr().cast(),
                        out.as_mut_ptr().cast(),
                        count,
                        dt,
                        comm,
                        NULL,
                    )
                },
                comm,
            );
            assert_eq!(out, want, "all-to-all on {me}");
            let mut buf = inputs[me].clone();
            let p = buf.as_mut_ptr().cast::<c_void>();
            ok(unsafe { oxcclAlltoAll(p, p, count, dt, comm, NULL) }, comm);
            assert_eq!(buf, want, "in-place all-to-all on {me}");
        });
    }
}

#[test]
fn send_and_receive_outside_groups() {
    each_case(3, move |comm, me, dt, es, count, seed| {
        // 0 -> 1 -> 2 -> 0 in turn: each blocking call finds its match.
        let n = 3;
        for sender in 0..n {
            let to = (sender + 1) % n;
            let data = random_bytes(seed, sender, count * es);
            if me == sender {
                ok(
                    unsafe { oxcclSend(data.as_ptr().cast(), count, dt, to as i32, comm, NULL) },
                    comm,
                );
            } else if me == to {
                let mut out = vec![0u8; count * es];
                ok(
                    unsafe {
                        oxcclRecv(
                            out.as_mut_ptr().cast(),
                            count,
                            dt,
                            sender as i32,
                            comm,
                            NULL,
                        )
                    },
                    comm,
                );
                assert_eq!(out, data, "{sender} -> {to}");
            }
        }
    });
}

#[test]
fn queries() {
    on_ranks(3, |comm, me| {
        let (mut count, mut rank) = (0, 0);
        ok(unsafe { oxcclCommCount(comm, &mut count) }, comm);
        ok(unsafe { oxcclCommUserRank(comm, &mut rank) }, comm);
        assert_eq!((count, rank), (3, me as i32));
        assert_eq!(
            common::last_error(comm),
            "",
            "a fresh communicator has no error"
        );
    });
}

#[test]
fn split_into_halves_and_opt_out() {
    let n = 5;
    on_ranks(n, move |comm, me| {
        // Ranks 0..4 split into halves by rank (keys reversed); rank 4 opts out.
        let color = if me == 4 {
            OXCCL_SPLIT_NOCOLOR
        } else {
            (me / 2) as i32
        };
        let mut child: oxcclComm_t = std::ptr::null_mut();
        let config = oxcclConfig_t {
            size: std::mem::size_of::<oxcclConfig_t>(),
            magic: OXCCL_CONFIG_MAGIC,
            version: OXCCL_VERSION_CODE as u32,
            blocking: 1,
        };
        let cfg = if me % 2 == 0 {
            &config as *const _ as *mut _
        } else {
            std::ptr::null_mut()
        };
        ok(
            unsafe { oxcclCommSplit(comm, color, -(me as i32), &mut child, cfg) },
            comm,
        );
        if me == 4 {
            assert!(child.is_null(), "NOCOLOR gives NULL");
            return;
        }
        let (mut size, mut rank) = (0, 0);
        ok(unsafe { oxcclCommCount(child, &mut size) }, child);
        ok(unsafe { oxcclCommUserRank(child, &mut rank) }, child);
        // Keys -me: the higher parent rank comes first.
        assert_eq!((size, rank), (2, 1 - (me % 2) as i32), "rank {me}");
        let mine = [me as i64; 9];
        let mut sum = [0i64; 9];
        let (i64_, s) = (
            oxcclDataType::oxcclInt64 as i32,
            oxcclRedOp::oxcclSum as i32,
        );
        ok(
            unsafe {
                oxcclAllReduce(
                    mine.as_ptr().cast(),
                    sum.as_mut_ptr().cast(),
                    9,
                    i64_,
                    s,
                    child,
                    NULL,
                )
            },
            child,
        );
        let pair = (me / 2 * 2) as i64;
        assert_eq!(sum, [2 * pair + 1; 9], "rank {me}: the half's sum");
        ok(oxcclCommDestroy(child), child);
    });
}
