//! The rendezvous store: rank 0 serves a small key-value store over TCP that the ranks use to
//! exchange endpoint addresses (as Gloo's `TCPStore` and torch's `c10d::TCPStore`).
//!
//! Every connection starts with the job's shared secret, which the server compares in constant
//! time and refuses when it differs. This keeps strangers out of a job: another job that happens
//! to use the same port, a stale rank of an earlier run, or a port scanner. The secret travels in
//! clear text, so it does not protect against someone who can read the network between the
//! ranks (run the store on a trusted network, as with every MPI launcher).
//!
//! Wire format, all integers little-endian: hello `b"OXST" u32 len secret` answered by one byte
//! (1 accepted, 0 refused); then requests `u8 cmd, u32 klen, key, u32 vlen, value` where cmd is
//! 1 (set; answer: one byte 1) or 2 (get; answer: one byte found, and when found `u32 vlen, value`).

use super::store_mark::{self, Mark};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"OXST";
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 16 << 20;
const CMD_SET: u8 = 1;
const CMD_GET: u8 = 2;

/// Seconds a new connection has to present the secret before it is dropped.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// The least a bootstrap connection attempt gets per step, even at its deadline (a rank
/// that arrives late still gets one real try).
const CONNECT_FLOOR: Duration = Duration::from_millis(100);
/// How long an authenticated connection may stay silent (ranks poll every 20 ms or less).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections that have not presented the secret yet, at most; more are closed at once (a
/// rank whose connection is closed that way retries until its deadline).
pub const MAX_UNAUTHENTICATED: usize = 64;
/// Connections in all, at most (each is a thread and a file descriptor).
pub const MAX_CONNECTIONS: usize = 8192;

/// The key under which the first failure of the bootstrap is published: `rank\nreason`.
pub const FAILED_KEY: &str = "failed";

/// The store's server side, run by rank 0. Stops (and closes its port) when dropped.
///
/// Strangers cannot disturb it: a connection that does not start with the magic and the secret
/// within [`HELLO_TIMEOUT`] is dropped, at most [`MAX_UNAUTHENTICATED`] such connections are
/// held at once, authenticated ones idle for [`IDLE_TIMEOUT`] are dropped, and the total is
/// capped at [`MAX_CONNECTIONS`]. A rank's connection (the one that set `joined/<rank>`) that
/// closes before that rank set `ready/<rank>` publishes a failure under [`FAILED_KEY`], so the
/// others learn at once that the rank died instead of waiting for the deadline.
pub struct StoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    linger_for: Option<usize>,
}

impl StoreServer {
    /// Binds `addr` and serves the store from a background thread.
    pub fn serve(addr: &str, secret: &[u8]) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            if e.kind() == ErrorKind::AddrInUse {
                Error::AddrInUse {
                    addr: addr.to_string(),
                }
            } else {
                Error::io(format!("binding the store on {addr}"), e)
            }
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("store address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("store listener", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Shared {
            secret: secret.to_vec(),
            map: Map::default(),
            stop: stop.clone(),
            unauthenticated: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        };
        let shared = Arc::new(shared);
        let served = shared.clone();
        let thread = std::thread::Builder::new()
            .name("oxccl-store".into())
            .spawn(move || accept_loop(listener, served))
            .map_err(|e| Error::io("spawning the store thread", e))?;
        tracing::debug!(%local, "store serving");
        Ok(Self {
            addr: local,
            stop,
            thread: Some(thread),
            shared,
            linger_for: None,
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// When dropped, keep serving (up to a few seconds) until ranks `0..size` have each set
    /// `done/<rank>`: a rank that fails right after bootstrap and exits must not close the
    /// store under a peer still reading the last keys.
    pub fn linger_until_done(&mut self, size: usize) {
        self.linger_for = Some(size);
    }

    /// Keeps serving until every connection has closed, for at most `max`: after rank 0 failed
    /// its bootstrap, the others read its published reason before the store goes.
    pub fn wait_until_idle(&self, max: Duration) {
        let until = Instant::now() + max;
        while self.shared.open.load(Ordering::Acquire) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        if let Some(size) = self.linger_for {
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                let map = self.shared.map.lock().unwrap_or_else(|p| p.into_inner());
                if (0..size).all(|q| map.contains_key(format!("done/{q}").as_bytes())) {
                    break;
                }
                drop(map);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(size) = self.linger_for {
            // A call failed: the notice of who failed first is here, and the other ranks may
            // still be about to read it (a rank killed never will: at most a few seconds).
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let map = self.shared.map.lock().unwrap_or_else(|p| p.into_inner());
                let seen = |q: usize| {
                    let key = format!("{}{q}", crate::link::blame::SEEN_PREFIX);
                    map.contains_key(key.as_bytes())
                };
                if !map.contains_key(crate::link::blame::KEY.as_bytes()) || (0..size).all(seen) {
                    break;
                }
                drop(map);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

type Map = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

struct Shared {
    secret: Vec<u8>,
    map: Map,
    stop: Arc<AtomicBool>,
    unauthenticated: AtomicUsize,
    open: AtomicUsize,
}

/// Counts a connection in `counter` for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long the accept loop sleeps between looks while ranks come (bootstrap is a burst of
/// connections: within `ACCEPT_BUSY_FOR` of the last one, or while any is open) and once none
/// has come for that long. The thread lives as long as rank 0's communicator: polling every
/// 2 ms for its whole life woke rank 0 500 times a second (~1% of a core, more in lost caches),
/// which made rank 0 the slow rank of every DDP step on a host whose cores the ranks fill.
/// `Drop` unparks the thread, so the idle interval does not delay stopping.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
const ACCEPT_POLL_IDLE: Duration = Duration::from_millis(50);
const ACCEPT_BUSY_FOR: Duration = Duration::from_secs(1);

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = Vec::new();
    let mut last_conn = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                last_conn = Instant::now();
                if shared.open.load(Ordering::Acquire) >= MAX_CONNECTIONS
                    || shared.unauthenticated.load(Ordering::Acquire) >= MAX_UNAUTHENTICATED
                {
                    tracing::debug!(%peer, "store full: closed a new connection");
                    continue;
                }
                shared.open.fetch_add(1, Ordering::AcqRel);
                shared.unauthenticated.fetch_add(1, Ordering::AcqRel);
                let sh = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("oxccl-store-conn".into())
                    .spawn(move || {
                        let _open = Counted(&sh.open);
                        if let Err(e) = serve_conn(stream, &sh) {
                            tracing::debug!(%peer, error = %e, "store connection ended");
                        }
                    });
                match spawned {
                    Ok(t) => conns.push(t),
                    Err(e) => {
                        shared.open.fetch_sub(1, Ordering::AcqRel);
                        shared.unauthenticated.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(error = %e, "store: no thread for a connection");
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let busy = last_conn.elapsed() < ACCEPT_BUSY_FOR
                    || shared.open.load(Ordering::Acquire) > 0;
                std::thread::park_timeout(if busy { ACCEPT_POLL } else { ACCEPT_POLL_IDLE })
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: keep serving.
                tracing::warn!(error = %e, "store accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Reads exactly `buf.len()` bytes by `deadline`, waking every 100 ms to see whether the
/// server is stopping.
fn read_full(
    s: &mut TcpStream,
    buf: &mut [u8],
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(ErrorKind::Interrupted.into());
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "idle connection dropped",
            ));
        }
        match s.read(&mut buf[done..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_u32(s: &mut TcpStream, stop: &AtomicBool, deadline: Instant) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    read_full(s, &mut b, stop, deadline)?;
    Ok(u32::from_le_bytes(b))
}

fn read_bytes(
    s: &mut TcpStream,
    max: usize,
    stop: &AtomicBool,
    deadline: Instant,
) -> std::io::Result<Vec<u8>> {
    let len = read_u32(s, stop, deadline)? as usize;
    if len > max {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("length {len} exceeds {max}"),
        ));
    }
    let mut v = vec![0u8; len];
    read_full(s, &mut v, stop, deadline)?;
    Ok(v)
}

/// Compares without an early exit, so the time taken does not tell how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which rank a connection belongs to (from its `joined/<rank>` key) and whether that rank
/// finished its bootstrap (`ready/<rank>`).
#[derive(Default)]
struct Identity {
    rank: Option<usize>,
    ready: bool,
}

fn serve_conn(s: TcpStream, sh: &Shared) -> std::io::Result<()> {
    let mut id = Identity::default();
    let out = serve_authenticated(s, sh, &mut id);
    if let (Some(rank), false) = (id.rank, id.ready) {
        if !sh.stop.load(Ordering::Relaxed) {
            let mut map = sh.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(FAILED_KEY.as_bytes().to_vec())
                .or_insert_with(|| {
                    let why = match &out {
                        Ok(()) => "closed".to_string(),
                        Err(e) => e.to_string(),
                    };
                    format!(
                        "{rank}\nits connection to the store ended before it was ready ({why}): \
                     the process died or failed during bootstrap"
                    )
                    .into_bytes()
                });
        }
    }
    out
}

fn serve_authenticated(mut s: TcpStream, sh: &Shared, id: &mut Identity) -> std::io::Result<()> {
    let unauthenticated = Counted(&sh.unauthenticated);
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    s.set_write_timeout(Some(HELLO_TIMEOUT))?;
    s.set_nodelay(true)?;
    let stop = &*sh.stop;
    let hello_by = Instant::now() + HELLO_TIMEOUT;
    let mut magic = [0u8; 4];
    read_full(&mut s, &mut magic, stop, hello_by)?;
    if &magic != MAGIC {
        // Not a store client (a scanner, a stray protocol): drop it without a word.
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "not a store client",
        ));
    }
    let offered = read_bytes(&mut s, 4096, stop, hello_by)?;
    if !constant_time_eq(&offered, &sh.secret) {
        tracing::warn!(peer = ?s.peer_addr().ok(), "store refused a connection: wrong secret");
        s.write_all(&[0])?;
        return Ok(());
    }
    s.write_all(&[1])?;
    drop(unauthenticated);
    loop {
        let idle_by = Instant::now() + IDLE_TIMEOUT;
        let mut cmd = [0u8; 1];
        read_full(&mut s, &mut cmd, stop, idle_by)?;
        let key = read_bytes(&mut s, MAX_KEY, stop, idle_by)?;
        let value = read_bytes(&mut s, MAX_VALUE, stop, idle_by)?;
        let mut map = sh.map.lock().unwrap_or_else(|p| p.into_inner());
        match cmd[0] {
            CMD_SET => {
                let text = String::from_utf8_lossy(&key);
                if let Some(r) = text.strip_prefix("joined/") {
                    id.rank = r.parse().ok();
                } else if text.strip_prefix("ready/").and_then(|r| r.parse().ok()) == id.rank {
                    id.ready = id.rank.is_some();
                }
                map.insert(key, value);
                drop(map);
                s.write_all(&[1])?;
            }
            CMD_GET => {
                let reply = match map.get(&key) {
                    Some(v) => {
                        let mut r = Vec::with_capacity(5 + v.len());
                        r.push(1);
                        r.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        r.extend_from_slice(v);
                        r
                    }
                    None => vec![0],
                };
                drop(map);
                s.write_all(&reply)?;
            }
            other => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("unknown store command {other}"),
                ))
            }
        }
    }
}

/// A connection to the store.
pub struct StoreClient {
    stream: TcpStream,
    addr: String,
    /// Peers on this host whose process this rank checks while it waits: (rank, pid, the
    /// directory of its shared-memory listener).
    watched: Vec<(usize, u32, Option<std::path::PathBuf>)>,
    last_check: Instant,
}

impl StoreClient {
    /// Connects to `addr`, retrying until `deadline` (rank 0 may not be serving yet, or may
    /// have closed this connection while full of strangers), and authenticates with `secret`.
    pub fn connect(addr: &str, secret: &[u8], deadline: Instant) -> Result<Self> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(5);
        loop {
            let last = match Self::try_connect(addr, secret, deadline, CONNECT_FLOOR) {
                Ok(c) => return Ok(c),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e)) => e,
            };
            // On rank 0's host, its mark tells a dead rank 0 from a late one.
            let mark = store_mark::look(addr);
            if let Mark::Dead { pid, fresh: true } = mark {
                store_mark::remove_if_dead(addr);
                return Err(Error::BootstrapPeer {
                    rank: 0,
                    reason: format!(
                        "its process (pid {pid}, this host) exited while serving the store at \
                         {addr}, before this rank could connect (last error: {last})"
                    ),
                });
            }
            if Instant::now() >= deadline {
                let hint = match mark {
                    Mark::Dead { pid, .. } => format!(
                        "a rank 0 (pid {pid}) served this store on this host before this \
                         process started and has exited: this run's rank 0 died before this \
                         rank started, or never came;"
                    ),
                    Mark::Alive(pid) => {
                        format!("rank 0 (pid {pid}, this host) lives but does not answer: stopped?")
                    }
                    Mark::Absent => "is rank 0 running?".into(),
                };
                return Err(Error::BootstrapTimeout {
                    what: format!(
                        "connecting to the store of rank 0 at {addr} ({hint} last error: {last})"
                    ),
                    after: start.elapsed(),
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// One attempt to connect and authenticate, for at most `timeout` (the failure path, where
    /// a store that does not answer at once is a store that is gone).
    pub(crate) fn connect_once(
        addr: &str,
        secret: &[u8],
        timeout: Duration,
    ) -> std::result::Result<Self, ()> {
        // All of `timeout`, the connect and the hello together: a stopped store must not
        // hold a failing rank longer than it was given (no floor per step as in `connect`).
        Self::try_connect(
            addr,
            secret,
            Instant::now() + timeout,
            Duration::from_millis(1),
        )
        .map_err(|_| ())
    }

    /// How long a request waits for the store's answer from now on (`connect` leaves what
    /// was left of its deadline, at least 100 ms).
    pub(crate) fn set_answer_timeout(&self, timeout: Duration) -> Result<()> {
        // The request's write too: a store that stopped reading must not hold us once its
        // socket's buffer is full.
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        self.stream
            .set_read_timeout(timeout)
            .and_then(|()| self.stream.set_write_timeout(timeout))
            .map_err(|e| Error::io(format!("talking to the store at {}", self.addr), e))
    }

    /// One attempt, done by `deadline`; each step (the connect, the hello's answer) gets at
    /// least `floor`.
    fn try_connect(
        addr: &str,
        secret: &[u8],
        deadline: Instant,
        floor: Duration,
    ) -> std::result::Result<Self, Attempt> {
        let target: Option<SocketAddr> = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
        let Some(target) = target else {
            return Err(Attempt::Retry(std::io::Error::new(
                ErrorKind::NotFound,
                format!("cannot resolve {addr}"),
            )));
        };
        // A SYN that goes unanswered (a full backlog) must not outlast the caller's deadline.
        let connect_for = deadline
            .saturating_duration_since(Instant::now())
            .clamp(floor, Duration::from_secs(2));
        let mut stream =
            TcpStream::connect_timeout(&target, connect_for).map_err(Attempt::Retry)?;
        let fatal = |e| Attempt::Fatal(Error::io(format!("talking to the store at {addr}"), e));
        stream.set_nodelay(true).map_err(fatal)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .clamp(floor, HELLO_TIMEOUT);
        stream.set_read_timeout(Some(left)).map_err(fatal)?;
        stream.set_write_timeout(Some(left)).map_err(fatal)?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&(secret.len() as u32).to_le_bytes());
        hello.extend_from_slice(secret);
        let mut ok = [0u8; 1];
        let answer = stream
            .write_all(&hello)
            .and_then(|()| stream.read_exact(&mut ok));
        match answer {
            Ok(()) if ok[0] == 1 => {}
            Ok(()) => {
                return Err(Attempt::Fatal(Error::Refused {
                    addr: addr.to_string(),
                }))
            }
            // Closed or reset before an answer: the server was full, or restarting. Again.
            Err(e) => return Err(Attempt::Retry(e)),
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_read_timeout(Some(left)).map_err(fatal)?;
        stream.set_write_timeout(Some(left)).map_err(fatal)?;
        Ok(Self {
            stream,
            addr: addr.to_string(),
            watched: Vec::new(),
            last_check: Instant::now(),
        })
    }

    /// Checks, while waiting, that these peers' processes (on this host) are still alive, so a
    /// peer killed during bootstrap is noticed within a fraction of a second.
    ///
    /// A peer found dead this way cannot remove its shared-memory listener (a directory under
    /// the transport's `OXCCL_SHM_DIR`) any more: the rank that finds it removes it.
    pub fn watch_local_peers(&mut self, peers: Vec<(usize, u32, Option<std::path::PathBuf>)>) {
        self.watched = peers;
    }

    /// Adds one peer to [`StoreClient::watch_local_peers`]'s list.
    pub fn watch_local_peer(&mut self, rank: usize, pid: u32, shm: Option<std::path::PathBuf>) {
        self.watched.push((rank, pid, shm));
    }

    /// An error when another rank has failed: one it published (or the store published for
    /// it), or a watched local peer whose process is gone.
    pub fn check_peers(&mut self) -> Result<()> {
        let r = self.check_peers_once();
        if r.is_err() {
            for (_, pid, dir) in &self.watched {
                if let Some(dir) = dir
                    .as_ref()
                    .filter(|_| !oxccl_transport::shm::process_alive(*pid))
                {
                    tracing::debug!(dir = %dir.display(), "removing a dead rank's listener");
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        r
    }

    fn check_peers_once(&mut self) -> Result<()> {
        if let Some(v) = self.get(FAILED_KEY)? {
            let text = String::from_utf8_lossy(&v);
            let (rank, reason) = text.split_once('\n').unwrap_or(("?", &text));
            return Err(Error::BootstrapPeer {
                rank: rank.parse().unwrap_or(usize::MAX),
                reason: reason.to_string(),
            });
        }
        for &(rank, pid, _) in &self.watched {
            if !oxccl_transport::shm::process_alive(pid) {
                return Err(Error::BootstrapPeer {
                    rank,
                    reason: format!("its process {pid} on this host has exited"),
                });
            }
        }
        Ok(())
    }

    /// Publishes this rank's failure for the others (best effort: the store may be gone).
    pub fn publish_failure(&mut self, rank: usize, reason: &str) {
        if let Ok(None) = self.get(FAILED_KEY) {
            let _ = self.set(FAILED_KEY, format!("{rank}\n{reason}").as_bytes());
        }
    }

    /// The local address of this connection: the address at which rank 0's host reaches us.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    fn request(&mut self, cmd: u8, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>> {
        let addr = self.addr.clone();
        let io = |e: std::io::Error| {
            match e.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => Error::BootstrapPeer {
                rank: 0,
                reason: format!(
                    "the store it serves at {addr} closed during bootstrap ({e}): rank 0 failed or exited"
                ),
            },
            _ => Error::io(format!("talking to the store at {addr}"), e),
        }
        };
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(Error::Env(format!("store entry {key} too large")));
        }
        let mut msg = Vec::with_capacity(9 + key.len() + value.len());
        msg.push(cmd);
        msg.extend_from_slice(&(key.len() as u32).to_le_bytes());
        msg.extend_from_slice(key.as_bytes());
        msg.extend_from_slice(&(value.len() as u32).to_le_bytes());
        msg.extend_from_slice(value);
        self.stream.write_all(&msg).map_err(io)?;
        let mut found = [0u8; 1];
        self.stream.read_exact(&mut found).map_err(io)?;
        if cmd == CMD_SET || found[0] == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_VALUE {
            return Err(Error::Env(format!(
                "store sent an oversized value for {key}"
            )));
        }
        let mut v = vec![0u8; len];
        self.stream.read_exact(&mut v).map_err(io)?;
        Ok(Some(v))
    }

    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.request(CMD_SET, key, value).map(|_| ())
    }

    /// The value of `key`, or `None` when nobody has set it yet.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.request(CMD_GET, key, &[])
    }

    /// Waits until `key` is set and returns its value; fails when `deadline` passes first.
    /// Every 100 ms it also checks that no rank has failed ([`StoreClient::check_peers`]).
    pub fn wait(&mut self, key: &str, deadline: Instant) -> Result<Vec<u8>> {
        let start = Instant::now();
        let mut backoff = Duration::from_micros(200);
        loop {
            if let Some(v) = self.get(key)? {
                return Ok(v);
            }
            if self.last_check.elapsed() >= Duration::from_millis(100) {
                self.last_check = Instant::now();
                self.check_peers()?;
            }
            if Instant::now() >= deadline {
                return Err(Error::BootstrapTimeout {
                    what: format!("waiting for store key {key:?} (did every rank start?)"),
                    after: start.elapsed(),
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }
}

/// Why one connection attempt failed: worth another try, or not.
enum Attempt {
    Retry(std::io::Error),
    Fatal(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_wait_and_refusal() {
        let server = StoreServer::serve("127.0.0.1:0", b"s3cret").unwrap();
        let addr = server.addr().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut a = StoreClient::connect(&addr, b"s3cret", deadline).unwrap();
        let mut b = StoreClient::connect(&addr, b"s3cret", deadline).unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        a.set("k", b"v1").unwrap();
        assert_eq!(b.wait("k", deadline).unwrap(), b"v1");
        let short = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            b.wait("missing", short),
            Err(Error::BootstrapTimeout { .. })
        ));
        let refused = StoreClient::connect(&addr, b"wrong", deadline).err();
        assert!(
            matches!(refused, Some(Error::Refused { .. })),
            "{refused:?}"
        );
    }

    /// Open descriptors this test may add without reaching the soft limit.
    fn spare_fds() -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        if rc != 0 {
            return 200;
        }
        (lim.rlim_cur as usize).saturating_sub(300)
    }

    #[test]
    fn strangers_are_dropped_and_the_store_keeps_serving() {
        let server = StoreServer::serve("127.0.0.1:0", b"s3cret").unwrap();
        let addr = server.addr();
        // Connect-and-close, 64 garbage bytes, a wrong secret reset before its answer is read.
        drop(TcpStream::connect(addr).unwrap());
        let mut g = TcpStream::connect(addr).unwrap();
        g.write_all(&[0xA5; 64]).unwrap();
        let mut r = TcpStream::connect(addr).unwrap();
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&5u32.to_le_bytes());
        bad.extend_from_slice(b"guess");
        r.write_all(&bad).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(r);
        // A crowd of idle connections (a port scan, or worse), more than a default fd limit.
        let crowd: Vec<TcpStream> = (0..1100.min(spare_fds()))
            .filter_map(|_| TcpStream::connect(addr).ok())
            .collect();
        assert!(crowd.len() >= 500, "only {} connections", crowd.len());
        // The ranks still get in and work, well before their deadline.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut a = StoreClient::connect(&addr.to_string(), b"s3cret", deadline).unwrap();
        let mut b = StoreClient::connect(&addr.to_string(), b"s3cret", deadline).unwrap();
        a.set("k", b"v").unwrap();
        assert_eq!(b.wait("k", deadline).unwrap(), b"v");
        // The garbage connection was dropped at once; idle ones after HELLO_TIMEOUT.
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // (closed with its garbage unread, so reset rather than a clean end)
        match g.read(&mut [0u8; 8]) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("the garbage connection is still open: {other:?}"),
        }
        let mut idle = crowd.into_iter().next().unwrap();
        idle.set_read_timeout(Some(HELLO_TIMEOUT * 5)).unwrap();
        assert!(matches!(idle.read(&mut [0u8; 8]), Ok(0) | Err(_)));
        assert!(server.shared.unauthenticated.load(Ordering::Acquire) <= MAX_UNAUTHENTICATED);
    }

    #[test]
    fn a_dead_local_peer_is_noticed_while_waiting() {
        let server = StoreServer::serve("127.0.0.1:0", b"s").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = StoreClient::connect(&server.addr().to_string(), b"s", deadline).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        c.watch_local_peers(vec![(3, child.id(), None)]);
        assert_eq!(c.get("x").unwrap(), None);
        child.kill().unwrap();
        child.wait().unwrap();
        // Noticed before a 2 s deadline passes (else this would be a timeout).
        let e = c
            .wait("never", Instant::now() + Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, Error::BootstrapPeer { rank: 3, .. }), "{e}");
        assert!(e.to_string().contains("has exited"), "{e}");
    }

    #[test]
    fn a_rank_leaving_before_ready_is_published() {
        let server = StoreServer::serve("127.0.0.1:0", b"s").unwrap();
        let addr = server.addr().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut waiter = StoreClient::connect(&addr, b"s", deadline).unwrap();
        let mut gone = StoreClient::connect(&addr, b"s", deadline).unwrap();
        gone.set("joined/1", b"").unwrap();
        drop(gone);
        let e = waiter
            .wait("rank/1", Instant::now() + Duration::from_secs(2))
            .unwrap_err();
        assert!(matches!(e, Error::BootstrapPeer { rank: 1, .. }), "{e}");
        // A rank that was ready may leave: nothing is published.
        let server = StoreServer::serve("127.0.0.1:0", b"s").unwrap();
        let addr = server.addr().to_string();
        let mut waiter = StoreClient::connect(&addr, b"s", deadline).unwrap();
        let mut done = StoreClient::connect(&addr, b"s", deadline).unwrap();
        done.set("joined/1", b"").unwrap();
        done.set("ready/1", b"1").unwrap();
        drop(done);
        let e = waiter
            .wait("never", Instant::now() + Duration::from_millis(300))
            .unwrap_err();
        assert!(matches!(e, Error::BootstrapTimeout { .. }), "{e}");
    }

    #[test]
    fn port_in_use_is_a_clear_error() {
        let server = StoreServer::serve("127.0.0.1:0", b"x").unwrap();
        let again = StoreServer::serve(&server.addr().to_string(), b"x");
        assert!(matches!(again, Err(Error::AddrInUse { .. })));
    }
}
