//! `--model`: predicted data-parallel scaling efficiency of a training step, from one node to
//! the whole cluster.
//!
//! A step computes for `compute` (forward 1/3, backward 2/3, the usual 1:2) and all-reduces the
//! gradients. Overlap off: step = compute + all-reduce(all gradients). Overlap on: the gradients
//! are cut into `--buckets` equal buckets (PyTorch DDP's 25 MB buckets make 4 for ResNet-50);
//! bucket `i` is ready after the forward pass and `(i + 1) / buckets` of the backward pass, and
//! the buckets are all-reduced one after another as soon as they are ready, so at least the last
//! bucket's all-reduce is exposed. Efficiency is compute / step (relative to one device) and
//! step(1 node) / step(N nodes) (relative to one node, Facebook's baseline).

use super::{human, predict, progress_bar, Args, ScheduleCache};
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::sim::Network;

struct Model {
    name: &'static str,
    params: u64,
    compute_ms: f64,
    source: &'static str,
}

const MODELS: &[Model] = &[Model {
    name: "resnet50",
    params: 25_600_000,
    compute_ms: 120.0,
    source: "ResNet-50: 25.6 M parameters (He et al. 2016); ~120 ms per step per P100 (fwd+bwd, \
             32 images at ~260 images/s, Goyal et al. 2017)",
}];

const DDL: f64 = 0.95;
/// As PowerAI DDL's paper quotes Facebook's result at 256 GPUs (Goyal et al.'s own abstract
/// says ~90% from 8 to 256 GPUs).
const FACEBOOK: f64 = 0.89;

/// Hierarchical dims for `ranks` when the requested ones do not fit: devices per node first,
/// then the nodes split into as many balanced factors as were asked for.
fn fit(algo: &Algorithm, ranks: usize, dpn: usize) -> Algorithm {
    match algo {
        Algorithm::Hierarchical(d) if d.iter().product::<usize>() != ranks => {
            let nodes = ranks / dpn;
            let mut dims = vec![dpn];
            if d.len() >= 3 && nodes > 1 {
                let a = (1..=nodes)
                    .filter(|a| nodes % a == 0 && a * a <= nodes)
                    .max()
                    .unwrap_or(1);
                dims.extend([nodes / a, a]);
            } else {
                dims.push(nodes);
            }
            dims.retain(|&x| x > 1);
            if dims.is_empty() {
                dims.push(1);
            }
            Algorithm::Hierarchical(dims)
        }
        other => other.clone(),
    }
}

/// Step time when `buckets` equal buckets, each all-reduced in `t_bucket`, become ready evenly
/// through the backward pass and are all-reduced in order.
fn overlapped(compute: f64, buckets: usize, t_bucket: f64) -> f64 {
    let (forward, backward) = (compute / 3.0, compute * 2.0 / 3.0);
    let mut done = 0.0f64;
    for i in 0..buckets {
        let ready = forward + backward * (i + 1) as f64 / buckets as f64;
        done = done.max(ready) + t_bucket;
    }
    done.max(compute)
}

pub fn run(args: &Args, name: &str, net: &Network, algos: &[Algorithm]) -> anyhow::Result<()> {
    let model = MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| anyhow::anyhow!("unknown model `{name}` (known: resnet50)"))?;
    let compute = args.compute_ms.unwrap_or(model.compute_ms) * 1e-3;
    if !(compute.is_finite() && compute > 0.0) {
        anyhow::bail!("--compute-ms must be > 0");
    }
    let bytes = model.params * 4;
    let buckets = args.buckets.max(1);
    let dpn = net.devices_per_node();
    let nodes_total = net.spec().nodes;
    let mut counts: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&n| n < nodes_total)
        .collect();
    counts.push(nodes_total);
    println!(
        "# {} data-parallel on `{}`: {:.1} M fp32 gradients ({}) all-reduced per step, {:.0} ms compute per step per device, PREDICTED",
        model.name,
        net.spec().name,
        model.params as f64 / 1e6,
        human(bytes),
        compute * 1e3
    );
    println!("# ({})", model.source);
    println!(
        "# eff = compute / step; off: step = compute + allreduce; on: {buckets} buckets all-reduced during the backward pass (2/3 of compute)"
    );
    print!("# {:>5} {:>5}", "nodes", "gpus");
    for a in algos {
        print!(" | {:>20} {:>6} {:>6}", format!("{a} (ms)"), "off", "on");
    }
    println!();
    let bar = progress_bar((counts.len() * algos.len()) as u64);
    let mut caches: Vec<ScheduleCache> = algos.iter().map(|_| ScheduleCache::default()).collect();
    let mut node1: Vec<(f64, f64)> = vec![(0.0, 0.0); algos.len()];
    let mut last_row = Vec::new();
    for &n in &counts {
        let ranks = n * dpn;
        let mut row = Vec::new();
        for (i, algo) in algos.iter().enumerate() {
            let a = fit(algo, ranks, dpn);
            bar.set_message(format!("{a} on {ranks} ranks"));
            let pipe = args.pipeline.map(|k| k as usize);
            let (_, rep) = predict(net, &a, ranks, bytes, 4, pipe, &mut caches[i], &bar)?;
            let bucket_bytes = (bytes / buckets as u64).max(4) / 4 * 4;
            let (_, per_bucket) =
                predict(net, &a, ranks, bucket_bytes, 4, pipe, &mut caches[i], &bar)?;
            bar.inc(1);
            let off = compute + rep.time;
            let on = overlapped(compute, buckets, per_bucket.time);
            if n == 1 {
                node1[i] = (off, on);
            }
            row.push((a, rep.time, off, on));
        }
        bar.suspend(|| {
            print!("  {n:>5} {ranks:>5}");
            for (_, t, off, on) in &row {
                print!(
                    " | {:>20.2} {:>5.1}% {:>5.1}%",
                    t * 1e3,
                    compute / off * 100.0,
                    compute / on * 100.0
                );
            }
            println!();
        });
        last_row = row;
    }
    bar.finish_and_clear();
    let gpus = nodes_total * dpn;
    println!("#\n# At {gpus} GPUs ({nodes_total} nodes), predicted:");
    let mut best: Option<(usize, f64)> = None;
    for (i, (a, t, off, on)) in last_row.iter().enumerate() {
        println!(
            "#   {:<14} all-reduce {:>8.2} ms; efficiency vs 1 GPU: {:>5.1}% (overlap off), {:>5.1}% (on); vs 1 node: {:>5.1}% (off), {:>5.1}% (on)",
            a.to_string(),
            t * 1e3,
            compute / off * 100.0,
            compute / on * 100.0,
            node1[i].0 / off * 100.0,
            node1[i].1 / on * 100.0
        );
        if best.is_none_or(|(_, bt)| *t < bt) {
            best = Some((i, *t));
        }
    }
    if let Some((i, _)) = best {
        let (a, _, off, _) = &last_row[i];
        println!(
            "#   fastest: {a}, {:.1}% vs 1 GPU without overlap",
            compute / off * 100.0
        );
    }
    println!(
        "# Published at 256 GPUs: PowerAI DDL {:.0}% (Cho et al., arXiv:1708.02188, 2017; Caffe ResNet-50, 64 x S822LC); \
         Facebook {:.0}% (Goyal et al., arXiv:1706.02677, 2017, \"~90% from 8 to 256 GPUs\"; Caffe2 ResNet-50, 32 x Big Basin)",
        DDL * 100.0,
        FACEBOOK * 100.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_hides_all_but_the_last_bucket() {
        // Fast buckets: only the last one is exposed.
        assert!((overlapped(0.12, 4, 0.001) - 0.121).abs() < 1e-12);
        // Slow buckets: they queue up behind each other.
        let t = overlapped(0.12, 4, 0.05);
        assert!((t - (0.04 + 0.02 + 4.0 * 0.05)).abs() < 1e-12, "{t}");
        assert!(overlapped(0.12, 1, 0.0) >= 0.12);
    }

    #[test]
    fn hierarchical_dims_shrink_with_the_cluster() {
        let h = Algorithm::Hierarchical(vec![4, 8, 8]);
        assert_eq!(fit(&h, 256, 4), h);
        assert_eq!(fit(&h, 128, 4), Algorithm::Hierarchical(vec![4, 8, 4]));
        assert_eq!(fit(&h, 8, 4), Algorithm::Hierarchical(vec![4, 2]));
        assert_eq!(fit(&h, 4, 4), Algorithm::Hierarchical(vec![4]));
        assert_eq!(fit(&Algorithm::Ring, 8, 4), Algorithm::Ring);
    }
}
