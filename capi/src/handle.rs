//! Communicator handles, the errors every entry point returns and records, and the wrapper that
//! keeps panics from crossing into C.
//!
//! A handle is not a pointer to memory: it is a number, never reused, that looks up the
//! communicator in a table. A NULL, made-up or destroyed handle is therefore
//! `oxcclInvalidArgument` instead of undefined behaviour, and a handle destroyed by one thread
//! while another thread's call runs stays alive until that call returns.

use crate::oxcclResult_t;
use oxccl_collectives::{Communicator, Error};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Opaque communicator type of `oxcclComm_t`.
pub struct oxcclComm {
    _opaque: [u8; 0],
}

/// A communicator handle (NCCL's `ncclComm_t`): made by `oxcclCommInitRank`,
/// `oxcclCommInitFromEnv` or `oxcclCommSplit`, ended by `oxcclCommDestroy` or `oxcclCommAbort`.
pub type oxcclComm_t = *mut oxcclComm;

/// What a handle stands for.
pub(crate) struct CommState {
    pub comm: Communicator,
    last_error: Mutex<String>,
}

static HANDLES: Mutex<BTreeMap<usize, Arc<CommState>>> = Mutex::new(BTreeMap::new());
/// Handles count up in steps of 16 (they look like aligned pointers in a debugger) from 16.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);

fn handles() -> MutexGuard<'static, BTreeMap<usize, Arc<CommState>>> {
    // The table stays consistent even if a holder panicked: every update is one insert/remove.
    HANDLES.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register(comm: Communicator) -> oxcclComm_t {
    let key = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed) << 4;
    let state = Arc::new(CommState {
        comm,
        last_error: Mutex::new(String::new()),
    });
    handles().insert(key, state);
    key as oxcclComm_t
}

/// The communicator of a handle, or `oxcclInvalidArgument`.
pub(crate) fn lookup(handle: oxcclComm_t) -> Result<Arc<CommState>, Failure> {
    if handle.is_null() {
        return Err(Failure::invalid("comm is NULL"));
    }
    handles().get(&(handle as usize)).cloned().ok_or_else(|| {
        Failure::invalid(format!(
            "{handle:p} is not a live communicator (destroyed, or never made)"
        ))
    })
}

pub(crate) fn unregister(handle: oxcclComm_t) -> Result<Arc<CommState>, Failure> {
    lookup(handle)?;
    handles()
        .remove(&(handle as usize))
        .ok_or_else(|| Failure::invalid(format!("{handle:p} was destroyed by another thread")))
}

/// An error on its way to C: the code and a message for `oxcclGetLastError`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: oxcclResult_t,
    pub message: String,
}

impl Failure {
    pub fn new(code: oxcclResult_t, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(oxcclResult_t::oxcclInvalidArgument, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(oxcclResult_t::oxcclInvalidUsage, message)
    }
}

impl From<Error> for Failure {
    /// The mapping documented at [`oxcclResult_t`].
    fn from(e: Error) -> Self {
        use oxcclResult_t::*;
        let code = match &e {
            Error::Invalid { .. } => oxcclInvalidArgument,
            Error::Env(_)
            | Error::Refused { .. }
            | Error::Mismatch { .. }
            | Error::Aborted { .. } => oxcclInvalidUsage,
            Error::AddrInUse { .. }
            | Error::BootstrapTimeout { .. }
            | Error::Io { .. }
            | Error::Net { .. } => oxcclSystemError,
            Error::Protocol { .. }
            | Error::Timeout { .. }
            | Error::PeerFailed { .. }
            | Error::BootstrapPeer { .. }
            | Error::Remote { .. } => oxcclRemoteError,
            Error::Algorithm { .. } => oxcclInternalError,
        };
        Self::new(code, e.to_string())
    }
}

thread_local! {
    /// The last error of any call on this thread (`oxcclGetLastError(NULL)`).
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
    /// The string `oxcclGetLastError` last returned on this thread (valid until the next call).
    static RETURNED: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `failure` as the thread's and, when `handle` is live, the communicator's last error.
pub(crate) fn record(function: &str, handle: oxcclComm_t, failure: &Failure) {
    let text = format!("{function}: {}", failure.message);
    tracing::debug!(code = ?failure.code, "{text}");
    if let Ok(state) = lookup(handle) {
        *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = text.clone();
    }
    LAST_ERROR.with(|l| *l.borrow_mut() = text);
}

/// The text `oxcclGetLastError` returns, as a C string owned by this thread.
pub(crate) fn last_error(handle: oxcclComm_t) -> *const c_char {
    let text = match lookup(handle) {
        Ok(state) => state
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        Err(_) => LAST_ERROR.with(|l| l.borrow().clone()),
    };
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    RETURNED.with(|r| {
        *r.borrow_mut() = c;
        r.borrow().as_ptr()
    })
}

/// Every entry point's body runs here: a panic becomes `oxcclInternalError`, and an error is
/// recorded (for the thread, and for `handle`'s communicator when it is live) before its code
/// goes back to C.
pub(crate) fn entry(
    function: &'static str,
    handle: oxcclComm_t,
    body: impl FnOnce() -> Result<(), Failure>,
) -> oxcclResult_t {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return oxcclResult_t::oxcclSuccess,
        Ok(Err(f)) => f,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Failure::new(
                oxcclResult_t::oxcclInternalError,
                format!("internal error (please report): {what}"),
            )
        }
    };
    record(function, handle, &failure);
    failure.code
}
