//! `oxccl-bench all-reduce | reduce-scatter | all-gather | broadcast | reduce | all-to-all |
//! gather | scatter | all-to-all-v`: an nccl-tests sweep over sizes, with its flags, its columns (out of place, then in place) and its
//! summary lines.
//!
//! Ranks come from `--ranks N` (this binary starts N copies of itself on this host, with a
//! generated secret), from a launcher (`mpirun`, `srun`, `torchrun`, or `OXCCL_RANK`/`OXCCL_SIZE`/
//! `OXCCL_STORE_ADDR`), or are a single rank; `-t N` makes each process N thread ranks. Only
//! rank 0 prints.
//!
//! Timing as nccl-tests: per size and half, `-w` warm-up calls, a barrier, then `-n` iterations
//! of `-m` calls each; a rank's time is its elapsed time over `n * m`, and `-a` combines the
//! ranks' times (0: rank 0's, 1: average, 2: minimum, 3: maximum).

mod data;
mod iter_log;
mod report;

use anyhow::{bail, Context};
use iter_log::IterLog;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::{Bootstrap, Communicator, DataType, Options, ReduceOp};
use report::{Format, Half, Row};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Which {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    Reduce,
    AllToAll,
    Gather,
    Scatter,
    /// All-to-all with uneven counts: rank `r` sends rank `q` a share of its buffer weighted
    /// `1 + (r + q) % 3` ([`data::a2av_counts`]); the size is one rank's send buffer.
    AllToAllV,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::AllReduce => "all-reduce",
            Which::ReduceScatter => "reduce-scatter",
            Which::AllGather => "all-gather",
            Which::Broadcast => "broadcast",
            Which::Reduce => "reduce",
            Which::AllToAll => "all-to-all",
            Which::Gather => "gather",
            Which::Scatter => "scatter",
            Which::AllToAllV => "all-to-all-v",
        }
    }

    /// nccl-tests' bus bandwidth factor.
    fn bus_factor(self, p: usize) -> f64 {
        let p = p as f64;
        match self {
            Which::AllReduce => 2.0 * (p - 1.0) / p,
            Which::ReduceScatter
            | Which::AllGather
            | Which::AllToAll
            | Which::Gather
            | Which::Scatter
            | Which::AllToAllV => (p - 1.0) / p,
            Which::Broadcast | Which::Reduce => 1.0,
        }
    }

    fn reduces(self) -> bool {
        matches!(
            self,
            Which::AllReduce | Which::ReduceScatter | Which::Reduce
        )
    }

    fn rooted(self) -> bool {
        matches!(
            self,
            Which::Broadcast | Which::Reduce | Which::Gather | Which::Scatter
        )
    }

    /// Sizes are rounded down to a multiple of this (nccl-tests does the same).
    fn unit(self, es: usize, p: usize) -> usize {
        match self {
            Which::AllReduce | Which::Broadcast | Which::Reduce => es,
            _ => es * p,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Smallest size in bytes (suffixes K, M, G): the whole buffer, as nccl-tests.
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = crate::sizes::parse_size)]
    min_bytes: usize,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "32M", value_parser = crate::sizes::parse_size)]
    max_bytes: usize,
    /// Size multiplication factor between sizes (1: add -i bytes instead).
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    step_factor: usize,
    /// Size increment between sizes when -f is 1.
    #[arg(short = 'i', long = "stepbytes", default_value = "1M", value_parser = crate::sizes::parse_size)]
    step_bytes: usize,
    /// Timed iterations per size and trial (0: enough for about 0.25 s over all trials, as
    /// Open MPI's side of the comparisons; nccl-tests' fixed count is `-n 20`).
    #[arg(short = 'n', long = "iters", default_value_t = 0)]
    iters: usize,
    /// Warm-up iterations.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: usize,
    /// Calls per timed iteration (nccl-tests aggregates them in a group; here they run back to
    /// back, and the time is per call).
    #[arg(short = 'm', long = "agg_iters", default_value_t = 1)]
    agg_iters: usize,
    /// Check results (1) or not (0: #wrong is N/A).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    check: u8,
    /// Data type (float, double, half, bfloat16, int8, uint8, int32, uint32, int64, uint64), or
    /// `all` for each in nccl-tests' order.
    #[arg(short = 'd', long = "datatype", default_value = "float")]
    dtype: String,
    /// Reduction (sum, prod, min, max, avg, mulsum, premulsum(S)), or `all`.
    #[arg(short = 'o', long = "op", default_value = "sum")]
    op: String,
    /// Root of broadcast, reduce, gather and scatter.
    #[arg(short = 'r', long = "root", default_value_t = 0)]
    root: usize,
    /// Time reported: 0 rank 0's, 1 the average over ranks, 2 the minimum, 3 the maximum.
    #[arg(short = 'a', long = "average", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=3))]
    average: u8,
    /// Blocking collectives (accepted for nccl-tests' command lines: every host call blocks,
    /// so 0 and 1 time the same thing).
    #[arg(short = 'z', long = "blocking", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    blocking: u8,
    /// Ranks per process, as threads (nccl-tests' threads per process: a job of P processes
    /// has P x t ranks).
    #[arg(short = 't', long = "nthreads", default_value_t = 1)]
    nthreads: usize,
    /// GPUs per thread: only 1 (a rank works on host memory).
    #[arg(short = 'g', long = "ngpus", default_value_t = 1)]
    ngpus: usize,
    /// Report the calling thread's CPU time instead of wall time (1): how much of a core a call
    /// burns, polling included.
    #[arg(short = 'C', long = "report_cputime", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    report_cputime: u8,
    /// Initialise the ranks of a process in parallel: accepted (they always are).
    #[arg(short = 'p', long = "parallel_init", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    parallel_init: u8,
    /// CUDA graph launches: only 0 (host memory has no graphs).
    #[arg(short = 'G', long = "cudagraph", default_value_t = 0)]
    cudagraph: usize,
    /// Buffer registration: only 0 (host buffers need none).
    #[arg(short = 'R', long = "local_register", default_value_t = 0)]
    local_register: u8,
    /// Seconds without progress before a call fails (OXCCL_TIMEOUT otherwise).
    #[arg(short = 'T', long = "timeout")]
    timeout: Option<u64>,
    /// Repeat each timed loop this many times and report the median (an oxccl extension for
    /// noisy machines, as Open MPI's side of the comparisons; 1 is nccl-tests' single loop).
    #[arg(long, default_value_t = crate::sizes::TRIALS)]
    trials: usize,
    /// Write every timed call's wall time to `PREFIX.rank<R>` (one line per call: size in bytes,
    /// in_place 0/1, trial, call, milliseconds), to tell a slow phase from a few outliers in
    /// the mean that the table reports. With --split, only the communicator of rank 0 logs.
    #[arg(long, value_name = "PREFIX")]
    iter_log: Option<PathBuf>,
    /// Operations per timed iteration, run as one group (`Communicator::group`): each on its
    /// own buffers; the time reported is per operation.
    #[arg(long, default_value_t = 1)]
    group: usize,
    /// Split the ranks into this many communicators first (color rank % N, ordered by rank) and
    /// run the sweep on each at once; rank 0's communicator prints (`MPI_Comm_split` then the
    /// collective on the sub-communicator).
    #[arg(long)]
    split: Option<usize>,
    /// Set for the communicators of a split that rank 0 is not in: they run quietly.
    #[arg(skip)]
    quiet: bool,
    /// Force an algorithm (ring, rhd, tree, dbtree, hier, hier:AxB); default: chosen per size.
    #[arg(long)]
    algo: Option<String>,
    /// Add the chosen algorithm as a last column (a comment line gives it anyway).
    #[arg(long)]
    show_algo: bool,
    /// Start this many local processes of this binary.
    #[arg(long)]
    ranks: Option<usize>,
    /// One JSON object per row on stdout instead of the table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV (one header line, then one line per row) on stdout instead of the table.
    #[arg(long)]
    csv: bool,
    /// Also draw busbw against size into this file (.svg or .png).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Other runs to draw beside this one (`--json` output or nccl-tests-style text).
    #[arg(long = "plot-with", requires = "plot")]
    plot_with: Vec<PathBuf>,
}

/// nccl-tests' `-d all` order.
const ALL_TYPES: [DataType; 10] = [
    DataType::I8,
    DataType::U8,
    DataType::I32,
    DataType::U32,
    DataType::I64,
    DataType::U64,
    DataType::F16,
    DataType::F32,
    DataType::F64,
    DataType::BF16,
];

const OP_NAMES: [&str; 6] = ["sum", "prod", "max", "min", "avg", "mulsum"];

/// nccl-tests' `mulsum` is a pre-multiplied sum; the scalar is integral for the integer types.
fn mulsum(dtype: DataType) -> ReduceOp {
    ReduceOp::PreMulSum(if dtype.is_float() { 0.5 } else { 2.0 })
}

fn parse_op(s: &str, dtype: DataType) -> anyhow::Result<ReduceOp> {
    if s.eq_ignore_ascii_case("mulsum") {
        return Ok(mulsum(dtype));
    }
    s.parse().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The (type, op) pairs of the run, in nccl-tests' order.
fn combos(which: Which, args: &Args) -> anyhow::Result<Vec<(DataType, String)>> {
    let types: Vec<DataType> = if args.dtype.eq_ignore_ascii_case("all") {
        ALL_TYPES.to_vec()
    } else {
        vec![args.dtype.parse().map_err(|e| anyhow::anyhow!("{e}"))?]
    };
    let ops: Vec<String> = if !which.reduces() {
        vec!["sum".into()]
    } else if args.op.eq_ignore_ascii_case("all") {
        OP_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        vec![args.op.clone()]
    };
    let mut v = Vec::new();
    for &t in &types {
        for o in &ops {
            parse_op(o, t)?;
            v.push((t, o.clone()));
        }
    }
    Ok(v)
}

pub fn run(which: Which, args: Args) -> anyhow::Result<()> {
    let combos = combos(which, &args)?;
    // The sizes' checks (progress, bounds, a whole element in the range) before any rank starts.
    crate::sizes::sweep(
        args.min_bytes,
        args.max_bytes,
        args.step_factor,
        args.step_bytes,
        1,
    )
    .map_err(anyhow::Error::msg)?;
    if args.agg_iters == 0 || args.nthreads == 0 || args.group == 0 || args.split == Some(0) {
        bail!("-m, -t, --group and --split must be at least 1");
    }
    if args.ngpus != 1 {
        bail!(
            "-g {}: ranks work on host memory, one per thread (-g 1)",
            args.ngpus
        );
    }
    if args.cudagraph != 0 || args.local_register != 0 {
        bail!("-G and -R need GPU buffers; ranks work on host memory (-G 0 -R 0)");
    }
    if let Some(n) = args.ranks {
        return crate::launch::ranks(n);
    }
    let mut options = Options::from_env()?;
    if let Some(a) = &args.algo {
        options.algorithm = Some(a.clone());
    }
    if let Some(t) = args.timeout {
        options.timeout = Duration::from_secs(t.max(1));
    }
    // No launcher at all: this process's threads; a partial launcher environment is an error.
    let comms = match Bootstrap::from_env_opt()? {
        Some(b) if args.nthreads == 1 => {
            vec![Communicator::init_with(b, options).context("joining the job")?]
        }
        Some(b) => join_as_threads(&b, args.nthreads, &options)?,
        None => Communicator::local_with(
            args.nthreads,
            oxccl_collectives::LocalTransport::Memory,
            options,
        )?,
    };
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .map(|c| {
                let (comms, args, combos) = (&comms, &args, &combos);
                s.spawn(move || {
                    // A thread rank that fails or panics stops the others at once, instead of
                    // leaving them to wait for it until the timeout.
                    let guard = AbortOnDrop(comms);
                    let r = match args.split {
                        None => sweep_all(c, which, args, combos),
                        Some(n) => split_and_sweep(c, n, which, args, combos),
                    };
                    if r.is_ok() {
                        std::mem::forget(guard);
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a rank panicked")))
            })
            .collect()
    });
    let mut rows = Vec::new();
    for r in runs {
        rows.extend(r?);
    }
    // Only rank 0 has rows; in a launched job the other processes draw nothing.
    let has_rank0 = comms.iter().any(|c| c.rank() == 0);
    if let (Some(path), true) = (&args.plot, has_rank0) {
        // One line per (type, op) sweep of the run (out of place, as nccl-tests' plots).
        let mut curves: Vec<crate::plot::Curve> = Vec::new();
        for r in &rows {
            let mut label = format!("oxccl {} ({} ranks)", which.name(), r.ranks);
            if combos.len() > 1 {
                label += &format!(" {} {}", r.dtype, r.redop);
            }
            match curves.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((r.size as u64, r.out_of_place.busbw)),
                None => curves.push((label, vec![(r.size as u64, r.out_of_place.busbw)])),
            }
        }
        for f in &args.plot_with {
            curves.extend(crate::plot::read_runs(f)?);
        }
        crate::plot::write(path, &format!("{} bus bandwidth", which.name()), &curves)?;
    }
    Ok(())
}

/// `--split N`: the sweep on this rank's child of an N-way split.
fn split_and_sweep(
    comm: &Communicator,
    n: usize,
    which: Which,
    args: &Args,
    combos: &[(DataType, String)],
) -> anyhow::Result<Vec<Row>> {
    let me = comm.rank();
    let child = comm
        .split(Some((me % n) as u32), me as i64)?
        .context("a rank with a color joins a child")?;
    let args = Args {
        quiet: me % n != 0,
        ..args.clone()
    };
    sweep_all(&child, which, &args, combos)
}

/// nccl-tests' processes x threads: this process's `t` threads are ranks `rank * t ..` of a
/// job of `size * t` ranks.
fn join_as_threads(
    b: &Bootstrap,
    t: usize,
    options: &Options,
) -> anyhow::Result<Vec<Communicator>> {
    let joined: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..t)
            .map(|i| {
                let mut bi = b.clone();
                bi.rank = b.rank * t + i;
                bi.size = b.size * t;
                bi.local_rank = b.local_rank.map(|l| l * t + i);
                s.spawn(move || Communicator::init_with(bi, options.clone()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(oxccl_collectives::Error::Env("a rank panicked".into()))
                })
            })
            .collect()
    });
    joined
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .context("joining the job")
}

/// Aborts every communicator of this process when dropped (by an error or a panic).
struct AbortOnDrop<'a>(&'a [Communicator]);

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        for c in self.0 {
            c.abort();
        }
    }
}

fn sizes(which: Which, args: &Args, es: usize, p: usize) -> anyhow::Result<Vec<usize>> {
    crate::sizes::sweep(
        args.min_bytes,
        args.max_bytes,
        args.step_factor,
        args.step_bytes,
        which.unit(es, p),
    )
    .map_err(anyhow::Error::msg)
}

/// Combines one value over the ranks: `Sum`, `Min`, `Max`, or rank 0's (`-a 0`).
fn over_ranks(comm: &Communicator, v: f64, how: u8) -> anyhow::Result<f64> {
    let p = comm.size() as f64;
    let mut out = [0.0f64];
    match how {
        0 => {
            let mut b = [v];
            comm.broadcast(&mut b, 0)?;
            out = b;
        }
        1 => {
            comm.all_reduce(&[v], &mut out, ReduceOp::Sum)?;
            out[0] /= p;
        }
        2 => comm.all_reduce(&[v], &mut out, ReduceOp::Min)?,
        _ => comm.all_reduce(&[v], &mut out, ReduceOp::Max)?,
    }
    Ok(out[0])
}

fn sum_over_ranks(comm: &Communicator, v: u64) -> anyhow::Result<u64> {
    let mut out = [0u64];
    comm.all_reduce(&[v], &mut out, ReduceOp::Sum)?;
    Ok(out[0])
}

/// The `# Using devices` lines: every rank's pid and host, gathered to rank 0.
fn device_lines(comm: &Communicator) -> anyhow::Result<Vec<String>> {
    const HOST: usize = 56;
    let mut mine = [0u8; 8 + HOST];
    mine[..8].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let hb = host.as_bytes();
    let n = hb.len().min(HOST);
    mine[8..8 + n].copy_from_slice(&hb[..n]);
    let mut all = vec![0u8; mine.len() * comm.size()];
    comm.all_gather_bytes(&mine, &mut all, DataType::U8)?;
    let links: Vec<String> = {
        let mut k: Vec<String> = (0..comm.size())
            .filter(|&q| q != comm.rank())
            .filter_map(|q| comm.transport_to(q))
            .map(|k| format!("{k:?}").to_lowercase())
            .collect();
        k.sort();
        k.dedup();
        k
    };
    Ok(all
        .chunks_exact(8 + HOST)
        .enumerate()
        .map(|(r, c)| {
            let mut pid = [0u8; 8];
            pid.copy_from_slice(&c[..8]);
            let host = String::from_utf8_lossy(&c[8..])
                .trim_end_matches('\0')
                .to_string();
            format!(
                "#  Rank {r:2} Group  0 Pid {:6} on {host:>10} device cpu [rank 0's links: {}]",
                u64::from_le_bytes(pid),
                if links.is_empty() {
                    "-".into()
                } else {
                    links.join(",")
                }
            )
        })
        .collect())
}

fn format_of(args: &Args) -> Format {
    if args.json {
        Format::Json
    } else if args.csv {
        Format::Csv
    } else {
        Format::Table
    }
}

/// Every (type, op) sweep of the run on this rank; rank 0 prints and returns the rows.
fn sweep_all(
    comm: &Communicator,
    which: Which,
    args: &Args,
    combos: &[(DataType, String)],
) -> anyhow::Result<Vec<Row>> {
    let (p, me) = (comm.size(), comm.rank());
    if args.root >= p {
        bail!("root {} is not a rank of {p}", args.root);
    }
    let print = me == 0 && !args.quiet;
    let format = format_of(args);
    let devices = device_lines(comm)?;
    if print {
        match format {
            Format::Table => {
                let step = if args.step_factor > 1 {
                    format!("{}(factor)", args.step_factor)
                } else {
                    format!("{}(bytes)", args.step_bytes)
                };
                println!(
                    "# nThread {} nGpus {} minBytes {} maxBytes {} step: {step} warmup iters: {} iters: {} agg iters: {} validation: {} graph: 0",
                    args.nthreads, args.ngpus, args.min_bytes, args.max_bytes, args.warmup,
                    args.iters, args.agg_iters, args.check
                );
                println!("#\n# Using devices");
                for l in &devices {
                    println!("{l}");
                }
                println!(
                    "#\n# oxccl {} {}: {p} ranks, algorithm {}, {} time {} over ranks (-a {}), blocking {}",
                    env!("CARGO_PKG_VERSION"),
                    which.name(),
                    args.algo.as_deref().unwrap_or("chosen per size"),
                    if args.report_cputime != 0 { "CPU" } else { "wall" },
                    ["of rank 0", "averaged", "minimum", "maximum"][usize::from(args.average)],
                    args.average,
                    args.blocking
                );
                println!("{}", report::table_header(args.show_algo));
            }
            Format::Csv => println!("{}", report::CSV_HEADER),
            Format::Json => {}
        }
    }
    let (mut all_rows, mut total_wrong) = (Vec::new(), 0u64);
    for (dtype, op_name) in combos {
        let op = parse_op(op_name, *dtype)?;
        let rows = sweep(comm, which, args, *dtype, op, op_name)?;
        total_wrong += rows
            .iter()
            .map(|r| r.out_of_place.wrong.unwrap_or(0) + r.in_place.wrong.unwrap_or(0))
            .sum::<u64>();
        if print && format == Format::Table && !rows.is_empty() {
            println!("{}", report::algo_line(&rows));
        }
        all_rows.extend(rows);
    }
    if print && format == Format::Table {
        let bws: Vec<f64> = all_rows
            .iter()
            .flat_map(|r| [r.out_of_place.busbw, r.in_place.busbw])
            .collect();
        let avg = bws.iter().sum::<f64>() / bws.len().max(1) as f64;
        println!("{}", report::summary(total_wrong, avg));
    }
    if total_wrong > 0 {
        bail!("{total_wrong} wrong values");
    }
    Ok(if print { all_rows } else { Vec::new() })
}

/// `--group N`: one iteration is a group of N calls, each on its own buffers.
fn group_call(comm: &Communicator, c: &data::Call, bufs: &mut [data::Bufs]) -> anyhow::Result<()> {
    let g = comm.group();
    for b in bufs.iter_mut() {
        g.call(move |comm| data::call(comm, c, b));
    }
    Ok(g.end()?)
}

/// Times `iters` iterations of `agg` calls after a barrier; returns seconds per call on this
/// rank (wall time, or the thread's CPU time), and the loop's start for `--iter-log`.
#[allow(clippy::too_many_arguments)]
fn time_calls(
    comm: &Communicator,
    c: &data::Call,
    b: &mut data::Bufs,
    group: &mut [data::Bufs],
    iters: usize,
    agg: usize,
    cpu_time: bool,
    mut log: Option<&mut IterLog>,
) -> anyhow::Result<(f64, Instant)> {
    if let Some(log) = log.as_deref_mut() {
        log.ends.reserve(iters * agg);
    }
    comm.barrier()?;
    // The CPU clock is a system call: read it before the wall clock starts, or the wall time
    // includes it (the run's first read is the slow one: the first row came out 0.05-0.1 us
    // per call slower than the next sizes at 20 iterations).
    let cpu0 = thread_cpu_seconds();
    let t = Instant::now();
    for _ in 0..iters * agg {
        if group.is_empty() {
            data::call(comm, c, b)?;
        } else {
            group_call(comm, c, group)?;
        }
        if let Some(log) = log.as_deref_mut() {
            log.ends.push(Instant::now());
        }
    }
    let secs = if cpu_time {
        thread_cpu_seconds() - cpu0
    } else {
        t.elapsed().as_secs_f64()
    };
    Ok((secs / (iters * agg * group.len().max(1)) as f64, t))
}

/// CPU time of the calling thread (`-C 1`).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// One sweep over sizes for one (type, op); rank 0 prints each row as it is measured.
fn sweep(
    comm: &Communicator,
    which: Which,
    args: &Args,
    dtype: DataType,
    op: ReduceOp,
    op_name: &str,
) -> anyhow::Result<Vec<Row>> {
    let (p, me, es) = (comm.size(), comm.rank(), dtype.size());
    let print = me == 0 && !args.quiet;
    let format = format_of(args);
    let coll = match which {
        Which::AllReduce => Some(Collective::AllReduce),
        Which::ReduceScatter => Some(Collective::ReduceScatter),
        Which::AllGather => Some(Collective::AllGather),
        Which::Broadcast => Some(Collective::Broadcast {
            root: args.root as u32,
        }),
        Which::Gather => Some(Collective::Gather {
            root: args.root as u32,
        }),
        Which::Scatter => Some(Collective::Scatter {
            root: args.root as u32,
        }),
        Which::AllToAllV => Some(Collective::AllToAll),
        Which::Reduce | Which::AllToAll => None,
    };
    let sizes = sizes(which, args, es, p)?;
    let bar = (print && sizes.len() > 4).then(|| {
        let b = indicatif::ProgressBar::new(sizes.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} sizes {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut iter_log = match &args.iter_log {
        Some(prefix) if !args.quiet => Some(IterLog::open(prefix, me)?),
        _ => None,
    };
    let mut rows = Vec::with_capacity(sizes.len());
    for &size in &sizes {
        let mut b = data::Bufs::new(which, size, p)?;
        let mut group: Vec<data::Bufs> = if args.group > 1 {
            (0..args.group)
                .map(|_| data::Bufs::new(which, size, p))
                .collect::<anyhow::Result<_>>()?
        } else {
            Vec::new()
        };
        let mut halves = Vec::with_capacity(2);
        let mut iters_done = 0;
        for in_place in [false, true] {
            let c = data::Call {
                which,
                in_place,
                dtype,
                op,
                root: args.root,
            };
            let wrong = if args.check != 0 {
                let w = data::check(comm, &c, &mut b)?;
                Some(sum_over_ranks(comm, w)?)
            } else {
                None
            };
            for _ in 0..args.warmup {
                data::call(comm, &c, &mut b)?;
            }
            if !group.is_empty() {
                group_call(comm, &c, &mut group)?;
            }
            let iters = if args.iters > 0 {
                args.iters
            } else {
                let (one, _) = time_calls(comm, &c, &mut b, &mut group, 1, 1, false, None)?;
                let one = over_ranks(comm, one, 3)?;
                crate::sizes::timed_iterations(one, args.trials, 1, 1_000_000)
            };
            let mut trials = Vec::with_capacity(args.trials.max(1));
            for trial in 0..args.trials.max(1) {
                let (t, start) = time_calls(
                    comm,
                    &c,
                    &mut b,
                    &mut group,
                    iters,
                    args.agg_iters,
                    args.report_cputime != 0,
                    iter_log.as_mut(),
                )?;
                if let Some(log) = iter_log.as_mut() {
                    log.write(start, size, in_place, trial)?;
                }
                trials.push(over_ranks(comm, t, args.average)?);
            }
            trials.sort_by(f64::total_cmp);
            let secs = trials[trials.len() / 2];
            let algbw = size as f64 / secs / 1e9;
            iters_done += iters * args.agg_iters * args.trials.max(1);
            halves.push(Half {
                time_us: secs * 1e6,
                algbw,
                busbw: algbw * which.bus_factor(p),
                wrong,
            });
        }
        let algo = match coll {
            Some(c) if matches!(which, Which::AllToAllV) => comm
                .algorithm_for_parts(c, &[])
                .unwrap_or_else(|_| "?".into()),
            Some(c) => comm.algorithm_for(c, size).unwrap_or_else(|_| "?".into()),
            None => "direct".into(),
        };
        let row = Row {
            collective: which.name(),
            ranks: p,
            size,
            count: size / es,
            dtype: dtype.name(),
            redop: if which.reduces() {
                OP_NAMES
                    .iter()
                    .find(|n| n.eq_ignore_ascii_case(op_name))
                    .copied()
                    .unwrap_or(op.name())
            } else {
                "none"
            },
            root: if which.rooted() { args.root as i64 } else { -1 },
            out_of_place: halves[0],
            in_place: halves[1],
            algo,
            iters: iters_done,
        };
        if print {
            let line = match format {
                Format::Table => report::table_row(&row, args.show_algo),
                Format::Csv => report::csv_row(&row),
                Format::Json => report::json_row(&row),
            };
            match &bar {
                Some(bar) => {
                    bar.inc(1);
                    bar.set_message(format!("{size} B"));
                    bar.suspend(|| println!("{line}"));
                }
                None => println!("{line}"),
            }
        }
        rows.push(row);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(rows)
}
