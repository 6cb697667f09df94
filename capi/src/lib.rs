//! # oxccl-capi: NCCL's C API on host memory
//!
//! `liboxccl.so` / `liboxccl.a` and `include/oxccl.h` (generated from these sources by cbindgen):
//! the functions, types and numbering of NCCL's `nccl.h` with the `oxccl` prefix, over
//! `oxccl-collectives`, so that C, C++, Fortran, Julia or Go programs can call oxccl the way
//! they call NCCL. Buffers are host memory; `stream` arguments stand where `cudaStream_t` stands
//! in NCCL and must be NULL; every call returns when it is done (inside
//! `oxcclGroupStart`/`oxcclGroupEnd`, when `oxcclGroupEnd` returns).
//!
//! Every entry point checks its arguments (enum values arrive as plain integers; out-of-range
//! ones, bad roots and peers, NULL or destroyed communicators are `oxcclInvalidArgument`, and the
//! communicator stays usable), catches panics (`oxcclInternalError`), and records a readable
//! message for `oxcclGetLastError`. The mapping of `oxccl_collectives::Error` onto
//! `oxcclResult_t` is documented at [`oxcclResult_t`].
//!
//! Rust programs should use `oxccl-collectives` directly; the `rlib` exists for this crate's
//! tests.

#![allow(non_camel_case_types, non_upper_case_globals, non_snake_case)]

mod comm;
mod group;
mod handle;
mod id;
mod ops;

pub use comm::*;
pub use group::*;
pub use handle::oxcclComm_t;
pub use id::oxcclGetUniqueId;
pub use ops::*;

use std::ffi::{c_char, c_int, c_uint};

/// Major version of this library (`oxcclGetVersion` gives the whole version code).
pub const OXCCL_MAJOR: c_int = 0;
/// Minor version.
pub const OXCCL_MINOR: c_int = 1;
/// Patch level.
pub const OXCCL_PATCH: c_int = 0;
/// `OXCCL_MAJOR * 10000 + OXCCL_MINOR * 100 + OXCCL_PATCH`, NCCL's encoding since 2.9.
pub const OXCCL_VERSION_CODE: c_int = 100;
/// Size of `oxcclUniqueId`, as `NCCL_UNIQUE_ID_BYTES`.
pub const OXCCL_UNIQUE_ID_BYTES: usize = 128;
/// The `color` of `oxcclCommSplit` for a rank that joins no new communicator.
pub const OXCCL_SPLIT_NOCOLOR: c_int = -1;
/// `oxcclConfig_t::magic` of a configuration made with `OXCCL_CONFIG_INITIALIZER`.
pub const OXCCL_CONFIG_MAGIC: c_uint = 0xcafe_beef;

/// What every function returns; NCCL's `ncclResult_t` numbering (1, NCCL's
/// `ncclUnhandledCudaError`, cannot happen on host memory and is not used).
///
/// How oxccl's errors map: bad arguments (lengths, enum values, roots, peers, NULL pointers, a
/// non-NULL stream) are `oxcclInvalidArgument`; calls that do not fit the state (a group end
/// without a start, a send to itself outside a group, ranks that called different operations or
/// sizes, a job whose launcher variables are missing or whose secret differs, a communicator
/// aborted by an earlier failure or by `oxcclCommAbort`) are `oxcclInvalidUsage`; failures of
/// the operating system (sockets, shared-memory files, ports in use, bootstrap deadlines) are
/// `oxcclSystemError`; a peer that died, broke its connection, timed out or sent something
/// unreadable is `oxcclRemoteError`; no algorithm for a call, or a panic inside the library, is
/// `oxcclInternalError`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum oxcclResult_t {
    oxcclSuccess = 0,
    oxcclSystemError = 2,
    oxcclInternalError = 3,
    oxcclInvalidArgument = 4,
    oxcclInvalidUsage = 5,
    oxcclRemoteError = 6,
}

/// The element types, NCCL's numbering. Functions take them as `oxcclDataType_t`, a plain `int`:
/// a value outside 0..9 is `oxcclInvalidArgument`, never undefined behaviour.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum oxcclDataType {
    oxcclInt8 = 0,
    oxcclUint8 = 1,
    oxcclInt32 = 2,
    oxcclUint32 = 3,
    oxcclInt64 = 4,
    oxcclUint64 = 5,
    oxcclFloat16 = 6,
    oxcclFloat32 = 7,
    oxcclFloat64 = 8,
    oxcclBfloat16 = 9,
    oxcclNumTypes = 10,
}

/// An element type: one of the `oxcclDataType` values.
pub type oxcclDataType_t = c_int;
/// NCCL's alias of `oxcclInt8`.
pub const oxcclChar: oxcclDataType_t = 0;
/// NCCL's alias of `oxcclInt32`.
pub const oxcclInt: oxcclDataType_t = 2;
/// NCCL's alias of `oxcclFloat16`.
pub const oxcclHalf: oxcclDataType_t = 6;
/// NCCL's alias of `oxcclFloat32`.
pub const oxcclFloat: oxcclDataType_t = 7;
/// NCCL's alias of `oxcclFloat64`.
pub const oxcclDouble: oxcclDataType_t = 8;

/// The reductions, NCCL's numbering. Functions take them as `oxcclRedOp_t`, a plain `int`: a
/// value outside 0..4 is `oxcclInvalidArgument`. Avg divides the sum by the number of ranks
/// (integers: truncating division of the wrapped sum, as NCCL).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum oxcclRedOp {
    oxcclSum = 0,
    oxcclProd = 1,
    oxcclMax = 2,
    oxcclMin = 3,
    oxcclAvg = 4,
    oxcclNumOps = 5,
}

/// A reduction: one of the `oxcclRedOp` values.
pub type oxcclRedOp_t = c_int;

/// What `oxcclGetUniqueId` makes on one rank and the program hands to every rank (MPI_Bcast, a
/// file, ...) for `oxcclCommInitRank`: where rank 0 will serve the job's rendezvous store and the
/// job's random secret. Opaque; copy it as bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct oxcclUniqueId {
    pub internal: [c_char; OXCCL_UNIQUE_ID_BYTES],
}

/// Settings of a new communicator (`oxcclCommSplit`'s last argument, which may be NULL). Make one
/// with `oxcclConfig_t config = OXCCL_CONFIG_INITIALIZER;`. Only blocking communicators exist:
/// `blocking` must be 1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct oxcclConfig_t {
    /// `sizeof(oxcclConfig_t)`.
    pub size: usize,
    /// `OXCCL_CONFIG_MAGIC`.
    pub magic: c_uint,
    /// `OXCCL_VERSION_CODE` of the header the program was built with.
    pub version: c_uint,
    /// 1: calls return when done (the only mode).
    pub blocking: c_int,
}
