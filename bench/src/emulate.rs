//! `oxccl-bench emulate`: a cluster of network namespaces on this machine, checked against the
//! simulator.
//!
//! It builds `--hosts` namespaces ("hosts"), `--hosts-per-rack` of them on each rack's bridge
//! and the racks on a spine bridge, every cable a veth pair shaped by `tc tbf` to
//! `--link-gbit` (hosts) or `--uplink-gbit` (racks) in each direction ([`netns`]). It probes
//! the network (small-message latency in and across racks, one stream's rate), writes the
//! simulator's cluster file from the shaping, the probe and this machine's calibration
//! ([`model`]), then runs `oxccl-bench all-reduce --json` once per `--algo` with
//! `--ranks-per-host` ranks in every host namespace (shared memory inside a host, TCP across)
//! and prints measured against predicted time per size, writing CSV, JSON, the table and a
//! plot into `--out-dir`. Where namespaces cannot be made (no root, no `ip`, no `tbf`), it
//! prints `SKIPPED:` with the reason and succeeds.

mod model;
mod netns;
mod peers;

use anyhow::{bail, Context};
use netns::{Cluster, Shape};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Emulated hosts (network namespaces).
    #[arg(long, default_value_t = 4)]
    hosts: usize,
    /// Ranks (processes) per host: shared memory between them, TCP to other hosts.
    #[arg(long, default_value_t = 2)]
    ranks_per_host: usize,
    /// Hosts per rack (leaf switch); racks meet on a spine switch. Equal to --hosts: one tier.
    #[arg(long, default_value_t = 2)]
    hosts_per_rack: usize,
    /// Each host's link rate in Gbit/s, each direction.
    #[arg(long, default_value_t = 1.0)]
    link_gbit: f64,
    /// Each rack's uplink rate in Gbit/s (default: one host link, so a rack of two is 2:1
    /// oversubscribed).
    #[arg(long)]
    uplink_gbit: Option<f64>,
    /// Algorithms, one all-reduce sweep each (forced with --algo in the ranks; `auto`: the
    /// tuner's choice per size, what a user's call runs).
    #[arg(long, value_delimiter = ',', default_value = "ring,tree,hier")]
    algo: Vec<String>,
    /// Smallest size (bytes, K/M/G suffixes).
    #[arg(short = 'b', long = "minbytes", default_value = "64K", value_parser = crate::sizes::parse_size)]
    min_bytes: usize,
    /// Largest size.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = crate::sizes::parse_size)]
    max_bytes: usize,
    /// Timed loops per size, the median reported (each loop about 0.1 s, at least one call).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// The calibration the model takes its host side from (`simulate --calibrate`'s fit of
    /// the executor on this machine).
    #[arg(long, default_value = "bench/clusters/this-machine-executor.toml")]
    calibration: PathBuf,
    /// Where to write the cluster file (default: `bench/clusters/emulated-HxR.toml`).
    #[arg(long)]
    cluster_out: Option<PathBuf>,
    /// Where to write the CSV, JSON, table and plot.
    #[arg(long, default_value = "bench/results/emulated")]
    out_dir: PathBuf,
    /// File name stem of the outputs (default: `emulated-HxR`).
    #[arg(long)]
    name: Option<String>,
    /// Also run Open MPI's all-reduce (this binary of `shared/peers/mpi_allreduce.c`, built
    /// with mpicc) on the same namespaces, and print oxccl's best busbw per size against it.
    #[arg(long)]
    mpi: Option<PathBuf>,
    /// Also run Gloo's all-reduce (torch.distributed; this Python, which must have torch, runs
    /// `bench/scripts/gloo_rank.py`) on the same namespaces, and print it beside oxccl.
    #[arg(long)]
    gloo: Option<PathBuf>,
    /// Seconds one algorithm's sweep may take before its ranks are stopped.
    #[arg(long, default_value_t = 1200)]
    job_timeout: u64,
    /// Build no cluster: predict the rows of an earlier run's `<stem>-raw.jsonl` again, with
    /// the cluster file `--replay-cluster` or one written from `--replay-probe` (to compare
    /// models on one measurement; a replay with a file written from that run's own times
    /// would be a fit, not a prediction).
    #[arg(long)]
    replay: Option<PathBuf>,
    /// The cluster file of `--replay`.
    #[arg(long, requires = "replay", conflicts_with = "replay_probe")]
    replay_cluster: Option<PathBuf>,
    /// Instead of `--replay-cluster`: write the cluster file for `--replay` from that run's
    /// probe (its `<stem>-probe.json`, measured before its sweep), the shape given here
    /// (`--hosts`, `--link-gbit`...) and `--calibration`, as the run itself would now.
    #[arg(long, requires = "replay")]
    replay_probe: Option<PathBuf>,
}

/// Port of rank 0's bootstrap store (inside host 0's namespace, where nothing else listens).
const STORE_PORT: u16 = 29500;
/// Port of the probe's server in host 0.
const PROBE_PORT: u16 = 29400;
/// Messages each way per call of the stack probe's second run: enough window steps that the
/// difference from the one-message run is well above the call's own cost and its noise (the
/// call 70-140 us on 8 ranks over 2 cores, a step 65-80 us at 4 KiB; session 9's window of 2
/// showed no step at all at that load); at 4 MiB an iteration is then ~0.35-0.5 s.
const PROBE_WINDOW: usize = 8;
/// The `--algo` name of the tuner's choice (the ranks get no `--algo`).
const AUTO: &str = "auto";

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.hosts < 2 || args.ranks_per_host == 0 || args.hosts_per_rack == 0 {
        bail!("--hosts must be at least 2, --ranks-per-host and --hosts-per-rack at least 1");
    }
    if !(args.link_gbit > 0.0 && args.link_gbit.is_finite()) {
        bail!("--link-gbit must be a positive number");
    }
    if args.trials == 0 || args.algo.is_empty() {
        bail!("--trials must be at least 1 and --algo name at least one algorithm");
    }
    let load_calibration = || {
        model::load_calibration(&args.calibration)
            .with_context(|| format!("--calibration {}", args.calibration.display()))
    };
    let gbit = |g: f64| (g * 1e9) as u64;
    let shape = Shape {
        hosts: args.hosts,
        hosts_per_rack: args.hosts_per_rack.min(args.hosts),
        host_bits: gbit(args.link_gbit),
        uplink_bits: gbit(args.uplink_gbit.unwrap_or(args.link_gbit)),
    };
    if let Some(raw) = &args.replay {
        let spec = match (&args.replay_cluster, &args.replay_probe) {
            (Some(c), _) => model::load_calibration(c)
                .with_context(|| format!("--replay-cluster {}", c.display()))?,
            (None, Some(p)) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("--replay-probe {}", p.display()))?;
                let probe: model::Probe = serde_json::from_str(&text)
                    .with_context(|| format!("--replay-probe {}", p.display()))?;
                let tag = format!("emulated-{}x{}", args.hosts, args.ranks_per_host);
                let spec = model::cluster_spec(
                    &shape,
                    args.ranks_per_host,
                    &probe,
                    &load_calibration()?,
                    &tag,
                )?;
                if let Some(out) = &args.cluster_out {
                    model::save(&spec, out)?;
                    println!("# wrote {}", out.display());
                }
                spec
            }
            (None, None) => bail!("--replay needs --replay-cluster or --replay-probe"),
        };
        return replay(&args, raw, &spec);
    }
    let calibration = load_calibration()?;
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: cannot make shaped network namespaces here ({why})");
        return Ok(());
    }
    let cluster = Cluster::build(shape.clone())?;
    let tag = format!("emulated-{}x{}", args.hosts, args.ranks_per_host);
    let stem = args.name.clone().unwrap_or_else(|| tag.clone());
    let payload = Shape::payload_rate(shape.host_bits);
    println!(
        "# emulated cluster: {} hosts in {} rack(s) x {} ranks; host links {} Gbit/s ({:.1} MB/s of TCP payload), rack uplinks {} Gbit/s, MTU {}",
        shape.hosts,
        shape.racks(),
        args.ranks_per_host,
        args.link_gbit,
        payload / 1e6,
        shape.uplink_bits as f64 / 1e9,
        netns::MTU
    );
    let mut probe = probe(&cluster)?;
    println!(
        "# probe: one-way TCP latency {:.1} us in a rack, {:.1} us across racks; one stream {:.1} MB/s ({:.2}x the shaped payload rate)",
        probe.rack_latency_us,
        probe.cross_latency_us,
        probe.stream_bytes_per_s / 1e6,
        probe.stream_bytes_per_s / payload
    );
    // Both probes twice, interleaved, each size's faster run kept: a burst of other load
    // during one run (on this shared machine a size can take 5x its neighbours) then moves
    // neither line, and the two probes see the same machine.
    probe.window = PROBE_WINDOW;
    for window in [1, PROBE_WINDOW, 1, PROBE_WINDOW] {
        let rows = stack_probe(&cluster, &args, window)?;
        let kept = if window == 1 {
            &mut probe.stack
        } else {
            &mut probe.stack_window
        };
        *kept = faster_of(kept, &rows);
    }
    let terms = model::stack_terms(&probe, shape.hosts).context(
        "the stack probe's times do not fit a per-message time and a rate (too few sizes, a \
         window no slower than one message, or times falling with size)",
    )?;
    println!(
        "# stack probes (sendrecv rings of all {} ranks by host, before the sweep): 1 message per call {:.1} us + bytes / {:.1} MB/s ({:.2}x the shaped payload rate); each further message of a {}-message call {:.1} us + bytes / {:.1} MB/s (the call's own cost {:.1} us); so the shared stack server: {:.1} us per message, {:.1} MB/s over all hosts; per size (bytes, us): 1 message {:?}, {} messages {:?}",
        args.hosts * args.ranks_per_host,
        terms.alpha1_us,
        terms.beta1 / 1e6,
        terms.beta1 / payload,
        PROBE_WINDOW,
        terms.step_us,
        terms.step_rate / 1e6,
        terms.call_us,
        terms.message_us,
        terms.gb_s * 1e3,
        probe.stack,
        PROBE_WINDOW,
        probe.stack_window
    );
    // Saved at once (before the sweep), so `--replay-probe` can rebuild this run's model.
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(
        args.out_dir.join(format!("{stem}-probe.json")),
        serde_json::to_string_pretty(&probe)?,
    )?;
    let spec = model::cluster_spec(&shape, args.ranks_per_host, &probe, &calibration, &tag)?;
    let cluster_path = args
        .cluster_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/clusters/{tag}.toml")));
    model::save(&spec, &cluster_path)?;
    println!("# wrote {}", cluster_path.display());
    let mut all = Vec::new();
    let mut raw = String::new();
    for algo in &args.algo {
        let started = Instant::now();
        let out = run_job(&cluster, &args, algo)?;
        raw += &out;
        let rows = model::measured_rows(&out);
        if rows.is_empty() {
            bail!("--algo {algo}: rank 0 printed no all-reduce rows:\n{out}");
        }
        let compared = model::predict(&spec, algo, &rows, 4)?;
        println!(
            "# {algo}: {} sizes in {:.0} s; packets dropped by the shaping so far: {}",
            compared.len(),
            started.elapsed().as_secs_f64(),
            cluster.drops()
        );
        all.extend(compared);
    }
    // The machine's state after the sweep, for the record (the model never sees it): how far
    // it drifted while the sweep ran.
    match stack_probe(&cluster, &args, 1) {
        Ok(after) => {
            let list: Vec<String> = after
                .iter()
                .filter_map(|&(b, t)| {
                    let before = probe.stack.iter().find(|r| r.0 == b)?.1;
                    Some(format!("{b}: {:.2}", t / before))
                })
                .collect();
            println!(
                "# the stack probe (ranks by host) again after the sweep, against before (bytes: after / before): {}",
                list.join(", ")
            );
        }
        Err(e) => println!("# the stack probe after the sweep failed: {e:#}"),
    }
    // Open MPI's run is a comparison, not the measurement: its failure is reported and the
    // oxccl results are written anyway.
    let timeout = Duration::from_secs(args.job_timeout);
    let (lo, hi) = (args.min_bytes, args.max_bytes);
    let mut vs_peers = String::new();
    if let Some(exe) = &args.mpi {
        match peers::run_mpi(&cluster, args.ranks_per_host, exe, lo, hi, timeout) {
            Ok(mpi) => vs_peers += &peer_table(&all, "Open MPI (tcp,self)", &mpi, payload / 1e9),
            Err(e) => vs_peers += &format!("# Open MPI: no result ({e:#})\n"),
        }
    }
    if let Some(python) = &args.gloo {
        match peers::run_gloo(&cluster, args.ranks_per_host, python, lo, hi, timeout) {
            Ok(gloo) => {
                vs_peers += &peer_table(&all, "Gloo (torch.distributed)", &gloo, payload / 1e9)
            }
            Err(e) => vs_peers += &format!("# Gloo: no result ({e:#})\n"),
        }
    }
    drop(cluster);
    let text = format!(
        "# oxccl-bench emulate: {} hosts x {} ranks ({} per rack), {} Gbit/s host links, {} Gbit/s uplinks; all-reduce float sum\n# probe: {:?}\n{}",
        args.hosts,
        args.ranks_per_host,
        shape.hosts_per_rack,
        args.link_gbit,
        shape.uplink_bits as f64 / 1e9,
        probe,
        model::table(&all, payload / 1e9)
    ) + &vs_peers;
    print!("{text}");
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join(format!("{stem}-raw.jsonl")), raw)?;

    model::write_outputs(
        &args.out_dir,
        &stem,
        &all,
        &text,
        &format!(
            "all-reduce on {} emulated hosts x {} ranks, {} Gbit/s: measured and predicted",
            args.hosts, args.ranks_per_host, args.link_gbit
        ),
    )?;
    println!(
        "# wrote {}/{stem}.{{txt,csv,json,svg}}",
        args.out_dir.display()
    );
    Ok(())
}

/// `--replay`: the rows of `raw` predicted with the cluster file `cluster_path`, printed and
/// written as `<name or replay>.{txt,csv,json,svg}` into `--out-dir`.
fn replay(
    args: &Args,
    raw: &std::path::Path,
    spec: &oxccl_collectives::sim::ClusterSpec,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(raw).with_context(|| format!("--replay {}", raw.display()))?;
    let rows = model::measured_rows(&text);
    if rows.is_empty() {
        bail!("--replay {}: no all-reduce rows", raw.display());
    }
    let mut all = Vec::new();
    // Rows keep the run's order (one algorithm's sweep after another); each algorithm is
    // named as `--algo` asked it: its schedule's name up to the first ':', '/' or ' '.
    let mut i = 0;
    while i < rows.len() {
        let asked = |s: &str| s.split([':', '/', ' ']).next().unwrap_or(s).to_string();
        let a = asked(&rows[i].0);
        let n = rows[i..].iter().take_while(|r| asked(&r.0) == a).count();
        all.extend(model::predict(spec, &a, &rows[i..i + n], 4)?);
        i += n;
    }
    let link = spec
        .node
        .nics
        .first()
        .map_or(f64::NAN, |n| n.bandwidth_gb_s);
    let table = format!(
        "# oxccl-bench emulate --replay {} with cluster `{}` (busbw/link: against the file's NIC rate)\n# {}\n{}",
        raw.display(),
        spec.name,
        spec.description,
        model::table(&all, link)
    );
    print!("{table}");
    let stem = args.name.clone().unwrap_or_else(|| "replay".into());
    model::write_outputs(
        &args.out_dir,
        &stem,
        &all,
        &table,
        &format!("replay of {}", raw.display()),
    )
}

/// oxccl's best busbw per size (any algorithm) against a peer library's, and both against the
/// link.
fn peer_table(
    ox: &[model::Compared],
    who: &str,
    peer: &[(u64, f64, f64)],
    link_gb_s: f64,
) -> String {
    let mut s = format!(
        "# oxccl (best algorithm per size) against {who} on the same namespaces\n# {:>12} {:>8} {:>12} {:>12} {:>8} {:>10}\n",
        "bytes", "algo", "oxccl busbw", "peer busbw", "ox/peer", "ox/link"
    );
    for &(bytes, _, peer_bus) in peer {
        let best = ox
            .iter()
            .filter(|r| r.bytes == bytes)
            .max_by(|a, b| a.measured_busbw_gbps.total_cmp(&b.measured_busbw_gbps));
        if let Some(b) = best {
            s += &format!(
                "  {bytes:>12} {:>8} {:>12.4} {peer_bus:>12.4} {:>8.2} {:>10.2}\n",
                b.asked,
                b.measured_busbw_gbps,
                b.measured_busbw_gbps / peer_bus,
                b.measured_busbw_gbps / link_gb_s
            );
        }
    }
    s
}

/// Latency in a rack and across racks, and one stream's rate, between host 0 and others.
fn probe(cluster: &Cluster) -> anyhow::Result<model::Probe> {
    let same = 1.min(cluster.shape.hosts - 1);
    let other = if cluster.shape.racks() > 1 {
        cluster.shape.hosts_per_rack
    } else {
        same
    };
    let rack = ping_pong(cluster, same)?;
    let cross = if other == same {
        rack
    } else {
        ping_pong(cluster, other)?
    };
    Ok(model::Probe {
        rack_latency_us: rack.0,
        cross_latency_us: cross.0,
        stream_bytes_per_s: rack.1,
        stack: Vec::new(),
        stack_window: Vec::new(),
        window: 0,
    })
}

/// The stack's own cost of a message between hosts, with every rank of the run on a host:
/// `oxccl-bench sendrecv` over all ranks (each sends `window` messages to the next rank and
/// receives as many from the one before, in one group call: the traffic of `window` ring
/// steps) at 4 KiB-4 MiB per message, before any collective is timed. The ranks are placed by
/// host (as the sweep places them), so a host's last rank sends to the next host's first
/// through both hosts' TCP proxies. It measures what the shaping and the raw probe cannot: the
/// hand-offs through the proxies and the scheduling delays when the ranks outnumber the
/// cores; comparing windows separates that from the group call's own cost, which a
/// collective pays once per call and not per step. (message bytes, time per iteration in us).
fn stack_probe(cluster: &Cluster, args: &Args, window: usize) -> anyhow::Result<Vec<(u64, f64)>> {
    let w = window.to_string();
    let sub = [
        "sendrecv", "--json", "-b", "4K", "-e", "4M", "-f", "2", "-n", "0", "-w", "2", "--trials",
        "3", "-c", "1", "--window", &w,
    ];
    let what = format!("the stack probe (sendrecv, window {window})");
    let out = run_ranks(cluster, args, &what, &sub)?;
    let rows: Vec<(u64, f64)> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("test").and_then(|t| t.as_str()) == Some("sendrecv"))
        .filter_map(|v| Some((v.get("bytes")?.as_u64()?, v.get("time_us")?.as_f64()?)))
        .collect();
    if rows.len() < 2 {
        bail!("{what} printed fewer than 2 rows:\n{out}");
    }
    Ok(rows)
}

/// Per size, the faster of two probe runs (`earlier` empty: `rows` as they are).
fn faster_of(earlier: &[(u64, f64)], rows: &[(u64, f64)]) -> Vec<(u64, f64)> {
    rows.iter()
        .map(|&(b, t)| {
            let e = earlier.iter().find(|r| r.0 == b).map_or(t, |r| r.1);
            (b, t.min(e))
        })
        .collect()
}

/// Half the median round trip of a 1-byte TCP message between host 0 and host `h`, in
/// microseconds, and the rate of 32 MiB sent from host `h` to host 0.
fn ping_pong(cluster: &Cluster, h: usize) -> anyhow::Result<(f64, f64)> {
    const ROUNDS: usize = 2000;
    const BULK: usize = 32 << 20;
    let addr: std::net::SocketAddr = format!("{}:{PROBE_PORT}", cluster.host_ip(0)).parse()?;
    let limit = Some(Duration::from_secs(30));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = cluster.in_host(0, move || {
        let l = std::net::TcpListener::bind(addr).context("probe listener")?;
        let _ = ready_tx.send(());
        let (mut s, _) = l.accept().context("probe accept")?;
        s.set_nodelay(true)?;
        s.set_read_timeout(limit)?;
        let mut b = [0u8; 1];
        for _ in 0..ROUNDS {
            s.read_exact(&mut b)?;
            s.write_all(&b)?;
        }
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < BULK {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        s.write_all(&b)?;
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the probe's listener did not start")?;
    let client = cluster.in_host(h, move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(limit)?;
        let mut b = [7u8; 1];
        let mut rtt = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            s.write_all(&b)?;
            s.read_exact(&mut b)?;
            rtt.push(t.elapsed().as_secs_f64());
        }
        rtt.sort_by(f64::total_cmp);
        let buf = vec![1u8; BULK];
        let t = Instant::now();
        s.write_all(&buf)?;
        s.read_exact(&mut b)?;
        Ok((
            rtt[ROUNDS / 2] / 2.0 * 1e6,
            BULK as f64 / t.elapsed().as_secs_f64(),
        ))
    })?;
    let r = client
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's client panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's server panicked"))??;
    Ok(r)
}

/// Stops every child still running when dropped (an error or Ctrl-C in the emulation).
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// One `all-reduce` sweep with `--algo algo` over every host's ranks (`auto`: no `--algo`,
/// the tuner's choice per size, as a user's call gets it); rank 0's stdout.
fn run_job(cluster: &Cluster, args: &Args, algo: &str) -> anyhow::Result<String> {
    let trials = args.trials.to_string();
    let (lo, hi) = (args.min_bytes.to_string(), args.max_bytes.to_string());
    let mut sub = vec![
        "all-reduce",
        "--json",
        "-b",
        &lo,
        "-e",
        &hi,
        "-f",
        "2",
        "-n",
        "0",
        "-w",
        "1",
        "--trials",
        &trials,
    ];
    if algo != AUTO {
        sub.extend(["--algo", algo]);
    }
    run_ranks(cluster, args, &format!("--algo {algo}"), &sub)
}

/// Runs `oxccl-bench <sub>` as every rank of every host (rank `r` on host `r /
/// ranks_per_host`); rank 0's stdout. `what` names the job in errors.
fn run_ranks(cluster: &Cluster, args: &Args, what: &str, sub: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let p = cluster.shape.hosts * args.ranks_per_host;
    let secret = {
        use std::hash::{BuildHasher, Hasher};
        let s = std::collections::hash_map::RandomState::new();
        format!("{:016x}{:016x}", s.build_hasher().finish(), {
            let mut h = s.build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        })
    };
    let store = format!("{}:{STORE_PORT}", cluster.host_ip(0));
    let launcher = std::process::id();
    let mut ranks = Ranks(Vec::with_capacity(p));
    for r in 0..p {
        let (host, local) = (r / args.ranks_per_host, r % args.ranks_per_host);
        let fd = cluster.host_fd(host)?;
        let mut cmd = Command::new(&exe);
        cmd.args(sub)
            .env("OXCCL_RANK", r.to_string())
            .env("OXCCL_SIZE", p.to_string())
            .env("OXCCL_LOCAL_RANK", local.to_string())
            .env("OXCCL_STORE_ADDR", &store)
            .env("OXCCL_SECRET", &secret)
            .env("OXCCL_SOCKET_IFNAME", "=eth0")
            .stdout(if r == 0 {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        in_namespace_until_parent_dies(&mut cmd, fd, launcher);
        ranks.0.push(
            cmd.spawn()
                .with_context(|| format!("starting rank {r} of {what}"))?,
        );
    }
    // Rank 0's output is read on a thread, so a full pipe never stalls it.
    let mut out0 = ranks.0[0].stdout.take().context("rank 0's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out0.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(args.job_timeout);
    let mut failed = Vec::new();
    loop {
        let mut running = 0;
        for (r, c) in ranks.0.iter_mut().enumerate() {
            match c.try_wait()? {
                None => running += 1,
                Some(s) if !s.success() && !failed.iter().any(|(q, _)| *q == r) => {
                    failed.push((r, s.to_string()))
                }
                Some(_) => {}
            }
        }
        if running == 0 {
            break;
        }
        if netns::interrupted() {
            bail!("interrupted: stopping the ranks and removing the namespaces");
        }
        if !failed.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ranks);
    let out = reader
        .join()
        .map_err(|_| anyhow::anyhow!("rank 0's reader panicked"))?;
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(r, s)| format!("rank {r}: {s}"))
            .collect();
        bail!("{what}: {}", list.join(", "));
    }
    if Instant::now() > deadline {
        bail!(
            "{what}: not done after --job-timeout {} s",
            args.job_timeout
        );
    }
    Ok(out)
}

/// The child enters the host's namespace and gets SIGKILL when this process dies, however it
/// dies (a killed emulation must not leave ranks running in namespaces no one will remove).
fn in_namespace_until_parent_dies(cmd: &mut Command, fd: std::os::fd::OwnedFd, launcher: u32) {
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
    // (setns, prctl, getppid, _exit) on a descriptor this process holds open (`fd` is moved
    // into the closure, so it outlives every spawn), and touches no shared memory.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &fd;
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != launcher {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
