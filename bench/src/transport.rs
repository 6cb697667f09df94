//! `oxccl-bench transport`: ping-pong latency and streaming bandwidth between two processes,
//! in the columns of osu_latency and osu_bw (and of `shared/peers/mpi_pingpong.c`, so
//! `shared/peers/compare.sh transport` lines them up with Open MPI).
//!
//! The parent process listens, spawns a copy of this binary as the peer (`--peer ADDR`, hidden)
//! and both run the same schedule:
//! * latency: `iters` blocking round trips of `bytes` each way; one-way latency is half the
//!   mean round trip (10000 iterations up to 8 KiB, 1000 above, 10% warm-up first);
//! * bandwidth: a window of `win` sends of `bytes` (64, or 4 from 16 MiB), then a 4-byte
//!   acknowledgement, repeated (50 times, or 10 from 16 MiB); bandwidth = bytes moved / time.
//!   Sends are posted together (`isend` borrows one buffer `win` times); the peer receives them
//!   one after another into one buffer (a receive buffer can only be lent once at a time).
//!
//! * bibw (`--test bibw`): both sides post a window of sends and receive a window at once,
//!   as osu_bibw; bandwidth counts both directions.
//!
//! `--osu` prints OSU's tables instead: `# Size  Latency (us)` / `# Size  Bandwidth (MB/s)`
//! (MB = 10^6 bytes), sizes from 1 B to 4 MiB, and OSU's iteration counts (latency 10000 and
//! 1000 warm-up up to 8 KiB, 1000 and 100 above; bandwidth 100 and 10 windows of 64 up to
//! 8 KiB, 20 and 2 above); `-m [MIN:]MAX`, `-i`, `-x` and `-W` set them as in OSU.
//!
//! `--face stream` runs latency and bandwidth on the stream face (`Connection::into_stream`), the
//! path the collectives take: shm natively on its connection's rings, tcp through the
//! transport's proxy ([`stream`]).
//!
//! Two processes, not two threads: that is the honest comparison with MPI ranks.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oxccl_transport::dynamic::DynAddress;
use oxccl_transport::shm::Shm;
use oxccl_transport::tcp::{Tcp, TcpConfig};
use oxccl_transport::wait::{self, Deadline};
use oxccl_transport::{Address, Connection, Listener, Post, Request, Transport};
use stream::{run_face, Face};

use crate::sizes::parse_size;

mod stream;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transports to measure: shm, tcp or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// Tests to run: latency, bandwidth, bibw or all (all: latency and bandwidth, plus bibw
    /// with --osu).
    #[arg(long, default_value = "all")]
    test: String,
    /// OSU micro-benchmarks' output, units (MB/s) and sizes (from 1 B).
    #[arg(long)]
    osu: bool,
    /// Message sizes as OSU's `-m`: `MAX` or `MIN:MAX` (suffixes K, M, G).
    #[arg(short = 'm', long = "message-size", value_parser = parse_range)]
    message_size: Option<(usize, usize)>,
    /// Timed iterations per size (OSU's `-i`; default: the counts above, by size).
    #[arg(short = 'i', long = "iterations")]
    iterations: Option<usize>,
    /// Warm-up iterations per size (OSU's `-x`).
    #[arg(short = 'x', long = "warmup")]
    warmup: Option<usize>,
    /// Messages in flight per bandwidth iteration (OSU's `-W`; default 64, 4 from 16 MiB).
    #[arg(short = 'W', long = "window-size")]
    window: Option<usize>,
    /// Which face of the connection: `stream` (the byte stream the collectives move their data
    /// over: write, peek, consume, and the single-copy path of large messages) or `message`
    /// (tagged isend/irecv). Default: `stream`, or `message` with `--osu` (OSU's tests,
    /// bibw included, are message passing).
    #[arg(long)]
    face: Option<String>,
    /// Smallest latency message (bytes).
    #[arg(long, default_value = "1", value_parser = parse_size)]
    min_bytes: usize,
    /// Largest latency message (bytes).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    max_latency_bytes: usize,
    /// Largest bandwidth message (bytes; bandwidth starts at 4 KiB).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    max_bytes: usize,
    /// Scale the iteration counts (e.g. 0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    iters_scale: f64,
    /// TCP sockets per connection (OXCCL_SOCKET_NSOCKS otherwise).
    #[arg(long)]
    nsocks: Option<usize>,
    /// One JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
    /// Do not pin the two processes to CPUs 0 and 1 (Open MPI binds ranks to cores too).
    #[arg(long)]
    no_bind: bool,
    /// Internal: run as the peer process, connecting to this hex-encoded address.
    #[arg(long, hide = true)]
    peer: Option<String>,
}

/// Deadline of every step: generous, a stuck peer still ends the run.
const STEP: Duration = Duration::from_secs(120);

fn tcp(nsocks: Option<usize>) -> anyhow::Result<Tcp> {
    let mut c = TcpConfig::from_env()?;
    c.ip = Some(std::net::Ipv4Addr::LOCALHOST.into());
    c.ifname = None;
    if let Some(n) = nsocks {
        c.nsocks = n;
    }
    Ok(Tcp::with_config(c)?)
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Leader,
    Peer,
}

/// OSU's `-m`: `MAX` or `MIN:MAX`.
fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (lo, hi) = match s.split_once(':') {
        Some((lo, hi)) => (parse_size(lo)?, parse_size(hi)?),
        None => (1, parse_size(s)?),
    };
    if lo > hi || hi == 0 {
        return Err(format!("{s:?}: need MIN <= MAX and MAX >= 1"));
    }
    Ok((lo.max(1), hi))
}

/// OSU's default largest message.
const OSU_MAX: usize = 4 << 20;

fn powers_of_two(lo: usize, hi: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut n = lo.max(1);
    while n <= hi {
        v.push(n);
        match n.checked_mul(2) {
            Some(m) => n = m,
            None => break,
        }
    }
    v
}

fn latency_sizes(a: &Args) -> Vec<usize> {
    match (a.message_size, a.osu) {
        (Some((lo, hi)), _) => powers_of_two(lo, hi),
        (None, true) => powers_of_two(1, OSU_MAX),
        (None, false) => powers_of_two(a.min_bytes, a.max_latency_bytes),
    }
}

fn bandwidth_sizes(a: &Args) -> Vec<usize> {
    match (a.message_size, a.osu) {
        (Some((lo, hi)), _) => powers_of_two(lo, hi),
        (None, true) => powers_of_two(1, OSU_MAX),
        (None, false) => powers_of_two(4096, a.max_bytes),
    }
}

/// (timed, warm-up) iterations of the latency test at `n` bytes.
fn latency_iters(a: &Args, n: usize) -> (usize, usize) {
    let (iters, warm) = if a.osu {
        if n <= 8192 {
            (10_000, 1000)
        } else {
            (1000, 100)
        }
    } else {
        let i = scaled(if n <= 8192 { 10_000 } else { 1000 }, a.iters_scale);
        (i, i / 10)
    };
    (
        a.iterations.unwrap_or(iters).max(1),
        a.warmup.unwrap_or(warm),
    )
}

/// (window, timed, warm-up) iterations of the bandwidth tests at `n` bytes.
fn bandwidth_iters(a: &Args, n: usize) -> (usize, usize, usize) {
    let win = a
        .window
        .unwrap_or(if n >= 16 << 20 { 4 } else { 64 })
        .max(1);
    let (iters, warm) = if a.osu {
        if n <= 8192 {
            (100, 10)
        } else {
            (20, 2)
        }
    } else {
        (
            scaled(if n >= 16 << 20 { 10 } else { 50 }, a.iters_scale),
            2,
        )
    };
    (
        win,
        a.iterations.unwrap_or(iters).max(1),
        a.warmup.unwrap_or(warm),
    )
}

fn wants(a: &Args, test: &str) -> bool {
    a.test == test || (a.test == "all" && (test != "bibw" || a.osu))
}

fn scaled(n: usize, s: f64) -> usize {
    ((n as f64 * s) as usize).max(2)
}

impl Args {
    /// The face to measure (see `--face`).
    fn face(&self) -> &str {
        self.face
            .as_deref()
            .unwrap_or(if self.osu { "message" } else { "stream" })
    }
}

struct Row {
    transport: &'static str,
    test: &'static str,
    bytes: usize,
    iters: usize,
    seconds: f64,
    moved: f64,
}

/// One round of the latency test at `bytes`; returns seconds for `iters` round trips.
fn latency<C: Connection>(
    c: &C,
    role: Role,
    buf: &mut [u8],
    iters: usize,
    warm: usize,
) -> anyhow::Result<f64> {
    // One deadline for the batch: reading the clock per message would cost more than a
    // shared-memory hop.
    let dl = Deadline::after(STEP);
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        if role == Role::Leader {
            wait::send(c, 1, buf, dl)?;
            wait::recv(c, 1, buf, dl)?;
        } else {
            wait::recv(c, 1, buf, dl)?;
            wait::send(c, 1, buf, dl)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// One round of the bandwidth test; returns seconds for `iters` windows.
fn bandwidth<C: Connection>(
    c: &C,
    role: Role,
    buf: &mut [u8],
    win: usize,
    iters: usize,
    warm: usize,
) -> anyhow::Result<f64> {
    let mut ack = [0u8; 4];
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        if role == Role::Leader {
            let buf: &[u8] = buf;
            let mut reqs = Vec::with_capacity(win);
            for _ in 0..win {
                let deadline = Deadline::after(STEP);
                loop {
                    match c.isend(2, buf)? {
                        Post::Posted(r) => {
                            reqs.push(r);
                            break;
                        }
                        Post::Retry(_) => {
                            for r in reqs.iter_mut() {
                                r.test()?;
                            }
                            if deadline.expired() {
                                bail!("isend kept answering retry");
                            }
                        }
                    }
                }
            }
            let mut dynreqs: Vec<&mut dyn Request> =
                reqs.iter_mut().map(|r| r as &mut dyn Request).collect();
            wait::wait_all(&mut dynreqs, Deadline::after(STEP), c.peer())?;
            drop(reqs);
            wait::recv(c, 3, &mut ack, Deadline::after(STEP))?;
        } else {
            for _ in 0..win {
                wait::recv(c, 2, buf, Deadline::after(STEP))?;
            }
            wait::send(c, 3, &ack, Deadline::after(STEP))?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Posts the next of `win` sends if the fabric takes it, and tests the posted ones.
fn pump_sends<'a, C: Connection>(
    c: &'a C,
    buf: &'a [u8],
    sends: &mut Vec<C::SendRequest<'a>>,
    win: usize,
) -> anyhow::Result<()> {
    if sends.len() < win {
        if let Post::Posted(r) = c.isend(4, buf)? {
            sends.push(r);
        }
    }
    for r in sends.iter_mut() {
        r.test()?;
    }
    Ok(())
}

/// One round of the bidirectional test (both roles alike): a window of sends and a window of
/// receives in flight together; returns seconds for `iters` windows.
fn bibw<C: Connection>(
    c: &C,
    sbuf: &[u8],
    rbuf: &mut [u8],
    win: usize,
    iters: usize,
    warm: usize,
) -> anyhow::Result<f64> {
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        let dl = Deadline::after(STEP);
        let mut sends = Vec::with_capacity(win);
        for _ in 0..win {
            // A receive buffer is lent to one receive at a time; the sends progress meanwhile.
            let mut b: &mut [u8] = rbuf;
            let mut r = loop {
                match c.irecv(4, b)? {
                    Post::Posted(r) => break r,
                    Post::Retry(back) => b = back,
                }
                pump_sends(c, sbuf, &mut sends, win)?;
                if dl.expired() {
                    bail!("bibw: no receive slot within {STEP:?}");
                }
            };
            while r.test()?.is_none() {
                pump_sends(c, sbuf, &mut sends, win)?;
                if dl.expired() {
                    bail!("bibw: a receive made no progress within {STEP:?}");
                }
            }
        }
        while sends.len() < win {
            pump_sends(c, sbuf, &mut sends, win)?;
            if dl.expired() {
                bail!("bibw: sends not posted within {STEP:?}");
            }
        }
        let mut dynreqs: Vec<&mut dyn Request> =
            sends.iter_mut().map(|r| r as &mut dyn Request).collect();
        wait::wait_all(&mut dynreqs, dl, c.peer())?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn schedule<C: Connection>(
    a: &Args,
    name: &'static str,
    c: &mut Face<'_, C>,
    role: Role,
    out: &mut dyn FnMut(Row),
) -> anyhow::Result<()> {
    let top = latency_sizes(a)
        .into_iter()
        .chain(bandwidth_sizes(a))
        .max()
        .unwrap_or(1);
    let mut buf = vec![0u8; top];
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    if wants(a, "latency") {
        // Warm up (caches, page tables, the CPUs' clocks) before the first timed size: the
        // first tens of thousands of round trips run measurably slower here.
        if !a.osu {
            let n = scaled(20_000, a.iters_scale);
            c.latency(role, &mut buf[..8.min(top)], n, n / 10)?;
        }
        for n in latency_sizes(a) {
            let (iters, warm) = latency_iters(a, n);
            let s = c.latency(role, &mut buf[..n], iters, warm)?;
            out(Row {
                transport: name,
                test: "latency",
                bytes: n,
                iters,
                seconds: s / 2.0,
                moved: (n * iters) as f64,
            });
        }
    }
    if wants(a, "bandwidth") {
        for n in bandwidth_sizes(a) {
            let (win, iters, warm) = bandwidth_iters(a, n);
            let s = c.bandwidth(role, &mut buf[..n], win, iters, warm)?;
            out(Row {
                transport: name,
                test: "bandwidth",
                bytes: n,
                iters: iters * win,
                seconds: s,
                moved: (n * win * iters) as f64,
            });
        }
    }
    if wants(a, "bibw") {
        let mut rbuf = vec![0u8; top];
        for n in bandwidth_sizes(a) {
            let (win, iters, warm) = bandwidth_iters(a, n);
            let s = c.bibw(&buf[..n], &mut rbuf[..n], win, iters, warm)?;
            out(Row {
                transport: name,
                test: "bibw",
                bytes: n,
                iters: iters * win,
                seconds: s,
                moved: (2 * n * win * iters) as f64,
            });
        }
    }
    Ok(())
}

/// OSU's header lines of each test.
fn osu_header(r: &Row) -> String {
    let (title, column) = match r.test {
        "latency" => ("Latency", "# Size          Latency (us)"),
        "bandwidth" => ("Bandwidth", "# Size      Bandwidth (MB/s)"),
        _ => ("Bi-Directional Bandwidth", "# Size      Bandwidth (MB/s)"),
    };
    format!(
        "# OSU-style oxccl {} {title} Test (oxccl-bench {})\n{column}",
        r.transport,
        env!("CARGO_PKG_VERSION")
    )
}

fn print_row(r: &Row, face: &str, json: bool, osu: bool, last_test: &mut &'static str) {
    let latency_us = r.seconds * 1e6 / r.iters as f64;
    let gbps = r.moved / r.seconds / 1e9;
    if osu && !json {
        if *last_test != r.test {
            println!("{}", osu_header(r));
            *last_test = r.test;
        }
        // OSU's "%-10d%18.2f"; bandwidth in MB/s of 10^6 bytes.
        let v = if r.test == "latency" {
            latency_us
        } else {
            gbps * 1e3
        };
        println!("{:<10}{v:>18.2}", r.bytes);
    } else if json {
        let v = serde_json::json!({
            "transport": r.transport, "face": face, "test": r.test, "bytes": r.bytes,
            "latency_us": latency_us, "bandwidth_gbps": gbps, "iters": r.iters,
        });
        println!("{v}");
    } else {
        if *last_test != r.test {
            if r.test == "latency" {
                println!(
                    "# oxccl {} {face} latency (one way)\n# {:>12} {:>14}",
                    r.transport, "size(B)", "latency(us)"
                );
            } else {
                println!(
                    "# oxccl {} {face} {}, window 64 (4 from 16 MiB)\n# {:>12} {:>14}",
                    r.transport, r.test, "size(B)", "bw(GB/s)"
                );
            }
            *last_test = r.test;
        }
        if r.test == "latency" {
            println!("  {:>12} {:>14.2}", r.bytes, latency_us);
        } else {
            println!("  {:>12} {:>14.3}", r.bytes, gbps);
        }
    }
    let _ = std::io::stdout().flush();
}

/// Pins the calling process to one CPU (best effort: a failure only loses the pinning).
fn bind_to(cpu: usize) {
    // Online CPUs, not this process's mask (a child inherits its parent's pinning).
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    if n < 2 {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it, and
    // sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        tracing::warn!(
            cpu,
            "could not pin to a CPU: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn run_peer(a: &Args, addr: &str) -> anyhow::Result<()> {
    if !a.no_bind {
        bind_to(1);
    }
    let addr = DynAddress::from_text(addr)?;
    match addr.transport() {
        "shm" => peer_on(a, "shm", &Shm::from_env()?, &addr),
        "tcp" => peer_on(a, "tcp", &tcp(a.nsocks)?, &addr),
        other => bail!("unknown transport {other:?}"),
    }
}

/// The peer's side, statically dispatched (no boxing per request, as a real user would run).
fn peer_on<T: Transport<Connection: 'static>>(
    a: &Args,
    name: &'static str,
    t: &T,
    addr: &DynAddress,
) -> anyhow::Result<()> {
    let inner = T::Address::from_bytes(addr.inner_bytes())?;
    let c = wait::establish(t.connect(&inner)?, Deadline::after(STEP), &addr.to_string())?;
    run_face(a, name, c, Role::Peer, &mut |_| {})
}

fn run_leader(a: &Args, name: &'static str) -> anyhow::Result<()> {
    match name {
        "shm" => leader_on(a, name, &Shm::from_env()?),
        _ => leader_on(a, name, &tcp(a.nsocks)?),
    }
}

fn leader_on<T: Transport<Connection: 'static>>(
    a: &Args,
    name: &'static str,
    t: &T,
) -> anyhow::Result<()> {
    let mut l = t.listen()?;
    let addr = DynAddress::new(name, &l.address()).to_text();
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("transport").arg("--peer").arg(&addr);
    cmd.args(["--test", &a.test, "--min-bytes", &a.min_bytes.to_string()]);
    cmd.args([
        "--max-latency-bytes",
        &a.max_latency_bytes.to_string(),
        "--max-bytes",
        &a.max_bytes.to_string(),
    ]);
    cmd.args(["--iters-scale", &a.iters_scale.to_string()]);
    cmd.args(["--face", a.face()]);
    if a.osu {
        cmd.arg("--osu");
    }
    if let Some((lo, hi)) = a.message_size {
        cmd.args(["-m", &format!("{lo}:{hi}")]);
    }
    for (flag, v) in [("-i", a.iterations), ("-x", a.warmup), ("-W", a.window)] {
        if let Some(v) = v {
            cmd.args([flag, &v.to_string()]);
        }
    }
    if let Some(n) = a.nsocks {
        cmd.args(["--nsocks", &n.to_string()]);
    }
    if a.no_bind {
        cmd.arg("--no-bind");
    } else {
        bind_to(0);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .spawn()
        .context("spawning the peer process")?;
    let result = (|| {
        let c = wait::accept(&mut l, Deadline::after(STEP))?;
        let mut last = "";
        run_face(a, name, c, Role::Leader, &mut |r| {
            print_row(&r, a.face(), a.json, a.osu, &mut last)
        })
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for the peer process")?;
    result?;
    if !status.success() {
        bail!("the peer process failed: {status}");
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(addr) = args.peer.clone() {
        return run_peer(&args, &addr);
    }
    if !["all", "latency", "bandwidth", "bibw"].contains(&args.test.as_str()) {
        bail!(
            "unknown test {:?} (latency, bandwidth, bibw, all)",
            args.test
        );
    }
    let which: Vec<&'static str> = match args.transport.as_str() {
        "all" => vec!["shm", "tcp"],
        "shm" => vec!["shm"],
        "tcp" => vec!["tcp"],
        other => bail!("unknown transport {other:?} (shm, tcp, all)"),
    };
    for name in which {
        run_leader(&args, name)?;
    }
    Ok(())
}
