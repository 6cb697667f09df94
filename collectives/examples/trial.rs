//! One rank of the reliability acceptance loops (`bench/scripts/reliability.sh`), run under any
//! launcher (`mpirun`, or the `OXCCL_*` variables):
//!
//! - `trial oneshot`: one 16 MiB f32 all-reduce, every element checked, then exit.
//! - `trial mismatch KIND`: the first call is mismatched (`bcast-root`, `bcast-count`,
//!   `reduce-count`, `reduce-root`, `dtype`, `op`, `p2p`); prints `rank R: error after S s: ...`
//!   (or `rank R: ok`), exit code 0 either way so that the launcher does not kill the others.
//! - `trial steady CALLS`: that many all-reduces of 1 to 128 Ki u64, every element checked
//!   (strangers knock meanwhile); prints `rank R: N calls ok`.
//!
//! Any unexpected failure prints `rank R: FAILED: ...` and exits 1.

use oxccl_collectives::{Communicator, ReduceOp};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let comm = match Communicator::from_env() {
        Ok(c) => c,
        Err(e) => {
            println!("rank ?: FAILED: init: {e}");
            std::process::exit(1);
        }
    };
    let r = comm.rank();
    let out = match args.first().map(String::as_str) {
        Some("oneshot") => oneshot(&comm),
        Some("mismatch") => mismatch(&comm, args.get(1).map_or("", String::as_str)),
        Some("steady") => steady(
            &comm,
            args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1000),
        ),
        _ => Err("usage: trial oneshot | mismatch KIND | steady CALLS".into()),
    };
    match out {
        Ok(line) => println!("rank {r}: {line}"),
        Err(e) => {
            println!("rank {r}: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

fn oneshot(c: &Communicator) -> Result<String, String> {
    let n = 4 << 20;
    let r = c.rank() as f32;
    let input: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 + r).collect();
    let mut out = vec![0f32; n];
    c.all_reduce(&input, &mut out, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    let p = c.size() as f32;
    let ranks: f32 = (0..c.size()).map(|q| q as f32).sum();
    for (i, &x) in out.iter().enumerate() {
        let want = (i % 1000) as f32 * p + ranks;
        if x != want {
            return Err(format!("element {i}: got {x}, want {want}"));
        }
    }
    Ok("16 MiB all_reduce ok".into())
}

fn mismatch(c: &Communicator, kind: &str) -> Result<String, String> {
    let r = c.rank();
    let odd = r == c.size() - 1;
    let start = Instant::now();
    let res = match kind {
        "bcast-root" => c.broadcast(&mut [0u32; 5000], usize::from(odd)),
        "bcast-count" => c.broadcast(&mut vec![1f32; 100 + usize::from(odd)], 0),
        "reduce-count" => {
            let n = 100 + usize::from(odd);
            c.reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum, 0)
        }
        "reduce-root" => c.reduce(
            &[1f32; 64],
            &mut [0f32; 64],
            ReduceOp::Sum,
            usize::from(odd),
        ),
        "dtype" if odd => c.all_reduce(&[1i32; 4], &mut [0i32; 4], ReduceOp::Sum),
        "dtype" => c.all_reduce(&[1f32; 4], &mut [0f32; 4], ReduceOp::Sum),
        "op" => {
            let op = if odd { ReduceOp::Max } else { ReduceOp::Sum };
            c.all_reduce(&[1f32; 4], &mut [0f32; 4], op)
        }
        // In the call itself (no later call to catch it): rank 2 waits in a barrier, which
        // fails when the other two abort.
        "p2p" if r == 0 => c.send(&[1f32; 100], 1),
        "p2p" if r == 1 => c.recv(&mut [0f32; 101], 0),
        "p2p" => c.barrier(),
        other => return Err(format!("unknown mismatch kind {other:?}")),
    };
    let took = start.elapsed().as_secs_f64();
    Ok(match res {
        Ok(()) => format!("ok after {took:.3} s"),
        Err(e) => format!("error after {took:.3} s: {e}"),
    })
}

fn steady(c: &Communicator, calls: u64) -> Result<String, String> {
    let p = c.size() as u64;
    for call in 0..calls {
        let n = 1usize << (call % 18);
        let input: Vec<u64> = (0..n as u64)
            .map(|i| i * 31 + call + c.rank() as u64)
            .collect();
        let mut out = vec![0u64; n];
        c.all_reduce(&input, &mut out, ReduceOp::Sum)
            .map_err(|e| format!("call {call}: {e}"))?;
        let ranks = p * (p - 1) / 2;
        for (i, &x) in out.iter().enumerate() {
            let want = (i as u64 * 31 + call) * p + ranks;
            if x != want {
                return Err(format!("call {call}, element {i}: got {x}, want {want}"));
            }
        }
    }
    Ok(format!("{calls} calls ok"))
}
