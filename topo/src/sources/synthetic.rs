//! hwloc synthetic topology strings: `pack:2 numa:2 core:8 pu:2`,
//! `pack:2 [numa(memory=128GiB)] l3:4(size=32MiB) core:4 pu:2`, `group:4 ...`.
//!
//! Rules copied from hwloc's behaviour (checked against `lstopo-no-graphics -i STRING`):
//! a `numa:N` level becomes N Groups each holding one NUMA node; `[numa(...)]` attaches
//! NUMA nodes to every object of the level before it; a Group whose CPUs equal its parent's
//! or its only child's is dropped; each NUMA node hangs off the highest object whose CPUs
//! equal its own; without any NUMA node the Machine gets one of 1 GiB; the last level must
//! be `pu`. Default cache sizes are hwloc's (L1 32 KiB, L2 4 MiB, L3 16 MiB, L4 64 MiB,
//! L5 256 MiB).

use crate::bitmap::{CpuSet, NodeSet};
use crate::error::TopoError;
use crate::object::{CacheInfo, CacheType, ObjAttr, ObjType, Object};
use crate::topology::Topology;

/// Name used for synthetic strings in error messages.
pub const SYNTHETIC_FILE: &str = "<synthetic>";

/// Most PUs a synthetic string may describe: every object carries cpusets as wide as the
/// machine, so building costs grow with the square of the PU count (82,820 PUs took over 10 s
/// and most of a GB, found by the `synthetic` fuzz target). 16,384 is several times the
/// largest single-system machine hwloc ships a description of.
const MAX_PUS: u64 = 1 << 14;

#[derive(Clone, Debug)]
struct Level {
    kind: ObjType,
    count: u32,
    size: Option<u64>,
    memory: Option<u64>,
    /// Memory children given as `[numa(...)]` after this level.
    mems: Vec<u64>,
}

/// Whether `s` looks like a synthetic string rather than a file name.
pub fn looks_synthetic(s: &str) -> bool {
    let t = s.trim();
    !t.is_empty()
        && !t.contains('/')
        && t.split_whitespace()
            .all(|w| w.contains(':') || w.starts_with('['))
}

/// Builds a topology from a synthetic string.
pub fn parse(s: &str) -> Result<Topology, TopoError> {
    let (top_mems, levels) = parse_levels(s)?;
    let mut next_pu = 0u32;
    let mut next_numa = 0u32;
    let mut tree = build(&levels, 0, &mut next_pu, &mut next_numa, &top_mems)?;
    if next_numa == 0 {
        tree.mems.push(Node::numa(0, 1 << 30, tree.lo, tree.hi));
    }
    // Pull every NUMA node out, drop redundant groups, then hang NUMA nodes back.
    let mut numas = Vec::new();
    strip_mems(&mut tree, &mut numas);
    let full = (tree.lo, tree.hi);
    tree.children = tree
        .children
        .drain(..)
        .flat_map(|c| normalize(c, full))
        .collect();
    numas.sort_by_key(|n| n.os);
    for n in numas {
        place(&mut tree, n);
    }
    let mut topo = Topology::new();
    let root = topo.root();
    topo.obj_mut(root).cpuset = range_set(tree.lo, tree.hi);
    topo.obj_mut(root)
        .infos
        .push(("Backend".into(), "Synthetic".into()));
    topo.obj_mut(root)
        .infos
        .push(("SyntheticDescription".into(), s.trim().to_string()));
    for m in tree.mems {
        emit(&mut topo, root, m);
    }
    for c in tree.children {
        emit(&mut topo, root, c);
    }
    topo.finalize();
    Ok(topo)
}

fn perr(s: &str, off: usize, msg: impl Into<String>) -> TopoError {
    TopoError::at_offset(SYNTHETIC_FILE, s.as_bytes(), off, msg)
}

fn type_of(word: &str) -> Option<ObjType> {
    let w = word.to_ascii_lowercase();
    Some(match w.as_str() {
        "p" | "pack" | "package" | "socket" => ObjType::Package,
        "die" => ObjType::Die,
        "group" | "group0" => ObjType::Group,
        "numa" | "node" | "numanode" => ObjType::NUMANode,
        "core" => ObjType::Core,
        "pu" | "thread" => ObjType::PU,
        "l1" | "l1d" | "l1cache" | "l1dcache" => ObjType::L1Cache,
        "l1i" | "l1icache" => ObjType::L1iCache,
        "l2" | "l2d" | "l2cache" | "l2dcache" => ObjType::L2Cache,
        "l2i" | "l2icache" => ObjType::L2iCache,
        "l3" | "l3d" | "l3cache" | "l3dcache" => ObjType::L3Cache,
        "l3i" | "l3icache" => ObjType::L3iCache,
        "l4" | "l4cache" => ObjType::L4Cache,
        "l5" | "l5cache" => ObjType::L5Cache,
        _ => return None,
    })
}

/// Reads `32MiB`, `1GB`, `4096`.
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// Splits `name:count(attrs)` or `name(attrs)`; returns (name, count, attrs, attrs offset).
fn split_token(tok: &str) -> (&str, Option<&str>, Option<&str>, usize) {
    let (head, attrs, aoff) = match tok.find('(') {
        Some(p) => (&tok[..p], Some(tok[p + 1..].trim_end_matches(')')), p + 1),
        None => (tok, None, 0),
    };
    match head.split_once(':') {
        Some((n, c)) => (n, Some(c), attrs, aoff),
        None => (head, None, attrs, aoff),
    }
}

fn parse_attrs(
    s: &str,
    off: usize,
    attrs: &str,
    kind: ObjType,
) -> Result<(Option<u64>, Option<u64>), TopoError> {
    let (mut size, mut memory) = (None, None);
    let mut o = off;
    for kv in attrs.split(',') {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| perr(s, o, format!("attribute {kv:?} is not key=value")))?;
        let val = parse_size(v).ok_or_else(|| perr(s, o, format!("bad size {v:?}")))?;
        match k.trim() {
            "size" if kind.is_cache() => size = Some(val),
            "memory" if kind == ObjType::NUMANode => memory = Some(val),
            other => {
                return Err(perr(
                    s,
                    o,
                    format!("unknown attribute {other:?} for {kind}"),
                ))
            }
        }
        o += kv.len() + 1;
    }
    Ok((size, memory))
}

fn parse_levels(s: &str) -> Result<(Vec<u64>, Vec<Level>), TopoError> {
    let mut levels: Vec<Level> = Vec::new();
    let mut top_mems = Vec::new();
    let mut pos = 0;
    for tok in s.split_whitespace() {
        let off = pos + s[pos..].find(tok).unwrap_or(0);
        pos = off + tok.len();
        if let Some(inner) = tok.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| perr(s, off, "memory child lacks closing ']'"))?;
            let (name, count, attrs, aoff) = split_token(inner);
            if type_of(name) != Some(ObjType::NUMANode) || count.is_some() {
                return Err(perr(
                    s,
                    off,
                    format!("memory child {inner:?} must be [numa] or [numa(memory=SIZE)]"),
                ));
            }
            let (_, memory) = match attrs {
                Some(a) => parse_attrs(s, off + 1 + aoff, a, ObjType::NUMANode)?,
                None => (None, None),
            };
            let m = memory.unwrap_or(1 << 30);
            match levels.last_mut() {
                Some(l) => l.mems.push(m),
                None => top_mems.push(m),
            }
            continue;
        }
        let (name, count, attrs, aoff) = split_token(tok);
        let kind = type_of(name)
            .ok_or_else(|| perr(s, off, format!("unknown object type {name:?} in {tok:?}")))?;
        let count = count.ok_or_else(|| perr(s, off, format!("{tok:?} lacks ':COUNT'")))?;
        let count: u32 = count.parse().ok().filter(|c| *c > 0).ok_or_else(|| {
            perr(
                s,
                off + name.len() + 1,
                format!("bad count {count:?} (a positive integer)"),
            )
        })?;
        if levels.last().is_some_and(|l| l.kind == ObjType::PU) {
            return Err(perr(s, off, "pu must be the last level"));
        }
        if levels
            .iter()
            .any(|l| l.kind == kind && kind != ObjType::Group)
        {
            return Err(perr(s, off, format!("{kind} appears twice")));
        }
        let (size, memory) = match attrs {
            Some(a) => parse_attrs(s, off + aoff, a, kind)?,
            None => (None, None),
        };
        levels.push(Level {
            kind,
            count,
            size,
            memory,
            mems: Vec::new(),
        });
    }
    match levels.last() {
        Some(l) if l.kind == ObjType::PU => {}
        Some(_) => return Err(perr(s, s.trim_end().len(), "the last level must be pu")),
        None => return Err(perr(s, 0, "empty synthetic string")),
    }
    let total = levels
        .iter()
        .try_fold(1u64, |acc, l| acc.checked_mul(u64::from(l.count)));
    if total.is_none_or(|t| t > MAX_PUS) {
        return Err(perr(s, 0, format!("more than {MAX_PUS} PUs")));
    }
    Ok((top_mems, levels))
}

/// A synthetic object covering PUs `lo..hi`.
#[derive(Debug)]
struct Node {
    kind: ObjType,
    os: u32,
    lo: u32,
    hi: u32,
    attr: ObjAttr,
    children: Vec<Node>,
    mems: Vec<Node>,
}

impl Node {
    fn numa(os: u32, memory: u64, lo: u32, hi: u32) -> Node {
        Node {
            kind: ObjType::NUMANode,
            os,
            lo,
            hi,
            attr: ObjAttr::Numa {
                local_memory: memory,
                page_types: vec![(4096, memory / 4096)],
            },
            children: Vec::new(),
            mems: Vec::new(),
        }
    }
}

fn build(
    levels: &[Level],
    depth: usize,
    next_pu: &mut u32,
    next_numa: &mut u32,
    mems: &[u64],
) -> Result<Node, TopoError> {
    let lo = *next_pu;
    let mut node = Node {
        kind: ObjType::Machine,
        os: 0,
        lo,
        hi: lo,
        attr: ObjAttr::None,
        children: Vec::new(),
        mems: Vec::new(),
    };
    let mut counters = [0u32; 20];
    build_children(&mut node, levels, depth, next_pu, next_numa, &mut counters)?;
    node.hi = *next_pu;
    for m in mems {
        node.mems.push(Node::numa(*next_numa, *m, node.lo, node.hi));
        *next_numa += 1;
    }
    // NUMA numbering must follow creation order top-down: renumber by DFS.
    let mut k = 0;
    renumber_numa(&mut node, &mut k);
    Ok(node)
}

fn renumber_numa(n: &mut Node, k: &mut u32) {
    for m in n.mems.iter_mut() {
        m.os = *k;
        *k += 1;
    }
    for c in n.children.iter_mut() {
        renumber_numa(c, k);
    }
}

fn default_cache_size(level: u32) -> u64 {
    match level {
        1 => 32 << 10,
        2 => 4 << 20,
        3 => 16 << 20,
        4 => 64 << 20,
        _ => 256 << 20,
    }
}

fn build_children(
    parent: &mut Node,
    levels: &[Level],
    depth: usize,
    next_pu: &mut u32,
    next_numa: &mut u32,
    counters: &mut [u32; 20],
) -> Result<(), TopoError> {
    let Some(l) = levels.get(depth) else {
        return Ok(());
    };
    for _ in 0..l.count {
        let lo = *next_pu;
        let slot = ObjType::ALL.iter().position(|t| *t == l.kind).unwrap_or(0);
        let os = counters[slot];
        counters[slot] += 1;
        let (kind, attr) = match l.kind {
            ObjType::NUMANode => (
                ObjType::Group,
                ObjAttr::Group {
                    kind: 1001,
                    subkind: 0,
                },
            ),
            ObjType::Group => (
                ObjType::Group,
                ObjAttr::Group {
                    kind: 10,
                    subkind: 0,
                },
            ),
            k if k.is_cache() => {
                let level = k.cache_level().unwrap_or(1);
                let ct = match k {
                    ObjType::L1Cache => CacheType::Data,
                    ObjType::L1iCache | ObjType::L2iCache | ObjType::L3iCache => {
                        CacheType::Instruction
                    }
                    _ => CacheType::Unified,
                };
                let size = l.size.unwrap_or_else(|| default_cache_size(level));
                (
                    k,
                    ObjAttr::Cache(CacheInfo {
                        size,
                        depth: level,
                        linesize: 64,
                        associativity: 0,
                        cache_type: ct,
                    }),
                )
            }
            k => (k, ObjAttr::None),
        };
        let mut n = Node {
            kind,
            os,
            lo,
            hi: lo,
            attr,
            children: Vec::new(),
            mems: Vec::new(),
        };
        if l.kind == ObjType::PU {
            *next_pu += 1;
        } else {
            build_children(&mut n, levels, depth + 1, next_pu, next_numa, counters)?;
        }
        n.hi = *next_pu;
        if l.kind == ObjType::NUMANode {
            n.mems
                .push(Node::numa(0, l.memory.unwrap_or(1 << 30), n.lo, n.hi));
            *next_numa += 1;
        }
        for m in &l.mems {
            n.mems.push(Node::numa(0, *m, n.lo, n.hi));
            *next_numa += 1;
        }
        parent.children.push(n);
    }
    Ok(())
}

fn strip_mems(n: &mut Node, out: &mut Vec<Node>) {
    out.append(&mut n.mems);
    for c in n.children.iter_mut() {
        strip_mems(c, out);
    }
}

/// Drops redundant Groups (same PUs as the parent, or as their only child).
fn normalize(mut n: Node, parent: (u32, u32)) -> Vec<Node> {
    let me = (n.lo, n.hi);
    n.children = n
        .children
        .drain(..)
        .flat_map(|c| normalize(c, me))
        .collect();
    let same_as_child = n.children.len() == 1 && (n.children[0].lo, n.children[0].hi) == me;
    if n.kind == ObjType::Group && (me == parent || same_as_child) {
        n.children
    } else {
        vec![n]
    }
}

/// Hangs a NUMA node off the highest object whose PUs equal its own.
fn place(n: &mut Node, numa: Node) {
    place_at(n, numa, true)
}

fn place_at(n: &mut Node, numa: Node, is_root: bool) {
    if !is_root && (n.lo, n.hi) == (numa.lo, numa.hi) {
        n.mems.push(numa);
        return;
    }
    let idx = n
        .children
        .iter()
        .position(|c| c.kind != ObjType::PU && c.lo <= numa.lo && numa.hi <= c.hi);
    match idx {
        Some(i) => place_at(&mut n.children[i], numa, false),
        None => n.mems.push(numa),
    }
}

fn range_set(lo: u32, hi: u32) -> CpuSet {
    let mut s = CpuSet::new();
    if hi > lo {
        s.set_range(lo, hi - 1);
    }
    s
}

fn emit(topo: &mut Topology, parent: crate::object::ObjId, n: Node) {
    let mut o = Object::new(n.kind);
    o.cpuset = range_set(n.lo, n.hi);
    if !matches!(n.kind, ObjType::Group) && !n.kind.is_cache() {
        o.os_index = Some(if n.kind == ObjType::PU { n.lo } else { n.os });
    }
    if n.kind == ObjType::NUMANode {
        o.nodeset = NodeSet::single(n.os);
    }
    o.attr = n.attr;
    let id = topo.add(parent, o);
    for m in n.mems {
        emit(topo, id, m);
    }
    for c in n.children {
        emit(topo, id, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brief_example() {
        let t = parse("pack:2 numa:2 core:8 pu:2").unwrap();
        let c = t.counts();
        assert_eq!(
            (c.packages, c.groups, c.numa_nodes, c.cores, c.pus),
            (2, 4, 4, 32, 64)
        );
    }

    #[test]
    fn errors_name_the_position() {
        let e = parse("pack:2 foo:3 pu:1").unwrap_err().to_string();
        assert!(e.starts_with("<synthetic>:1:8:"), "{e}");
        assert!(parse("pack:2 core:2").is_err());
        assert!(parse("pack:0 pu:1").is_err());
        assert!(parse("pack:99999 core:99999 pu:99999").is_err());
        assert!(parse("l3:2(size=12XB) pu:1").is_err());
        assert!(parse("").is_err());
    }
}
