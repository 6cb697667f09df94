//! `oxccl-bench`: one binary for every layer's benchmark, in the formats the field reports
//! (GB/s for kernels, osu-style latency and bandwidth for transports, nccl-tests columns for
//! collectives) and the cluster simulator.

use clap::{Parser, Subcommand};

mod collective;
mod emulate;
mod kernels;
mod launch;
mod plot;
mod sendrecv;
mod simulate;
mod sizes;
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
    /// Reduce sweep, nccl-tests style.
    Reduce(collective::Args),
    /// All-to-all sweep, nccl-tests style.
    AllToAll(collective::Args),
    /// Gather sweep, nccl-tests style (the size is root's output).
    Gather(collective::Args),
    /// Scatter sweep, nccl-tests style (the size is root's input).
    Scatter(collective::Args),
    /// All-to-all with uneven counts per peer (MPI_Alltoallv's shape; the size is one rank's
    /// send buffer).
    #[command(name = "all-to-all-v")]
    AllToAllV(collective::Args),
    /// Draw bus bandwidth against size for saved runs (`--json` output or nccl-tests text).
    Plot(plot::Args),
    /// Predict collective times on a model of a cluster.
    Simulate(simulate::Args),
    /// Point-to-point bandwidth both ways at once on the collectives' links (OSU bibw shape).
    #[command(alias = "exchange")]
    Sendrecv(sendrecv::Args),
    /// An emulated cluster (network namespaces, shaped links): all-reduce measured against the simulator.
    Emulate(emulate::Args),
    /// Random collectives, sizes, types, reductions and roots, every element checked.
    Soak(soak::Args),
}

fn main() -> anyhow::Result<()> {
    // Die quietly on a closed pipe (`oxccl-bench ... | head`), as C tools like nccl-tests do,
    // instead of panicking in println!.
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // OXCCL_DEBUG & co. as in any program using the crates, `warn` by default; logs go to
    // stderr (or OXCCL_DEBUG_FILE) so tables and JSON on stdout stay clean.
    oxccl_collectives::logging::install_cli("warn");
    let cli = Cli::parse();
    match cli.command {
        Command::Kernels(args) => kernels::run(args),
        Command::Transport(args) => transport::run(args),
        Command::AllReduce(args) => collective::run(collective::Which::AllReduce, args),
        Command::ReduceScatter(args) => collective::run(collective::Which::ReduceScatter, args),
        Command::AllGather(args) => collective::run(collective::Which::AllGather, args),
        Command::Broadcast(args) => collective::run(collective::Which::Broadcast, args),
        Command::Reduce(args) => collective::run(collective::Which::Reduce, args),
        Command::AllToAll(args) => collective::run(collective::Which::AllToAll, args),
        Command::Gather(args) => collective::run(collective::Which::Gather, args),
        Command::Scatter(args) => collective::run(collective::Which::Scatter, args),
        Command::AllToAllV(args) => collective::run(collective::Which::AllToAllV, args),
        Command::Plot(args) => plot::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Sendrecv(args) => sendrecv::run(args),
        Command::Emulate(args) => emulate::run(args),
    }
}
