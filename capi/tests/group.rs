//! Groups over shared memory (thread ranks of one process meet through the store and link with
//! shared-memory rings of `OXCCL_RING_BYTES`, 1 MiB by default): exchanges of several MiB.

mod common;

use common::groups::*;
use common::{ok, on_ranks};
use oxccl::*;
use std::ffi::c_void;

const MIB: usize = 1 << 20;

#[test]
fn ring_exchange_larger_than_the_ring() {
    for n in 2..=4 {
        ring_exchange(n, 6 * MIB + 3);
    }
}

#[test]
fn pairwise_exchange_and_a_collective_in_one_group() {
    for n in 2..=4 {
        pairwise_with_a_collective(n, 200_000);
    }
}

#[test]
fn one_thread_drives_all_ranks_of_a_group() {
    one_thread_drives_all_ranks(3, 3 * MIB);
}

#[test]
fn nested_groups_run_at_the_outermost_end() {
    on_ranks(2, |comm, me| {
        let mine = [me as u32 + 1; 8];
        let mut out = [0u32; 8];
        let (s, r) = (
            mine.as_ptr().cast::<c_void>(),
            out.as_mut_ptr().cast::<c_void>(),
        );
        let (u32_, sum) = (
            oxcclDataType::oxcclUint32 as i32,
            oxcclRedOp::oxcclSum as i32,
        );
        ok(oxcclGroupStart(), comm);
        ok(oxcclGroupStart(), comm);
        // SAFETY: both buffers have 8 elements and outlive the group.
        ok(
            unsafe { oxcclAllReduce(s, r, 8, u32_, sum, comm, std::ptr::null_mut()) },
            comm,
        );
        ok(oxcclGroupEnd(), comm);
        assert_eq!(out, [0; 8], "the inner end runs nothing");
        ok(oxcclGroupEnd(), comm);
        assert_eq!(out, [3; 8]);
    });
}

#[test]
fn one_thread_creates_and_splits_every_rank_in_groups() {
    // NCCL's single-process pattern: one thread makes every rank inside a group.
    let n = 4;
    let mut id = oxcclUniqueId { internal: [0; 128] };
    // SAFETY: a valid id to write.
    ok(unsafe { oxcclGetUniqueId(&mut id) }, std::ptr::null_mut());
    let mut comms: Vec<oxcclComm_t> = vec![std::ptr::null_mut(); n];
    ok(oxcclGroupStart(), std::ptr::null_mut());
    for (r, c) in comms.iter_mut().enumerate() {
        // SAFETY: `c` is written at the group's end, and outlives it.
        ok(
            unsafe { oxcclCommInitRank(c, n as i32, id, r as i32) },
            std::ptr::null_mut(),
        );
    }
    ok(oxcclGroupEnd(), std::ptr::null_mut());
    assert!(comms.iter().all(|c| !c.is_null()));
    // Evens and odds, in one group.
    let mut kids: Vec<oxcclComm_t> = vec![std::ptr::null_mut(); n];
    ok(oxcclGroupStart(), std::ptr::null_mut());
    for r in 0..n {
        // SAFETY: `kids[r]` is written at the group's end, and outlives it.
        let res = unsafe {
            oxcclCommSplit(
                comms[r],
                (r % 2) as i32,
                r as i32,
                &mut kids[r],
                std::ptr::null_mut(),
            )
        };
        ok(res, comms[r]);
    }
    ok(oxcclGroupEnd(), std::ptr::null_mut());
    let values: Vec<[i32; 4]> = (0..n).map(|r| [r as i32 + 1; 4]).collect();
    let mut sums = vec![[0i32; 4]; n];
    let (i32_, sum) = (
        oxcclDataType::oxcclInt32 as i32,
        oxcclRedOp::oxcclSum as i32,
    );
    ok(oxcclGroupStart(), std::ptr::null_mut());
    for r in 0..n {
        let mut rank = -1;
        // SAFETY: a valid int to write.
        ok(unsafe { oxcclCommUserRank(kids[r], &mut rank) }, kids[r]);
        assert_eq!(rank, (r / 2) as i32, "rank {r} in its child");
        let (s, d) = (
            values[r].as_ptr().cast::<c_void>(),
            sums[r].as_mut_ptr().cast::<c_void>(),
        );
        // SAFETY: 4 elements each, outliving the group.
        ok(
            unsafe { oxcclAllReduce(s, d, 4, i32_, sum, kids[r], std::ptr::null_mut()) },
            kids[r],
        );
    }
    ok(oxcclGroupEnd(), std::ptr::null_mut());
    for (r, s) in sums.iter().enumerate() {
        // Evens: ranks 0 and 2 (values 1 + 3); odds: 1 and 3 (2 + 4).
        assert_eq!(*s, [if r % 2 == 0 { 4 } else { 6 }; 4], "rank {r}");
    }
    for c in kids.into_iter().chain(comms) {
        ok(oxcclCommDestroy(c), c);
    }
}
