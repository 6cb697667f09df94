//! Text renderings: an lstopo-like tree and JSON.

use crate::object::{ObjAttr, ObjId, ObjType};
use crate::topology::Topology;
use serde::Serialize;
use std::fmt::Write;

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn short_type(t: ObjType) -> &'static str {
    match t {
        ObjType::L1Cache => "L1d",
        ObjType::L1iCache => "L1i",
        ObjType::L2Cache => "L2",
        ObjType::L2iCache => "L2i",
        ObjType::L3Cache => "L3",
        ObjType::L3iCache => "L3i",
        ObjType::L4Cache => "L4",
        ObjType::L5Cache => "L5",
        ObjType::NUMANode => "NUMANode",
        other => other.name(),
    }
}

/// One line describing an object, lstopo style.
pub fn describe(t: &Topology, id: ObjId) -> String {
    let o = t.obj(id);
    let mut s = String::new();
    match &o.attr {
        ObjAttr::Bridge(b) => match &b.upstream {
            None => {
                let _ = write!(s, "HostBridge L#{}", o.logical_index);
            }
            Some(p) => {
                let _ = write!(s, "PCIBridge L#{} {}", o.logical_index, p.addr);
            }
        },
        ObjAttr::Pci(p) => {
            let _ = write!(
                s,
                "PCI L#{} {} ({})",
                o.logical_index,
                p.addr,
                p.class_name()
            );
            if p.link_speed > 0.0 {
                let _ = write!(s, " link={:.2}GB/s", p.link_speed);
            }
            if let Some(m) = o.info("GPUModel").or(o.info("PCIDevice")) {
                let _ = write!(s, " \"{m}\"");
            }
        }
        ObjAttr::OsDev(k) => {
            let _ = write!(
                s,
                "{} L#{} \"{}\"",
                k.name(),
                o.logical_index,
                o.name.as_deref().unwrap_or("?")
            );
        }
        _ => {
            let _ = write!(s, "{} L#{}", short_type(o.kind), o.logical_index);
            let mut extra: Vec<String> = Vec::new();
            if let Some(i) = o.os_index {
                if !matches!(o.kind, ObjType::Machine) {
                    extra.push(format!("P#{i}"));
                }
            }
            if let Some(m) = o.local_memory() {
                extra.push(human_bytes(m));
            }
            if let Some(c) = o.cache() {
                extra.push(human_bytes(c.size));
            }
            if o.kind == ObjType::Machine {
                let total: u64 = t.iter().filter_map(|(_, x)| x.local_memory()).sum();
                extra.push(format!("total={}", human_bytes(total)));
            }
            if let Some(st) = &o.subtype {
                extra.push(st.clone());
            }
            if !extra.is_empty() {
                let _ = write!(s, " ({})", extra.join(" "));
            }
        }
    }
    s
}

/// An lstopo-like indented tree of every object. Like lstopo, a chain of objects that
/// each have a single child and nothing else is printed on one line joined by ` + `.
pub fn tree(t: &Topology) -> String {
    let mut out = String::new();
    let mut stack = vec![(t.root(), 0usize)];
    while let Some((first, depth)) = stack.pop() {
        let mut line = describe(t, first);
        let mut id = first;
        while id != t.root() {
            let o = t.obj(id);
            let lone = o.children.len() == 1
                && o.memory_children.is_empty()
                && o.io_children.is_empty()
                && o.misc_children.is_empty();
            if !lone {
                break;
            }
            id = o.children[0];
            line.push_str(" + ");
            line.push_str(&describe(t, id));
        }
        let _ = writeln!(out, "{}{}", "  ".repeat(depth), line);
        let kids: Vec<ObjId> = t.all_children(id).collect();
        for k in kids.into_iter().rev() {
            stack.push((k, depth + 1));
        }
    }
    if !t.distances.is_empty() {
        for d in &t.distances {
            let _ = writeln!(
                out,
                "distances {} (kind {}), {} objects:",
                d.name,
                d.kind,
                d.objects.len()
            );
            let n = d.objects.len();
            for i in 0..n {
                let row: Vec<String> = (0..n).map(|j| d.get(i, j).to_string()).collect();
                let _ = writeln!(out, "  {:>16} {}", t.label(d.objects[i]), row.join(" "));
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonObj<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    logical_index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtype: Option<&'a str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    cpuset: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    nodeset: String,
    #[serde(skip_serializing_if = "matches_none")]
    attr: &'a ObjAttr,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    infos: &'a Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<JsonObj<'a>>,
}

fn matches_none(a: &&ObjAttr) -> bool {
    matches!(a, ObjAttr::None)
}

fn json_obj(t: &Topology, id: ObjId) -> JsonObj<'_> {
    let o = t.obj(id);
    JsonObj {
        kind: o.kind.name(),
        logical_index: o.logical_index,
        os_index: o.os_index,
        name: o.name.as_deref(),
        subtype: o.subtype.as_deref(),
        cpuset: o.cpuset.to_list_string(),
        nodeset: o.nodeset.to_list_string(),
        attr: &o.attr,
        infos: &o.infos,
        children: t.all_children(id).map(|c| json_obj(t, c)).collect(),
    }
}

/// The topology as a nested JSON document (objects, counts, distances, links).
pub fn json(t: &Topology) -> String {
    let distances: Vec<serde_json::Value> = t
        .distances
        .iter()
        .map(|d| {
            let n = d.objects.len();
            serde_json::json!({
                "name": d.name,
                "kind": d.kind,
                "objects": d.objects.iter().map(|o| t.label(*o)).collect::<Vec<_>>(),
                "matrix": (0..n).map(|i| (0..n).map(|j| d.get(i, j)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let links: Vec<serde_json::Value> = t
        .links
        .iter()
        .map(|l| {
            serde_json::json!({
                "a": t.label(l.a), "b": t.label(l.b), "kind": l.kind, "count": l.count, "bandwidth_mbs": l.bandwidth_mbs,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "counts": t.counts(),
        "root": json_obj(t, t.root()),
        "distances": distances,
        "links": links,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
