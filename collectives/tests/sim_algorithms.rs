//! The library's own schedules (the ones the executor runs) on a single flat tier, against the
//! tuner's closed forms (`tuner::predict`: Thakur, Rabenseifner & Gropp 2005; Patarasuk & Yuan
//! 2009) and the bandwidth lower bound.

use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::sim::{simulate, ClusterSpec, Network};
use oxccl_collectives::tuner::{predict, CostParams, LinkParams};

const ALPHA_US: f64 = 3.0;
const BW_GB_S: f64 = 12.5;
const GAMMA_GB_S: f64 = 50.0;

fn flat(p: usize) -> Network {
    Network::new(&ClusterSpec::flat("flat", p, BW_GB_S, ALPHA_US, GAMMA_GB_S)).unwrap()
}

fn params() -> CostParams {
    CostParams::flat(LinkParams {
        alpha_s: ALPHA_US * 1e-6,
        beta_s_per_byte: 1.0 / (BW_GB_S * 1e9),
        gamma_s_per_byte: 1.0 / (GAMMA_GB_S * 1e9),
    })
}

fn check(algo: &str, ranks: &[usize]) {
    let a: Algorithm = algo.parse().unwrap();
    for &p in ranks {
        let net = flat(p);
        let s = a.schedule(Collective::AllReduce, p, 1).unwrap();
        for n in [4096usize, 1 << 20, 100_000_000] {
            let sim = simulate(&net, &s, n as u64, 4).unwrap().time;
            let model = predict(&a, Collective::AllReduce, p, n, &params());
            let err = (sim - model).abs() / model;
            assert!(
                err <= 0.01,
                "{algo} p={p} n={n}: simulated {sim:.6e} s, closed form {model:.6e} s ({:.2}% off)",
                err * 100.0
            );
        }
    }
}

#[test]
fn ring_agrees_with_the_closed_form() {
    check("ring", &[2, 3, 4, 7, 8, 16, 24]);
}

#[test]
fn rhd_agrees_with_the_closed_form_power_of_two_and_not() {
    check("rhd", &[2, 4, 8, 16, 32]);
    check("rhd", &[3, 5, 6, 7, 12, 24]);
}

#[test]
fn binomial_tree_agrees_with_the_closed_form() {
    check("tree", &[2, 4, 8, 16, 32]);
    // For p not a power of two, subtrees without a partner in early rounds finish early and
    // their parents start sooner than the synchronous-round formula assumes: it is an upper
    // bound (the simulation came out up to ~5% below it at 4 KiB).
    let a: Algorithm = "tree".parse().unwrap();
    for p in [3usize, 5, 6, 7, 12, 24] {
        let (net, s) = (flat(p), a.schedule(Collective::AllReduce, p, 1).unwrap());
        for n in [4096usize, 1 << 20, 100_000_000] {
            let sim = simulate(&net, &s, n as u64, 4).unwrap().time;
            let model = predict(&a, Collective::AllReduce, p, n, &params());
            assert!(
                sim <= model * 1.01,
                "tree p={p} n={n}: {sim:.6e} > {model:.6e}"
            );
            assert!(
                sim >= model * 0.5,
                "tree p={p} n={n}: {sim:.6e} << {model:.6e}"
            );
        }
    }
}

#[test]
fn bandwidth_optimal_algorithms_tend_to_two_p_minus_one_over_p_n_beta() {
    // alpha -> 0 and free reductions: ring, rhd and the hierarchical ring all move
    // 2 (p - 1) / p n bytes through each NIC.
    let n = 1u64 << 28;
    for (algo, p) in [
        ("ring", 8),
        ("rhd", 16),
        ("hier:4x4", 16),
        ("hier:2x3x4", 24),
    ] {
        let net = Network::new(&ClusterSpec::flat("free", p, BW_GB_S, 0.0, 1e9)).unwrap();
        let a: Algorithm = algo.parse().unwrap();
        let s = a.schedule(Collective::AllReduce, p, 1).unwrap();
        let t = simulate(&net, &s, n, 4).unwrap().time;
        let bound = 2.0 * (p as f64 - 1.0) / p as f64 * n as f64 / (BW_GB_S * 1e9);
        assert!(
            (t - bound).abs() / bound < 0.01,
            "{algo} p={p}: {t:.6e} s vs 2(p-1)/p n beta = {bound:.6e} s"
        );
    }
}

#[test]
fn every_algorithm_runs_on_a_two_level_cluster_without_deadlock() {
    // 4 nodes x 4 devices, with pipelining: exercises per-pair FIFO matching of many chunks.
    let mut spec = ClusterSpec::flat("two-level", 4, BW_GB_S, ALPHA_US, GAMMA_GB_S);
    spec.node.devices = 4;
    spec.node.switches = vec!["sw".into()];
    spec.node.links = (0..4)
        .map(|d| oxccl_collectives::sim::LinkSpec {
            between: [format!("dev{d}"), "sw".into()],
            bandwidth_gb_s: 100.0,
            latency_us: 1.0,
            kind: "nvlink".into(),
        })
        .chain(std::iter::once(oxccl_collectives::sim::LinkSpec {
            between: ["sw".into(), "nic0".into()],
            bandwidth_gb_s: 50.0,
            latency_us: 0.0,
            kind: "pcie".into(),
        }))
        .collect();
    let net = Network::new(&spec).unwrap();
    for algo in ["ring", "rhd", "tree", "dbtree", "hier:4x4", "hier:4x2x2"] {
        let a: Algorithm = algo.parse().unwrap();
        for k in [1, 3] {
            let s = a.schedule(Collective::AllReduce, 16, k).unwrap();
            let r = simulate(&net, &s, 10_000_000, 4).unwrap();
            assert!(r.time > 0.0 && r.rank_times.len() == 16, "{algo}");
            // Nothing finishes before the bandwidth bound of the NIC allows.
            let bound = 2.0 * 3.0 / 4.0 * 10e6 / (BW_GB_S * 1e9);
            assert!(
                r.time >= bound * 0.999,
                "{algo} k={k}: {} < {bound}",
                r.time
            );
        }
    }
}
