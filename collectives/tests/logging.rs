//! `OXCCL_DEBUG` in a program that installs nothing itself (this test binary depends only on
//! `oxccl-collectives`): each rank is a copy of this binary started as a process, which makes a
//! communicator from the launcher variables and runs an all-reduce. Every rank must log
//! `host:pid:tid [rank] OXCCL INFO ...` lines, rank 0 the version and its peers' fabric, and
//! `OXCCL_DEBUG_FILE=DIR/ox.%h.%p` must give one file per rank instead of stderr.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxccl_collectives::{Communicator, ReduceOp};

const CHILD: &str = "OXCCL_LOGGING_TEST_CHILD";

/// The rank's side: runs only in the spawned copies (the parent test sets `CHILD` for them).
#[test]
fn rank_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let comm = Communicator::from_env().expect("joining");
    let mine = vec![comm.rank() as f32 + 1.0; 1000];
    let mut sum = vec![0.0f32; 1000];
    comm.all_reduce(&mine, &mut sum, ReduceOp::Sum)
        .expect("all-reduce");
    let p = comm.size() as f32;
    assert!(sum.iter().all(|&v| v == p * (p + 1.0) / 2.0));
}

fn spawn_ranks(n: usize, env: &[(&str, &str)]) -> Vec<Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (0..n)
        .map(|r| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--exact", "rank_process", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("OXCCL_RANK", r.to_string())
                .env("OXCCL_SIZE", n.to_string())
                .env("OXCCL_STORE_ADDR", format!("127.0.0.1:{port}"))
                .env("OXCCL_SECRET", "logging-test")
                .env("OXCCL_TIMEOUT", "60")
                .env_remove("OXCCL_DEBUG_FILE")
                .env_remove("OXCCL_DEBUG_SUBSYS")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            for (k, v) in env {
                c.env(k, v);
            }
            c.spawn().expect("spawning a rank")
        })
        .collect()
}

/// Waits for every rank (bounded), returning each one's pid and stderr.
fn finish(children: Vec<Child>) -> Vec<(u32, String)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    children
        .into_iter()
        .map(|mut c| {
            let pid = c.id();
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("rank pid {pid} did not finish in 120 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = c.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "rank pid {pid} failed:\n{err}");
            (pid, err)
        })
        .collect()
}

fn host() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    h.trim().split('.').next().unwrap().to_string()
}

/// The `OXCCL` lines of one rank's log, checked for the prefix `host:pid:tid [rank]`.
fn prefixed_lines(log: &str, pid: u32, rank: usize) -> Vec<String> {
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains(" OXCCL "))
        .map(str::to_string)
        .collect();
    let start = format!("{}:{pid}:", host());
    for l in &lines {
        assert!(l.starts_with(&start), "no host:pid prefix: {l}");
        let rest = &l[start.len()..];
        let (tid, rest) = rest.split_once(' ').unwrap();
        assert!(tid.parse::<u64>().is_ok(), "tid in {l}");
        assert!(
            rest.starts_with(&format!("[{rank}] OXCCL ")),
            "rank {rank} in {l}"
        );
        assert!(!l.contains('\x1b'), "colour codes in a pipe: {l}");
    }
    lines
}

#[test]
fn info_lines_come_from_every_rank() {
    let n = 3;
    let logs = finish(spawn_ranks(n, &[("OXCCL_DEBUG", "info")]));
    for (rank, (pid, log)) in logs.iter().enumerate() {
        let lines = prefixed_lines(log, *pid, rank);
        assert!(
            lines.iter().any(|l| l.contains("OXCCL INFO")),
            "rank {rank} logged no INFO line:\n{log}"
        );
        // Every rank says it is ready: the prefix is what tells their lines apart.
        assert!(
            lines.iter().any(|l| l.contains("communicator ready")),
            "{log}"
        );
    }
    let version = format!("oxccl version {}", env!("CARGO_PKG_VERSION"));
    assert!(
        logs[0]
            .1
            .lines()
            .any(|l| l.contains(&version) && l.contains("fabric per peer: shm to 1-2")),
        "rank 0 names the version and each peer's fabric:\n{}",
        logs[0].1
    );
    assert!(
        !logs[1].1.contains(&version),
        "only rank 0 prints the version"
    );
}

#[test]
fn debug_file_gives_one_file_per_rank() {
    let dir = std::env::temp_dir().join(format!("oxccl-logging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pattern = dir.join("ox.%h.%p");
    let logs = finish(spawn_ranks(
        2,
        &[
            ("OXCCL_DEBUG", "info"),
            ("OXCCL_DEBUG_SUBSYS", "INIT"),
            ("OXCCL_DEBUG_FILE", pattern.to_str().unwrap()),
        ],
    ));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    for (rank, (pid, stderr)) in logs.iter().enumerate() {
        assert!(
            !stderr.contains(" OXCCL "),
            "logged to stderr too:\n{stderr}"
        );
        let path = dir.join(format!("ox.{}.{pid}", host()));
        let log = std::fs::read_to_string(Path::new(&path)).expect("the rank's own file");
        let lines = prefixed_lines(&log, *pid, rank);
        assert!(!lines.is_empty());
        // The subsystem filter keeps INIT (the communicator's start) and drops the rest.
        assert!(
            lines.iter().any(|l| l.contains("communicator ready")),
            "{log}"
        );
        assert!(
            lines.iter().all(|l| l.contains("oxccl_collectives::comm")
                || l.contains("oxccl_collectives::bootstrap")
                || l.contains("oxccl_collectives::logging")),
            "{log}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
