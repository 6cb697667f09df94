//! hwloc XML import: the v2 format (`<topology version="2.0">`, NUMA nodes as memory
//! children, `<distances2>`), and the v1 format (NUMA nodes inside the CPU tree, `Cache`
//! objects with a depth, `<distances>` with a latency base).

use super::xmlutil::{self, Ctx, Elem};
use crate::bitmap::{CpuSet, NodeSet};
use crate::error::TopoError;
use crate::object::{
    BridgeInfo, CacheInfo, CacheType, ObjAttr, ObjId, ObjType, Object, OsDevType, PciAddr, PciInfo,
};
use crate::topology::{Distances, Link, LinkKind, Topology, DIST_MEANS_BANDWIDTH};
use std::collections::HashMap;

/// Reads hwloc XML (v1 or v2) from `data`; `file` names it in errors.
pub fn parse(file: &str, data: &[u8]) -> Result<Topology, TopoError> {
    let root = xmlutil::parse(file, data)?;
    let ctx = Ctx { file, data };
    match root.name.as_str() {
        "topology" => {}
        "graphs" => {
            return Err(TopoError::NcclGraphFile {
                file: file.to_string(),
            })
        }
        "system" => return Err(ctx.err(&root, "root <system> is NCCL topology XML, not hwloc XML")),
        other => {
            return Err(ctx.err(
                &root,
                format!("root element <{other}> is not hwloc's <topology>"),
            ))
        }
    }
    let v2 = root.attr("version").is_some_and(|v| !v.starts_with('1'));
    let mut b = Builder {
        ctx,
        topo: Topology::new(),
        gp: HashMap::new(),
        v1_numa: Vec::new(),
        v1_dist: Vec::new(),
        seen_root: false,
        v2,
    };
    let mut dist2 = Vec::new();
    for c in &root.children {
        match c.name.as_str() {
            "object" => {
                if b.seen_root {
                    return Err(b.ctx.err(
                        c,
                        "more than one top-level object (multi-machine v1 files are not supported)",
                    ));
                }
                b.seen_root = true;
                let r = b.topo.root();
                b.object(c, r, true)?;
            }
            "distances2" | "distances2hetero" => dist2.push(c),
            _ => {}
        }
    }
    if !b.seen_root {
        return Err(b.ctx.err(&root, "<topology> holds no <object>"));
    }
    if !v2 {
        b.place_v1_numa();
    }
    let Builder {
        ctx,
        mut topo,
        gp,
        v1_dist,
        ..
    } = b;
    topo.finalize();
    for d in dist2 {
        if let Some(m) = distances2(&ctx, d, &topo, &gp)? {
            topo.distances.push(m);
        }
    }
    for (holder, e) in v1_dist {
        if let Some(m) = distances_v1(&ctx, e, &topo, holder)? {
            topo.distances.push(m);
        }
    }
    links_from_distances(&mut topo);
    Ok(topo)
}

struct Builder<'a> {
    ctx: Ctx<'a>,
    topo: Topology,
    gp: HashMap<(ObjType, u64), ObjId>,
    /// v1 NUMA nodes with the I/O objects that were below them.
    v1_numa: Vec<(ObjId, Vec<ObjId>)>,
    v1_dist: Vec<(ObjId, &'a Elem)>,
    seen_root: bool,
    v2: bool,
}

impl<'a> Builder<'a> {
    fn object(&mut self, e: &'a Elem, parent: ObjId, is_root: bool) -> Result<ObjId, TopoError> {
        let obj = self.make(e)?;
        let kind = obj.kind;
        let id = if is_root {
            if kind != ObjType::Machine {
                return Err(self
                    .ctx
                    .err(e, format!("top-level object is a {kind}, expected Machine")));
            }
            let r = self.topo.root();
            *self.topo.obj_mut(r) = obj;
            r
        } else {
            self.topo.add(parent, obj)
        };
        if let Some(gp) = self.ctx.num::<u64>(e, "gp_index")? {
            self.gp.insert((kind, gp), id);
        }
        // A v1 NUMA node with children: hwloc 2 moves the children up to its parent.
        let v1_numa_parent =
            kind == ObjType::NUMANode && e.children.iter().any(|c| c.name == "object");
        let child_parent = if v1_numa_parent { parent } else { id };
        let io_before = self.topo.obj(child_parent).io_children.len();
        for c in &e.children {
            match c.name.as_str() {
                "object" => {
                    self.object(c, child_parent, false)?;
                }
                "info" => {
                    let k = self.ctx.req(c, "name")?.to_string();
                    let v = c.attr("value").unwrap_or("").to_string();
                    self.topo.obj_mut(id).infos.push((k, v));
                }
                "page_type" => {
                    let size = self.ctx.num::<u64>(c, "size")?.unwrap_or(0);
                    let count = self.ctx.num::<u64>(c, "count")?.unwrap_or(0);
                    if let ObjAttr::Numa { page_types, .. } = &mut self.topo.obj_mut(id).attr {
                        page_types.push((size, count));
                    }
                }
                "distances" => self.v1_dist.push((id, c)),
                _ => {}
            }
        }
        if !self.v2 && self.topo.obj(id).subtype.is_none() {
            // hwloc 1.x kept the subtype in a "Type" info; hwloc 2 reads it as the subtype.
            let t = self.topo.obj(id).info("Type").map(str::to_string);
            self.topo.obj_mut(id).subtype = t;
        }
        if kind == ObjType::NUMANode && !self.v2 {
            self.v1_numa.push((id, Vec::new()));
        }
        if v1_numa_parent {
            self.v1_numa.pop();
            let ios = self.topo.obj(child_parent).io_children[io_before..].to_vec();
            self.v1_numa.push((id, ios));
        }
        Ok(id)
    }

    fn make(&self, e: &Elem) -> Result<Object, TopoError> {
        let c = &self.ctx;
        let tname = c.req(e, "type")?;
        let kind = if tname == "Cache" {
            let depth = c.num::<u32>(e, "depth")?.unwrap_or(0);
            let ct = CacheType::from_code(c.num::<u32>(e, "cache_type")?.unwrap_or(0))
                .unwrap_or(CacheType::Unified);
            ObjType::cache(depth, ct)
                .ok_or_else(|| c.err(e, format!("cache depth {depth} unsupported")))?
        } else {
            tname.parse::<ObjType>().map_err(|m| c.err(e, m))?
        };
        let mut o = Object::new(kind);
        o.os_index = c.num::<u32>(e, "os_index")?;
        let mask = |name: &str| -> Result<Option<crate::bitmap::Bitmap>, TopoError> {
            match e.attr(name) {
                None => Ok(None),
                Some(v) => crate::bitmap::Bitmap::parse_mask(v)
                    .map(Some)
                    .map_err(|x| c.err(e, format!("attribute {name}: {x}"))),
            }
        };
        if let Some(b) = mask("cpuset")? {
            o.cpuset = CpuSet::from_bitmap(b);
        }
        if let Some(b) = mask("nodeset")? {
            o.nodeset = NodeSet::from_bitmap(b);
        }
        o.name = e.attr("name").map(str::to_string);
        o.subtype = e.attr("subtype").map(str::to_string);
        o.attr = match kind {
            ObjType::NUMANode => ObjAttr::Numa {
                local_memory: c.num::<u64>(e, "local_memory")?.unwrap_or(0),
                page_types: Vec::new(),
            },
            k if k.is_cache() => ObjAttr::Cache(CacheInfo {
                size: c.num::<u64>(e, "cache_size")?.unwrap_or(0),
                depth: c.num::<u32>(e, "depth")?.or(k.cache_level()).unwrap_or(0),
                linesize: c.num::<u32>(e, "cache_linesize")?.unwrap_or(0),
                associativity: c.num::<i32>(e, "cache_associativity")?.unwrap_or(0),
                cache_type: CacheType::from_code(c.num::<u32>(e, "cache_type")?.unwrap_or(0))
                    .unwrap_or(CacheType::Unified),
            }),
            ObjType::Group => ObjAttr::Group {
                kind: c.num::<u32>(e, "kind")?.unwrap_or(0),
                subkind: c.num::<u32>(e, "subkind")?.unwrap_or(0),
            },
            ObjType::PCIDev => ObjAttr::Pci(self.pci(e)?),
            ObjType::Bridge => ObjAttr::Bridge(self.bridge(e)?),
            ObjType::OSDev => {
                let code = c.num::<u32>(e, "osdev_type")?.unwrap_or(u32::MAX);
                let t = OsDevType::from_code(code)
                    .ok_or_else(|| c.err(e, format!("unknown osdev_type {code}")))?;
                ObjAttr::OsDev(t)
            }
            _ => ObjAttr::None,
        };
        Ok(o)
    }

    fn pci(&self, e: &Elem) -> Result<PciInfo, TopoError> {
        let c = &self.ctx;
        let busid = c.req(e, "pci_busid")?;
        let addr: PciAddr = busid.parse().map_err(|m: String| c.err(e, m))?;
        let mut p = PciInfo {
            addr,
            ..Default::default()
        };
        if let Some(t) = e.attr("pci_type") {
            // "0604 [1014:04c1] [0000:0000] 00"
            let bad = || c.err(e, format!("bad pci_type {t:?}"));
            let f: Vec<&str> = t
                .split([' ', '[', ']', ':'])
                .filter(|s| !s.is_empty())
                .collect();
            if f.len() < 6 {
                return Err(bad());
            }
            let h16 = |s: &str| u16::from_str_radix(s, 16).map_err(|_| bad());
            p.class_id = h16(f[0])?;
            p.vendor_id = h16(f[1])?;
            p.device_id = h16(f[2])?;
            p.subvendor_id = h16(f[3])?;
            p.subdevice_id = h16(f[4])?;
            p.revision = u8::from_str_radix(f[5], 16).map_err(|_| bad())?;
        }
        p.link_speed = c.num::<f32>(e, "pci_link_speed")?.unwrap_or(0.0);
        Ok(p)
    }

    fn bridge(&self, e: &Elem) -> Result<BridgeInfo, TopoError> {
        let c = &self.ctx;
        let bt = e.attr("bridge_type").unwrap_or("1-1");
        let upstream = if bt.starts_with('0') {
            None
        } else {
            Some(self.pci(e)?)
        };
        let mut b = BridgeInfo {
            upstream,
            depth: c.num::<u32>(e, "depth")?.unwrap_or(0),
            ..Default::default()
        };
        if let Some(bp) = e.attr("bridge_pci") {
            // "0000:[00-01]"
            let bad = || c.err(e, format!("bad bridge_pci {bp:?}"));
            let (dom, range) = bp.split_once(':').ok_or_else(bad)?;
            let range = range.trim_start_matches('[').trim_end_matches(']');
            let (lo, hi) = range.split_once('-').ok_or_else(bad)?;
            b.domain = u32::from_str_radix(dom, 16).map_err(|_| bad())?;
            b.secondary_bus = u8::from_str_radix(lo, 16).map_err(|_| bad())?;
            b.subordinate_bus = u8::from_str_radix(hi, 16).map_err(|_| bad())?;
        }
        Ok(b)
    }

    /// Moves each v1 NUMA node (and the I/O that was below it) to the deepest object whose
    /// cpuset first equals the node's, as hwloc 2 does when it reads a v1 file.
    fn place_v1_numa(&mut self) {
        for (numa, ios) in std::mem::take(&mut self.v1_numa) {
            let target = place_memory(&self.topo, numa);
            if Some(target) != self.topo.obj(numa).parent {
                self.topo.reparent(numa, target);
                for io in ios {
                    self.topo.reparent(io, target);
                }
            }
            // hwloc 1.x wrote CPU-less memory (KNL MCDRAM) with an empty cpuset; hwloc 2
            // gives it the cpuset of the object it is attached to.
            if self.topo.obj(numa).cpuset.is_empty() {
                let set = self.topo.obj(target).cpuset.clone();
                self.topo.obj_mut(numa).cpuset = set;
            }
        }
    }
}

/// Where a memory object belongs: descend from its parent into the child that contains its
/// cpuset, stopping at the first object below the Machine whose cpuset equals it (never a PU).
pub(crate) fn place_memory(topo: &Topology, numa: ObjId) -> ObjId {
    let set = topo.obj(numa).cpuset.clone();
    let mut cur = topo.obj(numa).parent.unwrap_or(topo.root());
    if set.is_empty() {
        return cur;
    }
    // The Machine is passed whenever a child holds the same CPUs (hwloc shows a single
    // NUMA node under the Package, not the Machine).
    while cur == topo.root() || topo.obj(cur).cpuset != set {
        let next = topo.obj(cur).children.iter().copied().find(|c| {
            let o = topo.obj(*c);
            o.kind != ObjType::PU && set.is_subset(&o.cpuset)
        });
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    cur
}

fn distances2(
    ctx: &Ctx,
    e: &Elem,
    topo: &Topology,
    gp: &HashMap<(ObjType, u64), ObjId>,
) -> Result<Option<Distances>, TopoError> {
    let n: usize = ctx
        .num(e, "nbobjs")?
        .ok_or_else(|| ctx.err(e, "<distances2> lacks nbobjs"))?;
    if n > 65536 {
        return Err(ctx.err(e, "distance matrix too large"));
    }
    let kind: u64 = ctx.num(e, "kind")?.unwrap_or(0);
    let mut idx: Vec<&str> = Vec::new();
    let mut vals: Vec<u64> = Vec::new();
    for c in &e.children {
        match c.name.as_str() {
            "indexes" => idx.extend(c.text.split_whitespace()),
            "u64values" => {
                for v in c.text.split_whitespace() {
                    vals.push(
                        v.parse()
                            .map_err(|_| ctx.err(c, format!("bad distance value {v:?}")))?,
                    );
                }
            }
            _ => {}
        }
    }
    if idx.len() != n || vals.len() != n * n {
        return Err(ctx.err(
            e,
            format!(
                "distance matrix wants {n} indexes and {} values, found {} and {}",
                n * n,
                idx.len(),
                vals.len()
            ),
        ));
    }
    let hetero = e.name == "distances2hetero";
    let by_os = e.attr("indexing") == Some("os");
    let ty: Option<ObjType> = if hetero {
        None
    } else {
        Some(ctx.req(e, "type")?.parse().map_err(|m| ctx.err(e, m))?)
    };
    let mut objects = Vec::with_capacity(n);
    for s in idx {
        let (t, i) = match ty {
            Some(t) => (t, s),
            None => {
                let (t, i) = s
                    .split_once(':')
                    .ok_or_else(|| ctx.err(e, format!("bad hetero index {s:?}")))?;
                (t.parse().map_err(|m| ctx.err(e, m))?, i)
            }
        };
        let i: u64 = i
            .parse()
            .map_err(|_| ctx.err(e, format!("bad index {s:?}")))?;
        let found = if by_os {
            topo.iter()
                .find(|(_, o)| o.kind == t && o.os_index == Some(i as u32))
                .map(|(id, _)| id)
        } else {
            gp.get(&(t, i)).copied()
        };
        match found {
            Some(id) => objects.push(id),
            None => {
                tracing::warn!(
                    file = ctx.file,
                    "distance matrix names missing object {s}; matrix dropped"
                );
                return Ok(None);
            }
        }
    }
    Ok(Some(Distances {
        name: e.attr("name").unwrap_or("").to_string(),
        kind,
        objects,
        values: vals,
    }))
}

fn distances_v1(
    ctx: &Ctx,
    e: &Elem,
    topo: &Topology,
    holder: ObjId,
) -> Result<Option<Distances>, TopoError> {
    let n: usize = ctx.num(e, "nbobjs")?.unwrap_or(0);
    let base: f64 = ctx.num(e, "latency_base")?.unwrap_or(1.0);
    let vals: Vec<u64> = e
        .children
        .iter()
        .filter(|c| c.name == "latency")
        .map(|c| {
            ctx.num::<f64>(c, "value")
                .map(|v| (v.unwrap_or(0.0) * base).round() as u64)
        })
        .collect::<Result<_, _>>()?;
    let hs = &topo.obj(holder).nodeset;
    let mut numas: Vec<ObjId> = topo.objects_of_type(ObjType::NUMANode);
    numas.retain(|i| topo.obj(*i).nodeset.is_subset(hs));
    if numas.len() != n || vals.len() != n * n {
        tracing::warn!(
            file = ctx.file,
            "v1 distance matrix of {n} objects does not match the NUMA nodes; dropped"
        );
        return Ok(None);
    }
    Ok(Some(Distances {
        name: "NUMALatency".into(),
        kind: 1 | 4,
        objects: numas,
        values: vals,
    }))
}

/// Bonded NVLink count from a bandwidth in MB/s: 25 GB/s per link for NVLink 2.0 and
/// later, 20 GB/s for NVLink 1.0 (used when only that divides evenly).
pub fn nvlink_count(bandwidth_mbs: u64) -> u32 {
    if bandwidth_mbs == 0 {
        0
    } else if bandwidth_mbs % 25_000 == 0 {
        (bandwidth_mbs / 25_000) as u32
    } else if bandwidth_mbs % 20_000 == 0 {
        (bandwidth_mbs / 20_000) as u32
    } else {
        ((bandwidth_mbs as f64 / 25_000.0).round() as u32).max(1)
    }
}

/// Turns NVLink/xGMI bandwidth matrices into links between PCI devices (or CPU objects).
pub(crate) fn links_from_distances(topo: &mut Topology) {
    let mut links = Vec::new();
    for d in &topo.distances {
        let kind = if d.name.starts_with("NVLink") {
            LinkKind::NVLink
        } else if d.name.starts_with("XGMI") {
            LinkKind::Xgmi
        } else {
            continue;
        };
        if d.kind & DIST_MEANS_BANDWIDTH == 0 {
            continue;
        }
        let ends: Vec<ObjId> = d
            .objects
            .iter()
            .map(|o| topo.pci_parent(*o).unwrap_or(*o))
            .collect();
        let n = ends.len();
        for i in 0..n {
            for j in i + 1..n {
                let bw = d.get(i, j).max(d.get(j, i));
                if bw == 0 || ends[i] == ends[j] {
                    continue;
                }
                let count = match kind {
                    LinkKind::NVLink => nvlink_count(bw),
                    LinkKind::Xgmi => 1,
                };
                links.push(Link {
                    a: ends[i],
                    b: ends[j],
                    kind,
                    count,
                    bandwidth_mbs: bw,
                });
            }
        }
    }
    topo.links.extend(links);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvlink_counts_from_bandwidth() {
        assert_eq!(nvlink_count(0), 0);
        assert_eq!(nvlink_count(20_000), 1); // NVLink 1.0
        assert_eq!(nvlink_count(40_000), 2); // P100 pair (S822LC)
        assert_eq!(nvlink_count(80_000), 4);
        assert_eq!(nvlink_count(25_000), 1); // NVLink 2.0+
        assert_eq!(nvlink_count(50_000), 2);
        assert_eq!(nvlink_count(150_000), 6); // V100 to six NVSwitches
        assert_eq!(nvlink_count(450_000), 18); // H100
        assert_eq!(nvlink_count(26_000), 1);
    }

    #[test]
    fn v1_numa_with_children_moves_up() {
        let xml = br#"<topology><object type="Machine" os_index="0" cpuset="0x3" nodeset="0x1">
          <object type="NUMANode" os_index="0" cpuset="0x3" nodeset="0x1" local_memory="1024">
            <object type="Socket" os_index="0" cpuset="0x3" nodeset="0x1">
              <object type="Cache" cpuset="0x3" nodeset="0x1" cache_size="1024" depth="2" cache_type="0">
                <object type="Core" os_index="0" cpuset="0x3" nodeset="0x1">
                  <object type="PU" os_index="0" cpuset="0x1"/><object type="PU" os_index="1" cpuset="0x2"/>
                </object></object></object></object></object></topology>"#;
        let t = parse("v1.xml", xml).unwrap();
        let numa = t.objects_of_type(ObjType::NUMANode)[0];
        assert_eq!(t.obj(t.obj(numa).parent.unwrap()).kind, ObjType::Package);
        assert_eq!(t.counts().caches["L2Cache"], 1);
    }
}
