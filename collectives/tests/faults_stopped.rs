//! The store's host (rank 0) stopped (SIGSTOP) at chosen moments of a 2-rank job over shared
//! memory and over TCP: between two calls while rank 1 enters a barrier, inside a large
//! all-reduce, and just before and just after rank 1's wait says on the failure board whom it
//! waits for (half its timeout: `exec/silence.rs`), so that rank 1's board talk meets a store
//! that stopped answering at each of its steps. A stopped rank keeps its sockets and its pid:
//! only the deadlines end rank 1's wait. Rank 1 must fail within `OXCCL_TIMEOUT` plus the
//! failure board's bound (`link/blame.rs`, `SETTLE_MAX`) and a margin for a loaded machine,
//! naming rank 0 and the operation.
//!
//! The ranks are processes (this test binary again, its role in `OXCCL_TEST_ROLE`), driven
//! one call at a time through their stdin, so that the stop lands where the test wants it.

use oxccl_collectives::{Communicator, ReduceOp};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Seconds without progress before a call fails.
const TIMEOUT_S: f64 = 3.0;
/// The failure board's bound after the timeout (`SETTLE_MAX`, 1.3 s) and what a loaded
/// two-core machine adds (scheduling, the check's own period, process start of nothing).
const BOUND_AFTER_TIMEOUT: Duration = Duration::from_secs(5);
/// A large all-reduce: long enough to be stopped inside.
const BIG: usize = 4 << 20;

/// A rank: runs the calls named on its stdin, one per line, answering each with `done` or
/// `error: ...`.
fn rank_main() -> i32 {
    let comm = match Communicator::from_env() {
        Ok(c) => c,
        Err(e) => {
            println!("error: init: {e}");
            return 2;
        }
    };
    println!("ready");
    let me = comm.rank();
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let r = match line.as_str() {
            "barrier" => comm.barrier(),
            "big" => {
                let input: Vec<f32> = (0..BIG).map(|i| (i % 7 + me) as f32).collect();
                let mut out = vec![0f32; BIG];
                comm.all_reduce(&input, &mut out, ReduceOp::Sum)
            }
            _ => return 0,
        };
        match r {
            Ok(()) => println!("done"),
            Err(e) => {
                println!("error: {e}");
                return 3;
            }
        }
    }
    0
}

struct Rank {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Rank {
    fn start(fabric: &str, r: usize, store: &str) -> Rank {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_stopped_store_host_is_named_within_the_bound"])
            .args(["--nocapture", "--test-threads=1"])
            .env("OXCCL_TEST_ROLE", "rank")
            .env("OXCCL_RANK", r.to_string())
            .env("OXCCL_SIZE", "2")
            .env("OXCCL_STORE_ADDR", store)
            .env("OXCCL_SECRET", "faults-stopped-test")
            .env("OXCCL_TIMEOUT", TIMEOUT_S.to_string())
            .env("OXCCL_TRANSPORT", fabric)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // The test harness's own words (`running 1 test`, `test NAME ... ` before the
                // rank's first line) are not the rank's.
                let said = match line.find("error: ") {
                    Some(i) => &line[i..],
                    None if line.ends_with("ready") => "ready",
                    None if line == "done" => "done",
                    None => continue,
                };
                if tx.send((Instant::now(), said.to_string())).is_err() {
                    break;
                }
            }
        });
        Rank {
            child,
            stdin,
            lines,
        }
    }

    fn call(&mut self, what: &str) {
        writeln!(self.stdin, "{what}").unwrap();
    }

    /// The rank's next line, within `limit`.
    fn said(&self, limit: Duration, who: &str) -> (Instant, String) {
        self.lines
            .recv_timeout(limit)
            .unwrap_or_else(|e| panic!("{who} said nothing within {limit:?}: {e}"))
    }
}

impl Drop for Rank {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

/// Where rank 0 is stopped.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After a barrier both finished; rank 1 then enters the next barrier alone.
    BetweenCalls,
    /// A few milliseconds into a large all-reduce of both.
    InsideALargeCall,
    /// Rank 1 waits in a barrier rank 0 has not entered; rank 0 is stopped this long after
    /// rank 1 entered it: before or after rank 1 says whom it waits for (at half the timeout).
    WhileRankOneWaits(Duration),
}

/// One job: rank 0 stopped at `at`; how long after the stop rank 1's error came, or `None`
/// when the job did not start (a bootstrap past `OXCCL_TIMEOUT` on a loaded machine).
fn stopped_at(fabric: &str, at: Moment) -> Option<Duration> {
    let store = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let mut r0 = Rank::start(fabric, 0, &store);
    let mut r1 = Rank::start(fabric, 1, &store);
    let start = Duration::from_secs(60);
    for (r, who) in [(&r0, "rank 0"), (&r1, "rank 1")] {
        let (_, l) = r.said(start, who);
        if l.starts_with("error: init: bootstrap: timed out") {
            println!("{fabric} {at:?}: the job did not start in time ({who}: {l}): again");
            return None;
        }
        assert_eq!(l, "ready", "{fabric} {at:?}: {who} did not start: {l}");
    }
    // A first call of both, so that every path (and rank 1's board client) is warm.
    for r in [&mut r0, &mut r1] {
        r.call("barrier");
    }
    for (r, who) in [(&r0, "rank 0"), (&r1, "rank 1")] {
        let (_, l) = r.said(start, who);
        assert_eq!(l, "done", "{fabric} {at:?}: {who}'s first barrier: {l}");
    }
    let (stopped, op) = match at {
        Moment::BetweenCalls => {
            signal(&r0.child, "STOP");
            let t = Instant::now();
            r1.call("barrier");
            (t, "barrier")
        }
        Moment::InsideALargeCall => {
            r0.call("big");
            r1.call("big");
            std::thread::sleep(Duration::from_millis(3));
            signal(&r0.child, "STOP");
            (Instant::now(), "all_reduce")
        }
        Moment::WhileRankOneWaits(after) => {
            r1.call("barrier");
            std::thread::sleep(after);
            signal(&r0.child, "STOP");
            (Instant::now(), "barrier")
        }
    };
    let limit = Duration::from_secs_f64(TIMEOUT_S) + BOUND_AFTER_TIMEOUT;
    let (mut when, mut line) = r1.said(limit, "rank 1");
    if line == "done" {
        // The large call ended before the stop took (rank 0 had sent all it had to): the
        // next call meets the stopped rank.
        r1.call("barrier");
        (when, line) = r1.said(limit, "rank 1");
    }
    let after = when.saturating_duration_since(stopped);
    assert!(
        line.starts_with("error: ") && line.contains("rank 0") && line.contains(op),
        "{fabric} {at:?}: rank 1 did not fail naming rank 0 and {op}: {line}"
    );
    assert!(
        after < limit,
        "{fabric} {at:?}: rank 1 failed {after:?} after the stop (bound {limit:?}): {line}"
    );
    println!(
        "{fabric} {at:?}: rank 1 failed {:.2} s after rank 0 stopped: {line}",
        after.as_secs_f64()
    );
    signal(&r0.child, "CONT");
    Some(after)
}

#[test]
fn a_stopped_store_host_is_named_within_the_bound() {
    if std::env::var("OXCCL_TEST_ROLE").is_ok() {
        std::process::exit(rank_main());
    }
    let half = Duration::from_secs_f64(TIMEOUT_S / 2.0);
    for fabric in ["shm", "tcp"] {
        for at in [
            Moment::BetweenCalls,
            Moment::InsideALargeCall,
            Moment::WhileRankOneWaits(half - Duration::from_millis(100)),
            Moment::WhileRankOneWaits(half + Duration::from_millis(100)),
        ] {
            let tries = (0..3).find_map(|_| stopped_at(fabric, at));
            assert!(tries.is_some(), "{fabric} {at:?}: three jobs did not start");
        }
    }
}
