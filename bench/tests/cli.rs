//! The command line's bad inputs end in clear errors, and the local launcher's ranks die with it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oxccl-bench"));
    for k in [
        "OXCCL_RANK",
        "OXCCL_SIZE",
        "OXCCL_STORE_ADDR",
        "RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "OXCCL_ALGO",
        "RUST_BACKTRACE",
    ] {
        c.env_remove(k);
    }
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null())
        .output()
        .expect("running oxccl-bench")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_sizes_are_clear_errors() {
    for (args, want) in [
        (&["-b", "0", "-e", "0"][..], "nothing to run"),
        (&["-e", "18446744073709551615"], "above the largest size"),
        (&["-b", "17179869184G"], "above the largest size"),
        (&["-b", "99999999999999999G"], "above the largest size"),
        (&["-b", "64", "-e", "8"], "is above -e"),
        (&["-f", "0"], "the sweep must grow"),
        (&["-f", "1", "-i", "0"], "the sweep must grow"),
        (&["--ranks", "100000"], "--ranks must be 1 to 1024"),
        (&["--ranks", "0"], "--ranks must be 1 to 1024"),
    ] {
        let o = run(bench().arg("all-reduce").args(args));
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // From 0: the sweep steps past 0 and ends.
    let o = run(bench().args(["all-reduce", "-b", "0", "-e", "16", "-n", "1", "-w", "0"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn partial_launcher_environments_and_bad_algorithms_are_errors() {
    let o = run(bench()
        .args(["all-reduce", "-e", "64"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("MASTER_ADDR"), "{}", stderr(&o));
    let o = run(bench()
        .args(["all-reduce", "-e", "64"])
        .env("OXCCL_RANK", "0"));
    assert!(stderr(&o).contains("OXCCL_SIZE"), "{}", stderr(&o));
    for algo in ["bogus", "hier"] {
        let o = run(bench()
            .args(["all-reduce", "-e", "64"])
            .env("OXCCL_ALGO", algo));
        assert!(!o.status.success(), "OXCCL_ALGO={algo} accepted");
        assert!(stderr(&o).contains("init: algorithm"), "{}", stderr(&o));
    }
}

#[test]
fn huge_simulations_are_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clusters");
    let text = std::fs::read_to_string(dir.join("ddl-2017.toml")).unwrap();
    let big: String = text
        .lines()
        .map(|l| {
            if l.starts_with("nodes =") {
                "nodes = 100000"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = std::env::temp_dir().join(format!("oxccl-big-{}.toml", std::process::id()));
    std::fs::write(&file, big).unwrap();
    let o = run(bench().arg("simulate").arg("--cluster").arg(&file));
    let _ = std::fs::remove_file(&file);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("above the limit of 4096"),
        "{}",
        stderr(&o)
    );
}

/// The pids whose parent is `parent`, and that are not zombies.
fn live_children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            if ppid == parent && state != 'Z' {
                out.push(pid);
            }
        }
    }
    out
}

/// (parent pid, state) of `pid`.
fn stat(pid: u32) -> Option<(u32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: read after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    Some((it.next()?.parse().ok()?, state))
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

#[test]
fn killing_the_launcher_kills_its_ranks() {
    let mut launcher = bench()
        .args([
            "all-reduce",
            "--ranks",
            "3",
            "-b",
            "8",
            "-e",
            "64M",
            "-n",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let ranks = loop {
        let c = live_children(launcher.id());
        if c.len() == 3 {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "ranks never started: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let them get into the sweep, then kill the launcher the hard way (no cleanup code runs).
    std::thread::sleep(Duration::from_millis(500));
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let killed = Instant::now();
    while ranks.iter().any(|&p| alive(p)) {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "ranks {ranks:?} outlived their launcher"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("ranks gone {:?} after the launcher", killed.elapsed());
}

/// `--iter-log` writes one line per timed call and rank (bytes, in place, trial, call, ms), and a
/// prefix in a directory that does not exist is a clear error.
#[test]
fn iter_log_has_every_timed_call_of_every_rank() {
    let dir = std::env::temp_dir().join(format!("oxccl-iter-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let prefix = dir.join("calls");
    let o = run(bench()
        .args([
            "all-reduce",
            "-t",
            "2",
            "-b",
            "8",
            "-e",
            "64",
            "-n",
            "3",
            "-w",
            "1",
        ])
        .args(["--trials", "2", "--iter-log"])
        .arg(&prefix));
    assert!(o.status.success(), "{}", stderr(&o));
    for rank in 0..2 {
        let text = std::fs::read_to_string(format!("{}.rank{rank}", prefix.display()))
            .expect("the rank's log");
        let rows: Vec<Vec<f64>> = text
            .lines()
            .map(|l| l.split(' ').map(|f| f.parse().expect("a number")).collect())
            .collect();
        // 4 sizes x 2 halves x 2 trials x 3 calls.
        assert_eq!(rows.len(), 4 * 2 * 2 * 3, "rank {rank}: {text}");
        let sizes: std::collections::BTreeSet<u64> = rows.iter().map(|r| r[0] as u64).collect();
        assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [8, 16, 32, 64]);
        for r in &rows {
            assert_eq!(r.len(), 5, "rank {rank}: {r:?}");
            assert!(r[1] == 0.0 || r[1] == 1.0, "in_place {r:?}");
            assert!(r[2] < 2.0 && r[3] < 3.0, "trial and call {r:?}");
            assert!(r[4] > 0.0 && r[4] < 10_000.0, "ms {r:?}");
        }
    }
    let o = run(bench()
        .args([
            "all-reduce",
            "-b",
            "8",
            "-e",
            "8",
            "-n",
            "1",
            "-w",
            "0",
            "--iter-log",
        ])
        .arg(dir.join("missing/calls")));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--iter-log: creating"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}
