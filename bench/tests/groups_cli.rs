//! `oxccl-bench sendrecv` and the collective sweeps' `--group N` and `--split N`, run with
//! local ranks: every row is checked (#wrong 0) and has the expected sizes.

use std::process::{Command, Stdio};

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
    ] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs the command and returns its JSON rows.
fn rows(args: &[&str]) -> Vec<String> {
    let out = bench().args(args).output().expect("running oxccl-bench");
    assert!(
        out.status.success(),
        "oxccl-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .collect()
}

#[test]
fn sendrecv_rows_are_checked() {
    for window in ["1", "4"] {
        let r = rows(&[
            "sendrecv", "--ranks", "3", "-b", "8", "-e", "2M", "-f", "8", "-n", "2", "-w", "1",
            "--trials", "1", "--window", window, "--json",
        ]);
        assert_eq!(r.len(), 7, "{r:?}");
        for l in &r {
            assert!(l.contains("\"wrong\":\"0\""), "{l}");
        }
    }
}

#[test]
fn grouped_calls_on_split_communicators_are_checked() {
    let r = rows(&[
        "all-reduce",
        "--ranks",
        "4",
        "--split",
        "2",
        "--group",
        "3",
        "-b",
        "8",
        "-e",
        "1M",
        "-f",
        "16",
        "-n",
        "2",
        "-w",
        "1",
        "--json",
    ]);
    assert_eq!(r.len(), 5, "{r:?}");
    for l in &r {
        assert!(l.contains("\"ranks\":2"), "{l}");
        assert!(l.contains("\"wrong\":0"), "{l}");
        assert!(l.contains("\"wrong_in_place\":0"), "{l}");
    }
}
