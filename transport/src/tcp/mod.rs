//! `tcp`: the fabric that works everywhere.
//!
//! A connection is `OXCCL_SOCKET_NSOCKS` TCP sockets (default 4), all `TCP_NODELAY` and
//! nonblocking. Messages travel as checked frames ([`wire`]); large ones are striped over the
//! sockets. Progress happens inside `test` with nonblocking `send`/`recv`; with several sockets
//! a zero-timeout `poll(2)` picks the ready ones during setup. A general poller (`mio`,
//! `polling`) is not used: a connection has at most [`MAX_SOCKS`] sockets and progress is
//! driven by the caller's `test` loop, so registration machinery would buy nothing.
//!
//! Setup: every dialing socket sends a [`wire::Hello`] naming the listener's nonce (from its
//! address, so a stale address reaches no one by mistake), a connection id, its index and the
//! dialer's message limit; once all sockets of a connection arrived, the acceptor answers on
//! socket 0 with its own limit. Each side refuses to send above the other's limit
//! ([`Error::TooLarge`]) and treats a frame above its own as a bad frame.
//!
//! The listening address comes from `OXCCL_SOCKET_IFNAME` ([`iface`], NCCL's syntax), or an
//! explicit IP in [`TcpConfig`]; a port already in use is [`Error::AddrInUse`] naming it.

mod conn;
pub mod iface;
mod requests;
mod stream;
pub mod wire;

use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

pub use conn::TcpConnection;
pub use requests::{TcpRecv, TcpSend, TcpView};
use socket2::{Domain, Protocol, Socket, Type};
use wire::{Hello, ACK_LEN, HELLO_LEN};

use crate::api::{Address, Listener, PendingConnection, Setup, Transport};
use crate::error::{Error, Result};
use crate::region::HostRegion;

pub(crate) const NAME: &str = "tcp";
/// Most sockets one connection may stripe over.
pub const MAX_SOCKS: usize = 16;

/// Configuration of the TCP transport.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Address to listen on; `None`: chosen by `ifname`.
    pub ip: Option<IpAddr>,
    /// Interface filter in NCCL's syntax (`OXCCL_SOCKET_IFNAME`).
    pub ifname: Option<String>,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Sockets per connection, 1 to 16 (`OXCCL_SOCKET_NSOCKS`, default 4: on loopback here
    /// four striped sockets moved 2-3x what one did, see `bench/results/transport.md`).
    pub nsocks: usize,
    /// Largest message accepted from a peer (`OXCCL_SOCKET_MAX_MESSAGE`, default 64 GiB).
    pub max_message: u64,
    /// Messages of at least this size are striped over the sockets (256 KiB).
    pub stripe_min: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            ip: None,
            ifname: None,
            port: 0,
            nsocks: 4,
            max_message: 64 << 30,
            stripe_min: 256 << 10,
        }
    }
}

fn env_num(var: &'static str) -> Result<Option<u64>> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| Error::Config {
            var,
            value: v,
            reason: "expected a whole number".into(),
        }),
    }
}

impl TcpConfig {
    /// Listening on 127.0.0.1 only (tests, benchmarks, one node).
    pub fn loopback() -> Self {
        TcpConfig {
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..TcpConfig::default()
        }
    }

    /// Defaults overridden by `OXCCL_SOCKET_IFNAME`, `OXCCL_SOCKET_NSOCKS` and
    /// `OXCCL_SOCKET_MAX_MESSAGE`.
    pub fn from_env() -> Result<Self> {
        let mut c = TcpConfig {
            ifname: std::env::var("OXCCL_SOCKET_IFNAME").ok(),
            ..TcpConfig::default()
        };
        if let Some(n) = env_num("OXCCL_SOCKET_NSOCKS")? {
            c.nsocks = n as usize;
        }
        if let Some(n) = env_num("OXCCL_SOCKET_MAX_MESSAGE")? {
            c.max_message = n;
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_SOCKS).contains(&self.nsocks) {
            return Err(Error::Config {
                var: "OXCCL_SOCKET_NSOCKS",
                value: self.nsocks.to_string(),
                reason: format!("must be 1 to {MAX_SOCKS}"),
            });
        }
        Ok(())
    }
}

/// The TCP transport.
#[derive(Debug, Clone)]
pub struct Tcp {
    config: TcpConfig,
}

impl Tcp {
    /// With [`TcpConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(Tcp {
            config: TcpConfig::from_env()?,
        })
    }
    /// With an explicit configuration.
    pub fn with_config(config: TcpConfig) -> Result<Self> {
        config.validate()?;
        Ok(Tcp { config })
    }
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Where a TCP listener is: its socket address and a nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpAddress {
    /// IP and port.
    pub addr: SocketAddr,
    nonce: u64,
}

impl std::fmt::Display for TcpAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tcp:{}", self.addr)
    }
}

impl Address for TcpAddress {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = b"oxtc".to_vec();
        match self.addr.ip() {
            IpAddr::V4(a) => {
                v.push(4);
                v.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                v.push(6);
                v.extend_from_slice(&a.octets());
            }
        }
        v.extend_from_slice(&self.addr.port().to_le_bytes());
        v.extend_from_slice(&self.nonce.to_le_bytes());
        v
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |r: &str| Error::BadAddress {
            transport: NAME,
            reason: r.to_string(),
        };
        let rest = b
            .strip_prefix(b"oxtc")
            .ok_or_else(|| bad("missing \"oxtc\" prefix"))?;
        let (&fam, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let (ip, rest): (IpAddr, &[u8]) = match (fam, rest.len()) {
            (4, 14) => (
                IpAddr::from(<[u8; 4]>::try_from(&rest[..4]).map_err(|_| bad("ip"))?),
                &rest[4..],
            ),
            (6, 26) => (
                IpAddr::from(<[u8; 16]>::try_from(&rest[..16]).map_err(|_| bad("ip"))?),
                &rest[16..],
            ),
            _ => return Err(bad("wrong family or length")),
        };
        let port = u16::from_le_bytes([rest[0], rest[1]]);
        let nonce = u64::from_le_bytes(rest[2..10].try_into().map_err(|_| bad("nonce"))?);
        Ok(TcpAddress {
            addr: SocketAddr::new(ip, port),
            nonce,
        })
    }
}

struct PreSock {
    sock: Socket,
    peer: SocketAddr,
    buf: [u8; HELLO_LEN],
    fill: usize,
    since: std::time::Instant,
}

/// Accepted sockets that have not finished their hello, at most; a newer one pushes the oldest
/// out. Strangers that connect and say nothing (a scan, a flood) must not use up the process's
/// file descriptors or hold the listener.
const MAX_PRE: usize = 256;
/// How long an accepted socket may take to send its hello (a peer sends it right after
/// connecting) before it is dropped.
const PRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Group {
    conn_id: u64,
    peer_max: u64,
    socks: Vec<Option<Socket>>,
    peer: SocketAddr,
}

/// A listening TCP socket.
pub struct TcpListenerEnd {
    listener: TcpListener,
    addr: TcpAddress,
    config: TcpConfig,
    pre: Vec<PreSock>,
    groups: Vec<Group>,
}

fn tune(sock: &Socket) -> io::Result<()> {
    sock.set_nonblocking(true)?;
    sock.set_nodelay(true)?;
    Ok(())
}

impl Listener for TcpListenerEnd {
    type Address = TcpAddress;
    type Pending = TcpPending;

    fn address(&self) -> TcpAddress {
        self.addr.clone()
    }

    fn poll_accept(&mut self) -> Result<Option<TcpPending>> {
        loop {
            match self.listener.accept() {
                Ok((s, peer)) => {
                    let sock = Socket::from(s);
                    tune(&sock).map_err(|e| {
                        Error::io(NAME, format!("configuring a socket from {peer}"), e)
                    })?;
                    if self.pre.len() >= MAX_PRE {
                        self.pre.remove(0);
                    }
                    self.pre.push(PreSock {
                        sock,
                        peer,
                        buf: [0; HELLO_LEN],
                        fill: 0,
                        since: std::time::Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(NAME, format!("accepting on {}", self.addr), e)),
            }
        }
        if self
            .pre
            .first()
            .is_some_and(|p| p.since.elapsed() > PRE_TIMEOUT)
        {
            self.pre.retain(|p| p.since.elapsed() <= PRE_TIMEOUT);
        }
        let mut i = 0;
        while i < self.pre.len() {
            let p = &mut self.pre[i];
            let bad = |why: String, peer: SocketAddr| Error::BadFrame {
                transport: NAME,
                peer: format!("tcp:{peer}"),
                reason: why,
            };
            match (&p.sock).read(&mut p.buf[p.fill..]) {
                Ok(0) => {
                    let p = self.pre.swap_remove(i);
                    return Err(bad(
                        format!("connection ended {} bytes into its hello", p.fill),
                        p.peer,
                    ));
                }
                Ok(n) => p.fill += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let p = self.pre.swap_remove(i);
                    return Err(Error::io(
                        NAME,
                        format!("reading the hello of {}", p.peer),
                        e,
                    ));
                }
            }
            if self.pre[i].fill < HELLO_LEN {
                i += 1;
                continue;
            }
            let p = self.pre.swap_remove(i);
            let h = Hello::decode(&p.buf).map_err(|why| bad(why, p.peer))?;
            if h.nonce != self.addr.nonce {
                return Err(bad(
                    "hello for another listener (stale address?)".into(),
                    p.peer,
                ));
            }
            let g = match self.groups.iter().position(|g| g.conn_id == h.conn_id) {
                Some(g) => g,
                None => {
                    self.groups.push(Group {
                        conn_id: h.conn_id,
                        peer_max: h.max_message,
                        socks: (0..h.nsocks).map(|_| None).collect(),
                        peer: p.peer,
                    });
                    self.groups.len() - 1
                }
            };
            let group = &mut self.groups[g];
            if group.socks.len() != h.nsocks as usize || group.socks[h.index as usize].is_some() {
                return Err(bad(
                    format!("inconsistent hello (socket {} of {})", h.index, h.nsocks),
                    p.peer,
                ));
            }
            group.socks[h.index as usize] = Some(p.sock);
            if group.socks.iter().all(Option::is_some) {
                let group = self.groups.swap_remove(g);
                let socks: Vec<Socket> = group.socks.into_iter().flatten().collect();
                let ack = wire::encode_ack(self.config.max_message);
                return Ok(Some(TcpPending(PendingState::Acking {
                    socks,
                    ack,
                    written: 0,
                    peer: format!("tcp:{} (conn {:x})", group.peer, group.conn_id),
                    peer_max: group.peer_max,
                    config: self.config.clone(),
                })));
            }
        }
        Ok(None)
    }
}

/// A TCP connection in setup.
pub struct TcpPending(PendingState);

enum PendingState {
    Dialing {
        socks: Vec<(Socket, usize)>,
        hello: Vec<[u8; HELLO_LEN]>,
        ack: [u8; ACK_LEN],
        ack_fill: usize,
        addr: TcpAddress,
        config: TcpConfig,
    },
    Acking {
        socks: Vec<Socket>,
        ack: [u8; ACK_LEN],
        written: usize,
        peer: String,
        peer_max: u64,
        config: TcpConfig,
    },
}

fn connected(sock: &Socket) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(sock),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(false);
    }
    if let Some(e) = sock.take_error()? {
        return Err(e);
    }
    Ok(pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
}

impl PendingConnection for TcpPending {
    type Connection = TcpConnection;
    fn poll(self) -> Result<Setup<TcpConnection, Self>> {
        match self.0 {
            PendingState::Acking {
                socks,
                ack,
                mut written,
                peer,
                peer_max,
                config,
            } => {
                match (&socks[0]).write(&ack[written..]) {
                    Ok(n) => written += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(Error::io(NAME, format!("acknowledging {peer}"), e)),
                }
                if written == ACK_LEN {
                    return Ok(Setup::Connected(TcpConnection::new(
                        socks,
                        peer,
                        peer_max,
                        config.max_message,
                        config.stripe_min,
                    )));
                }
                Ok(Setup::Pending(TcpPending(PendingState::Acking {
                    socks,
                    ack,
                    written,
                    peer,
                    peer_max,
                    config,
                })))
            }
            PendingState::Dialing {
                mut socks,
                hello,
                mut ack,
                mut ack_fill,
                addr,
                config,
            } => {
                let fail = |e: io::Error| Error::ConnectFailed {
                    transport: NAME,
                    addr: addr.to_string(),
                    reason: e.to_string(),
                };
                for (k, (sock, sent)) in socks.iter_mut().enumerate() {
                    if *sent == usize::MAX {
                        // Not connected yet.
                        if !connected(sock).map_err(fail)? {
                            continue;
                        }
                        *sent = 0;
                    }
                    if *sent < HELLO_LEN {
                        match (&*sock).write(&hello[k][*sent..]) {
                            Ok(n) => *sent += n,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                                ) => {}
                            Err(e) => return Err(fail(e)),
                        }
                    }
                }
                if socks.iter().all(|(_, s)| *s == HELLO_LEN) {
                    match (&socks[0].0).read(&mut ack[ack_fill..]) {
                        Ok(0) => {
                            return Err(fail(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the listener closed the connection during setup",
                            )))
                        }
                        Ok(n) => ack_fill += n,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(fail(e)),
                    }
                    if ack_fill == ACK_LEN {
                        let peer_max = wire::decode_ack(&ack).map_err(|why| Error::BadFrame {
                            transport: NAME,
                            peer: addr.to_string(),
                            reason: why,
                        })?;
                        let socks = socks.into_iter().map(|(s, _)| s).collect();
                        return Ok(Setup::Connected(TcpConnection::new(
                            socks,
                            addr.to_string(),
                            peer_max,
                            config.max_message,
                            config.stripe_min,
                        )));
                    }
                }
                Ok(Setup::Pending(TcpPending(PendingState::Dialing {
                    socks,
                    hello,
                    ack,
                    ack_fill,
                    addr,
                    config,
                })))
            }
        }
    }
}

impl Transport for Tcp {
    type Address = TcpAddress;
    type Listener = TcpListenerEnd;
    type Pending = TcpPending;
    type Connection = TcpConnection;
    type Region = HostRegion;

    fn name(&self) -> &'static str {
        NAME
    }

    fn listen(&self) -> Result<TcpListenerEnd> {
        let ip = match self.config.ip {
            Some(ip) => ip,
            None => iface::choose(self.config.ifname.as_deref())?.addr,
        };
        let want = SocketAddr::new(ip, self.config.port);
        let listener = TcpListener::bind(want).map_err(|e| match e.kind() {
            io::ErrorKind::AddrInUse => Error::AddrInUse {
                transport: NAME,
                addr: want.to_string(),
                source: e,
            },
            _ => Error::io(NAME, format!("listening on {want}"), e),
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(NAME, format!("configuring {want}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(NAME, format!("address of {want}"), e))?;
        Ok(TcpListenerEnd {
            listener,
            addr: TcpAddress {
                addr,
                nonce: random_u64(),
            },
            config: self.config.clone(),
            pre: Vec::new(),
            groups: Vec::new(),
        })
    }

    fn connect(&self, addr: &TcpAddress) -> Result<TcpPending> {
        let n = self.config.nsocks;
        let conn_id = random_u64();
        let mut socks = Vec::with_capacity(n);
        let mut hello = Vec::with_capacity(n);
        for k in 0..n {
            let fail = |e: io::Error| Error::ConnectFailed {
                transport: NAME,
                addr: addr.to_string(),
                reason: e.to_string(),
            };
            let sock = Socket::new(
                Domain::for_address(addr.addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(fail)?;
            tune(&sock).map_err(fail)?;
            match sock.connect(&addr.addr.into()) {
                Ok(()) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EINPROGRESS)
                        || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(fail(e)),
            }
            socks.push((sock, usize::MAX));
            hello.push(
                Hello {
                    nonce: addr.nonce,
                    conn_id,
                    index: k as u16,
                    nsocks: n as u16,
                    max_message: self.config.max_message,
                }
                .encode(),
            );
        }
        Ok(TcpPending(PendingState::Dialing {
            socks,
            hello,
            ack: [0; ACK_LEN],
            ack_fill: 0,
            addr: addr.clone(),
            config: self.config.clone(),
        }))
    }

    fn register(&self, len: usize) -> Result<HostRegion> {
        HostRegion::new(len)
    }
}
