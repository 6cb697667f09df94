//! `oxccl-bench gather | scatter | all-to-all-v`: nccl-tests' table, read by the nccl-tests
//! parser (`bench/scripts/parse_nccl_tests.py`), every size checked (0 wrong), every dtype for
//! all-to-all-v, a root in the middle for gather and scatter. Small sizes: the format and the
//! results, not the speed.

use std::io::Write;
use std::process::{Command, Stdio};

fn parsed(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"))
        .env_remove("OXCCL_DEBUG")
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("running oxccl-bench");
    assert!(
        out.status.success(),
        "oxccl-bench {args:?} failed: {}",
        out.status
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/parse_nccl_tests.py");
    let mut py = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the nccl-tests parser (install python3)");
    py.stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser rejected:\n{table}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gather_scatter_and_all_to_all_v_sweeps_read_like_nccl_tests() {
    let p = 3.0;
    for (what, root, dtype) in [
        ("gather", "1", "float"),
        ("scatter", "2", "float"),
        ("all-to-all-v", "0", "all"),
    ] {
        let v = parsed(&[
            what, "-t", "3", "-r", root, "-b", "96", "-e", "96K", "-f", "4", "-n", "2", "-w", "1",
            "-d", dtype,
        ]);
        assert_eq!(v["status"], "OK", "{what}: {v}");
        assert_eq!(v["out_of_bounds"], 0, "{what}");
        let rows = v["rows"].as_array().unwrap();
        assert!(rows.len() >= 6, "{what}: {v}");
        for r in rows {
            let want_root = if what == "all-to-all-v" {
                -1
            } else {
                root.parse().unwrap()
            };
            assert_eq!(r["root"], want_root, "{what}: {r}");
            assert_eq!(r["redop"], "none", "{what}: {r}");
            for half in ["oop", "ip"] {
                assert_eq!(r[format!("{half}_wrong")], 0.0, "{what}: {r}");
                let algbw = r[format!("{half}_algbw")].as_f64().unwrap();
                let busbw = r[format!("{half}_busbw")].as_f64().unwrap();
                assert!((busbw - algbw * (p - 1.0) / p).abs() <= 0.01, "{what}: {r}");
            }
        }
    }
}
