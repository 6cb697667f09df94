//! `oxccl-topo`: print a machine's topology (lstopo-like), its GPU/NIC matrix
//! (`nvidia-smi topo -m`-like), or convert between formats.

use clap::{Parser, ValueEnum};
use oxccl_topo::sources::{self, Loaded};
use oxccl_topo::{render, TopoError, Topology};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum OutFormat {
    /// lstopo-like tree.
    Text,
    /// JSON document.
    Json,
    /// hwloc XML v2 (readable by `lstopo -i FILE`).
    Xml,
    /// NCCL topology XML (`NCCL_TOPO_FILE`).
    NcclXml,
}

/// Machine topology: hwloc's view without hwloc.
#[derive(Parser, Debug)]
#[command(name = "oxccl-topo", version, about)]
struct Cli {
    /// Read this file (hwloc XML, NCCL topology XML, `nvidia-smi topo -m` text; detected)
    /// or synthetic string (`"pack:2 numa:2 core:8 pu:2"`) instead of discovering this machine.
    #[arg(short, long, value_name = "FILE|SYNTHETIC")]
    input: Option<String>,
    /// Output format.
    #[arg(long = "of", value_enum, default_value = "text")]
    of: OutFormat,
    /// Print the GPU/NIC path matrix like `nvidia-smi topo -m` (JSON with `--of json`).
    #[arg(long)]
    matrix: bool,
    /// Root of the sysfs/procfs tree to discover (a captured tree, or `/`).
    #[arg(long, env = "OXCCL_TOPO_FSROOT", default_value = "/")]
    fsroot: PathBuf,
    /// Print the path class and bottleneck bandwidth between two devices
    /// (`GPU0`, `NIC1`, `mlx5_0`, `cuda2`, a PCI address).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    path: Option<Vec<String>>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn run(cli: &Cli) -> Result<String, TopoError> {
    let loaded = match &cli.input {
        Some(i) => sources::load(i)?,
        None => Loaded::Topology(Box::new(sources::sysfs::discover(&cli.fsroot)?)),
    };
    let topo: Topology = match loaded {
        Loaded::Matrix(m) => {
            if cli.path.is_some() || !matches!(cli.of, OutFormat::Text | OutFormat::Json) {
                return Err(TopoError::Invalid(
                    "nvidia-smi input holds only a GPU/NIC matrix: it can be printed (--matrix, --of text|json) but not converted".into(),
                ));
            }
            return Ok(match cli.of {
                OutFormat::Json => serde_json::to_string_pretty(&m)
                    .map_err(|e| TopoError::Invalid(e.to_string()))?,
                _ => m.render(),
            });
        }
        Loaded::Topology(t) => *t,
    };
    if let Some(p) = &cli.path {
        let a = topo.find_device(&p[0])?;
        let b = topo.find_device(&p[1])?;
        let class = topo.path_class(a, b);
        let bw = topo
            .path_bandwidth(a, b)
            .map(|x| format!("{x:.2} GB/s"))
            .unwrap_or("unknown".into());
        return Ok(format!("{} -> {}: {class}, bottleneck {bw}\n", p[0], p[1]));
    }
    if cli.matrix {
        let m = topo.matrix();
        return Ok(match cli.of {
            OutFormat::Json => {
                serde_json::to_string_pretty(&m).map_err(|e| TopoError::Invalid(e.to_string()))?
            }
            _ => m.render(),
        });
    }
    Ok(match cli.of {
        OutFormat::Text => render::tree(&topo),
        OutFormat::Json => render::json(&topo),
        OutFormat::Xml => sources::hwloc_xml_export::to_string(&topo),
        OutFormat::NcclXml => sources::nccl_xml::to_string(&topo),
    })
}

fn main() -> ExitCode {
    oxccl_collectives::logging::install_cli("warn");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(text) => {
            let res = match &cli.output {
                Some(p) => std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display())),
                None => std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| e.to_string()),
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("oxccl-topo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("oxccl-topo: {e}");
            ExitCode::FAILURE
        }
    }
}
