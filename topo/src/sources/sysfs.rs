//! Linux discovery from sysfs and procfs under a configurable root (`/` for this
//! machine, or a tree captured by `hwloc-gather-topology`). CPUs, caches, NUMA nodes and
//! NUMA distances here; PCI and OS devices in [`super::sysfs_io`].
//!
//! A missing or unreadable file degrades the result with a `tracing` warning; nothing here
//! panics on odd input. Known differences from hwloc: cgroup CPU restrictions are not
//! applied, and DMI memory modules (hwloc's `Misc` objects) are not reported.

use crate::bitmap::{CpuSet, NodeSet};
use crate::error::TopoError;
use crate::object::{CacheInfo, CacheType, ObjAttr, ObjId, ObjType, Object};
use crate::topology::{Distances, Topology, DIST_FROM_OS, DIST_MEANS_LATENCY};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable: keep the NUMA nodes that hold NVIDIA GPU memory (POWER9/Grace
/// coherent GPUs), which are hidden by default like hwloc does.
pub const ENV_KEEP_GPU_NUMA: &str = "OXCCL_TOPO_KEEP_GPU_NUMA";

/// Reads a sysfs tree rooted at `root`.
pub struct SysfsReader {
    root: PathBuf,
}

impl SysfsReader {
    /// A reader for the tree at `root`.
    pub fn new(root: &Path) -> Self {
        SysfsReader {
            root: root.to_path_buf(),
        }
    }

    /// The absolute path of `rel` below the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// File contents, trimmed; `None` (and a debug log) if missing.
    pub fn read(&self, rel: &str) -> Option<String> {
        let p = self.path(rel);
        match std::fs::read(&p) {
            Ok(b) => Some(
                String::from_utf8_lossy(&b)
                    .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            ),
            Err(e) => {
                tracing::debug!("{}: {e}", p.display());
                None
            }
        }
    }

    /// Like [`Self::read`] but warns when the file is missing: for files a healthy Linux has.
    pub fn read_expected(&self, rel: &str) -> Option<String> {
        let r = self.read(rel);
        if r.is_none() {
            tracing::warn!(
                "{} is missing or unreadable; topology will be incomplete",
                self.path(rel).display()
            );
        }
        r
    }

    /// A list-format CPU or node set from a file.
    pub fn read_list(&self, rel: &str) -> Option<CpuSet> {
        let s = self.read(rel)?;
        match CpuSet::parse_list(&s) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{}: {e}", self.path(rel).display());
                None
            }
        }
    }

    /// A CPU set from `NAME_list` (list form), else from `NAME_map`/`NAME` (mask form):
    /// old kernels and some architectures only have the mask.
    pub fn read_set(&self, list_rel: &str, mask_rel: &str) -> Option<CpuSet> {
        if let Some(c) = self.read_list(list_rel) {
            return Some(c);
        }
        let s = self.read(mask_rel)?;
        match crate::bitmap::Bitmap::parse_mask(&s) {
            Ok(b) => Some(CpuSet::from_bitmap(b)),
            Err(e) => {
                tracing::warn!("{}: {e}", self.path(mask_rel).display());
                None
            }
        }
    }

    /// Names of the entries of a directory, sorted.
    pub fn list_dir(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|r| {
                r.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Discovery options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Add an `nvmlN` GPU OS device (N in PCI bus order, as NVML numbers them) to each
    /// GPU the NVIDIA driver lists in `/proc/driver/nvidia/gpus`, so GPUs count as GPUs
    /// without loading NVML. hwloc's Linux backend alone does not (turn off to compare).
    pub nvidia_driver_gpus: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nvidia_driver_gpus: true,
        }
    }
}

/// Discovers the machine whose sysfs is at `root` (`/` for this one), default options.
pub fn discover(root: &Path) -> Result<Topology, TopoError> {
    discover_with(root, &Options::default())
}

/// Discovers the machine whose sysfs is at `root` with explicit options.
pub fn discover_with(root: &Path, opts: &Options) -> Result<Topology, TopoError> {
    if !root.is_dir() {
        return Err(TopoError::io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotFound, "fsroot is not a directory"),
        ));
    }
    let r = SysfsReader::new(root);
    let mut topo = Topology::new();
    let online = online_cpus(&r);
    let mut objs = cpu_objects(&r, &online);
    drop_redundant_groups(&mut objs);
    insert_by_cpuset(&mut topo, objs);
    let root_id = topo.root();
    topo.obj_mut(root_id).cpuset = online.clone();
    machine_infos(&r, &mut topo);
    let numa = numa_nodes(&r, &mut topo, &online);
    topo.finalize();
    super::sysfs_io::discover_io(&r, &mut topo, opts);
    topo.finalize();
    if let Some(d) = numa {
        topo.distances.push(d);
    }
    Ok(topo)
}

fn online_cpus(r: &SysfsReader) -> CpuSet {
    if let Some(c) = r.read_list("sys/devices/system/cpu/online") {
        if c.weight().is_some_and(|w| w <= 1 << 16) {
            return c;
        }
        tracing::warn!(
            "sys/devices/system/cpu/online lists more than 65536 CPUs; using the cpuN folders"
        );
    }
    tracing::warn!("no sys/devices/system/cpu/online; using the cpuN folders");
    let mut c = CpuSet::new();
    for name in r.list_dir("sys/devices/system/cpu") {
        if let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) {
            c.set(n);
        }
    }
    if c.is_empty() {
        tracing::warn!("no CPU found under sys/devices/system/cpu; assuming one PU");
        c.set(0);
    }
    c
}

fn and(a: &CpuSet, b: &CpuSet) -> CpuSet {
    let mut c = CpuSet::new();
    for i in a.iter().filter(|i| b.is_set(*i)) {
        c.set(i);
    }
    c
}

/// Parses sysfs cache sizes such as `32K`, `1024K`, `16M`.
fn cache_size(s: &str) -> u64 {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 1024),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().unwrap_or(0) * mul
}

fn cpu_objects(r: &SysfsReader, online: &CpuSet) -> Vec<Object> {
    let mut packages: BTreeMap<String, Object> = BTreeMap::new();
    let mut seen: BTreeMap<(ObjType, String), Object> = BTreeMap::new();
    let models = cpu_models(r);
    for cpu in online.iter() {
        let base = format!("sys/devices/system/cpu/cpu{cpu}");
        let topo_dir = format!("{base}/topology");
        let id = |f: &str| {
            r.read(&format!("{topo_dir}/{f}"))
                .and_then(|s| s.parse::<i64>().ok())
        };
        let set = |f: &str| {
            let mask = f.strip_suffix("_list").unwrap_or(f);
            r.read_set(&format!("{topo_dir}/{f}"), &format!("{topo_dir}/{mask}"))
                .map(|s| and(&s, online))
        };
        let pkg_set = set("package_cpus_list").or_else(|| set("core_siblings_list"));
        let pkg_id = id("physical_package_id").unwrap_or(0);
        match pkg_set {
            Some(ps) if !ps.is_empty() => {
                let key = ps.to_list_string();
                packages.entry(key).or_insert_with(|| {
                    let mut o = Object::new(ObjType::Package);
                    o.os_index = u32::try_from(pkg_id).ok();
                    o.cpuset = ps.clone();
                    if let Some(m) = models.get(&cpu) {
                        o.infos.push(("CPUModel".into(), m.clone()));
                    }
                    o
                });
            }
            _ => tracing::warn!("cpu{cpu}: no package information"),
        }
        let core_set = set("core_cpus_list")
            .or_else(|| set("thread_siblings_list"))
            .unwrap_or_else(|| CpuSet::single(cpu));
        let core_id = id("core_id").unwrap_or(i64::from(cpu));
        seen.entry((ObjType::Core, core_set.to_list_string()))
            .or_insert_with(|| {
                let mut o = Object::new(ObjType::Core);
                o.os_index = u32::try_from(core_id).ok();
                o.cpuset = core_set.clone();
                o
            });
        if let (Some(ds), Some(did)) = (set("die_cpus_list"), id("die_id")) {
            if did >= 0 && !ds.is_empty() {
                seen.entry((ObjType::Die, ds.to_list_string()))
                    .or_insert_with(|| {
                        let mut o = Object::new(ObjType::Die);
                        o.os_index = u32::try_from(did).ok();
                        o.cpuset = ds.clone();
                        o
                    });
            }
        }
        if let Some(cs) = set("cluster_cpus_list") {
            if !cs.is_empty() {
                seen.entry((ObjType::Group, cs.to_list_string()))
                    .or_insert_with(|| {
                        let mut o = Object::new(ObjType::Group);
                        o.cpuset = cs.clone();
                        o.subtype = Some("Cluster".into());
                        o.attr = ObjAttr::Group {
                            kind: 2,
                            subkind: 0,
                        };
                        o
                    });
            }
        }
        for idx in r.list_dir(&format!("{base}/cache")) {
            if !idx.starts_with("index") {
                continue;
            }
            let cd = format!("{base}/cache/{idx}");
            let Some(level) = r
                .read(&format!("{cd}/level"))
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let ct = match r.read(&format!("{cd}/type")).as_deref() {
                Some("Data") => CacheType::Data,
                Some("Instruction") => CacheType::Instruction,
                _ => CacheType::Unified,
            };
            let Some(kind) = ObjType::cache(level, ct) else {
                continue;
            };
            let shared = r
                .read_set(
                    &format!("{cd}/shared_cpu_list"),
                    &format!("{cd}/shared_cpu_map"),
                )
                .map(|s| and(&s, online))
                .unwrap_or_else(|| CpuSet::single(cpu));
            if shared.is_empty() {
                continue;
            }
            seen.entry((kind, shared.to_list_string()))
                .or_insert_with(|| {
                    let mut o = Object::new(kind);
                    o.cpuset = shared.clone();
                    o.attr = ObjAttr::Cache(CacheInfo {
                        size: r
                            .read(&format!("{cd}/size"))
                            .map(|s| cache_size(&s))
                            .unwrap_or(0),
                        depth: level,
                        linesize: r
                            .read(&format!("{cd}/coherency_line_size"))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        associativity: r
                            .read(&format!("{cd}/ways_of_associativity"))
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0),
                        cache_type: ct,
                    });
                    o
                });
        }
        let mut pu = Object::new(ObjType::PU).with_os_index(cpu);
        pu.cpuset = CpuSet::single(cpu);
        seen.insert((ObjType::PU, cpu.to_string()), pu);
    }
    let pkg_sets: Vec<CpuSet> = packages.values().map(|p| p.cpuset.clone()).collect();
    let mut out: Vec<Object> = packages.into_values().collect();
    // A die spanning its whole package adds nothing (hwloc only shows smaller dies).
    out.extend(
        seen.into_values()
            .filter(|o| !(o.kind == ObjType::Die && pkg_sets.contains(&o.cpuset))),
    );
    out
}

/// hwloc merges a Group with any object of the same CPUs, and a one-core cluster is no group.
fn drop_redundant_groups(objs: &mut Vec<Object>) {
    let others: Vec<CpuSet> = objs
        .iter()
        .filter(|o| o.kind != ObjType::Group)
        .map(|o| o.cpuset.clone())
        .collect();
    objs.retain(|o| o.kind != ObjType::Group || !others.contains(&o.cpuset));
}

/// CPU model per PU from `/proc/cpuinfo` (`model name` on x86, `cpu` on POWER).
fn cpu_models(r: &SysfsReader) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let Some(text) = r.read("proc/cpuinfo") else {
        tracing::warn!("no proc/cpuinfo; CPU models unknown");
        return out;
    };
    let mut cur: Option<u32> = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "processor" => cur = v.parse().ok(),
            "model name" | "cpu" => {
                if let Some(c) = cur {
                    out.insert(c, v.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

fn type_order(t: ObjType) -> usize {
    const ORDER: [ObjType; 14] = [
        ObjType::Machine,
        ObjType::Package,
        ObjType::Die,
        ObjType::L5Cache,
        ObjType::L4Cache,
        ObjType::L3Cache,
        ObjType::Group,
        ObjType::L2Cache,
        ObjType::L2iCache,
        ObjType::L1Cache,
        ObjType::L1iCache,
        ObjType::L3iCache,
        ObjType::Core,
        ObjType::PU,
    ];
    ORDER.iter().position(|x| *x == t).unwrap_or(ORDER.len())
}

/// Inserts objects under the smallest existing object containing their CPUs; larger sets
/// and, for equal sets, higher types go first, so parents exist before children.
pub(crate) fn insert_by_cpuset(topo: &mut Topology, mut objs: Vec<Object>) {
    objs.sort_by_key(|o| {
        (
            std::cmp::Reverse(o.cpuset.weight().unwrap_or(usize::MAX)),
            type_order(o.kind),
            o.cpuset.first(),
        )
    });
    for o in objs {
        let mut cur = topo.root();
        loop {
            let next = topo
                .obj(cur)
                .children
                .iter()
                .copied()
                .find(|c| o.cpuset.is_subset(&topo.obj(*c).cpuset));
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        topo.add(cur, o);
    }
    // Children in CPU order, as hwloc lists them.
    let ids: Vec<ObjId> = topo.iter().map(|(i, _)| i).collect();
    for id in ids {
        let mut kids = topo.obj(id).children.clone();
        kids.sort_by_key(|k| topo.obj(*k).cpuset.first());
        topo.obj_mut(id).children = kids;
    }
}

fn machine_infos(r: &SysfsReader, topo: &mut Topology) {
    let root = topo.root();
    let mut infos = vec![
        ("Backend".to_string(), "Linux".to_string()),
        ("OSName".into(), "Linux".into()),
    ];
    for (file, name) in [
        ("sys/class/dmi/id/product_name", "DMIProductName"),
        ("sys/class/dmi/id/sys_vendor", "DMISysVendor"),
        ("sys/class/dmi/id/board_name", "DMIBoardName"),
        ("proc/sys/kernel/osrelease", "OSRelease"),
        ("proc/sys/kernel/hostname", "HostName"),
    ] {
        if let Some(v) = r.read(file) {
            infos.push((name.into(), v));
        }
    }
    topo.obj_mut(root).infos.extend(infos);
}

/// NUMA nodes whose memory belongs to an NVIDIA GPU (listed by the driver).
fn gpu_numa_nodes(r: &SysfsReader) -> Vec<u32> {
    let mut v = Vec::new();
    for gpu in r.list_dir("proc/driver/nvidia/gpus") {
        if let Some(st) = r.read(&format!("proc/driver/nvidia/gpus/{gpu}/numa_status")) {
            for line in st.lines() {
                if let Some(n) = line
                    .strip_prefix("Node:")
                    .and_then(|n| n.trim().parse().ok())
                {
                    v.push(n);
                }
            }
        }
    }
    v
}

fn numa_nodes(r: &SysfsReader, topo: &mut Topology, online: &CpuSet) -> Option<Distances> {
    let mut nodes: Vec<u32> = r
        .list_dir("sys/devices/system/node")
        .iter()
        .filter_map(|n| n.strip_prefix("node").and_then(|x| x.parse().ok()))
        .collect();
    nodes.sort_unstable();
    let keep_gpu = std::env::var(ENV_KEEP_GPU_NUMA).is_ok_and(|v| v == "1");
    if !keep_gpu {
        let hide = gpu_numa_nodes(r);
        nodes.retain(|n| !hide.contains(n));
    }
    let root = topo.root();
    if nodes.is_empty() {
        tracing::warn!("no sys/devices/system/node/node*; assuming one NUMA node");
        let mem = r
            .read_expected("proc/meminfo")
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .map(str::to_string)
            })
            .and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let mut o = Object::new(ObjType::NUMANode).with_os_index(0);
        o.cpuset = online.clone();
        o.nodeset = NodeSet::single(0);
        o.attr = ObjAttr::Numa {
            local_memory: mem,
            page_types: Vec::new(),
        };
        let id = topo.add(root, o);
        place(topo, id);
        return None;
    }
    let mut rows: Vec<Vec<u64>> = Vec::new();
    for &n in &nodes {
        let dir = format!("sys/devices/system/node/node{n}");
        let cpus = r
            .read_set(&format!("{dir}/cpulist"), &format!("{dir}/cpumap"))
            .map(|c| and(&c, online))
            .unwrap_or_default();
        let mem = r
            .read_expected(&format!("{dir}/meminfo"))
            .and_then(|m| {
                m.lines()
                    .find(|l| l.contains("MemTotal:"))
                    .map(str::to_string)
            })
            .and_then(|l| {
                l.split_whitespace()
                    .nth(3)
                    .and_then(|k| k.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024;
        let mut pages = Vec::new();
        for hp in r.list_dir(&format!("{dir}/hugepages")) {
            let size = hp
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok());
            let count = r
                .read(&format!("{dir}/hugepages/{hp}/nr_hugepages"))
                .and_then(|s| s.parse::<u64>().ok());
            if let (Some(s), Some(c)) = (size, count) {
                pages.push((s * 1024, c));
            }
        }
        let mut o = Object::new(ObjType::NUMANode).with_os_index(n);
        o.cpuset = if cpus.is_empty() {
            online.clone()
        } else {
            cpus
        };
        o.nodeset = NodeSet::single(n);
        o.attr = ObjAttr::Numa {
            local_memory: mem,
            page_types: pages,
        };
        let id = topo.add(root, o);
        place(topo, id);
        let all: Vec<u64> = r
            .read(&format!("{dir}/distance"))
            .map(|d| {
                d.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        rows.push(all);
    }
    // Distance rows list every node the kernel knows, in node order; keep ours.
    let mut all_nodes: Vec<u32> = r
        .list_dir("sys/devices/system/node")
        .iter()
        .filter_map(|n| n.strip_prefix("node").and_then(|x| x.parse().ok()))
        .collect();
    all_nodes.sort_unstable();
    let cols: Vec<usize> = nodes
        .iter()
        .filter_map(|n| all_nodes.iter().position(|a| a == n))
        .collect();
    if nodes.len() < 2 || rows.iter().any(|r| r.len() != all_nodes.len()) {
        return None;
    }
    let values: Vec<u64> = rows
        .iter()
        .flat_map(|row| cols.iter().map(move |c| row[*c]))
        .collect();
    let objects = topo.objects_of_type(ObjType::NUMANode);
    let mut objects = objects;
    objects.sort_by_key(|o| topo.obj(*o).os_index);
    Some(Distances {
        name: "NUMALatency".into(),
        kind: DIST_FROM_OS | DIST_MEANS_LATENCY,
        objects,
        values,
    })
}

fn place(topo: &mut Topology, id: ObjId) {
    let target = super::hwloc_xml::place_memory(topo, id);
    if Some(target) != topo.obj(id).parent {
        topo.reparent(id, target);
    }
}
