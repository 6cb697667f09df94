//! `oxccl-bench kernels`.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("oxccl-bench kernels is not built yet")
}
