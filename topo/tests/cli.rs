//! The `oxccl-topo` binary: matrices from nvidia-smi files, formats, errors.

mod common;

use oxccl_topo::sources::nvidia_smi;
use serde_json::Value;
use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-topo"))
        .args(args)
        .output()
        .expect("run oxccl-topo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(v: &Value) -> Vec<Vec<String>> {
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

/// For every nvidia-smi file, `--input FILE --matrix` prints the matrix of its facts.
#[test]
fn matrix_of_every_nvidia_smi_file() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let dir = root.join("nvidia-smi");
    let mut n = 0;
    for e in std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(Result::ok)
    {
        let p = e.path();
        let facts_path = p.with_extension("facts.json");
        if p.extension().is_none_or(|x| x != "txt") || !facts_path.is_file() {
            continue; // licences and notes
        }
        let facts: Value =
            serde_json::from_str(&std::fs::read_to_string(facts_path).expect("facts"))
                .expect("json");
        let (ok, out, err) = run(&["--input", p.to_str().expect("utf8"), "--matrix"]);
        assert!(ok, "{}: {err}", p.display());
        let m = nvidia_smi::parse("stdout", &out)
            .unwrap_or_else(|e| panic!("{}: output unreadable: {e}\n{out}", p.display()));
        for (key, gr, gc) in [
            ("gpu_gpu", true, true),
            ("gpu_nic", true, false),
            ("nic_gpu", false, true),
            ("nic_nic", false, false),
        ] {
            if let Some(want) = facts.get(key) {
                assert_eq!(m.block(gr, gc), rows(want), "{}: {key}", p.display());
            }
        }
        n += 1;
    }
    assert!(n >= 7, "only {n} nvidia-smi files");
}

#[test]
fn synthetic_json_and_xml() {
    let (ok, out, err) = run(&["--input", "pack:2 numa:2 core:8 pu:2", "--of", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["counts"]["pus"], 64);
    assert_eq!(v["counts"]["numa_nodes"], 4);
    let (ok, out, _) = run(&["--input", "pack:1 core:2 pu:2", "--of", "xml"]);
    assert!(ok);
    let t =
        oxccl_topo::sources::hwloc_xml::parse("cli", out.as_bytes()).expect("our XML reads back");
    assert_eq!(t.counts().pus, 4);
    let (ok, out, _) = run(&["--input", "pack:1 core:2 pu:2"]);
    assert!(ok && out.contains("Package L#0") && out.contains("PU L#3"));
}

#[test]
fn path_query_and_nccl_output() {
    let Some(root) = common::shared_dir() else {
        return;
    };
    let f = root.join("nccl-xml/ibm-cloud-gx3d-8xh100.xml");
    let f = f.to_str().expect("utf8");
    let (ok, out, err) = run(&["--input", f, "--path", "GPU0", "GPU7"]);
    assert!(ok, "{err}");
    assert!(out.contains("NV18"), "{out}");
    let (ok, out, err) = run(&["--input", f, "--of", "nccl-xml"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("<system version=\"1\">") && out.contains("mlx5_7"));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let tmp = common::TempDir::new("cli");
    let bad = tmp.0.join("bad.xml");
    std::fs::write(
        &bad,
        "<topology version=\"2.0\">\n  <object type=\"Machine\">\n    <object type=\"Package\"\n",
    )
    .expect("write");
    let (ok, _, err) = run(&["--input", bad.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(err.contains("bad.xml:"), "{err}");
    let (ok, _, err) = run(&["--input", "pack:2 wat:3 pu:1"]);
    assert!(!ok && err.contains("<synthetic>:1:8"), "{err}");
    if let Some(root) = common::shared_dir() {
        let g = root.join("nccl-xml/azure-ncv4-graph.xml");
        let (ok, _, err) = run(&["--input", g.to_str().expect("utf8")]);
        assert!(!ok && err.contains("NCCL graph file"), "{err}");
    }
    let (ok, _, err) = run(&["--input", "/nonexistent/file.xml"]);
    assert!(!ok && err.contains("/nonexistent/file.xml"), "{err}");
}
