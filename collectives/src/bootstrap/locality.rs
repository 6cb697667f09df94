//! Where a rank runs: each rank loads its host's map with `oxccl-topo` (discovered from sysfs,
//! or `OXCCL_TOPO_FILE` as NCCL reads `NCCL_TOPO_FILE`), optionally pins itself
//! (`OXCCL_BIND`), maps its CPU affinity onto the map (package, NUMA node, cores, the GPUs
//! and NICs near it), and publishes that in the store; every rank then holds the whole
//! communicator's [`Topology`].
//!
//! A rank's NUMA node is the one that holds all the CPUs it may run on, as hwloc and NCCL
//! read it from the CPU binding: bind ranks with the launcher (`mpirun --bind-to numa`,
//! `srun --cpu-bind`, `numactl`, `taskset`) or with `OXCCL_BIND`. A test can thus give ranks
//! NUMA nodes of a made-up host: an `OXCCL_TOPO_FILE` whose NUMA nodes hold CPUs this machine
//! has, and `OXCCL_BIND=numa` (or `taskset`).

use super::affinity;
use super::store::StoreClient;
use crate::error::{Error, Result};
use crate::map::{Locality, Topology};
use crate::options::{Bind, Options};
use oxccl_topo::sources::{self, Loaded};
use oxccl_topo::{CpuSet, ObjType};
use std::time::Instant;

/// Ranks share memory when they agree on this: same kernel boot, hostname, network and pid
/// namespaces (two network namespaces on one machine count as two hosts).
pub(crate) fn host_id() -> String {
    let link = |p: &str| {
        std::fs::read_link(p)
            .map(|s| s.display().to_string())
            .unwrap_or_default()
    };
    format!(
        "{}/{}/{}/{}",
        hostname(),
        read_trimmed("/proc/sys/kernel/random/boot_id"),
        link("/proc/self/ns/net"),
        link("/proc/self/ns/pid")
    )
}

fn read_trimmed(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

/// This host's map: `OXCCL_TOPO_FILE` (a file in any format `oxccl-topo` reads, or a synthetic
/// string), else discovered from sysfs. Returns the map and where it came from.
pub fn load_host_map(topo_file: Option<&str>) -> Result<(oxccl_topo::Topology, String)> {
    match topo_file {
        Some(f) => match sources::load(f) {
            Ok(Loaded::Topology(t)) => Ok((*t, f.to_string())),
            Ok(Loaded::Matrix(_)) => Err(Error::Env(format!(
                "OXCCL_TOPO_FILE={f}: an nvidia-smi matrix is not a whole topology"
            ))),
            Err(e) => Err(Error::Env(format!("OXCCL_TOPO_FILE: {e}"))),
        },
        None => oxccl_topo::Topology::discover()
            .map(|t| (t, "sysfs".to_string()))
            .map_err(|e| Error::Env(format!("discovering this host's topology: {e}"))),
    }
}

fn and(a: &CpuSet, b: &CpuSet) -> CpuSet {
    let mut out = CpuSet::new();
    for c in a.iter().filter(|&c| b.is_set(c)) {
        out.set(c);
    }
    out
}

/// The CPUs the `index`-th of a host's `count` ranks pins itself to under `bind`, among the
/// `allowed` ones (its affinity before binding); `None` for [`Bind::None`].
pub fn bind_target(
    map: &oxccl_topo::Topology,
    allowed: &CpuSet,
    bind: Bind,
    index: usize,
    count: usize,
) -> Result<Option<CpuSet>> {
    let kind = match bind {
        Bind::None => return Ok(None),
        Bind::Numa => ObjType::NUMANode,
        // A map without cores (a synthetic `numa:2 pu:4`) binds to PUs.
        Bind::Core if map.count(ObjType::Core) > 0 => ObjType::Core,
        Bind::Core => ObjType::PU,
    };
    let places: Vec<CpuSet> = map
        .objects_of_type(kind)
        .into_iter()
        .map(|o| and(&map.obj(o).cpuset, allowed))
        .filter(|c| !c.is_empty())
        .collect();
    if places.is_empty() {
        return Err(Error::Env(format!(
            "OXCCL_BIND={bind}: no {kind} of the map has CPUs this rank may run on ({})",
            allowed.to_list_string()
        )));
    }
    if count > places.len() && bind == Bind::Core {
        tracing::warn!(
            "OXCCL_BIND=core: {count} ranks on this host share {} cores",
            places.len()
        );
    }
    let count = count.max(1);
    Ok(Some(
        places[index.min(count - 1) * places.len() / count].clone(),
    ))
}

/// Where a rank that may run on `cpus` runs, on `map`.
pub fn locality_on(map: &oxccl_topo::Topology, cpus: &CpuSet, source: &str) -> Locality {
    let cpus = and(cpus, &map.obj(map.root()).cpuset);
    let holding = |kind: ObjType| {
        map.objects_of_type(kind)
            .into_iter()
            .find(|&o| !cpus.is_empty() && cpus.is_subset(&map.obj(o).cpuset))
    };
    let numa = holding(ObjType::NUMANode);
    let near = numa.map_or(cpus.clone(), |n| map.obj(n).cpuset.clone());
    let devices = |list: Vec<oxccl_topo::ObjId>| {
        list.into_iter()
            .filter(|&d| map.local_cpuset(d).intersects(&near))
            .map(|d| map.device_name(d))
            .collect()
    };
    Locality {
        host: host_id(),
        hostname: hostname(),
        source: source.to_string(),
        package: holding(ObjType::Package).and_then(|o| map.obj(o).os_index),
        numa: numa.and_then(|o| map.obj(o).os_index),
        cpus: cpus.to_list_string(),
        cores: map
            .objects_of_type(ObjType::Core)
            .into_iter()
            .filter(|&o| map.obj(o).cpuset.intersects(&cpus))
            .map(|o| map.obj(o).logical_index)
            .collect(),
        gpus: devices(map.gpus()),
        nics: devices(map.nics()),
    }
}

/// Binds this rank as `options.bind` says, reports where it runs, and gathers every rank's
/// report from the store. `host_of` numbers the ranks' hosts (from the first exchange of host
/// identities); it decides which ranks share this one's cores.
pub(crate) fn exchange(
    store: &mut StoreClient,
    rank: usize,
    host_of: &[usize],
    options: &Options,
    deadline: Instant,
) -> Result<Topology> {
    let size = host_of.len();
    let local: Vec<usize> = (0..size).filter(|&q| host_of[q] == host_of[rank]).collect();
    let index = local.iter().position(|&q| q == rank).unwrap_or(0);
    let (map, source) = match load_host_map(options.topo_file.as_deref()) {
        Ok(m) => m,
        // A host whose sysfs cannot be read still runs, with its ranks' places unknown; a
        // file the user named must be right.
        Err(e) if options.topo_file.is_none() => {
            tracing::warn!("{e}; this rank's NUMA node, GPUs and NICs are unknown");
            (oxccl_topo::Topology::new(), "none".to_string())
        }
        Err(e) => return Err(e),
    };
    let mut cpus =
        affinity::current().map_err(|e| Error::io("reading this rank's CPU affinity", e))?;
    if let Some(target) = bind_target(&map, &cpus, options.bind, index, local.len())? {
        affinity::bind_process(&target).map_err(|e| {
            Error::io(
                format!(
                    "OXCCL_BIND={}: binding to CPUs {}",
                    options.bind,
                    target.to_list_string()
                ),
                e,
            )
        })?;
        cpus = target;
    }
    let me = locality_on(&map, &cpus, &source);
    tracing::info!(
        rank,
        host = me.hostname,
        map = me.source,
        package = ?me.package,
        numa = ?me.numa,
        cpus = me.cpus,
        cores = me.cores.len(),
        gpus = ?me.gpus,
        nics = ?me.nics,
        "where rank {rank} runs"
    );
    let record = serde_json::to_vec(&me).map_err(|e| Error::Env(e.to_string()))?;
    store.set(&format!("where/{rank}"), &record)?;
    let mut ranks = Vec::with_capacity(size);
    for q in 0..size {
        let v = store.wait(&format!("where/{q}"), deadline)?;
        let l: Locality = serde_json::from_slice(&v)
            .map_err(|e| Error::Env(format!("rank {q} published a bad locality record: {e}")))?;
        ranks.push(l);
    }
    let topology = Topology::new(ranks);
    if topology.host_of != host_of {
        return Err(Error::Env(
            "the ranks' host identities changed between two bootstrap rounds".into(),
        ));
    }
    if rank == 0 {
        tracing::info!("{}", topology.describe_hier());
    }
    Ok(topology)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxccl_topo::sources::synthetic;

    #[test]
    fn cpus_map_onto_package_numa_node_and_cores() {
        let m = synthetic::parse("pack:2 numa:2 core:2 pu:2").unwrap();
        // PUs 4-5 are core 2, NUMA node 1, package 0.
        let l = locality_on(&m, &CpuSet::parse_list("4-5").unwrap(), "test");
        assert_eq!(
            (l.package, l.numa, l.cores.as_slice()),
            (Some(0), Some(1), &[2][..])
        );
        assert_eq!(l.cpus, "4-5");
        // Unbound: every PU, no single NUMA node or package.
        let l = locality_on(&m, &CpuSet::parse_list("0-15").unwrap(), "test");
        assert_eq!((l.package, l.numa, l.cores.len()), (None, None, 8));
        // CPUs the map does not have are dropped.
        let l = locality_on(&m, &CpuSet::parse_list("14-40").unwrap(), "test");
        assert_eq!((l.cpus.as_str(), l.numa), ("14-15", Some(3)));
    }

    #[test]
    fn numa_binding_puts_consecutive_ranks_on_one_node() {
        let m = synthetic::parse("numa:2 core:4 pu:1").unwrap();
        let all = CpuSet::parse_list("0-7").unwrap();
        let target = |bind, i, n| {
            bind_target(&m, &all, bind, i, n)
                .unwrap()
                .map(|c| c.to_list_string())
        };
        let numa: Vec<_> = (0..4).map(|i| target(Bind::Numa, i, 4)).collect();
        assert_eq!(
            numa,
            [Some("0-3"), Some("0-3"), Some("4-7"), Some("4-7")].map(|s| s.map(String::from))
        );
        let core: Vec<_> = (0..4).map(|i| target(Bind::Core, i, 4)).collect();
        assert_eq!(core, ["0", "2", "4", "6"].map(|s| Some(s.to_string())));
        assert_eq!(target(Bind::None, 0, 4), None);
        // Only the allowed CPUs count: a rank limited to 4-7 binds within them.
        let some = CpuSet::parse_list("5-6").unwrap();
        let t = bind_target(&m, &some, Bind::Numa, 0, 2).unwrap().unwrap();
        assert_eq!(t.to_list_string(), "5-6");
        // A map whose CPUs this rank may not use is an error, not a silent no-op.
        let far = CpuSet::parse_list("100").unwrap();
        let e = bind_target(&m, &far, Bind::Numa, 0, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OXCCL_BIND=numa"), "{e}");
    }

    #[test]
    fn an_nccl_topology_file_gives_the_gpus_and_nics_near_a_rank() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/two-numa-gpus.nccl.xml"
        );
        let (m, _) = load_host_map(Some(file)).unwrap();
        let on = |cpus: &str| locality_on(&m, &CpuSet::parse_list(cpus).unwrap(), file);
        let l = on("5");
        assert_eq!((l.numa, l.cpus.as_str()), (Some(1), "5"));
        assert_eq!(
            (l.gpus, l.nics),
            (vec!["cuda1".to_string()], vec!["mlx5_1".to_string()])
        );
        let l = on("0-3");
        assert_eq!(
            (l.numa, l.gpus, l.nics),
            (Some(0), vec!["cuda0".into()], vec!["mlx5_0".into()])
        );
        // Unbound: no NUMA node, and every device is near one of its CPUs.
        let l = on("0-7");
        assert_eq!((l.numa, l.gpus.len(), l.nics.len()), (None, 2, 2));
    }

    #[test]
    fn bad_topology_files_are_clear_errors() {
        let e = load_host_map(Some("/nonexistent/topo.xml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("OXCCL_TOPO_FILE") && e.contains("/nonexistent/topo.xml"),
            "{e}"
        );
        let (m, source) = load_host_map(Some("numa:2 pu:2")).unwrap();
        assert_eq!(
            (m.count(ObjType::NUMANode), source.as_str()),
            (2, "numa:2 pu:2")
        );
    }
}
