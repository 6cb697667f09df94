//! The topology arena: objects, distance matrices and links.

use crate::bitmap::{CpuSet, NodeSet};
use crate::object::{ObjAttr, ObjId, ObjType, Object, OsDevType, PciAddr};
use serde::Serialize;
use std::collections::BTreeMap;

/// hwloc distance kind bit: values come from the OS or firmware.
pub const DIST_FROM_OS: u64 = 1;
/// hwloc distance kind bit: values were given by the user.
pub const DIST_FROM_USER: u64 = 2;
/// hwloc distance kind bit: smaller is closer (latency).
pub const DIST_MEANS_LATENCY: u64 = 4;
/// hwloc distance kind bit: larger is closer (bandwidth).
pub const DIST_MEANS_BANDWIDTH: u64 = 8;
/// hwloc distance kind bit: objects have different types.
pub const DIST_HETEROGENEOUS: u64 = 16;

/// A distance matrix between objects, with what it measures.
#[derive(Clone, Debug, Serialize)]
pub struct Distances {
    /// hwloc's name (`NUMALatency`, `NVLinkBandwidth`, `XGMIBandwidth` ...); may be empty.
    pub name: String,
    /// hwloc kind bits (`DIST_*`).
    pub kind: u64,
    /// The objects, row and column order.
    pub objects: Vec<ObjId>,
    /// Row-major `n x n` values.
    pub values: Vec<u64>,
}

impl Distances {
    /// Value from object `i` to object `j` (positions in `objects`).
    pub fn get(&self, i: usize, j: usize) -> u64 {
        self.values[i * self.objects.len() + j]
    }

    /// Whether larger values mean closer.
    pub fn means_bandwidth(&self) -> bool {
        self.kind & DIST_MEANS_BANDWIDTH != 0
    }
}

/// Kind of a link the PCI tree does not show.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub enum LinkKind {
    /// NVIDIA NVLink (to a GPU, an NVSwitch or a CPU).
    NVLink,
    /// AMD Infinity Fabric (xGMI).
    Xgmi,
}

/// A point-to-point link between two objects.
#[derive(Clone, Debug, Serialize)]
pub struct Link {
    /// One end (a PCI device or a CPU-side object).
    pub a: ObjId,
    /// Other end.
    pub b: ObjId,
    /// Technology.
    pub kind: LinkKind,
    /// Bonded lanes/links (NV# as `nvidia-smi` counts them).
    pub count: u32,
    /// Total bandwidth in MB/s (0 if unknown).
    pub bandwidth_mbs: u64,
}

/// Object counts as hwloc reports them (I/O included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Packages.
    pub packages: usize,
    /// Dies.
    pub dies: usize,
    /// Groups.
    pub groups: usize,
    /// NUMA nodes.
    pub numa_nodes: usize,
    /// Cores.
    pub cores: usize,
    /// PUs.
    pub pus: usize,
    /// Caches by hwloc type name (`L1Cache` = L1 data or unified).
    pub caches: BTreeMap<String, usize>,
    /// Host bridges.
    pub host_bridges: usize,
    /// PCI-to-PCI bridges.
    pub pci_bridges: usize,
    /// PCI devices.
    pub pci_devices: usize,
    /// OS devices.
    pub os_devices: usize,
    /// GPUs (see [`Topology::is_gpu`]).
    pub gpus: usize,
    /// NICs (see [`Topology::is_nic`]).
    pub nics: usize,
    /// NVSwitches.
    pub nvswitches: usize,
    /// Misc objects.
    pub misc: usize,
}

/// A machine's topology: an arena of objects rooted at a Machine, plus distances and links.
#[derive(Clone, Debug, Serialize)]
pub struct Topology {
    objs: Vec<Object>,
    /// Distance matrices.
    pub distances: Vec<Distances>,
    /// Links the PCI tree does not show (NVLink, xGMI).
    pub links: Vec<Link>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Topology {
    /// A topology holding only an empty Machine.
    pub fn new() -> Self {
        Topology {
            objs: vec![Object::new(ObjType::Machine).with_os_index(0)],
            distances: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Discovers this machine from `/sys` and `/proc` (see [`crate::sources::sysfs`]).
    pub fn discover() -> Result<Topology, crate::TopoError> {
        crate::sources::sysfs::discover(std::path::Path::new("/"))
    }

    /// The Machine object.
    pub fn root(&self) -> ObjId {
        ObjId(0)
    }

    /// Object by id.
    pub fn obj(&self, id: ObjId) -> &Object {
        &self.objs[id.index()]
    }

    /// Mutable object by id.
    pub fn obj_mut(&mut self, id: ObjId) -> &mut Object {
        &mut self.objs[id.index()]
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.objs.len() <= 1
    }

    /// Every object with its id, in arena order.
    pub fn iter(&self) -> impl Iterator<Item = (ObjId, &Object)> {
        self.objs
            .iter()
            .enumerate()
            .map(|(i, o)| (ObjId(i as u32), o))
    }

    /// Attaches `obj` under `parent`, in the list its type belongs to.
    pub fn add(&mut self, parent: ObjId, mut obj: Object) -> ObjId {
        let id = ObjId(self.objs.len() as u32);
        obj.parent = Some(parent);
        let kind = obj.kind;
        self.objs.push(obj);
        let p = &mut self.objs[parent.index()];
        if kind.is_memory() {
            p.memory_children.push(id);
        } else if kind.is_io() {
            p.io_children.push(id);
        } else if kind == ObjType::Misc {
            p.misc_children.push(id);
        } else {
            p.children.push(id);
        }
        id
    }

    /// Moves `id` (and its subtree) under `new_parent`.
    pub(crate) fn reparent(&mut self, id: ObjId, new_parent: ObjId) {
        if let Some(old) = self.objs[id.index()].parent {
            let o = &mut self.objs[old.index()];
            for list in [
                &mut o.children,
                &mut o.memory_children,
                &mut o.io_children,
                &mut o.misc_children,
            ] {
                list.retain(|c| *c != id);
            }
        }
        let kind = self.objs[id.index()].kind;
        self.objs[id.index()].parent = Some(new_parent);
        let p = &mut self.objs[new_parent.index()];
        if kind.is_memory() {
            p.memory_children.push(id);
        } else if kind.is_io() {
            p.io_children.push(id);
        } else if kind == ObjType::Misc {
            p.misc_children.push(id);
        } else {
            p.children.push(id);
        }
    }

    /// All children of `id`: memory, then CPU-tree, then I/O, then misc.
    pub fn all_children(&self, id: ObjId) -> impl Iterator<Item = ObjId> + '_ {
        let o = self.obj(id);
        o.memory_children
            .iter()
            .chain(&o.children)
            .chain(&o.io_children)
            .chain(&o.misc_children)
            .copied()
    }

    /// Depth-first pre-order from the root, reachable objects only.
    pub fn dfs(&self) -> Vec<ObjId> {
        let mut out = Vec::with_capacity(self.objs.len());
        let mut stack = vec![self.root()];
        while let Some(id) = stack.pop() {
            out.push(id);
            let kids: Vec<ObjId> = self.all_children(id).collect();
            stack.extend(kids.into_iter().rev());
        }
        out
    }

    /// Computes missing cpusets/nodesets bottom-up, then logical indexes in DFS order.
    /// Every source calls it last.
    pub fn finalize(&mut self) {
        let order = self.dfs();
        for &id in order.iter().rev() {
            let o = self.obj(id);
            if o.kind.is_io() || o.kind == ObjType::Misc {
                continue;
            }
            let mut cpus = CpuSet::new();
            let mut nodes = NodeSet::new();
            for c in o.children.iter().chain(&o.memory_children) {
                cpus.or_assign(&self.obj(*c).cpuset);
                nodes.or_assign(&self.obj(*c).nodeset);
            }
            let o = self.obj_mut(id);
            if o.kind == ObjType::PU && o.cpuset.is_empty() {
                if let Some(i) = o.os_index {
                    o.cpuset = CpuSet::single(i);
                }
            }
            if o.kind == ObjType::NUMANode && o.nodeset.is_empty() {
                if let Some(i) = o.os_index {
                    o.nodeset = NodeSet::single(i);
                }
            }
            if o.cpuset.is_empty() {
                o.cpuset = cpus;
            }
            if o.nodeset.is_empty() {
                o.nodeset = nodes;
            }
        }
        // Objects below a NUMA-less level inherit the nodeset of the NUMA nodes covering them.
        let numas: Vec<(CpuSet, NodeSet)> = self
            .objs
            .iter()
            .filter(|o| o.kind == ObjType::NUMANode)
            .map(|o| (o.cpuset.clone(), o.nodeset.clone()))
            .collect();
        // The NUMA nodes covering each PU, so that an object's nodeset costs its own PU count
        // rather than (NUMA nodes x machine width): with thousands of each the direct test took
        // tens of seconds (found by the `synthetic` fuzz target). Infinite sets take the direct
        // test.
        let mut per_pu: Vec<NodeSet> = Vec::new();
        let finite = numas.iter().all(|(c, _)| !c.bitmap().is_infinite());
        if finite {
            for (c, n) in &numas {
                for pu in c.iter() {
                    let pu = pu as usize;
                    if per_pu.len() <= pu {
                        per_pu.resize(pu + 1, NodeSet::new());
                    }
                    per_pu[pu].or_assign(n);
                }
            }
        }
        for o in self.objs.iter_mut() {
            if o.kind.is_normal() && o.nodeset.is_empty() && !o.cpuset.is_empty() {
                if finite && !o.cpuset.bitmap().is_infinite() {
                    for pu in o.cpuset.iter() {
                        if let Some(n) = per_pu.get(pu as usize) {
                            o.nodeset.or_assign(n);
                        }
                    }
                } else {
                    for (c, n) in &numas {
                        if c.intersects(&o.cpuset) {
                            o.nodeset.or_assign(n);
                        }
                    }
                }
            }
        }
        let mut next: BTreeMap<ObjType, u32> = BTreeMap::new();
        for id in order {
            let o = self.obj_mut(id);
            let n = next.entry(o.kind).or_insert(0);
            o.logical_index = *n;
            *n += 1;
        }
    }

    /// Objects of one type, in logical order.
    pub fn objects_of_type(&self, kind: ObjType) -> Vec<ObjId> {
        let mut v: Vec<ObjId> = self
            .iter()
            .filter(|(_, o)| o.kind == kind)
            .map(|(i, _)| i)
            .collect();
        v.sort_by_key(|i| self.obj(*i).logical_index);
        v
    }

    /// Number of objects of one type.
    pub fn count(&self, kind: ObjType) -> usize {
        self.objs.iter().filter(|o| o.kind == kind).count()
    }

    /// Ancestors of `id`, nearest first (excluding `id`).
    pub fn ancestors(&self, id: ObjId) -> Vec<ObjId> {
        let mut v = Vec::new();
        let mut cur = self.obj(id).parent;
        while let Some(p) = cur {
            v.push(p);
            cur = self.obj(p).parent;
        }
        v
    }

    /// The nearest ancestor (or self) in the CPU tree: where an I/O object is local.
    pub fn non_io_ancestor(&self, id: ObjId) -> ObjId {
        let mut cur = id;
        while self.obj(cur).kind.is_io() || self.obj(cur).kind == ObjType::Misc {
            match self.obj(cur).parent {
                Some(p) => cur = p,
                None => break,
            }
        }
        cur
    }

    /// The PCI device an OS device hangs off (or the object itself if it is one).
    pub fn pci_parent(&self, id: ObjId) -> Option<ObjId> {
        let mut cur = Some(id);
        while let Some(c) = cur {
            if self.obj(c).kind == ObjType::PCIDev {
                return Some(c);
            }
            if !self.obj(c).kind.is_io() {
                return None;
            }
            cur = self.obj(c).parent;
        }
        None
    }

    /// The OS devices directly below `id`.
    pub fn osdevs_of(&self, id: ObjId) -> Vec<ObjId> {
        self.obj(id)
            .io_children
            .iter()
            .copied()
            .filter(|c| self.obj(*c).kind == ObjType::OSDev)
            .collect()
    }

    /// The OS device named `name` (`mlx5_0`, `cuda1`, `eth0` ...).
    pub fn find_osdev(&self, name: &str) -> Option<ObjId> {
        self.iter()
            .find(|(_, o)| o.kind == ObjType::OSDev && o.name.as_deref() == Some(name))
            .map(|(i, _)| i)
    }

    /// The PCI device (or bridge) at a bus address.
    pub fn find_pci(&self, addr: PciAddr) -> Option<ObjId> {
        self.iter()
            .find(|(_, o)| o.kind != ObjType::OSDev && o.pci().is_some_and(|p| p.addr == addr))
            .map(|(i, _)| i)
    }

    /// Whether a PCI device is a GPU: a 3D or display controller (0302/0380) with a GPU or
    /// co-processor OS device, or a VGA device (0300) with a compute one (`cuda*`, `nvml*`,
    /// `rsmi*`, `opencl*`), so a BMC VGA chip with only a DRM `card0` does not count.
    pub fn is_gpu(&self, id: ObjId) -> bool {
        let o = self.obj(id);
        if o.kind != ObjType::PCIDev {
            return false;
        }
        let class = o.pci().map(|p| p.class_id).unwrap_or(0);
        let gpu_dev = |d: &ObjId| {
            let od = self.obj(*d);
            matches!(od.osdev_type(), Some(OsDevType::Gpu | OsDevType::CoProc))
                && (class != 0x0300
                    || od.name.as_deref().is_some_and(|n| {
                        ["cuda", "nvml", "rsmi", "opencl", "ze", "level0"]
                            .iter()
                            .any(|p| n.starts_with(p))
                    }))
        };
        matches!(class, 0x0300 | 0x0302 | 0x0380) && self.osdevs_of(id).iter().any(gpu_dev)
    }

    /// Whether a PCI device is a NIC: class 02xx or 0c06, or carrying a network or
    /// OpenFabrics OS device.
    pub fn is_nic(&self, id: ObjId) -> bool {
        let o = self.obj(id);
        if o.kind != ObjType::PCIDev {
            return false;
        }
        let class = o.pci().map(|p| p.class_id).unwrap_or(0);
        class >> 8 == 0x02
            || class == 0x0c06
            || self.osdevs_of(id).iter().any(|d| {
                matches!(
                    self.obj(*d).osdev_type(),
                    Some(OsDevType::Network | OsDevType::OpenFabrics)
                )
            })
    }

    /// Whether a PCI device is an NVIDIA NVSwitch (class 0680, vendor 10de, or subtype `NVSwitch`).
    pub fn is_nvswitch(&self, id: ObjId) -> bool {
        let o = self.obj(id);
        o.kind == ObjType::PCIDev
            && (o.subtype.as_deref() == Some("NVSwitch")
                || o.pci()
                    .is_some_and(|p| p.class_id == 0x0680 && p.vendor_id == 0x10de))
    }

    /// GPUs in the order CUDA/NVML/ROCm number them (their `cudaN`, `nvmlN`, `rsmiN` OS
    /// device), then in logical order: `GPU0` of a matrix is CUDA device 0.
    pub fn gpus(&self) -> Vec<ObjId> {
        let mut v: Vec<ObjId> = self
            .objects_of_type(ObjType::PCIDev)
            .into_iter()
            .filter(|i| self.is_gpu(*i))
            .collect();
        v.sort_by_key(|g| {
            (
                self.gpu_index(*g).unwrap_or(u32::MAX),
                self.obj(*g).logical_index,
            )
        });
        v
    }

    /// The runtime index of a GPU: N of its `cudaN`, `nvmlN` or `rsmiN` OS device.
    pub fn gpu_index(&self, gpu: ObjId) -> Option<u32> {
        self.osdevs_of(gpu).into_iter().find_map(|d| {
            let name = self.obj(d).name.as_deref()?;
            ["cuda", "nvml", "rsmi"]
                .iter()
                .find_map(|p| name.strip_prefix(p)?.parse::<u32>().ok())
        })
    }

    /// NICs in logical order.
    pub fn nics(&self) -> Vec<ObjId> {
        self.objects_of_type(ObjType::PCIDev)
            .into_iter()
            .filter(|i| self.is_nic(*i))
            .collect()
    }

    /// NVSwitches in logical order.
    pub fn nvswitches(&self) -> Vec<ObjId> {
        self.objects_of_type(ObjType::PCIDev)
            .into_iter()
            .filter(|i| self.is_nvswitch(*i))
            .collect()
    }

    /// Counts of every kind of object, as hwloc would report them.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (id, o) in self.iter() {
            match o.kind {
                ObjType::Package => c.packages += 1,
                ObjType::Die => c.dies += 1,
                ObjType::Group => c.groups += 1,
                ObjType::NUMANode => c.numa_nodes += 1,
                ObjType::Core => c.cores += 1,
                ObjType::PU => c.pus += 1,
                ObjType::Bridge if o.is_host_bridge() => c.host_bridges += 1,
                ObjType::Bridge => c.pci_bridges += 1,
                ObjType::PCIDev => {
                    c.pci_devices += 1;
                    c.gpus += usize::from(self.is_gpu(id));
                    c.nics += usize::from(self.is_nic(id));
                    c.nvswitches += usize::from(self.is_nvswitch(id));
                }
                ObjType::OSDev => c.os_devices += 1,
                ObjType::Misc => c.misc += 1,
                k if k.is_cache() => *c.caches.entry(k.name().to_string()).or_insert(0) += 1,
                _ => {}
            }
        }
        c
    }

    /// The bridges from the host bridge down to (excluding) `id`, top first.
    pub fn pci_path(&self, id: ObjId) -> Vec<ObjId> {
        let mut v: Vec<ObjId> = self
            .ancestors(id)
            .into_iter()
            .take_while(|a| self.obj(*a).kind == ObjType::Bridge)
            .collect();
        v.reverse();
        v
    }

    /// Adds an `NVLinkBandwidth` matrix (MB/s, as hwloc's NVML backend writes it) built from
    /// the NVLink links, when there are links and no such matrix yet: so links survive an
    /// export to hwloc XML.
    pub(crate) fn nvlink_matrix_from_links(&mut self) {
        if self.distances.iter().any(|d| d.name == "NVLinkBandwidth") {
            return;
        }
        let mut objs: Vec<ObjId> = Vec::new();
        for l in self.links.iter().filter(|l| l.kind == LinkKind::NVLink) {
            for e in [l.a, l.b] {
                if !objs.contains(&e) {
                    objs.push(e);
                }
            }
        }
        if objs.is_empty() {
            return;
        }
        let n = objs.len();
        let mut values = vec![0u64; n * n];
        for l in self.links.iter().filter(|l| l.kind == LinkKind::NVLink) {
            let i = objs.iter().position(|o| *o == l.a).unwrap_or(0);
            let j = objs.iter().position(|o| *o == l.b).unwrap_or(0);
            values[i * n + j] += l.bandwidth_mbs;
            values[j * n + i] += l.bandwidth_mbs;
        }
        self.distances.push(Distances {
            name: "NVLinkBandwidth".into(),
            kind: DIST_FROM_OS | DIST_MEANS_BANDWIDTH | DIST_HETEROGENEOUS,
            objects: objs,
            values,
        });
    }

    /// A short label for an object: `Package L#0`, `PCI 0000:3b:00.0`, `mlx5_0`.
    pub fn label(&self, id: ObjId) -> String {
        let o = self.obj(id);
        match (&o.attr, o.kind) {
            (_, ObjType::OSDev) => o
                .name
                .clone()
                .unwrap_or_else(|| format!("OSDev L#{}", o.logical_index)),
            (ObjAttr::Pci(p), _) => format!("PCI {}", p.addr),
            (ObjAttr::Bridge(b), _) => match &b.upstream {
                Some(p) => format!("PCIBridge {}", p.addr),
                None => format!(
                    "HostBridge {:04x}:[{:02x}-{:02x}]",
                    b.domain, b.secondary_bus, b.subordinate_bus
                ),
            },
            _ => format!("{} L#{}", o.kind, o.logical_index),
        }
    }
}
