//! The communicator's map: where every rank runs (host, package, NUMA node, cores, the GPUs
//! and NICs near it), as each rank reported it at bootstrap from `oxccl-topo`'s view of its
//! host, and the decisions taken from it: the fabric between two ranks ([`fabric_for`], NCCL's
//! `canConnect(topo, peer)` asked of each transport in order of preference), the dims of the
//! hierarchical all-reduce ([`Topology::layout`]: ranks per NUMA node x NUMA nodes per host x
//! hosts) and the tuner's tiers ([`tiers`]), so the three cannot disagree.

use crate::error::{Error, Result};
use crate::options::{NetChoice, Options, TransportChoice};
use crate::tuner::LinkParams;
use serde::{Deserialize, Serialize};

/// Where one rank runs, as it reports it at bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locality {
    /// Host identity: ranks share memory when theirs are equal (kernel boot id, hostname,
    /// network and pid namespaces; two network namespaces of one machine are two hosts).
    pub host: String,
    /// The hostname, for messages.
    pub hostname: String,
    /// Where the host's map came from: `sysfs`, the `OXCCL_TOPO_FILE` value, or `none`.
    pub source: String,
    /// OS index of the package (socket) that holds all of the rank's CPUs, if one does.
    pub package: Option<u32>,
    /// OS index of the NUMA node that holds all of the rank's CPUs, if one does (an unbound
    /// rank on a host of several NUMA nodes has none).
    pub numa: Option<u32>,
    /// The PUs of the map the rank may run on (its CPU affinity), as a list such as `0-3,8`.
    pub cpus: String,
    /// The cores of those PUs (logical indexes in the map).
    pub cores: Vec<u32>,
    /// GPUs local to the rank's NUMA node (to its CPUs when it has none), named as
    /// `oxccl-topo` names devices (`cuda0`, a PCI address).
    pub gpus: Vec<String>,
    /// NICs local to the rank's NUMA node (to its CPUs when it has none): `mlx5_0`, `eth0`.
    pub nics: Vec<String>,
}

/// The map of a communicator: every rank's [`Locality`], and hosts numbered in order of their
/// lowest rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Host index of every rank (hosts numbered in order of their lowest rank).
    pub host_of: Vec<usize>,
    /// What each rank reported.
    pub ranks: Vec<Locality>,
}

/// The levels of the map the hierarchical all-reduce can use, innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub ranks_per_numa: usize,
    pub numa_per_host: usize,
    pub hosts: usize,
    /// Why the NUMA level is not used (it is then 1), when the ranks' NUMA nodes are unknown
    /// or irregular.
    pub numa_note: Option<String>,
}

impl Layout {
    /// The hierarchy's dims, fastest-varying first, levels of size 1 dropped.
    pub fn dims(&self) -> Vec<usize> {
        [self.ranks_per_numa, self.numa_per_host, self.hosts]
            .into_iter()
            .filter(|&d| d > 1)
            .collect()
    }

    /// `2 ranks per NUMA node x 2 NUMA nodes`, the kept levels in words.
    pub fn describe(&self) -> String {
        let numa_unit = if self.numa_note.is_some() {
            "per host"
        } else {
            "per NUMA node"
        };
        let words = [
            (self.ranks_per_numa, "ranks", numa_unit),
            (self.numa_per_host, "NUMA nodes", ""),
            (self.hosts, "hosts", ""),
        ];
        let kept: Vec<String> = words
            .iter()
            .filter(|w| w.0 > 1)
            .map(|(n, what, unit)| {
                format!("{n} {what}{}{unit}", if unit.is_empty() { "" } else { " " })
            })
            .collect();
        if kept.is_empty() {
            "one rank".into()
        } else {
            kept.join(" x ")
        }
    }
}

impl Topology {
    /// The map of ranks that reported `ranks`, hosts numbered by lowest rank.
    pub fn new(ranks: Vec<Locality>) -> Self {
        let mut hosts: Vec<&str> = Vec::new();
        let host_of = ranks
            .iter()
            .map(|l| match hosts.iter().position(|h| *h == l.host) {
                Some(i) => i,
                None => {
                    hosts.push(&l.host);
                    hosts.len() - 1
                }
            })
            .collect();
        Self { host_of, ranks }
    }

    /// `n` thread ranks of this process: one host, NUMA nodes unknown.
    pub(crate) fn one_process(n: usize) -> Self {
        let me = Locality {
            host: format!("process {}", std::process::id()),
            source: "none".into(),
            ..Locality::default()
        };
        Self::new(vec![me; n])
    }

    pub fn size(&self) -> usize {
        self.host_of.len()
    }

    pub fn hosts(&self) -> usize {
        self.host_of.iter().max().map_or(0, |&h| h + 1)
    }

    /// Ranks on `host`, ascending.
    pub fn ranks_on(&self, host: usize) -> Vec<usize> {
        (0..self.size())
            .filter(|&r| self.host_of[r] == host)
            .collect()
    }

    /// How many cores the ranks of `host` can run on together: the union of their reported
    /// masks (0 where none reported one).
    pub fn cores_on(&self, host: usize) -> usize {
        let ranks = self.ranks_on(host);
        let cores: std::collections::BTreeSet<u32> = (ranks.iter())
            .flat_map(|&r| self.ranks[r].cores.iter().copied())
            .collect();
        cores.len()
    }

    pub fn same_host(&self, a: usize, b: usize) -> bool {
        self.host_of[a] == self.host_of[b]
    }

    /// The map's levels for the hierarchical all-reduce: ranks per NUMA node x NUMA nodes per
    /// host x hosts. Hosts must hold the same number of consecutive ranks (otherwise an error
    /// that says why); the NUMA level is used when every rank lies within one NUMA node and
    /// every host has the same number of NUMA nodes with the same number of consecutive ranks
    /// each (otherwise it is 1 and [`Layout::numa_note`] says why).
    pub fn layout(&self) -> std::result::Result<Layout, String> {
        let p = self.size();
        let hosts = self.hosts();
        if p == 0 {
            return Err("no ranks".into());
        }
        if p % hosts != 0 {
            return Err(format!(
                "{p} ranks do not divide evenly over {hosts} hosts (ranks per host: {:?})",
                (0..hosts)
                    .map(|h| self.ranks_on(h).len())
                    .collect::<Vec<_>>()
            ));
        }
        let per_host = p / hosts;
        // Hosts are numbered by lowest rank, so "consecutive blocks" means host h holds ranks
        // h*per_host..(h+1)*per_host.
        if let Some(r) = (0..p).find(|&r| self.host_of[r] != r / per_host) {
            return Err(format!(
                "the ranks of a host are not consecutive (rank {r} is on host {} of {hosts}; \
                 a launcher that fills each host in turn, like mpirun --map-by slot, places them so)",
                self.host_of[r]
            ));
        }
        let (ranks_per_numa, numa_per_host, numa_note) = match self.numa_level(per_host) {
            Ok((per, n)) => (per, n, None),
            Err(why) => (per_host, 1, Some(why)),
        };
        Ok(Layout {
            ranks_per_numa,
            numa_per_host,
            hosts,
            numa_note,
        })
    }

    /// (ranks per NUMA node, NUMA nodes per host), given that hosts are regular blocks.
    fn numa_level(&self, per_host: usize) -> std::result::Result<(usize, usize), String> {
        let p = self.size();
        if let Some(r) = (0..p).find(|&r| self.ranks[r].cpus.is_empty()) {
            return Err(format!(
                "rank {r}'s NUMA node is unknown (no map: thread ranks, or CPUs outside \
                 OXCCL_TOPO_FILE's)"
            ));
        }
        if let Some(r) = (0..p).find(|&r| self.ranks[r].numa.is_none()) {
            return Err(format!(
                "rank {r} is not within one NUMA node (CPUs {:?}; bind ranks with OXCCL_BIND=numa \
                 or the launcher to use the NUMA level)",
                self.ranks[r].cpus
            ));
        }
        let mut shape = None;
        for first in (0..p).step_by(per_host) {
            let block = &self.ranks[first..first + per_host];
            // NUMA nodes of this host in order of their lowest rank; each must hold one
            // consecutive run of ranks.
            let mut nodes: Vec<u32> = Vec::new();
            for (i, l) in block.iter().enumerate() {
                let n = l.numa.unwrap_or_default();
                if nodes.last() != Some(&n) {
                    if nodes.contains(&n) {
                        return Err(format!(
                            "the ranks of NUMA node {n} on host {} are not consecutive (rank {})",
                            self.host_of[first],
                            first + i
                        ));
                    }
                    nodes.push(n);
                }
            }
            let counts: Vec<usize> = nodes
                .iter()
                .map(|n| block.iter().filter(|l| l.numa == Some(*n)).count())
                .collect();
            if counts.iter().any(|&c| c != counts[0]) {
                return Err(format!(
                    "host {}'s NUMA nodes hold different numbers of ranks ({counts:?})",
                    self.host_of[first]
                ));
            }
            let this = (counts[0], nodes.len());
            match shape {
                None => shape = Some(this),
                Some(s) if s != this => {
                    return Err(format!(
                        "hosts differ: {} ranks on each of {} NUMA nodes on host 0, {} on each of \
                         {} on host {}",
                        s.0, s.1, this.0, this.1, self.host_of[first]
                    ))
                }
                Some(_) => {}
            }
        }
        shape.ok_or_else(|| "no ranks".into())
    }

    /// Dims for the hierarchical all-reduce, fastest-varying first, from [`Topology::layout`];
    /// `None` when the map gives fewer than two levels of more than one.
    pub fn hier_dims(&self) -> Option<Vec<usize>> {
        self.hier().ok()
    }

    /// [`Topology::hier_dims`], or why the map gives no hierarchy.
    pub fn hier(&self) -> std::result::Result<Vec<usize>, String> {
        let layout = self.layout()?;
        let dims = layout.dims();
        if dims.len() < 2 {
            let mut why = format!("the map has one level only ({})", layout.describe());
            if let Some(note) = layout.numa_note {
                why.push_str(&format!("; NUMA level unused: {note}"));
            }
            return Err(why);
        }
        Ok(dims)
    }

    /// One line for the log: the dims `hier` gets and from which levels, or why none.
    pub fn describe_hier(&self) -> String {
        match (self.hier(), self.layout()) {
            (Ok(dims), Ok(layout)) => {
                let mut s = format!(
                    "hier dims {} from the map: {}",
                    dims_text(&dims),
                    layout.describe()
                );
                if let Some(note) = layout.numa_note {
                    s.push_str(&format!(" (NUMA level unused: {note})"));
                }
                s
            }
            (Err(why), _) | (_, Err(why)) => format!("no hier dims from the map: {why}"),
        }
    }
}

/// `2x2`.
pub fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// A way to link two ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fabric {
    /// Shared-memory rings.
    Shm,
    /// The network fabric (`OXCCL_NET`).
    Net(NetChoice),
}

impl Fabric {
    /// NCCL's `canConnect`: whether this fabric can join ranks `a` and `b` on `map`. Shared
    /// memory needs one host; a network fabric reaches any rank (its listener's address is on
    /// the interface that reaches rank 0).
    pub fn can_connect(self, map: &Topology, a: usize, b: usize) -> bool {
        match self {
            Fabric::Shm => map.same_host(a, b),
            Fabric::Net(_) => true,
        }
    }

    /// The fabrics to ask, best first (`OXCCL_TRANSPORT`, `OXCCL_NET`).
    pub fn preference(options: &Options) -> Vec<Fabric> {
        let net = Fabric::Net(options.net);
        match options.transport {
            TransportChoice::Auto => vec![Fabric::Shm, net],
            TransportChoice::Shm => vec![Fabric::Shm],
            TransportChoice::Tcp => vec![net],
        }
    }

    /// The cost model's parameters for this fabric (order of magnitude, until measured).
    pub fn params(self) -> LinkParams {
        match self {
            Fabric::Shm => LinkParams::SHM,
            Fabric::Net(NetChoice::Tcp) => LinkParams::TCP,
            Fabric::Net(NetChoice::Rdma) => LinkParams::INFINIBAND_EDR,
        }
    }
}

/// The fabric that links ranks `a` and `b`: the first of [`Fabric::preference`] that
/// [can connect](Fabric::can_connect) them on `map`.
pub fn fabric_for(map: &Topology, options: &Options, a: usize, b: usize) -> Result<Fabric> {
    let choices = Fabric::preference(options);
    choices
        .iter()
        .copied()
        .find(|f| f.can_connect(map, a, b))
        .ok_or_else(|| {
            Error::Env(format!(
                "OXCCL_TRANSPORT={:?}: none of {choices:?} can connect rank {a} (host {:?}) and \
                 rank {b} (host {:?}); shm joins the ranks of one host only",
                options.transport, map.ranks[a].hostname, map.ranks[b].hostname
            ))
        })
}

/// The tuner's tiers, innermost first, from the same map and fabric choice as the links: with
/// hier dims, tier `j` is the fabric between rank 0 and its neighbour along dim `j`; without,
/// the fabric within a host and, with several hosts, the one across. The same on every rank.
pub fn tiers(map: &Topology, options: &Options) -> Vec<LinkParams> {
    let link = |b: usize| {
        fabric_for(map, options, 0, b)
            .unwrap_or(Fabric::Net(options.net))
            .params()
    };
    if let Some(dims) = map.hier_dims() {
        let mut stride = 1;
        return dims
            .iter()
            .map(|d| {
                let t = link(stride);
                stride *= d;
                t
            })
            .collect();
    }
    let mut tiers = vec![match map.ranks_on(0).get(1) {
        Some(&b) => link(b),
        None => Fabric::preference(options)[0].params(),
    }];
    if let Some(b) = (0..map.size()).find(|&b| !map.same_host(0, b)) {
        tiers.push(link(b));
    }
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranks on `(host, numa)`.
    fn map(places: &[(&str, Option<u32>)]) -> Topology {
        Topology::new(
            places
                .iter()
                .map(|&(h, n)| Locality {
                    host: h.into(),
                    hostname: h.into(),
                    cpus: "0".into(),
                    numa: n,
                    ..Locality::default()
                })
                .collect(),
        )
    }

    #[test]
    fn two_numa_nodes_of_two_ranks_give_2x2() {
        let m = map(&[
            ("a", Some(0)),
            ("a", Some(0)),
            ("a", Some(1)),
            ("a", Some(1)),
        ]);
        assert_eq!(m.hier_dims(), Some(vec![2, 2]));
        assert_eq!(
            m.describe_hier(),
            "hier dims 2x2 from the map: 2 ranks per NUMA node x 2 NUMA nodes"
        );
        let o = Options::default();
        assert_eq!(tiers(&m, &o), vec![LinkParams::SHM, LinkParams::SHM]);
    }

    #[test]
    fn hosts_numa_nodes_and_ranks_give_three_levels() {
        let places: Vec<(&str, Option<u32>)> = (0..8)
            .map(|r| (if r < 4 { "a" } else { "b" }, Some((r / 2 % 2) as u32)))
            .collect();
        let m = map(&places);
        assert_eq!(m.hier_dims(), Some(vec![2, 2, 2]));
        assert!(m.describe_hier().ends_with("2 NUMA nodes x 2 hosts"));
        let t = tiers(&m, &Options::default());
        assert_eq!(t, vec![LinkParams::SHM, LinkParams::SHM, LinkParams::TCP]);
        // One rank per NUMA node: that level is dropped.
        let m = map(&[
            ("a", Some(0)),
            ("a", Some(1)),
            ("b", Some(0)),
            ("b", Some(1)),
        ]);
        assert_eq!(m.hier_dims(), Some(vec![2, 2]));
        assert!(m.describe_hier().contains("2 NUMA nodes x 2 hosts"));
    }

    #[test]
    fn unknown_or_irregular_numa_falls_back_to_hosts() {
        // Unbound ranks: the host level only, and the log says why.
        let m = map(&[("a", None), ("a", None), ("b", None), ("b", None)]);
        assert_eq!(m.hier_dims(), Some(vec![2, 2]));
        let d = m.describe_hier();
        assert!(d.contains("2 ranks per host x 2 hosts"), "{d}");
        assert!(d.contains("rank 0 is not within one NUMA node"), "{d}");
        // Round-robin over NUMA nodes: not consecutive.
        let m = map(&[
            ("a", Some(0)),
            ("a", Some(1)),
            ("a", Some(0)),
            ("a", Some(1)),
        ]);
        let why = m.hier().unwrap_err();
        assert!(why.contains("not consecutive"), "{why}");
        // 3 + 1 ranks on two NUMA nodes.
        let m = map(&[
            ("a", Some(0)),
            ("a", Some(0)),
            ("a", Some(0)),
            ("a", Some(1)),
        ]);
        assert!(m.hier().unwrap_err().contains("different numbers"));
        // Hosts of different NUMA shapes: hosts only.
        let m = map(&[
            ("a", Some(0)),
            ("a", Some(1)),
            ("b", Some(0)),
            ("b", Some(0)),
        ]);
        assert_eq!(m.hier_dims(), Some(vec![2, 2]));
        assert!(m.describe_hier().contains("hosts differ"));
    }

    #[test]
    fn irregular_hosts_give_no_hierarchy() {
        let m = map(&[("a", None), ("b", None), ("a", None), ("b", None)]);
        assert!(m.hier().unwrap_err().contains("not consecutive"));
        let m = map(&[("a", None), ("a", None), ("b", None)]);
        assert!(m.hier().unwrap_err().contains("do not divide"));
        let m = map(&[("a", Some(0)), ("a", Some(0))]);
        assert!(m
            .hier()
            .unwrap_err()
            .contains("one level only (2 ranks per NUMA node)"));
        assert_eq!(Topology::one_process(3).hier_dims(), None);
    }

    #[test]
    fn fabric_is_the_first_that_can_connect() {
        let m = map(&[("a", None), ("a", None), ("b", None)]);
        let auto = Options::default();
        assert_eq!(fabric_for(&m, &auto, 0, 1).unwrap(), Fabric::Shm);
        assert_eq!(
            fabric_for(&m, &auto, 0, 2).unwrap(),
            Fabric::Net(NetChoice::Tcp)
        );
        let net = Options {
            transport: TransportChoice::Tcp,
            net: NetChoice::Rdma,
            ..Options::default()
        };
        assert_eq!(
            fabric_for(&m, &net, 0, 1).unwrap(),
            Fabric::Net(NetChoice::Rdma)
        );
        let shm = Options {
            transport: TransportChoice::Shm,
            ..Options::default()
        };
        let e = fabric_for(&m, &shm, 1, 2).unwrap_err().to_string();
        assert!(e.contains("rank 1") && e.contains("one host only"), "{e}");
        // Without hier dims: within a host, then across.
        assert_eq!(tiers(&m, &auto), vec![LinkParams::SHM, LinkParams::TCP]);
        assert_eq!(tiers(&m, &net), vec![LinkParams::INFINIBAND_EDR; 2]);
    }
}
