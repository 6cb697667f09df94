//! Open MPI and Gloo on the same namespaces, for the side-by-side ratio.
//!
//! `mpirun` runs in host 0's namespace. Its ranks reach its PMIx server over TCP (PMIx 4 has
//! no other channel), which listens on loopback only unless told otherwise: here it listens on
//! the cluster's subnet and accepts remote connections (`PMIX_MCA_ptl_tcp_*`), and each rank
//! is started through `nsenter` into its host's namespace (rank / ranks-per-host). Open MPI
//! sees one node (one hostname), so its shared-memory transport would carry every pair,
//! network or not: it runs with `--mca btl tcp,self` (TCP between every pair, inside a host
//! through the host's own stack, as Gloo does).

use super::netns::Cluster;
use anyhow::{bail, Context};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Open MPI's all-reduce per size: (bytes, time in us, busbw in GB/s) from
/// `shared/peers/mpi_allreduce.c`'s table.
pub fn run_mpi(
    cluster: &Cluster,
    ranks_per_host: usize,
    exe: &Path,
    min_bytes: usize,
    max_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(u64, f64, f64)>> {
    let p = cluster.shape.hosts * ranks_per_host;
    let ns_base = cluster.host_ns(0);
    let ns_base = ns_base.trim_end_matches('0').to_string();
    let enter = format!(
        "exec nsenter --net=/run/netns/{ns_base}$((OMPI_COMM_WORLD_RANK / {ranks_per_host})) \"$0\" \"$@\""
    );
    let subnet = "10.77.0.0/24";
    let fd = cluster.host_fd(0)?;
    let mut cmd = Command::new("mpirun");
    cmd.args([
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        &p.to_string(),
    ])
    .args(["--mca", "btl", "tcp,self"])
    .args(["--mca", "btl_tcp_if_include", subnet])
    .args(["--mca", "oob_tcp_if_include", subnet])
    .args(["sh", "-c", &enter])
    .arg(exe)
    .args([
        "allreduce",
        "-b",
        &min_bytes.to_string(),
        "-e",
        &max_bytes.to_string(),
    ])
    .env("PMIX_MCA_ptl_tcp_remote_connections", "1")
    .env("PMIX_MCA_ptl_tcp_if_include", subnet)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let raw = fd.as_raw_fd();
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only setns and prctl, async-signal-safe system calls, on
    // a descriptor that `fd` (moved into the closure) keeps open.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            if libc::setns(raw, libc::CLONE_NEWNET) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("starting mpirun (is Open MPI installed?)")?;
    let mut out = child.stdout.take().context("mpirun's stdout")?;
    let mut err = child.stderr.take().context("mpirun's stderr")?;
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline || super::netns::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("Open MPI's sweep stopped: past {timeout:?} or interrupted");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (o, e) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("mpirun's reader panicked"))?;
    if !status.success() {
        bail!("mpirun failed ({status}):\n{o}\n{e}");
    }
    let rows = table_rows(&o);
    if rows.is_empty() {
        bail!("Open MPI printed no rows:\n{o}\n{e}");
    }
    Ok(rows)
}

/// The table rows of `mpi_allreduce.c` and `gloo_allreduce.py` (same columns): (bytes, time
/// in us, busbw in GB/s).
fn table_rows(o: &str) -> Vec<(u64, f64, f64)> {
    o.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || !f[0].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((f[0].parse().ok()?, f[3].parse().ok()?, f[5].parse().ok()?))
        })
        .collect()
}

/// Gloo's all-reduce per size (torch.distributed, `bench/scripts/gloo_rank.py` run by
/// `python`, a Python with torch): one process per rank in its host's namespace, the
/// rendezvous on host 0, Gloo's sockets on each host's `eth0` (TCP between every pair, inside
/// a host through the host's own stack, as Open MPI's here).
pub fn run_gloo(
    cluster: &Cluster,
    ranks_per_host: usize,
    python: &Path,
    min_bytes: usize,
    max_bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(u64, f64, f64)>> {
    let p = cluster.shape.hosts * ranks_per_host;
    let launcher = std::process::id();
    let mut ranks = super::Ranks(Vec::with_capacity(p));
    for r in 0..p {
        let fd = cluster.host_fd(r / ranks_per_host)?;
        let mut cmd = Command::new(python);
        cmd.args([
            "bench/scripts/gloo_rank.py",
            "-b",
            &min_bytes.to_string(),
            "-e",
            &max_bytes.to_string(),
        ])
        .env("RANK", r.to_string())
        .env("WORLD_SIZE", p.to_string())
        .env("MASTER_ADDR", cluster.host_ip(0))
        .env("MASTER_PORT", GLOO_PORT.to_string())
        .env("GLOO_SOCKET_IFNAME", "eth0")
        .stdout(if r == 0 {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if r == 0 {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        super::in_namespace_until_parent_dies(&mut cmd, fd, launcher);
        ranks.0.push(
            cmd.spawn()
                .with_context(|| format!("starting Gloo's rank {r} with {}", python.display()))?,
        );
    }
    let mut out = ranks.0[0].stdout.take().context("Gloo rank 0's stdout")?;
    let mut err = ranks.0[0].stderr.take().context("Gloo rank 0's stderr")?;
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut o, mut e) = (String::new(), String::new());
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        (o, e)
    });
    let deadline = Instant::now() + timeout;
    loop {
        let mut running = 0;
        for (r, c) in ranks.0.iter_mut().enumerate() {
            match c.try_wait()? {
                None => running += 1,
                Some(s) if !s.success() => bail!("Gloo's rank {r} failed ({s})"),
                Some(_) => {}
            }
        }
        if running == 0 {
            break;
        }
        if Instant::now() > deadline || super::netns::interrupted() {
            bail!("Gloo's sweep stopped: past {timeout:?} or interrupted");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(ranks);
    let (o, e) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("Gloo's reader panicked"))?;
    let rows = table_rows(&o);
    if rows.is_empty() {
        bail!("Gloo printed no rows:\n{o}\n{e}");
    }
    Ok(rows)
}

/// Gloo's rendezvous port in host 0's namespace.
const GLOO_PORT: u16 = 29600;
