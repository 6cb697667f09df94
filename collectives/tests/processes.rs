//! Ranks as separate processes: this test binary starts copies of itself (the role in
//! `OXCCL_TEST_ROLE`) with `OXCCL_*` bootstrap variables, as a launcher would.
//!
//! - three processes on one host run every collective over shared memory;
//! - one of three processes is killed in the middle of a large all-reduce: the others fail
//!   with an error naming the operation and a peer, within `OXCCL_TIMEOUT`;
//! - ranks over TCP exit as soon as their last call returns, and their peers still get every
//!   byte (a link's proxy flushes before the process ends);
//! - two "hosts" (network namespaces joined by a veth pair) with two ranks each: the
//!   hierarchical all-reduce runs over shm inside a namespace and TCP across (skipped, with the
//!   reason printed, where namespaces cannot be made);
//! - four processes on a made-up host of two NUMA nodes (`OXCCL_TOPO_FILE`, bound with
//!   `OXCCL_BIND=numa`): `hier` takes its dims, 2x2, from the map.

use oxccl_collectives::schedule::Collective;
use oxccl_collectives::{Communicator, LinkKind, ReduceOp};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if let Ok(role) = std::env::var("OXCCL_TEST_ROLE") {
        std::process::exit(child(&role));
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 9] = [
        ("three_processes_over_shm", three_processes_over_shm),
        ("torchrun_style_variables", torchrun_style_variables),
        ("under_mpirun", under_mpirun),
        (
            "a_rank_that_exits_after_its_last_send_is_heard",
            a_rank_that_exits_after_its_last_send_is_heard,
        ),
        (
            "killing_a_rank_fails_the_others_in_time",
            killing_a_rank_fails_the_others_in_time,
        ),
        (
            "large_messages_in_flight_between_processes",
            large_messages_in_flight_between_processes,
        ),
        (
            "killing_a_rank_during_pulls_fails_the_others",
            killing_a_rank_during_pulls_fails_the_others,
        ),
        (
            "two_hosts_in_network_namespaces",
            two_hosts_in_network_namespaces,
        ),
        (
            "two_numa_nodes_from_a_topology_file",
            two_numa_nodes_from_a_topology_file,
        ),
    ];
    for (name, t) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("test {name} ...");
        t();
        println!("test {name} ... ok");
    }
}

// ----- the ranks ---------------------------------------------------------------------------

fn child(role: &str) -> i32 {
    if let Ok(filter) = std::env::var("OXCCL_DEBUG") {
        // To stdout, which the parent reads and checks.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stdout)
            .with_ansi(false)
            .init();
    }
    let comm = match Communicator::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rank init failed: {e}");
            return 2;
        }
    };
    let r = match role {
        "ops" => ops(&comm),
        "loop" => big_loop(&comm),
        "hier" => hier(&comm),
        "numa" => numa(&comm),
        "last-send" => last_send(&comm),
        "pulls" => pulls(&comm, Some(3)),
        "pulls-loop" => pulls(&comm, None),
        other => Err(format!("unknown role {other}")),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            println!("error: {e}");
            3
        }
    }
}

fn ops(c: &Communicator) -> Result<(), String> {
    let (p, me) = (c.size(), c.rank());
    for q in (0..p).filter(|&q| q != me) {
        if c.transport_to(q) != Some(LinkKind::Shm) {
            return Err(format!(
                "rank {me} reaches {q} over {:?}, not shm",
                c.transport_to(q)
            ));
        }
    }
    for n in [1usize, 1000, 333_333] {
        let input: Vec<f32> = (0..n).map(|i| ((me * 7 + i) % 100) as f32).collect();
        let mut out = vec![0f32; n];
        c.all_reduce(&input, &mut out, ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        for (i, v) in out.iter().enumerate() {
            let want: f32 = (0..p).map(|q| ((q * 7 + i) % 100) as f32).sum();
            if *v != want {
                return Err(format!("all_reduce n={n} element {i}: {v} != {want}"));
            }
        }
        let mut rs = vec![0f32; n];
        let rs_in: Vec<f32> = (0..n * p).map(|i| (i % 13 + me) as f32).collect();
        c.reduce_scatter(&rs_in, &mut rs, ReduceOp::Max)
            .map_err(|e| e.to_string())?;
        for (i, v) in rs.iter().enumerate() {
            let want = ((me * n + i) % 13 + p - 1) as f32;
            if *v != want {
                return Err(format!("reduce_scatter n={n} element {i}: {v} != {want}"));
            }
        }
        let mut ag = vec![0u32; n * p];
        c.all_gather(&vec![me as u32; n], &mut ag)
            .map_err(|e| e.to_string())?;
        if ag.iter().enumerate().any(|(i, &v)| v != (i / n) as u32) {
            return Err(format!("all_gather n={n} wrong"));
        }
        let mut b: Vec<u64> = if me == 1 {
            (0..n as u64).collect()
        } else {
            vec![0; n]
        };
        c.broadcast(&mut b, 1).map_err(|e| e.to_string())?;
        if b.iter().enumerate().any(|(i, &v)| v != i as u64) {
            return Err(format!("broadcast n={n} wrong"));
        }
    }
    c.barrier().map_err(|e| e.to_string())
}

/// Ends with a tiny all-reduce (each rank sends its value to every peer, then receives) and
/// exits the moment it returns: a rank that has all it needs may exit while its own last
/// message is still in its proxy's ring.
/// Four ranks bound two per NUMA node of `tests/data/two-numa.xml`, with `OXCCL_ALGO=hier`.
fn numa(c: &Communicator) -> Result<(), String> {
    use rand::{Rng, SeedableRng};
    let (p, me) = (c.size(), c.rank());
    let map = c.topology();
    let nodes: Vec<Option<u32>> = map.ranks.iter().map(|l| l.numa).collect();
    if nodes != [Some(0), Some(0), Some(1), Some(1)] {
        return Err(format!("NUMA nodes of the ranks: {nodes:?}"));
    }
    if map.hier_dims() != Some(vec![2, 2]) {
        return Err(format!(
            "hier dims {:?}: {}",
            map.hier_dims(),
            map.describe_hier()
        ));
    }
    if let Some(q) = (0..p).find(|&q| q != me && c.transport_to(q) != Some(LinkKind::Shm)) {
        return Err(format!("rank {q} reached over {:?}", c.transport_to(q)));
    }
    let n = 1 << 20;
    let algo = c
        .algorithm_for(Collective::AllReduce, n * 4)
        .map_err(|e| e.to_string())?;
    if !algo.starts_with("hier:2x2") {
        return Err(format!("OXCCL_ALGO=hier chose {algo}, expected hier:2x2"));
    }
    // Random integers below 2^24 / 4: every sum is exact in f32, so the tolerance is zero.
    let data = |q: usize| -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e75_6d61 + q as u64);
        (0..n).map(|_| rng.gen_range(0..1_000_000) as f32).collect()
    };
    let mut out = vec![0f32; n];
    c.all_reduce(&data(me), &mut out, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    let mut want = vec![0f32; n];
    for q in 0..p {
        for (w, x) in want.iter_mut().zip(data(q)) {
            *w += x;
        }
    }
    if let Some(i) = (0..n).find(|&i| out[i] != want[i]) {
        return Err(format!("element {i}: {} != {}", out[i], want[i]));
    }
    println!(
        "rank {me}: NUMA node {:?}, CPUs {}, {algo}",
        map.ranks[me].numa, map.ranks[me].cpus
    );
    Ok(())
}

fn last_send(c: &Communicator) -> Result<(), String> {
    let (p, me) = (c.size(), c.rank());
    if (0..p).any(|q| q != me && c.transport_to(q) != Some(LinkKind::Tcp)) {
        return Err(format!("rank {me} is not on TCP to every peer"));
    }
    let n = 1 << 18; // 1 MiB of f32
    let mut out = vec![0f32; n];
    c.all_reduce(&vec![me as f32; n], &mut out, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    let mut last = [0f64];
    c.all_reduce(&[me as f64], &mut last, ReduceOp::Max)
        .map_err(|e| e.to_string())?;
    let sum = (p * (p - 1) / 2) as f32;
    if out.iter().any(|&x| x != sum) || last[0] != (p - 1) as f64 {
        return Err(format!("rank {me}: wrong result"));
    }
    Ok(())
}

fn big_loop(c: &Communicator) -> Result<(), String> {
    let n = 8 << 20; // 32 MiB of f32
    let input = vec![1f32; n];
    let mut out = vec![0f32; n];
    for i in 0.. {
        c.all_reduce(&input, &mut out, ReduceOp::Sum)
            .map_err(|e| e.to_string())?;
        if i == 0 {
            println!("started");
        }
    }
    Ok(())
}

/// Every rank sends every other one messages of mixed sizes, several of them above the
/// single-copy threshold and in flight at once, in one group with the receives; checks every
/// element. `rounds` of them, or forever (printing "started" after the first).
fn pulls(c: &Communicator, rounds: Option<usize>) -> Result<(), String> {
    const SIZES: [usize; 6] = [40_000, 1_000, 131_072, 600_000, 20_000, 300_000];
    let (p, me) = (c.size(), c.rank());
    let word = |from: usize, to: usize, k: usize, i: usize| {
        let x = ((from * 64 + to * 8 + k) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64;
        x ^ (x >> 29)
    };
    let peers: Vec<usize> = (0..p).filter(|&q| q != me).collect();
    let out: Vec<Vec<u64>> = peers
        .iter()
        .flat_map(|&q| (0..SIZES.len()).map(move |k| (q, k)))
        .map(|(q, k)| (0..SIZES[k]).map(|i| word(me, q, k, i)).collect())
        .collect();
    let mut inc: Vec<Vec<u64>> = peers
        .iter()
        .flat_map(|_| SIZES.iter().map(|&n| vec![0u64; n]))
        .collect();
    for round in 0.. {
        if rounds.is_some_and(|r| round == r) {
            break;
        }
        let g = c.group();
        for (i, m) in out.iter().enumerate() {
            g.send(m, peers[i / SIZES.len()])
                .map_err(|e| e.to_string())?;
        }
        for (i, b) in inc.iter_mut().enumerate() {
            b.fill(0);
            g.recv(b, peers[i / SIZES.len()])
                .map_err(|e| e.to_string())?;
        }
        g.end().map_err(|e| e.to_string())?;
        for (i, b) in inc.iter().enumerate() {
            let (q, k) = (peers[i / SIZES.len()], i % SIZES.len());
            if let Some(at) = (0..b.len()).find(|&j| b[j] != word(q, me, k, j)) {
                return Err(format!("rank {me}: message {k} from {q} wrong at {at}"));
            }
        }
        if round == 0 && rounds.is_none() {
            println!("started");
        }
    }
    Ok(())
}

fn hier(c: &Communicator) -> Result<(), String> {
    let (p, me) = (c.size(), c.rank());
    let host = c.topology().host_of[me];
    for q in (0..p).filter(|&q| q != me) {
        let want = if c.topology().host_of[q] == host {
            LinkKind::Shm
        } else {
            LinkKind::Tcp
        };
        if c.transport_to(q) != Some(want) {
            return Err(format!(
                "rank {me} reaches {q} over {:?}, expected {want:?}",
                c.transport_to(q)
            ));
        }
    }
    let n = 1 << 20;
    let algo = c
        .algorithm_for(Collective::AllReduce, n * 4)
        .map_err(|e| e.to_string())?;
    if !algo.starts_with("hier:") {
        return Err(format!(
            "all-reduce of 4 MiB chose {algo}, expected the hierarchical one"
        ));
    }
    let input: Vec<f32> = (0..n).map(|i| ((me * 31 + i) % 1000) as f32).collect();
    let mut out = vec![0f32; n];
    c.all_reduce(&input, &mut out, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    for (i, v) in out.iter().enumerate() {
        let want: f32 = (0..p).map(|q| ((q * 31 + i) % 1000) as f32).sum();
        if *v != want {
            return Err(format!("element {i}: {v} != {want}"));
        }
    }
    println!(
        "rank {me}: {algo}, links {:?}; {}",
        (0..p).map(|q| c.transport_to(q)).collect::<Vec<_>>(),
        c.topology().describe_hier()
    );
    Ok(())
}

// ----- the launcher side -------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(
    role: &str,
    p: usize,
    store: &str,
    timeout_s: &str,
    prefix: &dyn Fn(usize) -> Vec<String>,
) -> Ranks {
    let exe = std::env::current_exe().unwrap();
    Ranks(
        (0..p)
            .map(|r| {
                let mut argv = prefix(r);
                argv.push(exe.display().to_string());
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .env("OXCCL_TEST_ROLE", role)
                    .env("OXCCL_RANK", r.to_string())
                    .env("OXCCL_SIZE", p.to_string())
                    .env("OXCCL_STORE_ADDR", store)
                    .env("OXCCL_SECRET", "processes-test")
                    .env("OXCCL_TIMEOUT", timeout_s)
                    .stdout(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect(),
    )
}

/// Waits for every rank; returns (exit code, stdout) per rank. Fails past `limit`.
fn wait_all(ranks: &mut Ranks, limit: Duration) -> Vec<(i32, String)> {
    let start = Instant::now();
    let mut out = Vec::new();
    for (r, c) in ranks.0.iter_mut().enumerate() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                let mut s = String::new();
                if let Some(o) = c.stdout.as_mut() {
                    use std::io::Read;
                    let _ = o.read_to_string(&mut s);
                }
                out.push((status.code().unwrap_or(-1), s));
                break;
            }
            assert!(
                start.elapsed() < limit,
                "rank {r} still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    out
}

fn three_processes_over_shm() {
    let store = format!("127.0.0.1:{}", free_port());
    let mut ranks = spawn("ops", 3, &store, "60", &|_| Vec::new());
    all_succeeded(wait_all(&mut ranks, Duration::from_secs(120)), "the run");
}

fn torchrun_style_variables() {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let mut ranks = Ranks(
        (0..3)
            .map(|r| {
                Command::new(&exe)
                    .env("OXCCL_TEST_ROLE", "ops")
                    .env("RANK", r.to_string())
                    .env("WORLD_SIZE", "3")
                    .env("LOCAL_RANK", r.to_string())
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("OXCCL_TIMEOUT", "60")
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    all_succeeded(wait_all(&mut ranks, Duration::from_secs(120)), "the run");
}

fn under_mpirun() {
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("  SKIPPED: mpirun not found (apt-get install openmpi-bin)");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
        .args(["-x", "OXCCL_TEST_ROLE=ops", "-x", "OXCCL_TIMEOUT=60"])
        .arg(&exe)
        .env_remove("OXCCL_RANK")
        .env_remove("OXCCL_SIZE")
        .env_remove("OXCCL_STORE_ADDR")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ranks = Ranks(vec![child]);
    let (code, out) = wait_all(&mut ranks, Duration::from_secs(180)).remove(0);
    assert_eq!(code, 0, "mpirun failed: {out}");
}

/// Every rank exited with 0; `what` names the run in the failure message.
fn all_succeeded(results: Vec<(i32, String)>, what: &str) {
    for (r, (code, out)) in results.into_iter().enumerate() {
        assert_eq!(code, 0, "{what}: rank {r} failed: {out}");
    }
}

fn a_rank_that_exits_after_its_last_send_is_heard() {
    // The race needs a descheduled proxy at the wrong moment: about one run in ten lost a
    // message on 2 cores before the fix, so several runs.
    for attempt in 0..8 {
        let store = format!("127.0.0.1:{}", free_port());
        let over_tcp = |_| {
            ["env", "OXCCL_TRANSPORT=tcp", "OXCCL_SOCKET_IFNAME=lo"]
                .map(String::from)
                .to_vec()
        };
        let mut ranks = spawn("last-send", 4, &store, "20", &over_tcp);
        all_succeeded(
            wait_all(&mut ranks, Duration::from_secs(60)),
            &format!("attempt {attempt}"),
        );
    }
}

fn killing_a_rank_fails_the_others_in_time() {
    let store = format!("127.0.0.1:{}", free_port());
    let timeout = 5.0;
    let mut ranks = spawn("loop", 3, &store, &timeout.to_string(), &|_| Vec::new());
    // Wait for rank 1 to finish one all-reduce, then kill it in the middle of the next ones.
    let stdout = ranks.0[1].stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started");
    std::thread::sleep(Duration::from_millis(50));
    ranks.0[1].kill().unwrap();
    let killed_at = Instant::now();
    let results = wait_all(&mut ranks, Duration::from_secs(60));
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs_f64(timeout + 2.0),
        "survivors took {took:?} to notice"
    );
    for r in [0, 2] {
        let (code, out) = &results[r];
        assert_eq!(
            *code, 3,
            "rank {r} should fail with an error, got code {code}: {out}"
        );
        assert!(
            out.contains("all_reduce") && out.contains("rank"),
            "rank {r}: {out}"
        );
        println!("  rank {r} after {took:?}: {}", out.trim());
    }
}

fn large_messages_in_flight_between_processes() {
    for min in ["262144", "2048"] {
        let store = format!("127.0.0.1:{}", free_port());
        let env = |_| {
            ["env", &format!("OXCCL_SINGLE_COPY_MIN={min}")]
                .map(String::from)
                .to_vec()
        };
        let mut ranks = spawn("pulls", 3, &store, "60", &env);
        all_succeeded(
            wait_all(&mut ranks, Duration::from_secs(120)),
            &format!("threshold {min}"),
        );
    }
}

/// A rank killed while its peers pull several of its messages (and it pulls theirs): the
/// survivors fail with an error naming a rank, within `OXCCL_TIMEOUT`.
fn killing_a_rank_during_pulls_fails_the_others() {
    let store = format!("127.0.0.1:{}", free_port());
    let timeout = 5.0;
    let env = |_| {
        ["env", "OXCCL_SINGLE_COPY_MIN=2048"]
            .map(String::from)
            .to_vec()
    };
    let mut ranks = spawn("pulls-loop", 3, &store, &timeout.to_string(), &env);
    let stdout = ranks.0[1].stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started");
    std::thread::sleep(Duration::from_millis(20));
    ranks.0[1].kill().unwrap();
    let killed_at = Instant::now();
    let results = wait_all(&mut ranks, Duration::from_secs(60));
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs_f64(timeout + 2.0),
        "survivors took {took:?} to notice"
    );
    for r in [0, 2] {
        let (code, out) = &results[r];
        assert_eq!(
            *code, 3,
            "rank {r} should fail with an error, got code {code}: {out}"
        );
        assert!(out.contains("rank"), "rank {r}: {out}");
        println!("  rank {r} after {took:?}: {}", out.trim());
    }
}

/// Removes the namespaces even when the test fails.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn two_hosts_in_network_namespaces() {
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("oxa{tag}"), format!("oxb{tag}"));
    let guard = Netns(Vec::new());
    let setup = || -> Result<Netns, String> {
        let mut g = Netns(Vec::new());
        ip(&["netns", "add", &a])?;
        g.0.push(a.clone());
        ip(&["netns", "add", &b])?;
        g.0.push(b.clone());
        let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
        ip(&[
            "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
        ])?;
        ip(&["-n", &a, "addr", "add", "10.203.0.1/24", "dev", &va])?;
        ip(&["-n", &b, "addr", "add", "10.203.0.2/24", "dev", &vb])?;
        for (ns, dev) in [(&a, &va), (&b, &vb)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(g)
    };
    let _guard = match setup() {
        Ok(g) => {
            drop(guard);
            g
        }
        Err(e) => {
            println!("  SKIPPED: cannot make network namespaces here ({e})");
            return;
        }
    };
    let store = "10.203.0.1:29701";
    let prefix = |r: usize| -> Vec<String> {
        let ns = if r < 2 { &a } else { &b };
        vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()]
    };
    let mut ranks = spawn("hier", 4, store, "30", &prefix);
    for (r, (code, out)) in wait_all(&mut ranks, Duration::from_secs(120))
        .into_iter()
        .enumerate()
    {
        assert_eq!(code, 0, "rank {r} failed: {out}");
        println!("  {}", out.trim());
    }
}

fn two_numa_nodes_from_a_topology_file() {
    // The file's two NUMA nodes hold PUs 0 and 1, which the ranks must be able to run on.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let affinity = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let allowed = affinity
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim()
        .to_string();
    if cpus < 2 || !(allowed.starts_with("0-") || allowed.starts_with("0,1")) {
        println!("  SKIPPED: needs CPUs 0 and 1 (this process may run on {allowed:?})");
        return;
    }
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/two-numa.xml");
    // The ranks' NUMA nodes come from their CPU binding: made by OXCCL_BIND, then by the
    // launcher (`taskset`, as `mpirun --bind-to numa` would), where taskset exists.
    let has_taskset = Command::new("taskset").arg("-V").output().is_ok();
    for binder in ["OXCCL_BIND=numa", "taskset"] {
        if binder == "taskset" && !has_taskset {
            println!("  SKIPPED the taskset run: no taskset here");
            continue;
        }
        println!("  ranks bound by {binder}");
        let store = format!("127.0.0.1:{}", free_port());
        let prefix = |r: usize| -> Vec<String> {
            let mut argv: Vec<String> = [
                "env",
                &format!("OXCCL_TOPO_FILE={file}"),
                "OXCCL_ALGO=hier",
                "OXCCL_DEBUG=oxccl_collectives=info",
            ]
            .map(String::from)
            .to_vec();
            if binder == "taskset" {
                argv.extend(["taskset", "-c", if r < 2 { "0" } else { "1" }].map(String::from));
            } else {
                argv.insert(1, binder.into());
            }
            argv
        };
        let mut ranks = spawn("numa", 4, &store, "60", &prefix);
        let outs = wait_all(&mut ranks, Duration::from_secs(120));
        for (r, (code, out)) in outs.iter().enumerate() {
            assert_eq!(*code, 0, "rank {r} failed: {out}");
            for line in out.lines().filter(|l| {
                l.contains("hier dims") || l.contains("where rank") || l.starts_with("rank ")
            }) {
                println!("  {}", line.trim());
            }
        }
        let want = "hier dims 2x2 from the map: 2 ranks per NUMA node x 2 NUMA nodes";
        assert!(
            outs[0].1.contains(want),
            "rank 0 did not log {want:?}: {}",
            outs[0].1
        );
    }
}
