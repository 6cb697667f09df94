//! Queries: path class between devices (as `nvidia-smi topo -m` prints it), bottleneck
//! bandwidth, nearest NIC, local CPUs.

use crate::bitmap::CpuSet;
use crate::error::TopoError;
use crate::matrix::PathMatrix;
use crate::object::{ObjId, ObjType, OsDevType};
use crate::topology::{LinkKind, Topology};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// How two devices are connected, best first, with `nvidia-smi topo -m`'s meanings.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PathClass {
    /// The device itself (`X`).
    Same,
    /// A bonded set of `n` NVLinks, directly or through NVSwitches (`NV#`).
    NvLink(u32),
    /// At most one PCIe bridge (`PIX`).
    Pix,
    /// Several PCIe bridges, without the host bridge (`PXB`).
    Pxb,
    /// Through a PCIe host bridge, typically the CPU (`PHB`).
    Phb,
    /// Between host bridges inside one NUMA node (`NODE`).
    Node,
    /// Across the SMP interconnect between NUMA nodes, QPI/UPI (`SYS`).
    Sys,
    /// Old drivers' name for SYS: through a socket-level link (`SOC`).
    Soc,
}

impl PathClass {
    /// Rank for comparisons: smaller is closer. NV# ranks by link count (more is closer).
    pub fn rank(self) -> (u32, u32) {
        match self {
            PathClass::Same => (0, 0),
            PathClass::NvLink(n) => (1, u32::MAX - n),
            PathClass::Pix => (2, 0),
            PathClass::Pxb => (3, 0),
            PathClass::Phb => (4, 0),
            PathClass::Node => (5, 0),
            PathClass::Sys | PathClass::Soc => (6, 0),
        }
    }
}

impl fmt::Display for PathClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathClass::Same => f.write_str("X"),
            PathClass::NvLink(n) => write!(f, "NV{n}"),
            PathClass::Pix => f.write_str("PIX"),
            PathClass::Pxb => f.write_str("PXB"),
            PathClass::Phb => f.write_str("PHB"),
            PathClass::Node => f.write_str("NODE"),
            PathClass::Sys => f.write_str("SYS"),
            PathClass::Soc => f.write_str("SOC"),
        }
    }
}

impl FromStr for PathClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "X" => PathClass::Same,
            "PIX" => PathClass::Pix,
            "PXB" => PathClass::Pxb,
            "PHB" => PathClass::Phb,
            "NODE" => PathClass::Node,
            "SYS" => PathClass::Sys,
            "SOC" => PathClass::Soc,
            _ => match s.strip_prefix("NV").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) if n > 0 => PathClass::NvLink(n),
                _ => return Err(format!("unknown path class {s:?}")),
            },
        })
    }
}

impl Topology {
    /// The PCI device behind an I/O object (an OS device's parent), or the object itself.
    fn device(&self, id: ObjId) -> ObjId {
        self.pci_parent(id).unwrap_or(id)
    }

    /// NVLink (count, MB/s) between two devices: direct links, plus through the NVSwitch
    /// fabric the smaller of the two devices' totals to switches. NVIDIA's switch fabrics are
    /// non-blocking and trunked between baseboards (links hwloc's matrices do not list), so
    /// this is what `nvidia-smi` reports as `NV#`: NV6 on a DGX-2, NV18 on HGX H100.
    fn nvlink_sum(&self, a: ObjId, b: ObjId) -> (u32, u64) {
        let (a, b) = (self.device(a), self.device(b));
        let switches = self.nvswitches();
        let mut direct = (0u32, 0u64);
        let mut to_sw_a = (0u32, 0u64);
        let mut to_sw_b = (0u32, 0u64);
        for l in self.links.iter().filter(|l| l.kind == LinkKind::NVLink) {
            let other = |x: ObjId| {
                if l.a == x {
                    Some(l.b)
                } else if l.b == x {
                    Some(l.a)
                } else {
                    None
                }
            };
            if other(a) == Some(b) {
                direct = (direct.0 + l.count, direct.1 + l.bandwidth_mbs);
            }
            if other(a).is_some_and(|o| switches.contains(&o)) {
                to_sw_a = (to_sw_a.0 + l.count, to_sw_a.1 + l.bandwidth_mbs);
            }
            if other(b).is_some_and(|o| switches.contains(&o)) {
                to_sw_b = (to_sw_b.0 + l.count, to_sw_b.1 + l.bandwidth_mbs);
            }
        }
        (
            direct.0 + to_sw_a.0.min(to_sw_b.0),
            direct.1 + to_sw_a.1.min(to_sw_b.1),
        )
    }

    /// Bonded NVLinks between two devices, as `nvidia-smi` counts them in `NV#`.
    pub fn nvlinks_between(&self, a: ObjId, b: ObjId) -> u32 {
        self.nvlink_sum(a, b).0
    }

    /// Path class between two devices (PCI devices or their OS devices).
    pub fn path_class(&self, a: ObjId, b: ObjId) -> PathClass {
        let (a, b) = (self.device(a), self.device(b));
        if a == b {
            return PathClass::Same;
        }
        if self.is_gpu(a) && self.is_gpu(b) {
            let n = self.nvlinks_between(a, b);
            if n > 0 {
                return PathClass::NvLink(n);
            }
        }
        let up_a = self.ancestors(a);
        let up_b = self.ancestors(b);
        let Some(lca) = up_a.iter().copied().find(|x| up_b.contains(x)) else {
            return PathClass::Sys;
        };
        let lca_obj = self.obj(lca);
        if lca_obj.kind == ObjType::Bridge {
            if lca_obj.is_host_bridge() {
                return PathClass::Phb;
            }
            let below = |up: &[ObjId]| {
                up.iter()
                    .take_while(|x| **x != lca)
                    .filter(|x| self.obj(**x).kind == ObjType::Bridge)
                    .count()
            };
            return if below(&up_a) <= 1 && below(&up_b) <= 1 {
                PathClass::Pix
            } else {
                PathClass::Pxb
            };
        }
        let na = &self.obj(self.non_io_ancestor(a)).nodeset;
        let nb = &self.obj(self.non_io_ancestor(b)).nodeset;
        if na.intersects(nb) || (na.is_empty() && nb.is_empty()) {
            PathClass::Node
        } else {
            PathClass::Sys
        }
    }

    /// Bottleneck bandwidth of the path in GB/s: the NVLink bandwidth when the devices
    /// share NVLinks, else the slowest known PCIe link on the way (`None` if none known).
    pub fn path_bandwidth(&self, a: ObjId, b: ObjId) -> Option<f64> {
        let (a, b) = (self.device(a), self.device(b));
        if let PathClass::NvLink(_) = self.path_class(a, b) {
            let total = self.nvlink_sum(a, b).1;
            if total > 0 {
                return Some(total as f64 / 1000.0);
            }
        }
        let up_a = self.ancestors(a);
        let up_b = self.ancestors(b);
        let lca = up_a.iter().copied().find(|x| up_b.contains(x));
        let mut on_path = vec![a, b];
        for up in [&up_a, &up_b] {
            on_path.extend(
                up.iter()
                    .copied()
                    .take_while(|x| Some(*x) != lca)
                    .filter(|x| self.obj(*x).kind.is_io()),
            );
        }
        on_path
            .iter()
            .filter_map(|x| self.obj(*x).pci().map(|p| f64::from(p.link_speed)))
            .filter(|s| *s > 0.0)
            .min_by(f64::total_cmp)
    }

    /// The NIC closest to a device: best path class, then widest path, then lowest index.
    pub fn nearest_nic(&self, dev: ObjId) -> Option<ObjId> {
        let nics = self.nics();
        nics.into_iter().min_by(|x, y| {
            let cx = self.path_class(dev, *x).rank();
            let cy = self.path_class(dev, *y).rank();
            let bx = self.path_bandwidth(dev, *x).unwrap_or(0.0);
            let by = self.path_bandwidth(dev, *y).unwrap_or(0.0);
            cx.cmp(&cy).then(by.total_cmp(&bx)).then(x.cmp(y))
        })
    }

    /// The PUs local to a device: those of its nearest CPU-side ancestor.
    pub fn local_cpuset(&self, dev: ObjId) -> CpuSet {
        self.obj(self.non_io_ancestor(dev)).cpuset.clone()
    }

    /// Finds a device by name: an OS device (`mlx5_0`, `cuda1`), a PCI address, or
    /// `GPUn` / `NICn` (the n-th GPU or NIC, as in the matrix).
    pub fn find_device(&self, name: &str) -> Result<ObjId, TopoError> {
        if let Some(n) = name
            .strip_prefix("GPU")
            .and_then(|n| n.parse::<usize>().ok())
        {
            return self
                .gpus()
                .get(n)
                .copied()
                .ok_or_else(|| TopoError::NotFound(name.into()));
        }
        if let Some(n) = name
            .strip_prefix("NIC")
            .and_then(|n| n.parse::<usize>().ok())
        {
            return self
                .matrix_nics()
                .get(n)
                .copied()
                .ok_or_else(|| TopoError::NotFound(name.into()));
        }
        if let Some(d) = self.find_osdev(name) {
            return Ok(d);
        }
        if let Ok(addr) = name.parse() {
            if let Some(d) = self.find_pci(addr) {
                return Ok(d);
            }
        }
        Err(TopoError::NotFound(format!("device {name:?}")))
    }

    /// The NICs a `nvidia-smi`-style matrix lists: those with an RDMA (OpenFabrics) device
    /// when any has one, as `nvidia-smi` shows only RDMA NICs; else every NIC.
    pub fn matrix_nics(&self) -> Vec<ObjId> {
        let nics = self.nics();
        let rdma = |n: &ObjId| {
            self.osdevs_of(*n)
                .iter()
                .any(|d| self.obj(*d).osdev_type() == Some(OsDevType::OpenFabrics))
        };
        if nics.iter().any(rdma) {
            nics.into_iter().filter(rdma).collect()
        } else {
            nics
        }
    }

    /// The display name of a device: its RDMA or network OS device, its CUDA/NVML device,
    /// else its PCI address.
    pub fn device_name(&self, dev: ObjId) -> String {
        let devs = self.osdevs_of(dev);
        for want in [
            OsDevType::OpenFabrics,
            OsDevType::Network,
            OsDevType::CoProc,
            OsDevType::Gpu,
        ] {
            if let Some(d) = devs
                .iter()
                .find(|d| self.obj(**d).osdev_type() == Some(want))
            {
                if let Some(n) = &self.obj(*d).name {
                    return n.clone();
                }
            }
        }
        self.obj(dev)
            .pci()
            .map(|p| p.addr.to_string())
            .unwrap_or_else(|| self.label(dev))
    }

    /// The GPU/NIC matrix `nvidia-smi topo -m` would print for this topology.
    pub fn matrix(&self) -> PathMatrix {
        let gpus = self.gpus();
        let nics = self.matrix_nics();
        let devs: Vec<ObjId> = gpus.iter().chain(&nics).copied().collect();
        let cells = devs
            .iter()
            .map(|a| devs.iter().map(|b| self.path_class(*a, *b)).collect())
            .collect();
        PathMatrix {
            gpu_labels: (0..gpus.len()).map(|i| format!("GPU{i}")).collect(),
            nic_labels: (0..nics.len()).map(|i| format!("NIC{i}")).collect(),
            nic_names: nics.iter().map(|n| self.device_name(*n)).collect(),
            cells,
            cpu_affinity: gpus
                .iter()
                .map(|g| Some(self.local_cpuset(*g).to_list_string()))
                .collect(),
            numa_affinity: gpus
                .iter()
                .map(|g| {
                    Some(self.obj(self.non_io_ancestor(*g)).nodeset.to_list_string())
                        .filter(|s| !s.is_empty())
                })
                .collect(),
            gpu_numa_id: None,
        }
    }
}
