//! `oxccl-bench all-reduce | reduce-scatter | all-gather | broadcast | all-to-all`: an
//! nccl-tests-style sweep over sizes, with the same flags and columns.
//!
//! Ranks come from `--ranks N` (this binary starts N copies of itself on this host, with a
//! generated secret), from a launcher (`mpirun`, `srun`, `torchrun`, or `OXCCL_RANK`/`OXCCL_SIZE`/
//! `OXCCL_STORE_ADDR`), or are a single rank. Only rank 0 prints.

use anyhow::{bail, Context};
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::{Bootstrap, Communicator, DataType, Options, ReduceOp};
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub enum Which {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    AllToAll,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::AllReduce => "all-reduce",
            Which::ReduceScatter => "reduce-scatter",
            Which::AllGather => "all-gather",
            Which::Broadcast => "broadcast",
            Which::AllToAll => "all-to-all",
        }
    }

    /// nccl-tests' bus bandwidth factor.
    fn bus_factor(self, p: usize) -> f64 {
        let p = p as f64;
        match self {
            Which::AllReduce => 2.0 * (p - 1.0) / p,
            Which::ReduceScatter | Which::AllGather | Which::AllToAll => (p - 1.0) / p,
            Which::Broadcast => 1.0,
        }
    }

    fn reduces(self) -> bool {
        matches!(self, Which::AllReduce | Which::ReduceScatter)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Smallest size in bytes (suffixes K, M, G): the whole buffer, as nccl-tests.
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = crate::sizes::parse_size)]
    min_bytes: usize,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "256M", value_parser = crate::sizes::parse_size)]
    max_bytes: usize,
    /// Size multiplication factor between sizes.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    step_factor: usize,
    /// Timed iterations per trial (0: enough for about 0.1 s).
    #[arg(short = 'n', long = "iters", default_value_t = 0)]
    iters: usize,
    /// Warm-up iterations.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: usize,
    /// Check results (1) or not (0).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    check: u8,
    /// Data type (float, double, half, bfloat16, int8, uint8, int32, uint32, int64, uint64).
    #[arg(short = 'd', long = "datatype", default_value = "float")]
    dtype: String,
    /// Reduction (sum, prod, min, max, avg, premulsum).
    #[arg(short = 'o', long = "op", default_value = "sum")]
    op: String,
    /// Root of broadcast.
    #[arg(short = 'r', long = "root", default_value_t = 0)]
    root: usize,
    /// Force an algorithm (ring, rhd, tree, dbtree, hier, hier:AxB); default: chosen per size.
    #[arg(long)]
    algo: Option<String>,
    /// Start this many local processes of this binary.
    #[arg(long)]
    ranks: Option<usize>,
    /// One JSON object per size on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Trials per size; the median is reported.
    #[arg(long, default_value_t = 3)]
    trials: usize,
}

pub fn run(which: Which, args: Args) -> anyhow::Result<()> {
    let dtype: DataType = args.dtype.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let op: ReduceOp = args.op.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::sizes::sweep(
        args.min_bytes,
        args.max_bytes,
        args.step_factor,
        dtype.size(),
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(n) = args.ranks {
        return launch(n);
    }
    let mut options = Options::from_env()?;
    if let Some(a) = &args.algo {
        options.algorithm = Some(a.clone());
    }
    // No launcher at all: one rank; a partial launcher environment is an error.
    let comm = match Bootstrap::from_env_opt()? {
        Some(b) => Communicator::init_with(b, options).context("joining the job")?,
        None => Communicator::local_with(1, oxccl_collectives::LocalTransport::Memory, options)?
            .pop()
            .expect("one rank"),
    };
    sweep(&comm, which, &args, dtype, op)
}

/// The most processes `--ranks` starts on this host.
const MAX_LOCAL_RANKS: usize = 1024;

/// Starts `n` copies of this process with `OXCCL_*` variables and waits for them.
fn launch(n: usize) -> anyhow::Result<()> {
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
    // Drop --ranks N / --ranks=N from our own arguments.
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
            std::thread::sleep(std::time::Duration::from_millis(500));
            for (r, c) in children.iter_mut().enumerate() {
                if status[r].is_none() && c.try_wait()?.is_none() {
                    let _ = c.kill();
                    status[r] = Some(c.wait()?);
                    failed.push(format!("rank {r}: stopped"));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
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

/// A value unique-ish per (rank, index), exactly representable in every type and small enough
/// that sums over many ranks stay exact.
fn value(which: Which, op: ReduceOp, rank: usize, i: usize) -> f64 {
    if which.reduces() && op == ReduceOp::Prod {
        return 1.0 + ((rank + i) % 2) as f64;
    }
    ((rank * 131 + i * 7) % 13) as f64
}

fn encode(dtype: DataType, v: f64, out: &mut [u8]) {
    match dtype {
        DataType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => out.copy_from_slice(&v.to_le_bytes()),
        DataType::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        DataType::BF16 => out.copy_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
        DataType::I8 => out.copy_from_slice(&(v as i8).to_le_bytes()),
        DataType::U8 => out.copy_from_slice(&(v as u8).to_le_bytes()),
        DataType::I32 => out.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::U32 => out.copy_from_slice(&(v as u32).to_le_bytes()),
        DataType::I64 => out.copy_from_slice(&(v as i64).to_le_bytes()),
        DataType::U64 => out.copy_from_slice(&(v as u64).to_le_bytes()),
    }
}

fn decode(dtype: DataType, b: &[u8]) -> f64 {
    match dtype {
        DataType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        DataType::F16 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::BF16 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::I8 => i8::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::U8 => u8::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::U32 => u32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::U64 => u64::from_le_bytes(b.try_into().unwrap()) as f64,
    }
}

fn fill(dtype: DataType, buf: &mut [u8], f: impl Fn(usize) -> f64) {
    let es = dtype.size();
    for (i, chunk) in buf.chunks_exact_mut(es).enumerate() {
        encode(dtype, f(i), chunk);
    }
}

/// The reduction of every rank's value at index `i`, as the kernels compute it.
fn expected(which: Which, op: ReduceOp, dtype: DataType, p: usize, i: usize) -> f64 {
    let vals = (0..p).map(|r| value(which, op, r, i));
    let sum: f64 = vals.clone().sum();
    match op {
        ReduceOp::Sum => sum,
        ReduceOp::Prod => vals.product(),
        ReduceOp::Min => vals.fold(f64::INFINITY, f64::min),
        ReduceOp::Max => vals.fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Avg if dtype.is_float() => sum / p as f64,
        ReduceOp::Avg => (sum as i64 / p as i64) as f64,
        ReduceOp::PreMulSum(s) => sum * s,
    }
}

fn close(dtype: DataType, got: f64, want: f64) -> bool {
    let tol = match dtype {
        DataType::F16 => 1e-3,
        DataType::BF16 => 8e-3,
        DataType::F32 => 1e-6,
        DataType::F64 => 1e-12,
        _ => 0.0,
    };
    (got - want).abs() <= tol * want.abs().max(1.0)
}

struct Bufs {
    input: Vec<u8>,
    output: Vec<u8>,
}

/// Sizes (input, output) in bytes of one call moving `size` bytes in all.
fn shapes(which: Which, size: usize, p: usize) -> (usize, usize) {
    match which {
        Which::AllReduce | Which::Broadcast | Which::AllToAll => (size, size),
        Which::ReduceScatter => (size, size / p),
        Which::AllGather => (size / p, size),
    }
}

fn call(
    comm: &Communicator,
    which: Which,
    b: &mut Bufs,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
) -> oxccl_collectives::Result<()> {
    match which {
        Which::AllReduce => comm.all_reduce_bytes(&b.input, &mut b.output, dtype, op),
        Which::ReduceScatter => comm.reduce_scatter_bytes(&b.input, &mut b.output, dtype, op),
        Which::AllGather => comm.all_gather_bytes(&b.input, &mut b.output, dtype),
        Which::Broadcast => comm.broadcast_bytes(&mut b.output, dtype, root),
        Which::AllToAll => comm.all_to_all_bytes(&b.input, &mut b.output, dtype),
    }
}

/// Runs one checked call; returns the number of wrong elements on this rank.
fn check(
    comm: &Communicator,
    which: Which,
    b: &mut Bufs,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
) -> anyhow::Result<u64> {
    let (p, me, es) = (comm.size(), comm.rank(), dtype.size());
    fill(dtype, &mut b.input, |i| value(which, op, me, i));
    fill(dtype, &mut b.output, |_| 0.0);
    if let Which::Broadcast = which {
        fill(dtype, &mut b.output, |i| value(which, op, me, i));
    }
    call(comm, which, b, dtype, op, root)?;
    let n_out = b.output.len() / es;
    let block = b.input.len() / es / p.max(1);
    let mut wrong = 0;
    for i in 0..n_out {
        let want = match which {
            Which::AllReduce => expected(which, op, dtype, p, i),
            Which::ReduceScatter => expected(which, op, dtype, p, me * n_out + i),
            Which::AllGather => value(which, op, i / (n_out / p), i % (n_out / p)),
            Which::Broadcast => value(which, op, root, i),
            Which::AllToAll => value(which, op, i / block, me * block + i % block),
        };
        let got = decode(dtype, &b.output[i * es..(i + 1) * es]);
        if !close(dtype, got, want) {
            wrong += 1;
        }
    }
    Ok(wrong)
}

fn max_over_ranks(comm: &Communicator, v: f64) -> anyhow::Result<f64> {
    let mut out = [0.0f64];
    comm.all_reduce(&[v], &mut out, ReduceOp::Max)?;
    Ok(out[0])
}

fn sweep(
    comm: &Communicator,
    which: Which,
    args: &Args,
    dtype: DataType,
    op: ReduceOp,
) -> anyhow::Result<()> {
    let (p, me, es) = (comm.size(), comm.rank(), dtype.size());
    if args.root >= p {
        bail!("root {} is not a rank of {p}", args.root);
    }
    let unit = match which {
        Which::AllReduce | Which::Broadcast => es,
        _ => es * p,
    };
    let sizes = crate::sizes::sweep(args.min_bytes, args.max_bytes, args.step_factor, unit)
        .map_err(anyhow::Error::msg)?;
    let print = me == 0;
    let algo_name = args.algo.clone().unwrap_or_else(|| "auto".into());
    let coll = match which {
        Which::AllReduce => Some(Collective::AllReduce),
        Which::ReduceScatter => Some(Collective::ReduceScatter),
        Which::AllGather => Some(Collective::AllGather),
        Which::Broadcast => Some(Collective::Broadcast {
            root: args.root as u32,
        }),
        Which::AllToAll => None,
    };
    if print && !args.json {
        let kinds: Vec<String> = (0..p)
            .filter(|&q| q != me)
            .filter_map(|q| comm.transport_to(q))
            .map(|k| format!("{k:?}"))
            .collect();
        let mut kinds_sorted = kinds.clone();
        kinds_sorted.sort();
        kinds_sorted.dedup();
        println!(
            "# oxccl-bench {}: {p} ranks, algo {algo_name}, links {}, dtype {dtype}, op {op}",
            which.name(),
            if kinds_sorted.is_empty() {
                "-".into()
            } else {
                kinds_sorted.join(",")
            }
        );
        println!(
            "# {:>12} {:>12} {:>9} {:>7} {:>6} {:>8} {:>11} {:>8} {:>8} {:>7}",
            "size", "count", "type", "redop", "root", "algo", "time", "algbw", "busbw", "#wrong"
        );
        println!(
            "# {:>12} {:>12} {:>9} {:>7} {:>6} {:>8} {:>11} {:>8} {:>8} {:>7}",
            "(B)", "(elements)", "", "", "", "", "(us)", "(GB/s)", "(GB/s)", ""
        );
    }
    let bar = (print && sizes.len() > 4).then(|| {
        let b = indicatif::ProgressBar::new(sizes.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} sizes {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut total_wrong = 0u64;
    for &size in &sizes {
        let (ib, ob) = shapes(which, size, p);
        let mut b = Bufs {
            input: crate::sizes::zeroed(ib).map_err(anyhow::Error::msg)?,
            output: crate::sizes::zeroed(ob).map_err(anyhow::Error::msg)?,
        };
        let wrong_local = if args.check != 0 {
            check(comm, which, &mut b, dtype, op, args.root)?
        } else {
            0
        };
        let wrong = max_over_ranks(comm, wrong_local as f64)? as u64;
        total_wrong += wrong;
        for _ in 0..args.warmup {
            call(comm, which, &mut b, dtype, op, args.root)?;
        }
        let iters = if args.iters > 0 {
            args.iters
        } else {
            comm.barrier()?;
            let t = Instant::now();
            call(comm, which, &mut b, dtype, op, args.root)?;
            let one = max_over_ranks(comm, t.elapsed().as_secs_f64())?;
            ((0.1 / one.max(1e-9)) as usize).clamp(1, 1_000_000)
        };
        let mut trials = Vec::with_capacity(args.trials.max(1));
        for _ in 0..args.trials.max(1) {
            comm.barrier()?;
            let t = Instant::now();
            for _ in 0..iters {
                call(comm, which, &mut b, dtype, op, args.root)?;
            }
            trials.push(max_over_ranks(
                comm,
                t.elapsed().as_secs_f64() / iters as f64,
            )?);
        }
        trials.sort_by(f64::total_cmp);
        let secs = trials[trials.len() / 2];
        let algbw = size as f64 / secs / 1e9;
        let busbw = algbw * which.bus_factor(p);
        let algo_used = match coll {
            Some(c) => comm.algorithm_for(c, size).unwrap_or_else(|_| "?".into()),
            None => "direct".into(),
        };
        if print {
            let root = if matches!(which, Which::Broadcast) {
                args.root as i64
            } else {
                -1
            };
            let opname = if which.reduces() { op.name() } else { "none" };
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(format!("{size} B"));
            }
            let line = if args.json {
                serde_json::json!({
                    "collective": which.name(), "algo": algo_used, "ranks": p, "bytes": size,
                    "count": size / es, "dtype": dtype.name(), "op": opname, "root": root,
                    "time_us": secs * 1e6, "algbw_gbps": algbw, "busbw_gbps": busbw,
                    "wrong": wrong, "iters": iters * trials.len(),
                })
                .to_string()
            } else {
                format!(
                    "{:>14} {:>12} {:>9} {:>7} {:>6} {:>8} {:>11.2} {:>8.3} {:>8.3} {:>7}",
                    size,
                    size / es,
                    dtype.name(),
                    opname,
                    root,
                    algo_used,
                    secs * 1e6,
                    algbw,
                    busbw,
                    wrong
                )
            };
            match &bar {
                Some(bar) => bar.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if print && !args.json {
        println!(
            "# out of bounds values: {total_wrong} ({})",
            if total_wrong == 0 { "OK" } else { "FAILED" }
        );
    }
    if total_wrong > 0 {
        bail!("{total_wrong} wrong values");
    }
    Ok(())
}
