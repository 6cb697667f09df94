//! Linux I/O discovery: the PCI tree from `/sys/bus/pci/devices` (host bridges, bridges,
//! devices with class, ids and link), and OS devices from `/sys/class/{net,infiniband,
//! block,dma,drm}` and `/sys/bus/dax`. Each is attached where the kernel says it is local.

use super::sysfs::SysfsReader;
use crate::bitmap::CpuSet;
use crate::object::{BridgeInfo, ObjAttr, ObjId, ObjType, Object, OsDevType, PciAddr, PciInfo};
use crate::topology::Topology;
use std::collections::BTreeMap;
use std::path::Path;

struct Dev {
    info: PciInfo,
    parent: Option<PciAddr>,
    local: Option<CpuSet>,
    numa: Option<u32>,
    secondary: Option<u8>,
    subordinate: Option<u8>,
    is_bridge: bool,
}

fn hex(s: Option<String>) -> u32 {
    s.and_then(|v| u32::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

/// The PCI addresses in a resolved sysfs device path, top first.
fn pci_components(p: &Path) -> Vec<PciAddr> {
    p.components()
        .filter_map(|c| {
            c.as_os_str()
                .to_str()
                .and_then(|s| s.parse::<PciAddr>().ok())
        })
        .collect()
}

/// GB/s of a PCIe link from sysfs `current_link_speed` (`8.0 GT/s PCIe`) and width.
fn link_gbs(gts: f32, width: u8) -> f32 {
    // 8b/10b coding up to 5 GT/s, 128b/130b from 8 GT/s on.
    let eff = if gts <= 5.0 { 0.8 } else { 128.0 / 130.0 };
    gts * f32::from(width) * eff / 8.0
}

/// The first 0x1c bytes of a PCI config space (up to the bridge bus numbers).
fn read_config_header(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    let mut buf = vec![0u8; 0x1c];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    Some(buf)
}

fn read_dev(r: &SysfsReader, name: &str, addr: PciAddr) -> Dev {
    let d = format!("sys/bus/pci/devices/{name}");
    let resolved = std::fs::canonicalize(r.path(&d)).unwrap_or_else(|_| r.path(&d));
    let comps = pci_components(&resolved);
    let parent = comps
        .iter()
        .rev()
        .skip_while(|a| **a != addr)
        .nth(1)
        .copied();
    let class = hex(r.read(&format!("{d}/class"))) >> 8;
    let is_bridge = class == 0x0604 || class == 0x0609;
    let revision_file = r.read(&format!("{d}/revision"));
    // Config space reads trap to the hypervisor in VMs (about 1 ms each here): read only
    // the header bytes, and only when the bus numbers or the revision are needed.
    let config = if is_bridge || revision_file.is_none() {
        read_config_header(&r.path(&format!("{d}/config")))
    } else {
        None
    };
    let revision = revision_file
        .map(|s| hex(Some(s)) as u8)
        .or_else(|| config.as_ref().and_then(|c| c.get(8).copied()))
        .unwrap_or(0);
    let gts: f32 = r
        .read(&format!("{d}/current_link_speed"))
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    let width: u8 = r
        .read(&format!("{d}/current_link_width"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let info = PciInfo {
        addr,
        class_id: class as u16,
        vendor_id: hex(r.read(&format!("{d}/vendor"))) as u16,
        device_id: hex(r.read(&format!("{d}/device"))) as u16,
        subvendor_id: hex(r.read(&format!("{d}/subsystem_vendor"))) as u16,
        subdevice_id: hex(r.read(&format!("{d}/subsystem_device"))) as u16,
        revision,
        link_speed: link_gbs(gts, width),
        link_width: width,
        link_gts: gts,
    };
    let (secondary, subordinate) = match (&config, is_bridge) {
        (Some(c), true) if c.len() > 0x1a => (Some(c[0x19]), Some(c[0x1a])),
        _ => (None, None),
    };
    Dev {
        info,
        parent,
        local: r.read_list(&format!("{d}/local_cpulist")),
        numa: r
            .read(&format!("{d}/numa_node"))
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|n| u32::try_from(n).ok()),
        secondary,
        subordinate,
        is_bridge,
    }
}

/// The object an I/O subtree with these local CPUs hangs from: the highest object whose
/// CPUs equal them, else the smallest one containing them.
fn io_parent(topo: &Topology, local: &CpuSet) -> ObjId {
    let mut cur = topo.root();
    if local.is_empty() {
        return cur;
    }
    loop {
        if topo.obj(cur).cpuset == *local {
            return cur;
        }
        let next = topo
            .obj(cur)
            .children
            .iter()
            .copied()
            .find(|c| local.is_subset(&topo.obj(*c).cpuset));
        match next {
            Some(n) if !matches!(topo.obj(n).kind, ObjType::PU) => cur = n,
            _ => return cur,
        }
    }
}

/// Adds the PCI tree and OS devices of the sysfs tree to `topo`.
pub(crate) fn discover_io(r: &SysfsReader, topo: &mut Topology, opts: &super::sysfs::Options) {
    let mut devs: BTreeMap<PciAddr, Dev> = BTreeMap::new();
    for name in r.list_dir("sys/bus/pci/devices") {
        match name.parse::<PciAddr>() {
            Ok(a) => {
                let d = read_dev(r, &name, a);
                // An unconfigured bridge (secondary bus 0) leads nowhere; hwloc drops it.
                if d.is_bridge && d.secondary == Some(0) {
                    tracing::debug!("skipping unconfigured PCI bridge {a}");
                    continue;
                }
                devs.insert(a, d);
            }
            Err(e) => tracing::warn!("sys/bus/pci/devices/{name}: {e}"),
        }
    }
    let online = topo.obj(topo.root()).cpuset.clone();
    let mut children: BTreeMap<Option<PciAddr>, Vec<PciAddr>> = BTreeMap::new();
    for (a, d) in &devs {
        let p = d.parent.filter(|p| devs.contains_key(p));
        children.entry(p).or_default().push(*a);
    }
    // Root devices grouped by (domain, bus): one host bridge each.
    let mut roots: BTreeMap<(u32, u8), Vec<PciAddr>> = BTreeMap::new();
    for a in children.get(&None).cloned().unwrap_or_default() {
        roots.entry((a.domain, a.bus)).or_default().push(a);
    }
    let mut ids: BTreeMap<PciAddr, ObjId> = BTreeMap::new();
    for ((domain, bus), list) in roots {
        let first = &devs[&list[0]];
        let mut local = first.local.as_ref().map(|l| {
            let mut x = CpuSet::new();
            for i in l.iter().filter(|i| online.is_set(*i)) {
                x.set(i);
            }
            x
        });
        if local.as_ref().is_none_or(CpuSet::is_empty) {
            local = first.numa.and_then(|n| {
                topo.objects_of_type(ObjType::NUMANode)
                    .into_iter()
                    .find(|x| topo.obj(*x).os_index == Some(n))
                    .map(|x| topo.obj(x).cpuset.clone())
            });
        }
        let parent = io_parent(topo, &local.unwrap_or_default());
        let mut hb = Object::new(ObjType::Bridge);
        let sub = list
            .iter()
            .map(|a| max_bus(&devs, &children, *a))
            .max()
            .unwrap_or(bus);
        hb.attr = ObjAttr::Bridge(BridgeInfo {
            upstream: None,
            domain,
            secondary_bus: bus,
            subordinate_bus: sub,
            depth: 0,
        });
        let hb_id = topo.add(parent, hb);
        for a in list {
            add_dev(topo, &devs, &children, a, hb_id, 1, &mut ids);
        }
    }
    os_devices(r, topo, &ids);
    if opts.nvidia_driver_gpus {
        nvidia_gpus(r, topo, &ids);
    }
}

/// GPUs the NVIDIA driver lists: an `nvmlN` OS device each, with the model when known.
fn nvidia_gpus(r: &SysfsReader, topo: &mut Topology, ids: &BTreeMap<PciAddr, ObjId>) {
    let mut addrs: Vec<(PciAddr, String)> = r
        .list_dir("proc/driver/nvidia/gpus")
        .into_iter()
        .filter_map(|n| n.parse::<PciAddr>().ok().map(|a| (a, n)))
        .collect();
    addrs.sort();
    for (i, (a, dir)) in addrs.into_iter().enumerate() {
        let Some(&id) = ids.get(&a) else { continue };
        let mut o = Object::new(ObjType::OSDev);
        o.name = Some(format!("nvml{i}"));
        o.subtype = Some("NVML".into());
        o.attr = ObjAttr::OsDev(OsDevType::Gpu);
        if let Some(info) = r.read(&format!("proc/driver/nvidia/gpus/{dir}/information")) {
            if let Some(m) = info.lines().find_map(|l| l.strip_prefix("Model:")) {
                o.infos.push(("GPUModel".into(), m.trim().to_string()));
            }
        }
        topo.add(id, o);
    }
}

fn max_bus(
    devs: &BTreeMap<PciAddr, Dev>,
    children: &BTreeMap<Option<PciAddr>, Vec<PciAddr>>,
    a: PciAddr,
) -> u8 {
    let d = &devs[&a];
    let mut m = d.subordinate.unwrap_or(a.bus);
    for c in children.get(&Some(a)).into_iter().flatten() {
        m = m.max(max_bus(devs, children, *c));
    }
    m
}

fn add_dev(
    topo: &mut Topology,
    devs: &BTreeMap<PciAddr, Dev>,
    children: &BTreeMap<Option<PciAddr>, Vec<PciAddr>>,
    a: PciAddr,
    parent: ObjId,
    depth: u32,
    ids: &mut BTreeMap<PciAddr, ObjId>,
) {
    let d = &devs[&a];
    let kids = children.get(&Some(a)).cloned().unwrap_or_default();
    let mut o;
    if d.is_bridge {
        o = Object::new(ObjType::Bridge);
        let sec = d
            .secondary
            .or_else(|| kids.iter().map(|k| k.bus).min())
            .unwrap_or(0);
        let sub = max_bus(devs, children, a);
        o.attr = ObjAttr::Bridge(BridgeInfo {
            upstream: Some(d.info.clone()),
            domain: a.domain,
            secondary_bus: sec,
            subordinate_bus: sub,
            depth,
        });
    } else {
        o = Object::new(ObjType::PCIDev);
        o.attr = ObjAttr::Pci(d.info.clone());
    }
    let id = topo.add(parent, o);
    ids.insert(a, id);
    for k in kids {
        if depth > 64 {
            tracing::warn!("PCI tree deeper than 64 bridges at {k}; truncated");
            break;
        }
        add_dev(topo, devs, children, k, id, depth + 1, ids);
    }
}

/// The PCI device a class entry belongs to, from its resolved sysfs path.
fn owner(r: &SysfsReader, rel: &str, ids: &BTreeMap<PciAddr, ObjId>) -> Option<(ObjId, String)> {
    let p = std::fs::canonicalize(r.path(rel)).ok()?;
    let text = p.to_string_lossy().into_owned();
    let comps = pci_components(&p);
    let pci = comps.last().and_then(|a| ids.get(a)).copied();
    pci.map(|id| (id, text))
}

fn add_osdev(
    topo: &mut Topology,
    parent: ObjId,
    name: &str,
    kind: OsDevType,
    subtype: Option<&str>,
) {
    let mut o = Object::new(ObjType::OSDev);
    o.name = Some(name.to_string());
    o.subtype = subtype.map(str::to_string);
    o.attr = ObjAttr::OsDev(kind);
    topo.add(parent, o);
}

fn os_devices(r: &SysfsReader, topo: &mut Topology, ids: &BTreeMap<PciAddr, ObjId>) {
    let root = topo.root();
    for (class, kind) in [
        ("net", OsDevType::Network),
        ("infiniband", OsDevType::OpenFabrics),
        ("dma", OsDevType::Dma),
    ] {
        for name in r.list_dir(&format!("sys/class/{class}")) {
            let dev = if class == "dma" {
                format!("sys/class/{class}/{name}")
            } else {
                format!("sys/class/{class}/{name}/device")
            };
            if let Some((id, _)) = owner(r, &dev, ids) {
                add_osdev(topo, id, &name, kind, None);
            }
        }
    }
    for name in r.list_dir("sys/class/drm") {
        if name.contains('-') || name == "version" {
            continue;
        }
        if let Some((id, _)) = owner(r, &format!("sys/class/drm/{name}"), ids) {
            add_osdev(topo, id, &name, OsDevType::Gpu, None);
        }
    }
    for name in r.list_dir("sys/class/block") {
        let rel = format!("sys/class/block/{name}");
        if r.path(&format!("{rel}/partition")).exists() {
            continue;
        }
        let Ok(p) = std::fs::canonicalize(r.path(&rel)) else {
            continue;
        };
        let text = p.to_string_lossy();
        if text.contains("/virtual/") {
            continue;
        }
        match owner(r, &rel, ids) {
            Some((id, _)) => add_osdev(topo, id, &name, OsDevType::Block, Some("Disk")),
            None if text.contains("/ndbus") => {
                add_osdev(topo, root, &name, OsDevType::Block, Some("NVM"))
            }
            None => {}
        }
    }
    for name in r.list_dir("sys/bus/dax/devices") {
        // A dax device onlined as system RAM (kmem driver) is memory, not a block device.
        let driver = std::fs::read_link(r.path(&format!("sys/bus/dax/devices/{name}/driver"))).ok();
        if driver.is_some_and(|d| d.ends_with("kmem")) {
            continue;
        }
        add_osdev(topo, root, &name, OsDevType::Block, Some("NVM"));
    }
}
