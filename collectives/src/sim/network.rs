//! The network model built from a [`ClusterSpec`]: every link direction of the cluster as one
//! entry of flat arrays, and routes computed on demand from small per-node tables, so a 4096-rank
//! cluster costs kilobytes and a route lookup allocates nothing.
//!
//! Inside a node, a message takes the shortest path (fewest hops, then widest bottleneck) through
//! the node's graph, forwarding only through switch vertices. Between nodes it goes from the
//! sending device to its nearest NIC, up to the leaf switch, through the spine when the two NICs
//! hang off different leaves, and down through the receiving device's nearest NIC.

use super::spec::{ClusterSpec, NetworkSpec, Vertex};
use super::SimError;

/// A route inside one node: links (local ids) and the latency they add.
#[derive(Clone, Debug, Default)]
struct LocalRoute {
    start: u32,
    len: u32,
    latency: f64,
}

/// The model a simulation runs on. Built once per cluster and node count.
#[derive(Clone, Debug)]
pub struct Network {
    spec: ClusterSpec,
    net: NetworkSpec,
    devices_per_node: usize,
    /// Seconds per byte of each link direction.
    inv_bw: Vec<f64>,
    /// Tier (index into `tiers`) of each link direction.
    tier: Vec<u16>,
    tiers: Vec<String>,
    /// Link directions per node: 2 per intra-node link, then 2 per NIC (up, down).
    per_node: usize,
    intra_links: usize,
    /// Local route tables and the link ids they index.
    route_links: Vec<u32>,
    dev_dev: Vec<LocalRoute>,
    dev_nic: Vec<(usize, LocalRoute)>,
    nic_dev: Vec<LocalRoute>,
    leaves_per_rail: usize,
    leaf_base: usize,
    reduce_s_per_byte: f64,
    copy_s_per_byte: f64,
    /// First of the per-node memory servers (one direction each), when the node has a host
    /// memory model; their cost per byte is set per simulation.
    mem_base: Option<usize>,
    /// The shared stack server (`network.shared_stack`): its link direction and the seconds it
    /// is busy per message besides its bytes.
    stack: Option<(usize, f64)>,
}

const GB: f64 = 1e9;
const US: f64 = 1e-6;

impl Network {
    /// Validates `spec` and builds the model.
    pub fn new(spec: &ClusterSpec) -> Result<Self, SimError> {
        spec.validate()?;
        let node = &spec.node;
        let net = spec.network.clone().unwrap_or_default();
        let mut tiers: Vec<String> = Vec::new();
        let mut tier_of = |name: &str| -> u16 {
            match tiers.iter().position(|t| t == name) {
                Some(i) => i as u16,
                None => {
                    tiers.push(name.to_string());
                    (tiers.len() - 1) as u16
                }
            }
        };
        // Vertices: devices, then NICs, then switches.
        let nd = node.devices;
        let nn = node.nics.len();
        let vid = |v: Vertex| match v {
            Vertex::Device(d) => d,
            Vertex::Nic(k) => nd + k,
            Vertex::Switch(s) => nd + nn + s,
        };
        let nv = nd + nn + node.switches.len();
        // adjacency: (neighbour, local directed link id, bandwidth, latency)
        let mut adj: Vec<Vec<(usize, u32, f64, f64)>> = vec![Vec::new(); nv];
        let mut local_inv_bw = Vec::new();
        let mut local_tier = Vec::new();
        for (j, l) in node.links.iter().enumerate() {
            let a = vid(spec.vertex(&l.between[0]).map_err(|r| bad_link(j, r))?);
            let b = vid(spec.vertex(&l.between[1]).map_err(|r| bad_link(j, r))?);
            let t = tier_of(&l.kind);
            let lat = l.latency_us * US;
            adj[a].push((b, 2 * j as u32, l.bandwidth_gb_s, lat));
            adj[b].push((a, 2 * j as u32 + 1, l.bandwidth_gb_s, lat));
            for _ in 0..2 {
                local_inv_bw.push(1.0 / (l.bandwidth_gb_s * GB));
                local_tier.push(t);
            }
        }
        let intra_links = local_inv_bw.len();
        let nic_tier = tier_of("nic");
        for nic in &node.nics {
            for _ in 0..2 {
                local_inv_bw.push(1.0 / (nic.bandwidth_gb_s * GB));
                local_tier.push(nic_tier);
            }
        }
        let per_node = local_inv_bw.len();
        let is_switch = |v: usize| v >= nd + nn;

        let mut route_links = Vec::new();
        let mut push_route = |path: &[(u32, f64)]| -> LocalRoute {
            let start = route_links.len() as u32;
            route_links.extend(path.iter().map(|&(l, _)| l));
            LocalRoute {
                start,
                len: path.len() as u32,
                latency: path.iter().map(|&(_, lat)| lat).sum(),
            }
        };
        let mut dev_dev = Vec::with_capacity(nd * nd);
        for a in 0..nd {
            for b in 0..nd {
                let path = if a == b {
                    Some(Vec::new())
                } else {
                    shortest_path(&adj, a, b, is_switch)
                };
                let path = path.ok_or_else(|| SimError::InvalidSpec {
                    field: "node.links".into(),
                    reason: format!("no path from dev{a} to dev{b} through switches"),
                })?;
                dev_dev.push(push_route(&path));
            }
        }
        let (mut dev_nic, mut nic_dev) = (Vec::new(), Vec::new());
        if spec.nodes > 1 {
            for d in 0..nd {
                // Nearest NIC by (hops, widest bottleneck); ties spread devices across NICs.
                let mut best: Vec<(usize, Path, PathKey)> = Vec::new();
                for k in 0..nn {
                    if let Some(p) = shortest_path(&adj, d, nd + k, is_switch) {
                        let key = path_key(&adj, d, &p);
                        match best.first() {
                            Some((_, _, bk)) if better(*bk, key) => {}
                            Some((_, _, bk)) if better(key, *bk) => best = vec![(k, p, key)],
                            _ => best.push((k, p, key)),
                        }
                    }
                }
                if best.is_empty() {
                    return Err(SimError::InvalidSpec {
                        field: "node.links".into(),
                        reason: format!("dev{d} has no path to any NIC"),
                    });
                }
                let (k, out, _) = best.swap_remove(d % best.len());
                let back = shortest_path(&adj, nd + k, d, is_switch).ok_or_else(|| {
                    SimError::InvalidSpec {
                        field: "node.links".into(),
                        reason: format!("nic{k} has no path to dev{d}"),
                    }
                })?;
                dev_nic.push((k, push_route(&out)));
                nic_dev.push(push_route(&back));
            }
        }

        let mut inv_bw = Vec::with_capacity(per_node * spec.nodes);
        let mut tier = Vec::with_capacity(per_node * spec.nodes);
        for _ in 0..spec.nodes {
            inv_bw.extend_from_slice(&local_inv_bw);
            tier.extend_from_slice(&local_tier);
        }
        let npl = net.nodes_per_leaf.min(spec.nodes).max(1);
        let leaves_per_rail = spec.nodes.div_ceil(npl);
        let rails = if net.rail_optimised { nn.max(1) } else { 1 };
        let leaf_base = inv_bw.len();
        let spine_tier = tier_of("spine");
        for rail in 0..rails {
            for leaf in 0..leaves_per_rail {
                let nodes_here = (spec.nodes - leaf * npl).min(npl) as f64;
                let nic_bw: f64 = if net.rail_optimised {
                    node.nics.get(rail).map_or(0.0, |n| n.bandwidth_gb_s)
                } else {
                    node.nics.iter().map(|n| n.bandwidth_gb_s).sum()
                };
                let up = nodes_here * nic_bw / net.oversubscription;
                for _ in 0..2 {
                    inv_bw.push(1.0 / (up.max(f64::MIN_POSITIVE) * GB));
                    tier.push(spine_tier);
                }
            }
        }
        let mut mem_base = None;
        if node.host.as_ref().is_some_and(|h| h.memory.is_some()) {
            mem_base = Some(inv_bw.len());
            let mem_tier = tier_of("memory");
            for _ in 0..spec.nodes {
                inv_bw.push(0.0);
                tier.push(mem_tier);
            }
        }
        let stack = net.shared_stack.as_ref().map(|st| {
            inv_bw.push(1.0 / (st.gb_s * GB));
            tier.push(tier_of("stack"));
            (inv_bw.len() - 1, st.message_us * US)
        });
        let copy = node.copy_gb_s.unwrap_or(node.reduce_gb_s);
        Ok(Self {
            spec: spec.clone(),
            net,
            devices_per_node: nd,
            inv_bw,
            tier,
            tiers,
            per_node,
            intra_links,
            route_links,
            dev_dev,
            dev_nic,
            nic_dev,
            leaves_per_rail,
            leaf_base,
            reduce_s_per_byte: 1.0 / (node.reduce_gb_s * GB),
            copy_s_per_byte: 1.0 / (copy * GB),
            mem_base,
            stack,
        })
    }

    /// The description this model was built from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Ranks the cluster can hold (nodes x devices per node).
    pub fn devices(&self) -> usize {
        self.spec.devices()
    }

    pub fn devices_per_node(&self) -> usize {
        self.devices_per_node
    }

    /// Number of link directions in the model.
    pub fn links(&self) -> usize {
        self.inv_bw.len()
    }

    pub(crate) fn inv_bw(&self) -> &[f64] {
        &self.inv_bw
    }

    /// Seconds per byte reduced / copied by one device.
    pub(crate) fn reduce_s_per_byte(&self) -> f64 {
        self.reduce_s_per_byte
    }

    pub(crate) fn copy_s_per_byte(&self) -> f64 {
        self.copy_s_per_byte
    }

    /// The memory server of `node`, when the nodes have a host memory model.
    pub(crate) fn memory_server(&self, node: usize) -> Option<usize> {
        self.mem_base.map(|b| b + node)
    }

    /// The shared stack server every message between nodes passes, with its seconds per
    /// message, when the cluster is emulated on one machine (`network.shared_stack`).
    pub(crate) fn stack_server(&self) -> Option<(usize, f64)> {
        self.stack
    }

    /// Whether link direction `link` is inside a node (not a NIC, spine or memory server).
    pub(crate) fn intra_node(&self, link: usize) -> bool {
        link < self.leaf_base && link % self.per_node < self.intra_links
    }

    /// Link directions per node (intra-node links, then NICs).
    pub(crate) fn per_node(&self) -> usize {
        self.per_node
    }

    /// Tier names (link kinds of the file, then `nic`, `spine`, `memory` and `stack`).
    pub fn tiers(&self) -> &[String] {
        &self.tiers
    }

    pub(crate) fn tier_of(&self, link: usize) -> usize {
        self.tier[link] as usize
    }

    fn leaf(&self, node: usize, nic: usize) -> usize {
        let rail = if self.net.rail_optimised { nic } else { 0 };
        let npl = self.net.nodes_per_leaf.min(self.spec.nodes).max(1);
        rail * self.leaves_per_rail + node / npl
    }

    /// Calls `visit` with every link direction a message from rank `a` to rank `b` crosses, in
    /// order, and returns the latency of the route in seconds.
    #[inline]
    pub(crate) fn route(&self, a: usize, b: usize, mut visit: impl FnMut(usize)) -> f64 {
        let dpn = self.devices_per_node;
        let (na, da, nb, db) = (a / dpn, a % dpn, b / dpn, b % dpn);
        let local =
            |r: &LocalRoute| &self.route_links[r.start as usize..(r.start + r.len) as usize];
        if na == nb {
            let r = &self.dev_dev[da * dpn + db];
            let base = na * self.per_node;
            for &l in local(r) {
                visit(base + l as usize);
            }
            return r.latency;
        }
        let (ka, out) = &self.dev_nic[da];
        let (kb, _) = &self.dev_nic[db];
        let back = &self.nic_dev[db];
        let (base_a, base_b) = (na * self.per_node, nb * self.per_node);
        for &l in local(out) {
            visit(base_a + l as usize);
        }
        visit(base_a + self.intra_links + 2 * ka);
        let nics = &self.spec.node.nics;
        let mut latency =
            out.latency + back.latency + 0.5 * (nics[*ka].latency_us + nics[*kb].latency_us) * US;
        let (la, lb) = (self.leaf(na, *ka), self.leaf(nb, *kb));
        if la != lb {
            visit(self.leaf_base + 2 * la);
            visit(self.leaf_base + 2 * lb + 1);
            latency += self.net.hop_latency_us * US;
        }
        visit(base_b + self.intra_links + 2 * kb + 1);
        for &l in local(back) {
            visit(base_b + l as usize);
        }
        latency
    }

    /// A readable name for a link direction, for reports.
    pub fn link_name(&self, link: usize) -> String {
        if self.stack.is_some_and(|(s, _)| s == link) {
            return "shared stack".into();
        }
        if let Some(m) = self.mem_base.filter(|&m| link >= m) {
            return format!("node{} memory", link - m);
        }
        if link >= self.leaf_base {
            let leaf = (link - self.leaf_base) / 2;
            let dir = if (link - self.leaf_base) % 2 == 0 {
                "up"
            } else {
                "down"
            };
            let (rail, l) = (leaf / self.leaves_per_rail, leaf % self.leaves_per_rail);
            return if self.net.rail_optimised {
                format!("rail{rail} leaf{l} spine {dir}")
            } else {
                format!("leaf{l} spine {dir}")
            };
        }
        let (node, local) = (link / self.per_node, link % self.per_node);
        if local >= self.intra_links {
            let k = (local - self.intra_links) / 2;
            let dir = if local % 2 == 0 { "up" } else { "down" };
            return format!("node{node} nic{k} {dir}");
        }
        let l = &self.spec.node.links[local / 2];
        let (a, b) = if local % 2 == 0 {
            (&l.between[0], &l.between[1])
        } else {
            (&l.between[1], &l.between[0])
        };
        format!("node{node} {a}->{b} ({})", l.kind)
    }
}

fn bad_link(j: usize, reason: String) -> SimError {
    SimError::InvalidSpec {
        field: format!("node.links[{j}].between"),
        reason,
    }
}

/// Links (local directed ids) of a path with the latency each adds.
type Path = Vec<(u32, f64)>;
/// (hops, bottleneck bandwidth) of a path.
type PathKey = (usize, f64);

/// (hops, bottleneck bandwidth): fewer hops first, then wider.
fn better(a: (usize, f64), b: (usize, f64)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
}

fn path_key(adj: &[Vec<(usize, u32, f64, f64)>], from: usize, path: &[(u32, f64)]) -> (usize, f64) {
    let mut bw = f64::INFINITY;
    let mut v = from;
    for &(link, _) in path {
        let &(next, _, b, _) = adj[v].iter().find(|e| e.1 == link).expect("link on path");
        bw = bw.min(b);
        v = next;
    }
    (path.len(), bw)
}

/// Widest among the shortest paths from `src` to `dst` (Dijkstra on the label (hops, -width),
/// which is monotone along a path), passing only through vertices where `transit` holds.
fn shortest_path(
    adj: &[Vec<(usize, u32, f64, f64)>],
    src: usize,
    dst: usize,
    transit: impl Fn(usize) -> bool,
) -> Option<Vec<(u32, f64)>> {
    let n = adj.len();
    let mut label: Vec<Option<(usize, f64)>> = vec![None; n];
    let mut prev: Vec<Option<(usize, u32, f64)>> = vec![None; n];
    let mut done = vec![false; n];
    label[src] = Some((0, f64::INFINITY));
    loop {
        let v = (0..n)
            .filter(|&v| !done[v] && label[v].is_some())
            .reduce(|x, y| {
                if better(label[y].unwrap_or_default(), label[x].unwrap_or_default()) {
                    y
                } else {
                    x
                }
            })?;
        done[v] = true;
        if v == dst {
            break;
        }
        if v != src && !transit(v) {
            continue;
        }
        let (hops, width) = label[v].unwrap_or_default();
        for &(w, link, bw, lat) in &adj[v] {
            let cand = (hops + 1, width.min(bw));
            if !done[w] && label[w].is_none_or(|cur| better(cand, cur)) {
                label[w] = Some(cand);
                prev[w] = Some((v, link, lat));
            }
        }
    }
    let mut path = Vec::new();
    let mut v = dst;
    while v != src {
        let (p, link, lat) = prev[v]?;
        path.push((link, lat));
        v = p;
    }
    path.reverse();
    Some(path)
}
