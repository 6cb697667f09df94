//! `oxccl-bench all-reduce | reduce-scatter | all-gather | broadcast | all-to-all`.

#[derive(Clone, Copy, Debug)]
pub enum Which {
    AllReduce,
    ReduceScatter,
    AllGather,
    Broadcast,
    AllToAll,
}

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(which: Which, _args: Args) -> anyhow::Result<()> {
    anyhow::bail!("oxccl-bench {which:?} is not built yet")
}
