//! `oxccl-bench sendrecv` (alias `exchange`): point-to-point bandwidth in both directions at
//! once on the collectives' own links, OSU `osu_bibw`'s shape. Every iteration, each rank
//! sends `--window` messages of the size to the next rank and receives as many from the
//! previous one, all in one group (so they progress together); with 2 ranks that is a pair
//! exchanging both ways, as `osu_bibw`; with more, a ring of `MPI_Sendrecv`s.
//!
//! Columns: size, window, time per iteration (the slowest rank's, median of `--trials`), the
//! bandwidth one rank moves in both directions (`bibw`: 2 x window x size / time, OSU's
//! number) and the #wrong elements of a checked first iteration.

use anyhow::{bail, Context};
use oxccl_collectives::{Bootstrap, Communicator, Options, ReduceOp};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Smallest message in bytes (suffixes K, M, G).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = crate::sizes::parse_size)]
    min_bytes: usize,
    /// Largest message in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "64M", value_parser = crate::sizes::parse_size)]
    max_bytes: usize,
    /// Size multiplication factor.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    step_factor: usize,
    /// Timed iterations per size (0: enough for about 0.25 s over all trials, as Open MPI's side).
    #[arg(short = 'n', long = "iters", default_value_t = 0)]
    iters: usize,
    /// Warm-up iterations.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: usize,
    /// Messages each way per iteration (OSU's window; 1 is `MPI_Sendrecv`).
    #[arg(long, default_value_t = 1)]
    window: usize,
    /// Timed loops per size; the median is reported.
    #[arg(long, default_value_t = crate::sizes::TRIALS)]
    trials: usize,
    /// Check the first iteration's data (1) or not (0).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    check: u8,
    /// Seconds without progress before a call fails (OXCCL_TIMEOUT otherwise).
    #[arg(short = 'T', long = "timeout")]
    timeout: Option<u64>,
    /// Start this many local processes of this binary.
    #[arg(long)]
    ranks: Option<usize>,
    /// One JSON object per row on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Byte `i` of what `from` sends: differs per sender and position.
fn byte(from: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ from.wrapping_mul(131) ^ (i >> 8)) as u8
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let sizes = crate::sizes::sweep(args.min_bytes, args.max_bytes, args.step_factor, 1, 1)
        .map_err(anyhow::Error::msg)?;
    if sizes.contains(&0) {
        bail!("messages must have at least one byte");
    }
    if args.window == 0 || args.trials == 0 {
        bail!("--window and --trials must be at least 1");
    }
    if let Some(n) = args.ranks {
        return crate::launch::ranks(n);
    }
    let mut options = Options::from_env()?;
    if let Some(t) = args.timeout {
        options.timeout = Duration::from_secs(t.max(1));
    }
    let Some(b) = Bootstrap::from_env_opt()? else {
        bail!("sendrecv needs ranks: --ranks N, or a launcher (mpirun, srun, torchrun)");
    };
    let comm = Communicator::init_with(b, options).context("joining the job")?;
    let (p, me) = (comm.size(), comm.rank());
    if p < 2 {
        bail!("sendrecv needs at least 2 ranks");
    }
    let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
    if me == 0 && !args.json {
        println!(
            "# oxccl sendrecv: {p} ranks, ring (send to rank + 1, receive from rank - 1), window {}, links {:?}",
            args.window,
            comm.transport_to(next)
        );
        println!(
            "# {:>12} {:>6} {:>10} {:>11} {:>8} {:>8}",
            "size(B)", "window", "time(us)", "bibw(GB/s)", "#wrong", "iters"
        );
    }
    for size in sizes {
        let send: Vec<u8> = (0..size).map(|i| byte(me, i)).collect();
        let mut recv = vec![0u8; size * args.window];
        let wrong = if args.check != 0 {
            exchange(&comm, &send, &mut recv, 1, next, prev)?;
            let bad = recv[..size]
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b != byte(prev, i))
                .count() as u64;
            let mut all = [0u64];
            comm.all_reduce(&[bad], &mut all, ReduceOp::Sum)?;
            Some(all[0])
        } else {
            None
        };
        let t0 = Instant::now();
        for _ in 0..args.warmup.max(1) {
            exchange(&comm, &send, &mut recv, args.window, next, prev)?;
        }
        let one = slowest(
            &comm,
            t0.elapsed().as_secs_f64() / args.warmup.max(1) as f64,
        )?;
        let iters = if args.iters > 0 {
            args.iters
        } else {
            crate::sizes::timed_iterations(one, args.trials, 2, 100_000)
        };
        let mut trials = Vec::with_capacity(args.trials);
        for _ in 0..args.trials {
            comm.barrier()?;
            let t = Instant::now();
            for _ in 0..iters {
                exchange(&comm, &send, &mut recv, args.window, next, prev)?;
            }
            trials.push(slowest(&comm, t.elapsed().as_secs_f64() / iters as f64)?);
        }
        trials.sort_by(f64::total_cmp);
        let secs = trials[trials.len() / 2];
        let bibw = 2.0 * (args.window * size) as f64 / secs / 1e9;
        if me == 0 {
            let wrong_text = wrong.map_or("N/A".to_string(), |w| w.to_string());
            if args.json {
                println!(
                    "{{\"test\":\"sendrecv\",\"ranks\":{p},\"bytes\":{size},\"window\":{},\"time_us\":{:.3},\"bibw_gbps\":{bibw:.4},\"wrong\":\"{wrong_text}\",\"iters\":{}}}",
                    args.window,
                    secs * 1e6,
                    iters * args.trials
                );
            } else {
                println!(
                    "  {size:>12} {:>6} {:>10.2} {bibw:>11.3} {wrong_text:>8} {:>8}",
                    args.window,
                    secs * 1e6,
                    iters * args.trials
                );
            }
        }
        if wrong.is_some_and(|w| w > 0) {
            bail!("{} wrong bytes at {size} B", wrong.unwrap_or(0));
        }
    }
    Ok(())
}

/// One iteration: `window` sends to `next` and receives from `prev`, in one group.
fn exchange(
    comm: &Communicator,
    send: &[u8],
    recv: &mut [u8],
    window: usize,
    next: usize,
    prev: usize,
) -> oxccl_collectives::Result<()> {
    let g = comm.group();
    for _ in 0..window {
        g.send(send, next)?;
    }
    // Each receive of the window has its own message-sized part of `recv` (borrows of one
    // group may not alias); the sends all read the same message, as OSU's do.
    for part in recv.chunks_exact_mut(send.len().max(1)).take(window) {
        g.recv(part, prev)?;
    }
    g.end()
}

/// The slowest rank's value.
fn slowest(comm: &Communicator, v: f64) -> anyhow::Result<f64> {
    let mut out = [0f64];
    comm.all_reduce(&[v], &mut out, ReduceOp::Max)?;
    Ok(out[0])
}
