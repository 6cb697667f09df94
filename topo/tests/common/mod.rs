//! Shared helpers for the integration tests: where the shared topologies live, temporary
//! folders, and the comparison of a topology against a `.facts.json`.
#![allow(dead_code)]

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use oxccl_topo::{ObjId, ObjType, Topology};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `../shared/topologies` seen from the crate, if present.
pub fn shared_dir() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/topologies"
    ));
    if p.is_dir() {
        Some(p)
    } else {
        skip!("skipping: {} not found (the shared test topologies are not checked out beside the repo)", p.display());
        None
    }
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "oxccl-topo-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Extracts a `.tar.bz2` into `dest` and returns its single top-level folder.
pub fn extract(tarball: &Path, dest: &Path) -> Result<PathBuf, String> {
    let st = std::process::Command::new("tar")
        .arg("xjf")
        .arg(tarball)
        .arg("-C")
        .arg(dest)
        .status()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !st.success() {
        return Err(format!("tar failed on {}", tarball.display()));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dest)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    if dirs.len() != 1 {
        return Err(format!(
            "{} has {} top-level folders",
            tarball.display(),
            dirs.len()
        ));
    }
    Ok(dirs.remove(0))
}

/// Where `tool` is on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(x) => x.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// How `facts.json` names an object in a heterogeneous distance matrix.
fn dist_name(t: &Topology, id: ObjId) -> String {
    let o = t.obj(id);
    match o.kind {
        ObjType::OSDev => o.name.clone().unwrap_or_default(),
        ObjType::PCIDev => o.pci().map(|p| p.addr.to_string()).unwrap_or_default(),
        _ => format!("{} L#{}", o.kind, o.logical_index),
    }
}

/// A device record as `facts.json` writes it.
pub fn device_record(t: &Topology, id: ObjId) -> Value {
    let o = t.obj(id);
    let p = o.pci().cloned().unwrap_or_default();
    let mut osdevs: Vec<String> = t
        .osdevs_of(id)
        .iter()
        .filter_map(|d| t.obj(*d).name.clone())
        .collect();
    osdevs.sort();
    let loc = t.non_io_ancestor(id);
    let lo = t.obj(loc);
    let path: Vec<String> = t
        .pci_path(id)
        .iter()
        .map(|b| {
            let bo = t.obj(*b);
            match bo.bridge() {
                Some(br) if br.upstream.is_none() => {
                    format!(
                        "hostbridge:{:04x}:[{:02x}-{:02x}]",
                        br.domain, br.secondary_bus, br.subordinate_bus
                    )
                }
                _ => bo.pci().map(|p| p.addr.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    serde_json::json!({
        "busid": p.addr.to_string(),
        "class": format!("{:04x}", p.class_id),
        "vendor_device": format!("{:04x}:{:04x}", p.vendor_id, p.device_id),
        "osdevs": osdevs,
        "locality": {"type": lo.kind.name(), "logical": lo.logical_index, "cpuset": lo.cpuset.to_list_string(), "nodeset": lo.nodeset.to_list_string()},
        "pci_path": path,
    })
}

/// Compares `t` with every fact of an hwloc-style `.facts.json` it can produce; returns
/// the mismatches, each prefixed by `case`.
pub fn check_hwloc_facts(case: &str, t: &Topology, f: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut eq = |what: String, got: String, want: String| {
        if got != want {
            bad.push(format!("{case}: {what}: got {got}, want {want}"));
        }
    };
    let c = serde_json::to_value(t.counts()).unwrap();
    if let Some(fc) = f.get("counts").and_then(Value::as_object) {
        for (k, v) in fc {
            if k == "caches" {
                let mut want: BTreeMap<String, u64> = BTreeMap::new();
                for (ck, cv) in v.as_object().into_iter().flatten() {
                    if cv.as_u64() != Some(0) {
                        want.insert(ck.clone(), cv.as_u64().unwrap_or(0));
                    }
                }
                let got: BTreeMap<String, u64> =
                    serde_json::from_value(c["caches"].clone()).unwrap();
                eq("caches".into(), format!("{got:?}"), format!("{want:?}"));
            } else {
                eq(format!("count {k}"), s(&c[k]), s(v));
            }
        }
    }
    let pk = t.objects_of_type(ObjType::Package);
    for p in f
        .get("packages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let l = p["logical"].as_u64().unwrap_or(0) as usize;
        let Some(&id) = pk.get(l) else {
            bad.push(format!("{case}: package L#{l} missing"));
            continue;
        };
        let o = t.obj(id);
        let mut eq = |what: &str, got: String, want: &Value| {
            if got != s(want) {
                bad.push(format!(
                    "{case}: package L#{l} {what}: got {got}, want {}",
                    s(want)
                ));
            }
        };
        eq(
            "os_index",
            o.os_index.map(|i| i.to_string()).unwrap_or("null".into()),
            &p["os_index"],
        );
        eq("pus", o.cpuset.weight().unwrap_or(0).to_string(), &p["pus"]);
        eq("cpuset", o.cpuset.to_list_string(), &p["cpuset"]);
        eq("nodeset", o.nodeset.to_list_string(), &p["nodeset"]);
    }
    let nn = t.objects_of_type(ObjType::NUMANode);
    for n in f
        .get("numa_nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let l = n["logical"].as_u64().unwrap_or(0) as usize;
        let Some(&id) = nn.get(l) else {
            bad.push(format!("{case}: NUMA L#{l} missing"));
            continue;
        };
        let o = t.obj(id);
        let got = serde_json::json!({
            "os_index": o.os_index, "local_memory_bytes": o.local_memory(), "cpuset": o.cpuset.to_list_string(), "subtype": o.subtype,
        });
        for k in ["os_index", "local_memory_bytes", "cpuset", "subtype"] {
            if got[k] != n[k] {
                bad.push(format!(
                    "{case}: NUMA L#{l} {k}: got {}, want {}",
                    got[k], n[k]
                ));
            }
        }
    }
    for (key, list) in [
        ("gpus", t.gpus()),
        ("nics", t.nics()),
        ("nvswitches", t.nvswitches()),
    ] {
        let Some(want) = f.get(key).and_then(Value::as_array) else {
            continue;
        };
        if want.len() != list.len() {
            bad.push(format!(
                "{case}: {key}: got {}, want {}",
                list.len(),
                want.len()
            ));
            continue;
        }
        // Matched by bus id: `gpus()` follows runtime (CUDA/ROCm) numbering, the facts
        // follow hwloc's logical order.
        for w in want {
            let Some(g) = list
                .iter()
                .map(|id| device_record(t, *id))
                .find(|g| g["busid"] == w["busid"])
            else {
                bad.push(format!("{case}: {key} {} missing", s(&w["busid"])));
                continue;
            };
            for k in ["busid", "class", "vendor_device", "locality", "pci_path"] {
                if g[k] != w[k] {
                    bad.push(format!(
                        "{case}: {key} {} {k}: got {}, want {}",
                        s(&w["busid"]),
                        g[k],
                        w[k]
                    ));
                }
            }
            let mut wo: Vec<String> = w["osdevs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            wo.sort();
            if g["osdevs"] != serde_json::json!(wo) {
                bad.push(format!(
                    "{case}: {key} {} osdevs: got {}, want {:?}",
                    s(&w["busid"]),
                    g["osdevs"],
                    wo
                ));
            }
        }
    }
    if let Some(want) = f.get("os_devices").and_then(Value::as_array) {
        let mut w: Vec<String> = want
            .iter()
            .map(|d| {
                format!(
                    "{}|{}|{}|{}",
                    s(&d["name"]),
                    s(&d["type"]),
                    s(&d["subtype"]),
                    s(&d["parent_busid"])
                )
            })
            .collect();
        let mut g: Vec<String> = t
            .objects_of_type(ObjType::OSDev)
            .iter()
            .map(|&id| {
                let o = t.obj(id);
                let parent = t
                    .pci_parent(id)
                    .and_then(|p| t.obj(p).pci().map(|x| x.addr.to_string()))
                    .unwrap_or("null".into());
                format!(
                    "{}|{}|{}|{}",
                    o.name.clone().unwrap_or_default(),
                    o.osdev_type().map(|x| x.name()).unwrap_or("?"),
                    o.subtype.clone().unwrap_or("null".into()),
                    parent
                )
            })
            .collect();
        w.sort();
        g.sort();
        if w != g {
            let missing: Vec<_> = w.iter().filter(|x| !g.contains(x)).collect();
            let extra: Vec<_> = g.iter().filter(|x| !w.contains(x)).collect();
            bad.push(format!(
                "{case}: os_devices differ: missing {missing:?}, extra {extra:?}"
            ));
        }
    }
    if let Some(want) = f.get("pci_devices_by_class").and_then(Value::as_object) {
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for id in t.objects_of_type(ObjType::PCIDev) {
            *got.entry(t.obj(id).pci().map(|p| p.class_name()).unwrap_or_default())
                .or_insert(0) += 1;
        }
        let want: BTreeMap<String, u64> = want
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
            .collect();
        if got != want {
            bad.push(format!(
                "{case}: pci_devices_by_class: got {got:?}, want {want:?}"
            ));
        }
    }
    if let Some(want) = f.get("distances").and_then(Value::as_array) {
        if want.len() != t.distances.len() {
            bad.push(format!(
                "{case}: {} distance matrices, want {}",
                t.distances.len(),
                want.len()
            ));
        }
        for w in want {
            let d = match w["name"].as_str() {
                Some(n) => t.distances.iter().find(|d| d.name == n),
                None => t
                    .distances
                    .iter()
                    .find(|d| d.objects.len() == w["objects"].as_array().map_or(0, |a| a.len())),
            };
            let Some(d) = d else {
                bad.push(format!("{case}: distance matrix {} missing", s(&w["name"])));
                continue;
            };
            let by_os = w["indexing"].as_str() == Some("os");
            let objs: Vec<String> = d
                .objects
                .iter()
                .map(|&o| {
                    if by_os {
                        t.obj(o).os_index.map(|i| i.to_string()).unwrap_or_default()
                    } else {
                        dist_name(t, o)
                    }
                })
                .collect();
            let wobjs: Vec<String> = w["objects"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            // facts.json keeps only the first 10 names of long matrices.
            if objs[..wobjs.len().min(objs.len())] != wobjs[..] {
                bad.push(format!(
                    "{case}: distances {} objects: got {objs:?}, want {wobjs:?}",
                    d.name
                ));
            }
            let n = d.objects.len();
            let m: Vec<Vec<u64>> = (0..n)
                .map(|i| (0..n).map(|j| d.get(i, j)).collect())
                .collect();
            if serde_json::json!(m) != w["matrix"] {
                bad.push(format!("{case}: distances {} matrix differs", d.name));
            }
        }
    }
    if let Some(want) = f.get("cpu_models").and_then(Value::as_array) {
        let mut got: Vec<String> = t
            .iter()
            .filter_map(|(_, o)| o.info("CPUModel").map(|m| m.trim().to_string()))
            .collect();
        got.sort();
        got.dedup();
        let mut w: Vec<String> = want.iter().map(s).collect();
        w.sort();
        if got != w {
            bad.push(format!("{case}: cpu_models: got {got:?}, want {w:?}"));
        }
    }
    bad
}

/// Compares an NCCL-imported topology with an NCCL `.facts.json`.
pub fn check_nccl_facts(case: &str, t: &Topology, f: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let numas = t.objects_of_type(ObjType::NUMANode);
    for c in f["cpus"].as_array().into_iter().flatten() {
        let id = c["numaid"].as_u64().unwrap_or(0) as u32;
        match numas.iter().find(|n| t.obj(**n).os_index == Some(id)) {
            Some(n) => {
                let got = t.obj(*n).cpuset.to_list_string();
                if got != s(&c["affinity_cpus"]) {
                    bad.push(format!(
                        "{case}: cpu {id} affinity {got}, want {}",
                        s(&c["affinity_cpus"])
                    ));
                }
            }
            None => bad.push(format!("{case}: cpu numaid {id} missing")),
        }
    }
    let numa_of = |id: ObjId| {
        t.obj(t.non_io_ancestor(id))
            .nodeset
            .first()
            .map(|x| x as u64)
    };
    let mut pci_count = 0;
    for p in f["pci_nodes"].as_array().into_iter().flatten() {
        pci_count += 1;
        let addr: oxccl_topo::PciAddr = match s(&p["busid"]).parse() {
            Ok(a) => a,
            Err(e) => {
                bad.push(format!("{case}: {e}"));
                continue;
            }
        };
        let Some(id) = t.find_pci(addr) else {
            bad.push(format!("{case}: pci {addr} missing"));
            continue;
        };
        let o = t.obj(id);
        let class = format!("0x{:04x}00", o.pci().map(|x| x.class_id).unwrap_or(0));
        if class != s(&p["class"]) {
            bad.push(format!(
                "{case}: pci {addr} class {class}, want {}",
                s(&p["class"])
            ));
        }
        let parent = o
            .parent
            .and_then(|x| t.obj(x).pci().map(|q| q.addr.to_string()))
            .unwrap_or("null".into());
        if parent != s(&p["parent"]) {
            bad.push(format!(
                "{case}: pci {addr} parent {parent}, want {}",
                s(&p["parent"])
            ));
        }
        if numa_of(id) != p["numaid"].as_u64() {
            bad.push(format!(
                "{case}: pci {addr} numa {:?}, want {}",
                numa_of(id),
                p["numaid"]
            ));
        }
    }
    let ours = t.objects_of_type(ObjType::PCIDev).len()
        + t.objects_of_type(ObjType::Bridge)
            .iter()
            .filter(|b| !t.obj(**b).is_host_bridge())
            .count()
        - t.nvswitches()
            .iter()
            .filter(|n| {
                f["pci_nodes"].as_array().is_none_or(|a| {
                    !a.iter().any(|p| {
                        p["busid"]
                            == t.obj(**n)
                                .pci()
                                .map(|x| x.addr.to_string())
                                .unwrap_or_default()
                    })
                })
            })
            .count();
    if ours != pci_count {
        bad.push(format!("{case}: {ours} PCI nodes, want {pci_count}"));
    }
    let gpus = t.gpus();
    let want_gpus = f["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.len() != want_gpus.len() {
        bad.push(format!(
            "{case}: {} GPUs, want {}",
            gpus.len(),
            want_gpus.len()
        ));
    }
    for g in &want_gpus {
        let Some(id) = s(&g["busid"]).parse().ok().and_then(|a| t.find_pci(a)) else {
            bad.push(format!("{case}: GPU {} missing", s(&g["busid"])));
            continue;
        };
        if !t.is_gpu(id) {
            bad.push(format!("{case}: {} is not a GPU", s(&g["busid"])));
        }
        if let Some(dev) = g.get("gpu").and_then(|x| x.get("dev")) {
            let want = format!("cuda{}", s(dev));
            if !t
                .osdevs_of(id)
                .iter()
                .any(|d| t.obj(*d).name.as_deref() == Some(&want))
            {
                bad.push(format!("{case}: GPU {} lacks {want}", s(&g["busid"])));
            }
        }
        for l in g["nvlinks"].as_array().into_iter().flatten() {
            let target: Option<oxccl_topo::PciAddr> = s(&l["target"]).parse().ok();
            let Some(tid) = target.and_then(|a| t.find_pci(a)) else {
                bad.push(format!("{case}: nvlink target {} missing", s(&l["target"])));
                continue;
            };
            if tid == id {
                continue;
            }
            let got: u32 = t
                .links
                .iter()
                .filter(|k| (k.a == id && k.b == tid) || (k.b == id && k.a == tid))
                .map(|k| k.count)
                .sum();
            if u64::from(got) != l["count"].as_u64().unwrap_or(0) {
                bad.push(format!(
                    "{case}: nvlink {} -> {}: {got}, want {}",
                    s(&g["busid"]),
                    s(&l["target"]),
                    l["count"]
                ));
            }
        }
    }
    let want_nics = f["nics"].as_array().cloned().unwrap_or_default();
    for n in &want_nics {
        for net in n["nets"].as_array().into_iter().flatten() {
            let name = s(&net["name"]);
            let Some(d) = t.find_osdev(&name) else {
                bad.push(format!("{case}: net {name} missing"));
                continue;
            };
            let busid = t
                .pci_parent(d)
                .and_then(|p| t.obj(p).pci().map(|x| x.addr.to_string()))
                .unwrap_or("null".into());
            if busid != s(&n["busid"]) {
                bad.push(format!(
                    "{case}: net {name} on {busid}, want {}",
                    s(&n["busid"])
                ));
            }
        }
        if n["nets"].as_array().is_none_or(|a| a.is_empty()) {
            let ok = s(&n["busid"])
                .parse()
                .ok()
                .and_then(|a| t.find_pci(a))
                .is_some_and(|id| t.is_nic(id));
            if !ok {
                bad.push(format!("{case}: NIC {} missing", s(&n["busid"])));
            }
        }
    }
    bad
}
