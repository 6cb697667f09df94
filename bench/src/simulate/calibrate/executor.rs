//! Fitting the host model to the executor's own ring all-reduce: six parameters in log space,
//! least squares on the log of predicted over measured time, by Nelder-Mead with restarts.

use super::{host_spec, machine_spec, split_algo, Fit, HostMeasure, Measured};
use oxccl_collectives::algorithms::Algorithm;
use oxccl_collectives::schedule::Collective;
use oxccl_collectives::sim::{simulate, ClusterSpec, Network};

/// What an executor fit holds fixed: the node size, TCP, gamma and the host measurements.
pub(super) struct Ctx {
    pub(super) devices: usize,
    pub(super) tcp: Fit,
    pub(super) gamma: f64,
    pub(super) hm: HostMeasure,
    pub(super) elem: usize,
}

/// The parameters fitted to the executor's ring (in log space): alpha (s), link and memory
/// bandwidth (B/s), sharing cost, switch latency (s), and the share of the last-level cache
/// the collective gets (the machine's other processes use the rest; at most 1). The cache's
/// bandwidth is measured, not fitted: every core at the summing loop's in-cache rate (fitting
/// it too leaves the fit free to trade it against the link bandwidth).
#[derive(Clone, Copy, Debug)]
pub(super) struct ExecParams {
    pub(super) alpha: f64,
    pub(super) link: f64,
    pub(super) mem: f64,
    pub(super) share: f64,
    pub(super) switch: f64,
    pub(super) cache_share: f64,
}

impl ExecParams {
    fn to_vec(self) -> [f64; 6] {
        // The cache share through a logistic, so the fit sees no flat edge at 1.
        let c = self.cache_share.clamp(1e-6, 1.0 - 1e-6);
        [
            self.alpha.ln(),
            self.link.ln(),
            self.mem.ln(),
            self.share.ln(),
            self.switch.ln(),
            (c / (1.0 - c)).ln(),
        ]
    }
    fn from_vec(x: &[f64]) -> Self {
        Self {
            alpha: x[0].exp(),
            link: x[1].exp(),
            mem: x[2].exp(),
            share: x[3].exp(),
            switch: x[4].exp(),
            cache_share: 1.0 / (1.0 + (-x[5]).exp()),
        }
    }
    pub(super) fn spec(&self, c: &Ctx) -> ClusterSpec {
        let shm = Fit {
            alpha: self.alpha,
            beta: 1.0 / self.link,
            points: 0,
        };
        let hm = HostMeasure {
            cache_bytes: (c.hm.cache_bytes as f64 * self.cache_share) as u64,
            ..c.hm
        };
        let host = host_spec(&hm, self.share, self.switch, self.mem, hm.cache_aggregate());
        let mut e = machine_spec(c.devices, shm, c.tcp, c.gamma, Some(host), "executor fit");
        e.name = "this-machine-executor-fit".into();
        e
    }
}

/// Predicted time in seconds of each row on `spec` (NaN where the simulation fails).
pub(super) fn predict(
    spec: &ClusterSpec,
    rows: &[Measured],
    elem: usize,
) -> anyhow::Result<Vec<f64>> {
    let net = Network::new(spec)?;
    rows.iter()
        .map(|(n, algo_name, bytes, _)| {
            let (name, k) = split_algo(algo_name);
            let algo: Algorithm = name.parse().unwrap_or(Algorithm::Ring);
            let s = algo.schedule(Collective::AllReduce, *n, k)?;
            Ok(simulate(&net, &s, *bytes as u64, elem)?.time)
        })
        .collect()
}

/// Sum of squared log ratios of predicted to measured time: relative errors, so 4 KiB rows
/// count as much as 64 MiB ones.
fn log_error(pred: &[f64], rows: &[Measured]) -> f64 {
    pred.iter()
        .zip(rows)
        .map(|(p, r)| (p / (r.3 * 1e-6)).ln().powi(2))
        .sum()
}

/// Nelder-Mead minimisation of `f` from `x0` with initial simplex steps `step`.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], step: f64, iters: usize) -> Vec<f64> {
    let d = x0.len();
    let mut pts: Vec<(Vec<f64>, f64)> = (0..=d)
        .map(|i| {
            let mut x = x0.to_vec();
            if i > 0 {
                x[i - 1] += step;
            }
            let v = f(&x);
            (x, v)
        })
        .collect();
    let blend = |a: &[f64], b: &[f64], t: f64| -> Vec<f64> {
        a.iter().zip(b).map(|(a, b)| a + t * (b - a)).collect()
    };
    for _ in 0..iters {
        pts.sort_by(|a, b| a.1.total_cmp(&b.1));
        let centroid: Vec<f64> = (0..d)
            .map(|j| pts[..d].iter().map(|p| p.0[j]).sum::<f64>() / d as f64)
            .collect();
        let worst = pts[d].clone();
        let refl = blend(&centroid, &worst.0, -1.0);
        let fr = f(&refl);
        if fr < pts[0].1 {
            let exp = blend(&centroid, &worst.0, -2.0);
            let fe = f(&exp);
            pts[d] = if fe < fr { (exp, fe) } else { (refl, fr) };
        } else if fr < pts[d - 1].1 {
            pts[d] = (refl, fr);
        } else {
            let con = blend(&centroid, &worst.0, 0.5);
            let fc = f(&con);
            if fc < worst.1 {
                pts[d] = (con, fc);
            } else {
                let best = pts[0].0.clone();
                for p in pts.iter_mut().skip(1) {
                    p.0 = blend(&best, &p.0, 0.5);
                    p.1 = f(&p.0);
                }
            }
        }
    }
    pts.sort_by(|a, b| a.1.total_cmp(&b.1));
    pts.swap_remove(0).0
}

/// Fits [`ExecParams`] to the executor's ring at the rank counts `fit`, starting from `start`
/// (the transport's alpha and beta and the summing loop's rates). Needs 3 sizes per count.
pub(super) fn fit_executor(
    rows: &[Measured],
    fit: &[usize],
    start: ExecParams,
    c: &Ctx,
) -> Option<(ExecParams, usize)> {
    let mine: Vec<Measured> = rows
        .iter()
        .filter(|r| fit.contains(&r.0) && split_algo(&r.1).0 == "ring" && r.3 > 0.0)
        .cloned()
        .collect();
    if fit
        .iter()
        .any(|&p| mine.iter().filter(|r| r.0 == p).count() < 3)
    {
        return None;
    }
    let f = |x: &[f64]| {
        let spec = ExecParams::from_vec(x).spec(c);
        predict(&spec, &mine, c.elem).map_or(f64::INFINITY, |pr| log_error(&pr, &mine))
    };
    let mut x = start.to_vec().to_vec();
    // Restarts shake the simplex out of the flat valleys a plain run stops in.
    for _ in 0..4 {
        x = nelder_mead(&f, &x, 0.5, 300);
    }
    Some((ExecParams::from_vec(&x), mine.len()))
}
