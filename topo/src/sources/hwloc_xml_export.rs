//! hwloc XML v2 export, readable by `lstopo -i FILE` (hwloc 2.x).

use super::xmlutil::esc;
use crate::object::{ObjAttr, ObjId, ObjType};
use crate::topology::{Topology, DIST_HETEROGENEOUS};
use std::fmt::Write;

/// The topology as hwloc XML v2. Objects get `gp_index` = arena index + 1.
pub fn to_string(t: &Topology) -> String {
    let mut out = String::with_capacity(t.len() * 200);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n<topology version=\"2.0\">\n");
    object(t, t.root(), 1, &mut out);
    for d in &t.distances {
        let n = d.objects.len();
        let hetero = d.kind & DIST_HETEROGENEOUS != 0
            || d.objects
                .windows(2)
                .any(|w| t.obj(w[0]).kind != t.obj(w[1]).kind);
        let gp = |o: ObjId| o.index() + 1;
        if hetero {
            let _ = writeln!(
                out,
                "  <distances2hetero nbobjs=\"{n}\" kind=\"{}\" name=\"{}\">",
                d.kind | DIST_HETEROGENEOUS,
                esc(&d.name)
            );
            let idx: Vec<String> = d
                .objects
                .iter()
                .map(|o| format!("{}:{}", t.obj(*o).kind, gp(*o)))
                .collect();
            chunks(&mut out, "indexes", &idx);
        } else {
            let kind = d
                .objects
                .first()
                .map(|o| t.obj(*o).kind)
                .unwrap_or(ObjType::NUMANode);
            let by_os = d.objects.iter().all(|o| t.obj(*o).os_index.is_some());
            let idx: Vec<String> = d
                .objects
                .iter()
                .map(|o| {
                    if by_os {
                        t.obj(*o).os_index.unwrap_or(0).to_string()
                    } else {
                        gp(*o).to_string()
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "  <distances2 type=\"{kind}\" nbobjs=\"{n}\" kind=\"{}\" name=\"{}\" indexing=\"{}\">",
                d.kind,
                esc(&d.name),
                if by_os { "os" } else { "gp" }
            );
            chunks(&mut out, "indexes", &idx);
        }
        let vals: Vec<String> = d.values.iter().map(u64::to_string).collect();
        chunks(&mut out, "u64values", &vals);
        out.push_str(if hetero {
            "  </distances2hetero>\n"
        } else {
            "  </distances2>\n"
        });
    }
    out.push_str("</topology>\n");
    out
}

/// Writes values ten per element, as hwloc does, with `length` = text length.
fn chunks(out: &mut String, tag: &str, items: &[String]) {
    for c in items.chunks(10) {
        let mut text = String::new();
        for i in c {
            text.push_str(i);
            text.push(' ');
        }
        let _ = writeln!(
            out,
            "    <{tag} length=\"{}\">{}</{tag}>",
            text.len(),
            esc(&text)
        );
    }
}

fn object(t: &Topology, id: ObjId, depth: usize, out: &mut String) {
    let o = t.obj(id);
    let pad = "  ".repeat(depth);
    let _ = write!(out, "{pad}<object type=\"{}\"", o.kind);
    if let Some(i) = o.os_index {
        if !o.kind.is_io() {
            let _ = write!(out, " os_index=\"{i}\"");
        }
    }
    if !o.kind.is_io() && o.kind != ObjType::Misc {
        let c = o.cpuset.to_mask_string();
        let n = o.nodeset.to_mask_string();
        let _ = write!(out, " cpuset=\"{c}\" complete_cpuset=\"{c}\"");
        if id == t.root() {
            let _ = write!(out, " allowed_cpuset=\"{c}\"");
        }
        let _ = write!(out, " nodeset=\"{n}\" complete_nodeset=\"{n}\"");
        if id == t.root() {
            let _ = write!(out, " allowed_nodeset=\"{n}\"");
        }
    }
    let _ = write!(out, " gp_index=\"{}\"", id.index() + 1);
    if let Some(n) = &o.name {
        let _ = write!(out, " name=\"{}\"", esc(n));
    }
    if let Some(s) = &o.subtype {
        let _ = write!(out, " subtype=\"{}\"", esc(s));
    }
    let pci_attrs = |p: &crate::object::PciInfo| {
        format!(
            " pci_busid=\"{}\" pci_type=\"{:04x} [{:04x}:{:04x}] [{:04x}:{:04x}] {:02x}\" pci_link_speed=\"{:.6}\"",
            p.addr, p.class_id, p.vendor_id, p.device_id, p.subvendor_id, p.subdevice_id, p.revision, p.link_speed
        )
    };
    match &o.attr {
        ObjAttr::Numa { local_memory, .. } => {
            let _ = write!(out, " local_memory=\"{local_memory}\"");
        }
        ObjAttr::Cache(c) => {
            let _ = write!(
                out,
                " cache_size=\"{}\" depth=\"{}\" cache_linesize=\"{}\" cache_associativity=\"{}\" cache_type=\"{}\"",
                c.size,
                c.depth,
                c.linesize,
                c.associativity,
                c.cache_type.code()
            );
        }
        ObjAttr::Group { kind, subkind } => {
            let _ = write!(out, " kind=\"{kind}\" subkind=\"{subkind}\"");
        }
        ObjAttr::Bridge(b) => {
            let up = if b.upstream.is_some() { 1 } else { 0 };
            let _ = write!(
                out,
                " bridge_type=\"{up}-1\" depth=\"{}\" bridge_pci=\"{:04x}:[{:02x}-{:02x}]\"",
                b.depth, b.domain, b.secondary_bus, b.subordinate_bus
            );
            if let Some(p) = &b.upstream {
                out.push_str(&pci_attrs(p));
            }
        }
        ObjAttr::Pci(p) => out.push_str(&pci_attrs(p)),
        ObjAttr::OsDev(k) => {
            let _ = write!(out, " osdev_type=\"{}\"", k.code());
        }
        ObjAttr::None => {}
    }
    let kids: Vec<ObjId> = t.all_children(id).collect();
    let pages = match &o.attr {
        ObjAttr::Numa { page_types, .. } => page_types.as_slice(),
        _ => &[],
    };
    if kids.is_empty() && o.infos.is_empty() && pages.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    for (size, count) in pages {
        let _ = writeln!(out, "{pad}  <page_type size=\"{size}\" count=\"{count}\"/>");
    }
    for (k, v) in &o.infos {
        let _ = writeln!(
            out,
            "{pad}  <info name=\"{}\" value=\"{}\"/>",
            esc(k),
            esc(v)
        );
    }
    for k in kids {
        object(t, k, depth + 1, out);
    }
    let _ = writeln!(out, "{pad}</object>");
}
