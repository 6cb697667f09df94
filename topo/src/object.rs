//! Object types and their attributes, after hwloc's object model.

use crate::bitmap::{CpuSet, NodeSet};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// Index of an object in its [`crate::Topology`] arena.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjId(pub(crate) u32);

impl ObjId {
    /// Position in the arena.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What an object is. Names follow hwloc (`L1Cache` is the L1 data or unified cache).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[allow(missing_docs)]
pub enum ObjType {
    Machine,
    Package,
    Die,
    Group,
    NUMANode,
    MemCache,
    L5Cache,
    L4Cache,
    L3Cache,
    L2Cache,
    L1Cache,
    L3iCache,
    L2iCache,
    L1iCache,
    Core,
    PU,
    Bridge,
    PCIDev,
    OSDev,
    Misc,
}

impl ObjType {
    /// Every type, in hwloc's top-down order.
    pub const ALL: [ObjType; 20] = [
        ObjType::Machine,
        ObjType::Package,
        ObjType::Die,
        ObjType::Group,
        ObjType::NUMANode,
        ObjType::MemCache,
        ObjType::L5Cache,
        ObjType::L4Cache,
        ObjType::L3Cache,
        ObjType::L2Cache,
        ObjType::L1Cache,
        ObjType::L3iCache,
        ObjType::L2iCache,
        ObjType::L1iCache,
        ObjType::Core,
        ObjType::PU,
        ObjType::Bridge,
        ObjType::PCIDev,
        ObjType::OSDev,
        ObjType::Misc,
    ];

    /// hwloc's name (`Package`, `L2Cache`, `PCIDev` ...).
    pub fn name(self) -> &'static str {
        match self {
            ObjType::Machine => "Machine",
            ObjType::Package => "Package",
            ObjType::Die => "Die",
            ObjType::Group => "Group",
            ObjType::NUMANode => "NUMANode",
            ObjType::MemCache => "MemCache",
            ObjType::L5Cache => "L5Cache",
            ObjType::L4Cache => "L4Cache",
            ObjType::L3Cache => "L3Cache",
            ObjType::L2Cache => "L2Cache",
            ObjType::L1Cache => "L1Cache",
            ObjType::L3iCache => "L3iCache",
            ObjType::L2iCache => "L2iCache",
            ObjType::L1iCache => "L1iCache",
            ObjType::Core => "Core",
            ObjType::PU => "PU",
            ObjType::Bridge => "Bridge",
            ObjType::PCIDev => "PCIDev",
            ObjType::OSDev => "OSDev",
            ObjType::Misc => "Misc",
        }
    }

    /// Cache type for a level and kind (`None` if hwloc has no such type).
    pub fn cache(level: u32, kind: CacheType) -> Option<ObjType> {
        Some(match (level, kind) {
            (1, CacheType::Instruction) => ObjType::L1iCache,
            (2, CacheType::Instruction) => ObjType::L2iCache,
            (3, CacheType::Instruction) => ObjType::L3iCache,
            (1, _) => ObjType::L1Cache,
            (2, _) => ObjType::L2Cache,
            (3, _) => ObjType::L3Cache,
            (4, _) => ObjType::L4Cache,
            (5, _) => ObjType::L5Cache,
            _ => return None,
        })
    }

    /// Cache level (1-5) for CPU cache types.
    pub fn cache_level(self) -> Option<u32> {
        match self {
            ObjType::L1Cache | ObjType::L1iCache => Some(1),
            ObjType::L2Cache | ObjType::L2iCache => Some(2),
            ObjType::L3Cache | ObjType::L3iCache => Some(3),
            ObjType::L4Cache => Some(4),
            ObjType::L5Cache => Some(5),
            _ => None,
        }
    }

    /// Whether this is a CPU cache.
    pub fn is_cache(self) -> bool {
        self.cache_level().is_some()
    }

    /// Whether this lives in the I/O tree (bridges, PCI and OS devices).
    pub fn is_io(self) -> bool {
        matches!(self, ObjType::Bridge | ObjType::PCIDev | ObjType::OSDev)
    }

    /// Whether this is a memory object (attached beside the CPU tree).
    pub fn is_memory(self) -> bool {
        matches!(self, ObjType::NUMANode | ObjType::MemCache)
    }

    /// Whether this is a normal object of the CPU tree (has a cpuset).
    pub fn is_normal(self) -> bool {
        !self.is_io() && !self.is_memory() && self != ObjType::Misc
    }
}

impl fmt::Display for ObjType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ObjType {
    type Err = String;
    /// Accepts hwloc's names and the v1 alias `Socket`; case-insensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let l = s.to_ascii_lowercase();
        if l == "socket" {
            return Ok(ObjType::Package);
        }
        if l == "l1dcache" {
            return Ok(ObjType::L1Cache);
        }
        ObjType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown object type {s:?}"))
    }
}

/// Kind of cache (hwloc's `cache_type` numbers).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
pub enum CacheType {
    /// Data and instructions (0).
    Unified,
    /// Data only (1).
    Data,
    /// Instructions only (2).
    Instruction,
}

impl CacheType {
    /// hwloc's number.
    pub fn code(self) -> u32 {
        match self {
            CacheType::Unified => 0,
            CacheType::Data => 1,
            CacheType::Instruction => 2,
        }
    }

    /// From hwloc's number.
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(CacheType::Unified),
            1 => Some(CacheType::Data),
            2 => Some(CacheType::Instruction),
            _ => None,
        }
    }
}

/// Kind of OS device (hwloc 2.x `osdev_type` numbers).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum OsDevType {
    /// Disk, NVMe namespace, pmem (0).
    Block,
    /// GPU management handle such as `nvml0`, `rsmi0` (1).
    Gpu,
    /// Network interface such as `eth0`, `ib0` (2).
    Network,
    /// RDMA device such as `mlx5_0` (3).
    OpenFabrics,
    /// DMA engine (4).
    Dma,
    /// Compute co-processor such as `cuda0`, `opencl0d0` (5).
    CoProc,
}

impl OsDevType {
    /// hwloc's number.
    pub fn code(self) -> u32 {
        match self {
            OsDevType::Block => 0,
            OsDevType::Gpu => 1,
            OsDevType::Network => 2,
            OsDevType::OpenFabrics => 3,
            OsDevType::Dma => 4,
            OsDevType::CoProc => 5,
        }
    }

    /// From hwloc's number.
    pub fn from_code(c: u32) -> Option<Self> {
        Some(match c {
            0 => OsDevType::Block,
            1 => OsDevType::Gpu,
            2 => OsDevType::Network,
            3 => OsDevType::OpenFabrics,
            4 => OsDevType::Dma,
            5 => OsDevType::CoProc,
            _ => return None,
        })
    }

    /// hwloc's name (`GPU`, `OpenFabrics` ...).
    pub fn name(self) -> &'static str {
        match self {
            OsDevType::Block => "Block",
            OsDevType::Gpu => "GPU",
            OsDevType::Network => "Network",
            OsDevType::OpenFabrics => "OpenFabrics",
            OsDevType::Dma => "DMA",
            OsDevType::CoProc => "CoProc",
        }
    }
}

/// A PCI address `domain:bus:device.function`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PciAddr {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number.
    pub dev: u8,
    /// Function number.
    pub func: u8,
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.dev, self.func
        )
    }
}

impl Serialize for PciAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl FromStr for PciAddr {
    type Err = String;
    /// Reads `0000:3b:00.0` (the domain may be omitted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("bad PCI address {s:?}");
        let (rest, func) = s.trim().rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (dom, bus, dev) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        Ok(PciAddr {
            domain: u32::from_str_radix(dom, 16).map_err(|_| bad())?,
            bus: u8::from_str_radix(bus, 16).map_err(|_| bad())?,
            dev: u8::from_str_radix(dev, 16).map_err(|_| bad())?,
            func: u8::from_str_radix(func, 16).map_err(|_| bad())?,
        })
    }
}

/// What a PCI function says about itself.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub struct PciInfo {
    /// Bus address.
    pub addr: PciAddr,
    /// Class and subclass (`0x0302` = 3D controller).
    pub class_id: u16,
    /// Vendor id (`0x10de` = NVIDIA).
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Subsystem vendor id.
    pub subvendor_id: u16,
    /// Subsystem device id.
    pub subdevice_id: u16,
    /// Revision.
    pub revision: u8,
    /// Link bandwidth in GB/s, as hwloc computes it (0 when unknown).
    pub link_speed: f32,
    /// Link width in lanes (0 when unknown).
    pub link_width: u8,
    /// Link signalling rate in GT/s per lane (0 when unknown).
    pub link_gts: f32,
}

impl PciInfo {
    /// The class name `lstopo` prints (`3D`, `Ethernet`, `InfiniBand` ...), else 4 hex digits.
    pub fn class_name(&self) -> String {
        pci_class_name(self.class_id)
    }
}

/// The class name hwloc 2.9 prints for a PCI class, else the class as 4 hex digits.
pub fn pci_class_name(class_id: u16) -> String {
    let name = match class_id {
        0x0100 => "SCSI",
        0x0101 => "IDE",
        0x0102 => "Floppy",
        0x0103 => "IPI",
        0x0104 => "RAID",
        0x0105 => "ATA",
        0x0106 => "SATA",
        0x0107 => "SAS",
        0x0108 => "NVMExp",
        0x0180 => "Storage",
        0x0200 => "Ethernet",
        0x0201 => "TokenRing",
        0x0202 => "FDDI",
        0x0203 => "ATM",
        0x0204 => "ISDN",
        0x0205 => "WorldFip",
        0x0206 => "PICMG",
        0x0207 => "InfiniBand",
        0x0280 => "Network",
        0x0300 => "VGA",
        0x0301 => "XGA",
        0x0302 => "3D",
        0x0380 => "Display",
        0x0400 => "MultimediaVideo",
        0x0401 => "MultimediaAudio",
        0x0402 => "Telephony",
        0x0403 => "AudioDevice",
        0x0480 => "Multimedia",
        0x0500 => "RAM",
        0x0501 => "Flash",
        0x0580 => "Memory",
        0x0600 => "HostBridge",
        0x0601 => "ISABridge",
        0x0602 => "EISABridge",
        0x0603 => "MicroChannelBridge",
        0x0604 => "PCIBridge",
        0x0605 => "PCMCIABridge",
        0x0606 => "NubusBridge",
        0x0607 => "CardBusBridge",
        0x0608 => "RACEwayBridge",
        0x0609 => "SemiTransparentPCIBridge",
        0x060a => "InfiniBandPCIHostBridge",
        0x0680 => "Bridge",
        0x0700 => "Serial",
        0x0701 => "Parallel",
        0x0702 => "MultiportSerial",
        0x0703 => "Modem",
        0x0704 => "GPIB",
        0x0705 => "SmartCard",
        0x0880 => "SystemPeripheral",
        0x0b40 => "CoProcessor",
        0x0c00 => "FireWire",
        0x0c01 => "ACCESS",
        0x0c02 => "SSA",
        0x0c03 => "USB",
        0x0c04 => "FibreChannel",
        0x0c05 => "SMBus",
        0x0c06 => "InfiniBand",
        0x0c07 => "IPMI-SMIC",
        0x0c08 => "SERCOS",
        0x0c09 => "CANBUS",
        _ => return format!("{class_id:04x}"),
    };
    name.to_string()
}

/// A bridge: a host bridge (no upstream PCI function) or a PCI-to-PCI bridge.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub struct BridgeInfo {
    /// The bridge's own PCI function; `None` for a host bridge.
    pub upstream: Option<PciInfo>,
    /// Domain of the buses below.
    pub domain: u32,
    /// First bus below.
    pub secondary_bus: u8,
    /// Last bus below.
    pub subordinate_bus: u8,
    /// Bridge depth (host bridge 0).
    pub depth: u32,
}

/// A cache's geometry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheInfo {
    /// Size in bytes.
    pub size: u64,
    /// Level (1 = L1).
    pub depth: u32,
    /// Line size in bytes.
    pub linesize: u32,
    /// Ways (0 unknown, -1 fully associative).
    pub associativity: i32,
    /// Unified, data or instruction.
    pub cache_type: CacheType,
}

/// Type-specific attributes.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub enum ObjAttr {
    /// Nothing specific.
    #[default]
    None,
    /// NUMA node memory.
    Numa {
        /// Bytes of local memory.
        local_memory: u64,
        /// (page size, count) pairs.
        page_types: Vec<(u64, u64)>,
    },
    /// Cache geometry.
    Cache(CacheInfo),
    /// Group kind (hwloc's internal kind numbers, kept for export).
    Group {
        /// hwloc group kind.
        kind: u32,
        /// hwloc group subkind.
        subkind: u32,
    },
    /// Bridge.
    Bridge(BridgeInfo),
    /// PCI device.
    Pci(PciInfo),
    /// OS device.
    OsDev(OsDevType),
}

/// One object of the topology.
#[derive(Clone, Debug, Serialize)]
pub struct Object {
    /// What it is.
    pub kind: ObjType,
    /// Index the OS gives it (PU number, NUMA node number, package id ...).
    pub os_index: Option<u32>,
    /// Position among objects of the same type, in depth-first order (set by `finalize`).
    pub logical_index: u32,
    /// Parent (None only for the Machine root).
    pub parent: Option<ObjId>,
    /// CPU-tree children.
    pub children: Vec<ObjId>,
    /// NUMA nodes (and memory-side caches) attached here.
    pub memory_children: Vec<ObjId>,
    /// Host bridges, PCI and OS devices attached here.
    pub io_children: Vec<ObjId>,
    /// Misc objects attached here.
    pub misc_children: Vec<ObjId>,
    /// PUs covered (empty for I/O objects).
    pub cpuset: CpuSet,
    /// NUMA nodes covered (empty for I/O objects).
    pub nodeset: NodeSet,
    /// Name (OS devices: `mlx5_0`, `cuda0` ...).
    pub name: Option<String>,
    /// Subtype (`CUDA`, `NVSwitch`, `MemoryModule` ...).
    pub subtype: Option<String>,
    /// Free-form (name, value) pairs (`CPUModel`, `GPUModel` ...).
    pub infos: Vec<(String, String)>,
    /// Type-specific attributes.
    pub attr: ObjAttr,
}

impl Object {
    /// A bare object of type `kind`.
    pub fn new(kind: ObjType) -> Self {
        Object {
            kind,
            os_index: None,
            logical_index: 0,
            parent: None,
            children: Vec::new(),
            memory_children: Vec::new(),
            io_children: Vec::new(),
            misc_children: Vec::new(),
            cpuset: CpuSet::new(),
            nodeset: NodeSet::new(),
            name: None,
            subtype: None,
            infos: Vec::new(),
            attr: ObjAttr::None,
        }
    }

    /// Builder-style os_index.
    pub fn with_os_index(mut self, i: u32) -> Self {
        self.os_index = Some(i);
        self
    }

    /// The value of info `name`, if any.
    pub fn info(&self, name: &str) -> Option<&str> {
        self.infos
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// PCI attributes of a PCI device or of a PCI-to-PCI bridge's upstream function.
    pub fn pci(&self) -> Option<&PciInfo> {
        match &self.attr {
            ObjAttr::Pci(p) => Some(p),
            ObjAttr::Bridge(b) => b.upstream.as_ref(),
            _ => None,
        }
    }

    /// Bridge attributes.
    pub fn bridge(&self) -> Option<&BridgeInfo> {
        match &self.attr {
            ObjAttr::Bridge(b) => Some(b),
            _ => None,
        }
    }

    /// OS device type.
    pub fn osdev_type(&self) -> Option<OsDevType> {
        match self.attr {
            ObjAttr::OsDev(t) => Some(t),
            _ => None,
        }
    }

    /// Whether this is a host bridge.
    pub fn is_host_bridge(&self) -> bool {
        matches!(&self.attr, ObjAttr::Bridge(b) if b.upstream.is_none())
    }

    /// Local memory of a NUMA node.
    pub fn local_memory(&self) -> Option<u64> {
        match self.attr {
            ObjAttr::Numa { local_memory, .. } => Some(local_memory),
            _ => None,
        }
    }

    /// Cache attributes.
    pub fn cache(&self) -> Option<&CacheInfo> {
        match &self.attr {
            ObjAttr::Cache(c) => Some(c),
            _ => None,
        }
    }
}
