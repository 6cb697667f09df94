//! The process's CPU affinity: read it (where a rank runs) and set it (`OXCCL_BIND`).

use oxccl_topo::CpuSet;
use std::io;

/// The CPUs the calling thread may run on (`sched_getaffinity`).
pub(crate) fn current() -> io::Result<CpuSet> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cpus = CpuSet::new();
    for i in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: i < CPU_SETSIZE, the bit count of `set`.
        if unsafe { libc::CPU_ISSET(i, &set) } {
            cpus.set(i as u32);
        }
    }
    Ok(cpus)
}

/// Pins every thread of this process to `cpus` (as hwloc's process binding does on Linux:
/// one `sched_setaffinity` per thread of `/proc/self/task`); threads started later inherit it.
pub(crate) fn bind_process(cpus: &CpuSet) -> io::Result<()> {
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for c in cpus.iter() {
        if c as usize >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "CPU {c} is beyond the {} CPUs sched_setaffinity takes",
                    libc::CPU_SETSIZE
                ),
            ));
        }
        // SAFETY: c < CPU_SETSIZE, checked above.
        unsafe { libc::CPU_SET(c as usize, &mut set) };
    }
    let set_tid = |tid: libc::pid_t| {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; a bad tid is an error return.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // The calling thread first: an error there (CPUs that do not exist) is the one to report.
    set_tid(0)?;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        match set_tid(tid) {
            // A thread that ended since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_affinity_is_readable_and_can_be_set_again() {
        let now = current().unwrap();
        assert!(!now.is_empty());
        // Setting what we have changes nothing and must succeed (even in a cgroup).
        bind_process(&now).unwrap();
        assert_eq!(current().unwrap(), now);
    }
}
