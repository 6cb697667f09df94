//! `oxccl-bench kernels`: GB/s of the fused reduction kernels per dtype, op, input count and
//! size, beside this machine's copy bandwidth measured in the same run.
//!
//! GB/s counts bytes read plus bytes written: `(inputs + 1) * bytes / time` for one output,
//! and `2 * bytes / time` for the copy (`copy_from_slice`, i.e. glibc `memcpy`, which uses
//! non-temporal stores for large sizes). `ratio` is kernel GB/s over copy GB/s at that size.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use oxccl_kernels::{reduce_copy_bytes_opts, CpuBackend, DataType, Options, ReduceOp, StoreMode};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Data types (nccl-tests or short names), comma separated; default: all ten.
    #[arg(long, value_delimiter = ',')]
    dtype: Vec<String>,
    /// Operators (sum prod min max avg premulsum), comma separated; default: all six.
    #[arg(long, value_delimiter = ',')]
    op: Vec<String>,
    /// Input counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8")]
    inputs: Vec<usize>,
    /// Smallest buffer size in bytes (suffixes K, M, G allowed).
    #[arg(long, default_value = "4K", value_parser = crate::sizes::parse_size)]
    min_bytes: usize,
    /// Largest buffer size in bytes (suffixes K, M, G allowed).
    #[arg(long, default_value = "256M", value_parser = crate::sizes::parse_size)]
    max_bytes: usize,
    /// Size multiplier between steps.
    #[arg(long, default_value_t = 4)]
    factor: usize,
    /// Threads per kernel call (0: one per core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPU backend (portable, avx2, avx512, neon), or `all` for every available one;
    /// default: the detected one.
    #[arg(long)]
    backend: Option<String>,
    /// Store mode: auto, normal or streaming.
    #[arg(long, default_value = "auto")]
    stores: String,
    /// Minimum measured time per point, in milliseconds (split into 5 batches; the median
    /// batch is reported).
    #[arg(long, default_value_t = 100)]
    min_ms: u64,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// What times a batch: `wall`, or `cpu`, the calling thread's time on a CPU (Linux
    /// `/proc/thread-self/schedstat`; `--threads 1` only), which leaves out the time other
    /// processes hold the core on a loaded machine.
    #[arg(long, default_value = "wall")]
    clock: String,
}

/// How [`time_interleaved`] measures a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    Wall,
    /// This thread's on-CPU time.
    Cpu,
}

impl Clock {
    fn parse(name: &str, threads: usize) -> anyhow::Result<Clock> {
        match name {
            "wall" => Ok(Clock::Wall),
            "cpu" if threads != 1 => {
                bail!("--clock cpu times the calling thread: needs --threads 1")
            }
            "cpu" => {
                thread_cpu_seconds().context("--clock cpu")?;
                Ok(Clock::Cpu)
            }
            other => bail!("--clock must be wall or cpu, not `{other}`"),
        }
    }

    /// Seconds from an arbitrary origin.
    fn now(self, origin: Instant) -> anyhow::Result<f64> {
        match self {
            Clock::Wall => Ok(origin.elapsed().as_secs_f64()),
            Clock::Cpu => thread_cpu_seconds(),
        }
    }
}

/// The calling thread's time on a CPU, from the first field of `/proc/thread-self/schedstat`
/// (nanoseconds).
fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let path = "/proc/thread-self/schedstat";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("{path}: no run time in `{}`", text.trim()))?;
    Ok(ns as f64 * 1e-9)
}

#[derive(serde::Serialize)]
struct Row {
    backend: String,
    dtype: String,
    op: String,
    inputs: usize,
    bytes: usize,
    threads: usize,
    stores: String,
    time_us: f64,
    gbps: f64,
    /// The faster of `memcpy` and a non-temporal-store copy (the kernel with one input and
    /// streaming stores), so that `ratio` compares against the best plain copy.
    copy_gbps: f64,
    memcpy_gbps: f64,
    stream_copy_gbps: f64,
    ratio: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dtypes: Vec<DataType> = if args.dtype.is_empty() {
        DataType::ALL.to_vec()
    } else {
        args.dtype
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    };
    let ops: Vec<ReduceOp> = if args.op.is_empty() {
        ReduceOp::ALL.to_vec()
    } else {
        args.op
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?
    };
    let clock = Clock::parse(&args.clock, args.threads)?;
    let stores = match args.stores.as_str() {
        "auto" => StoreMode::Auto,
        "normal" => StoreMode::Normal,
        "streaming" => StoreMode::Streaming,
        other => bail!("--stores must be auto, normal or streaming, not `{other}`"),
    };
    let backends: Vec<CpuBackend> = match args.backend.as_deref() {
        None => vec![CpuBackend::detect()],
        Some("all") => CpuBackend::available(),
        Some(name) => {
            let b: CpuBackend = name.parse()?;
            if !b.is_available() {
                bail!("backend {b} is not available on this machine");
            }
            vec![b]
        }
    };
    if args.inputs.is_empty() || args.inputs.contains(&0) {
        bail!("--inputs needs counts of at least 1");
    }
    if args.factor < 2 || args.min_bytes == 0 || args.min_bytes > args.max_bytes {
        bail!("need 0 < --min-bytes <= --max-bytes and --factor >= 2");
    }
    let mut sizes = vec![];
    let mut s = args.min_bytes;
    while s <= args.max_bytes {
        sizes.push(s);
        s = s.saturating_mul(args.factor);
    }
    let max_inputs = *args.inputs.iter().max().unwrap_or(&2);
    let max_bytes = *sizes.last().context("no sizes")?;
    let min_time = Duration::from_millis(args.min_ms.max(1));

    let mut inputs: Vec<Vec<u8>> = (0..max_inputs).map(|_| vec![0u8; max_bytes]).collect();
    let mut out = vec![0u8; max_bytes];
    let mut copy_out = vec![0u8; max_bytes];
    let mut stream_out = vec![0u8; max_bytes];

    let total =
        (backends.len() * dtypes.len() * ops.len() * args.inputs.len() * sizes.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if !args.json {
        println!(
            "# oxccl-bench kernels: GB/s = (inputs + 1) * bytes / time; copy = the faster of memcpy and a streaming-store copy of the same size, 2 * bytes / time"
        );
        println!(
            "# threads={} stores={} clock={} last-level cache {} MiB, streaming from a working set of {} MiB",
            args.threads,
            args.stores,
            args.clock,
            oxccl_kernels::last_level_cache_bytes() >> 20,
            oxccl_kernels::streaming_threshold_bytes() >> 20
        );
        println!(
            "{:>8} {:>8} {:>9} {:>6} {:>11} {:>7} {:>11} {:>8} {:>9} {:>6}",
            "backend",
            "type",
            "op",
            "inputs",
            "bytes",
            "threads",
            "time(us)",
            "GB/s",
            "copyGB/s",
            "ratio"
        );
    }
    for dt in &dtypes {
        for buf in inputs.iter_mut() {
            fill(*dt, buf);
        }
        for &backend in &backends {
            for op in &ops {
                let op = premul_for(*dt, *op);
                for &k in &args.inputs {
                    for &bytes in &sizes {
                        bar.set_message(format!("{backend} {dt} {op} x{k} {bytes}B"));
                        let bytes = bytes - bytes % dt.size();
                        let srcs: Vec<&[u8]> = inputs[..k].iter().map(|b| &b[..bytes]).collect();
                        let opts = Options {
                            backend: Some(backend),
                            stores,
                            threads: args.threads,
                        };
                        let (combine, epilogue) = op.split(k);
                        let dst = &mut out[..bytes];
                        let copy_src = &inputs[0][..bytes];
                        let copy_dst = &mut copy_out[..bytes];
                        let stream_dst = &mut stream_out[..bytes];
                        // The copies run in the same rounds as the kernel, so that load from
                        // other processes affects both sides of the ratio alike.
                        let copy_threads = copy_threads(bytes, args.threads);
                        let stream_opts = Options {
                            backend: None,
                            stores: StoreMode::Streaming,
                            threads: args.threads,
                        };
                        let [secs, memcpy_secs, stream_secs] = time_interleaved(
                            min_time,
                            clock,
                            [
                                &mut || {
                                    reduce_copy_bytes_opts(
                                        &opts,
                                        *dt,
                                        combine,
                                        epilogue,
                                        &srcs,
                                        &mut [&mut *dst],
                                    )
                                    .map_err(anyhow::Error::from)
                                },
                                &mut || {
                                    memcpy(copy_src, &mut *copy_dst, copy_threads);
                                    Ok(())
                                },
                                &mut || {
                                    reduce_copy_bytes_opts(
                                        &stream_opts,
                                        DataType::U8,
                                        ReduceOp::Sum,
                                        oxccl_kernels::Epilogue::None,
                                        &[copy_src],
                                        &mut [&mut *stream_dst],
                                    )
                                    .map_err(anyhow::Error::from)
                                },
                            ],
                        )?;
                        let memcpy_gbps = 2.0 * bytes as f64 / memcpy_secs / 1e9;
                        let stream_copy_gbps = 2.0 * bytes as f64 / stream_secs / 1e9;
                        let copy_gbps = memcpy_gbps.max(stream_copy_gbps);
                        let gbps = ((k + 1) * bytes) as f64 / secs / 1e9;
                        let row = Row {
                            backend: backend.name().to_string(),
                            dtype: dt.name().to_string(),
                            op: op.name().to_string(),
                            inputs: k,
                            bytes,
                            threads: args.threads,
                            stores: args.stores.clone(),
                            time_us: secs * 1e6,
                            gbps,
                            copy_gbps,
                            memcpy_gbps,
                            stream_copy_gbps,
                            ratio: gbps / copy_gbps,
                        };
                        bar.suspend(|| print_row(&row, args.json));
                        bar.inc(1);
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn print_row(r: &Row, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("json: {e}"),
        }
    } else {
        println!(
            "{:>8} {:>8} {:>9} {:>6} {:>11} {:>7} {:>11.1} {:>8.2} {:>9.2} {:>6.2}",
            r.backend,
            r.dtype,
            r.op,
            r.inputs,
            r.bytes,
            r.threads,
            r.time_us,
            r.gbps,
            r.copy_gbps,
            r.ratio
        );
    }
}

/// Integers need an integral PreMulSum scalar; use 3 for them and keep the parsed one for floats.
fn premul_for(dt: DataType, op: ReduceOp) -> ReduceOp {
    match op {
        ReduceOp::PreMulSum(s) if !dt.is_float() && s.fract() != 0.0 => ReduceOp::PreMulSum(3.0),
        op => op,
    }
}

/// Fills a buffer with non-zero values of `dt` in [0.5, 2) (floats) or random bits
/// (integers), so that neither denormals nor overflow to infinity slow the floats down.
fn fill(dt: DataType, buf: &mut [u8]) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pattern = Vec::with_capacity(4096);
    while pattern.len() < 4096 {
        let r = next();
        let f = 0.5 + (r >> 11) as f64 / (1u64 << 53) as f64 * 1.5;
        match dt {
            DataType::F32 => pattern.extend((f as f32).to_le_bytes()),
            DataType::F64 => pattern.extend(f.to_le_bytes()),
            DataType::F16 => pattern.extend(half_bits(f, false).to_le_bytes()),
            DataType::BF16 => pattern.extend(half_bits(f, true).to_le_bytes()),
            _ => pattern.extend((r | 1).to_le_bytes()),
        }
    }
    for chunk in buf.chunks_mut(4096) {
        chunk.copy_from_slice(&pattern[..chunk.len()]);
    }
}

/// f16 or bf16 bits of a value in [0.5, 2), without a `half` dependency in this crate.
fn half_bits(f: f64, bf16: bool) -> u16 {
    let bits = (f as f32).to_bits();
    if bf16 {
        (bits >> 16) as u16
    } else {
        // Normal range only: rebias the exponent from 127 to 15 and keep 10 mantissa bits.
        let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
        (((exp as u32) << 10) | ((bits >> 13) & 0x3ff)) as u16
    }
}

type Step<'a> = &'a mut dyn FnMut() -> anyhow::Result<()>;

/// Median seconds per call of each function, over 5 rounds in which every function runs one
/// batch in turn; a batch lasts about `min_time / 5` (by `clock`).
fn time_interleaved<const N: usize>(
    min_time: Duration,
    clock: Clock,
    mut fns: [Step<'_>; N],
) -> anyhow::Result<[f64; N]> {
    let origin = Instant::now();
    let mut iters = [1usize; N];
    for (f, it) in fns.iter_mut().zip(iters.iter_mut()) {
        // Batches are sized by the wall clock, whatever `clock` measures: the CPU clock
        // (schedstat) can lag a running thread by a tick, read a 15 ms warm-up as ~0 and
        // size a batch for hours (a `--clock cpu` run was still in its bf16 rows after 36 min).
        // Wall time is never shorter than CPU time, so a batch never outgrows its share.
        let t0 = Instant::now();
        f()?; // warm-up: faults pages in and trains the caches
        let once = t0.elapsed().as_secs_f64().max(1e-7);
        *it = ((min_time / 5).as_secs_f64() / once).ceil().max(1.0) as usize;
    }
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(5));
    for _ in 0..5 {
        for ((f, it), out) in fns.iter_mut().zip(iters).zip(samples.iter_mut()) {
            let t = clock.now(origin)?;
            for _ in 0..it {
                f()?;
            }
            out.push((clock.now(origin)? - t) / it as f64);
        }
    }
    Ok(samples.map(|mut v| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[2]
    }))
}

/// Threads for the memcpy baseline: as many as the kernel may use for this size.
fn copy_threads(bytes: usize, threads: usize) -> usize {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    threads
        .min(bytes / oxccl_kernels::MIN_BYTES_PER_THREAD)
        .max(1)
}

/// `copy_from_slice` (glibc `memcpy`) split over `threads` threads.
fn memcpy(src: &[u8], dst: &mut [u8], threads: usize) {
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            s.spawn(move || d.copy_from_slice(c));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_parse_and_the_cpu_clock_counts_only_this_threads_work() {
        assert_eq!(Clock::parse("wall", 4).unwrap(), Clock::Wall);
        let e = Clock::parse("cpu", 2).unwrap_err().to_string();
        assert!(e.contains("--threads 1"), "{e}");
        let e = Clock::parse("tsc", 1).unwrap_err().to_string();
        assert!(e.contains("wall or cpu"), "{e}");
        // Where /proc/thread-self/schedstat exists (Linux), sleeping costs no CPU time and a
        // busy loop does.
        if let Ok(cpu) = Clock::parse("cpu", 1) {
            let origin = Instant::now();
            let t0 = cpu.now(origin).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let slept = cpu.now(origin).unwrap() - t0;
            assert!(slept < 0.02, "{slept}");
            let t1 = cpu.now(origin).unwrap();
            let mut x = 0u64;
            while cpu.now(origin).unwrap() - t1 < 0.01 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            assert!(x > 0);
        }
    }
}
