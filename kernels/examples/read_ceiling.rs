//! How fast one core can read k streams, beside the streaming copy and the k-input kernels,
//! in one process, interleaved (issue 14's question: is a 4-8 input f16/bf16 reduction limited
//! by its conversions or by how fast one core reads memory?), with the buffers on 4 KiB pages
//! and on transparent huge pages side by side.
//!
//! `cargo run --release -p oxccl-kernels --example read_ceiling -- [MiB] [inputs] [reps]`
//! (defaults 64, 8, 7). Each step is timed by the thread's CPU time (Linux
//! `/proc/thread-self/schedstat`, so other processes' time on the core is left out) and by the
//! wall clock; medians are printed. The read-only pass loads every byte of every input and
//! combines it with an XOR, with no store; each kernel's read rate (`k / (k + 1)` of the bytes
//! it moves) is printed beside it. A kernel that reads as fast as the read-only pass is limited
//! by the core's reads from memory, not by its arithmetic.

use memmap2::MmapMut;
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

/// `k` inputs of non-zero data whose 16-bit halves are ordinary f16/bf16 values (no NaN, no
/// infinity) and two outputs, in anonymous mappings, on huge pages where `huge`.
fn buffers(k: usize, bytes: usize, huge: bool) -> std::io::Result<Vec<MmapMut>> {
    (0..k + 2)
        .map(|s| {
            let mut m = MmapMut::map_anon(bytes)?;
            #[cfg(target_os = "linux")]
            if huge {
                m.advise(memmap2::Advice::HugePage)?;
            }
            for (i, b) in m.iter_mut().enumerate() {
                *b = if i % 2 == 1 {
                    0x3c
                } else {
                    (i * 7 + s * 13) as u8
                };
            }
            Ok(m)
        })
        .collect()
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
    let mut sets = [buffers(k, bytes, false)?, buffers(k, bytes, true)?];
    let opts = Options {
        backend: None,
        stores: StoreMode::Streaming,
        threads: 1,
    };
    let (sum, none) = (ReduceOp::Sum, Epilogue::None);
    let steps = ["copy", "read-only", "float", "half", "bfloat16"];
    let mut cpu = vec![vec![vec![]; steps.len()]; 2];
    let mut wall = vec![vec![vec![]; steps.len()]; 2];
    let mut sink = 0u64;
    for _ in 0..reps {
        for (p, set) in sets.iter_mut().enumerate() {
            let (ins, outs) = set.split_at_mut(k);
            let srcs: Vec<&[u8]> = ins.iter().map(|m| &m[..]).collect();
            for (i, step) in steps.iter().enumerate() {
                let (c0, w0) = (cpu_seconds(), Instant::now());
                let moved = match *step {
                    "copy" => {
                        let dst = &mut [&mut outs[1][..]];
                        reduce_copy_bytes_opts(&opts, DataType::U8, sum, none, &srcs[..1], dst)?;
                        2 * bytes
                    }
                    "read-only" => {
                        sink ^= read_all(&srcs);
                        k * bytes
                    }
                    name => {
                        let dt: DataType = name.parse()?;
                        reduce_copy_bytes_opts(&opts, dt, sum, none, &srcs, &mut [&mut outs[0]])?;
                        (k + 1) * bytes
                    }
                };
                let (c, w) = (cpu_seconds() - c0, w0.elapsed().as_secs_f64());
                // A step shorter than the clock's resolution has no CPU-clock rate.
                cpu[p][i].push(if c > 0.0 {
                    moved as f64 / c / 1e9
                } else {
                    f64::NAN
                });
                wall[p][i].push(moved as f64 / w / 1e9);
            }
        }
    }
    std::hint::black_box(sink);
    println!(
        "# {k} inputs of {mib} MiB, {reps} interleaved rounds, median GB/s (bytes moved / time)"
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9}",
        "step", "4K cpu", "4K wall", "THP cpu", "THP wall"
    );
    let med: Vec<Vec<(f64, f64)>> = (0..2)
        .map(|p| {
            (0..steps.len())
                .map(|i| (median(&mut cpu[p][i]), median(&mut wall[p][i])))
                .collect()
        })
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let ((c4, w4), (ch, wh)) = (med[0][i], med[1][i]);
        println!("{step:>10} {c4:9.2} {w4:9.2} {ch:9.2} {wh:9.2}");
    }
    // A k-input kernel reads k of every k + 1 bytes it moves.
    let share = k as f64 / (k + 1) as f64;
    for (p, pages) in ["4 KiB pages", "huge pages"].iter().enumerate() {
        let (copy, read) = (med[p][0], med[p][1]);
        for (step, (c, w)) in steps.iter().zip(&med[p]).skip(2) {
            println!(
                "# {pages}: {step} reads at {:.2}x the read-only pass (cpu), {:.2}x (wall); ratio to the copy {:.2} cpu, {:.2} wall",
                c * share / read.0,
                w * share / read.1,
                c / copy.0,
                w / copy.1
            );
        }
    }
    Ok(())
}
