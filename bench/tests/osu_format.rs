//! `oxccl-bench transport --osu`: OSU's tables (headers, `%-10d%18.2f` rows, MB/s, sizes from
//! 1 B), read the way OSU results are usually read (rows that do not start with `#`: size,
//! value). Few iterations: this checks the format, not the speed.

use std::process::Command;

/// One OSU table: its title, its column header, its (size, value) rows.
type Table = (String, String, Vec<(u64, f64)>);

#[test]
fn osu_tables_latency_bw_bibw() {
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"))
        .args([
            "transport",
            "--osu",
            "--transport",
            "shm",
            "-m",
            "256",
            "-i",
            "20",
            "-x",
            "2",
        ])
        .args(["--test", "all", "--no-bind"])
        .env_remove("OXCCL_DEBUG")
        .output()
        .expect("running oxccl-bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut tables: Vec<Table> = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            if h.starts_with("Size") {
                tables.last_mut().expect("a title first").1 = h.to_string();
            } else {
                tables.push((h.to_string(), String::new(), Vec::new()));
            }
            continue;
        }
        // OSU's row: the size left-aligned in 10 columns, the value right-aligned in 18.
        assert_eq!(line.len(), 28, "{line:?}");
        let size: u64 = line[..10].trim().parse().unwrap();
        let v: f64 = line[10..].trim().parse().unwrap();
        tables.last_mut().expect("a header first").2.push((size, v));
    }
    let titles: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(titles.len(), 3, "{text}");
    assert!(titles[0].contains("shm Latency Test"));
    assert!(titles[1].contains("shm Bandwidth Test"));
    assert!(titles[2].contains("shm Bi-Directional Bandwidth Test"));
    assert_eq!(tables[0].1, "Size          Latency (us)");
    assert_eq!(tables[1].1, "Size      Bandwidth (MB/s)");
    assert_eq!(tables[2].1, "Size      Bandwidth (MB/s)");
    for (_, _, rows) in &tables {
        let sizes: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(sizes, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        // Values only need to be numbers: at 1 B a loaded machine rounds MB/s to 0.00.
        assert!(
            rows.iter().all(|r| r.1.is_finite() && r.1 >= 0.0),
            "{rows:?}"
        );
    }
}

#[test]
fn osu_rejects_bad_ranges() {
    for bad in ["8:4", "x", "0"] {
        let out = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"))
            .args(["transport", "--osu", "-m", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("message-size"),
            "{bad}"
        );
    }
}
