//! `--topology`: a cluster description from `oxccl-topo`'s [`Cluster`] view, for machines that were discovered
//! (or loaded from hwloc / NCCL XML) rather than written by hand.
//!
//! The topology gives devices per node, NICs per node, the slowest GPU-GPU path bandwidth inside
//! a node, and the network tiers (fanout, per-child bandwidth and latency). The node becomes a
//! star: every device and NIC on one switch vertex at the node's bottleneck bandwidth, which is
//! exact for NVSwitch and shared-memory nodes and conservative for NVLink meshes (write the
//! links out in a file when the mesh matters, as `bench/clusters/ddl-2017.toml` does).

use oxccl_collectives::sim::{ClusterSpec, LinkSpec, NetworkSpec, NicSpec, NodeSpec};
use oxccl_topo::{Cluster, NetworkTier};

/// What the topology does not know: how fast a device reduces, and the intra-node link's
/// bandwidth and latency when no GPU pair has a known path (a CPU-only node).
#[derive(Clone, Copy, Debug)]
pub struct TopoDefaults {
    pub reduce_gb_s: f64,
    pub intra_gb_s: f64,
    pub intra_latency_us: f64,
}

impl Default for TopoDefaults {
    fn default() -> Self {
        // A CPU node: memory-bound sums and shared-memory copies at ~10 GB/s, ~1 us latency.
        Self {
            reduce_gb_s: 10.0,
            intra_gb_s: 10.0,
            intra_latency_us: 1.0,
        }
    }
}

/// The description of a discovered cluster (validate it with `Network::new`).
pub fn spec_from_topo(name: &str, cluster: &Cluster, d: TopoDefaults) -> ClusterSpec {
    let devices = cluster.ranks_per_node();
    let tiers = cluster.tiers();
    let intra = cluster.intra_node_bandwidth().unwrap_or(d.intra_gb_s);
    // A node on a network needs a NIC even when discovery found none (a synthetic node).
    let found = cluster.nodes().first().map_or(0, |t| t.nics().len());
    let nics = if tiers.is_empty() {
        found
    } else {
        found.max(1)
    };
    let mut links: Vec<LinkSpec> = (0..devices)
        .map(|i| LinkSpec {
            between: [format!("dev{i}"), "node".into()],
            bandwidth_gb_s: intra,
            // The star's two hops add up to one intra-node latency.
            latency_us: d.intra_latency_us / 2.0,
            kind: "intra".into(),
        })
        .collect();
    links.extend((0..nics).map(|k| LinkSpec {
        between: ["node".into(), format!("nic{k}")],
        bandwidth_gb_s: intra,
        latency_us: 0.0,
        kind: "pcie".into(),
    }));
    let nic = tiers.first().map(|t| NicSpec {
        bandwidth_gb_s: t.bandwidth_gbs,
        latency_us: t.latency_us,
    });
    let network = tiers.first().map(|leaf| {
        let up = tiers.get(1);
        NetworkSpec {
            nodes_per_leaf: leaf.fanout,
            // A leaf's children bring fanout x bandwidth; its uplink carries tier 1's
            // per-child bandwidth.
            oversubscription: up.map_or(1.0, |u| {
                (leaf.fanout as f64 * leaf.bandwidth_gbs / u.bandwidth_gbs).max(1.0)
            }),
            hop_latency_us: up.map_or(0.0, |u| 2.0 * u.latency_us),
            rail_optimised: false,
            shared_stack: None,
        }
    });
    ClusterSpec {
        name: name.to_string(),
        description: format!(
            "from oxccl-topo: {} nodes x {devices} ranks, {} network tier(s)",
            cluster.nodes().len(),
            tiers.len()
        ),
        nodes: cluster.nodes().len(),
        node: NodeSpec {
            devices,
            switches: vec!["node".into()],
            links,
            nics: nic.map_or_else(Vec::new, |n| vec![n; nics]),
            reduce_gb_s: d.reduce_gb_s,
            copy_gb_s: None,
            host: None,
        },
        network,
    }
}

/// `nodes` copies of the node `input` describes (hwloc XML, NCCL topology XML, or a synthetic
/// string such as `pack:2 core:8 pu:1`), one rank per GPU (per core-less: `ranks_per_node`),
/// joined by one leaf switch of NICs at `nic_gb_s` and `nic_latency_us`.
pub fn load(
    input: &str,
    nodes: usize,
    ranks_per_node: Option<usize>,
    nic_gb_s: f64,
    nic_latency_us: f64,
) -> anyhow::Result<ClusterSpec> {
    use anyhow::Context;
    let node =
        match oxccl_topo::sources::load(input).with_context(|| format!("--topology {input}"))? {
            oxccl_topo::sources::Loaded::Topology(t) => *t,
            oxccl_topo::sources::Loaded::Matrix(_) => {
                anyhow::bail!("--topology {input}: an nvidia-smi matrix is not a whole topology")
            }
        };
    let tiers = vec![NetworkTier {
        name: "leaf".into(),
        fanout: nodes.max(1),
        bandwidth_gbs: nic_gb_s,
        latency_us: nic_latency_us,
    }];
    let mut cluster =
        Cluster::uniform(node, nodes.max(1), tiers).context("building the cluster")?;
    if let Some(r) = ranks_per_node {
        cluster = cluster.with_ranks_per_node(r).context("--ranks-per-node")?;
    }
    Ok(spec_from_topo(input, &cluster, TopoDefaults::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl_collectives::sim::Network;

    #[test]
    fn a_cluster_discovered_by_topo_becomes_a_model() {
        let node = oxccl_topo::sources::synthetic::parse("pack:2 core:2 pu:1").unwrap();
        let tier = |name: &str, fanout, bw| NetworkTier {
            name: name.into(),
            fanout,
            bandwidth_gbs: bw,
            latency_us: 1.5,
        };
        let cluster =
            Cluster::uniform(node, 8, vec![tier("leaf", 4, 12.5), tier("spine", 2, 25.0)])
                .unwrap()
                .with_ranks_per_node(2)
                .unwrap();
        let spec = spec_from_topo("synthetic", &cluster, TopoDefaults::default());
        let net = Network::new(&spec).unwrap();
        assert_eq!(net.devices(), 16);
        let n = spec.network.as_ref().unwrap();
        assert_eq!(n.nodes_per_leaf, 4);
        // 4 children x 12.5 GB/s below a 25 GB/s uplink: 2:1.
        assert!((n.oversubscription - 2.0).abs() < 1e-12);
        let spec = load("pack:1 core:4 pu:1", 4, Some(4), 12.5, 2.0).unwrap();
        assert_eq!(Network::new(&spec).unwrap().devices(), 16);
        assert!(load("pack:x", 2, None, 12.5, 2.0).is_err());
    }
}
