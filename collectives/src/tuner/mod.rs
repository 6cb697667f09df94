//! The tuner: an alpha-beta-gamma cost model per algorithm, and the choice it makes.
//!
//! A message of `m` bytes over a link costs `alpha + m * beta`, and reducing `m` bytes costs
//! `m * gamma` (Hockney's model, as Thakur, Rabenseifner & Gropp 2005 use it). Every algorithm
//! here except `rhd` is a pipelined schedule: one chunk crosses `H` hops (stages), `k` chunks
//! follow one another, and the busiest rank handles `c` chunk-messages of `m` bytes per chunk
//! in its busiest direction. Its time is then
//!
//! ```text
//! T = (H + k - 1) * alpha  +  (c * k + max(H - c, 0)) * m * beta  +  G * gamma
//! ```
//!
//! (the pipeline's latency, the busiest link's bytes, the fill of the pipeline, and the `G`
//! bytes the busiest rank reduces). `alpha` is charged once per chunk as well as once per hop:
//! in a CPU-driven executor each message costs that much software overhead, so cutting a
//! message in `k` is not free. (The simulator treats `alpha` as pure wire latency, which
//! pipelined messages overlap; for `k = 1` the two agree, and for `k > 1` the simulator is
//! faster than this formula by up to `(k - 1) alpha` plus the reduction it overlaps.) With `k = 1` each algorithm's formula reduces to the
//! classic closed form of Thakur et al. and of Patarasuk & Yuan 2009 (`ALGORITHMS.md` lists
//! them); the simulator is checked against [`predict`]. `bytes` is always the size of the
//! collective's whole buffer: the vector for all-reduce, broadcast and reduce, the `p x chunk`
//! input of reduce-scatter, the `p x chunk` output of all-gather.
//!
//! [`choose`] evaluates every algorithm that implements the collective at pipeline depths
//! 1, 2, 4, ..., 256 and takes the cheapest (within 2%, the first in the order ring, rhd,
//! tree, dbtree, hier); `OXCCL_ALGO` (see [`algo_override`]) forces the
//! algorithm, the model still picking its pipeline depth. The choice is logged at `info`.

use crate::algorithms::{
    all_reduce_shape, dims_fit, double_binary_trees, Algorithm, AlgorithmError,
};
use crate::schedule::Collective;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Hockney parameters of one kind of link, plus the local reduction cost.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkParams {
    /// Latency per message, in seconds.
    pub alpha_s: f64,
    /// Transfer time per byte (1 / bandwidth), in seconds.
    pub beta_s_per_byte: f64,
    /// Reduction time per byte, in seconds.
    pub gamma_s_per_byte: f64,
}

impl LinkParams {
    /// Shared memory between processes of one host (order of magnitude, until measured).
    pub const SHM: LinkParams = LinkParams {
        alpha_s: 1e-6,
        beta_s_per_byte: 1.0 / 8e9,
        gamma_s_per_byte: 1.0 / 8e9,
    };
    /// TCP over loopback or a 25 GbE link (order of magnitude, until measured).
    pub const TCP: LinkParams = LinkParams {
        alpha_s: 20e-6,
        beta_s_per_byte: 1.0 / 2.5e9,
        gamma_s_per_byte: 1.0 / 8e9,
    };
    /// InfiniBand EDR (100 Gb/s) with RDMA.
    pub const INFINIBAND_EDR: LinkParams = LinkParams {
        alpha_s: 2e-6,
        beta_s_per_byte: 1.0 / 12e9,
        gamma_s_per_byte: 1.0 / 8e9,
    };

    /// The worse of two links in every parameter.
    pub fn max(self, other: LinkParams) -> LinkParams {
        LinkParams {
            alpha_s: self.alpha_s.max(other.alpha_s),
            beta_s_per_byte: self.beta_s_per_byte.max(other.beta_s_per_byte),
            gamma_s_per_byte: self.gamma_s_per_byte.max(other.gamma_s_per_byte),
        }
    }
}

/// The machine as the cost model sees it: one [`LinkParams`] per tier, innermost first (tier 0
/// joins the ranks of one node, the last tier the outermost level). A hierarchical algorithm
/// with dims `d1 x d2 x ...` runs dim `j` over tier `j` (the last tier when there are fewer);
/// flat algorithms are charged the slowest tier, since their rings and trees cross it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostParams {
    pub tiers: Vec<LinkParams>,
    /// The largest message the executor moves at once (its transport buffers), if bounded:
    /// [`choose`] then pipelines at least enough to keep each message under it.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
}

impl CostParams {
    /// One kind of link everywhere.
    pub fn flat(link: LinkParams) -> CostParams {
        CostParams {
            tiers: vec![link],
            max_message_bytes: None,
        }
    }

    /// These params with messages bounded by `bytes`.
    pub fn with_max_message(self, bytes: usize) -> CostParams {
        CostParams {
            max_message_bytes: Some(bytes),
            ..self
        }
    }

    /// The link of tier `j` (the last one for deeper tiers; [`LinkParams::TCP`] if none).
    pub fn tier(&self, j: usize) -> LinkParams {
        self.tiers
            .get(j)
            .or(self.tiers.last())
            .copied()
            .unwrap_or(LinkParams::TCP)
    }

    /// The worst link of all tiers.
    pub fn slowest(&self) -> LinkParams {
        self.tiers
            .iter()
            .copied()
            .reduce(LinkParams::max)
            .unwrap_or(LinkParams::TCP)
    }
}

/// Predicted seconds for `algorithm` to run `collective` on `ranks` ranks over `bytes`, not
/// pipelined. Infinite when the algorithm does not implement the collective (or `hier` has no
/// dims that fit).
pub fn predict(
    algorithm: &Algorithm,
    collective: Collective,
    ranks: usize,
    bytes: usize,
    params: &CostParams,
) -> f64 {
    predict_pipelined(algorithm, collective, ranks, bytes, params, 1)
}

/// The generic pipelined cost (see the module docs).
fn pipelined(link: LinkParams, hops: f64, k: f64, load: f64, msg: f64, reduced: f64) -> f64 {
    (hops + k - 1.0) * link.alpha_s
        + (load * k + (hops - load).max(0.0)) * msg * link.beta_s_per_byte
        + reduced * link.gamma_s_per_byte
}

/// Predicted seconds with the data cut into `pipeline` chunks per block stream.
pub fn predict_pipelined(
    algorithm: &Algorithm,
    collective: Collective,
    ranks: usize,
    bytes: usize,
    params: &CostParams,
    pipeline: usize,
) -> f64 {
    if !algorithm.supports(collective) || pipeline == 0 {
        return f64::INFINITY;
    }
    if ranks <= 1 {
        return 0.0;
    }
    let (p, n, k) = (ranks as f64, bytes as f64, pipeline as f64);
    let link = params.slowest();
    let log2_ceil = (usize::BITS - (ranks - 1).leading_zeros()) as f64;
    if !pipelines(collective) && pipeline > 1 {
        // One hop per message: more chunks only add messages.
        return f64::INFINITY;
    }
    if let Some(t) = moving(algorithm, collective, p, n, log2_ceil, link) {
        return t;
    }
    let is_reduction = matches!(
        collective,
        Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce { .. }
    );
    match algorithm {
        Algorithm::Ring => match collective {
            // Every rank handles every stage of every chunk: load = hops.
            Collective::AllReduce => {
                let h = 2.0 * (p - 1.0);
                pipelined(link, h, k, h, n / (p * k), (p - 1.0) / p * n)
            }
            Collective::ReduceScatter | Collective::AllGather => {
                let reduced = if is_reduction { (p - 1.0) / p * n } else { 0.0 };
                pipelined(link, p - 1.0, k, p - 1.0, n / (p * k), reduced)
            }
            // The chain: one message per chunk per rank; a reduce adds up at every hop, so the
            // reduction rides the critical path with the transfer.
            _ => {
                let gamma = if is_reduction {
                    link.gamma_s_per_byte
                } else {
                    0.0
                };
                let hop = LinkParams {
                    beta_s_per_byte: link.beta_s_per_byte + gamma,
                    ..link
                };
                pipelined(hop, p - 1.0, k, 1.0, n / k, 0.0)
            }
        },
        Algorithm::Tree => {
            // Binomial: the root talks to ceil(log2 p) children per chunk, one after another on
            // its link. Latency and the reductions that cannot hide behind the next child's
            // transfer are paid once per level of the tree, whose height is below
            // ceil(log2 p) when p is not a power of two.
            let l = log2_ceil;
            let height = binomial_height(ranks) as f64;
            let reduced = if is_reduction { height * n } else { 0.0 };
            let phases = if collective == Collective::AllReduce {
                2.0
            } else {
                1.0
            };
            pipelined(link, phases * l, k, l, n / k, reduced) - phases * (l - height) * link.alpha_s
        }
        Algorithm::DoubleBinaryTree => {
            // The stage plan takes a node's two children one stage apart, but their messages
            // are in flight together: latency is paid once per level (up and down the taller
            // tree), while the stages still set how long the pipeline takes to fill.
            let DbtreeShape {
                hops,
                height,
                busiest,
                reductions,
            } = dbtree_shape(ranks);
            pipelined(
                link,
                hops as f64,
                k,
                busiest as f64,
                n / (2.0 * k),
                reductions as f64 * n / 2.0,
            ) - (hops as f64 - 2.0 * height as f64).max(0.0) * link.alpha_s
        }
        Algorithm::Rhd => rhd(collective, ranks, n, link),
        // Every collective `direct` implements is priced by `moving` above.
        Algorithm::Direct => f64::INFINITY,
        Algorithm::Hierarchical(dims) => {
            if !dims_fit(dims, ranks) {
                return f64::INFINITY;
            }
            hierarchical(collective, dims, n, k, params)
        }
    }
}

/// Whether more pipeline chunks can help `collective` (not gather, scatter, all-to-all).
fn pipelines(collective: Collective) -> bool {
    !matches!(
        collective,
        Collective::Gather { .. } | Collective::Scatter { .. } | Collective::AllToAll
    )
}

/// Gather, scatter, all-to-all and the direct all-gather: data that is only moved, one hop
/// (or a binomial tree of store-and-forward hops) per part. `n` is the whole buffer: the
/// root's for gather and scatter, one rank's input for all-to-all, the output of all-gather.
///
/// * `direct` gather and scatter: the root's link carries `(p-1)/p n` in `p - 1` messages.
/// * `tree` gather and scatter: `ceil(log2 p)` rounds; the root's link carries as much, but a
///   subtree's head forwards only once its whole subtree is in, so the largest subtree (half
///   the data) also passes through one more rank's memory first (charged at `gamma`, a copy).
/// * `direct` all-gather: every rank receives `(p-1)/p n` in `p - 1` messages at once.
/// * all-to-all: every rank sends and receives `(p-1)/p n`; `direct` posts all `p - 1`
///   messages at once, the pairwise `ring` waits for each step's receive before its next send,
///   one more latency per step.
fn moving(
    algorithm: &Algorithm,
    collective: Collective,
    p: f64,
    n: f64,
    log2_ceil: f64,
    link: LinkParams,
) -> Option<f64> {
    let LinkParams {
        alpha_s: a,
        beta_s_per_byte: b,
        gamma_s_per_byte: g,
    } = link;
    let spread = (p - 1.0) / p * n * b;
    Some(match (algorithm, collective) {
        (Algorithm::Direct, Collective::Gather { .. } | Collective::Scatter { .. }) => {
            (p - 1.0) * a + spread
        }
        (Algorithm::Tree, Collective::Gather { .. } | Collective::Scatter { .. }) => {
            let forward = if p > 2.0 { n / 2.0 * g } else { 0.0 };
            log2_ceil * a + spread + forward
        }
        (Algorithm::Direct, Collective::AllGather | Collective::AllToAll) => (p - 1.0) * a + spread,
        (Algorithm::Ring, Collective::AllToAll) => 2.0 * (p - 1.0) * a + spread,
        _ => return None,
    })
}

/// The bytes the cost model charges a collective of uneven `parts` (bytes per rank, or per
/// (sender, receiver) pair for all-to-all) as if they were even: a ring moves one part per
/// step, so its steps take as long as the largest part; halving-doubling, trees and direct
/// sends move whole ranges, the total.
pub fn effective_bytes(algorithm: &Algorithm, parts: &[usize], ranks: usize) -> usize {
    let total: usize = parts.iter().sum();
    match algorithm {
        Algorithm::Ring if parts.len() == ranks => parts
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .saturating_mul(ranks),
        _ => total,
    }
}

/// Height of the binomial tree on `p` ranks: relative rank `v` sits at depth `popcount(v)`, so
/// the deepest is `p - 1` or the all-ones number just below the top bit.
fn binomial_height(p: usize) -> u32 {
    let top = p - 1;
    top.count_ones()
        .max((usize::BITS - top.leading_zeros()).saturating_sub(1))
}

/// What the cost model needs of the double binary trees on `p` ranks.
#[derive(Clone, Copy)]
struct DbtreeShape {
    hops: usize,
    height: usize,
    busiest: usize,
    reductions: usize,
}

/// Computed once per rank count and cached: [`choose`] runs per call, and building two trees
/// over thousands of ranks for each of its pipeline depths would be the slowest part of a small
/// all-reduce.
fn dbtree_shape(ranks: usize) -> DbtreeShape {
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<usize, DbtreeShape>> = Default::default();
    }
    if let Some(shape) = CACHE.with(|c| c.borrow().get(&ranks).copied()) {
        return shape;
    }
    let mut hops = 0;
    let mut height = 0;
    let mut load = vec![(0, 0, 0); ranks];
    for tree in double_binary_trees(ranks) {
        let (h, loads) = all_reduce_shape(&tree);
        hops = hops.max(h);
        height = height.max(tree.height());
        for (total, one) in load.iter_mut().zip(loads) {
            *total = (total.0 + one.0, total.1 + one.1, total.2 + one.2);
        }
    }
    let shape = DbtreeShape {
        hops,
        height,
        busiest: load.iter().map(|l| l.0.max(l.1)).max().unwrap_or(0),
        reductions: load.iter().map(|l| l.2).max().unwrap_or(0),
    };
    CACHE.with(|c| c.borrow_mut().insert(ranks, shape));
    shape
}

/// Thakur, Rabenseifner & Gropp 2005, section 4: halving-doubling on `p'` ranks plus the fold
/// of the `p - p'` extra ranks (their whole vector in, the result out).
fn rhd(collective: Collective, ranks: usize, n: f64, link: LinkParams) -> f64 {
    let p2 = 1usize << (usize::BITS - 1 - ranks.leading_zeros());
    let (p, q, l) = (ranks as f64, p2 as f64, p2.trailing_zeros() as f64);
    let LinkParams {
        alpha_s: a,
        beta_s_per_byte: b,
        gamma_s_per_byte: g,
    } = link;
    let part = (q - 1.0) / q * n;
    let fold = ranks != p2;
    match collective {
        Collective::AllReduce => {
            let extra = if fold {
                2.0 * a + 2.0 * n * b + n * g
            } else {
                0.0
            };
            2.0 * l * a + 2.0 * part * b + part * g + extra
        }
        Collective::ReduceScatter => {
            let extra = if fold {
                2.0 * a + n * b + n * g + n / p * b
            } else {
                0.0
            };
            l * a + part * (b + g) + extra
        }
        _ => {
            let extra = if fold {
                2.0 * a + n / p * b + n * b
            } else {
                0.0
            };
            l * a + part * b + extra
        }
    }
}

/// Ring phases along each dim in turn, dim `j` on tier `j`, on `1/(d1...d(j-1))` of the data.
fn hierarchical(
    collective: Collective,
    dims: &[usize],
    n: f64,
    k: f64,
    params: &CostParams,
) -> f64 {
    let m = dims.len();
    if collective == Collective::AllReduce {
        return hierarchical_all_reduce(dims, n, k, params);
    }
    let mut total = 0.0;
    let mut data = n;
    for (j, &d) in dims.iter().enumerate() {
        let link = params.tier(j);
        let d = d as f64;
        if d > 1.0 {
            let seg = data / (d * k);
            let rs = pipelined(link, d - 1.0, k, d - 1.0, seg, (d - 1.0) / d * data);
            let ag = pipelined(
                LinkParams {
                    gamma_s_per_byte: 0.0,
                    ..link
                },
                d - 1.0,
                k,
                d - 1.0,
                seg,
                0.0,
            );
            total += match collective {
                Collective::ReduceScatter => rs,
                Collective::AllGather => ag,
                // The last dim is one ring all-reduce; the others reduce-scatter on the way in
                // and all-gather on the way out.
                _ if j + 1 == m => {
                    let h = 2.0 * (d - 1.0);
                    pipelined(link, h, k, h, seg, (d - 1.0) / d * data)
                }
                _ => rs + ag,
            };
        }
        data /= d;
    }
    total
}

/// The all-reduce runs its `k` chunks through every dim in one pipeline (see
/// `algorithms::hier`): one chunk's trip through all the phases, then one more chunk per
/// step of the busiest tier (its per-chunk bytes over every phase on it, plus one alpha).
/// With `k = 1` that is the sum of the phases, as for reduce-scatter and all-gather.
fn hierarchical_all_reduce(dims: &[usize], n: f64, k: f64, params: &CostParams) -> f64 {
    let (mut trip, mut reduced_s, mut busiest) = (0.0, 0.0, 0.0f64);
    let mut data = n;
    let halved = crate::algorithms::hier_all_reduce_halves_first_dim(dims);
    let first = dims.iter().position(|&d| d > 1);
    for (j, &d) in dims.iter().enumerate() {
        let link = params.tier(j);
        let d = d as f64;
        if d > 1.0 {
            let msg = data / (d * k);
            // Reduce-scatter and all-gather on the way in and out, or one ring all-reduce on
            // the last dim: 2 (d - 1) hops either way, each carrying one message per chunk;
            // halving takes 2 log2 d hops for the same bytes, the first one half the data.
            let hops = 2.0 * (d - 1.0);
            trip += if halved && first == Some(j) {
                2.0 * d.log2() * link.alpha_s + hops * msg * link.beta_s_per_byte
            } else {
                hops * (link.alpha_s + msg * link.beta_s_per_byte)
            };
            busiest = busiest.max(link.alpha_s + hops * msg * link.beta_s_per_byte);
            reduced_s += (d - 1.0) / d * data * link.gamma_s_per_byte;
        }
        data /= d;
    }
    trip + (k - 1.0) * busiest + reduced_s
}

/// Predictions closer than this (relative) count as equal in [`choose`].
const TIE_MARGIN: f64 = 0.02;

/// The pipeline depths [`choose`] considers.
const PIPELINES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// The largest message `algorithm` sends with `k` chunks (one segment's chunk).
pub fn message_bytes(
    algorithm: &Algorithm,
    collective: Collective,
    ranks: usize,
    bytes: usize,
    k: usize,
) -> usize {
    let k = k.max(1);
    match algorithm {
        Algorithm::Ring
            if matches!(
                collective,
                Collective::Broadcast { .. } | Collective::Reduce { .. }
            ) =>
        {
            bytes.div_ceil(k)
        }
        Algorithm::Ring => bytes.div_ceil(ranks.max(1) * k),
        // The fold moves the whole vector; halving's first message is half of it.
        Algorithm::Rhd if ranks.is_power_of_two() => bytes / 2,
        Algorithm::Rhd => bytes,
        Algorithm::Tree => bytes.div_ceil(k),
        Algorithm::DoubleBinaryTree => bytes.div_ceil(2 * k),
        Algorithm::Direct => bytes.div_ceil(ranks.max(1) * k),
        Algorithm::Hierarchical(dims) => {
            let mut d = dims.iter().copied().find(|&d| d > 1).unwrap_or(1);
            if collective == Collective::AllReduce
                && crate::algorithms::hier_all_reduce_halves_first_dim(dims)
            {
                d = 2;
            }
            bytes.div_ceil(d * k)
        }
    }
}

/// The most lanes [`lanes`] picks.
pub const MAX_AUTO_LANES: usize = 8;

/// How many lanes a call of `algorithm` with `k` pipeline chunks gets.
///
/// Lanes let one lane's transfers run while another waits for its receives (see "Lanes" in
/// [`crate::schedule`]); the chunks are dealt out to them, so messages keep their size and a
/// lane costs only more, smaller steps. That matters where a step's messages cross tiers of
/// different speeds, which is `hier`'s all-reduce: its wavefront puts the intra-node phase of
/// one chunk and the network phase of another in one step, and with one lane the network idles
/// at every step's end while the slowest receive lands (on DDL's cluster, 5% of the time with
/// 64 chunks and 9% with 256: `bench/results/simulator.md`). The flat algorithms keep one tier
/// busy by themselves, so they get one lane.
///
/// But each lane is a pipeline of its own: its chunks run through all `S` stages of the
/// schedule, and a lane of fewer than `S` chunks never has them all busy; it is filling or
/// draining the whole time, and each of those steps costs a hop's latency with little data on
/// the network. So `hier` over two or more tiers gets one lane per `S` chunks,
/// `k / S` clamped to `1..=MAX_AUTO_LANES`. On DDL's cluster (`hier:4x16x4`, `S` = 47) that is
/// one lane up to 64 chunks: 8 lanes there took 0.988 of the ring's speed at 16 MiB, one lane
/// 0.993 (with links served by arrival the simulator shows no gain from lanes that the
/// one-lane wavefront does not already get: `bench/results/simulator.md`, section 9).
pub fn lanes(
    algorithm: &Algorithm,
    collective: Collective,
    _ranks: usize,
    _bytes: usize,
    k: usize,
) -> usize {
    let tiers = match algorithm {
        Algorithm::Hierarchical(dims) => dims.iter().filter(|&&d| d > 1).count(),
        _ => 0,
    };
    let Algorithm::Hierarchical(dims) = algorithm else {
        return 1;
    };
    if tiers < 2 || collective != Collective::AllReduce {
        return 1;
    }
    let stages = crate::algorithms::hier_all_reduce_stages(dims).max(1);
    (k / stages).clamp(1, MAX_AUTO_LANES)
}

/// The cheapest pipeline depth for `algorithm`, and its predicted time. With
/// `params.max_message_bytes`, only depths that keep messages under it are considered (the
/// deepest one if none does).
pub fn best_pipeline(
    algorithm: &Algorithm,
    collective: Collective,
    ranks: usize,
    bytes: usize,
    params: &CostParams,
) -> (usize, f64) {
    let fits = |k: usize| match params.max_message_bytes {
        Some(max) => message_bytes(algorithm, collective, ranks, bytes, k) <= max.max(1),
        None => true,
    };
    let deepest = PIPELINES[PIPELINES.len() - 1];
    PIPELINES
        .iter()
        .copied()
        .filter(|&k| {
            fits(k) || k == deepest || matches!(algorithm, Algorithm::Rhd) || !pipelines(collective)
        })
        .map(|k| {
            let t = predict_pipelined(algorithm, collective, ranks, bytes, params, k);
            (k, t)
        })
        .fold(
            (1, f64::INFINITY),
            |best, c| {
                if c.1 < best.1 {
                    c
                } else {
                    best
                }
            },
        )
}

/// `OXCCL_ALGO`, parsed: `None` when unset, empty or `auto`.
pub fn algo_override() -> Option<Result<Algorithm, AlgorithmError>> {
    let value = std::env::var("OXCCL_ALGO").ok()?;
    let value = value.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("auto") {
        return None;
    }
    Some(value.parse())
}

/// The algorithm and pipeline depth for one call: `OXCCL_ALGO` if it is set, valid and
/// implements `collective` (otherwise a warning is logged and the model decides), else the
/// cheapest under the cost model. `dims` are the hierarchy's dims (fastest first) when the
/// topology has one; `hier` without dims takes them.
pub fn choose(
    collective: Collective,
    ranks: usize,
    bytes: usize,
    params: &CostParams,
    dims: Option<&[usize]>,
) -> (Algorithm, usize) {
    choose_with(algo_override(), collective, ranks, bytes, params, dims)
}

/// A forced algorithm made concrete for a communicator of `ranks` ranks whose map gives
/// `map_dims` (or says why it gives none): `hier` takes the map's dims, and given dims must
/// multiply to the rank count. The error says why, for `Error::Algorithm`.
pub fn resolve_forced(
    algo: Algorithm,
    ranks: usize,
    map_dims: Result<Vec<usize>, String>,
) -> Result<Algorithm, String> {
    match algo {
        Algorithm::Hierarchical(d) if d.is_empty() => map_dims
            .map(Algorithm::Hierarchical)
            .map_err(|why| format!("no dims from the map: {why}; give them (hier:AxB)")),
        Algorithm::Hierarchical(d) if !dims_fit(&d, ranks) => Err(format!(
            "dims {} multiply to {}, not to the communicator's {ranks} ranks",
            crate::map::dims_text(&d),
            d.iter()
                .try_fold(1usize, |a, &x| a.checked_mul(x))
                .map_or("too much".into(), |n| n.to_string())
        )),
        a => Ok(a),
    }
}

/// [`choose`] with the override given rather than read from the environment.
pub fn choose_with(
    forced: Option<Result<Algorithm, AlgorithmError>>,
    collective: Collective,
    ranks: usize,
    bytes: usize,
    params: &CostParams,
    dims: Option<&[usize]>,
) -> (Algorithm, usize) {
    choose_sized(forced, collective, ranks, &|_| bytes, params, dims)
}

/// [`choose_with`] for an uneven collective: `parts` are the bytes of each rank's part (each
/// (sender, receiver) pair's for all-to-all), charged per algorithm as [`effective_bytes`]
/// says. Hierarchical schedules are not offered: their shards are not in rank order, which
/// uneven parts need.
pub fn choose_parts(
    forced: Option<Result<Algorithm, AlgorithmError>>,
    collective: Collective,
    ranks: usize,
    parts: &[usize],
    params: &CostParams,
) -> (Algorithm, usize) {
    let forced = match forced {
        Some(Ok(Algorithm::Hierarchical(_))) => {
            tracing::warn!("OXCCL_ALGO=hier does not run uneven {collective:?}; ignored");
            None
        }
        f => f,
    };
    let bytes = |a: &Algorithm| effective_bytes(a, parts, ranks);
    choose_sized(forced, collective, ranks, &bytes, params, None)
}

fn choose_sized(
    forced: Option<Result<Algorithm, AlgorithmError>>,
    collective: Collective,
    ranks: usize,
    bytes_for: &dyn Fn(&Algorithm) -> usize,
    params: &CostParams,
    dims: Option<&[usize]>,
) -> (Algorithm, usize) {
    let dims = dims.filter(|d| d.len() > 1 && dims_fit(d, ranks));
    let forced = match forced {
        Some(Ok(Algorithm::Hierarchical(d))) if d.is_empty() => match dims {
            Some(d) => Some(Algorithm::Hierarchical(d.to_vec())),
            None => {
                tracing::warn!("OXCCL_ALGO=hier, but the topology gives no hierarchy; ignored");
                None
            }
        },
        Some(Ok(a)) if a.supports(collective) => Some(a),
        Some(Ok(a)) => {
            tracing::warn!("OXCCL_ALGO={a} does not implement {collective:?}; ignored");
            None
        }
        Some(Err(e)) => {
            tracing::warn!("OXCCL_ALGO ignored: {e}");
            None
        }
        None => None,
    };
    let candidates = match &forced {
        Some(a) => vec![a.clone()],
        None => Algorithm::all(dims),
    };
    let scored: Vec<(Algorithm, usize, f64)> = candidates
        .into_iter()
        .map(|a| {
            let (k, t) = best_pipeline(&a, collective, ranks, bytes_for(&a), params);
            (a, k, t)
        })
        .collect();
    // The model is not accurate to 2%: within that margin of the cheapest, prefer the earlier
    // algorithm of the list (the ring first: each rank talks to one neighbour, so no network
    // topology makes it contend with itself).
    let cheapest = scored.iter().map(|c| c.2).fold(f64::INFINITY, f64::min);
    let best = scored
        .into_iter()
        .find(|c| c.2 <= cheapest * (1.0 + TIE_MARGIN))
        .unwrap_or((Algorithm::Ring, 1, f64::INFINITY));
    tracing::info!(
        collective = ?collective,
        ranks,
        bytes = bytes_for(&best.0),
        algorithm = %best.0,
        pipeline = best.1,
        predicted_us = best.2 * 1e6,
        forced = forced.is_some(),
        "oxccl tuner choice"
    );
    (best.0, best.1)
}

#[cfg(test)]
mod tests;
