//! `oxccl-bench simulate`: predicted collective times on a model of a cluster.
//!
//! The schedules are the ones the executor runs (`Algorithm::schedule`); the simulator
//! (`oxccl_collectives::sim`) runs them on the cluster described by `--cluster FILE`. Output is
//! nccl-tests' table per algorithm, or JSON lines with `oxccl-bench all-reduce --json`'s fields
//! plus `"predicted": true`; `--plot` draws busbw against size; `--model resnet50` predicts data-
//! parallel scaling efficiency; `--calibrate` fits this machine's alpha and beta.

mod calibrate;
pub(crate) mod cluster;
mod from_topo;
mod fsdp;
mod model;
mod resnet;
mod transformer;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::{Collective, Schedule};
use oxccl_collectives::sim::{simulate_with_progress, Network, SimReport};
use oxccl_collectives::tuner;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Cluster description file (TOML, or JSON by extension); see bench/clusters/README.md.
    #[arg(long, required_unless_present_any = ["calibrate", "topology"])]
    pub cluster: Option<PathBuf>,
    /// Instead of --cluster: `--nodes` copies (default 1) of the node this topology describes
    /// (hwloc XML, NCCL topology XML, or a synthetic string like "pack:2 core:8 pu:1"), built
    /// through oxccl-topo's Cluster view, on one switch.
    #[arg(long, conflicts_with = "cluster")]
    pub topology: Option<String>,
    /// With --topology: ranks per node (default: the node's GPU count, or 1).
    #[arg(long)]
    pub ranks_per_node: Option<u32>,
    /// With --topology: NIC bandwidth in GB/s per direction.
    #[arg(long, default_value_t = 12.5)]
    pub nic_gb_s: f64,
    /// With --topology: NIC-to-NIC latency in microseconds.
    #[arg(long, default_value_t = 2.0)]
    pub nic_latency_us: f64,
    /// Algorithms, comma separated: ring, rhd, tree, dbtree, hier:AxBxC (dims fastest first), or
    /// hier (dims from the cluster: devices per node, nodes per leaf, leaves).
    #[arg(long, value_delimiter = ',', default_value = "ring,tree,rhd")]
    pub algo: Vec<String>,
    /// Smallest size in bytes (suffixes K, M, G are powers of 1024).
    #[arg(short = 'b', long = "minbytes", default_value = "1K", value_parser = crate::sizes::parse_bytes)]
    pub min_bytes: u64,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "1G", value_parser = crate::sizes::parse_bytes)]
    pub max_bytes: u64,
    /// Size multiplication factor between steps of the sweep.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    pub step_factor: u64,
    /// Data type: float, double, half, bfloat16, int32, int64, int8, uint8.
    #[arg(short = 'd', long = "datatype", default_value = "float")]
    pub dtype: String,
    /// Resize the cluster to N nodes.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// Ranks to use (default: every device of the cluster).
    #[arg(long)]
    pub ranks: Option<u32>,
    /// Pipeline depth (chunks per block stream); default: the best of 1, 4, 16, 64, 256 whose largest
    /// message is at least 64 KiB, as a tuner would choose.
    #[arg(long)]
    pub pipeline: Option<u32>,
    /// Lanes per schedule (independent halves, quarters... of the buffer, each running the
    /// whole algorithm; see "Lanes" in the collectives crate); default: as the tuner picks them
    /// (`tuner::lanes`) for each algorithm and size.
    #[arg(long)]
    pub lanes: Option<u32>,
    /// Print every rank's finish time at the largest size.
    #[arg(long)]
    pub per_rank: bool,
    /// JSON lines instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write a plot (.svg or .png) of busbw against size, one line per algorithm.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// `--model` and its options (boxed: they are rarely given, and `Args` lives in main.rs's
    /// enum).
    #[command(flatten)]
    pub training: Box<TrainingArgs>,
    /// Fit alpha and beta of this machine's shm and TCP transports and write a cluster file.
    #[arg(long)]
    pub calibrate: bool,
    /// With --calibrate: read `oxccl-bench transport --json` output (and `all-reduce --json`
    /// lines, medians per size) from FILE instead of running them. With --cluster: check that
    /// file's model against the measurements, without fitting.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --calibrate: where to write the cluster file.
    #[arg(long, default_value = "bench/clusters/this-machine.toml")]
    pub out: PathBuf,
    /// With --calibrate: compare predicted and measured all-reduce for these local rank counts.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    pub compare_ranks: Vec<usize>,
    /// With --calibrate: fit the host model to the executor's ring at `cores` ranks and this
    /// many (default: the largest of --compare-ranks); the other counts are predictions.
    #[arg(long)]
    pub fit_ranks: Option<u32>,
}

/// Data-parallel training prediction (`--model`).
#[derive(clap::Args, Debug)]
pub struct TrainingArgs {
    /// Predict data-parallel training scaling for a model: resnet50, bert-large, gpt2-xl,
    /// llama-7b.
    #[arg(long)]
    pub model: Option<String>,
    /// Compute time per step per device for --model, in ms (default: resnet50's P100 figure;
    /// for the transformers, their FLOPs at the cluster file's `[device]` speed).
    #[arg(long)]
    pub compute_ms: Option<f64>,
    /// Samples (images or sequences) per device per step for --model (default: the model's).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Gradient type for --model (and gathered parameters with fsdp): fp32, bf16 or fp16.
    #[arg(long, default_value = "fp32")]
    pub grad_dtype: String,
    /// Data-parallel schemes for --model, comma separated: ddp (all-reduce in buckets), fsdp
    /// (ZeRO-3: all-gather and reduce-scatter per block).
    #[arg(long, value_delimiter = ',', default_value = "ddp")]
    pub sharding: Vec<String>,
    /// Gradient bucket cap for --model, in MiB, as PyTorch DDP's `bucket_cap_mb` (0: one
    /// all-reduce per tensor; a huge value: all gradients in one buffer).
    #[arg(long, default_value_t = 25.0)]
    pub bucket_mb: f64,
}

/// Most ranks one simulation takes: a ring all-reduce has about 2 p^2 operations, so 4096 ranks
/// (four times the largest shipped cluster) stay near 1 GB; beyond that memory runs out.
pub const MAX_SIMULATED_RANKS: usize = 4096;

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.calibrate {
        return calibrate::run(&args);
    }
    let (spec, net) = match (&args.topology, &args.cluster) {
        (Some(t), _) => {
            let nodes = args.nodes.map_or(1, |n| n as usize);
            let spec = from_topo::load(
                t,
                nodes,
                args.ranks_per_node.map(|r| r as usize),
                args.nic_gb_s,
                args.nic_latency_us,
            )?;
            let net = Network::new(&spec).with_context(|| format!("--topology {t}"))?;
            (spec, net)
        }
        (None, Some(path)) => cluster::load(path, args.nodes.map(|n| n as usize))?,
        (None, None) => anyhow::bail!("--cluster FILE or --topology is required"),
    };
    let ranks = args.ranks.map_or(net.devices(), |r| r as usize);
    if ranks == 0 || ranks > net.devices() {
        anyhow::bail!(
            "--ranks {ranks}: cluster `{}` has {} devices",
            spec.name,
            net.devices()
        );
    }
    if ranks > MAX_SIMULATED_RANKS {
        anyhow::bail!(
            "simulating {ranks} ranks ({} nodes x {} devices) is above the limit of \
             {MAX_SIMULATED_RANKS}: a ring's schedule grows with the square of the rank count; \
             give --ranks or fewer nodes",
            spec.nodes,
            net.devices_per_node()
        );
    }
    let algos: Vec<Algorithm> = parse_algos(&args.algo)?
        .into_iter()
        .map(|a| resolve_hier(a, ranks, &net))
        .collect();
    if let Some(m) = &args.training.model {
        return model::run(&args, m, &net, &algos);
    }
    let (elem, dtype) = dtype_size(&args.dtype)?;
    let sizes = sweep(args.min_bytes, args.max_bytes, args.step_factor, elem)?;
    if !args.json {
        println!(
            "# oxccl-bench simulate: cluster `{}` ({} nodes x {} devices), {ranks} ranks, all-reduce {dtype} sum, PREDICTED",
            spec.name,
            spec.nodes,
            spec.node.devices,
        );
    }
    let bar = progress_bar((algos.len() * sizes.len()) as u64);
    let mut curves = Vec::new();
    for algo in &algos {
        let mut cache = ScheduleCache {
            lanes: args.lanes.map(|l| l as usize),
            ..ScheduleCache::default()
        };
        if !args.json {
            println!("#\n# algo: {algo}");
            println!(
                "# {:>12} {:>12} {:>8} {:>6} {:>8} {:>12} {:>11} {:>11} {:>5}",
                "size",
                "count",
                "type",
                "redop",
                "pipeline",
                "time(us)",
                "algbw(GB/s)",
                "busbw(GB/s)",
                "lanes"
            );
        }
        let mut points = Vec::new();
        let mut last = None;
        for &bytes in &sizes {
            bar.set_message(format!("{algo} {}", human(bytes)));
            let (k, rep) = predict(
                &net,
                algo,
                ranks,
                bytes,
                elem,
                args.pipeline.map(|k| k as usize),
                &mut cache,
                &bar,
            )?;
            bar.inc(1);
            if args.json {
                println!("{}", json_line(algo, &rep, dtype, elem, k, &spec.name));
            } else {
                bar.suspend(|| {
                    println!(
                        "  {:>12} {:>12} {:>8} {:>6} {:>8} {:>12.2} {:>11.3} {:>11.3} {:>5}",
                        bytes,
                        bytes / elem as u64,
                        dtype,
                        "sum",
                        k,
                        rep.time * 1e6,
                        rep.algbw_gbps(),
                        rep.busbw_gbps(),
                        rep.lanes
                    )
                });
            }
            points.push((bytes, rep.busbw_gbps()));
            last = Some(rep);
        }
        if let (false, Some(rep)) = (args.json, last) {
            bar.suspend(|| print_details(&net, &rep, args.per_rank));
        }
        curves.push((algo.to_string(), points));
    }
    bar.finish_and_clear();
    if let Some(p) = &args.plot {
        let title = format!(
            "all-reduce busbw on {} ({ranks} ranks), predicted",
            spec.name
        );
        crate::plot::write(p, &title, &curves)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Per-tier link utilisation and rank finish spread of one simulation.
fn print_details(net: &Network, rep: &SimReport, per_rank: bool) {
    println!(
        "# at {}: {} messages, {:.1} MB on the wire; per-tier link utilisation (busy time / collective time):",
        human(rep.bytes),
        rep.messages,
        rep.wire_bytes as f64 / 1e6
    );
    for t in rep.tiers(net).iter().filter(|t| t.links_used > 0) {
        println!(
            "#   {:<9} {:>6} link directions used, mean {:>5.1}%, max {:>5.1}% ({})",
            t.tier,
            t.links_used,
            t.mean * 100.0,
            t.max * 100.0,
            t.busiest
        );
    }
    let (first, last) = rep
        .rank_times
        .iter()
        .enumerate()
        .fold((0, 0), |(lo, hi), (r, &t)| {
            (
                if t < rep.rank_times[lo] { r } else { lo },
                if t > rep.rank_times[hi] { r } else { hi },
            )
        });
    println!(
        "#   ranks finish between {:.2} us (rank {first}) and {:.2} us (rank {last})",
        rep.rank_times[first] * 1e6,
        rep.rank_times[last] * 1e6
    );
    if per_rank {
        for (r, t) in rep.rank_times.iter().enumerate() {
            println!("#   rank {r:>6} finished at {:>14.3} us", t * 1e6);
        }
    }
}

/// Schedules already built for one algorithm, by collective, rank count, pipeline depth and
/// lanes.
#[derive(Default)]
pub(crate) struct ScheduleCache {
    /// Lanes every schedule gets (`--lanes`); `None`: as the tuner picks them.
    pub lanes: Option<usize>,
    /// Each schedule with the time it took to build.
    by_pipeline: HashMap<(Collective, usize, usize, usize), (Schedule, std::time::Duration)>,
}

impl ScheduleCache {
    fn get_timed(
        &mut self,
        algo: &Algorithm,
        collective: Collective,
        ranks: usize,
        k: usize,
        lanes: usize,
    ) -> anyhow::Result<&(Schedule, std::time::Duration)> {
        let key = (collective, ranks, k, lanes);
        if !self.by_pipeline.contains_key(&key) {
            // Keep memory bounded: one rank count at a time.
            self.by_pipeline.retain(|&(_, r, _, _), _| r == ranks);
            let started = std::time::Instant::now();
            let s = algo
                .schedule_lanes(collective, ranks, k, lanes)
                .with_context(|| format!("building {algo} {collective:?} for {ranks} ranks"))?;
            self.by_pipeline.insert(key, (s, started.elapsed()));
        }
        Ok(&self.by_pipeline[&key])
    }
}

const MIN_CHUNK: u64 = 64 << 10;

/// Simulates `algo`'s all-reduce at `bytes`, at the given pipeline depth or the best of a few.
#[allow(clippy::too_many_arguments)]
pub(crate) fn predict(
    net: &Network,
    algo: &Algorithm,
    ranks: usize,
    bytes: u64,
    elem: usize,
    pipeline: Option<usize>,
    cache: &mut ScheduleCache,
    bar: &ProgressBar,
) -> anyhow::Result<(usize, SimReport)> {
    let all_reduce = Collective::AllReduce;
    predict_collective(
        net, algo, all_reduce, ranks, bytes, elem, pipeline, cache, bar,
    )
}

/// [`predict`] for any collective `algo` supports; `bytes` is the whole buffer (for
/// reduce-scatter and all-gather, `ranks` times each rank's shard), as in nccl-tests.
#[allow(clippy::too_many_arguments)]
pub(crate) fn predict_collective(
    net: &Network,
    algo: &Algorithm,
    collective: Collective,
    ranks: usize,
    bytes: u64,
    elem: usize,
    pipeline: Option<usize>,
    cache: &mut ScheduleCache,
    bar: &ProgressBar,
) -> anyhow::Result<(usize, SimReport)> {
    let candidates = match pipeline {
        Some(k) => vec![k],
        None => {
            // Depths whose largest message stays at least MIN_CHUNK (the simulator charges no
            // per-message software cost, so it would otherwise pipeline without limit).
            let largest =
                |k: usize| tuner::message_bytes(algo, collective, ranks, bytes as usize, k) as u64;
            let ks: Vec<usize> = [1, 4, 16, 64, 256]
                .into_iter()
                .filter(|&k| k == 1 || largest(k) >= MIN_CHUNK)
                .collect();
            ks
        }
    };
    let lanes_apply = matches!(
        collective,
        Collective::AllReduce | Collective::Broadcast { .. } | Collective::Reduce { .. }
    );
    let mut best: Option<(usize, SimReport)> = None;
    for k in candidates {
        // As the executor would run it: `--lanes`, else the tuner's lanes for this depth.
        let lanes = match cache.lanes {
            Some(l) if lanes_apply => l,
            _ => tuner::lanes(algo, collective, ranks, bytes as usize, k),
        };
        let (s, built) = cache.get_timed(algo, collective, ranks, k, lanes)?;
        let built = *built;
        let total_ops: usize = s.programs.iter().map(|p| p.ops().len()).sum();
        // Without a terminal the bar is hidden: report every quarter on stderr instead.
        let mut quarter = 0;
        let mut tick = |done: u64, total: u64| {
            if total_ops > 4_000_000 {
                let pct = done as f64 * 100.0 / total.max(1) as f64;
                let msg = format!("{algo} {} k={k}: {pct:.0}% of {total} ops", human(bytes));
                if bar.is_hidden() && pct >= 25.0 * (quarter + 1) as f64 && pct < 100.0 {
                    quarter = (pct / 25.0) as usize;
                    eprintln!("# {msg}");
                }
                bar.set_message(msg);
            }
        };
        let started = std::time::Instant::now();
        let rep = simulate_with_progress(net, s, bytes, elem, &mut tick)
            .with_context(|| format!("simulating {algo} at {bytes} bytes, pipeline {k}"))?;
        if total_ops > 4_000_000 {
            bar.suspend(|| {
                eprintln!(
                    "# {algo} on {ranks} ranks, {}, pipeline {k}: {total_ops} ops; schedule built in {:.2} s, simulated in {:.2} s ({} events)",
                    human(bytes),
                    built.as_secs_f64(),
                    started.elapsed().as_secs_f64(),
                    rep.events
                )
            });
        }
        if best.as_ref().is_none_or(|(_, b)| rep.time < b.time) {
            best = Some((k, rep));
        }
    }
    best.context("no pipeline depth to try")
}

pub(crate) fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn json_line(
    algo: &Algorithm,
    rep: &SimReport,
    dtype: &str,
    elem: usize,
    k: usize,
    cluster: &str,
) -> String {
    serde_json::json!({
        "collective": "all-reduce",
        "algo": algo.to_string(),
        "ranks": rep.ranks,
        "bytes": rep.bytes,
        "count": rep.bytes / elem as u64,
        "dtype": dtype,
        "op": "sum",
        "root": -1,
        "time_us": rep.time * 1e6,
        "algbw_gbps": rep.algbw_gbps(),
        "busbw_gbps": rep.busbw_gbps(),
        "wrong": 0,
        "iters": 0,
        "predicted": true,
        "pipeline": k,
        "lanes": rep.lanes,
        "cluster": cluster,
    })
    .to_string()
}

/// `hier` without dims takes them from the cluster, as the communicator takes them from the
/// topology: devices per node, then nodes per leaf and leaves when the leaves divide the nodes
/// evenly, else all nodes in one dimension.
fn resolve_hier(algo: Algorithm, ranks: usize, net: &Network) -> Algorithm {
    match algo {
        Algorithm::Hierarchical(d) if d.is_empty() => {
            let dpn = net.devices_per_node().min(ranks).max(1);
            let nodes = ranks / dpn;
            let npl = net
                .spec()
                .network
                .as_ref()
                .map_or(nodes, |n| n.nodes_per_leaf.min(nodes).max(1));
            let mut dims = vec![dpn];
            if nodes % npl == 0 && npl < nodes {
                dims.extend([npl, nodes / npl]);
            } else {
                dims.push(nodes);
            }
            dims.retain(|&x| x > 1);
            if dims.is_empty() {
                dims.push(1);
            }
            Algorithm::Hierarchical(dims)
        }
        other => other,
    }
}

pub(crate) fn parse_algos(names: &[String]) -> anyhow::Result<Vec<Algorithm>> {
    names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| {
            n.parse::<Algorithm>()
                .with_context(|| format!("--algo {n}"))
        })
        .collect()
}

/// Bytes per element and nccl-tests' name for a `-d` value.
pub(crate) fn dtype_size(name: &str) -> anyhow::Result<(usize, &'static str)> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "float" | "f32" | "float32" => (4, "float"),
        "double" | "f64" | "float64" => (8, "double"),
        "half" | "f16" | "float16" => (2, "half"),
        "bfloat16" | "bf16" => (2, "bfloat16"),
        "int32" | "i32" => (4, "int32"),
        "uint32" | "u32" => (4, "uint32"),
        "int64" | "i64" => (8, "int64"),
        "uint64" | "u64" => (8, "uint64"),
        "int8" | "i8" => (1, "int8"),
        "uint8" | "u8" => (1, "uint8"),
        other => anyhow::bail!("unknown data type `{other}`"),
    })
}

/// nccl-tests' sweep: min, min*f, ... up to max, each a whole number of elements.
fn sweep(min: u64, max: u64, factor: u64, elem: usize) -> anyhow::Result<Vec<u64>> {
    if factor < 2 {
        anyhow::bail!("-f must be at least 2");
    }
    if min > max {
        anyhow::bail!("-b {min} is larger than -e {max}");
    }
    let mut out = Vec::new();
    let mut b = min.max(elem as u64);
    while b <= max {
        out.push(b / elem as u64 * elem as u64);
        b = match b.checked_mul(factor) {
            Some(n) => n,
            None => break,
        };
    }
    Ok(out)
}

pub(crate) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if (1 << 10..1_000_000).contains(&b) && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b if b >= 1_000_000 => format!("{:.1}MB", b as f64 / 1e6),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_hier_takes_its_dims_from_the_cluster() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters");
        let (_, dgx) = cluster::load(&path.join("dgx-h100-pod.toml"), None).unwrap();
        let hier = Algorithm::Hierarchical(vec![]);
        // 128 nodes, 32 per leaf: 8 x 32 x 4.
        assert_eq!(
            resolve_hier(hier.clone(), 1024, &dgx),
            Algorithm::Hierarchical(vec![8, 32, 4])
        );
        // 64 nodes, 18 per leaf does not divide: 4 x 64.
        let (_, ddl) = cluster::load(&path.join("ddl-2017.toml"), None).unwrap();
        assert_eq!(
            resolve_hier(hier, 256, &ddl),
            Algorithm::Hierarchical(vec![4, 64])
        );
        assert_eq!(resolve_hier(Algorithm::Ring, 256, &ddl), Algorithm::Ring);
    }

    #[test]
    fn args_stay_small_enough_for_the_dispatcher_enum() {
        // main.rs holds every subcommand's Args in one enum: clippy::large_enum_variant fires
        // when the largest is 200 bytes above the next (~170 bytes today).
        assert!(
            std::mem::size_of::<Args>() <= 336,
            "{}",
            std::mem::size_of::<Args>()
        );
    }

    #[test]
    fn sizes_parse_like_nccl_tests() {
        assert_eq!(
            sweep(1024, 8192, 2, 4).unwrap(),
            vec![1024, 2048, 4096, 8192]
        );
        assert!(sweep(10, 1, 2, 4).is_err());
        assert_eq!(human(1 << 30), "1G");
    }
}
