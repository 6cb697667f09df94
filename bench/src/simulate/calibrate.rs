//! `--calibrate`: fit alpha (latency) and beta (seconds per byte) of this machine's shared-memory
//! and TCP transports from `oxccl-bench transport --json` measurements, measure gamma (the
//! reduction rate) with a plain summing loop, write a cluster file for this machine, and compare
//! predicted against measured all-reduce (`oxccl-bench all-reduce --ranks N --json`).
//!
//! Measurements are read as JSON (an array, or one object per line). A record is used when it
//! names its transport (`transport`: "shm" or "tcp"), its size (`bytes` or `size`) and either a
//! one-way time per message (`latency_us`, `time_us` or `lat_us`; ignored for records with
//! `"test": "bandwidth"`, whose time per message is a streaming rate) or a bandwidth
//! (`bandwidth_gbps`, `bw_gbps`, `gbps`, in GB/s, or `bandwidth_mbps`/`mb_s`, in MB/s).

use super::{cluster, dtype_size, Args};
use anyhow::Context;
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::sim::{simulate, ClusterSpec, LinkSpec, Network, NicSpec, NodeSpec};
use serde_json::Value;
use std::process::Command;

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

/// Output bytes per second of `dst[i] += src[i]` over 64 MiB of f32, best of 5.
fn measure_gamma() -> f64 {
    let n = 16 << 20;
    let src: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.001).collect();
    let mut dst: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.002).collect();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for (d, s) in dst.iter_mut().zip(&src) {
            *d += *s;
        }
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&mut dst);
    }
    (n * 4) as f64 / best
}

/// A node of `devices` ranks joined by shared memory (each device a link to one switch whose
/// two hops add up to alpha), and one NIC at TCP's alpha and beta for clusters of such nodes.
pub fn machine_spec(devices: usize, shm: Fit, tcp: Fit, gamma: f64, source: &str) -> ClusterSpec {
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
    ClusterSpec {
        name: "this-machine".into(),
        description: format!(
            "Calibrated by `oxccl-bench simulate --calibrate` from {source}: shm alpha {:.2} us, \
             {:.2} GB/s; tcp alpha {:.2} us, {:.2} GB/s; gamma {:.2} GB/s",
            shm.alpha * 1e6,
            1.0 / shm.beta / 1e9,
            tcp.alpha * 1e6,
            1.0 / tcp.beta / 1e9,
            gamma / 1e9
        ),
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
    let gamma = measure_gamma();
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
    println!("#   gamma: {:.2} GB/s (f32 sum, one core)", gamma / 1e9);
    let devices = args.compare_ranks.iter().copied().max().unwrap_or(4).max(2);
    let spec = machine_spec(devices, shm, tcp, gamma, &source);
    cluster::save(&spec, &args.out)?;
    println!("# wrote {}", args.out.display());
    compare(args, &spec)
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
        "-f",
        &fstr,
        "-b",
        &b,
        "-e",
        &e,
    ])?;
    Ok(records(&out)?
        .iter()
        .filter_map(|v| {
            let bytes = num(v, &["bytes", "size"])?;
            let us = num(v, &["time_us"])?;
            let algo = v.get("algo").and_then(Value::as_str).unwrap_or("ring");
            Some((n, algo.to_string(), bytes, us))
        })
        .collect())
}

/// alpha and beta of the executor's own links, from its ring all-reduce on `p` ranks: the
/// model's ring costs `2(p-1) alpha + n (2(p-1)/(p B) + (p-1)/p gamma)`, linear in `n`.
fn fit_executor(rows: &[Measured], p: usize, gamma: f64) -> Option<Fit> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.0 == p && split_algo(&r.1).0 == "ring" && r.3 > 0.0)
        .map(|r| (r.2, r.3 * 1e-6))
        .collect();
    let f = fit(&pts)?;
    let pf = p as f64;
    let alpha = f.alpha / (2.0 * (pf - 1.0));
    let link = (f.beta - (pf - 1.0) / pf * gamma) * pf / (2.0 * (pf - 1.0));
    // If the reduction alone explains the slope, charge it all to the links instead.
    let beta = if link > 0.0 {
        link
    } else {
        f.beta * pf / (2.0 * (pf - 1.0))
    };
    Some(Fit {
        alpha,
        beta,
        points: pts.len(),
    })
}

/// Predicted against measured all-reduce for each `--compare-ranks` count: once from the
/// transport's alpha and beta, once from alpha and beta fitted to the executor's own ring on the
/// smallest rank count (so the larger counts are genuine predictions).
fn compare(args: &Args, spec: &ClusterSpec) -> anyhow::Result<()> {
    let (elem, _) = dtype_size(&args.dtype)?;
    let mut rows = Vec::new();
    for &n in &args.compare_ranks {
        match measure(args, n) {
            Ok(r) => rows.extend(r),
            Err(e) => println!("#   {n} ranks: no measurement ({e:#})"),
        }
    }
    let transport_net = Network::new(spec)?;
    let gamma = 1.0 / (spec.node.reduce_gb_s * 1e9);
    let p0 = args
        .fit_ranks
        .map(|p| p as usize)
        .or_else(|| args.compare_ranks.iter().copied().filter(|&p| p >= 2).min());
    let exec = p0.and_then(|p| Some((p, fit_executor(&rows, p, gamma)?)));
    let exec_net = match exec {
        Some((p, f)) => {
            println!(
                "# executor ring on {p} ranks: alpha {:.2} us, link {:.2} GB/s ({} points)",
                f.alpha * 1e6,
                1.0 / f.beta / 1e9,
                f.points
            );
            let tcp = Fit {
                alpha: spec.node.nics.first().map_or(0.0, |n| n.latency_us * 1e-6),
                beta: spec
                    .node
                    .nics
                    .first()
                    .map_or(f.beta, |n| 1.0 / (n.bandwidth_gb_s * 1e9)),
                points: 0,
            };
            let mut e = machine_spec(spec.node.devices, f, tcp, 1.0 / gamma, "executor fit");
            e.name = "this-machine-executor-fit".into();
            let out = args.out.with_file_name(format!(
                "{}-executor.toml",
                args.out
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("this-machine")
            ));
            cluster::save(&e, &out)?;
            println!("# wrote {}", out.display());
            Some(Network::new(&e)?)
        }
        None => None,
    };
    println!(
        "#\n# {:>5} {:>6} {:>12} {:>14} {:>16} {:>8} {:>16} {:>8}",
        "ranks",
        "algo",
        "bytes",
        "measured(us)",
        "pred:transport",
        "ratio",
        "pred:exec-fit",
        "ratio"
    );
    for (n, algo_name, bytes, us) in &rows {
        let (name, k) = split_algo(algo_name);
        let algo: Algorithm = name.parse().unwrap_or(Algorithm::Ring);
        let s = algo.schedule(Collective::AllReduce, *n, k)?;
        let t = simulate(&transport_net, &s, *bytes as u64, elem)?.time * 1e6;
        let e = match &exec_net {
            Some(net) => simulate(net, &s, *bytes as u64, elem)?.time * 1e6,
            None => f64::NAN,
        };
        let fitted = if Some(*n) == p0 { " (fit)" } else { "" };
        println!(
            "  {n:>5} {algo_name:>6} {:>12} {us:>14.2} {t:>16.2} {:>8.2} {e:>16.2} {:>8.2}{fitted}",
            *bytes as u64,
            t / us,
            e / us
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let spec = machine_spec(4, shm, t, 10e9, "test");
        Network::new(&spec).unwrap();
    }

    #[test]
    fn executor_fit_inverts_the_ring_model() {
        // Rows generated by the model itself must give back its alpha and link bandwidth.
        let (alpha, bw, gamma) = (3e-6, 4e9, 1.0 / 10e9);
        let rows: Vec<Measured> = [4096.0, 65536.0, 1048576.0, 16777216.0]
            .iter()
            .map(|&n| {
                let t = 2.0 * alpha + n * (1.0 / bw + 0.5 * gamma);
                (2, "ring".to_string(), n, t * 1e6)
            })
            .collect();
        let f = fit_executor(&rows, 2, gamma).unwrap();
        assert!((f.alpha - alpha).abs() / alpha < 1e-6, "{f:?}");
        assert!((1.0 / f.beta - bw).abs() / bw < 1e-6, "{f:?}");
        assert!(fit_executor(&rows, 4, gamma).is_none());
        assert_eq!(split_algo("ring/8"), ("ring", 8));
        assert_eq!(split_algo("hier:4x2"), ("hier:4x2", 1));
    }
}
