//! The host model: ranks that are CPU processes, as on a machine without GPUs, do their own
//! copies and reductions, so they compete for the host's cores and its one memory system.
//! Used only for nodes whose description has a [`HostSpec`] (`[node.host]`); GPU nodes, whose
//! copies are DMA and whose reductions run on the GPU, simulate exactly as without it.
//!
//! For one simulation of a schedule over a buffer of `n` bytes, with `r` of its ranks on a
//! node, the node's terms are:
//!
//! - **Time-sharing.** With `c = cores` and `r > c`, each core runs `e = (r - c) / c` extra
//!   ranks on average, and every piece of CPU work on the node (an intra-node link transfer,
//!   that is a shared-memory copy; a reduction; a `Copy`) takes `k = 1 + sharing_cost * e` times
//!   as long. `sharing_cost = 1` is ideal time-sharing (`k = r / c`: a rank gets `c / r` of a
//!   core); larger values charge what spinning and yielding waiters waste. `k = 1` for `r <= c`.
//! - **Scheduling.** On an oversubscribed node (`r > c`) a rank that waits yields its core;
//!   every message it receives costs it `switch_us` more latency: the time to get a core back.
//! - **Memory.** The node's intra-node messages and reductions all go through one FIFO server,
//!   the memory system, like a link shared by every rank of the node. Its cost per byte depends
//!   on whether the collective's working set on the node, `W = r (2 n + staging_bytes)` (each
//!   rank's input and output buffers and its staging buffers), fits the shared cache: with the
//!   hit ratio `h = min(1, cache_bytes / W)`,
//!   `t_byte = h / cache_bandwidth + (1 - h) / bandwidth`.
//!
//! A shared-memory message of `b` bytes between two ranks of a host node thus takes
//! `alpha + max(k b / B_link, b t_byte)` when alone (cut-through through its link and the
//! memory server, `+ switch_us` when oversubscribed); concurrent messages queue at the memory
//! server, so the node's copies share its bandwidth. A reduction of `b` bytes ends at
//! `max(k b gamma, b t_byte)` after it starts (its CPU work and its memory traffic overlap).

use super::spec::{HostSpec, MemorySpec};

impl HostSpec {
    /// Extra ranks per core with `ranks` ranks on the node: `max(0, (r - cores) / cores)`.
    pub fn extra_per_core(&self, ranks: usize) -> f64 {
        match self.cores {
            Some(c) if ranks > c => (ranks - c) as f64 / c as f64,
            _ => 0.0,
        }
    }

    /// How many times longer CPU work takes with `ranks` ranks on the node:
    /// `1 + sharing_cost * extra_per_core`.
    pub fn cpu_factor(&self, ranks: usize) -> f64 {
        1.0 + self.sharing_cost * self.extra_per_core(ranks)
    }

    /// Extra latency, in seconds, of each message received by a rank of a node with `ranks`
    /// ranks: `switch_us` when the node is oversubscribed (`ranks > cores`), else 0.
    pub fn switch_s(&self, ranks: usize) -> f64 {
        if self.extra_per_core(ranks) > 0.0 {
            self.switch_us * 1e-6
        } else {
            0.0
        }
    }
}

impl MemorySpec {
    /// Bytes the node's `ranks` ranks touch in a collective over `bytes`-byte buffers.
    pub fn working_set(&self, ranks: usize, bytes: u64) -> f64 {
        ranks as f64 * (2.0 * bytes as f64 + self.staging_bytes as f64)
    }

    /// Fraction of the working set that fits the cache.
    pub fn hit_ratio(&self, ranks: usize, bytes: u64) -> f64 {
        let w = self.working_set(ranks, bytes);
        if w <= self.cache_bytes as f64 {
            1.0
        } else {
            self.cache_bytes as f64 / w
        }
    }

    /// Seconds per byte of the memory server: `h / cache_bandwidth + (1 - h) / bandwidth`.
    pub fn s_per_byte(&self, ranks: usize, bytes: u64) -> f64 {
        let h = self.hit_ratio(ranks, bytes);
        h / (self.cache_bandwidth_gb_s * 1e9) + (1.0 - h) / (self.bandwidth_gb_s * 1e9)
    }
}

/// The per-node terms of one simulation (see the module docs).
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeTerms {
    /// Multiplier of CPU work (`k`).
    pub cpu: f64,
    /// Seconds added to each message a rank of the node receives.
    pub switch: f64,
    /// Seconds per byte of the node's memory server (0 when the node has none).
    pub mem: f64,
}

/// Terms of every node of a cluster of `nodes` nodes of `per_node` devices, when ranks
/// `0..ranks` run a collective over `bytes`-byte buffers.
pub(crate) fn node_terms(
    host: &HostSpec,
    nodes: usize,
    per_node: usize,
    ranks: usize,
    bytes: u64,
) -> Vec<NodeTerms> {
    (0..nodes)
        .map(|node| {
            let r = ranks.saturating_sub(node * per_node).min(per_node);
            NodeTerms {
                cpu: host.cpu_factor(r),
                switch: host.switch_s(r),
                mem: host.memory.as_ref().map_or(0.0, |m| m.s_per_byte(r, bytes)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> MemorySpec {
        MemorySpec {
            bandwidth_gb_s: 10.0,
            cache_bytes: 32 << 20,
            cache_bandwidth_gb_s: 40.0,
            staging_bytes: 1 << 20,
        }
    }

    #[test]
    fn hit_ratio_and_rate_follow_the_formula() {
        let m = mem();
        // 2 ranks x (2 x 4 MiB + 1 MiB) = 18 MiB: all in cache.
        assert_eq!(m.hit_ratio(2, 4 << 20), 1.0);
        assert!((m.s_per_byte(2, 4 << 20) - 1.0 / 40e9).abs() < 1e-24);
        // 2 x (2 x 31.5 MiB + 1 MiB) = 128 MiB: a quarter hits.
        let n = (63 << 20) / 2;
        assert!((m.hit_ratio(2, n) - 0.25).abs() < 1e-12);
        let want = 0.25 / 40e9 + 0.75 / 10e9;
        assert!((m.s_per_byte(2, n) - want).abs() / want < 1e-12);
    }

    #[test]
    fn oversubscription_scales_cpu_and_adds_switches() {
        let mut h = HostSpec {
            cores: Some(2),
            switch_us: 3.0,
            ..HostSpec::default()
        };
        // Ideal time-sharing: r / c.
        assert_eq!(h.cpu_factor(1), 1.0);
        assert_eq!(h.cpu_factor(2), 1.0);
        assert_eq!(h.cpu_factor(3), 1.5);
        assert_eq!(h.cpu_factor(4), 2.0);
        assert_eq!(h.switch_s(2), 0.0);
        assert!((h.switch_s(3) - 3e-6).abs() < 1e-18);
        assert!((h.switch_s(4) - 3e-6).abs() < 1e-18);
        h.sharing_cost = 2.0;
        assert_eq!(h.cpu_factor(3), 2.0);
        assert_eq!(h.cpu_factor(4), 3.0);
        let none = HostSpec::default();
        assert_eq!(none.cpu_factor(64), 1.0);
        assert_eq!(none.switch_s(64), 0.0);
        // Ranks fill nodes in order: 5 ranks on nodes of 4 are 4 + 1.
        let t = node_terms(&h, 3, 4, 5, 1024);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].cpu, t[1].cpu, t[2].cpu), (3.0, 1.0, 1.0));
        assert_eq!(t[2].mem, 0.0);
    }
}
