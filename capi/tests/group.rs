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
