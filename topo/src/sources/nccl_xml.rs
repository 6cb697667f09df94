//! NCCL topology XML (`NCCL_TOPO_FILE` / `NCCL_TOPO_DUMP_FILE`, root `<system>`): import
//! and export. A graph file (root `<graphs>`) is refused with [`TopoError::NcclGraphFile`].
//!
//! Mapping: each `<cpu numaid affinity>` becomes a Group (subtype `NCCLCpu`) holding a NUMA
//! node and the PUs of its affinity; each top-level `<pci>` gets its own host bridge (NCCL
//! files do not show root complexes, and separate ones are what NCCL assumes); `<pci>` of
//! class 0604 are bridges; `<gpu dev=N>` adds an OS device `cudaN`; `<net name>` adds an
//! OpenFabrics (RDMA names) or Network OS device; `<nvlink target count>` becomes a link,
//! creating the NVSwitch device when the target is not in the file.

use super::xmlutil::{self, esc, Ctx, Elem};
use crate::bitmap::{Bitmap, CpuSet, NodeSet};
use crate::error::TopoError;
use crate::object::{BridgeInfo, ObjAttr, ObjId, ObjType, Object, OsDevType, PciAddr, PciInfo};
use crate::topology::{Link, LinkKind, Topology};
use std::fmt::Write;

/// Reads NCCL topology XML.
pub fn parse(file: &str, data: &[u8]) -> Result<Topology, TopoError> {
    let root = xmlutil::parse(file, data)?;
    let ctx = Ctx { file, data };
    match root.name.as_str() {
        "system" => {}
        "graphs" => {
            return Err(TopoError::NcclGraphFile {
                file: file.to_string(),
            })
        }
        other => {
            return Err(ctx.err(
                &root,
                format!("root element <{other}> is not NCCL's <system>"),
            ))
        }
    }
    let mut topo = Topology::new();
    let mut nvlinks: Vec<(ObjId, &Elem, u32)> = Vec::new();
    let mut all = CpuSet::new();
    for cpu in root.children.iter().filter(|c| c.name == "cpu") {
        let numaid: u32 = ctx.num(cpu, "numaid")?.unwrap_or(0);
        let aff = match cpu.attr("affinity") {
            Some(a) => Bitmap::parse_mask(a).map_err(|e| ctx.err(cpu, format!("affinity: {e}")))?,
            None => Bitmap::new(),
        };
        let cpus = CpuSet::from_bitmap(aff);
        if cpus.is_infinite_or_huge() {
            return Err(ctx.err(cpu, "affinity mask is infinite or too large"));
        }
        all.or_assign(&cpus);
        let mut g = Object::new(ObjType::Group);
        g.subtype = Some("NCCLCpu".into());
        g.cpuset = cpus.clone();
        g.nodeset = NodeSet::single(numaid);
        g.attr = ObjAttr::Group {
            kind: 0,
            subkind: 0,
        };
        for (k, info) in [
            ("arch", "Architecture"),
            ("vendor", "CPUVendor"),
            ("familyid", "CPUFamilyNumber"),
            ("modelid", "CPUModelNumber"),
        ] {
            if let Some(v) = cpu.attr(k) {
                g.infos.push((info.into(), v.to_string()));
            }
        }
        let gid = topo.add(topo.root(), g);
        let mut numa = Object::new(ObjType::NUMANode).with_os_index(numaid);
        numa.cpuset = cpus.clone();
        numa.nodeset = NodeSet::single(numaid);
        numa.attr = ObjAttr::Numa {
            local_memory: 0,
            page_types: Vec::new(),
        };
        topo.add(gid, numa);
        for p in cpus.iter() {
            let mut pu = Object::new(ObjType::PU).with_os_index(p);
            pu.cpuset = CpuSet::single(p);
            topo.add(gid, pu);
        }
        for c in &cpu.children {
            match c.name.as_str() {
                "pci" => {
                    let addr = busid(&ctx, c)?;
                    let mut hb = Object::new(ObjType::Bridge);
                    hb.attr = ObjAttr::Bridge(BridgeInfo {
                        upstream: None,
                        domain: addr.domain,
                        secondary_bus: addr.bus,
                        subordinate_bus: addr.bus,
                        depth: 0,
                    });
                    let hb = topo.add(gid, hb);
                    pci(&ctx, c, &mut topo, hb, 1, &mut nvlinks)?;
                }
                "nic" => nic(&ctx, c, &mut topo, gid)?,
                _ => {}
            }
        }
    }
    let root_id = topo.root();
    topo.obj_mut(root_id).cpuset = all;
    topo.finalize();
    for (gpu, e, sm) in nvlinks {
        let target = busid(&ctx, e)?;
        let count: u32 = ctx.num(e, "count")?.unwrap_or(1);
        let tclass = e
            .attr("tclass")
            .and_then(|t| u32::from_str_radix(t.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let other = match topo.find_pci(target) {
            Some(o) => o,
            None if tclass >> 8 == 0x0680 => nvswitch(&mut topo, target),
            None => {
                tracing::warn!(file, "nvlink target {target} is not in the file; ignored");
                continue;
            }
        };
        if other == gpu {
            continue;
        }
        let per_link = if sm > 0 && sm < 70 { 20_000 } else { 25_000 };
        topo.links.push(Link {
            a: gpu,
            b: other,
            kind: LinkKind::NVLink,
            count,
            bandwidth_mbs: u64::from(count) * per_link,
        });
    }
    topo.finalize();
    topo.nvlink_matrix_from_links();
    Ok(topo)
}

trait Huge {
    fn is_infinite_or_huge(&self) -> bool;
}

impl Huge for CpuSet {
    fn is_infinite_or_huge(&self) -> bool {
        self.bitmap().is_infinite() || self.weight().unwrap_or(usize::MAX) > 1 << 20
    }
}

fn nvswitch(topo: &mut Topology, addr: PciAddr) -> ObjId {
    let mut hb = Object::new(ObjType::Bridge);
    hb.attr = ObjAttr::Bridge(BridgeInfo {
        upstream: None,
        domain: addr.domain,
        secondary_bus: addr.bus,
        subordinate_bus: addr.bus,
        depth: 0,
    });
    let root = topo.root();
    let hb = topo.add(root, hb);
    let mut o = Object::new(ObjType::PCIDev);
    o.subtype = Some("NVSwitch".into());
    o.attr = ObjAttr::Pci(PciInfo {
        addr,
        class_id: 0x0680,
        vendor_id: 0x10de,
        ..Default::default()
    });
    topo.add(hb, o)
}

fn busid(ctx: &Ctx, e: &Elem) -> Result<PciAddr, TopoError> {
    let key = if e.name == "nvlink" {
        "target"
    } else {
        "busid"
    };
    let b = ctx.req(e, key)?;
    b.parse().map_err(|m: String| ctx.err(e, m))
}

fn hex_attr(ctx: &Ctx, e: &Elem, k: &str) -> Result<u32, TopoError> {
    match e.attr(k) {
        None | Some("") => Ok(0),
        Some(v) => u32::from_str_radix(v.trim().trim_start_matches("0x"), 16)
            .map_err(|_| ctx.err(e, format!("attribute {k}={v:?} is not hex"))),
    }
}

fn pci<'a>(
    ctx: &Ctx,
    e: &'a Elem,
    topo: &mut Topology,
    parent: ObjId,
    depth: u32,
    nvlinks: &mut Vec<(ObjId, &'a Elem, u32)>,
) -> Result<(), TopoError> {
    if depth > 64 {
        return Err(ctx.err(e, "<pci> nested deeper than 64"));
    }
    let addr = busid(ctx, e)?;
    let class = hex_attr(ctx, e, "class")?;
    let gts: f32 = e
        .attr("link_speed")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let width: u8 = e
        .attr("link_width")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let eff = if gts <= 5.0 { 0.8 } else { 128.0 / 130.0 };
    let info = PciInfo {
        addr,
        class_id: (class >> 8) as u16,
        vendor_id: hex_attr(ctx, e, "vendor")? as u16,
        device_id: hex_attr(ctx, e, "device")? as u16,
        subvendor_id: hex_attr(ctx, e, "subsystem_vendor")? as u16,
        subdevice_id: hex_attr(ctx, e, "subsystem_device")? as u16,
        revision: 0,
        link_speed: gts * f32::from(width) * eff / 8.0,
        link_width: width,
        link_gts: gts,
    };
    let is_bridge = class >> 8 == 0x0604;
    let mut o;
    if is_bridge {
        o = Object::new(ObjType::Bridge);
        o.attr = ObjAttr::Bridge(BridgeInfo {
            upstream: Some(info),
            domain: addr.domain,
            secondary_bus: addr.bus,
            subordinate_bus: addr.bus,
            depth,
        });
    } else {
        o = Object::new(ObjType::PCIDev);
        if class >> 8 == 0x0680 {
            o.subtype = Some("NVSwitch".into()); // NCCL's rule: class 0x068000 is an NVSwitch
        }
        o.attr = ObjAttr::Pci(info);
    }
    let id = topo.add(parent, o);
    let mut has_gpu = false;
    for c in &e.children {
        match c.name.as_str() {
            "pci" => pci(ctx, c, topo, id, depth + 1, nvlinks)?,
            "nic" => nic(ctx, c, topo, id)?,
            "gpu" => {
                has_gpu = true;
                let dev = c.attr("dev").unwrap_or("0");
                let mut g = Object::new(ObjType::OSDev);
                g.name = Some(format!("cuda{dev}"));
                g.subtype = Some("CUDA".into());
                g.attr = ObjAttr::OsDev(OsDevType::CoProc);
                g.infos = c
                    .attrs
                    .iter()
                    .map(|(k, v)| (format!("NCCL_{k}"), v.clone()))
                    .collect();
                topo.add(id, g);
                let sm: u32 = ctx.num(c, "sm")?.unwrap_or(0);
                for l in c.children.iter().filter(|l| l.name == "nvlink") {
                    nvlinks.push((id, l, sm));
                }
            }
            _ => {}
        }
    }
    // NCCL fills <gpu> at run time; a bare 3D/VGA NVIDIA-style function is still a GPU.
    if !has_gpu && !is_bridge && class >> 16 == 0x03 {
        let n = topo
            .iter()
            .filter(|(_, o)| o.name.as_deref().is_some_and(|x| x.starts_with("cuda")))
            .count();
        let mut g = Object::new(ObjType::OSDev);
        g.name = Some(format!("cuda{n}"));
        g.subtype = Some("CUDA".into());
        g.attr = ObjAttr::OsDev(OsDevType::CoProc);
        topo.add(id, g);
    }
    Ok(())
}

/// Whether a NCCL net name is an RDMA device rather than a socket interface.
fn is_rdma(name: &str) -> bool {
    [
        "mlx", "ib", "efa", "hfi", "bnxt_re", "irdma", "qedr", "rdma", "roce",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

fn nic(ctx: &Ctx, e: &Elem, topo: &mut Topology, parent: ObjId) -> Result<(), TopoError> {
    for n in e.children.iter().filter(|n| n.name == "net") {
        let name = ctx.req(n, "name")?;
        let mut o = Object::new(ObjType::OSDev);
        o.name = Some(name.to_string());
        o.attr = ObjAttr::OsDev(if is_rdma(name) {
            OsDevType::OpenFabrics
        } else {
            OsDevType::Network
        });
        o.infos = n
            .attrs
            .iter()
            .filter(|(k, _)| k != "name")
            .map(|(k, v)| (format!("NCCL_{k}"), v.clone()))
            .collect();
        topo.add(parent, o);
    }
    Ok(())
}

/// Writes NCCL topology XML: one `<cpu>` per NUMA node with the I/O local to it, keeping
/// only the PCI paths that lead to GPUs, NICs and NVSwitches (as NCCL's own dumps do).
pub fn to_string(t: &Topology) -> String {
    let mut out = String::from("<system version=\"1\">\n");
    let mut numas = t.objects_of_type(ObjType::NUMANode);
    numas.sort_by_key(|n| t.obj(*n).os_index);
    let root_cpus = &t.obj(t.root()).cpuset;
    let words = root_cpus.iter().last().map_or(1, |m| (m as usize / 32) + 1);
    // Each CPU-side object with I/O below it goes to its first NUMA node (the first node
    // overall when it has none).
    let first_numa = numas.first().and_then(|n| t.obj(*n).os_index).unwrap_or(0);
    let holders: Vec<(u32, ObjId)> = t
        .iter()
        .filter(|(_, o)| o.kind.is_normal() && !o.io_children.is_empty())
        .map(|(id, o)| (o.nodeset.first().unwrap_or(first_numa), id))
        .collect();
    for n in &numas {
        let no = t.obj(*n);
        let os = no.os_index.unwrap_or(0);
        let mut attrs = format!(
            " numaid=\"{os}\" affinity=\"{}\"",
            no.cpuset.bitmap().to_nccl_mask(words)
        );
        for (info, k) in [
            ("Architecture", "arch"),
            ("CPUVendor", "vendor"),
            ("CPUFamilyNumber", "familyid"),
            ("CPUModelNumber", "modelid"),
        ] {
            let near = t
                .ancestors(*n)
                .into_iter()
                .find_map(|a| t.obj(a).info(info));
            if let Some(v) = near.or_else(|| t.iter().find_map(|(_, o)| o.info(info))) {
                let _ = write!(attrs, " {k}=\"{}\"", esc(v));
            }
        }
        let _ = writeln!(out, "  <cpu{attrs}>");
        for (_, id) in holders.iter().filter(|(h, _)| *h == os) {
            for io in &t.obj(*id).io_children {
                io_elem(t, *io, 2, &mut out);
            }
        }
        out.push_str("  </cpu>\n");
    }
    out.push_str("</system>\n");
    out
}

/// Whether an I/O subtree holds a GPU, a NIC or an NVSwitch: NCCL files show only those.
fn relevant(t: &Topology, id: ObjId) -> bool {
    let o = t.obj(id);
    if o.kind == ObjType::OSDev {
        return matches!(
            o.osdev_type(),
            Some(OsDevType::OpenFabrics | OsDevType::Network)
        );
    }
    t.is_gpu(id)
        || t.is_nic(id)
        || t.is_nvswitch(id)
        || o.io_children.iter().any(|c| relevant(t, *c))
}

fn io_elem(t: &Topology, id: ObjId, depth: usize, out: &mut String) {
    if !relevant(t, id) {
        return;
    }
    let o = t.obj(id);
    let pad = "  ".repeat(depth);
    match o.kind {
        ObjType::Bridge if o.is_host_bridge() => {
            for c in &o.io_children {
                io_elem(t, *c, depth, out);
            }
        }
        ObjType::Bridge | ObjType::PCIDev => {
            let mut p = o.pci().cloned().unwrap_or_default();
            if t.is_nvswitch(id) {
                p.class_id = 0x0680; // how NCCL recognises an NVSwitch
            }
            let speed = if p.link_gts > 0.0 {
                format!("{:.1} GT/s PCIe", p.link_gts)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "{pad}<pci busid=\"{}\" class=\"0x{:04x}00\" vendor=\"0x{:04x}\" device=\"0x{:04x}\" subsystem_vendor=\"0x{:04x}\" subsystem_device=\"0x{:04x}\" link_speed=\"{speed}\" link_width=\"{}\"",
                p.addr, p.class_id, p.vendor_id, p.device_id, p.subvendor_id, p.subdevice_id, p.link_width
            );
            let kids: Vec<ObjId> = o.io_children.clone();
            let is_gpu = t.is_gpu(id);
            if kids.is_empty() && !is_gpu {
                out.push_str("/>\n");
                return;
            }
            out.push_str(">\n");
            if is_gpu {
                gpu_elem(t, id, depth + 1, out);
            }
            let nets: Vec<ObjId> = kids
                .iter()
                .copied()
                .filter(|k| {
                    matches!(
                        t.obj(*k).osdev_type(),
                        Some(OsDevType::OpenFabrics | OsDevType::Network)
                    )
                })
                .collect();
            nic_elem(t, &nets, depth + 1, out);
            for k in kids.iter().filter(|k| t.obj(**k).kind != ObjType::OSDev) {
                io_elem(t, *k, depth + 1, out);
            }
            let _ = writeln!(out, "{pad}</pci>");
        }
        ObjType::OSDev
            if matches!(
                o.osdev_type(),
                Some(OsDevType::OpenFabrics | OsDevType::Network)
            ) =>
        {
            nic_elem(t, &[id], depth, out);
        }
        _ => {}
    }
}

fn gpu_elem(t: &Topology, id: ObjId, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let gpus = t.gpus();
    let index = gpus.iter().position(|g| *g == id).unwrap_or(0);
    let dev_os = t
        .osdevs_of(id)
        .into_iter()
        .find(|d| t.obj(*d).info("NCCL_dev").is_some());
    let mut attrs = String::new();
    match dev_os {
        Some(d) => {
            for (k, v) in &t.obj(d).infos {
                if let Some(k) = k.strip_prefix("NCCL_") {
                    let _ = write!(attrs, " {k}=\"{}\"", esc(v));
                }
            }
        }
        None => {
            let _ = write!(attrs, " dev=\"{index}\" rank=\"{index}\"");
        }
    }
    let links: Vec<(ObjId, u32)> = t
        .links
        .iter()
        .filter(|l| l.kind == LinkKind::NVLink && (l.a == id || l.b == id))
        .map(|l| (if l.a == id { l.b } else { l.a }, l.count))
        .collect();
    if links.is_empty() {
        let _ = writeln!(out, "{pad}<gpu{attrs}/>");
        return;
    }
    let _ = writeln!(out, "{pad}<gpu{attrs}>");
    for (other, count) in links {
        let o = t.obj(other);
        let (target, tclass) = match o.pci() {
            Some(p) => {
                let class = if t.is_nvswitch(other) {
                    0x0680
                } else {
                    p.class_id
                };
                (p.addr.to_string(), format!("0x{class:04x}00"))
            }
            None => continue,
        };
        let _ = writeln!(
            out,
            "{pad}  <nvlink target=\"{target}\" count=\"{count}\" tclass=\"{tclass}\"/>"
        );
    }
    let _ = writeln!(out, "{pad}</gpu>");
}

fn nic_elem(t: &Topology, nets: &[ObjId], depth: usize, out: &mut String) {
    if nets.is_empty() {
        return;
    }
    // NCCL lists RDMA devices when there are any; sockets otherwise.
    let rdma: Vec<ObjId> = nets
        .iter()
        .copied()
        .filter(|n| t.obj(*n).osdev_type() == Some(OsDevType::OpenFabrics))
        .collect();
    let chosen = if rdma.is_empty() { nets.to_vec() } else { rdma };
    let pad = "  ".repeat(depth);
    let _ = writeln!(out, "{pad}<nic>");
    for n in chosen {
        let o = t.obj(n);
        let mut attrs = format!(" name=\"{}\"", esc(o.name.as_deref().unwrap_or("")));
        for (k, v) in &o.infos {
            if let Some(k) = k.strip_prefix("NCCL_") {
                let _ = write!(attrs, " {k}=\"{}\"", esc(v));
            }
        }
        let _ = writeln!(out, "{pad}  <net{attrs}/>");
    }
    let _ = writeln!(out, "{pad}</nic>");
}
