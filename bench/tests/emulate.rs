//! `oxccl-bench emulate` on the smallest cluster: 2 hosts (network namespaces) x 2 ranks, one
//! size, ring. It checks that the sweep ran across the namespaces with every element right
//! (the ranks check their results and fail otherwise), that the simulator predicted the row,
//! that the cluster file it wrote has the shared stack of the stack probes (one message and a
//! window of messages per call), that `--replay`
//! (with that file, or with one written again from the saved probe) predicts the row again, and
//! that no namespace is left behind. Where
//! namespaces cannot be made (no root), the command says SKIPPED and so does this test.

use std::process::Command;

#[test]
fn two_hosts_of_two_ranks() {
    let dir = std::env::temp_dir().join(format!("oxccl-emulate-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = dir.join("cluster.toml");
    let child = emulate_2x2()
        .args([
            "-b",
            "256K",
            "-e",
            "256K",
            "--algo",
            "ring",
            "--trials",
            "1",
            "--job-timeout",
            "90",
            "--name",
            "t",
        ])
        .arg("--out-dir")
        .arg(&dir)
        .arg("--cluster-out")
        .arg(&cluster)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting oxccl-bench");
    let pid = child.id();
    let out = child.wait_with_output().expect("waiting for oxccl-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let left: Vec<String> = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(&format!("oxe{pid}")))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    if let Some(line) = stdout.lines().find(|l| l.starts_with("SKIPPED")) {
        println!("{line}");
        return;
    }
    assert!(out.status.success(), "emulate failed:\n{stdout}");
    let rows: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("t.json")).expect("the JSON output"),
    )
    .expect("valid JSON");
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["bytes"], 256 << 10);
    assert_eq!(r["ranks"], 4);
    for key in ["measured_us", "predicted_us", "ratio"] {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key} = {v} in {r}");
    }
    let text = std::fs::read_to_string(&cluster).expect("the cluster file");
    assert!(text.contains("nodes = 2"), "{text}");
    // The NIC and the shared stack come from the stack probes run before the sweep, and the
    // file says so.
    assert!(text.contains("sendrecv ring over all 4 ranks"), "{text}");
    // The server comes from the window's steps, without the group call's own cost.
    assert!(text.contains("with 1 and with 8 messages"), "{text}");
    let probe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("t-probe.json")).expect("the saved probe"),
    )
    .expect("valid JSON");
    assert_eq!(probe["window"], 8, "{probe}");
    assert!(
        probe["stack_window"]
            .as_array()
            .is_some_and(|a| a.len() >= 2),
        "{probe}"
    );
    assert!(text.contains("[network.shared_stack]"), "{text}");
    // A replay of the saved run with the file it wrote predicts the same row again.
    let replay = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"))
        .args(["emulate", "--name", "r", "--replay"])
        .arg(dir.join("t-raw.jsonl"))
        .arg("--replay-cluster")
        .arg(&cluster)
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .expect("running --replay");
    assert!(replay.status.success(), "{replay:?}");
    let again = replayed(&dir.join("r.json"));
    assert_eq!(again[0]["predicted_us"], r["predicted_us"], "{again}");
    // So does a cluster file written again from the run's saved probe, by the same rule.
    let from_probe = emulate_2x2()
        .args(["--name", "p", "--replay"])
        .arg(dir.join("t-raw.jsonl"))
        .arg("--replay-probe")
        .arg(dir.join("t-probe.json"))
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .expect("running --replay-probe");
    assert!(from_probe.status.success(), "{from_probe:?}");
    let again = replayed(&dir.join("p.json"));
    assert_eq!(again[0]["predicted_us"], r["predicted_us"], "{again}");
    for ext in ["csv", "txt", "svg"] {
        assert!(dir.join(format!("t.{ext}")).exists(), "t.{ext} missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rows a replay wrote.
fn replayed(json: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(json).expect("the replay's JSON"))
        .expect("valid JSON")
}

/// `oxccl-bench emulate` on 2 hosts of 2 ranks in one rack, with this machine's calibration.
fn emulate_2x2() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"));
    c.args(["emulate", "--hosts", "2", "--ranks-per-host", "2"])
        .args(["--hosts-per-rack", "2", "--calibration"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clusters/this-machine-executor.toml"
        ));
    c
}
