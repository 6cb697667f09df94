//! How links are made: every link is a connection of an `oxccl-transport` fabric turned into
//! a stream ([`oxccl_transport::Connection::into_stream`]) — `shm` between processes of one
//! host (natively, on the connection's own rings), the network fabric across hosts (through
//! the transport's stream proxy), `loopback` between thread ranks.
//!
//! Between processes, the higher rank of each pair connects to the lower one's listener of the
//! fabric chosen for the pair and says who it is (a greeting message with the job's session
//! and its rank); the lower rank accepts on all its listeners until every higher rank came.

use super::Link;
use crate::error::{Error, Result};
use crate::options::{LocalTransport, NetChoice, Options};
use oxccl_transport::dynamic::{DynAddress, DynConnection, DynListener, DynPending, DynTransport};
use oxccl_transport::shm::{Shm, ShmConfig};
use oxccl_transport::stream::{proxy_spin, StreamConfig};
use oxccl_transport::tcp::{Tcp, TcpConfig};
use oxccl_transport::wait::{self, Deadline};
use oxccl_transport::{Connection, Listener as _, PendingConnection as _, Setup, Transport};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tag of the first message on every connection: the job's session and the connecting rank.
const TAG_HELLO: oxccl_transport::Tag = 0x6f78_6865_6c6c_6f00;

pub(crate) fn until(deadline: Instant) -> Deadline {
    Deadline::after(deadline.saturating_duration_since(Instant::now()))
}

/// The stream configuration of links: `options.ring_bytes` per ring, proxies spinning for
/// `spin`.
fn stream_config(options: &Options, spin: Duration) -> StreamConfig {
    StreamConfig {
        ring_bytes: options.ring_bytes,
        spin,
        single_copy_min: options.single_copy_min,
        single_copy_choice: options.single_copy_choice,
        ring_nt: options.ring_nt,
    }
}

/// The shared-memory fabric, with `OXCCL_SHM_*` and the communicator's ring size.
pub(crate) fn shm_fabric(options: &Options) -> Result<Shm> {
    let mut config = ShmConfig::from_env().map_err(|e| Error::net("OXCCL_SHM_*", e))?;
    config.ring_bytes = options.ring_bytes;
    config.single_copy_min = options.single_copy_min;
    Shm::with_config(config).map_err(|e| Error::net("shm fabric", e))
}

/// The fabric that links this rank to ranks on other hosts, listening on `ip` when given.
pub(crate) fn net_fabric(net: NetChoice, ip: Option<IpAddr>) -> Result<Box<dyn DynTransport>> {
    match net {
        NetChoice::Tcp => {
            let mut config = TcpConfig::from_env().map_err(|e| Error::net("OXCCL_SOCKET_*", e))?;
            if config.ifname.is_none() {
                config.ip = ip;
            }
            Ok(Box::new(
                Tcp::with_config(config).map_err(|e| Error::net("tcp fabric", e))?,
            ))
        }
        NetChoice::Rdma => rdma_fabric(ip),
    }
}

#[cfg(feature = "rdma")]
fn rdma_fabric(ip: Option<IpAddr>) -> Result<Box<dyn DynTransport>> {
    use oxccl_transport::rdma::{sideway_verbs::SidewayVerbs, RdmaConfig, RdmaTransport};
    let mut config = RdmaConfig::from_env().map_err(|e| Error::net("OXCCL_IB_*", e))?;
    if std::env::var_os("OXCCL_IB_SETUP_ADDR").is_none() {
        if let Some(ip) = ip {
            config.setup_addr = std::net::SocketAddr::new(ip, 0);
        }
    }
    let verbs = SidewayVerbs::from_env().map_err(|e| Error::net("opening the RDMA device", e))?;
    Ok(Box::new(RdmaTransport::new(verbs, config)))
}

#[cfg(not(feature = "rdma"))]
fn rdma_fabric(_ip: Option<IpAddr>) -> Result<Box<dyn DynTransport>> {
    Err(Error::Env(
        "OXCCL_NET=rdma: this build has no RDMA support (build with the cargo feature `rdma`)"
            .into(),
    ))
}

/// The directory of a shared-memory listener from its published address (`Address::to_text`:
/// hex of the fabric's bytes, whose shm part is `oxsm`, the boot id's length and the boot id,
/// then the directory). Only a directory named like the ones the fabric makes is returned, so a
/// bad record cannot make a rank delete anything else.
pub(crate) fn shm_dir_of(text: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes: Vec<u8> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let at = bytes.windows(4).position(|w| w == b"oxsm")? + 4;
    let boot_len = *bytes.get(at)? as usize;
    let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes.get(at + 1 + boot_len..)?));
    let named = dir
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"oxccl-shm-"));
    (dir.is_absolute() && named).then(|| dir.to_path_buf())
}

/// Removes the shared-memory listener directories (`oxccl-shm-<pid>-...` in `OXCCL_SHM_DIR`)
/// of this user's processes that are gone: a rank killed during bootstrap cannot remove its
/// own, and its peers may not have read its address yet. Run when a bootstrap fails.
pub(crate) fn remove_dead_listeners() {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(config) = ShmConfig::from_env() else {
        return;
    };
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    for entry in std::fs::read_dir(&config.dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("oxccl-shm-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let mine = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if mine && !oxccl_transport::shm::process_alive(pid) {
            tracing::debug!(dir = %entry.path().display(), "removing a dead rank's listener");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A connection of `fabric` as a link.
fn link(conn: Box<dyn DynConnection>, fabric: &'static str, config: &StreamConfig) -> Result<Link> {
    let what = format!("turning a {fabric} connection into a stream");
    Ok(Link::new(
        conn.into_stream(fabric, config)
            .map_err(|e| Error::net(what, e))?,
    ))
}

/// Links between `n` thread ranks of this process over `transport`: `links[a][b]`.
#[allow(clippy::needless_range_loop)]
pub(crate) fn local_links(
    n: usize,
    transport: LocalTransport,
    options: &Options,
) -> Result<Vec<Vec<Option<Link>>>> {
    let deadline = Deadline::after(options.timeout.min(Duration::from_secs(60)));
    // n executors and n (n - 1) proxies in this process, where the fabric needs proxies.
    let config = stream_config(options, proxy_spin(n * n));
    let mut links: Vec<Vec<Option<Link>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for a in 0..n {
        for b in a + 1..n {
            let (la, lb) = match transport {
                LocalTransport::Memory => pair(
                    &oxccl_transport::loopback::Loopback::new(),
                    &config,
                    deadline,
                )?,
                LocalTransport::Shm => pair(&shm_fabric(options)?, &config, deadline)?,
                LocalTransport::Tcp => {
                    let t = Tcp::with_config(TcpConfig::loopback())
                        .map_err(|e| Error::net("tcp fabric", e))?;
                    pair(&t, &config, deadline)?
                }
                LocalTransport::RdmaModel => {
                    use oxccl_transport::rdma::{sim::SimVerbs, RdmaConfig, RdmaTransport};
                    let t = RdmaTransport::new(SimVerbs::new(), RdmaConfig::default());
                    pair(&t, &config, deadline)?
                }
            };
            links[a][b] = Some(la);
            links[b][a] = Some(lb);
        }
    }
    Ok(links)
}

/// Two connected ends of `t` inside this process, as links.
fn pair<T: Transport>(t: &T, config: &StreamConfig, deadline: Deadline) -> Result<(Link, Link)>
where
    T::Connection: 'static,
{
    let what = || format!("connecting two thread ranks over {}", t.name());
    let (a, b) = wait::connect_pair(t, t, deadline).map_err(|e| Error::net(what(), e))?;
    let stream = |c: T::Connection| {
        c.into_stream(t.name(), config)
            .map(Link::new)
            .map_err(|e| Error::net(what(), e))
    };
    Ok((stream(a)?, stream(b)?))
}

/// One fabric of a rank between processes: the transport, its listener and how its links
/// stream.
pub(crate) struct Endpoint {
    pub transport: Box<dyn DynTransport>,
    pub listener: Box<dyn DynListener>,
    pub config: StreamConfig,
}

impl Endpoint {
    pub fn new(
        transport: Box<dyn DynTransport>,
        options: &Options,
        spin: Duration,
    ) -> Result<Self> {
        let listener = transport
            .dyn_listen()
            .map_err(|e| Error::net(format!("listening on {}", transport.dyn_name()), e))?;
        Ok(Endpoint {
            transport,
            listener,
            config: stream_config(options, spin),
        })
    }
}

/// How often bootstrap waits look at the other ranks' health (`check` of [`connect_all`]).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Polls `pending` until it is connected, running `check` every [`CHECK_EVERY`]: a peer that
/// died after publishing its address never accepts, and that must not take the whole deadline.
fn establish_checked(
    mut pending: Box<dyn DynPending>,
    deadline: Instant,
    check: &mut dyn FnMut() -> Result<()>,
    what: &dyn Fn() -> String,
) -> Result<Box<dyn DynConnection>> {
    let mut next_check = Instant::now() + CHECK_EVERY;
    let mut backoff = wait::Backoff::new();
    loop {
        match pending.poll().map_err(|err| Error::net(what(), err))? {
            Setup::Connected(c) => return Ok(c),
            Setup::Pending(p) => pending = p,
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::BootstrapTimeout {
                what: what(),
                after: Duration::ZERO,
            });
        }
        if now >= next_check {
            next_check = now + CHECK_EVERY;
            check()?;
        }
        backoff.snooze();
    }
}

/// Connects this rank to every other: over `endpoints[fabric_of(q)]` for rank `q`, whose
/// listener of that fabric is at `address_of(q, fabric)`. `check` is run every
/// [`CHECK_EVERY`] while waiting (the store's view of the other ranks: a rank that died or
/// failed during bootstrap ends the wait within a fraction of a second).
///
/// A connection that fails before it says who it is (a port scan's connect-and-close, garbage,
/// a reset) is dropped with a warning: only the deadline or `check` ends the wait.
pub(crate) fn connect_all(
    (rank, size): (usize, usize),
    session: &str,
    endpoints: &mut [Endpoint],
    fabric_of: &dyn Fn(usize) -> usize,
    address_of: &dyn Fn(usize, usize) -> Result<DynAddress>,
    deadline: Instant,
    check: &mut dyn FnMut() -> Result<()>,
) -> Result<Vec<Option<Link>>> {
    let mut links: Vec<Option<Link>> = (0..size).map(|_| None).collect();
    // The higher rank connects to the lower one's listener and says who it is.
    for q in 0..rank {
        let e = &endpoints[fabric_of(q)];
        let addr = address_of(q, fabric_of(q))?;
        let what = || format!("connecting to rank {q} at {addr}");
        let pending = e
            .transport
            .dyn_connect(&addr)
            .map_err(|err| Error::net(what(), err))?;
        let conn = establish_checked(pending, deadline, check, &what)?;
        let mut hello = session.as_bytes().to_vec();
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        wait::send(&conn, TAG_HELLO, &hello, until(deadline))
            .map_err(|err| Error::net(format!("greeting rank {q}"), err))?;
        links[q] = Some(link(conn, e.transport.dyn_name(), &e.config)?);
    }
    let mut expected = size - rank - 1;
    let mut next_check = Instant::now() + CHECK_EVERY;
    let mut dropped = 0u64;
    while expected > 0 {
        let mut idle = true;
        for (f, e) in endpoints.iter_mut().enumerate() {
            let pending = match e.listener.poll_accept() {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(err) => {
                    // Not one of ours (ranks speak the protocol): a scan, garbage, a reset.
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            "rank {rank} dropped an incoming connection ({dropped} so far): {err}"
                        );
                    }
                    idle = false;
                    continue;
                }
            };
            idle = false;
            // A stranger that connects and says nothing must not hold up the job.
            let hello_deadline = until(deadline.min(Instant::now() + Duration::from_secs(5)));
            let conn = match wait::establish(pending, hello_deadline, "an incoming peer") {
                Ok(c) => c,
                Err(err) => {
                    tracing::warn!("rank {rank} dropped an incoming connection: {err}");
                    continue;
                }
            };
            let mut hello = vec![0u8; session.len() + 4];
            let ok = matches!(
                wait::recv(&conn, TAG_HELLO, &mut hello, hello_deadline),
                Ok(n) if n == hello.len()
            ) && &hello[..session.len()] == session.as_bytes();
            if !ok {
                tracing::warn!(
                    peer = conn.dyn_peer(),
                    "rank {rank} ignored a connection that is not from this job"
                );
                continue;
            }
            let mut q = [0u8; 4];
            q.copy_from_slice(&hello[session.len()..]);
            let q = u32::from_le_bytes(q) as usize;
            if q <= rank || q >= size || links[q].is_some() || fabric_of(q) != f {
                tracing::warn!(q, "rank {rank} ignored an unexpected peer");
                continue;
            }
            links[q] = Some(link(conn, e.transport.dyn_name(), &e.config)?);
            expected -= 1;
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + CHECK_EVERY;
            check()?;
        }
        if idle {
            if Instant::now() >= deadline {
                return Err(Error::BootstrapTimeout {
                    what: format!("rank {rank} waiting for {expected} peers to connect"),
                    after: Duration::ZERO,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(links)
}
