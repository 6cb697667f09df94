//! Helpers of the C API's Rust tests: ranks as threads of this process, joined the way a C
//! program joins (a unique id made here, `oxcclCommInitRank` on every thread), and checked calls.

#![allow(dead_code)]

pub mod groups;

use oxccl::*;
use std::ffi::CStr;

/// A handle that can cross to another thread (it is a number, not a pointer to memory).
#[derive(Clone, Copy, Debug)]
pub struct Comm(pub usize);

impl Comm {
    pub fn raw(self) -> oxcclComm_t {
        self.0 as oxcclComm_t
    }
}

/// The last error text of `comm` (NULL: of this thread).
pub fn last_error(comm: oxcclComm_t) -> String {
    // SAFETY: oxcclGetLastError returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(oxcclGetLastError(comm)) }
        .to_string_lossy()
        .into_owned()
}

/// Asserts success, printing the library's message otherwise.
#[track_caller]
pub fn ok(r: oxcclResult_t, comm: oxcclComm_t) {
    assert_eq!(r, oxcclResult_t::oxcclSuccess, "{}", last_error(comm));
}

/// Makes `n` ranks (threads) through oxcclGetUniqueId + oxcclCommInitRank, runs `f(comm, rank)`
/// on each, then destroys the communicators; panics naming the rank that failed.
pub fn on_ranks<F>(n: usize, f: F)
where
    F: Fn(oxcclComm_t, usize) + Send + Sync + Clone + 'static,
{
    let comms = init_ranks(n);
    let threads: Vec<_> = comms
        .into_iter()
        .enumerate()
        .map(|(r, c)| {
            let f = f.clone();
            std::thread::Builder::new()
                .name(format!("rank{r}"))
                .spawn(move || {
                    f(c.raw(), r);
                    ok(oxcclCommDestroy(c.raw()), c.raw());
                })
                .expect("spawn")
        })
        .collect();
    for (r, t) in threads.into_iter().enumerate() {
        assert!(t.join().is_ok(), "rank {r} of {n} failed");
    }
}

/// `n` communicators made on `n` threads, handed back to the caller.
pub fn init_ranks(n: usize) -> Vec<Comm> {
    let mut id = oxcclUniqueId { internal: [0; 128] };
    // SAFETY: a valid id to write.
    ok(unsafe { oxcclGetUniqueId(&mut id) }, std::ptr::null_mut());
    let threads: Vec<_> = (0..n)
        .map(|r| {
            std::thread::spawn(move || {
                let mut comm: oxcclComm_t = std::ptr::null_mut();
                // SAFETY: a valid handle to write.
                let res = unsafe { oxcclCommInitRank(&mut comm, n as i32, id, r as i32) };
                ok(res, std::ptr::null_mut());
                assert!(!comm.is_null());
                Comm(comm as usize)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("init"))
        .collect()
}

/// Reproducible random bytes of one rank and call (splitmix64: fast even unoptimised, unlike
/// a cryptographic generator, and the tests move many MiB of them).
pub fn random_bytes(seed: u64, rank: usize, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0xA076_1D64_78BD_642F)
        ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}
