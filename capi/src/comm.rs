//! Making, querying and ending communicators; versions and error strings.

use crate::group::{defer_creation, Creation};
use crate::handle::{entry, last_error, lookup, register, unregister, Failure};
use crate::id;
use crate::{
    oxcclComm_t, oxcclConfig_t, oxcclResult_t, oxcclUniqueId, OXCCL_CONFIG_MAGIC,
    OXCCL_SPLIT_NOCOLOR, OXCCL_VERSION_CODE,
};
use oxccl_collectives::{Bootstrap, Communicator, Options};
use std::ffi::{c_char, c_int, CStr};

/// Writes `value` to `out`, or `oxcclInvalidArgument` when `out` is NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of one `T`.
unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller's promise.
    unsafe { out.write(value) };
    Ok(())
}

/// The library's version code (`OXCCL_MAJOR * 10000 + OXCCL_MINOR * 100 + OXCCL_PATCH`).
///
/// # Safety
/// `version` is NULL (an error) or valid for a write of one `int`.
#[no_mangle]
pub unsafe extern "C" fn oxcclGetVersion(version: *mut c_int) -> oxcclResult_t {
    // SAFETY: the caller's promise about `version`.
    entry("oxcclGetVersion", std::ptr::null_mut(), || unsafe {
        put(version, OXCCL_VERSION_CODE, "version")
    })
}

/// Makes rank `rank` of an `nranks`-rank communicator, meeting the other ranks through the store
/// named by `commId` (from `oxcclGetUniqueId`). Returns when every rank has joined (or
/// `OXCCL_TIMEOUT` has passed). Rank 0 serves the store, so it must run on the host whose process
/// made the id. Settings come from the `OXCCL_*` environment variables. Inside a group, the
/// communicator is made at `oxcclGroupEnd` (so one thread can make every rank of a job, as with
/// NCCL), and `*comm` is written then.
///
/// # Safety
/// `comm` is NULL (an error) or valid for a write of one `oxcclComm_t`.
#[no_mangle]
pub unsafe extern "C" fn oxcclCommInitRank(
    comm: *mut oxcclComm_t,
    nranks: c_int,
    commId: oxcclUniqueId,
    rank: c_int,
) -> oxcclResult_t {
    entry("oxcclCommInitRank", std::ptr::null_mut(), || {
        if comm.is_null() {
            return Err(Failure::invalid("comm is NULL"));
        }
        let size = usize::try_from(nranks)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| Failure::invalid(format!("nranks {nranks} is not positive")))?;
        let me = usize::try_from(rank)
            .ok()
            .filter(|&r| r < size)
            .ok_or_else(|| Failure::invalid(format!("rank {rank} is not in 0..{size}")))?;
        let job = id::parse(&commId)?;
        let options = Options::from_env().map_err(Failure::from)?;
        let out = comm as usize;
        let create: Creation = Box::new(move || {
            let bootstrap = Bootstrap::new(me, size, job.store_addr(), job.secret.clone());
            let made = Communicator::init_with(bootstrap, options);
            if me == 0 {
                // Rank 0's store now holds the port (or failed): the id's hold can go.
                id::release(&job.store);
            }
            // SAFETY: checked non-NULL above; the caller's promise.
            unsafe { put(out as *mut oxcclComm_t, register(made?), "comm") }
        });
        match defer_creation(None, "oxcclCommInitRank", create) {
            Some(create) => create(),
            None => Ok(()),
        }
    })
}

/// Makes this process's communicator from its launcher's variables: `mpirun`, `srun`,
/// `torchrun`, `oxccl-bench --ranks`, or `OXCCL_RANK`, `OXCCL_SIZE` and `OXCCL_STORE_ADDR` (the
/// oxccl-collectives README lists them). No unique id is needed.
///
/// # Safety
/// `comm` is NULL (an error) or valid for a write of one `oxcclComm_t`.
#[no_mangle]
pub unsafe extern "C" fn oxcclCommInitFromEnv(comm: *mut oxcclComm_t) -> oxcclResult_t {
    entry("oxcclCommInitFromEnv", std::ptr::null_mut(), || {
        if comm.is_null() {
            return Err(Failure::invalid("comm is NULL"));
        }
        let made = Communicator::from_env().map_err(Failure::from)?;
        // SAFETY: non-NULL, and the caller's promise.
        unsafe { put(comm, register(made), "comm") }
    })
}

/// Ends a communicator: its handle is invalid afterwards. Call it on every rank once its last
/// call has returned.
#[no_mangle]
pub extern "C" fn oxcclCommDestroy(comm: oxcclComm_t) -> oxcclResult_t {
    entry("oxcclCommDestroy", comm, || unregister(comm).map(drop))
}

/// Ends a communicator at once: calls running on it (on other threads) fail, peers' calls with
/// it fail promptly instead of at their timeout, and the handle is invalid afterwards.
#[no_mangle]
pub extern "C" fn oxcclCommAbort(comm: oxcclComm_t) -> oxcclResult_t {
    entry("oxcclCommAbort", comm, || {
        let state = unregister(comm)?;
        state.comm.abort();
        Ok(())
    })
}

/// The number of ranks of `comm`.
///
/// # Safety
/// `count` is NULL (an error) or valid for a write of one `int`.
#[no_mangle]
pub unsafe extern "C" fn oxcclCommCount(comm: oxcclComm_t, count: *mut c_int) -> oxcclResult_t {
    entry("oxcclCommCount", comm, || {
        let size = lookup(comm)?.comm.size() as c_int;
        // SAFETY: the caller's promise about `count`.
        unsafe { put(count, size, "count") }
    })
}

/// This rank's rank in `comm`.
///
/// # Safety
/// `rank` is NULL (an error) or valid for a write of one `int`.
#[no_mangle]
pub unsafe extern "C" fn oxcclCommUserRank(comm: oxcclComm_t, rank: *mut c_int) -> oxcclResult_t {
    entry("oxcclCommUserRank", comm, || {
        let me = lookup(comm)?.comm.rank() as c_int;
        // SAFETY: the caller's promise about `rank`.
        unsafe { put(rank, me, "rank") }
    })
}

/// Splits `comm` into one new communicator per `color` (a collective: every rank of `comm` calls
/// it). Ranks of a new communicator are ordered by `key`, ties by their rank in `comm`.
/// `color == OXCCL_SPLIT_NOCOLOR` joins none (`*newcomm` becomes NULL). `config` may be NULL.
/// For now each new communicator is bootstrapped through a store of its own, started by its
/// rank 0 (`comm` stays usable, and independent of the new ones). Inside a group, the split
/// happens at `oxcclGroupEnd`, which writes `*newcomm`.
///
/// # Safety
/// `newcomm` is valid for a write of one `oxcclComm_t`; `config` is NULL or points to an
/// `oxcclConfig_t`.
#[no_mangle]
pub unsafe extern "C" fn oxcclCommSplit(
    comm: oxcclComm_t,
    color: c_int,
    key: c_int,
    newcomm: *mut oxcclComm_t,
    config: *mut oxcclConfig_t,
) -> oxcclResult_t {
    entry("oxcclCommSplit", comm, || {
        let state = lookup(comm)?;
        if newcomm.is_null() {
            return Err(Failure::invalid("newcomm is NULL"));
        }
        if !config.is_null() {
            // SAFETY: non-NULL, and the caller's promise.
            check_config(unsafe { &*config })?;
        }
        let color = match color {
            OXCCL_SPLIT_NOCOLOR => None,
            c => Some(u32::try_from(c).map_err(|_| {
                Failure::invalid(format!(
                    "color {c} is neither non-negative nor OXCCL_SPLIT_NOCOLOR (-1)"
                ))
            })?),
        };
        let out = newcomm as usize;
        let create: Creation = Box::new(move || {
            let child = state.comm.split(color, i64::from(key))?;
            let handle = child.map_or(std::ptr::null_mut(), register);
            // SAFETY: checked non-NULL above; the caller's promise.
            unsafe { put(out as *mut oxcclComm_t, handle, "newcomm") }
        });
        match defer_creation(Some(comm), "oxcclCommSplit", create) {
            Some(create) => create(),
            None => Ok(()),
        }
    })
}

fn check_config(config: &oxcclConfig_t) -> Result<(), Failure> {
    if config.magic != OXCCL_CONFIG_MAGIC || config.size < std::mem::size_of::<oxcclConfig_t>() {
        return Err(Failure::invalid(
            "config was not made with OXCCL_CONFIG_INITIALIZER (wrong magic or size)",
        ));
    }
    if config.blocking != 1 {
        return Err(Failure::invalid(format!(
            "config.blocking = {}: only blocking communicators (1) exist",
            config.blocking
        )));
    }
    Ok(())
}

/// A description of a result code (static storage; "unknown result" for a value that is none).
#[no_mangle]
pub extern "C" fn oxcclGetErrorString(result: c_int) -> *const c_char {
    // An int, not the enum: C may pass any value here.
    let text: &'static CStr = match result {
        0 => c"no error",
        2 => c"unhandled system error (sockets, shared memory, ports; see oxcclGetLastError)",
        3 => c"internal error (please report, with oxcclGetLastError's text)",
        4 => c"invalid argument",
        5 => c"invalid usage",
        6 => c"remote process exited or there was a network error",
        _ => c"unknown result",
    };
    text.as_ptr()
}

/// A readable description of the last error on `comm` (or, for NULL or an unknown handle, the
/// last error of any call on this thread); empty when there was none. The string stays valid
/// until this thread's next `oxcclGetLastError`.
#[no_mangle]
pub extern "C" fn oxcclGetLastError(comm: oxcclComm_t) -> *const c_char {
    std::panic::catch_unwind(|| last_error(comm)).unwrap_or(c"".as_ptr())
}
