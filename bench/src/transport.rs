//! `oxccl-bench transport`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("oxccl-bench transport is not built yet")
}
