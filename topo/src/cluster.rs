//! A cluster: several node topologies plus the network tiers joining them, from which a
//! hierarchical (DDL/BlueConnect-style) all-reduce takes its dimensions.
//!
//! Dimensions are listed innermost first: devices per node, nodes per leaf switch, leaf
//! switches per next tier, ... and finally how many top-tier groups there are. For 64
//! servers of 4 GPUs with 16 servers per leaf switch: `[4, 16, 4]`.

use crate::error::TopoError;
use crate::topology::Topology;
use serde::Serialize;

/// One level of the network: `fanout` children (nodes, or switches of the level below)
/// per switch, with each child's uplink bandwidth and latency.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkTier {
    /// Name for reports (`leaf`, `spine`, `EDR InfiniBand` ...).
    pub name: String,
    /// Children per switch at this tier.
    pub fanout: usize,
    /// Per-child link bandwidth in GB/s.
    pub bandwidth_gbs: f64,
    /// Per-hop latency in microseconds.
    pub latency_us: f64,
}

/// Node topologies plus network tiers.
#[derive(Clone, Debug)]
pub struct Cluster {
    nodes: Vec<Topology>,
    tiers: Vec<NetworkTier>,
    ranks_per_node: usize,
}

impl Cluster {
    /// A cluster of the given nodes. Ranks per node default to the GPU count of the first
    /// node (1 if it has none); every node must have that many GPUs (or none).
    pub fn new(nodes: Vec<Topology>, tiers: Vec<NetworkTier>) -> Result<Cluster, TopoError> {
        let first = nodes
            .first()
            .ok_or_else(|| TopoError::Invalid("a cluster needs at least one node".into()))?;
        let g = first.gpus().len();
        for (i, n) in nodes.iter().enumerate() {
            if n.gpus().len() != g {
                return Err(TopoError::Invalid(format!(
                    "node {i} has {} GPUs, node 0 has {g}: nodes must be alike",
                    n.gpus().len()
                )));
            }
        }
        for t in &tiers {
            if t.fanout == 0 {
                return Err(TopoError::Invalid(format!(
                    "tier {:?} has fanout 0",
                    t.name
                )));
            }
        }
        Ok(Cluster {
            nodes,
            tiers,
            ranks_per_node: g.max(1),
        })
    }

    /// `n` copies of one node.
    pub fn uniform(
        node: Topology,
        n: usize,
        tiers: Vec<NetworkTier>,
    ) -> Result<Cluster, TopoError> {
        Cluster::new(vec![node; n], tiers)
    }

    /// Overrides the ranks per node (for CPU ranks, e.g. one per NUMA node).
    pub fn with_ranks_per_node(mut self, r: usize) -> Result<Cluster, TopoError> {
        if r == 0 {
            return Err(TopoError::Invalid("ranks per node must be positive".into()));
        }
        self.ranks_per_node = r;
        Ok(self)
    }

    /// The node topologies.
    pub fn nodes(&self) -> &[Topology] {
        &self.nodes
    }

    /// The network tiers, leaf first.
    pub fn tiers(&self) -> &[NetworkTier] {
        &self.tiers
    }

    /// Ranks per node.
    pub fn ranks_per_node(&self) -> usize {
        self.ranks_per_node
    }

    /// Total ranks.
    pub fn world_size(&self) -> usize {
        self.ranks_per_node * self.nodes.len()
    }

    /// Hierarchical all-reduce dimensions, innermost first; their product is the world
    /// size. Dimensions of size 1 are left out (a single node gives `[ranks_per_node]`).
    /// Errors when the nodes do not fill the tiers evenly.
    pub fn dimensions(&self) -> Result<Vec<usize>, TopoError> {
        let mut dims = vec![self.ranks_per_node];
        let mut remaining = self.nodes.len();
        for t in &self.tiers {
            if remaining <= t.fanout {
                dims.push(remaining);
                remaining = 1;
                break;
            }
            if remaining % t.fanout != 0 {
                return Err(TopoError::Invalid(format!(
                    "{remaining} children do not fill tier {:?} switches of {} evenly",
                    t.name, t.fanout
                )));
            }
            dims.push(t.fanout);
            remaining /= t.fanout;
        }
        if remaining > 1 {
            dims.push(remaining);
        }
        let mut out: Vec<usize> = dims.into_iter().filter(|d| *d > 1).collect();
        if out.is_empty() {
            out.push(1);
        }
        Ok(out)
    }

    /// Bottleneck bandwidth (GB/s) inside a node: the slowest GPU pair's path, if known.
    pub fn intra_node_bandwidth(&self) -> Option<f64> {
        let t = self.nodes.first()?;
        let g = t.gpus();
        let mut best: Option<f64> = None;
        for (i, a) in g.iter().enumerate() {
            for b in &g[i + 1..] {
                if let Some(bw) = t.path_bandwidth(*a, *b) {
                    best = Some(best.map_or(bw, |x: f64| x.min(bw)));
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::synthetic;

    fn tier(name: &str, fanout: usize) -> NetworkTier {
        NetworkTier {
            name: name.into(),
            fanout,
            bandwidth_gbs: 12.5,
            latency_us: 1.0,
        }
    }

    #[test]
    fn dimensions() {
        let node = synthetic::parse("pack:2 core:2 pu:1").unwrap();
        let c = Cluster::uniform(node.clone(), 64, vec![tier("leaf", 16), tier("spine", 8)])
            .unwrap()
            .with_ranks_per_node(4)
            .unwrap();
        assert_eq!(c.dimensions().unwrap(), vec![4, 16, 4]);
        assert_eq!(c.world_size(), 256);
        let c = Cluster::uniform(node.clone(), 1, vec![tier("leaf", 16)]).unwrap();
        assert_eq!(c.dimensions().unwrap(), vec![1]);
        let c = Cluster::uniform(node.clone(), 96, vec![tier("leaf", 32), tier("spine", 4)])
            .unwrap()
            .with_ranks_per_node(8)
            .unwrap();
        assert_eq!(c.dimensions().unwrap(), vec![8, 32, 3]);
        let c = Cluster::uniform(node.clone(), 10, vec![tier("leaf", 4)]).unwrap();
        assert!(c.dimensions().is_err());
        assert!(Cluster::new(vec![], vec![]).is_err());
        assert!(Cluster::uniform(node, 2, vec![tier("bad", 0)]).is_err());
    }
}
