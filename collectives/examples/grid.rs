//! A 2 (data) x 3 (tensor) grid of split communicators, as a training job lays out data and
//! tensor parallelism: run it with 6 ranks from any launcher,
//!
//! ```text
//! mpirun -np 6 target/release/examples/grid
//! ```
//!
//! Rank `r` is tensor rank `r % 3` of data group `r / 3`. Each rank's tensor communicator (the 3
//! ranks of its data group) all-gathers while its data communicator (the 2 ranks with its
//! tensor index) all-reduces, at the same time from two threads, over sizes from one element
//! to 4M; every element is checked. Exits non-zero with the reason on any error.

use oxccl_collectives::{Communicator, ReduceOp};

const DATA: usize = 2;
const TENSOR: usize = 3;

fn main() {
    if let Err(e) = run() {
        eprintln!("grid: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let world = Communicator::from_env().map_err(|e| e.to_string())?;
    let (me, p) = (world.rank(), world.size());
    if p != DATA * TENSOR {
        return Err(format!("run with {} ranks, not {p}", DATA * TENSOR));
    }
    let (d, t) = (me / TENSOR, me % TENSOR);
    let tensor = world
        .split(Some(d as u32), t as i64)
        .map_err(|e| e.to_string())?
        .ok_or("no tensor communicator")?;
    let data = world
        .split(Some(t as u32), d as i64)
        .map_err(|e| e.to_string())?
        .ok_or("no data communicator")?;
    let sizes = [1usize, 7, 1000, 65_537, 1 << 20, 4 << 20];
    let (gathered, reduced) = std::thread::scope(|s| {
        let g = s.spawn(|| -> Result<usize, String> {
            for &n in &sizes {
                let mine: Vec<u32> = (0..n).map(|i| (me * 1_000_003 + i) as u32).collect();
                let mut all = vec![0u32; n * TENSOR];
                tensor
                    .all_gather(&mine, &mut all)
                    .map_err(|e| e.to_string())?;
                for q in 0..TENSOR {
                    let from = d * TENSOR + q;
                    if let Some(i) =
                        (0..n).find(|&i| all[q * n + i] != (from * 1_000_003 + i) as u32)
                    {
                        return Err(format!(
                            "rank {me}: all_gather of {n}: element {i} of rank {from}"
                        ));
                    }
                }
            }
            Ok(sizes.len())
        });
        let r = s.spawn(|| -> Result<usize, String> {
            for &n in &sizes {
                let mine: Vec<f64> = (0..n)
                    .map(|i| ((me * 31 + i) % 1013) as f64 - 500.0)
                    .collect();
                let mut sum = vec![0f64; n];
                data.all_reduce(&mine, &mut sum, ReduceOp::Sum)
                    .map_err(|e| e.to_string())?;
                for (i, x) in sum.iter().enumerate() {
                    let want: f64 = (0..DATA)
                        .map(|k| (((k * TENSOR + t) * 31 + i) % 1013) as f64 - 500.0)
                        .sum();
                    if *x != want {
                        return Err(format!(
                            "rank {me}: all_reduce of {n}: element {i} is {x}, not {want}"
                        ));
                    }
                }
            }
            Ok(sizes.len())
        });
        (g.join(), r.join())
    });
    let gathered = gathered.map_err(|_| "the all-gather thread panicked")??;
    let reduced = reduced.map_err(|_| "the all-reduce thread panicked")??;
    world.barrier().map_err(|e| e.to_string())?;
    println!(
        "rank {me}: data {d} tensor {t}: {reduced} all-reduces over {} ranks and {gathered} all-gathers over {} ranks at once, every element right",
        data.size(),
        tensor.size()
    );
    Ok(())
}
