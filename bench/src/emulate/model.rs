//! The simulator's side of the emulation: a cluster file written from the shaping and this
//! machine's calibration (never from the run it predicts), the predicted time of each measured
//! row, and the table, CSV, JSON and plot that put them side by side.

use super::netns::Shape;
use crate::simulate::cluster;
use anyhow::Context;
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::sim::{
    bus_factor, simulate, ClusterSpec, HostSpec, LinkSpec, Network, NetworkSpec, NicSpec, StackSpec,
};
use std::path::Path;

/// Turns the calibrated host of the whole machine into one of `hosts` emulated hosts that
/// share it. Cores: `cores / hosts`, at least one; since a node of the model cannot have part
/// of a core, the sharing cost grows so that the model's slowdown of CPU work, `1 +
/// sharing_cost * e`, is the machine's: `e` extra ranks per core over all `hosts x
/// ranks_per_host` ranks (8 ranks on 2 cores: 3), not over one host's (2 ranks on 1 core: 1).
/// Memory: every host's copies and reductions go through the machine's one memory system and
/// cache, so each host gets its share of their bandwidth and size.
pub fn share_machine(h: &mut HostSpec, hosts: usize, ranks_per_host: usize) {
    let machine_cores = h.cores.unwrap_or(1);
    let cores = (machine_cores / hosts).max(1);
    h.cores = Some(cores);
    let machine_extra =
        (hosts * ranks_per_host).saturating_sub(machine_cores) as f64 / machine_cores as f64;
    let model_extra = ranks_per_host.saturating_sub(cores) as f64 / cores as f64;
    if model_extra > 0.0 {
        h.sharing_cost *= machine_extra / model_extra;
    }
    if let Some(m) = h.memory.as_mut() {
        m.bandwidth_gb_s /= hosts as f64;
        m.cache_bandwidth_gb_s /= hosts as f64;
        m.cache_bytes /= hosts as u64;
    }
}

/// What the probe measured on the emulated network before any collective ran.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// One-way latency of a small TCP message between two hosts of one rack, microseconds
    /// (half the median round trip).
    pub rack_latency_us: f64,
    /// The same between racks (equal to `rack_latency_us` with one rack).
    pub cross_latency_us: f64,
    /// One TCP stream's rate from one host to another, bytes per second (a check of the
    /// shaping, not used by the model).
    pub stream_bytes_per_s: f64,
    /// The stack probe: (message bytes, microseconds per iteration) of a `sendrecv` ring over
    /// all the run's ranks (rank `r` on host `r / ranks_per_host`, as the sweep places them),
    /// through the collectives' own links, one message each way per iteration: one group call
    /// per message, so each iteration also pays the call's own start and completion.
    pub stack: Vec<(u64, f64)>,
    /// The same ring with [`Probe::window`] messages each way per iteration, in one group call:
    /// the messages beyond the first cost what a message pays inside a collective, where the
    /// steps follow each other within one call ([`stack_terms`] takes the difference).
    #[serde(default)]
    pub stack_window: Vec<(u64, f64)>,
    /// Messages per iteration of `stack_window` (0 in a probe saved before there was one).
    #[serde(default)]
    pub window: usize,
}

/// What the stack probes say about the machine's network stack, under the model the cluster
/// file states: every message between hosts passes one server all hosts share (the machine's
/// cores, which run every host's TCP stack and proxies), busy `message_us + bytes / gb_s` per
/// message. With `n = hosts` messages between hosts in each window step of the ring (a host's
/// last rank sends to the next host's first), a probe iteration of `w` messages takes `c(b) +
/// w u(b)`: `c` the group call's own cost, which a collective pays once and not per step, and
/// `u(b) = n (message_us + b / gb_s)` the server's time for one window step. So `u(b) = (t_w(b)
/// - t_1(b)) / (w - 1)` per size, and a line fitted to `u` gives the server.
#[derive(Clone, Debug)]
pub struct StackTerms {
    /// The line fitted to the window steps `u(b)`: microseconds and bytes per second.
    pub step_us: f64,
    pub step_rate: f64,
    /// The window-1 probe's own line (microseconds, bytes per second), for the record.
    pub alpha1_us: f64,
    pub beta1: f64,
    /// The group call's own cost at the smallest size, microseconds: `t_1 - u` there (the
    /// probe's per-iteration cost that a collective's step does not pay; not in the model).
    pub call_us: f64,
    /// The server's busy time per message, microseconds: `step_us / n`.
    pub message_us: f64,
    /// The server's rate over all hosts, GB/s: `n step_rate`.
    pub gb_s: f64,
}

/// The window steps of the two probes: per size both ran, `(bytes, (t_w - t_1) / (w - 1))`.
pub fn window_steps(probe: &Probe) -> Vec<(u64, f64)> {
    if probe.window < 2 {
        return Vec::new();
    }
    probe
        .stack
        .iter()
        .filter_map(|&(b, t1)| {
            let tw = probe.stack_window.iter().find(|r| r.0 == b)?.1;
            Some((b, (tw - t1) / (probe.window - 1) as f64))
        })
        .collect()
}

/// Fits the server of [`StackTerms`] to the two probes; `None` when either line does not fit
/// (see [`fit_stack`]: fewer than two sizes, a window step that is not positive, times that
/// fall with size), or when the probe has no window run (a probe saved before there was one).
pub fn stack_terms(probe: &Probe, hosts: usize) -> Option<StackTerms> {
    let (alpha1_us, beta1) = fit_stack(&probe.stack)?;
    let steps = window_steps(probe);
    let (step_us, step_rate) = fit_stack(&steps)?;
    let n = hosts.max(1) as f64;
    let call_us = probe
        .stack
        .iter()
        .min_by_key(|r| r.0)
        .and_then(|&(b, t1)| {
            let u = steps.iter().find(|r| r.0 == b)?.1;
            Some((t1 - u).max(0.0))
        })
        .unwrap_or(f64::NAN);
    Some(StackTerms {
        step_us,
        step_rate,
        alpha1_us,
        beta1,
        call_us,
        message_us: step_us / n,
        gb_s: n * step_rate / 1e9,
    })
}

/// The sizes [`fit_stack`] takes its intercept from: up to this many times the smallest.
const SMALL: u64 = 4;

/// Fits `t(b) = alpha + b / beta` to the stack probe's (bytes, us) rows with the Theil-Sen
/// estimator: the slope is the median of the slopes between every two sizes (on a sweep by
/// powers of two, mostly pairs with a large size: the rate of large messages), `alpha` the
/// median of `t - slope b` over the small sizes only, those up to [`SMALL`] times the smallest
/// (4-16 KiB). At 4 MiB a slope 5% off moves `t - slope b` by thousands of microseconds, at 128
/// KiB by ~80 (session 11: a median over all sizes gave 3-21 us per message from one machine
/// within an hour), at 16 KiB by ~10; and the small sizes are where the per-message time
/// matters, as the large ones are where the rate does. One size hit by a burst of load (on
/// this shared machine a probe row can be 5x its neighbours) moves a least-squares line a lot
/// and these medians hardly at all. Returns (alpha in us, beta in bytes per second), or `None`
/// with fewer than two sizes, a time that is not positive, or no positive slope; a negative
/// `alpha` is clamped to 0.
pub fn fit_stack(rows: &[(u64, f64)]) -> Option<(f64, f64)> {
    if rows.len() < 2 || rows.iter().any(|&(_, t)| !(t > 0.0 && t.is_finite())) {
        return None;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let mut slopes = Vec::new();
    for (i, &(b1, t1)) in rows.iter().enumerate() {
        for &(b2, t2) in &rows[i + 1..] {
            if b1 != b2 {
                slopes.push((t2 - t1) / (b2 as f64 - b1 as f64));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    let slope = median(slopes);
    if slope <= 0.0 || slope.is_nan() {
        return None;
    }
    let smallest = rows.iter().map(|r| r.0).min()?;
    let alpha = median(
        rows.iter()
            .filter(|r| r.0 <= smallest.saturating_mul(SMALL))
            .map(|&(b, t)| t - slope * b as f64)
            .collect(),
    );
    Some((alpha.max(0.0), 1e6 / slope))
}

/// The cluster file: `shape.hosts` nodes of `ranks_per_host` devices. Inside a node, the
/// shared-memory links, reduction speed and host model of the calibration file (this
/// machine's `simulate --calibrate`); each node gets `cores / hosts` of the machine's cores
/// (at least one), since every emulated host runs on the same two. Between nodes, a NIC at
/// the shaped rate (less Ethernet, IP and TCP headers) with the stack probes' latency, and
/// the shared stack server of [`StackTerms`]; racks are leaves whose uplinks carry
/// `hosts_per_rack x host rate / uplink rate` less (oversubscription).
pub fn cluster_spec(
    shape: &Shape,
    ranks_per_host: usize,
    probe: &Probe,
    calibration: &ClusterSpec,
    name: &str,
) -> anyhow::Result<ClusterSpec> {
    let cal = &calibration.node;
    let shm = cal
        .links
        .iter()
        .find(|l| l.kind == "shm")
        .context("the calibration file has no `shm` link")?;
    let mut links: Vec<LinkSpec> = (0..ranks_per_host)
        .map(|d| LinkSpec {
            between: [format!("dev{d}"), "shm".into()],
            ..shm.clone()
        })
        .collect();
    links.push(LinkSpec {
        between: ["shm".into(), "nic0".into()],
        bandwidth_gb_s: shm.bandwidth_gb_s,
        latency_us: 0.0,
        kind: "host".into(),
    });
    let mut host = cal.host.clone();
    if let Some(h) = host.as_mut() {
        share_machine(h, shape.hosts, ranks_per_host);
    }
    let shaped_gb_s = Shape::payload_rate(shape.host_bits) / 1e9;
    // A message between hosts: its NIC is the shaped link (rate from the shaping, latency the
    // raw TCP probe's one-way latency in a rack: the wire and both kernels' stacks), and the
    // machine's cores, which every host's stack and proxies share, are one server it passes on
    // its way (`network.shared_stack`, from the window steps of the stack probes: the proxies'
    // hand-offs and copies, which the raw probe does not see).
    let terms = stack_terms(probe, shape.hosts).context(
        "the stack probes have no per-message time and rate (a window run is needed: see \
         `stack_terms` and `fit_stack`)",
    )?;
    let nic_latency_us = probe.rack_latency_us.max(0.0);
    let nic_gb_s = shaped_gb_s;
    let network = NetworkSpec {
        nodes_per_leaf: shape.hosts_per_rack,
        oversubscription: (shape.hosts_per_rack as f64 * shape.host_bits as f64
            / shape.uplink_bits as f64)
            .max(1.0),
        hop_latency_us: (probe.cross_latency_us - probe.rack_latency_us).max(0.0),
        rail_optimised: false,
        shared_stack: Some(StackSpec {
            gb_s: terms.gb_s,
            message_us: terms.message_us,
        }),
    };
    let mut spec = ClusterSpec {
        name: name.to_string(),
        description: String::new(),
        nodes: shape.hosts,
        node: oxccl_collectives::sim::NodeSpec {
            devices: ranks_per_host,
            switches: vec!["shm".into()],
            links,
            nics: vec![NicSpec {
                bandwidth_gb_s: nic_gb_s,
                latency_us: nic_latency_us,
            }],
            reduce_gb_s: cal.reduce_gb_s,
            copy_gb_s: cal.copy_gb_s,
            host,
        },
        network: Some(network),
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("the emulated cluster's description: {e}"))?;
    spec.description = format!(
        "Written by `oxccl-bench emulate`: {} hosts ({} per rack) x {ranks_per_host} ranks, host \
         links shaped to {:.3} Gbit/s ({:.4} GB/s of TCP payload at MTU {}: the NIC rate), rack \
         uplinks {:.3} Gbit/s. Probed on the namespaces before the sweep: raw TCP one-way \
         latency {:.1} us (the NIC latency; spine hop {:.1} us: cross-rack less in-rack); the \
         stack's sendrecv ring over all {} ranks (rank r on host r / ranks_per_host, so {} \
         messages between hosts per step; 4 KiB-4 MiB per message, proxies and core sharing \
         included; each size the faster of two interleaved runs) with 1 and with {} messages \
         each way per group call: t_1 fits (Theil-Sen) {:.1} us + bytes / {:.4} GB/s per \
         iteration, and the window's steps (t_{} - t_1) / {} fit {:.1} us + bytes / {:.4} GB/s \
         (what a message pays inside one call, as a collective's steps do; the call's own cost, \
         {:.1} us at 4 KiB, is left out). Every message between hosts passes one server the \
         hosts share (the machine's cores, which run every host's stack and proxies: \
         network.shared_stack), busy step / hosts = {:.1} us per message + bytes / (hosts x \
         step rate = {:.4} GB/s). Shm links, reduction and host model from `{}`, the \
         machine's cores, memory and cache shared by the {} hosts",
        shape.hosts,
        shape.hosts_per_rack,
        shape.host_bits as f64 / 1e9,
        shaped_gb_s,
        super::netns::MTU,
        shape.uplink_bits as f64 / 1e9,
        probe.rack_latency_us,
        (probe.cross_latency_us - probe.rack_latency_us).max(0.0),
        shape.hosts * ranks_per_host,
        shape.hosts,
        probe.window,
        terms.alpha1_us,
        terms.beta1 / 1e9,
        probe.window,
        probe.window.saturating_sub(1),
        terms.step_us,
        terms.step_rate / 1e9,
        terms.call_us,
        terms.message_us,
        terms.gb_s,
        calibration.name,
        shape.hosts
    );
    Ok(spec)
}

/// One size of one algorithm: what ran and what the simulator says.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Compared {
    /// `--algo` as asked (ring, tree, hier).
    pub asked: String,
    /// The schedule the executor reported (`ring/4`, `hier:2x4/2`...), which is simulated.
    pub schedule: String,
    pub ranks: usize,
    pub bytes: u64,
    pub measured_us: f64,
    pub predicted_us: f64,
    pub ratio: f64,
    pub measured_busbw_gbps: f64,
    pub predicted_busbw_gbps: f64,
}

/// One all-reduce row of rank 0's `--json` output: (schedule, ranks, bytes, time in us).
pub fn measured_rows(text: &str) -> Vec<(String, usize, u64, f64)> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("algo")?.as_str()?.to_string(),
                v.get("ranks")?.as_u64()? as usize,
                v.get("bytes")?.as_u64()?,
                v.get("time_us")?.as_f64()?,
            ))
        })
        .collect()
}

/// The executor's name of the schedule it ran (`ring`, `tree/8`, `hier:2x4/8 x8 lanes`) as
/// (algorithm, pipeline depth, lanes).
pub fn parse_schedule(sched: &str) -> anyhow::Result<(&str, usize, usize)> {
    let bad = || anyhow::anyhow!("schedule `{sched}`: expected ALGO[/DEPTH][ xLANES lanes]");
    let (head, lanes) = match sched.split_once(' ') {
        None => (sched, "1"),
        Some((h, l)) => (
            h,
            l.strip_prefix('x')
                .and_then(|l| l.strip_suffix(" lanes"))
                .ok_or_else(bad)?,
        ),
    };
    let (name, k) = head.split_once('/').unwrap_or((head, "1"));
    let k: usize = k.parse().map_err(|_| bad())?;
    let lanes: usize = lanes.parse().map_err(|_| bad())?;
    if k == 0 || lanes == 0 || name.is_empty() {
        return Err(bad());
    }
    Ok((name, k, lanes))
}

/// The simulator's time for each measured row, on the very schedule (algorithm, pipeline
/// depth and lanes) the executor ran.
pub fn predict(
    spec: &ClusterSpec,
    asked: &str,
    rows: &[(String, usize, u64, f64)],
    elem: usize,
) -> anyhow::Result<Vec<Compared>> {
    let net = Network::new(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    rows.iter()
        .map(|(sched, ranks, bytes, us)| {
            let (name, k, lanes) = parse_schedule(sched)?;
            let algo: Algorithm = name
                .parse()
                .map_err(|e| anyhow::anyhow!("schedule `{sched}`: {e}"))?;
            let s = algo
                .schedule_lanes(Collective::AllReduce, *ranks, k, lanes)
                .with_context(|| format!("building {sched} for {ranks} ranks"))?;
            let rep = simulate(&net, &s, *bytes, elem)
                .map_err(|e| anyhow::anyhow!("simulating {sched} at {bytes} bytes: {e}"))?;
            let bus = |t_us: f64| {
                *bytes as f64 / (t_us * 1e-6) / 1e9 * bus_factor(Collective::AllReduce, *ranks)
            };
            let predicted_us = rep.time * 1e6;
            Ok(Compared {
                asked: asked.to_string(),
                schedule: sched.clone(),
                ranks: *ranks,
                bytes: *bytes,
                measured_us: *us,
                predicted_us,
                ratio: predicted_us / us,
                measured_busbw_gbps: bus(*us),
                predicted_busbw_gbps: bus(predicted_us),
            })
        })
        .collect()
}

/// The side-by-side table, one line per row, and a verdict per algorithm.
pub fn table(rows: &[Compared], link_payload_gb_s: f64) -> String {
    let mut s = format!(
        "# {:>6} {:>12} {:>12} {:>14} {:>14} {:>7} {:>11} {:>11} {:>9}\n",
        "algo",
        "schedule",
        "bytes",
        "measured(us)",
        "predicted(us)",
        "pred/me",
        "busbw(GB/s)",
        "pred busbw",
        "busbw/link"
    );
    for r in rows {
        s += &format!(
            "  {:>6} {:>12} {:>12} {:>14.1} {:>14.1} {:>7.2} {:>11.4} {:>11.4} {:>9.2}\n",
            r.asked,
            r.schedule,
            r.bytes,
            r.measured_us,
            r.predicted_us,
            r.ratio,
            r.measured_busbw_gbps,
            r.predicted_busbw_gbps,
            r.measured_busbw_gbps / link_payload_gb_s
        );
    }
    let mut algos: Vec<&str> = rows.iter().map(|r| r.asked.as_str()).collect();
    algos.dedup();
    for a in algos {
        let (lo, hi) = rows
            .iter()
            .filter(|r| r.asked == a)
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| {
                (lo.min(r.ratio), hi.max(r.ratio))
            });
        let ok = lo >= 0.75 && hi <= 1.25;
        s += &format!(
            "# {a}: predicted / measured {lo:.2}..{hi:.2} ({})\n",
            if ok {
                "every size within 25%"
            } else {
                "NOT every size within 25%"
            }
        );
    }
    s
}

/// Writes `<stem>.csv`, `<stem>.json` (one array), `<stem>.txt` (the table) and `<stem>.svg`
/// (busbw against size, measured and predicted per algorithm) into `dir`.
pub fn write_outputs(
    dir: &Path,
    stem: &str,
    rows: &[Compared],
    table_text: &str,
    title: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut csv = String::from(
        "algo,schedule,ranks,bytes,measured_us,predicted_us,ratio,measured_busbw_gbps,predicted_busbw_gbps\n",
    );
    for r in rows {
        csv += &format!(
            "{},{},{},{},{:.3},{:.3},{:.4},{:.5},{:.5}\n",
            r.asked,
            r.schedule,
            r.ranks,
            r.bytes,
            r.measured_us,
            r.predicted_us,
            r.ratio,
            r.measured_busbw_gbps,
            r.predicted_busbw_gbps
        );
    }
    let write = |ext: &str, text: &str| -> anyhow::Result<()> {
        let p = dir.join(format!("{stem}.{ext}"));
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write("csv", &csv)?;
    write("json", &serde_json::to_string_pretty(rows)?)?;
    write("txt", table_text)?;
    let mut curves: Vec<crate::plot::Curve> = Vec::new();
    for r in rows {
        for (label, v) in [
            (format!("{} measured", r.asked), r.measured_busbw_gbps),
            (format!("{} predicted", r.asked), r.predicted_busbw_gbps),
        ] {
            match curves.iter_mut().find(|(l, _)| *l == label) {
                Some((_, pts)) => pts.push((r.bytes, v)),
                None => curves.push((label, vec![(r.bytes, v)])),
            }
        }
    }
    crate::plot::write(&dir.join(format!("{stem}.svg")), title, &curves)
}

/// Reads a cluster file (the calibration) without resizing it.
pub fn load_calibration(path: &Path) -> anyhow::Result<ClusterSpec> {
    Ok(cluster::load(path, None)?.0)
}

/// Saves the written cluster file.
pub fn save(spec: &ClusterSpec, path: &Path) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    cluster::save(spec, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl_collectives::sim::MemorySpec;

    #[test]
    fn schedules_are_read_with_their_depth_and_lanes() {
        assert_eq!(parse_schedule("ring").unwrap(), ("ring", 1, 1));
        assert_eq!(parse_schedule("tree/16").unwrap(), ("tree", 16, 1));
        assert_eq!(parse_schedule("ring x2 lanes").unwrap(), ("ring", 1, 2));
        // Session 7's model read this as depth 1 without lanes.
        assert_eq!(
            parse_schedule("hier:2x4/8 x8 lanes").unwrap(),
            ("hier:2x4", 8, 8)
        );
        for bad in [
            "ring/",
            "ring/x",
            "hier:2x4/8 x8",
            "hier:2x4/8 8 lanes",
            "ring/0",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stack_fit_recovers_a_line_and_refuses_nonsense() {
        // 300 us + bytes / 100 MB/s, exactly.
        let rows: Vec<(u64, f64)> = (12..=22)
            .map(|k| (1u64 << k, 300.0 + (1u64 << k) as f64 / 100.0))
            .collect();
        let (a, b) = fit_stack(&rows).expect("a fit");
        assert!((a - 300.0).abs() < 1e-6, "alpha {a}");
        assert!((b - 1e8).abs() / 1e8 < 1e-9, "beta {b}");
        assert_eq!(fit_stack(&rows[..1]), None);
        assert_eq!(fit_stack(&[(4096, 500.0), (1 << 20, 400.0)]), None);
        assert_eq!(fit_stack(&[(4096, 0.0), (1 << 20, 400.0)]), None);
        // One size 8x slower than its line (a burst of load): the fit hardly moves.
        let mut hit = rows.clone();
        hit[1].1 *= 8.0;
        let (a8, b8) = fit_stack(&hit).expect("a fit");
        assert!((a8 - 300.0).abs() < 15.0, "alpha {a8}");
        assert!((b8 - 1e8).abs() / 1e8 < 0.02, "beta {b8}");
        // Small messages dearer per byte than large ones (0.3 against 0.4 GB/s above 64 KiB):
        // the slope is the large messages' rate and the intercept makes the small sizes right,
        // so both ends of the sweep are within 10% (the median over all sizes' residuals
        // missed 4 KiB by 69%).
        let bent: Vec<(u64, f64)> = (12..=22)
            .map(|k| {
                let b = (1u64 << k) as f64;
                let t = 20.0 + b.min(65536.0) / 0.3e3 + (b - 65536.0).max(0.0) / 0.4e3;
                (1u64 << k, t)
            })
            .collect();
        let (ab, bb) = fit_stack(&bent).expect("a fit");
        for &(b, t) in [bent[0], bent[1], bent[10]].iter() {
            let fit = ab + b as f64 / (bb / 1e6);
            assert!((fit / t - 1.0).abs() < 0.1, "{b}: {fit} against {t}");
        }
        // Times that fall below the line's intercept: alpha clamps at 0.
        let (a0, _) = fit_stack(&[(1 << 20, 10.0), (2 << 20, 30.0)]).expect("a fit");
        assert_eq!(a0, 0.0);
    }

    /// A probe of 4 hosts whose iteration of `w` messages costs a call of `call` us plus `w`
    /// window steps through a server of 12 us per message and 0.4 GB/s (4 messages a step).
    fn probe_of(call: f64, w: usize) -> Probe {
        let line = |w: f64| -> Vec<(u64, f64)> {
            (12..=22)
                .map(|k| {
                    let b = (1u64 << k) as f64;
                    (1u64 << k, call + w * 4.0 * (12.0 + b / 0.4e3))
                })
                .collect()
        };
        Probe {
            rack_latency_us: 10.0,
            cross_latency_us: 12.0,
            stream_bytes_per_s: 1.2e8,
            stack: line(1.0),
            stack_window: line(w as f64),
            window: w,
        }
    }

    #[test]
    fn the_window_steps_give_the_server_without_the_calls_cost() {
        let probe = probe_of(150.0, 8);
        let t = stack_terms(&probe, 4).expect("terms");
        assert!((t.message_us - 12.0).abs() < 1e-6, "{t:?}");
        assert!((t.gb_s - 0.4).abs() < 1e-9, "{t:?}");
        assert!((t.call_us - 150.0).abs() < 1e-6, "{t:?}");
        // The window-1 line alone holds the call: its intercept is call + 4 x 12.
        assert!((t.alpha1_us - 198.0).abs() < 1e-6, "{t:?}");
        // The call's cost does not reach the server, however large.
        let t2 = stack_terms(&probe_of(900.0, 8), 4).expect("terms");
        assert!((t2.message_us - 12.0).abs() < 1e-6, "{t2:?}");
        // Another window measures the same server.
        let t4 = stack_terms(&probe_of(150.0, 4), 4).expect("terms");
        assert!((t4.message_us - 12.0).abs() < 1e-6 && (t4.gb_s - 0.4).abs() < 1e-9);
        // One size of the window run 5x slower (a burst of load): the fit hardly moves.
        let mut hit = probe.clone();
        hit.stack_window[3].1 *= 5.0;
        let th = stack_terms(&hit, 4).expect("terms");
        assert!((th.message_us - 12.0).abs() < 3.0, "{th:?}");
        assert!((th.gb_s - 0.4).abs() / 0.4 < 0.05, "{th:?}");
    }

    #[test]
    fn the_window_fit_refuses_what_it_cannot_split() {
        // A probe saved before the window run (no window, or window 1): nothing to split.
        let mut old = probe_of(150.0, 8);
        old.window = 0;
        assert!(stack_terms(&old, 4).is_none());
        old.window = 1;
        assert!(stack_terms(&old, 4).is_none());
        // A window no slower than one message per call: no positive step.
        let mut flat = probe_of(150.0, 8);
        flat.stack_window = flat.stack.clone();
        assert!(stack_terms(&flat, 4).is_none());
        // Window sizes that the first run does not have: no steps.
        let mut apart = probe_of(150.0, 8);
        for r in &mut apart.stack_window {
            r.0 += 1;
        }
        assert!(window_steps(&apart).is_empty());
        assert!(stack_terms(&apart, 4).is_none());
        // One size only.
        let mut one = probe_of(150.0, 8);
        one.stack.truncate(1);
        assert!(stack_terms(&one, 4).is_none());
    }

    #[test]
    fn hosts_share_the_machines_cores_and_memory() {
        let mut h = HostSpec {
            cores: Some(2),
            sharing_cost: 0.75,
            switch_us: 2.0,
            memory: Some(MemorySpec {
                bandwidth_gb_s: 24.0,
                cache_bytes: 32 << 20,
                cache_bandwidth_gb_s: 80.0,
                staging_bytes: 1 << 20,
            }),
        };
        share_machine(&mut h, 4, 2);
        // 8 ranks on 2 cores: 3 extra per core; one host's 2 ranks on its 1 core: 1 extra.
        assert_eq!(h.cores, Some(1));
        assert!((h.cpu_factor(2) - (1.0 + 0.75 * 3.0)).abs() < 1e-12);
        let m = h.memory.expect("memory");
        assert_eq!((m.bandwidth_gb_s, m.cache_bytes), (6.0, 8 << 20));
        assert_eq!(m.cache_bandwidth_gb_s, 20.0);
        // One host on the whole machine: nothing changes.
        let mut one = HostSpec {
            cores: Some(2),
            sharing_cost: 0.75,
            ..HostSpec::default()
        };
        share_machine(&mut one, 1, 4);
        assert_eq!((one.cores, one.sharing_cost), (Some(2), 0.75));
    }
}
