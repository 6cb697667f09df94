//! The cluster description file: what a user writes (TOML or JSON), deserialized with serde and
//! then validated, so that every error names the field at fault.
//!
//! Units are fixed by the field names: bandwidths in GB/s (10^9 bytes per second) *per
//! direction*, latencies in microseconds. A NIC sold as "100 Gb/s" is `bandwidth_gb_s = 12.5`.
//!
//! ```toml
//! name = "example"
//! nodes = 2
//!
//! [node]
//! devices = 2                # ranks per node; vertices dev0, dev1
//! switches = ["cpu0"]        # other vertices inside a node (CPU sockets, PCIe or NVSwitches)
//! reduce_gb_s = 200.0        # gamma: bytes of reduction output per second per device
//! links = [
//!   { between = ["dev0", "dev1"], bandwidth_gb_s = 40.0, latency_us = 1.0, kind = "nvlink" },
//!   { between = ["dev0", "cpu0"], bandwidth_gb_s = 16.0, latency_us = 0.5, kind = "pcie" },
//!   { between = ["dev1", "cpu0"], bandwidth_gb_s = 16.0, latency_us = 0.5, kind = "pcie" },
//!   { between = ["cpu0", "nic0"], bandwidth_gb_s = 16.0, latency_us = 0.0, kind = "pcie" },
//! ]
//! nics = [{ bandwidth_gb_s = 12.5, latency_us = 2.0 }]   # vertices nic0, nic1, ...
//!
//! [network]                  # optional: default is one non-blocking switch
//! nodes_per_leaf = 16
//! oversubscription = 1.0
//! hop_latency_us = 0.3
//! rail_optimised = false
//! # shared_stack = { gb_s = 0.25, message_us = 40.0 }  # only for hosts emulated on one machine
//! ```

use super::SimError;
use serde::{Deserialize, Serialize};

/// A whole cluster: `nodes` identical nodes joined by a leaf/spine network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Short name, printed in tables.
    pub name: String,
    /// Free text: the hardware described and where its numbers come from.
    #[serde(default)]
    pub description: String,
    /// Number of nodes (servers). `oxccl-bench simulate --nodes N` overrides it.
    pub nodes: usize,
    pub node: NodeSpec,
    /// The network between nodes; absent means one non-blocking switch.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

/// One node: its devices, the links inside it, its NICs and its devices' reduction speed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Devices (GPUs, or CPU processes) per node, one rank each: vertices `dev0..devN`.
    pub devices: usize,
    /// Other vertices inside the node that forward traffic (CPU sockets, PCIe switches, NVSwitch).
    /// Devices and NICs never forward traffic between two other vertices.
    #[serde(default)]
    pub switches: Vec<String>,
    /// Links inside the node, each full duplex with the given bandwidth in each direction.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// The node's NICs, vertices `nic0..`; connect them to the node with `links`.
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    /// Gamma: how fast one device reduces, in GB/s of output (one received block combined
    /// into the local one).
    pub reduce_gb_s: f64,
    /// How fast one device copies, in GB/s (the `Copy` op); defaults to `reduce_gb_s`.
    #[serde(default)]
    pub copy_gb_s: Option<f64>,
    /// Ranks are CPU processes sharing the node's cores and memory (no DMA engine); absent for
    /// GPU nodes, whose copies and reductions do not compete for a host CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostSpec>,
}

/// A CPU host whose ranks do their own copies and reductions (see `host.rs` for the model
/// and its formulas).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// CPU cores the node's ranks share. With `r > cores` ranks on the node, each core runs
    /// `e = (r - cores) / cores` extra ranks on average, and every piece of a rank's CPU work
    /// (intra-node link transfers, reductions, `Copy`) takes `1 + sharing_cost * e` times as
    /// long. Absent: every rank has a core of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<usize>,
    /// What an extra rank costs the others, in cores: 1 is ideal time-sharing (a rank gets
    /// `cores / r` of a core); above 1, waiting ranks that spin and yield waste the rest.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub sharing_cost: f64,
    /// Microseconds a rank of an oversubscribed node (`r > cores`) loses per message it
    /// receives: its wait yielded the core, and the scheduler must bring it back.
    #[serde(default)]
    pub switch_us: f64,
    /// The memory system every intra-node message and reduction of the node goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySpec>,
}

/// One shared memory system with one cache level in front of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// GB/s of message and reduction bytes the node sustains when they miss the cache (DRAM).
    pub bandwidth_gb_s: f64,
    /// The shared cache (last level), in bytes.
    pub cache_bytes: u64,
    /// GB/s of message and reduction bytes when they hit the cache.
    pub cache_bandwidth_gb_s: f64,
    /// Bytes each rank touches besides its input and output buffers (staging buffers, such as
    /// the executor's shared-memory rings), counted in the working set.
    #[serde(default)]
    pub staging_bytes: u64,
}

/// A full-duplex link between two vertices of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The two vertex names (`devN`, `nicN`, or one of `switches`).
    pub between: [String; 2],
    /// GB/s in each direction (for bonded links such as 2 x NVLink, the sum).
    pub bandwidth_gb_s: f64,
    /// The part of a message's latency this link adds, in microseconds.
    pub latency_us: f64,
    /// A label for reports (`nvlink`, `pcie`, `xbus`...).
    #[serde(default = "default_link_kind")]
    pub kind: String,
}

fn default_link_kind() -> String {
    "intra".to_string()
}

/// A network adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// Line rate in GB/s per direction (100 Gb/s EDR = 12.5).
    pub bandwidth_gb_s: f64,
    /// End-to-end latency of a small message between two NICs on one leaf switch, in
    /// microseconds, as `osu_latency` would report it (software included).
    pub latency_us: f64,
}

/// A two-level leaf/spine (folded Clos, fat tree) network. The spine layer is non-blocking; a
/// leaf's uplinks carry `1 / oversubscription` of the bandwidth of the NICs below it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Nodes under one leaf switch (per rail when `rail_optimised`).
    pub nodes_per_leaf: usize,
    /// Leaf downlink to uplink bandwidth ratio, >= 1 (1 = full bisection).
    #[serde(default = "one")]
    pub oversubscription: f64,
    /// Latency added by going up to the spine and back down, in microseconds.
    #[serde(default)]
    pub hop_latency_us: f64,
    /// NIC `k` of every node hangs off rail `k`'s leaf switches (DGX SuperPOD style); otherwise
    /// all NICs of a node share the node's leaf.
    #[serde(default)]
    pub rail_optimised: bool,
    /// The CPU the nodes' network stacks share, for nodes emulated on one machine (network
    /// namespaces, as `oxccl-bench emulate` makes): every message between nodes also passes
    /// this one server. Absent (real clusters): a message between nodes costs its NICs' latency
    /// and rate only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_stack: Option<StackSpec>,
}

/// One first-come-first-served server that every message between nodes passes through on its
/// way (cut-through, like a link), shared by all nodes: the TCP stacks and proxies of hosts
/// emulated on one machine run on the same cores, so their messages queue for them together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    /// GB/s of message bytes the stack server handles, over all nodes together.
    pub gb_s: f64,
    /// Microseconds the server is busy per message, whatever its size (system calls,
    /// wake-ups and hand-offs of the proxies).
    #[serde(default)]
    pub message_us: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for HostSpec {
    fn default() -> Self {
        Self {
            cores: None,
            sharing_cost: 1.0,
            switch_us: 0.0,
            memory: None,
        }
    }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            nodes_per_leaf: usize::MAX,
            oversubscription: 1.0,
            hop_latency_us: 0.0,
            rail_optimised: false,
            shared_stack: None,
        }
    }
}

/// Bounds that keep a model's arrays (and rank ids) within reason: 4 M nodes, 2^28 link
/// directions (a few GB of per-link state).
const MAX_NODES: usize = 1 << 22;
const MAX_LINK_DIRECTIONS: usize = 1 << 28;

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SimError {
    SimError::InvalidSpec {
        field: field.into(),
        reason: reason.into(),
    }
}

fn positive(field: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

fn non_negative(field: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a finite number >= 0, got {v}"),
        ))
    }
}

impl HostSpec {
    fn validate(&self) -> Result<(), SimError> {
        if let Some(c) = self.cores {
            if c == 0 || c > 1 << 20 {
                return Err(invalid(
                    "node.host.cores",
                    format!("must be 1 to {}, got {c}", 1 << 20),
                ));
            }
        }
        non_negative("node.host.sharing_cost", self.sharing_cost)?;
        non_negative("node.host.switch_us", self.switch_us)?;
        if let Some(m) = &self.memory {
            positive("node.host.memory.bandwidth_gb_s", m.bandwidth_gb_s)?;
            positive(
                "node.host.memory.cache_bandwidth_gb_s",
                m.cache_bandwidth_gb_s,
            )?;
        }
        Ok(())
    }
}

/// Vertex kinds of a node's graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vertex {
    Device(usize),
    Nic(usize),
    Switch(usize),
}

impl ClusterSpec {
    /// Checks every value a file can get wrong; the error names the field (`node.links[2].
    /// bandwidth_gb_s`) and says why.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(invalid(
                "nodes",
                format!("must be 1 to {MAX_NODES}, got {}", self.nodes),
            ));
        }
        let n = &self.node;
        if n.devices == 0 {
            return Err(invalid("node.devices", "must be at least 1"));
        }
        if n.devices > 4096
            || n.nics.len() > 4096
            || n.switches.len() > 4096
            || n.links.len() > 65536
        {
            return Err(invalid(
                "node",
                "more than 4096 devices, NICs or switches, or 65536 links, per node",
            ));
        }
        let link_dirs = 2 * (n.links.len() + n.nics.len());
        if self.nodes.saturating_mul(link_dirs) > MAX_LINK_DIRECTIONS {
            return Err(invalid(
                "nodes",
                format!(
                    "{} nodes x {link_dirs} link directions exceeds the model's {MAX_LINK_DIRECTIONS}",
                    self.nodes
                ),
            ));
        }
        positive("node.reduce_gb_s", n.reduce_gb_s)?;
        if let Some(c) = n.copy_gb_s {
            positive("node.copy_gb_s", c)?;
        }
        if let Some(h) = &n.host {
            h.validate()?;
        }
        for (i, s) in n.switches.iter().enumerate() {
            if parse_builtin(s).is_some() {
                return Err(invalid(
                    format!("node.switches[{i}]"),
                    format!("`{s}` clashes with a device or NIC name"),
                ));
            }
            if n.switches[..i].contains(s) {
                return Err(invalid(
                    format!("node.switches[{i}]"),
                    format!("`{s}` named twice"),
                ));
            }
        }
        for (i, l) in n.links.iter().enumerate() {
            let f = format!("node.links[{i}]");
            positive(&format!("{f}.bandwidth_gb_s"), l.bandwidth_gb_s)?;
            non_negative(&format!("{f}.latency_us"), l.latency_us)?;
            for end in &l.between {
                self.vertex(end)
                    .map_err(|reason| invalid(format!("{f}.between"), reason))?;
            }
            if l.between[0] == l.between[1] {
                return Err(invalid(
                    format!("{f}.between"),
                    "a link joins two different vertices",
                ));
            }
        }
        for (i, nic) in n.nics.iter().enumerate() {
            positive(
                &format!("node.nics[{i}].bandwidth_gb_s"),
                nic.bandwidth_gb_s,
            )?;
            non_negative(&format!("node.nics[{i}].latency_us"), nic.latency_us)?;
        }
        if self.nodes > 1 && n.nics.is_empty() {
            return Err(invalid(
                "node.nics",
                "a cluster of more than one node needs at least one NIC per node",
            ));
        }
        if let Some(net) = &self.network {
            if net.nodes_per_leaf == 0 {
                return Err(invalid("network.nodes_per_leaf", "must be at least 1"));
            }
            positive("network.oversubscription", net.oversubscription)?;
            if net.oversubscription < 1.0 {
                return Err(invalid(
                    "network.oversubscription",
                    format!(
                        "must be >= 1 (downlink : uplink), got {}",
                        net.oversubscription
                    ),
                ));
            }
            non_negative("network.hop_latency_us", net.hop_latency_us)?;
            if let Some(st) = &net.shared_stack {
                positive("network.shared_stack.gb_s", st.gb_s)?;
                non_negative("network.shared_stack.message_us", st.message_us)?;
            }
        }
        Ok(())
    }

    /// Resolves a vertex name of the node graph.
    pub(crate) fn vertex(&self, name: &str) -> Result<Vertex, String> {
        let n = &self.node;
        match parse_builtin(name) {
            Some(Vertex::Device(d)) if d < n.devices => Ok(Vertex::Device(d)),
            Some(Vertex::Nic(k)) if k < n.nics.len() => Ok(Vertex::Nic(k)),
            Some(_) => Err(format!(
                "`{name}` is out of range ({} devices, {} NICs per node)",
                n.devices,
                n.nics.len()
            )),
            None => n
                .switches
                .iter()
                .position(|s| s == name)
                .map(Vertex::Switch)
                .ok_or_else(|| {
                    format!("unknown vertex `{name}` (not devN, nicN or one of node.switches)")
                }),
        }
    }

    /// `nodes` single-device nodes on one non-blocking switch: the flat tier of the textbook
    /// alpha-beta-gamma model. Each NIC has `bandwidth_gb_s` per direction and the end-to-end
    /// latency `latency_us`; devices reduce at `reduce_gb_s`.
    pub fn flat(
        name: &str,
        nodes: usize,
        bandwidth_gb_s: f64,
        latency_us: f64,
        reduce_gb_s: f64,
    ) -> Self {
        Self {
            name: name.to_string(),
            description: format!(
                "{nodes} nodes x 1 device, {bandwidth_gb_s} GB/s, {latency_us} us, one switch"
            ),
            nodes,
            node: NodeSpec {
                devices: 1,
                switches: Vec::new(),
                // The device-to-NIC hop is modelled as free: the NIC is the only bottleneck.
                links: vec![LinkSpec {
                    between: ["dev0".into(), "nic0".into()],
                    bandwidth_gb_s: 1e6,
                    latency_us: 0.0,
                    kind: "host".into(),
                }],
                nics: vec![NicSpec {
                    bandwidth_gb_s,
                    latency_us,
                }],
                reduce_gb_s,
                copy_gb_s: None,
                host: None,
            },
            network: None,
        }
    }

    /// Total devices (ranks) in the cluster.
    pub fn devices(&self) -> usize {
        self.nodes * self.node.devices
    }
}

fn parse_builtin(name: &str) -> Option<Vertex> {
    if let Some(d) = name.strip_prefix("dev") {
        return d.parse().ok().map(Vertex::Device);
    }
    if let Some(k) = name.strip_prefix("nic") {
        return k.parse().ok().map(Vertex::Nic);
    }
    None
}
