//! `--calibrate`: fit alpha (latency) and beta (seconds per byte) of this machine's shared-memory
//! and TCP transports from `oxccl-bench transport --json` measurements, measure gamma (the
//! reduction rate) with a plain summing loop, write a cluster file for this machine, and compare
//! predicted against measured all-reduce (`oxccl-bench all-reduce --ranks N --json`).
//!
//! The model is the simulator's host model (`collectives/src/sim/host.rs`): the ranks share
//! `cores` (read from the OS), a shared-memory message or reduction goes through the node's
//! memory system, whose rate depends on whether the working set fits the last-level cache
//! (its size read from sysfs), and a rank on an oversubscribed node pays a scheduling delay per
//! message. `this-machine.toml` takes alpha and beta of shm and TCP from the transport, the
//! cache and DRAM rates from summing loops, and ideal time-sharing. The executor's
//! shared-memory links are its own rings, not the transport crate's, so to predict the
//! executor every parameter of the model (alpha, link bandwidth, memory and cache bandwidth,
//! the cache share, sharing cost, switch latency) is fitted at once, by least squares on the
//! log of predicted over measured time, to the executor's ring all-reduce at two rank counts:
//! `cores` (no time-sharing) and `--fit-ranks` (default: the largest of `--compare-ranks`);
//! the other counts are predictions (`this-machine-executor.toml`). All-reduce records
//! (`oxccl-bench all-reduce --json` lines) in the `--from` file are used instead of running
//! the all-reduce; several records of one size give their median.
//!
//! Measurements are read as JSON (an array, or one object per line). A record is used when it
//! names its transport (`transport`: "shm" or "tcp"), its size (`bytes` or `size`) and either a
//! one-way time per message (`latency_us`, `time_us` or `lat_us`; ignored for records with
//! `"test": "bandwidth"`, whose time per message is a streaming rate) or a bandwidth
//! (`bandwidth_gbps`, `bw_gbps`, `gbps`, in GB/s, or `bandwidth_mbps`/`mb_s`, in MB/s).

use super::{cluster, dtype_size, Args};
use anyhow::Context;
use oxccl_collectives::sim::{ClusterSpec, HostSpec, LinkSpec, MemorySpec, NicSpec, NodeSpec};
use serde_json::Value;
use std::process::Command;

mod executor;
use executor::{fit_executor, predict, Ctx, ExecParams};

/// alpha (s) and beta (s/B) of one transport, and how many points they come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    pub alpha: f64,
    pub beta: f64,
    pub points: usize,
}

struct Sample {
    transport: String,
    bytes: f64,
    time: Option<f64>,
    bandwidth: Option<f64>,
}

fn num(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().find_map(|k| v.get(*k).and_then(Value::as_f64))
}

fn records(text: &str) -> anyhow::Result<Vec<Value>> {
    let t = text.trim();
    if t.starts_with('[') {
        return Ok(serde_json::from_str::<Vec<Value>>(t)?);
    }
    t.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line: {l}")))
        .collect()
}

fn samples(text: &str) -> anyhow::Result<Vec<Sample>> {
    Ok(records(text)?
        .iter()
        .filter_map(|v| {
            let transport = v.get("transport")?.as_str()?.to_ascii_lowercase();
            let bytes = num(v, &["bytes", "size"])?;
            // A streaming (bandwidth) test's time per message is not alpha + n beta.
            let streaming = v.get("test").and_then(Value::as_str) == Some("bandwidth");
            let time = num(v, &["latency_us", "time_us", "lat_us"])
                .filter(|_| !streaming)
                .map(|us| us * 1e-6);
            let bandwidth = num(v, &["bandwidth_gbps", "bw_gbps", "gbps"])
                .map(|g| g * 1e9)
                .or_else(|| num(v, &["bandwidth_mbps", "mb_s"]).map(|m| m * 1e6));
            (time.is_some() || bandwidth.is_some()).then_some(Sample {
                transport,
                bytes,
                time,
                bandwidth,
            })
        })
        .collect())
}

/// Least squares of t = alpha + beta n on relative error (weights 1/t^2), so small messages
/// (which set alpha) count as much as large ones (which set beta). Bandwidth-only samples
/// become time samples n / bw when no time samples exist.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    if points.len() < 2 {
        return None;
    }
    let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(n, t) in points {
        let w = 1.0 / (t * t);
        sw += w;
        sx += w * n;
        sy += w * t;
        sxx += w * n * n;
        sxy += w * n * t;
    }
    let det = sw * sxx - sx * sx;
    if det.abs() < f64::MIN_POSITIVE {
        return None;
    }
    let beta = (sw * sxy - sx * sy) / det;
    let alpha = (sy - beta * sx) / sw;
    (beta > 0.0).then_some(Fit {
        alpha: alpha.max(0.0),
        beta,
        points: points.len(),
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Robust to the noise of a shared machine: alpha is the median one-way time of small messages
/// (<= 1 KiB), beta the inverse of the median streaming bandwidth of large ones (>= 1 MiB, the
/// sizes collectives care about); the least-squares [`fit`] fills in whichever is missing.
fn fit_transport(all: &[Sample], name: &str) -> Option<Fit> {
    let mine: Vec<&Sample> = all.iter().filter(|s| s.transport.contains(name)).collect();
    let times: Vec<(f64, f64)> = mine
        .iter()
        .filter_map(|s| s.time.filter(|t| *t > 0.0).map(|t| (s.bytes, t)))
        .collect();
    let ls = fit(&times);
    let alpha = median(
        times
            .iter()
            .filter(|p| p.0 <= 1024.0)
            .map(|p| p.1)
            .collect(),
    )
    .or(ls.map(|f| f.alpha))?;
    let big_bw: Vec<f64> = mine
        .iter()
        .filter(|s| s.bytes >= (1 << 20) as f64)
        .filter_map(|s| s.bandwidth)
        .filter(|b| *b > 0.0)
        .collect();
    let big_lat: Vec<f64> = times
        .iter()
        .filter(|p| p.0 >= (256 << 10) as f64 && p.1 > alpha)
        .map(|p| (p.1 - alpha) / p.0)
        .collect();
    let beta = median(big_bw)
        .map(|bw| 1.0 / bw)
        .or(median(big_lat))
        .or(ls.map(|f| f.beta))
        .or_else(|| {
            let bw: Vec<(f64, f64)> = mine
                .iter()
                .filter_map(|s| s.bandwidth.map(|b| (s.bytes, s.bytes / b)))
                .collect();
            fit(&bw).map(|f| f.beta)
        })?;
    Some(Fit {
        alpha,
        beta,
        points: mine.len(),
    })
}

/// Output bytes per second of `dst[i] += src[i]` over `bytes` of f32 (each of `src` and
/// `dst`), best of 5 passes of at least 64 MiB each.
fn measure_sum(bytes: usize) -> f64 {
    let n = (bytes / 4).max(1024);
    let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let mut dst: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.002).collect();
    let reps = ((64 << 20) / (n * 4)).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            for (d, s) in dst.iter_mut().zip(&src) {
                *d += *s;
            }
            std::hint::black_box(&mut dst);
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    (n * 4) as f64 / best
}

/// Size in bytes of the largest cache of CPU 0 (sysfs), e.g. `32768K`.
fn last_level_cache() -> Option<u64> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let size = std::fs::read_to_string(e.ok()?.path().join("size")).ok()?;
            let size = size.trim();
            let (num, mul) = match size.strip_suffix('K') {
                Some(k) => (k, 1024),
                None => match size.strip_suffix('M') {
                    Some(m) => (m, 1 << 20),
                    None => (size, 1),
                },
            };
            num.parse::<u64>().ok().map(|v| v * mul)
        })
        .max()
}

/// What the host measurements give: cores, last-level cache, and the summing loop's rates in
/// and out of that cache.
#[derive(Clone, Copy, Debug)]
struct HostMeasure {
    cores: usize,
    cache_bytes: u64,
    /// The executor's shared-memory ring per direction (`OXCCL_RING_BYTES`, default 1 MiB).
    staging_bytes: u64,
    cache_rate: f64,
    dram_rate: f64,
}

impl HostMeasure {
    /// The shared cache serves every core at the summing loop's in-cache rate.
    fn cache_aggregate(&self) -> f64 {
        self.cores as f64 * self.cache_rate
    }
}

fn measure_host() -> HostMeasure {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cache_bytes = last_level_cache().unwrap_or(0);
    let staging_bytes = std::env::var("OXCCL_RING_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1 << 20);
    // Two buffers of a quarter of the cache each stay in it; of four times the cache, do not.
    let quarter = (cache_bytes as usize / 4).clamp(64 << 10, 8 << 20);
    let big = (cache_bytes as usize * 4).max(64 << 20);
    HostMeasure {
        cores,
        cache_bytes,
        staging_bytes,
        cache_rate: measure_sum(quarter),
        dram_rate: measure_sum(big),
    }
}

/// A node of `devices` ranks joined by shared memory (each device a link to one switch whose
/// two hops add up to alpha), one NIC at TCP's alpha and beta for clusters of such nodes, and
/// the host terms (`host`) when given.
pub fn machine_spec(
    devices: usize,
    shm: Fit,
    tcp: Fit,
    gamma: f64,
    host: Option<HostSpec>,
    source: &str,
) -> ClusterSpec {
    let mut links: Vec<LinkSpec> = (0..devices)
        .map(|d| LinkSpec {
            between: [format!("dev{d}"), "shm".into()],
            bandwidth_gb_s: 1.0 / shm.beta / 1e9,
            latency_us: shm.alpha / 2.0 * 1e6,
            kind: "shm".into(),
        })
        .collect();
    links.push(LinkSpec {
        between: ["shm".into(), "nic0".into()],
        bandwidth_gb_s: 1.0 / shm.beta / 1e9,
        latency_us: 0.0,
        kind: "host".into(),
    });
    let mut description = format!(
        "Calibrated by `oxccl-bench simulate --calibrate` from {source}: shm alpha {:.2} us, \
         {:.2} GB/s; tcp alpha {:.2} us, {:.2} GB/s; gamma {:.2} GB/s",
        shm.alpha * 1e6,
        1.0 / shm.beta / 1e9,
        tcp.alpha * 1e6,
        1.0 / tcp.beta / 1e9,
        gamma / 1e9
    );
    if let Some(h) = &host {
        description.push_str(&format!(
            "; {} cores, sharing cost {:.2}, switch {:.2} us",
            h.cores.unwrap_or(0),
            h.sharing_cost,
            h.switch_us
        ));
        if let Some(m) = &h.memory {
            description.push_str(&format!(
                "; memory {:.2} GB/s, cache {} MiB at {:.2} GB/s, staging {} KiB per rank",
                m.bandwidth_gb_s,
                m.cache_bytes >> 20,
                m.cache_bandwidth_gb_s,
                m.staging_bytes >> 10
            ));
        }
    }
    ClusterSpec {
        name: "this-machine".into(),
        description,
        nodes: 1,
        node: NodeSpec {
            devices,
            switches: vec!["shm".into()],
            links,
            nics: vec![NicSpec {
                bandwidth_gb_s: 1.0 / tcp.beta / 1e9,
                latency_us: tcp.alpha * 1e6,
            }],
            reduce_gb_s: gamma / 1e9,
            copy_gb_s: None,
            host,
        },
        network: None,
    }
}

fn self_exe(args: &[&str]) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating oxccl-bench")?;
    eprintln!("running {} {}", exe.display(), args.join(" "));
    let out = Command::new(&exe)
        .args(args)
        .output()
        .with_context(|| format!("running {} {}", exe.display(), args.join(" ")))?;
    if !out.status.success() {
        anyhow::bail!(
            "`oxccl-bench {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.cluster {
        return check(args, path);
    }
    let (text, source) = match &args.from {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (
            self_exe(&["transport", "--json"])?,
            "`oxccl-bench transport --json`".to_string(),
        ),
    };
    let all = samples(&text)?;
    let get = |name: &str| {
        fit_transport(&all, name).with_context(|| {
            format!(
                "no usable `{name}` measurements in {source} (need >= 2 sizes with latency_us/time_us, or bandwidth)"
            )
        })
    };
    let (shm, tcp) = (get("shm")?, get("tcp")?);
    let hm = measure_host();
    println!("# calibration from {source}");
    for (name, f) in [("shm", shm), ("tcp", tcp)] {
        println!(
            "#   {name}: alpha {:>8.2} us, beta {:.4} ns/B ({:.2} GB/s), {} points",
            f.alpha * 1e6,
            f.beta * 1e9,
            1.0 / f.beta / 1e9,
            f.points
        );
    }
    println!(
        "#   host: {} cores, last-level cache {} KiB, staging {} KiB per rank; f32 sum {:.2} GB/s in cache, {:.2} GB/s from DRAM (one core)",
        hm.cores,
        hm.cache_bytes >> 10,
        hm.staging_bytes >> 10,
        hm.cache_rate / 1e9,
        hm.dram_rate / 1e9
    );
    let devices = args.compare_ranks.iter().copied().max().unwrap_or(4).max(2);
    let host = host_spec(&hm, 1.0, 0.0, hm.dram_rate, hm.cache_aggregate());
    let spec = machine_spec(devices, shm, tcp, hm.cache_rate, Some(host), &source);
    cluster::save(&spec, &args.out)?;
    println!("# wrote {}", args.out.display());
    compare(args, &spec, &hm, &text)
}

fn host_spec(hm: &HostMeasure, share: f64, switch: f64, mem: f64, cache: f64) -> HostSpec {
    HostSpec {
        cores: Some(hm.cores),
        sharing_cost: share,
        switch_us: switch * 1e6,
        memory: Some(MemorySpec {
            bandwidth_gb_s: mem / 1e9,
            cache_bytes: hm.cache_bytes,
            cache_bandwidth_gb_s: cache / 1e9,
            staging_bytes: hm.staging_bytes,
        }),
    }
}

/// `ring/8` (the executor's name for ring with 8 chunks per block) -> ("ring", 8).
fn split_algo(name: &str) -> (&str, usize) {
    match name.split_once('/') {
        Some((a, k)) => (a, k.parse().unwrap_or(1).max(1)),
        None => (name, 1),
    }
}

/// One measured all-reduce: ranks, algorithm, bytes, microseconds.
type Measured = (usize, String, f64, f64);

/// All-reduce records (`"collective": "all_reduce"` with `ranks`, `bytes`, `time_us`) of
/// `text`; several records of one size give their median.
fn measured_rows(text: &str, ranks: Option<usize>) -> anyhow::Result<Vec<Measured>> {
    let mut by_size: Vec<(usize, String, f64, Vec<f64>)> = Vec::new();
    for v in records(text)? {
        let coll = v.get("collective").and_then(Value::as_str).unwrap_or("");
        if !coll
            .replace(['_', '-'], "")
            .eq_ignore_ascii_case("allreduce")
        {
            continue;
        }
        let (Some(bytes), Some(us)) = (num(&v, &["bytes", "size"]), num(&v, &["time_us"])) else {
            continue;
        };
        let n = match (num(&v, &["ranks"]), ranks) {
            (Some(r), _) => r as usize,
            (None, Some(r)) => r,
            (None, None) => continue,
        };
        let algo = v.get("algo").and_then(Value::as_str).unwrap_or("ring");
        match by_size.iter_mut().find(|r| r.0 == n && r.2 == bytes) {
            Some(r) => r.3.push(us),
            None => by_size.push((n, algo.to_string(), bytes, vec![us])),
        }
    }
    Ok(by_size
        .into_iter()
        .filter_map(|(n, a, b, t)| Some((n, a, b, median(t)?)))
        .collect())
}

fn measure(args: &Args, n: usize) -> anyhow::Result<Vec<Measured>> {
    let (nstr, fstr) = (n.to_string(), args.step_factor.to_string());
    let (b, e) = (args.min_bytes.to_string(), args.max_bytes.to_string());
    let out = self_exe(&[
        "all-reduce",
        "--ranks",
        &nstr,
        "--json",
        "--algo",
        "ring",
        "--trials",
        "5",
        "-n",
        "0",
        "-f",
        &fstr,
        "-b",
        &b,
        "-e",
        &e,
    ])?;
    measured_rows(&out, Some(n))
}

/// The measured all-reduce of each `--compare-ranks` count in the size range: from `given`
/// (the `--from` file) where it has the count, else measured now.
fn gather(args: &Args, given: &[Measured]) -> anyhow::Result<Vec<Measured>> {
    let in_range = |r: &Measured| r.2 >= args.min_bytes as f64 && r.2 <= args.max_bytes as f64;
    let mut rows = Vec::new();
    for &n in &args.compare_ranks {
        let mine: Vec<Measured> = given
            .iter()
            .filter(|r| r.0 == n && in_range(r))
            .cloned()
            .collect();
        if !mine.is_empty() {
            println!(
                "#   {n} ranks: {} measured sizes from the --from file",
                mine.len()
            );
            rows.extend(mine);
            continue;
        }
        match measure(args, n) {
            Ok(r) => rows.extend(r.into_iter().filter(in_range)),
            Err(e) => println!("#   {n} ranks: no measurement ({e:#})"),
        }
    }
    Ok(rows)
}

/// `--calibrate --cluster FILE`: no fit; FILE's predictions against the all-reduce measured
/// now (or read from `--from`), to see whether a calibrated model still holds.
fn check(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    let (elem, _) = dtype_size(&args.dtype)?;
    let (spec, _) = cluster::load(path, None)?;
    let text = match &args.from {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    println!("# checking {} (no fit)", path.display());
    let rows = gather(args, &measured_rows(&text, None)?)?;
    let pred = predict(&spec, &rows, elem)?;
    println!(
        "# {:>5} {:>7} {:>12} {:>14} {:>14} {:>8}",
        "ranks", "algo", "bytes", "measured(us)", "predicted(us)", "ratio"
    );
    let mut range: Vec<(usize, f64, f64)> = Vec::new();
    for ((n, algo, bytes, us), p) in rows.iter().zip(&pred) {
        let ratio = p * 1e6 / us;
        println!(
            "  {n:>5} {algo:>7} {:>12} {us:>14.2} {:>14.2} {ratio:>8.2}",
            *bytes as u64,
            p * 1e6
        );
        match range.iter_mut().find(|w| w.0 == *n) {
            Some(w) => (w.1, w.2) = (w.1.min(ratio), w.2.max(ratio)),
            None => range.push((*n, ratio, ratio)),
        }
    }
    for (n, lo, hi) in range {
        println!("# {n} ranks: ratio {lo:.2}..{hi:.2}");
    }
    Ok(())
}

/// Predicted against measured all-reduce for each `--compare-ranks` count: once on the
/// transport-calibrated model, once on the model fitted to the executor's own ring at
/// `--fit-ranks` ranks (so the other counts are genuine predictions).
fn compare(args: &Args, spec: &ClusterSpec, hm: &HostMeasure, text: &str) -> anyhow::Result<()> {
    let (elem, _) = dtype_size(&args.dtype)?;
    let in_range = |r: &Measured| r.2 >= args.min_bytes as f64 && r.2 <= args.max_bytes as f64;
    let given: Vec<Measured> = measured_rows(text, None)?;
    let mut rows = gather(args, &given)?;
    // One count with a core per rank (the base rates) and one with more ranks than cores (the
    // cost of time-sharing: `--fit-ranks`, default the largest compared count beyond the
    // cores); the other counts are predictions.
    let base = hm.cores.clamp(2, 64);
    let largest = args.compare_ranks.iter().copied().max().unwrap_or(0);
    let over = args.fit_ranks.map_or(largest, |p| p as usize).max(base + 1);
    let fit_set = [base, over];
    for p in fit_set {
        if rows.iter().any(|r| r.0 == p) {
            continue;
        }
        let mine: Vec<Measured> = given
            .iter()
            .filter(|r| r.0 == p && in_range(r))
            .cloned()
            .collect();
        if mine.is_empty() {
            rows.extend(measure(args, p)?.into_iter().filter(in_range));
        } else {
            rows.extend(mine);
        }
    }
    let nic = spec.node.nics.first();
    let c = Ctx {
        devices: spec.node.devices.max(over),
        tcp: Fit {
            alpha: nic.map_or(0.0, |n| n.latency_us * 1e-6),
            beta: nic.map_or(1e-9, |n| 1.0 / (n.bandwidth_gb_s * 1e9)),
            points: 0,
        },
        gamma: spec.node.reduce_gb_s * 1e9,
        hm: *hm,
        elem,
    };
    let link = &spec.node.links[0];
    let start = ExecParams {
        alpha: 2.0 * link.latency_us * 1e-6,
        link: link.bandwidth_gb_s * 1e9,
        mem: hm.dram_rate,
        share: 1.0,
        switch: 1e-6,
        cache_share: 0.9,
    };
    let transport_pred = predict(spec, &rows, elem)?;
    let exec = fit_executor(&rows, &fit_set, start, &c);
    let exec_pred = match &exec {
        Some((f, points)) => {
            println!(
                "# executor ring fitted on {base} and {over} ranks ({points} rows): alpha {:.2} us, \
                 link {:.2} GB/s, sharing cost {:.2}, switch {:.2} us, memory {:.2} GB/s, \
                 {:.0}% of the cache (at {:.2} GB/s: cores x the summing loop)",
                f.alpha * 1e6,
                f.link / 1e9,
                f.share,
                f.switch * 1e6,
                f.mem / 1e9,
                f.cache_share * 100.0,
                hm.cache_aggregate() / 1e9
            );
            let e = f.spec(&c);
            let out = args.out.with_file_name(format!(
                "{}-executor.toml",
                args.out
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("this-machine")
            ));
            cluster::save(&e, &out)?;
            println!("# wrote {}", out.display());
            predict(&e, &rows, elem)?
        }
        None => {
            println!(
                "# no executor fit: fewer than 3 ring sizes measured at {base} or {over} ranks"
            );
            vec![f64::NAN; rows.len()]
        }
    };
    println!(
        "#\n# {:>5} {:>7} {:>12} {:>14} {:>16} {:>8} {:>16} {:>8}",
        "ranks",
        "algo",
        "bytes",
        "measured(us)",
        "pred:transport",
        "ratio",
        "pred:exec-fit",
        "ratio"
    );
    let mut worst: Vec<(usize, f64, f64)> = Vec::new();
    for (i, (n, algo_name, bytes, us)) in rows.iter().enumerate() {
        let (t, e) = (transport_pred[i] * 1e6, exec_pred[i] * 1e6);
        let fitted = if fit_set.contains(n) { " (fit)" } else { "" };
        println!(
            "  {n:>5} {algo_name:>7} {:>12} {us:>14.2} {t:>16.2} {:>8.2} {e:>16.2} {:>8.2}{fitted}",
            *bytes as u64,
            t / us,
            e / us
        );
        match worst.iter_mut().find(|w| w.0 == *n) {
            Some(w) => {
                w.1 = w.1.min(e / us);
                w.2 = w.2.max(e / us);
            }
            None => worst.push((*n, e / us, e / us)),
        }
    }
    for (n, lo, hi) in worst {
        let ok = lo >= 0.75 && hi <= 1.25;
        println!(
            "# {n} ranks: exec-fit ratio {lo:.2}..{hi:.2} ({})",
            if ok {
                "all within 25%"
            } else {
                "NOT all within 25%"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl_collectives::sim::Network;

    #[test]
    fn fit_recovers_alpha_and_beta() {
        let (a, b) = (2e-6, 1.0 / 5e9);
        let pts: Vec<(f64, f64)> = (0..20)
            .map(|i| {
                let n = (1u64 << i) as f64;
                // +-1% deterministic jitter
                (n, (a + b * n) * (1.0 + 0.01 * ((i % 3) as f64 - 1.0)))
            })
            .collect();
        let f = fit(&pts).unwrap();
        assert!((f.alpha - a).abs() / a < 0.05, "{f:?}");
        assert!((f.beta - b).abs() / b < 0.05, "{f:?}");
        assert!(fit(&pts[..1]).is_none());
    }

    #[test]
    fn samples_accept_lines_and_arrays() {
        let lines = r#"{"transport":"shm","bytes":8,"latency_us":1.0}
{"transport":"shm","bytes":1048576,"latency_us":101.0}
{"transport":"tcp","test":"bandwidth","bytes":1048576,"latency_us":3.0,"bandwidth_gbps":2.0}
not json is skipped"#;
        let s = samples(lines).unwrap();
        assert_eq!(s.len(), 3);
        let shm = fit_transport(&s, "shm").unwrap();
        assert!((shm.alpha - 1e-6).abs() < 1e-12, "{shm:?}");
        assert!(
            (shm.beta - 100e-6 / 1048576.0).abs() / shm.beta < 1e-6,
            "{shm:?}"
        );
        // One streaming sample and no latency: no alpha to be had.
        assert!(fit_transport(&s, "tcp").is_none());
        let arr = r#"[{"transport":"tcp","size":1,"time_us":10},{"transport":"tcp","size":1000000,"time_us":510},
            {"transport":"tcp","test":"bandwidth","size":4194304,"bandwidth_gbps":2.5}]"#;
        let t = fit_transport(&samples(arr).unwrap(), "tcp").unwrap();
        assert!((t.alpha - 10e-6).abs() < 1e-12, "{t:?}");
        assert!((1.0 / t.beta - 2.5e9).abs() / 2.5e9 < 1e-9, "{t:?}");
        let spec = machine_spec(4, shm, t, 10e9, None, "test");
        Network::new(&spec).unwrap();
    }

    #[test]
    fn executor_fit_reproduces_its_own_model() {
        // Rows the model itself predicts, at 2 and 3 ranks on a 2-core host, must be fitted
        // back (to 2%: the fit stops when the simplex is small, not at zero error).
        let hm = HostMeasure {
            cores: 2,
            cache_bytes: 8 << 20,
            staging_bytes: 1 << 20,
            cache_rate: 30e9,
            dram_rate: 10e9,
        };
        let c = Ctx {
            devices: 4,
            tcp: Fit {
                alpha: 10e-6,
                beta: 1e-9,
                points: 0,
            },
            gamma: 20e9,
            hm,
            elem: 4,
        };
        let truth = ExecParams {
            alpha: 1e-6,
            link: 20e9,
            mem: 8e9,
            share: 1.8,
            switch: 4e-6,
            cache_share: 0.5,
        };
        let mut rows: Vec<Measured> = (0..14)
            .map(|i| {
                (
                    2 + i / 7,
                    "ring".to_string(),
                    (4096u64 << (2 * (i % 7))) as f64,
                    0.0,
                )
            })
            .collect();
        let times = predict(&truth.spec(&c), &rows, 4).unwrap();
        for (r, t) in rows.iter_mut().zip(&times) {
            r.3 = t * 1e6;
        }
        let start = ExecParams {
            alpha: 3e-6,
            link: 10e9,
            mem: 15e9,
            share: 1.0,
            switch: 1e-6,
            cache_share: 0.9,
        };
        let (f, points) = fit_executor(&rows, &[2, 3], start, &c).unwrap();
        assert_eq!(points, 14);
        let got = predict(&f.spec(&c), &rows, 4).unwrap();
        for (g, t) in got.iter().zip(&times) {
            assert!((g / t).ln().abs() < 0.02, "{f:?}: {g} vs {t}");
        }
        assert!(fit_executor(&rows[..9], &[2, 3], start, &c).is_none());
        assert!(fit_executor(&rows, &[2, 4], start, &c).is_none());
        assert_eq!(split_algo("ring/8"), ("ring", 8));
        assert_eq!(split_algo("hier:4x2"), ("hier:4x2", 1));
    }

    #[test]
    fn measured_rows_take_medians_and_skip_other_records() {
        let text = r#"{"collective":"all_reduce","ranks":2,"bytes":4096,"time_us":3.0,"algo":"ring"}
{"collective":"all_reduce","ranks":2,"bytes":4096,"time_us":1.0,"algo":"ring"}
{"collective":"all_reduce","ranks":2,"bytes":4096,"time_us":2.0,"algo":"ring"}
{"collective":"all_reduce","bytes":8192,"time_us":5.0,"algo":"ring/2"}
{"transport":"shm","bytes":8,"latency_us":1.0}"#;
        let rows = measured_rows(text, None).unwrap();
        assert_eq!(rows, vec![(2, "ring".to_string(), 4096.0, 2.0)]);
        let rows = measured_rows(text, Some(4)).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], (4, "ring/2".to_string(), 8192.0, 5.0));
    }
}
