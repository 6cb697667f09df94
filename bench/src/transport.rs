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
//! `--face stream` runs the same tests on the stream face (`Connection::into_stream`), the
//! path the collectives take: shm natively on its connection's rings, tcp through the
//! transport's proxy; a message is `bytes` written into the stream and read back out of it.
//!
//! Two processes, not two threads: that is the honest comparison with MPI ranks.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oxccl_transport::dynamic::DynAddress;
use oxccl_transport::shm::Shm;
use oxccl_transport::tcp::{Tcp, TcpConfig};
use oxccl_transport::wait::{self, Backoff, Deadline};
use oxccl_transport::{
    Address, Connection, Listener, Post, Request, Stream, StreamConfig, Transport,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transports to measure: shm, tcp or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// Tests to run: latency, bandwidth or all.
    #[arg(long, default_value = "all")]
    test: String,
    /// Which face of the connection: `message` (tagged isend/irecv) or `stream` (the byte
    /// stream the collectives move their data over: write, peek, consume).
    #[arg(long, default_value = "message")]
    face: String,
    /// Smallest latency message (bytes).
    #[arg(long, default_value_t = 1)]
    min_bytes: usize,
    /// Largest latency message (bytes).
    #[arg(long, default_value_t = 1 << 20)]
    max_latency_bytes: usize,
    /// Largest bandwidth message (bytes; bandwidth starts at 4 KiB).
    #[arg(long, default_value_t = 64 << 20)]
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

fn latency_sizes(a: &Args) -> Vec<usize> {
    let mut v = Vec::new();
    let mut n = a.min_bytes.max(1);
    while n <= a.max_latency_bytes {
        v.push(n);
        n *= 2;
    }
    v
}

fn bandwidth_sizes(a: &Args) -> Vec<usize> {
    let mut v = Vec::new();
    let mut n = 4096;
    while n <= a.max_bytes {
        v.push(n);
        n *= 2;
    }
    v
}

fn scaled(n: usize, s: f64) -> usize {
    ((n as f64 * s) as usize).max(2)
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
fn latency<C: Connection>(c: &C, role: Role, buf: &mut [u8], iters: usize) -> anyhow::Result<f64> {
    let warm = iters / 10;
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
) -> anyhow::Result<f64> {
    let warm = 2;
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

/// Writes all of `data` into the stream.
fn stream_write(s: &mut dyn Stream, data: &[u8], dl: Deadline) -> anyhow::Result<()> {
    let mut sent = 0;
    let mut backoff = Backoff::new();
    while sent < data.len() {
        let n = s.write(&data[sent..])?;
        sent += n;
        if n > 0 {
            backoff.reset();
        } else {
            if dl.expired() {
                bail!("the stream peer stopped reading");
            }
            backoff.snooze();
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes from the stream into `buf` (what a receive costs; a
/// collective reduces out of the view instead, at the same single pass over the bytes).
fn stream_read(s: &mut dyn Stream, buf: &mut [u8], dl: Deadline) -> anyhow::Result<()> {
    let mut got = 0;
    let mut backoff = Backoff::new();
    while got < buf.len() {
        let view = s.peek()?;
        let n = view.len().min(buf.len() - got);
        buf[got..got + n].copy_from_slice(&view[..n]);
        s.consume(n);
        got += n;
        if n > 0 {
            backoff.reset();
        } else {
            if dl.expired() {
                bail!("the stream peer stopped writing");
            }
            backoff.snooze();
        }
    }
    Ok(())
}

/// The latency test on the stream face.
fn stream_latency(
    s: &mut dyn Stream,
    role: Role,
    buf: &mut [u8],
    iters: usize,
) -> anyhow::Result<f64> {
    let warm = iters / 10;
    let dl = Deadline::after(STEP);
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        if role == Role::Leader {
            stream_write(s, buf, dl)?;
            stream_read(s, buf, dl)?;
        } else {
            stream_read(s, buf, dl)?;
            stream_write(s, buf, dl)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The bandwidth test on the stream face: `win` messages' worth of bytes, then an ack.
fn stream_bandwidth(
    s: &mut dyn Stream,
    role: Role,
    buf: &mut [u8],
    win: usize,
    iters: usize,
) -> anyhow::Result<f64> {
    let warm = 2;
    let mut ack = [0u8; 4];
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        let dl = Deadline::after(STEP);
        if role == Role::Leader {
            for _ in 0..win {
                stream_write(s, buf, dl)?;
            }
            stream_read(s, &mut ack, dl)?;
        } else {
            for _ in 0..win {
                stream_read(s, buf, dl)?;
            }
            stream_write(s, &ack, dl)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// One side's tests on the face `a.face` of `c`.
fn run_face<C: Connection + 'static>(
    a: &Args,
    name: &'static str,
    c: C,
    role: Role,
    out: &mut dyn FnMut(Row),
) -> anyhow::Result<()> {
    match a.face.as_str() {
        "message" => schedule(a, name, &mut Face::Message(&c), role, out),
        "stream" => {
            let mut s = c.into_stream(name, &StreamConfig::from_env()?)?;
            schedule(a, name, &mut Face::<C>::Stream(&mut *s), role, out)
        }
        other => bail!("unknown face {other:?} (message, stream)"),
    }
}

/// What the tests run on.
enum Face<'a, C> {
    Message(&'a C),
    Stream(&'a mut dyn Stream),
}

impl<C: Connection> Face<'_, C> {
    fn latency(&mut self, role: Role, buf: &mut [u8], iters: usize) -> anyhow::Result<f64> {
        match self {
            Face::Message(c) => latency(*c, role, buf, iters),
            Face::Stream(s) => stream_latency(*s, role, buf, iters),
        }
    }
    fn bandwidth(
        &mut self,
        role: Role,
        buf: &mut [u8],
        win: usize,
        iters: usize,
    ) -> anyhow::Result<f64> {
        match self {
            Face::Message(c) => bandwidth(*c, role, buf, win, iters),
            Face::Stream(s) => stream_bandwidth(*s, role, buf, win, iters),
        }
    }
}

fn schedule<C: Connection>(
    a: &Args,
    name: &'static str,
    c: &mut Face<'_, C>,
    role: Role,
    out: &mut dyn FnMut(Row),
) -> anyhow::Result<()> {
    let top = a.max_bytes.max(a.max_latency_bytes);
    let mut buf = vec![0u8; top];
    buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    if a.test == "all" || a.test == "latency" {
        // Warm up (caches, page tables, the CPUs' clocks) before the first timed size: the
        // first tens of thousands of round trips run measurably slower here.
        c.latency(role, &mut buf[..8], scaled(20_000, a.iters_scale))?;
        for n in latency_sizes(a) {
            let iters = scaled(if n <= 8192 { 10_000 } else { 1000 }, a.iters_scale);
            let s = c.latency(role, &mut buf[..n], iters)?;
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
    if a.test == "all" || a.test == "bandwidth" {
        for n in bandwidth_sizes(a) {
            let (win, iters) = if n >= 16 << 20 { (4, 10) } else { (64, 50) };
            let iters = scaled(iters, a.iters_scale);
            let s = c.bandwidth(role, &mut buf[..n], win, iters)?;
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
    Ok(())
}

fn print_row(r: &Row, face: &str, json: bool, last_test: &mut &'static str) {
    let latency_us = r.seconds * 1e6 / r.iters as f64;
    let gbps = r.moved / r.seconds / 1e9;
    if json {
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
                    "# oxccl {} {face} bandwidth, window 64 (4 from 16 MiB)\n# {:>12} {:>14}",
                    r.transport, "size(B)", "bw(GB/s)"
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
    cmd.args(["--face", &a.face]);
    cmd.args([
        "--max-latency-bytes",
        &a.max_latency_bytes.to_string(),
        "--max-bytes",
        &a.max_bytes.to_string(),
    ]);
    cmd.args(["--iters-scale", &a.iters_scale.to_string()]);
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
            print_row(&r, &a.face, a.json, &mut last)
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
