//! `oxccl-bench simulate`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("oxccl-bench simulate is not built yet")
}
