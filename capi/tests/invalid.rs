//! Bad input through the C entry points: each call returns the documented code with a readable
//! message, nothing is sent, and the communicator works afterwards (every rank makes the same bad
//! calls, then a checked all-reduce).

// Every unsafe block here calls a C entry point with buffers of the sizes the call reads and
// writes (NULL only where the call reads nothing, or where the test wants the NULL refused),
// which is all those functions require.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{last_error, ok, on_ranks};
use oxccl::oxcclResult_t::*;
use oxccl::*;
use std::ffi::{c_void, CStr};

const NULL: *mut c_void = std::ptr::null_mut();
const F32: oxcclDataType_t = oxcclDataType::oxcclFloat32 as oxcclDataType_t;
const SUM: oxcclRedOp_t = oxcclRedOp::oxcclSum as oxcclRedOp_t;

#[track_caller]
fn refused(got: oxcclResult_t, want: oxcclResult_t, comm: oxcclComm_t, says: &str) {
    let text = last_error(comm);
    assert_eq!(got, want, "{text}");
    assert!(text.contains(says), "{text:?} does not mention {says:?}");
    assert_eq!(
        last_error(std::ptr::null_mut()),
        text,
        "the thread's last error"
    );
}

/// A checked all-reduce: the communicator still works.
#[track_caller]
fn still_works(comm: oxcclComm_t, me: usize, n: usize) {
    let mine = [me as f32 + 1.0; 3];
    let mut out = [0f32; 3];
    ok(
        unsafe {
            oxcclAllReduce(
                mine.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                3,
                F32,
                SUM,
                comm,
                NULL,
            )
        },
        comm,
    );
    assert_eq!(out, [(n * (n + 1) / 2) as f32; 3]);
}

#[test]
fn bad_arguments_leave_the_communicator_usable() {
    let n = 3;
    on_ranks(n, move |comm, me| {
        let a = [1f32; 12];
        let mut b = [0f32; 12];
        let (sp, rp) = (a.as_ptr().cast::<c_void>(), b.as_mut_ptr().cast::<c_void>());
        let stream = 0x1000 as *mut c_void;
        for dt in [-1, 10, i32::MAX] {
            refused(
                unsafe { oxcclAllReduce(sp, rp, 4, dt, SUM, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "datatype",
            );
        }
        for op in [-1, 5, 1 << 20] {
            refused(
                unsafe { oxcclAllReduce(sp, rp, 4, F32, op, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "op",
            );
            refused(
                unsafe { oxcclReduceScatter(sp, rp, 4, F32, op, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "op",
            );
        }
        for root in [-1, n as i32, 99] {
            refused(
                unsafe { oxcclBroadcast(sp, rp, 4, F32, root, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "root",
            );
            refused(
                unsafe { oxcclReduce(sp, rp, 4, F32, SUM, root, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "root",
            );
            refused(
                unsafe { oxcclSend(sp, 4, F32, root, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "peer",
            );
            refused(
                unsafe { oxcclRecv(rp, 4, F32, root, comm, NULL) },
                oxcclInvalidArgument,
                comm,
                "peer",
            );
        }
        refused(
            unsafe { oxcclAllReduce(sp, rp, 4, F32, SUM, comm, stream) },
            oxcclInvalidArgument,
            comm,
            "stream",
        );
        refused(
            unsafe { oxcclAllGather(sp, rp, 4, F32, comm, stream) },
            oxcclInvalidArgument,
            comm,
            "stream",
        );
        refused(
            unsafe { oxcclAllReduce(std::ptr::null(), rp, 4, F32, SUM, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "sendbuff is NULL",
        );
        refused(
            unsafe { oxcclAlltoAll(sp, NULL, 4, F32, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "recvbuff is NULL",
        );
        // Partial overlaps (not NCCL's in-place arrangements).
        let p = b.as_mut_ptr();
        let shifted = unsafe { p.add(1) }.cast::<c_void>();
        refused(
            unsafe { oxcclAllReduce(shifted, p.cast(), 4, F32, SUM, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "overlap",
        );
        refused(
            unsafe { oxcclAllGather(shifted, p.cast(), 2, F32, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "overlap",
        );
        refused(
            unsafe { oxcclAllReduce(sp, rp, usize::MAX / 2, F32, SUM, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "too large",
        );
        // Sending to itself outside a group cannot complete.
        refused(
            unsafe { oxcclSend(sp, 4, F32, me as i32, comm, NULL) },
            oxcclInvalidUsage,
            comm,
            "itself",
        );
        refused(
            oxcclGroupEnd(),
            oxcclInvalidUsage,
            std::ptr::null_mut(),
            "oxcclGroupStart",
        );
        // A split with a bad color or configuration is refused before any rank takes part.
        let mut child: oxcclComm_t = NULL.cast();
        refused(
            unsafe { oxcclCommSplit(comm, -2, 0, &mut child, std::ptr::null_mut()) },
            oxcclInvalidArgument,
            comm,
            "color",
        );
        let mut config = oxcclConfig_t {
            size: std::mem::size_of::<oxcclConfig_t>(),
            magic: 1,
            version: 0,
            blocking: 1,
        };
        refused(
            unsafe { oxcclCommSplit(comm, 0, 0, &mut child, &mut config) },
            oxcclInvalidArgument,
            comm,
            "OXCCL_CONFIG_INITIALIZER",
        );
        config.magic = OXCCL_CONFIG_MAGIC;
        config.blocking = 0;
        refused(
            unsafe { oxcclCommSplit(comm, 0, 0, &mut child, &mut config) },
            oxcclInvalidArgument,
            comm,
            "blocking",
        );
        refused(
            unsafe { oxcclCommSplit(comm, 0, 0, std::ptr::null_mut(), std::ptr::null_mut()) },
            oxcclInvalidArgument,
            comm,
            "newcomm",
        );
        refused(
            unsafe { oxcclCommCount(comm, std::ptr::null_mut()) },
            oxcclInvalidArgument,
            comm,
            "count",
        );
        still_works(comm, me, n);
        // A bad call inside a group is refused at once and posts nothing.
        ok(oxcclGroupStart(), comm);
        refused(
            unsafe { oxcclAllReduce(sp, rp, 4, 42, SUM, comm, NULL) },
            oxcclInvalidArgument,
            comm,
            "datatype",
        );
        ok(oxcclGroupEnd(), comm);
        still_works(comm, me, n);
    });
}

#[test]
fn null_and_dead_handles() {
    let null: oxcclComm_t = std::ptr::null_mut();
    let a = [0f32; 4];
    let mut b = [0f32; 4];
    let (sp, rp) = (a.as_ptr().cast::<c_void>(), b.as_mut_ptr().cast::<c_void>());
    refused(
        unsafe { oxcclAllReduce(sp, rp, 4, F32, SUM, null, NULL) },
        oxcclInvalidArgument,
        null,
        "comm is NULL",
    );
    refused(oxcclCommDestroy(null), oxcclInvalidArgument, null, "NULL");
    refused(oxcclCommAbort(null), oxcclInvalidArgument, null, "NULL");
    let mut x = 0;
    refused(
        unsafe { oxcclCommUserRank(null, &mut x) },
        oxcclInvalidArgument,
        null,
        "NULL",
    );
    // A handle that was never made, and one that was destroyed.
    let made_up = 0x4242_4240 as oxcclComm_t;
    refused(
        unsafe { oxcclAllReduce(sp, rp, 4, F32, SUM, made_up, NULL) },
        oxcclInvalidArgument,
        null,
        "not a live communicator",
    );
    let comms = common::init_ranks(1);
    let comm = comms[0].raw();
    ok(
        unsafe { oxcclAllReduce(sp, rp, 4, F32, SUM, comm, NULL) },
        comm,
    );
    ok(oxcclCommDestroy(comm), comm);
    refused(
        unsafe { oxcclAllReduce(sp, rp, 4, F32, SUM, comm, NULL) },
        oxcclInvalidArgument,
        comm,
        "not a live communicator",
    );
    refused(
        oxcclCommDestroy(comm),
        oxcclInvalidArgument,
        comm,
        "not a live communicator",
    );
    // Init with bad arguments.
    let mut id = oxcclUniqueId { internal: [0; 128] };
    let mut out: oxcclComm_t = std::ptr::null_mut();
    refused(
        unsafe { oxcclCommInitRank(&mut out, 2, id, 0) },
        oxcclInvalidArgument,
        null,
        "oxcclGetUniqueId",
    );
    ok(unsafe { oxcclGetUniqueId(&mut id) }, null);
    refused(
        unsafe { oxcclCommInitRank(&mut out, 0, id, 0) },
        oxcclInvalidArgument,
        null,
        "nranks",
    );
    refused(
        unsafe { oxcclCommInitRank(&mut out, 2, id, 2) },
        oxcclInvalidArgument,
        null,
        "rank",
    );
    refused(
        unsafe { oxcclCommInitRank(&mut out, 2, id, -1) },
        oxcclInvalidArgument,
        null,
        "rank",
    );
    refused(
        unsafe { oxcclCommInitRank(std::ptr::null_mut(), 2, id, 0) },
        oxcclInvalidArgument,
        null,
        "comm is NULL",
    );
    refused(
        unsafe { oxcclGetUniqueId(std::ptr::null_mut()) },
        oxcclInvalidArgument,
        null,
        "uniqueId",
    );
    refused(
        unsafe { oxcclGetVersion(std::ptr::null_mut()) },
        oxcclInvalidArgument,
        null,
        "version",
    );
}

#[test]
fn error_strings() {
    let s = |r: i32| {
        unsafe { CStr::from_ptr(oxcclGetErrorString(r)) }
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(s(oxcclSuccess as i32), "no error");
    assert_eq!(s(oxcclInvalidArgument as i32), "invalid argument");
    assert_eq!(s(oxcclInvalidUsage as i32), "invalid usage");
    for r in [oxcclSystemError, oxcclInternalError, oxcclRemoteError] {
        assert!(!s(r as i32).is_empty() && s(r as i32) != "unknown result");
    }
    for r in [-1, 1, 7, i32::MIN] {
        assert_eq!(s(r), "unknown result");
    }
}

#[test]
fn abort_ends_a_communicator() {
    let comms = common::init_ranks(2);
    // Both handles live on this thread; aborting one makes its peer's calls fail promptly.
    ok(oxcclCommAbort(comms[0].raw()), comms[0].raw());
    let a = [1f32; 4];
    let mut b = [0f32; 4];
    let r = unsafe {
        oxcclAllReduce(
            a.as_ptr().cast(),
            b.as_mut_ptr().cast(),
            4,
            F32,
            SUM,
            comms[1].raw(),
            NULL,
        )
    };
    assert!(
        matches!(r, oxcclRemoteError | oxcclInvalidUsage),
        "{r:?}: {}",
        last_error(comms[1].raw())
    );
    assert!(!last_error(comms[1].raw()).is_empty());
    ok(oxcclCommDestroy(comms[1].raw()), comms[1].raw());
}
