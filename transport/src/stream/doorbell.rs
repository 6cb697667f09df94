//! Doorbells: how an idle rank sleeps in the kernel until its peer does something, instead of
//! polling a ring and taking the core from the training process and from the other ranks.
//!
//! Each end of a native stream has one doorbell in the shared block (see `ring.rs`): a sequence
//! word and a count of sleepers, on their own line. The peer rings it whenever it does
//! something this end may wait for: publishes bytes (`head`), frees space (`tail`), posts a
//! mailbox message, closes or aborts. Ringing costs one load on the fast path: only when the
//! count says someone sleeps does the peer bump the sequence and call `FUTEX_WAKE`.
//!
//! A waiter (the collectives' engine, `exec/idle.rs` of `oxccl-collectives`) that has spun and
//! yielded without progress parks in two steps, so that no wake-up is lost:
//! 1. [`Doorbell::arm`]: count itself as a sleeper, then read the sequence (the ticket);
//! 2. look at its condition once more (a progress pass): anything the peer published before
//!    step 1 is seen here, anything after it bumps the sequence;
//! 3. [`sleep`] on the tickets: `FUTEX_WAIT` (one bell) or `futex_waitv` (several, Linux
//!    5.16+) returns at once if a sequence moved since its ticket, else when one moves or the
//!    timeout passes (the caller bounds it so that deadlines and liveness checks still run);
//! 4. drop the [`Armed`] guard (uncounts the sleeper).
//!
//! The words live in a `MAP_SHARED` file for `shm` (or the heap for `loopback`), so the futexes
//! are process-shared ones (no `FUTEX_PRIVATE_FLAG`). All of this crate's futex system calls are
//! in this module.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most bells one [`sleep`] waits on (`FUTEX_WAITV_MAX`); beyond it, a plain timed sleep.
pub const MAX_BELLS: usize = 128;

/// The two words of a doorbell, as laid out in a ring block.
#[derive(Clone)]
pub(crate) struct BellWords {
    seq: *const AtomicU32,
    sleepers: *const AtomicU32,
}

impl BellWords {
    /// # Safety
    /// `seq` and `sleepers` point to 4-aligned words that stay valid as long as every
    /// [`BellWords`] and [`Doorbell`] made from them (the caller keeps their block alive), and
    /// are only accessed atomically.
    pub(crate) unsafe fn new(seq: *mut u8, sleepers: *mut u8) -> Self {
        debug_assert!(seq as usize % 4 == 0 && sleepers as usize % 4 == 0);
        BellWords {
            seq: seq.cast(),
            sleepers: sleepers.cast(),
        }
    }

    fn seq(&self) -> &AtomicU32 {
        // SAFETY: `new`'s contract: valid, aligned, atomically accessed, kept alive.
        unsafe { &*self.seq }
    }

    fn sleepers(&self) -> &AtomicU32 {
        // SAFETY: as in `seq`.
        unsafe { &*self.sleepers }
    }

    /// Wakes whoever sleeps on this bell; costs one load when nobody does. The caller published
    /// what the sleeper waits for with a `SeqCst` store (or an `SeqCst` fence) just before.
    #[inline]
    pub(crate) fn ring(&self) {
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            self.seq().fetch_add(1, Ordering::SeqCst);
            futex_wake(self.seq());
        }
    }
}

/// The doorbell one end of a stream sleeps on (see the module documentation); cheap to clone.
#[derive(Clone)]
pub struct Doorbell {
    /// Keeps the block the words live in alive.
    _keep: Arc<dyn Send + Sync>,
    words: BellWords,
}

// SAFETY: the pointers are to atomics, only used through `&AtomicU32`, in a block that
// `_keep` holds alive.
unsafe impl Send for Doorbell {}
// SAFETY: as above.
unsafe impl Sync for Doorbell {}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("seq", &self.words.seq().load(Ordering::Relaxed))
            .field("sleepers", &self.words.sleepers().load(Ordering::Relaxed))
            .finish()
    }
}

impl Doorbell {
    pub(crate) fn new(words: BellWords, keep: Arc<dyn Send + Sync>) -> Self {
        Doorbell { _keep: keep, words }
    }

    /// Counts the caller as a sleeper and returns the guard holding its ticket. The caller then
    /// checks its condition once more and, if still unmet, [`sleep`]s on the guards.
    pub fn arm(&self) -> Armed {
        let w = &self.words;
        w.sleepers().fetch_add(1, Ordering::SeqCst);
        // Orders the count before the re-check's loads of head/tail (the peer's side is its
        // SeqCst store before it loads the count): one of the two sees the other.
        fence(Ordering::SeqCst);
        let ticket = w.seq().load(Ordering::SeqCst);
        Armed {
            bell: self.clone(),
            ticket,
        }
    }

    /// Wakes whoever sleeps on this bell: for another thread of the sleeper's own process that
    /// wants its attention (it sets its flag with a `SeqCst` store first). The peer's stream
    /// rings it by itself.
    pub fn ring(&self) {
        self.words.ring();
    }

    /// Whether the bell rang since the ticket was taken.
    fn rang_since(&self, ticket: u32) -> bool {
        self.words.seq().load(Ordering::Acquire) != ticket
    }
}

/// A doorbell with the caller counted as its sleeper; dropping it uncounts the caller.
pub struct Armed {
    bell: Doorbell,
    ticket: u32,
}

impl Armed {
    /// Whether the bell rang since [`Doorbell::arm`].
    pub fn rang(&self) -> bool {
        self.bell.rang_since(self.ticket)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.bell.words.sleepers().fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Armed")
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// Sleeps until one of `armed` rings (or rang since it was armed) or `timeout` passes; returns
/// at once for an empty list. Spurious returns are possible: the caller checks its condition.
/// Without `futex_waitv` (Linux before 5.16, or a seccomp filter that refuses it), several
/// bells are waited on with a plain sleep of at most 50 us.
pub fn sleep(armed: &[Armed], timeout: Duration) {
    if armed.is_empty() || timeout.is_zero() || armed.iter().any(Armed::rang) {
        return;
    }
    let ok = if armed.len() == 1 {
        futex_wait(armed[0].bell.words.seq(), armed[0].ticket, timeout)
    } else if armed.len() <= MAX_BELLS && !NO_WAITV.load(Ordering::Relaxed) {
        let ok = futex_waitv(armed, timeout);
        if !ok {
            NO_WAITV.store(true, Ordering::Relaxed);
            tracing::debug!(
                "futex_waitv is not available: idle waits on several peers sleep 50 us"
            );
        }
        ok
    } else {
        false
    };
    if !ok {
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }
}

/// Set once `futex_waitv` failed with ENOSYS or EPERM.
static NO_WAITV: AtomicBool = AtomicBool::new(false);

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// `FUTEX_WAIT` on `word` while it holds `expected`, for at most `timeout`. False where the
/// system call is refused (ENOSYS, EPERM): the caller sleeps instead.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> bool {
    let ts = timespec(timeout);
    // SAFETY: `word` is a live, aligned u32 (an atomic, as the kernel requires) and `ts` a
    // valid timespec on the stack; FUTEX_WAIT reads both and writes neither. The futex is not
    // private: the word may be in memory shared with another process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r == 0 || !refused()
}

/// Wakes every waiter on `word`.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only reads its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `FUTEX2_SIZE_U32`: the words are 32-bit (and, without `FUTEX2_PRIVATE`, process-shared).
const FUTEX2_SIZE_U32: u32 = 0x02;

/// `futex_waitv` on every armed bell at once. False where the system call is refused.
fn futex_waitv(armed: &[Armed], timeout: Duration) -> bool {
    let waiters: Vec<FutexWaitv> = armed
        .iter()
        .map(|a| FutexWaitv {
            val: u64::from(a.ticket),
            uaddr: a.bell.words.seq().as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    // futex_waitv takes an absolute time on the given clock.
    let mut now = timespec(Duration::ZERO);
    // SAFETY: `now` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let end = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + timeout;
    let end = timespec(end);
    // SAFETY: `waiters` is an array of `waiters.len()` (at most MAX_BELLS) futex_waitv
    // structs naming live, aligned u32 words; `end` is a valid timespec; the kernel only reads
    // them. Flags 0 and CLOCK_MONOTONIC as the system call requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0u32,
            &end as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    r >= 0 || !refused()
}

/// Whether the last system call failed because it is not there or not allowed.
fn refused() -> bool {
    matches!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EPERM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A doorbell and a second handle on the same words for the ringer.
    fn bell() -> (Doorbell, Doorbell) {
        let block: Arc<Vec<AtomicU32>> = Arc::new((0..32).map(|_| AtomicU32::new(0)).collect());
        let base = block.as_ptr() as *mut u8;
        // SAFETY: both words are inside the block, which each doorbell keeps alive.
        let words = unsafe { BellWords::new(base, base.add(64)) };
        (
            Doorbell::new(words.clone(), block.clone()),
            Doorbell::new(words, block),
        )
    }

    #[test]
    fn a_ring_wakes_a_sleeper_and_an_unarmed_bell_makes_no_call() {
        let (door, ringer) = bell();
        ringer.ring();
        assert!(!door.arm().rang(), "a ring with no sleeper bumps nothing");
        let armed = door.arm();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ringer.ring();
            ringer
        });
        let start = Instant::now();
        while !armed.rang() {
            sleep(std::slice::from_ref(&armed), Duration::from_secs(10));
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(t.join().unwrap());
    }

    #[test]
    fn sleep_times_out_and_returns_at_once_after_a_ring() {
        let (door, ringer) = bell();
        let armed = [door.arm()];
        let start = Instant::now();
        sleep(&armed, Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(25));
        ringer.ring();
        let start = Instant::now();
        sleep(&armed, Duration::from_secs(30));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn several_bells_wake_on_any() {
        let (d1, _r1) = bell();
        let (d2, r2) = bell();
        let armed = [d1.arm(), d2.arm()];
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            r2.ring();
            r2
        });
        let start = Instant::now();
        while !armed.iter().any(Armed::rang) {
            sleep(&armed, Duration::from_secs(10));
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(t.join().unwrap());
        drop(armed);
        assert_eq!(d1.words.sleepers().load(Ordering::Relaxed), 0);
        eprintln!("futex_waitv refused: {}", NO_WAITV.load(Ordering::Relaxed));
    }
}
