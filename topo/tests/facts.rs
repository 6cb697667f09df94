//! Walks every folder of `../shared/topologies/` and checks each `.facts.json` against what
//! this crate imports from the files beside it. A new case dropped there is tested without
//! code changes.

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};

fn facts_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(".facts.json"));
    v.sort();
    v
}

fn case_files(facts_path: &Path, f: &Value) -> Vec<PathBuf> {
    let dir = facts_path.parent().unwrap_or(Path::new("."));
    let mut names: Vec<String> = Vec::new();
    if let Some(a) = f.get("files").and_then(Value::as_array) {
        names.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
    }
    if let Some(x) = f.get("file").and_then(Value::as_str) {
        names.push(x.to_string());
    }
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Checks one case; returns the mismatches and how many facts files were checked.
fn check_case(folder: &str, facts_path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(facts_path).expect("read facts");
    let f: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return vec![format!("{}: bad JSON: {e}", facts_path.display())],
    };
    let case = f["case"].as_str().unwrap_or("?").to_string();
    let files = case_files(facts_path, &f);
    let mut bad = Vec::new();
    match folder {
        "sysfs" => bad.extend(check_sysfs(&case, facts_path, &f)),
        "nvidia-smi" => bad.extend(check_nvidia_smi(&case, &files, &f)),
        "nccl-xml" => bad.extend(check_nccl(&case, &files, &f)),
        _ => {
            for file in files
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "xml"))
            {
                // hwloc v1 files carry a hwloc-made `.v2.xml` conversion with the same facts.
                let mut variants = vec![file.clone()];
                let v2 = file.with_extension("v2.xml");
                if v2.is_file() {
                    variants.push(v2);
                }
                for v in variants {
                    let label = format!(
                        "{case} ({})",
                        v.file_name().unwrap_or_default().to_string_lossy()
                    );
                    match oxccl_topo::sources::load_topology_file(&v) {
                        Ok(t) => bad.extend(common::check_hwloc_facts(&label, &t, &f)),
                        Err(e) => bad.push(format!("{label}: import failed: {e}")),
                    }
                }
            }
            if let Some(syn) = f.get("synthetic").and_then(Value::as_str) {
                match oxccl_topo::sources::synthetic::parse(syn) {
                    Ok(t) => bad.extend(common::check_hwloc_facts(
                        &format!("{case} (synthetic string)"),
                        &t,
                        &f,
                    )),
                    Err(e) => bad.push(format!("{case}: synthetic {syn:?} failed: {e}")),
                }
            }
        }
    }
    bad
}

/// Facts a sysfs discovery does not reproduce, by design (see `sources::sysfs`): hwloc's
/// DMI memory modules (`Misc`).
const SYSFS_SKIPPED: [&str; 1] = ["count misc"];

fn check_sysfs(case: &str, facts: &Path, f: &Value) -> Vec<String> {
    let tarball = facts.with_file_name(format!(
        "{}.tar.bz2",
        facts
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_end_matches(".facts.json")
    ));
    if !tarball.is_file() {
        return vec![format!("{case}: {} missing", tarball.display())];
    }
    let tmp = common::TempDir::new("sysfs");
    let top = match common::extract(&tarball, &tmp.0) {
        Ok(t) => t,
        Err(e) => {
            skip!("skipping {case}: {e}");
            return Vec::new();
        }
    };
    // The facts come from hwloc's Linux backend alone: no GPU devices from the NVIDIA driver.
    let opts = oxccl_topo::sources::sysfs::Options {
        nvidia_driver_gpus: false,
    };
    match oxccl_topo::sources::sysfs::discover_with(&top, &opts) {
        Ok(t) => common::check_hwloc_facts(&format!("{case} (sysfs)"), &t, f)
            .into_iter()
            .filter(|m| !SYSFS_SKIPPED.iter().any(|s| m.contains(&format!(": {s}:"))))
            .collect(),
        Err(e) => vec![format!("{case}: discovery failed: {e}")],
    }
}

/// With the NVIDIA driver's GPU list, the AC922 tree's six V100 functions become GPUs.
#[test]
fn nvidia_driver_gpus_from_proc() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let tarball = root.join("sysfs/ibm-ac922-power9-gpu-numanodes.tar.bz2");
    let tmp = common::TempDir::new("nv");
    let top = match common::extract(&tarball, &tmp.0) {
        Ok(t) => t,
        Err(e) => {
            skip!("skipping: {e}");
            return;
        }
    };
    let t = oxccl_topo::sources::sysfs::discover(&top).expect("discover");
    assert_eq!(t.gpus().len(), 6);
    assert!(t.find_osdev("nvml5").is_some());
    assert_eq!(
        t.counts().numa_nodes,
        2,
        "GPU memory NUMA nodes stay hidden"
    );
}

fn strings(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

/// Compares a matrix with the `gpu_gpu`/`gpu_nic`/`nic_gpu`/`nic_nic`, `cpu_affinity`,
/// `numa_affinity` and `nic_names` facts.
fn compare_matrix(label: &str, m: &oxccl_topo::PathMatrix, f: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, gr, gc) in [
        ("gpu_gpu", true, true),
        ("gpu_nic", true, false),
        ("nic_gpu", false, true),
        ("nic_nic", false, false),
    ] {
        if let Some(want) = f.get(key) {
            let got = m.block(gr, gc);
            if got != strings(want) {
                bad.push(format!("{label}: {key}: got {got:?}, want {want}"));
            }
        }
    }
    let gpus: Vec<String> = f["gpus"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g.as_str().map(str::to_string))
        .collect();
    for (key, got) in [
        ("cpu_affinity", &m.cpu_affinity),
        ("numa_affinity", &m.numa_affinity),
    ] {
        let Some(want) = f.get(key).and_then(Value::as_object) else {
            continue;
        };
        for (i, g) in gpus.iter().enumerate() {
            let w = want.get(g).and_then(Value::as_str).map(str::to_string);
            if got.get(i).cloned().flatten() != w {
                bad.push(format!(
                    "{label}: {key} {g}: got {:?}, want {w:?}",
                    got.get(i)
                ));
            }
        }
    }
    if let Some(names) = f.get("nic_names").and_then(Value::as_object) {
        for (i, l) in m.nic_labels.iter().enumerate() {
            let want = names.get(l).and_then(Value::as_str).unwrap_or(l);
            if m.nic_names[i] != want {
                bad.push(format!(
                    "{label}: NIC {l} name {} want {want}",
                    m.nic_names[i]
                ));
            }
        }
    }
    bad
}

fn check_nvidia_smi(case: &str, files: &[PathBuf], f: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match oxccl_topo::sources::nvidia_smi::parse(&file.display().to_string(), &text) {
            Ok(m) => {
                bad.extend(compare_matrix(case, &m, f));
                // What `--matrix` prints must read back to the same matrix.
                match oxccl_topo::sources::nvidia_smi::parse("rendered", &m.render()) {
                    Ok(again) if again == m => {}
                    Ok(_) => bad.push(format!("{case}: rendered matrix reads back differently")),
                    Err(e) => bad.push(format!("{case}: rendered matrix unreadable: {e}")),
                }
            }
            Err(e) => bad.push(format!("{case}: {e}")),
        }
    }
    bad
}

fn check_nccl(case: &str, files: &[PathBuf], f: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for file in files {
        let data = std::fs::read(file).unwrap_or_default();
        let name = file.display().to_string();
        let res = oxccl_topo::sources::nccl_xml::parse(&name, &data);
        if f["root_element"] == "graphs" {
            match res {
                Err(e @ oxccl_topo::TopoError::NcclGraphFile { .. }) => {
                    if !e.to_string().contains("graph file") {
                        bad.push(format!("{case}: unclear error {e}"));
                    }
                }
                Err(e) => bad.push(format!("{case}: wrong error for a graph file: {e}")),
                Ok(_) => bad.push(format!("{case}: graph file accepted as a topology")),
            }
            continue;
        }
        match res {
            Ok(t) => {
                bad.extend(common::check_nccl_facts(case, &t, f));
                // Export and re-import: the same facts must hold.
                let again = oxccl_topo::sources::nccl_xml::to_string(&t);
                match oxccl_topo::sources::nccl_xml::parse("exported", again.as_bytes()) {
                    Ok(t2) => bad.extend(common::check_nccl_facts(
                        &format!("{case} (re-exported)"),
                        &t2,
                        f,
                    )),
                    Err(e) => bad.push(format!("{case}: exported XML unreadable: {e}")),
                }
            }
            Err(e) => bad.push(format!("{case}: {e}")),
        }
    }
    bad
}

#[test]
fn every_shared_case_matches_its_facts() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read shared dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut bad = Vec::new();
    let mut n = 0;
    for folder in folders {
        let name = folder
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        for facts in facts_files(&folder) {
            n += 1;
            bad.extend(check_case(&name, &facts));
        }
    }
    println!("checked {n} cases");
    assert!(n > 0, "no .facts.json found under {}", root.display());
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
