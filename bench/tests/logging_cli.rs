//! The CLI uses the library's logging setup: with `--ranks 2` and `OXCCL_DEBUG_FILE`, each rank
//! writes its own file of `host:pid:tid [rank]` lines, and the launcher process, which logs
//! nothing, leaves no empty file.

use std::process::Command;

#[test]
fn one_log_file_per_rank_from_the_cli() {
    let dir = std::env::temp_dir().join(format!("oxccl-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"))
        .args([
            "all-reduce",
            "--ranks",
            "2",
            "-e",
            "64",
            "-n",
            "1",
            "-w",
            "0",
        ])
        .env("OXCCL_DEBUG", "info")
        .env("OXCCL_DEBUG_FILE", dir.join("ox.%h.%p"))
        .env_remove("OXCCL_DEBUG_SUBSYS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ranks_seen = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let first = text.lines().next().expect("a file has lines");
        let rank = first.split_whitespace().nth(1).unwrap().to_string();
        assert!(
            text.lines().all(|l| l.contains(&format!(" {rank} OXCCL "))),
            "{text}"
        );
        ranks_seen.push(rank);
    }
    ranks_seen.sort();
    assert_eq!(ranks_seen, ["[0]", "[1]"]);
    std::fs::remove_dir_all(&dir).ok();
}
