//! Fault trials: ranks run a random sequence of collectives as separate processes (this test
//! binary starts copies of itself, the role in `OXCCL_TEST_ROLE`); at a random moment one random
//! rank is killed (SIGKILL) or stopped (SIGSTOP), or killed during its bootstrap (once its
//! shared-memory listener exists, before the job is ready). Every survivor must fail with an
//! error within `OXCCL_TIMEOUT` (plus a margin for process exit on a loaded machine): no hang,
//! no silent success. Over shared memory and over TCP, with 2, 3 and 4 ranks.
//!
//! After a kill or a stop, every survivor's error must name the failed rank (`rank N`) and the
//! operation (or `init`); after a kill, nothing of the trial may be left in `/dev/shm` or the
//! temporary directory. (After a stop, the ranks that wait on others time out at about the same
//! moment as those that wait on it: they find the stopped rank through what the waiting ranks
//! say on the failure board, `link/blame.rs`.)
//!
//! `OXCCL_FAULT_TRIALS` sets the trials per (fabric, ranks) pair (default 2; CI keeps it small),
//! `OXCCL_FAULT_KINDS` which faults are drawn (`kill,stop,boot`, the default),
//! `OXCCL_FAULT_SEED` replays a run and `OXCCL_FAULT_PAIRS` (`tcp:2,shm:4`) runs only those
//! (fabric, ranks) pairs of it, each trial with the seed it has in the whole run (unless a
//! trial skipped before it was redone there). `OXCCL_FAULT_VICTIM=N` makes rank N the victim
//! of every trial and `OXCCL_FAULT_REPEAT=SEED` runs every trial with that trial seed (one
//! shape again and again, its timing left to chance): to hunt a rare failure. With
//! `OXCCL_FAULT_LOGS=DIR`, every rank of a trial writes its `OXCCL_DEBUG` log
//! (`OXCCL_FAULT_DEBUG`, default `info`) and stderr to `DIR`; a trial that passes deletes
//! them, unless a survivor took over `OXCCL_TIMEOUT` + 2 s; one that fails keeps them, with
//! the stacks of a survivor that overran (`gdb`).

use oxccl_collectives::{Communicator, ReduceOp};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Seconds without progress before a call fails, in every trial.
const TIMEOUT_S: f64 = 3.0;
/// What scheduling and process exit may add on a loaded two-core machine (a survivor's own
/// timeout fired 1.5 s late there with eight fuzzers and two soaks running beside it).
const MARGIN: Duration = Duration::from_secs(7);

fn main() {
    if std::env::var("OXCCL_TEST_ROLE").is_ok() {
        std::process::exit(rank_main());
    }
    let trials: usize = std::env::var("OXCCL_FAULT_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("OXCCL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let kinds: Vec<String> = std::env::var("OXCCL_FAULT_KINDS")
        .unwrap_or_else(|_| "kill,stop,boot".into())
        .split(',')
        .map(|k| k.trim().to_uppercase())
        .collect();
    let kinds: Vec<&'static str> = ["KILL", "STOP", "BOOT"]
        .into_iter()
        .filter(|k| kinds.iter().any(|x| x == k))
        .collect();
    assert!(!kinds.is_empty(), "OXCCL_FAULT_KINDS names no fault");
    let pairs = std::env::var("OXCCL_FAULT_PAIRS").ok();
    let chosen = |fabric: &str, p: usize| {
        pairs
            .as_deref()
            .is_none_or(|s| s.split(',').any(|x| x.trim() == format!("{fabric}:{p}")))
    };
    println!("fault trials: {trials} per pair, kinds {kinds:?}, OXCCL_FAULT_SEED={seed}");
    if kinds.contains(&"BOOT") {
        for fabric in ["shm", "tcp"] {
            store_host_killed_before_the_others_start(fabric);
            store_host_killed_before_the_others_connect(fabric);
        }
    }
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    let mut redone = 0;
    for fabric in ["shm", "tcp"] {
        for p in [2usize, 3, 4] {
            for t in 0..trials {
                let trial_seed = rng.next();
                // One trial's shape again and again (its timing differs on every run).
                let trial_seed = std::env::var("OXCCL_FAULT_REPEAT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(trial_seed);
                if !chosen(fabric, p) {
                    continue;
                }
                // A trial whose job did not even start (its bootstrap ran past OXCCL_TIMEOUT
                // on an overloaded machine, before any fault) is run again with a new seed.
                let mut seed = trial_seed;
                let row = loop {
                    match trial(fabric, p, seed, t, &kinds) {
                        Some(row) => break row,
                        None => {
                            drop_logs(seed);
                            redone += 1;
                            assert!(redone <= 10, "ten jobs did not start: machine too loaded?");
                            seed = rng.next();
                        }
                    }
                };
                rows.push(row);
            }
        }
    }
    summarize(&rows);
    println!("{redone} trials redone because their job did not start in time");
}

// ----- the ranks ---------------------------------------------------------------------------

/// splitmix64, so that every rank draws the same sequence from the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random collectives until one fails; prints `started` after the first, `error: ...` at the end.
fn rank_main() -> i32 {
    let comm = match Communicator::from_env() {
        Ok(c) => c,
        Err(e) => {
            println!("error: init: {e}");
            return 2;
        }
    };
    let seed: u64 = std::env::var("OXCCL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rng = Rng(seed);
    let (p, me) = (comm.size(), comm.rank());
    for i in 0u64.. {
        // 1 to 2^20 elements, log-uniform: small calls (latency paths) and large (pipelined).
        let n = 1usize << rng.below(21);
        let input = vec![(me + 1) as f32; n];
        let call = Instant::now();
        let r = match rng.below(4) {
            0 => {
                let mut out = vec![0f32; n];
                comm.all_reduce(&input, &mut out, ReduceOp::Sum)
            }
            1 => {
                let mut buf = input.clone();
                comm.broadcast(&mut buf, (i % p as u64) as usize)
            }
            2 => {
                let mut out = vec![0f32; n * p];
                comm.all_gather(&input, &mut out)
            }
            _ => comm.barrier(),
        };
        if let Err(e) = r {
            // For the log: how long the failed call took (its error says how long it waited).
            eprintln!(
                "rank {me}: call {i} of {n} elements began at {:.3} (unix time), failed {:.2} s later",
                unix_now() - call.elapsed().as_secs_f64(),
                call.elapsed().as_secs_f64()
            );
            println!("error: {e}");
            return 3;
        }
        if i == 0 {
            println!("started");
        }
    }
    0
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ----- the trials --------------------------------------------------------------------------

struct Row {
    fabric: &'static str,
    p: usize,
    victim: usize,
    how: &'static str,
    /// Per survivor: seconds from the fault to its exit, and its error.
    survivors: Vec<(usize, f64, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A rank's stdout lines, with the time each arrived.
fn reader(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills every rank still running when a trial ends, even when it fails.
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a trial's ranks (`pids`) left behind: listener directories and ring files in
/// `/dev/shm`, rendezvous files and store marks in the temporary directory.
fn leftovers(pids: &[u32]) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [std::path::PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("oxccl") && pids.iter().any(|p| name.contains(&format!("-{p}-"))) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found.extend(store_mark_of(pids).map(|p| p.display().to_string()));
    found
}

/// The store mark (`bootstrap/store_mark.rs`) that one of `pids` wrote, if it is there: a file
/// `oxccl-store-*` in the temporary directory holding the pid of the rank 0 that made it (then its parent's).
fn store_mark_of(pids: &[u32]) -> Option<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("oxccl-store-"))
        .find(|e| {
            std::fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
                .is_some_and(|p| pids.contains(&p))
        })
        .map(|e| e.path())
}

/// A rank's process for a job of `p` ranks at `store` (the test binary in the rank role).
fn spawn_rank(fabric: &str, p: usize, r: usize, store: &str, seed: u64) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(dir) = log_dir() {
        let debug = std::env::var("OXCCL_FAULT_DEBUG").unwrap_or_else(|_| "info".into());
        let stem = dir.join(format!("seed{seed}-rank{r}"));
        cmd.env("OXCCL_DEBUG", debug)
            .env("OXCCL_DEBUG_FILE", stem.with_extension("log"))
            .stderr(std::fs::File::create(stem.with_extension("stderr")).unwrap());
    }
    cmd.env("OXCCL_TEST_ROLE", "soak")
        .env("OXCCL_RANK", r.to_string())
        .env("OXCCL_SIZE", p.to_string())
        .env("OXCCL_STORE_ADDR", store)
        .env("OXCCL_SECRET", "faults-test")
        .env("OXCCL_TIMEOUT", TIMEOUT_S.to_string())
        .env("OXCCL_TRANSPORT", fabric)
        .env("OXCCL_FAULT_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Rank 0 (the store's host) is killed once its shared-memory listener exists, before rank 1
/// has even started: rank 1 never reaches the store, so it cannot learn where that listener
/// is, yet it must fail naming rank 0 and leave nothing behind (its bootstrap's failure path
/// removes the listeners of this user's dead processes).
fn store_host_killed_before_the_others_start(fabric: &str) {
    let store = format!("127.0.0.1:{}", free_port());
    let mut ranks = Ranks(vec![spawn_rank(fabric, 2, 0, &store, 1)]);
    let pid = ranks.0[0].id();
    let mine = format!("oxccl-shm-{pid}-");
    let since = Instant::now();
    while !std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&mine))
    {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "rank 0 made no listener"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    ranks.0[0].kill().unwrap();
    ranks.0[0].wait().unwrap();
    ranks.0.push(spawn_rank(fabric, 2, 1, &store, 1));
    let lines = reader(&mut ranks.0[1]);
    let limit = Duration::from_secs_f64(TIMEOUT_S) + MARGIN;
    let (_, line) = lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{fabric}: rank 1 said nothing within {limit:?}: {e}"));
    assert!(
        line.starts_with("error: init:") && names(&line, 0),
        "{fabric}: rank 1 did not fail naming rank 0: {line}"
    );
    let code = wait_exit(&mut ranks.0[1], limit);
    assert_eq!(code, Some(2), "{fabric}: rank 1 exit: {line}");
    let pids = [pid, ranks.0[1].id()];
    drop(ranks);
    let left = leftovers(&pids);
    assert!(
        left.is_empty(),
        "{fabric}: rank 0 killed before rank 1 started left {left:?}"
    );
    println!("  {fabric} p=2 BOOT rank 0 before rank 1 started: rank 1: {line}");
}

/// Rank 0 is killed during its bootstrap while rank 1, started first, still tries to reach
/// its store: rank 1 must tell a dead rank 0 from a late one (rank 0's mark on the host) and
/// fail within 2 s naming it, not at its deadline, and leave nothing behind.
fn store_host_killed_before_the_others_connect(fabric: &str) {
    let store = format!("127.0.0.1:{}", free_port());
    let mut ranks = Ranks(vec![spawn_rank(fabric, 2, 1, &store, 1)]);
    let lines = reader(&mut ranks.0[0]);
    // Rank 1 runs and retries its connection (every 200 ms by now).
    std::thread::sleep(Duration::from_millis(500));
    ranks.0.push(spawn_rank(fabric, 2, 0, &store, 1));
    let pid = ranks.0[1].id();
    let since = Instant::now();
    while store_mark_of(&[pid]).is_none() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "{fabric}: rank 0 made no store mark"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    ranks.0[1].kill().unwrap();
    ranks.0[1].wait().unwrap();
    let killed = Instant::now();
    let limit = Duration::from_secs_f64(TIMEOUT_S) + MARGIN;
    let (at, line) = lines
        .recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{fabric}: rank 1 said nothing within {limit:?}: {e}"));
    let after = at.saturating_duration_since(killed);
    assert!(
        line.starts_with("error: init:") && names(&line, 0),
        "{fabric}: rank 1 did not fail naming rank 0: {line}"
    );
    // Well under OXCCL_TIMEOUT (3 s): it did not wait for its deadline.
    assert!(
        after < Duration::from_secs(2),
        "{fabric}: rank 1 noticed rank 0's death after {after:?}: {line}"
    );
    let code = wait_exit(&mut ranks.0[0], limit);
    assert_eq!(code, Some(2), "{fabric}: rank 1 exit: {line}");
    let pids = [pid, ranks.0[0].id()];
    drop(ranks);
    let left = leftovers(&pids);
    assert!(
        left.is_empty(),
        "{fabric}: rank 0 killed before rank 1 connected left {left:?}"
    );
    println!(
        "  {fabric} p=2 BOOT rank 0 before rank 1 connected: rank 1 after {:.2} s: {line}",
        after.as_secs_f64()
    );
}

/// Where the ranks of a trial write their logs (`OXCCL_FAULT_LOGS`), if anywhere.
fn log_dir() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(std::env::var_os("OXCCL_FAULT_LOGS")?);
    std::fs::create_dir_all(&dir).unwrap();
    Some(dir)
}

/// Removes the logs of a trial that passed.
fn drop_logs(seed: u64) {
    let Some(dir) = log_dir() else { return };
    let mine = format!("seed{seed}-");
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&mine) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Every thread's stack of a rank that overran its bound (gdb, when it is installed), kept
/// beside the trial's logs: where it waits is the finding.
fn dump_stacks(pid: u32, seed: u64, r: usize) {
    let Some(dir) = log_dir() else { return };
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(Stdio::null())
        .output();
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("gdb: {e}"),
    };
    let _ = std::fs::write(dir.join(format!("seed{seed}-rank{r}.stacks")), text);
}

/// A process's state and the kernel function it sleeps in (`/proc/PID/stat`, `wchan`).
fn proc_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .unwrap_or("?");
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    format!("state {state}, wchan {wchan}")
}

fn trial(
    fabric: &'static str,
    p: usize,
    seed: u64,
    t: usize,
    kinds: &[&'static str],
) -> Option<Row> {
    let mut rng = Rng(seed);
    let victim = rng.below(p as u64) as usize;
    let victim = std::env::var("OXCCL_FAULT_VICTIM")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v < p)
        .unwrap_or(victim);
    let how = kinds[rng.below(kinds.len() as u64) as usize];
    let delay = Duration::from_millis(rng.below(if how == "BOOT" { 30 } else { 300 }));
    let store = format!("127.0.0.1:{}", free_port());
    let mut ranks = Ranks(
        (0..p)
            .map(|r| spawn_rank(fabric, p, r, &store, seed))
            .collect(),
    );
    let pids: Vec<u32> = ranks.0.iter().map(Child::id).collect();
    let lines: Vec<_> = ranks.0.iter_mut().map(reader).collect();
    if how == "BOOT" {
        // The fault comes once the victim's shared-memory listener exists (it publishes its
        // record right after), plus a random delay of up to 30 ms: inside the bootstrap.
        let mine = format!("oxccl-shm-{}-", pids[victim]);
        let since = Instant::now();
        // A bootstrap that went by between two looks ends in a kill during the calls.
        while !std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&mine))
        {
            if lines[victim].try_recv().is_ok_and(|(_, l)| l == "started") {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "{fabric} p={p}: rank {victim} made no listener and did not start"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        // The fault comes after the victim's first call, plus a random delay.
        let (_, first) = lines[victim]
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{fabric} p={p}: rank {victim} did not start: {e}"));
        if first.starts_with("error: init:") {
            println!("  {fabric} p={p}: rank {victim} did not start ({first}): trial redone");
            return None;
        }
        if first != "started" {
            // A job that failed before any fault: say what every rank said (the first to fail
            // is the one to look at).
            std::thread::sleep(Duration::from_secs(1));
            let said: Vec<String> = lines
                .iter()
                .zip(&mut ranks.0)
                .enumerate()
                .map(|(r, (l, c))| {
                    let got: Vec<String> = l.try_iter().map(|(_, line)| line).collect();
                    // A rank gone without a word: crashed, or killed from outside.
                    let ended = match c.try_wait() {
                        Ok(Some(status)) => format!(" [{status}]"),
                        _ => String::new(),
                    };
                    format!("rank {r}: {}{ended}", got.join(" | "))
                })
                .collect();
            // The job never started: a rank's bootstrap ran past OXCCL_TIMEOUT on an
            // overloaded machine, after the others had finished theirs.
            if said
                .iter()
                .any(|l| l.contains("error: init: bootstrap: timed out"))
            {
                println!(
                    "  {fabric} p={p}: a rank's bootstrap timed out ({}): trial redone",
                    said.join("; ")
                );
                return None;
            }
            panic!(
                "{fabric} p={p} trial {t} (seed {seed}): rank {victim} failed before the fault: \
                 {first}; {}",
                said.join("; ")
            );
        }
    }
    std::thread::sleep(delay);
    let pid = ranks.0[victim].id().to_string();
    let signal = if how == "STOP" { "STOP" } else { "KILL" };
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{how} {pid}");
    let fault_at = Instant::now();
    let fault_unix = unix_now();
    let deadline = Duration::from_secs_f64(TIMEOUT_S) + MARGIN;
    let mut survivors = Vec::new();
    for r in (0..p).filter(|&r| r != victim) {
        let mut error = None;
        while error.is_none() {
            let left = deadline.saturating_sub(fault_at.elapsed());
            match lines[r].recv_timeout(left) {
                Ok((at, line)) if line.starts_with("error: ") => {
                    error = Some((at.saturating_duration_since(fault_at), line));
                }
                Ok(_) => {}
                Err(_) => {
                    // Still running (where does it wait?), or gone without a word (a crash,
                    // or a kill from outside the trial): the two need different hunts.
                    let state = match ranks.0[r].try_wait() {
                        Ok(Some(status)) => format!("it ended without an error line: {status}"),
                        _ => {
                            dump_stacks(ranks.0[r].id(), seed, r);
                            format!("it still runs ({})", proc_state(ranks.0[r].id()))
                        }
                    };
                    // And the victim: a stopped rank that something else resumed (state
                    // R or S, not T) would explain a survivor that goes on.
                    let victim_state = match ranks.0[victim].try_wait() {
                        Ok(Some(status)) => format!("ended: {status}"),
                        _ => proc_state(ranks.0[victim].id()),
                    };
                    panic!(
                        "{fabric} p={p} trial {t} (seed {seed}): rank {r} did not fail within \
                         {deadline:?} of {how} of rank {victim}: {state}; rank {victim}: \
                         {victim_state}"
                    )
                }
            }
        }
        let (after, line) = error.unwrap();
        // Its exit must follow its error.
        let code = wait_exit(&mut ranks.0[r], deadline.saturating_sub(fault_at.elapsed()));
        let want = if line.starts_with("error: init:") {
            2
        } else {
            3
        };
        assert_eq!(code, Some(want), "{fabric} p={p}: rank {r} exit: {line}");
        let e = line["error: ".len()..].to_string();
        {
            // A killed or stopped rank is named by every survivor, with the operation.
            let op = ["init", "all_reduce", "broadcast", "all_gather", "barrier"]
                .iter()
                .any(|op| e.starts_with(op));
            assert!(
                names(&e, victim) && op,
                "{fabric} p={p} trial {t} (seed {seed}): rank {r}'s error does not name \
                 {how} rank {victim} and the operation: {e}"
            );
        }
        survivors.push((r, after.as_secs_f64(), e));
    }
    drop(ranks);
    // A slow survivor's logs stay too: where its seconds went is worth a look.
    if survivors.iter().all(|s| s.1 < TIMEOUT_S + 2.0) {
        drop_logs(seed);
    }
    if how != "STOP" {
        let left = leftovers(&pids);
        assert!(
            left.is_empty(),
            "{fabric} p={p} trial {t} (seed {seed}): {how} of rank {victim} left {left:?}"
        );
    }
    let row = Row {
        fabric,
        p,
        victim,
        how,
        survivors,
    };
    for (r, after, e) in &row.survivors {
        println!(
            "  {fabric} p={p} {how} rank {victim} at {fault_unix:.3}: rank {r} failed after \
             {after:.2} s{}: {e}",
            if names(e, victim) { " [names it]" } else { "" }
        );
    }
    Some(row)
}

fn wait_exit(c: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s.code();
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether an error names rank `victim` (`rank 2`, not `rank 21`).
fn names(error: &str, victim: usize) -> bool {
    let needle = format!("rank {victim}");
    error.match_indices(&needle).any(|(i, _)| {
        !error[i + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn summarize(rows: &[Row]) {
    println!(
        "{:>6} {:>3} {:>5} {:>7} {:>10} {:>10} {:>12}",
        "fabric", "p", "fault", "trials", "survivors", "max s", "name victim"
    );
    for fabric in ["shm", "tcp"] {
        for p in [2, 3, 4] {
            for how in ["KILL", "STOP", "BOOT"] {
                let sel: Vec<&Row> = rows
                    .iter()
                    .filter(|r| r.fabric == fabric && r.p == p && r.how == how)
                    .collect();
                if sel.is_empty() {
                    continue;
                }
                let errs: Vec<(f64, bool)> = sel
                    .iter()
                    .flat_map(|r| r.survivors.iter().map(|(_, s, e)| (*s, names(e, r.victim))))
                    .collect();
                let max = errs.iter().map(|e| e.0).fold(0.0, f64::max);
                let named = errs.iter().filter(|e| e.1).count();
                println!(
                    "{fabric:>6} {p:>3} {how:>5} {:>7} {:>10} {max:>10.2} {:>7}/{:<4}",
                    sel.len(),
                    errs.len(),
                    named,
                    errs.len()
                );
            }
        }
    }
    let all: Vec<bool> = rows
        .iter()
        .flat_map(|r| r.survivors.iter().map(|(_, _, e)| names(e, r.victim)))
        .collect();
    println!(
        "every survivor of {} trials failed in time; {} of {} errors name the failed rank",
        rows.len(),
        all.iter().filter(|&&b| b).count(),
        all.len()
    );
}
