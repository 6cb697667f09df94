//! `oxccl-bench`: one binary for every layer's benchmark, in the formats the field reports
//! (GB/s for kernels, osu-style latency and bandwidth for transports, nccl-tests columns for
//! collectives) and the cluster simulator.

use clap::{Parser, Subcommand};

mod collective;
mod kernels;
mod simulate;
mod soak;
mod transport;

#[derive(Parser, Debug)]
#[command(name = "oxccl-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reduction kernels: GB/s per dtype, op and input count, beside this machine's copy bandwidth.
    Kernels(kernels::Args),
    /// Transports: ping-pong latency and bandwidth (osu_latency / osu_bw columns).
    Transport(transport::Args),
    /// All-reduce sweep, nccl-tests style.
    AllReduce(collective::Args),
    /// Reduce-scatter sweep, nccl-tests style.
    ReduceScatter(collective::Args),
    /// All-gather sweep, nccl-tests style.
    AllGather(collective::Args),
    /// Broadcast sweep, nccl-tests style.
    Broadcast(collective::Args),
    /// All-to-all sweep, nccl-tests style.
    AllToAll(collective::Args),
    /// Predict collective times on a model of a cluster.
    Simulate(simulate::Args),
    /// Random collectives, sizes, types, reductions and roots, every element checked.
    Soak(soak::Args),
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Kernels(args) => kernels::run(args),
        Command::Transport(args) => transport::run(args),
        Command::AllReduce(args) => collective::run(collective::Which::AllReduce, args),
        Command::ReduceScatter(args) => collective::run(collective::Which::ReduceScatter, args),
        Command::AllGather(args) => collective::run(collective::Which::AllGather, args),
        Command::Broadcast(args) => collective::run(collective::Which::Broadcast, args),
        Command::AllToAll(args) => collective::run(collective::Which::AllToAll, args),
        Command::Simulate(args) => simulate::run(args),
        Command::Soak(args) => soak::run(args),
    }
}

/// `OXCCL_DEBUG` works like `NCCL_DEBUG` (`warn`, `info`, `trace`, or a full `tracing` filter);
/// logs go to stderr so tables and JSON on stdout stay clean.
fn init_logging() {
    let filter = std::env::var("OXCCL_DEBUG").unwrap_or_else(|_| "warn".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(filter.to_ascii_lowercase())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
