//! `oxccl-bench`'s collective output read by what the field reads nccl-tests with: the parser in
//! `bench/scripts/parse_nccl_tests.py` (columns by position, the summary lines by their
//! text), and the chart of `--plot`, rendered once. Small sizes and few iterations: this checks
//! the format, not the speed.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"));
    c.env_remove("OXCCL_DEBUG");
    c
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxccl-bench-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_ok(c: &mut Command) -> String {
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .expect("running oxccl-bench");
    assert!(out.status.success(), "oxccl-bench failed: {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn all_reduce_table_parses_like_nccl_tests() {
    let table = run_ok(bench().args([
        "all-reduce",
        "--ranks",
        "2",
        "-b",
        "8",
        "-e",
        "64K",
        "-n",
        "3",
        "-w",
        "1",
    ]));
    assert!(table.starts_with("# nThread 1 nGpus 1 minBytes 8 maxBytes 65536 step: 2(factor)"));
    assert!(table.contains("out-of-place                       in-place"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/parse_nccl_tests.py");
    let mut py = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the nccl-tests parser (install python3)");
    use std::io::Write;
    py.stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser rejected:\n{table}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, (3..=16).map(|k| 1u64 << k).collect::<Vec<_>>());
    let mut sum = 0.0;
    for r in rows {
        assert_eq!(
            r["count"].as_u64().unwrap() * 4,
            r["size"].as_u64().unwrap()
        );
        assert_eq!(r["type"], "float");
        assert_eq!(r["redop"], "sum");
        assert_eq!(r["root"], -1);
        for half in ["oop", "ip"] {
            assert_eq!(r[format!("{half}_wrong")], 0.0, "{r}");
            let t = r[format!("{half}_time")].as_f64().unwrap();
            let algbw = r[format!("{half}_algbw")].as_f64().unwrap();
            let busbw = r[format!("{half}_busbw")].as_f64().unwrap();
            assert!(t > 0.0);
            // Two ranks: busbw = algbw * 2 (p - 1) / p = algbw (both printed to 2 decimals).
            assert!((busbw - algbw).abs() <= 0.01, "{r}");
            sum += busbw;
        }
    }
    assert_eq!(v["status"], "OK");
    assert_eq!(v["out_of_bounds"], 0);
    // The average is over both halves of every size, from the unrounded values.
    let avg = v["avg_busbw"].as_f64().unwrap();
    assert!(avg > 0.0);
    assert!(
        (avg - sum / (2.0 * rows.len() as f64)).abs() <= 0.01,
        "{avg}"
    );
}

#[test]
fn csv_has_one_line_per_size_and_the_header() {
    let csv = run_ok(bench().args([
        "broadcast",
        "-t",
        "3",
        "-r",
        "2",
        "-b",
        "1K",
        "-e",
        "4K",
        "-n",
        "2",
        "-w",
        "0",
        "--csv",
    ]));
    // nccl-tests' other flags that have a host meaning, or only one value here, are accepted.
    let with_flags = run_ok(
        bench()
            .args(["all-reduce", "-t", "2", "-e", "64", "-n", "1"])
            .args([
                "-C", "1", "-p", "1", "-G", "0", "-R", "0", "-z", "1", "-a", "2", "--csv",
            ]),
    );
    assert_eq!(with_flags.lines().count(), 1 + 4, "{with_flags}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("collective,ranks,size,count,type,redop,root,time_us,"));
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), lines[0].split(',').count());
        assert_eq!(
            (f[0], f[1], f[5], f[6], f[10], f[14]),
            ("broadcast", "3", "none", "2", "0", "0")
        );
    }
}

#[test]
fn plot_renders_a_readable_chart() {
    let dir = out_dir("plot");
    let json = dir.join("oxccl.json");
    let png = dir.join("chart.png");
    let out = run_ok(bench().args([
        "all-reduce",
        "-t",
        "2",
        "-b",
        "64",
        "-e",
        "16K",
        "-n",
        "2",
        "-w",
        "0",
        "--json",
    ]));
    std::fs::write(&json, &out).unwrap();
    // A second run in nccl-tests' text, as another library's file would be.
    let text = dir.join("other.txt");
    std::fs::write(
        &text,
        "# size count type redop root time algbw busbw #wrong time algbw busbw #wrong\n\
         64 16 float sum -1 1 0.1 0.1 0 1 0.1 0.1 0\n\
         16384 4096 float sum -1 1 0.3 0.3 0 1 0.3 0.3 0\n",
    )
    .unwrap();
    run_ok(
        bench()
            .args(["plot", "--title", "all-reduce, 2 ranks", "-o"])
            .arg(&png)
            .arg(&json)
            .arg(&text),
    );
    let img = image::open(&png).expect("a PNG").to_rgb8();
    assert_eq!(img.dimensions(), (960, 560));
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
    // Both lines (the first two colours) and the axes' black are drawn, on white.
    assert!(count([31, 119, 180]) > 200, "first run's line");
    assert!(count([214, 39, 40]) > 200, "second run's line");
    assert!(count([255, 255, 255]) > 960 * 560 / 2);
    assert!(
        img.pixels().filter(|p| p.0.iter().all(|&v| v < 60)).count() > 500,
        "text and axes"
    );
    let svg_path = dir.join("chart.svg");
    run_ok(
        bench()
            .args(["plot", "-o"])
            .arg(&svg_path)
            .arg(&json)
            .arg(&text),
    );
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    for label in [
        "bus bandwidth (GB/s)",
        "message size (bytes, log scale)",
        "oxccl all-reduce (2 ranks)",
        "other",
        "16K",
    ] {
        assert!(svg.contains(label), "{label} missing from the SVG");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn processes_times_threads_make_the_ranks() {
    let table = run_ok(bench().args([
        "all-gather",
        "--ranks",
        "2",
        "-t",
        "2",
        "-b",
        "1K",
        "-e",
        "4K",
        "-n",
        "2",
        "-w",
        "0",
    ]));
    let ranks: Vec<&str> = table.lines().filter(|l| l.starts_with("#  Rank")).collect();
    assert_eq!(ranks.len(), 4, "{table}");
    // Two ranks per process: ranks 0 and 1 share a pid, 2 and 3 another.
    let pid = |l: &str| l.split_whitespace().nth(6).unwrap().to_string();
    assert_eq!(pid(ranks[0]), pid(ranks[1]));
    assert_eq!(pid(ranks[2]), pid(ranks[3]));
    assert_ne!(pid(ranks[0]), pid(ranks[2]));
    assert!(table.contains("# Out of bounds values : 0 OK"), "{table}");
}

#[test]
fn gpu_only_flags_are_refused_clearly() {
    for flags in [["-G", "1"], ["-R", "1"], ["-g", "2"]] {
        let out = bench().arg("all-reduce").args(flags).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("host memory"), "{flags:?}: {err}");
    }
}

#[test]
fn every_type_and_op_checks_out_at_twelve_ranks() {
    // Twelve ranks overflow int8 under mulsum: the check must expect the wrapped value.
    let table = run_ok(bench().args([
        "all-reduce",
        "-t",
        "12",
        "-b",
        "1K",
        "-e",
        "1K",
        "-n",
        "1",
        "-w",
        "0",
        "-d",
        "all",
        "-o",
        "all",
    ]));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 10 * 6, "{table}");
    assert!(rows.iter().all(|r| r[8] == "0" && r[12] == "0"), "{table}");
    assert_eq!(rows[0][2..4], ["int8", "sum"]);
    assert_eq!(rows[59][2..4], ["bfloat16", "mulsum"]);
    assert!(table.contains("# Out of bounds values : 0 OK"));
}
