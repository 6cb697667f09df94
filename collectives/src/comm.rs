//! The communicator: who the ranks are, a link to each peer, and the engine that runs calls
//! one at a time in the order they were made.

use crate::bootstrap::store::{StoreClient, StoreServer};
use crate::bootstrap::store_mark::{self, StoreMark};
use crate::bootstrap::{Bootstrap, StoreAddr};
use crate::error::{Error, Result};
use crate::exec::engine::Engine;
use crate::exec::{Group, State};
use crate::link::connect::{self, Endpoint};
use crate::link::{Link, LinkKind};
use crate::map::{fabric_for, Fabric, Topology};
use crate::options::{LocalTransport, Options};
use oxccl_transport::dynamic::DynAddress;
use oxccl_transport::stream::proxy_spin;
use oxccl_transport::{Address as _, Listener as _};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub(crate) struct Inner {
    pub rank: usize,
    pub size: usize,
    pub topology: Topology,
    pub options: Options,
    pub kinds: Vec<Option<LinkKind>>,
    pub state: Mutex<State>,
    next_ticket: AtomicU64,
    /// Calls waiting for the state's lock: a non-blocking operation's wait, which drives the
    /// engine in slices, lets them in between.
    wanted: std::sync::atomic::AtomicU32,
    /// The engine's doorbells: rung after `wanted` or the abort flag is set, so that a wait
    /// parked on them (`exec/idle.rs`) looks up at once.
    doorbells: Vec<oxccl_transport::stream::Doorbell>,
    turn: Turn,
    turn_cv: Condvar,
    pub abort_flag: Arc<AtomicBool>,
    /// How this communicator's links were made, for the children [`Communicator::split`]
    /// connects the same way.
    pub origin: Origin,
    /// How many children `split` made (the same on every rank: it is a collective), which
    /// names each child's failure board.
    pub splits: AtomicU64,
    _store: Option<StoreServer>,
}

/// How a communicator reaches its peers: what a child needs to make links of the same kinds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    /// Thread ranks of one process over this transport (`None`: processes).
    pub local: Option<LocalTransport>,
    /// The address this rank's network listener used (the interface that reaches rank 0).
    pub net_ip: Option<IpAddr>,
}

impl Group for Inner {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn options(&self) -> &Options {
        &self.options
    }
    fn topology(&self) -> &Topology {
        &self.topology
    }
}

/// A group of ranks that run collectives together. Cheap to clone (a shared handle); calls
/// from several threads run one at a time, in the order they were made.
#[derive(Clone)]
pub struct Communicator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.inner.rank)
            .field("size", &self.inner.size)
            .finish()
    }
}

thread_local! {
    /// The ticket a non-blocking call took at call time, for the call its thread makes.
    pub(crate) static RESERVED: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
    /// The communicator whose turn this thread holds for a group (its calls run inside it).
    static HELD: std::cell::Cell<*const Inner> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Marks this thread as holding `inner`'s turn until dropped (also by panic).
pub(crate) struct HeldTurn(*const Inner);

impl HeldTurn {
    pub(crate) fn enter(comm: &Communicator) -> Self {
        let before = HELD.with(|h| h.replace(Arc::as_ptr(&comm.inner)));
        HeldTurn(before)
    }
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        HELD.with(|h| h.set(self.0));
    }
}

/// Whose turn it is (`now`) and how many calls sleep waiting for theirs. The common case, a
/// call whose turn it already is, costs one atomic load and one increment: no lock, and no
/// condition-variable system call unless someone sleeps.
#[derive(Default)]
struct Turn {
    now: AtomicU64,
    sleepers: std::sync::atomic::AtomicU32,
    lock: Mutex<()>,
}

impl Inner {
    fn wait_turn(&self, ticket: u64) {
        let t = &self.turn;
        if t.now.load(Ordering::SeqCst) == ticket {
            return;
        }
        let mut g = t.lock.lock().unwrap_or_else(|p| p.into_inner());
        t.sleepers.fetch_add(1, Ordering::SeqCst);
        while t.now.load(Ordering::SeqCst) != ticket {
            g = self.turn_cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        t.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    fn next_turn(&self) {
        let t = &self.turn;
        t.now.fetch_add(1, Ordering::SeqCst);
        // A sleeper registers (under the lock) before it checks `now`, so either it sees the
        // new turn or we see it and wake it; taking the lock orders the wake after its wait.
        if t.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = t.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.turn_cv.notify_all();
        }
    }
}

/// Advances the turn when a call ends, even by panic, so later calls are not stuck.
struct TurnGuard<'a>(&'a Inner);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.next_turn();
    }
}

impl Communicator {
    pub(crate) fn build(
        rank: usize,
        topology: Topology,
        links: Vec<Option<Link>>,
        options: Options,
        origin: Origin,
        store: Option<StoreServer>,
        blame: crate::link::blame::Board,
    ) -> Self {
        let size = links.len();
        let kinds: Vec<_> = links.iter().map(|l| l.as_ref().map(Link::kind)).collect();
        crate::logging::communicator_created(rank, &kinds);
        let local = topology.ranks_on(topology.host_of[rank]);
        let cores = topology.cores_on(topology.host_of[rank]);
        // The host's threads that want a core: an executor per rank of the host (the job's,
        // where the launcher says how many: `OXCCL_LOCAL_RANKS`) and a proxy per network link
        // of each (as the proxies' own spin counts them, `proxy_spin`). An
        // executor that spins while its ranks and proxies outnumber the cores holds the core
        // its own proxy needs to move the bytes it waits for: on the emulated cluster (4
        // hosts x 2 ranks over TCP on 2 cores) a 64 KiB all-reduce took 1.7x as long spinning
        // as yielding at once (bench/RESULTS.md, issue 14, session 10).
        // (A split's child then takes its parent's: `split.rs`.)
        let proxies = kinds.iter().flatten().filter(|k| k.has_proxy()).count();
        let host_ranks = options.host_ranks(local.len());
        let threads = host_ranks * (1 + proxies);
        let idle_policy = options.idle_policy(threads, cores);
        let abort_flag = Arc::new(AtomicBool::new(false));
        let mut engine = Engine::new(rank, links, options.timeout, idle_policy);
        engine.host_ranks = host_ranks;
        engine.set_crowded(crate::options::crowded(threads, cores));
        // Each call's ring writes take the stores its kind and size ran fastest with
        // (`exec/stores.rs`), whether or not the host has a core per rank.
        if options.ring_nt == oxccl_transport::stream::RingNt::Call {
            engine.call_stores = Some(Default::default());
        }
        engine.abort_flag = abort_flag.clone();
        engine.blame = blame;
        let doorbells = engine.doorbells();
        Self {
            inner: Arc::new(Inner {
                rank,
                size,
                topology,
                kinds,
                state: Mutex::new(State {
                    engine,
                    plans: HashMap::new(),
                    by_size: HashMap::new(),
                    scratch: Vec::new(),
                    hdrs: vec![[0u8; 32]; size].into_boxed_slice(),
                    small_msg: Vec::new(),
                    others: (0..size).filter(|&q| q != rank).collect(),
                }),
                options,
                next_ticket: AtomicU64::new(0),
                splits: AtomicU64::new(0),
                wanted: Default::default(),
                doorbells,
                turn: Turn::default(),
                turn_cv: Condvar::new(),
                abort_flag,
                origin,
                _store: store,
            }),
        }
    }

    /// `n` ranks as threads of this process over in-memory rings, with [`Options::from_env`]
    /// (falling back to the defaults where the environment is unreadable). Give each
    /// communicator to its own thread: every rank must make the same calls.
    pub fn local(n: usize) -> Result<Vec<Communicator>> {
        Self::local_with(
            n,
            LocalTransport::Memory,
            Options::from_env().unwrap_or_default(),
        )
    }

    /// `n` thread ranks over the chosen transport.
    pub fn local_with(
        n: usize,
        transport: LocalTransport,
        options: Options,
    ) -> Result<Vec<Communicator>> {
        crate::logging::install_from_env();
        if n == 0 {
            return Err(Error::invalid(
                "local",
                "a communicator needs at least one rank",
            ));
        }
        let topology = Topology::one_process(n);
        check_forced_algorithm(&options, n, &topology)?;
        let links = connect::local_links(n, transport, &options)?;
        let boards = crate::link::blame::Board::in_memory(n);
        Ok(links
            .into_iter()
            .zip(boards)
            .enumerate()
            .map(|(r, (l, b))| {
                let origin = Origin {
                    local: Some(transport),
                    net_ip: None,
                };
                Self::build(r, topology.clone(), l, options.clone(), origin, None, b)
            })
            .collect())
    }

    /// Joins the job described by the launcher's environment ([`Bootstrap::from_env`]) with
    /// [`Options::from_env`].
    pub fn from_env() -> Result<Communicator> {
        Self::init_with(Bootstrap::from_env()?, Options::from_env()?)
    }

    /// Joins a job: meets the other ranks at the store and connects to each of them.
    pub fn init(bootstrap: Bootstrap) -> Result<Communicator> {
        Self::init_with(bootstrap, Options::from_env()?)
    }

    pub fn init_with(b: Bootstrap, options: Options) -> Result<Communicator> {
        crate::logging::install_from_env();
        // Every line of the bootstrap (locality, the map's dims) carries this rank.
        let _rank = crate::logging::RankScope::enter(b.rank);
        let deadline = Instant::now() + options.timeout.min(Duration::from_secs(600));
        let (rank, size) = (b.rank, b.size);
        if size == 0 || rank >= size || size > crate::bootstrap::MAX_RANKS {
            return Err(Error::invalid(
                "init",
                format!(
                    "rank {rank} of {size}: need rank < size <= {}",
                    crate::bootstrap::MAX_RANKS
                ),
            ));
        }
        // Rank 0's rendezvous file goes on every path out of here, failures included.
        let _rendezvous = match &b.store {
            StoreAddr::File(path) if rank == 0 => Some(RemoveOnDrop(path.clone())),
            _ => None,
        };
        let (mut server, addr) = open_store(&b, deadline).inspect_err(|_| {
            remove_dead_listeners_settled();
        })?;
        // While rank 0 bootstraps, its host's ranks can tell it died (`store_mark`).
        let mut mark = server.as_ref().and_then(|_| StoreMark::create(&addr));
        let mut store = match StoreClient::connect(&addr, &b.secret, deadline) {
            Ok(store) => store,
            Err(e) => {
                // Rank 0 may have made its listener and died before this rank reached its
                // store: nobody else knows to remove that listener, or its mark.
                remove_dead_listeners_settled();
                store_mark::remove_if_dead(&addr);
                return Err(e);
            }
        };
        let joined = store
            .set(&format!("joined/{rank}"), b"")
            .and_then(|()| Self::join(&b, &options, &mut store, &mut mark, deadline));
        let (map, links, net_ip) = match joined {
            Ok(j) => j,
            Err(e) => {
                let e = origin_of(&mut store, e);
                // Removes the shared-memory files a dead local peer left (see `check_peers`), also
                // when it died before this rank could read where its listener is.
                let _ = store.check_peers();
                remove_dead_listeners_settled();
                store_mark::remove_if_dead(&addr);
                // The others learn this rank's own reason rather than a closed connection.
                if !matches!(e, Error::BootstrapPeer { .. }) {
                    store.publish_failure(rank, &e.to_string());
                }
                // Rank 0 died before it could remove its rendezvous file: nobody else will.
                if let StoreAddr::File(path) = &b.store {
                    let stale = std::fs::read_to_string(path).is_ok_and(|a| a == addr);
                    if rank != 0 && e.failed_rank() == Some(0) && stale {
                        let _ = std::fs::remove_file(path);
                    }
                }
                drop(store);
                if let Some(server) = &server {
                    server.wait_until_idle(Duration::from_secs(2));
                }
                return Err(e);
            }
        };
        if let Some(server) = &mut server {
            server.linger_until_done(size);
        }
        // Seen every ready key: rank 0 may now close the store whenever it likes.
        store.set(&format!("done/{rank}"), b"1")?;
        tracing::info!(
            rank,
            size,
            launcher = b.launcher,
            hosts = map.host_of.iter().max().map_or(1, |h| h + 1),
            "communicator ready"
        );
        let origin = Origin {
            local: None,
            net_ip: Some(net_ip),
        };
        let blame = crate::link::blame::Board::store(&addr, &b.secret);
        Ok(Self::build(
            rank, map, links, options, origin, server, blame,
        ))
    }

    /// Meets the other ranks at `store` and connects to each of them: the map and the links.
    fn join(
        b: &Bootstrap,
        options: &Options,
        store: &mut StoreClient,
        mark: &mut Option<StoreMark>,
        deadline: Instant,
    ) -> Result<(Topology, Vec<Option<Link>>, IpAddr)> {
        let (rank, size) = (b.rank, b.size);
        let options = options.clone();
        if rank == 0 {
            store.set("session", random_hex(8).as_bytes())?;
        }
        let session = String::from_utf8_lossy(&store.wait("session", deadline)?).into_owned();
        // Our network endpoint, on the interface that reaches rank 0.
        let ip = store
            .local_ip()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        // Two fabrics: the network one, and shared memory for the peers of this host (where
        // this host has a usable shared-memory directory, OXCCL_SHM_DIR).
        let mut endpoints = vec![Endpoint::new(
            connect::net_fabric(options.net, Some(ip))?,
            &options,
            Duration::ZERO,
        )?];
        match connect::shm_fabric(&options)
            .and_then(|shm| Endpoint::new(Box::new(shm), &options, Duration::ZERO))
        {
            Ok(e) => endpoints.push(e),
            Err(e) => tracing::debug!("no shared-memory listener: {e}"),
        }
        let addresses: Vec<String> = endpoints
            .iter()
            .map(|e| e.listener.address().to_text())
            .collect();
        let me = format!(
            "{}\n{}\n{}",
            crate::bootstrap::locality::host_id(),
            std::process::id(),
            addresses.join(" ")
        );
        store.set(&format!("rank/{rank}"), me.as_bytes())?;
        let mut peers = Vec::with_capacity(size);
        let my_host = crate::bootstrap::locality::host_id();
        for q in 0..size {
            let v =
                String::from_utf8_lossy(&store.wait(&format!("rank/{q}"), deadline)?).into_owned();
            let mut it = v.splitn(3, '\n');
            let (h, pid, a) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            let pid: u32 = pid
                .parse()
                .map_err(|_| Error::Env(format!("rank {q} published a bad record")))?;
            // Watched from now on: a peer of this host that dies is noticed (and its
            // listener removed) while this rank still waits for the others' records.
            if q != rank && h == my_host {
                let shm = a.split(' ').nth(SHM).and_then(connect::shm_dir_of);
                store.watch_local_peer(q, pid, shm);
            }
            peers.push((h.to_string(), pid, a.to_string()));
        }
        // Every rank has reached the store, and none can finish init before rank 0 goes on:
        // rank 0's mark has done its work. (Later, a rank that finished init would not remove
        // the mark of a rank 0 killed in between; one still in init does.)
        drop(mark.take());
        let mut hosts: Vec<String> = Vec::new();
        let host_of: Vec<usize> = peers
            .iter()
            .map(|(h, _, _)| match hosts.iter().position(|x| x == h) {
                Some(i) => i,
                None => {
                    hosts.push(h.clone());
                    hosts.len() - 1
                }
            })
            .collect();
        let map = crate::bootstrap::locality::exchange(store, rank, &host_of, &options, deadline)?;
        check_forced_algorithm(&options, size, &map)?;
        let fabric_of: Vec<Fabric> = (0..size)
            .map(|q| fabric_for(&map, &options, rank, q))
            .collect::<Result<_>>()?;
        let use_shm = |q: usize| fabric_of[q] == Fabric::Shm;
        // This host runs an executor per local rank and a proxy per network link of each.
        let local = map.ranks_on(map.host_of[rank]).len();
        let net_peers = (0..size).filter(|&q| q != rank && !use_shm(q)).count();
        endpoints[NET].config.spin = proxy_spin(local * (1 + net_peers));
        if (0..size).any(|q| q != rank && use_shm(q)) && endpoints.len() <= SHM {
            return Err(Error::Env(
                "ranks on this host need shared memory, but no shared-memory listener could \
                 be opened here (OXCCL_SHM_DIR?)"
                    .into(),
            ));
        }
        // The one decision of which fabric connects this rank and rank `q` (`use_shm` above);
        // everything else about making the link is `connect::connect_all`'s.
        let fabric_of = |q: usize| if use_shm(q) { SHM } else { NET };
        let address_of = |q: usize, fabric: usize| {
            let text = peers[q].2.split(' ').nth(fabric).unwrap_or("");
            DynAddress::from_text(text).map_err(|e| {
                Error::net(
                    format!("rank {q} published no usable address for fabric {fabric}"),
                    e,
                )
            })
        };
        let links = connect::connect_all(
            (rank, size),
            &session,
            &mut endpoints,
            &fabric_of,
            &address_of,
            deadline,
            &mut || store.check_peers(),
        )?;
        drop(endpoints);
        store.set(&format!("ready/{rank}"), b"1")?;
        for q in 0..size {
            store.wait(&format!("ready/{q}"), deadline)?;
        }
        tracing::debug!(rank, hosts = hosts.len(), "every rank is ready");
        Ok((map, links, ip))
    }

    pub fn rank(&self) -> usize {
        self.inner.rank
    }

    pub fn size(&self) -> usize {
        self.inner.size
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// How this rank reaches `peer` (`None` for itself or out of range).
    pub fn transport_to(&self, peer: usize) -> Option<LinkKind> {
        self.inner.kinds.get(peer).copied().flatten()
    }

    /// Makes every running and later call on this communicator fail, and tells the peers
    /// (their calls fail too, promptly). The communicator cannot be used afterwards.
    pub fn abort(&self) {
        self.inner.abort_flag.store(true, Ordering::SeqCst);
        self.inner.doorbells.iter().for_each(|b| b.ring());
        if let Ok(mut st) = self.inner.state.try_lock() {
            let e = Error::Aborted {
                op: "abort",
                reason: "aborted by the user".into(),
            };
            st.engine.fail(e);
        }
    }

    /// Runs `f` on the state when it is this call's turn (the ticket taken at call time).
    pub(crate) fn ticket(&self) -> u64 {
        self.inner.next_ticket.fetch_add(1, Ordering::AcqRel)
    }

    pub(crate) fn run_turn<R>(
        &self,
        ticket: u64,
        op: &'static str,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<R> {
        let inner = &*self.inner;
        let _rank = crate::logging::RankScope::enter(inner.rank);
        inner.wait_turn(ticket);
        let _guard = TurnGuard(inner);
        self.locked(op, f)
    }

    /// Whether this thread holds this communicator's turn (it runs a group's calls).
    pub(crate) fn holds_turn(&self) -> bool {
        HELD.with(|h| std::ptr::eq(h.get(), Arc::as_ptr(&self.inner)))
    }

    /// Runs `f` with this thread's turn: a new ticket's, or the one this thread holds already.
    pub(crate) fn with_turn<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.holds_turn() {
            return f();
        }
        let ticket = RESERVED.with(|r| r.take()).unwrap_or_else(|| self.ticket());
        self.inner.wait_turn(ticket);
        let _guard = TurnGuard(&self.inner);
        f()
    }

    /// Runs `f` on the state as a new operation of the engine (the caller has the turn).
    pub(crate) fn locked<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<R> {
        let inner = &*self.inner;
        inner.wanted.fetch_add(1, Ordering::SeqCst);
        inner.doorbells.iter().for_each(|b| b.ring());
        let st = inner.state.lock();
        inner.wanted.fetch_sub(1, Ordering::SeqCst);
        let mut st = st.unwrap_or_else(|p| p.into_inner());
        if let Some(reason) = &st.engine.poisoned {
            return Err(Error::Aborted {
                op,
                reason: reason.clone(),
            });
        }
        if inner.abort_flag.load(Ordering::Acquire) {
            let e = Error::Aborted {
                op,
                reason: "aborted by the user".into(),
            };
            return Err(st.engine.fail(e));
        }
        st.engine.op = op;
        st.engine.begin_op();
        let out = f(&mut st);
        if let Err(e) = &out {
            if st.engine.poisoned.is_none() {
                // Whatever failed mid-call left the streams out of step: tell the peers now
                // rather than let them wait for the timeout.
                let reason = Error::Aborted {
                    op,
                    reason: e.to_string(),
                };
                st.engine.fail(reason);
            }
        }
        out
    }

    /// Runs `f` in line: with the ticket a `start_*` call reserved for this thread, or a new one.
    pub(crate) fn run<R>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut State) -> Result<R>,
    ) -> Result<R> {
        if self.holds_turn() {
            return self.locked(op, f);
        }
        let t = RESERVED.with(|r| r.take()).unwrap_or_else(|| self.ticket());
        self.run_turn(t, op, f)
    }

    /// Waits for the engine's operation `id` (queued by a non-blocking send or receive, or a
    /// group) outside any turn: drives the engine in slices and lets any call that wants the
    /// state have it in between (that call moves `id`'s jobs too while it runs).
    pub(crate) fn wait_op(&self, id: u64) -> Result<()> {
        let inner = &*self.inner;
        let _rank = crate::logging::RankScope::enter(inner.rank);
        let mut w = crate::exec::engine::Waiter::new();
        loop {
            {
                let mut st = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(reason) = &st.engine.poisoned {
                    return Err(Error::Aborted {
                        op: "wait",
                        reason: reason.clone(),
                    });
                }
                st.engine.op = "wait";
                let stop = || inner.wanted.load(Ordering::SeqCst) > 0;
                // Between calls no collective is on the streams (see `exec/receipt.rs`).
                st.engine.at_rest = true;
                let done = st.engine.drive_slice(id, &mut w, &stop);
                st.engine.at_rest = false;
                if done? {
                    return Ok(());
                }
            }
            while inner.wanted.load(Ordering::SeqCst) > 0 {
                std::thread::yield_now();
            }
        }
    }

    /// Whether operation `id` is done (or the engine failed), without waiting; `None` when
    /// another call holds the state right now.
    pub(crate) fn op_finished(&self, id: u64) -> Option<bool> {
        let st = self.inner.state.try_lock().ok()?;
        Some(st.engine.poisoned.is_some() || st.engine.op_done(id))
    }

    /// Fails the engine when operation `id` still has queued jobs (their buffers are about to
    /// go away: a panic unwound past their wait).
    pub(crate) fn abandon_op(&self, id: u64, why: &str) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.engine.op_done(id) && st.engine.poisoned.is_none() {
            st.engine.fail(Error::Aborted {
                op: "wait",
                reason: why.to_string(),
            });
        }
    }

    /// Lets the calls after `ticket` run when the call holding it never ran.
    pub(crate) fn skip_turn(&self, ticket: u64) {
        self.inner.wait_turn(ticket);
        self.inner.next_turn();
    }
}

/// The failure behind `e`: when another rank failed first, its published reason (which may
/// come a moment after its effects, such as its listener going away), else `e`.
fn origin_of(store: &mut StoreClient, e: Error) -> Error {
    // Only what a peer's failure can cause here is worth looking behind.
    if !matches!(
        e,
        Error::Net { .. } | Error::Io { .. } | Error::BootstrapTimeout { .. }
    ) {
        return e;
    }
    let until = Instant::now() + Duration::from_millis(500);
    loop {
        match store.check_peers() {
            Err(peer @ Error::BootstrapPeer { .. }) => return peer,
            Ok(()) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => return e,
        }
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A forced algorithm (`OXCCL_ALGO`) that cannot run on this communicator is refused when the
/// communicator is made, not at its first call (which would abort it for good).
pub(crate) fn check_forced_algorithm(options: &Options, size: usize, map: &Topology) -> Result<()> {
    let Some(name) = &options.algorithm else {
        return Ok(());
    };
    let bad = |detail: String| Error::Algorithm {
        op: "init",
        algo: name.clone(),
        detail,
    };
    let algo: crate::algorithms::Algorithm = name
        .parse()
        .map_err(|e: crate::algorithms::AlgorithmError| bad(format!("{e} (OXCCL_ALGO)")))?;
    crate::tuner::resolve_forced(algo, size, map.hier()).map_err(bad)?;
    Ok(())
}

/// [`connect::remove_dead_listeners`], twice: a killed process closes its sockets (which may
/// be how this rank noticed) a moment before `/proc` shows it exiting, so look once more.
fn remove_dead_listeners_settled() {
    connect::remove_dead_listeners();
    std::thread::sleep(Duration::from_millis(50));
    connect::remove_dead_listeners();
}

fn open_store(b: &Bootstrap, deadline: Instant) -> Result<(Option<StoreServer>, String)> {
    match &b.store {
        StoreAddr::Tcp(addr) => {
            if b.rank == 0 {
                let s = StoreServer::serve(addr, &b.secret)?;
                Ok((Some(s), addr.clone()))
            } else {
                Ok((None, addr.clone()))
            }
        }
        StoreAddr::File(path) => {
            if b.rank == 0 {
                let s = StoreServer::serve("127.0.0.1:0", &b.secret)?;
                let addr = s.addr().to_string();
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let write = || -> std::io::Result<()> {
                    use std::io::Write as _;
                    use std::os::unix::fs::OpenOptionsExt as _;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)?
                        .write_all(addr.as_bytes())
                };
                write().map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
                std::fs::rename(&tmp, path)
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                Ok((Some(s), addr))
            } else {
                let mut unanswered = None;
                let start = Instant::now();
                loop {
                    if let Ok(a) = std::fs::read_to_string(path) {
                        // A stale file of an earlier job points at a closed port: retry briefly.
                        let probe = Instant::now() + Duration::from_millis(300);
                        match StoreClient::connect(&a, &b.secret, probe.min(deadline)) {
                            Ok(_) => return Ok((None, a)),
                            // Its mark says rank 0 died: the file is stale, nobody else
                            // will remove it.
                            Err(e @ Error::BootstrapPeer { .. }) => {
                                if std::fs::read_to_string(path).ok() == Some(a) {
                                    let _ = std::fs::remove_file(path);
                                }
                                return Err(e);
                            }
                            Err(_) => {}
                        }
                        unanswered = Some(a);
                    }
                    if Instant::now() >= deadline {
                        // The file names a store that never answered: rank 0 died after
                        // writing it (it removes the file itself on every other path).
                        let stale =
                            |a: &String| std::fs::read_to_string(path).ok() == Some(a.clone());
                        let what = match &unanswered {
                            Some(a) if stale(a) => {
                                let _ = std::fs::remove_file(path);
                                format!(
                                    "connecting to the store of rank 0 at {a} (named by the \
                                     rendezvous file {}, now removed: did rank 0 die?)",
                                    path.display()
                                )
                            }
                            _ => format!("waiting for rank 0's rendezvous file {}", path.display()),
                        };
                        return Err(Error::BootstrapTimeout {
                            what,
                            after: start.elapsed(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// The endpoints of a rank between processes: the network fabric, then shared memory.
pub(crate) const NET: usize = 0;
pub(crate) const SHM: usize = 1;

pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
