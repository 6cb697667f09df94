//! How fast one core can read k streams, beside the streaming copy and the k-input kernels,
//! in one process, interleaved (issue 14's question: is a 4-8 input f16/bf16 reduction limited
//! by its conversions or by how fast one core reads memory?).
//!
//! `cargo run --release -p oxccl-kernels --example read_ceiling -- [MiB] [inputs] [reps]`
//! (defaults 64, 8, 7). Each step is timed by the thread's CPU time (Linux
//! `/proc/thread-self/schedstat`, so other processes' time on the core is left out) and by the
//! wall clock; medians are printed. The read-only pass loads every byte of every input and
//! combines it with an XOR, with no store; each kernel's read rate (`k / (k + 1)` of the bytes
//! it moves) is printed beside it. A kernel that reads as fast as the read-only pass is limited
//! by the core's reads from memory, not by its arithmetic.

use oxccl_kernels::{reduce_copy_bytes_opts, DataType, Epilogue, Options, ReduceOp, StoreMode};
use std::time::Instant;

/// This thread's time on a CPU, in seconds (falls back to 0, making the CPU column empty).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 * 1e-9)
}

/// XOR of every 8-byte word of every input, walking the inputs side by side 256 bytes (4
/// cache lines) at a time like the kernels do.
fn read_all(srcs: &[&[u8]]) -> u64 {
    let mut acc = [0u64; 8];
    let blocks = srcs[0].len() / 256;
    for b in 0..blocks {
        for s in srcs {
            for line in s[b * 256..(b + 1) * 256].chunks_exact(64) {
                let w: [u64; 8] = bytemuck::pod_read_unaligned(line);
                for (a, x) in acc.iter_mut().zip(w) {
                    *a ^= x;
                }
            }
        }
    }
    acc.iter().fold(0, |a, x| a ^ x)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mib = args.first().copied().unwrap_or(64);
    let k = args.get(1).copied().unwrap_or(8).max(1);
    let reps = args.get(2).copied().unwrap_or(7).max(1);
    let bytes = mib << 20;
    // Non-zero data whose 16-bit halves are ordinary f16/bf16 values (no NaN, no infinity).
    let inputs: Vec<Vec<u8>> = (0..k)
        .map(|s| {
            (0..bytes)
                .map(|i| {
                    if i % 2 == 1 {
                        0x3c
                    } else {
                        (i * 7 + s * 13) as u8
                    }
                })
                .collect()
        })
        .collect();
    let srcs: Vec<&[u8]> = inputs.iter().map(|b| &b[..]).collect();
    let mut out = vec![0u8; bytes];
    let opts = Options {
        backend: None,
        stores: StoreMode::Streaming,
        threads: 1,
    };
    let steps = ["copy", "read-only", "float", "half", "bfloat16"];
    let mut cpu = vec![vec![]; steps.len()];
    let mut wall = vec![vec![]; steps.len()];
    let mut sink = 0u64;
    for _ in 0..reps {
        for (i, step) in steps.iter().enumerate() {
            let (c0, w0) = (cpu_seconds(), Instant::now());
            let moved = match *step {
                "copy" => {
                    let (c, e) = (ReduceOp::Sum, Epilogue::None);
                    reduce_copy_bytes_opts(&opts, DataType::U8, c, e, &srcs[..1], &mut [&mut out])?;
                    2 * bytes
                }
                "read-only" => {
                    sink ^= read_all(&srcs);
                    k * bytes
                }
                name => {
                    let dt: DataType = name.parse()?;
                    let (c, e) = (ReduceOp::Sum, Epilogue::None);
                    reduce_copy_bytes_opts(&opts, dt, c, e, &srcs, &mut [&mut out])?;
                    (k + 1) * bytes
                }
            };
            let (c, w) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
            cpu[i].push(moved as f64 / c / 1e9);
            wall[i].push(moved as f64 / w / 1e9);
        }
    }
    std::hint::black_box(sink);
    println!(
        "# {k} inputs of {mib} MiB, {reps} interleaved rounds, median GB/s (bytes moved / time)"
    );
    println!("{:>10} {:>8} {:>8}", "step", "cpu", "wall");
    let mut med = vec![];
    for (i, step) in steps.iter().enumerate() {
        let (c, w) = (median(&mut cpu[i]), median(&mut wall[i]));
        println!("{step:>10} {c:8.2} {w:8.2}");
        med.push((c, w));
    }
    // A k-input kernel reads k of every k + 1 bytes it moves.
    let (read_cpu, read_wall) = med[1];
    for (step, (c, w)) in steps.iter().zip(&med).skip(2) {
        let share = k as f64 / (k + 1) as f64;
        println!(
            "# {step} reads at {:.2} GB/s cpu ({:.2}x the read-only pass), {:.2} wall ({:.2}x); ratio to the copy {:.2} cpu, {:.2} wall",
            c * share,
            c * share / read_cpu,
            w * share,
            w * share / read_wall,
            c / med[0].0,
            w / med[0].1
        );
    }
    Ok(())
}
