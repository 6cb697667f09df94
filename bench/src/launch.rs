//! `--ranks N`: this binary starts N copies of itself as the ranks of one job on this host
//! (`OXCCL_*` variables, a random secret, a free port for rank 0's store), waits for them, and
//! stops the rest once one fails. Every subcommand that runs ranks uses it.

use anyhow::{bail, Context};
use std::time::{Duration, Instant};

/// The most processes `--ranks` starts on this host.
pub const MAX_LOCAL_RANKS: usize = 1024;

/// Starts `n` copies of this process with `OXCCL_*` variables and waits for them.
pub fn ranks(n: usize) -> anyhow::Result<()> {
    if n == 0 || n > MAX_LOCAL_RANKS {
        bail!("--ranks must be 1 to {MAX_LOCAL_RANKS} (processes on this host)");
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let secret: String = {
        use std::hash::{BuildHasher, Hasher};
        let s = std::collections::hash_map::RandomState::new();
        let mut h = s.build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
        format!("{:016x}{:016x}", h.finish(), s.build_hasher().finish())
    };
    // Drop --ranks N / --ranks=N from our own arguments; only rank 0 draws the plot.
    let mut child_args = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--ranks" {
            it.next();
        } else if !a.starts_with("--ranks=") {
            child_args.push(a);
        }
    }
    let mut children = Vec::with_capacity(n);
    let launcher = std::process::id();
    for r in 0..n {
        let mut command = std::process::Command::new(&exe);
        die_with_parent(&mut command, launcher);
        let child = command
            .args(&child_args)
            .env("OXCCL_RANK", r.to_string())
            .env("OXCCL_SIZE", n.to_string())
            .env("OXCCL_LOCAL_RANK", r.to_string())
            .env("OXCCL_STORE_ADDR", format!("127.0.0.1:{port}"))
            .env("OXCCL_SECRET", &secret)
            .spawn()
            .with_context(|| format!("starting rank {r}"))?;
        children.push(child);
    }
    // Wait for all; once one rank fails, stop the others (they would otherwise wait for it
    // until OXCCL_TIMEOUT).
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; n];
    let mut failed = Vec::new();
    while status.iter().any(Option::is_none) {
        for (r, c) in children.iter_mut().enumerate() {
            if status[r].is_none() {
                if let Some(s) = c.try_wait()? {
                    if !s.success() {
                        failed.push(format!("rank {r}: {s}"));
                    }
                    status[r] = Some(s);
                }
            }
        }
        if !failed.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
            for (r, c) in children.iter_mut().enumerate() {
                if status[r].is_none() && c.try_wait()?.is_none() {
                    let _ = c.kill();
                    status[r] = Some(c.wait()?);
                    failed.push(format!("rank {r}: stopped"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !failed.is_empty() {
        bail!(
            "{} of {n} ranks failed ({})",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Makes the child get SIGKILL when the launcher dies, however it dies (a `kill -9` of the
/// launcher must not leave its ranks running the whole sweep).
fn die_with_parent(command: &mut std::process::Command, launcher: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only makes async-signal-safe calls (prctl,
    // getppid, _exit) and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before the prctl: then we were re-parented already.
            if libc::getppid() as u32 != launcher {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
