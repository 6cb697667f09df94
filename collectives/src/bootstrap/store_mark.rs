//! Rank 0's mark on its own host that its store lives, so that a rank of the same host that
//! cannot reach the store tells a dead rank 0 from a late one within a second instead of at
//! its deadline.
//!
//! The mark is a file `oxccl-store-<uid>-<hash of the store address>` in the temporary
//! directory on which rank 0 holds an exclusive `flock` for as long as it bootstraps: the
//! kernel drops the lock when the process dies, however it dies, so neither a stale file nor a
//! reused pid can pass for a live rank 0. It is made under a temporary name, locked, then
//! renamed into place, so the name never shows an unlocked file of a live writer.
//!
//! A rank that cannot connect looks at it:
//! - no mark (or one not owned by this user, mode 0600: a stranger's file is ignored, so a
//!   stranger can hide rank 0's death from us at worst, never fake it): rank 0 has not started,
//!   or runs on another host; wait on.
//! - locked: rank 0 lives (it may be stopped or slow): wait on.
//! - unlocked and written after this process started (to within the clocks' ~20 ms: file
//!   times and process start times are coarse), or written by a process with the same parent
//!   as this one (the launcher that started both: `mpirun`'s daemon, torchrun's agent, the
//!   test harness; it lives, so its pid is not reused): this job's rank 0 died. Otherwise an
//!   unlocked mark older than this process may be an earlier run's (the same command run again
//!   after the whole job was killed): it only words the timeout, since rank 0 of this run may
//!   yet come.
//!
//! Rank 0 removes the mark once it has every rank's record (every rank reached the store and
//! none can finish init without rank 0); a rank whose bootstrap fails removes a mark whose
//! writer is dead.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The live mark of this process's store; removed when dropped.
pub struct StoreMark {
    path: PathBuf,
    /// Holds the lock (released by the kernel when the file closes or the process dies).
    file: File,
}

/// What a look at the mark of a store found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// No mark of ours: rank 0 has not started, is on another host, or has every rank's record.
    Absent,
    /// Rank 0 (this pid) holds the mark: it lives.
    Alive(u32),
    /// The process that wrote the mark (this pid) is gone; `fresh` when the mark was written
    /// after this process started or by a sibling of it, so it is this run's rank 0.
    Dead { pid: u32, fresh: bool },
}

/// Where the mark of the store at `addr` lives.
fn path_of(addr: &str) -> PathBuf {
    let uid = super::euid();
    std::env::temp_dir().join(format!(
        "oxccl-store-{uid}-{:016x}",
        super::fnv1a(addr.as_bytes())
    ))
}

impl StoreMark {
    /// Marks this process as the host of the store at `addr`. Best effort: without a mark the
    /// others wait for their deadline, as they would for a rank 0 on another host.
    pub fn create(addr: &str) -> Option<StoreMark> {
        let path = path_of(addr);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let made = (|| -> std::io::Result<File> {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            if !try_lock(&file, libc::LOCK_EX) {
                return Err(std::io::Error::last_os_error());
            }
            // Our pid, and our parent's: a rank started after us by the same launcher knows
            // the mark for its job's though it is older than itself.
            writeln!(
                file,
                "{} {}",
                std::process::id(),
                std::os::unix::process::parent_id()
            )?;
            std::fs::rename(&tmp, &path)?;
            Ok(file)
        })();
        match made {
            Ok(file) => Some(StoreMark { path, file }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::debug!(path = %path.display(), error = %e, "no store mark");
                None
            }
        }
    }
}

impl Drop for StoreMark {
    fn drop(&mut self) {
        // Only our own file: a later run's rank 0 may have put its mark there since.
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `flock(2)` without blocking (`File::try_lock` is newer than this crate's minimum Rust).
fn try_lock(file: &File, how: libc::c_int) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: the descriptor is open for as long as `file` lives; flock reads no memory.
    unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) == 0 }
}

fn same_file(file: &File, path: &std::path::Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Looks at the mark of the store at `addr` (see the module documentation).
pub fn look(addr: &str) -> Mark {
    look_at(&path_of(addr)).0
}

fn look_at(path: &std::path::Path) -> (Mark, Option<File>) {
    let Ok(file) = File::open(path) else {
        return (Mark::Absent, None);
    };
    let Ok(meta) = file.metadata() else {
        return (Mark::Absent, None);
    };
    let me = super::euid();
    if meta.uid() != me || meta.mode() & 0o077 != 0 {
        return (Mark::Absent, None);
    }
    let words = std::fs::read_to_string(path).unwrap_or_default();
    let mut words = words.split_whitespace().map(|w| w.parse::<u32>().ok());
    let pid = words.next().flatten().unwrap_or(0);
    let writers_parent = words.next().flatten();
    if !try_lock(&file, libc::LOCK_SH) {
        return (Mark::Alive(pid), None);
    }
    // Rank 0 removes its mark (unlinks, then unlocks) once the bootstrap is over: a file no
    // longer at the path was not left by a dead process.
    if !same_file(&file, path) {
        return (Mark::Absent, None);
    }
    let ours = std::os::unix::process::parent_id();
    // A parent of 1 is init (or a subreaper) that adopted orphans: it says nothing of a job.
    let sibling = ours > 1 && writers_parent == Some(ours);
    let fresh = sibling
        || match (meta.modified(), process_start()) {
            (Ok(written), Some(started)) => written >= started,
            _ => false,
        };
    (Mark::Dead { pid, fresh }, Some(file))
}

/// Removes the mark of the store at `addr` if its writer is dead (the failure path of a
/// bootstrap: nobody else would).
pub fn remove_if_dead(addr: &str) {
    let path = path_of(addr);
    if let (Mark::Dead { .. }, Some(file)) = look_at(&path) {
        // Our shared lock keeps a new writer (which locks before it renames) from being
        // the one removed, short of a rename between the check and the removal.
        if same_file(&file, &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// When this process started, from `/proc/self/stat` (field 22, clock ticks after boot) and
/// `/proc/uptime`.
fn process_start() -> Option<SystemTime> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, start time field 22.
    let ticks: u64 = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let age = (uptime - ticks as f64 / hz as f64).max(0.0);
    SystemTime::now().checked_sub(Duration::from_secs_f64(age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_lives_with_its_holder_and_goes_with_it() {
        let addr = format!("store-mark-test:{}", std::process::id());
        assert_eq!(look(&addr), Mark::Absent);
        let mark = StoreMark::create(&addr).expect("a mark in the temporary directory");
        // The lock is per open file: another open of it, in this process too, sees it held.
        assert_eq!(look(&addr), Mark::Alive(std::process::id()));
        drop(mark);
        assert_eq!(look(&addr), Mark::Absent);
    }

    /// What a killed rank 0 leaves: the file (`words`, dated `written`), no lock.
    fn dead_mark(path: &std::path::Path, words: &str, written: SystemTime) {
        std::fs::write(path, words).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(written).unwrap();
    }

    #[test]
    fn a_dead_writers_mark_is_dead_and_fresh_if_written_after_we_started_or_by_a_sibling() {
        let addr = format!("store-mark-dead:{}", std::process::id());
        let path = path_of(&addr);
        let dead = |fresh| Mark::Dead { pid: 4242, fresh };
        // Dated a second ahead: this test may run within the ~20 ms that the file's and the
        // process's clocks can disagree by.
        dead_mark(&path, "4242\n", SystemTime::now() + Duration::from_secs(1));
        assert_eq!(look(&addr), dead(true));
        // Written before this process started: maybe an earlier run's.
        let old = process_start().unwrap() - Duration::from_secs(5);
        dead_mark(&path, "4242\n", old);
        assert_eq!(look(&addr), dead(false));
        // The same, written by a sibling (our launcher started it before us): this job's.
        let parent = std::os::unix::process::parent_id();
        dead_mark(&path, &format!("4242 {parent}\n"), old);
        assert_eq!(look(&addr), dead(parent > 1));
        // Another launcher's child: maybe an earlier run's.
        dead_mark(&path, &format!("4242 {}\n", parent.wrapping_add(1)), old);
        assert_eq!(look(&addr), dead(false));
        remove_if_dead(&addr);
        assert_eq!(look(&addr), Mark::Absent);
        assert!(!path.exists());
    }

    #[test]
    fn a_rank_that_cannot_connect_fails_at_once_when_the_mark_is_dead() {
        use crate::bootstrap::store::StoreClient;
        use crate::error::Error;
        use std::time::Instant;
        // A port nobody serves, and the mark a killed rank 0 of it left.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let path = path_of(&addr);
        // Written by a sibling (a rank 0 that our launcher started): this job's, whenever.
        let parent = std::os::unix::process::parent_id();
        dead_mark(&path, &format!("4243 {parent}\n"), SystemTime::now());
        let start = Instant::now();
        let e = StoreClient::connect(&addr, b"s", start + Duration::from_secs(20))
            .err()
            .expect("nobody serves the store");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            matches!(e, Error::BootstrapPeer { rank: 0, .. }) && e.to_string().contains("4243"),
            "{e}"
        );
        assert!(!path.exists(), "the dead mark is removed");
        // A live one (rank 0 stopped or slow) is waited on until the deadline.
        let mark = StoreMark::create(&addr).unwrap();
        let e = StoreClient::connect(&addr, b"s", Instant::now() + Duration::from_millis(300))
            .err()
            .expect("nobody serves the store");
        assert!(
            matches!(e, Error::BootstrapTimeout { .. }) && e.to_string().contains("lives"),
            "{e}"
        );
        drop(mark);
    }

    #[test]
    fn a_mark_others_could_write_is_ignored() {
        let addr = format!("store-mark-open:{}", std::process::id());
        let path = path_of(&addr);
        std::fs::write(&path, "1\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert_eq!(look(&addr), Mark::Absent);
        std::fs::remove_file(&path).unwrap();
    }
}
