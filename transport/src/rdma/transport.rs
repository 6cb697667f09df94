//! The RDMA protocol as a [`Transport`]: setup over a TCP socket (as NCCL's IB transport does),
//! then everything over the queue pair.
//!
//! Setup: the listener is a nonblocking TCP socket ([`RdmaAddress`] is its address). Each side
//! creates its verbs objects, sends its [`ConnInfo`] (queue pair, PSN, receive arena) through
//! the socket, moves its queue pair to RTR and RTS when the peer's arrives, then sends one
//! READY byte; a side is connected when it has the peer's READY, so no write reaches a queue
//! pair that is not yet ready to receive. Nothing blocks: each step is a nonblocking read or
//! write, retried by `poll`.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::connection::RdmaConnection;
use super::protocol::{Engine, PreparedSide, ProtoConfig, ProtoError};
use super::verbs::{Verbs, VerbsError};
use super::wire::ConnInfo;
use crate::api::{Address, Listener, PendingConnection, Setup, Transport};
use crate::error::{Error, Result};
use crate::region::HostRegion;

const NAME: &str = "rdma";
const ADDR_MAGIC: &[u8; 4] = b"OXRA";
const READY: u8 = 0xa5;

/// Settings of an [`RdmaTransport`], from `OXCCL_IB_*` variables or set directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Device to open (`OXCCL_IB_DEVICE`); `None`: the first one.
    pub device: Option<String>,
    /// Receive ring geometry and queue pair timeouts (`OXCCL_IB_SLOTS`, `OXCCL_IB_SLOT_SIZE`).
    pub proto: ProtoConfig,
    /// Address the setup socket binds (`OXCCL_IB_SETUP_ADDR`, default `127.0.0.1:0`). Across
    /// nodes, set it to this node's address on a network the peers reach.
    pub setup_addr: SocketAddr,
    /// How long `close` waits for its last writes to be acknowledged.
    pub close_timeout: Duration,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            device: None,
            proto: ProtoConfig::default(),
            setup_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            close_timeout: Duration::from_secs(5),
        }
    }
}

fn env_parse<T: std::str::FromStr>(
    var: &'static str,
    ok: impl Fn(&T) -> bool,
    why: &str,
) -> Result<Option<T>> {
    match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<T>() {
            Ok(x) if ok(&x) => Ok(Some(x)),
            _ => Err(Error::Config {
                var,
                value: v,
                reason: why.to_string(),
            }),
        },
    }
}

impl RdmaConfig {
    /// Defaults overridden by `OXCCL_IB_DEVICE`, `OXCCL_IB_SLOTS` (1..=4096, default 16),
    /// `OXCCL_IB_SLOT_SIZE` (bytes, 256..=256 MiB, default 128 KiB) and `OXCCL_IB_SETUP_ADDR`
    /// (`ip` or `ip:port`).
    pub fn from_env() -> Result<Self> {
        let mut c = RdmaConfig {
            device: std::env::var("OXCCL_IB_DEVICE")
                .ok()
                .filter(|d| !d.trim().is_empty()),
            ..RdmaConfig::default()
        };
        if let Some(n) = env_parse::<u32>(
            "OXCCL_IB_SLOTS",
            |n| (1..=4096).contains(n),
            "expected 1..=4096",
        )? {
            c.proto.slots = n;
        }
        let size_ok = |n: &usize| (super::wire::MIN_SLOT..=super::wire::MAX_SLOT).contains(n);
        if let Some(n) = env_parse::<usize>(
            "OXCCL_IB_SLOT_SIZE",
            size_ok,
            "expected 256..=268435456 bytes",
        )? {
            c.proto.slot_size = n;
        }
        if let Ok(v) = std::env::var("OXCCL_IB_SETUP_ADDR") {
            let parsed = v
                .trim()
                .parse::<SocketAddr>()
                .or_else(|_| v.trim().parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)));
            c.setup_addr = parsed.map_err(|_| Error::Config {
                var: "OXCCL_IB_SETUP_ADDR",
                value: v.clone(),
                reason: "expected an IP address, optionally with :port".into(),
            })?;
        }
        Ok(c)
    }
}

/// RDMA over any [`Verbs`] backend: [`super::sim::SimVerbs`] here, rdma-core with the `rdma`
/// feature. Values made from clones of one backend reach each other.
#[derive(Clone)]
pub struct RdmaTransport<V: Verbs + Clone> {
    verbs: V,
    config: RdmaConfig,
}

impl<V: Verbs + Clone> RdmaTransport<V> {
    /// A transport over `verbs` with `config`.
    pub fn new(verbs: V, config: RdmaConfig) -> Self {
        RdmaTransport { verbs, config }
    }

    /// Its settings.
    pub fn config(&self) -> &RdmaConfig {
        &self.config
    }

    fn prepare(&self) -> Result<PreparedSide<V>> {
        PreparedSide::new(
            &self.verbs,
            self.config.device.as_deref(),
            self.config.proto,
        )
        .map_err(|e| map_err(e, "setup"))
    }
}

/// Maps a protocol error onto the crate's error.
pub(crate) fn map_err(e: ProtoError, peer_hint: &str) -> Error {
    match e {
        ProtoError::Verbs {
            source: VerbsError::NoDevice(reason),
            ..
        } => Error::NotAvailable {
            transport: NAME,
            reason: format!("no RDMA device: {reason}"),
        },
        ProtoError::Verbs {
            source: e @ VerbsError::DeviceNotFound { .. },
            ..
        } => Error::NotAvailable {
            transport: NAME,
            reason: e.to_string(),
        },
        ProtoError::Verbs { peer, source } => Error::Broken {
            transport: NAME,
            peer,
            reason: source.to_string(),
        },
        ProtoError::PeerClosed { peer, during } => Error::PeerClosed {
            transport: NAME,
            peer,
            during,
        },
        ProtoError::BadFrame { peer, reason } => Error::BadFrame {
            transport: NAME,
            peer,
            reason,
        },
        ProtoError::Broken { peer, reason } => Error::Broken {
            transport: NAME,
            peer,
            reason,
        },
        ProtoError::Truncated {
            peer,
            tag,
            message,
            buffer,
        } => Error::Truncated {
            transport: NAME,
            peer,
            tag,
            message,
            buffer,
        },
        ProtoError::Timeout { peer, what, waited } => Error::Timeout {
            transport: NAME,
            what,
            peer,
            waited,
        },
        ProtoError::Config(reason) => Error::Usage {
            transport: NAME,
            reason: format!("{reason} ({peer_hint})"),
        },
    }
}

fn io_err(context: String, source: std::io::Error) -> Error {
    Error::Io {
        transport: NAME,
        context,
        source,
    }
}

/// Where an RDMA listener takes connections: its setup socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaAddress(pub SocketAddr);

impl fmt::Display for RdmaAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rdma://{}", self.0)
    }
}

impl Address for RdmaAddress {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = ADDR_MAGIC.to_vec();
        match self.0.ip() {
            IpAddr::V4(ip) => {
                b.push(4);
                b.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                b.push(6);
                b.extend_from_slice(&ip.octets());
            }
        }
        b.extend_from_slice(&self.0.port().to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::BadAddress {
            transport: NAME,
            reason,
        };
        if b.len() < 5 || &b[..4] != ADDR_MAGIC {
            return Err(bad(format!("{} bytes without the OXRA prefix", b.len())));
        }
        let (ip, rest): (IpAddr, &[u8]) = match (b[4], b.len()) {
            (4, 11) => (
                IpAddr::from(<[u8; 4]>::try_from(&b[5..9]).expect("4 bytes")),
                &b[9..],
            ),
            (6, 23) => (
                IpAddr::from(<[u8; 16]>::try_from(&b[5..21]).expect("16 bytes")),
                &b[21..],
            ),
            (f, n) => return Err(bad(format!("family {f} with {n} bytes"))),
        };
        Ok(RdmaAddress(SocketAddr::new(
            ip,
            u16::from_le_bytes([rest[0], rest[1]]),
        )))
    }
}

/// A listening setup socket.
pub struct RdmaListener<V: Verbs + Clone> {
    socket: TcpListener,
    addr: RdmaAddress,
    transport: RdmaTransport<V>,
}

impl<V: Verbs + Clone> Transport for RdmaTransport<V> {
    type Address = RdmaAddress;
    type Listener = RdmaListener<V>;
    type Pending = RdmaPending<V>;
    type Connection = RdmaConnection<V>;
    type Region = HostRegion;

    fn name(&self) -> &'static str {
        NAME
    }

    fn listen(&self) -> Result<RdmaListener<V>> {
        let want = self.config.setup_addr;
        let socket = TcpListener::bind(want).map_err(|source| match source.kind() {
            ErrorKind::AddrInUse => Error::AddrInUse {
                transport: NAME,
                addr: want.to_string(),
                source,
            },
            _ => io_err(format!("binding the setup socket {want}"), source),
        })?;
        socket
            .set_nonblocking(true)
            .map_err(|e| io_err(format!("setting {want} nonblocking"), e))?;
        let local = socket
            .local_addr()
            .map_err(|e| io_err("reading the setup socket address".into(), e))?;
        // Opening the device now makes "no RDMA device" an error of `listen`, not of a peer.
        self.verbs
            .open(self.config.device.as_deref())
            .map_err(|source| {
                map_err(
                    ProtoError::Verbs {
                        peer: String::new(),
                        source,
                    },
                    "listen",
                )
            })?;
        let transport = RdmaTransport {
            verbs: self.verbs.clone(),
            config: self.config.clone(),
        };
        Ok(RdmaListener {
            socket,
            addr: RdmaAddress(local),
            transport,
        })
    }

    fn connect(&self, addr: &RdmaAddress) -> Result<RdmaPending<V>> {
        let side = self.prepare()?;
        let stream = TcpStream::connect_timeout(&addr.0, Duration::from_secs(5)).map_err(|e| {
            Error::ConnectFailed {
                transport: NAME,
                addr: addr.to_string(),
                reason: e.to_string(),
            }
        })?;
        RdmaPending::start(stream, side, addr.to_string(), self.config.close_timeout)
    }

    /// Plain page-aligned memory: messages are staged through the connection's registered
    /// slots, so registering user memory would not save a copy.
    fn register(&self, len: usize) -> Result<HostRegion> {
        HostRegion::new(len)
    }
}

impl<V: Verbs + Clone> Listener for RdmaListener<V> {
    type Address = RdmaAddress;
    type Pending = RdmaPending<V>;

    fn address(&self) -> RdmaAddress {
        self.addr
    }

    fn poll_accept(&mut self) -> Result<Option<RdmaPending<V>>> {
        match self.socket.accept() {
            Ok((stream, from)) => {
                let side = self.transport.prepare()?;
                RdmaPending::start(
                    stream,
                    side,
                    from.to_string(),
                    self.transport.config.close_timeout,
                )
                .map(Some)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(None)
            }
            Err(e) => Err(io_err(format!("accepting on {}", self.addr), e)),
        }
    }
}

/// A connection being set up (type state: it can only be polled).
pub struct RdmaPending<V: Verbs> {
    io: SetupIo,
    stage: Stage<V>,
    close_timeout: Duration,
}

enum Stage<V: Verbs> {
    /// Waiting for the peer's connection info.
    Exchange(PreparedSide<V>),
    /// Our queue pair is in RTS; waiting for the peer's READY.
    Ready(Box<Engine<V>>),
}

/// The setup socket with what is still to be written and what was read so far.
struct SetupIo {
    stream: TcpStream,
    peer: String,
    outbox: Vec<u8>,
    inbox: Vec<u8>,
}

impl SetupIo {
    /// Writes what is queued and reads until `want` bytes are in, without blocking.
    fn pump(&mut self, want: usize) -> Result<()> {
        let again =
            |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted);
        while !self.outbox.is_empty() {
            match self.stream.write(&self.outbox) {
                Ok(0) => return Err(self.closed("sending connection info")),
                Ok(n) => drop(self.outbox.drain(..n)),
                Err(e) if again(&e) => break,
                Err(e) => return Err(io_err(format!("setup socket to {}", self.peer), e)),
            }
        }
        let mut buf = [0u8; 128];
        while self.inbox.len() < want {
            let n = (want - self.inbox.len()).min(buf.len());
            match self.stream.read(&mut buf[..n]) {
                Ok(0) => return Err(self.closed("waiting for its connection info")),
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if again(&e) => break,
                Err(e) => return Err(io_err(format!("setup socket to {}", self.peer), e)),
            }
        }
        Ok(())
    }

    fn closed(&self, during: &str) -> Error {
        Error::ConnectFailed {
            transport: NAME,
            addr: self.peer.clone(),
            reason: format!("peer closed the setup socket while {during}"),
        }
    }
}

impl<V: Verbs> RdmaPending<V> {
    fn start(
        stream: TcpStream,
        side: PreparedSide<V>,
        peer: String,
        close_timeout: Duration,
    ) -> Result<Self> {
        stream
            .set_nonblocking(true)
            .map_err(|e| io_err(format!("setting the setup socket to {peer} nonblocking"), e))?;
        let _ = stream.set_nodelay(true);
        let outbox = side.info().to_bytes();
        let io = SetupIo {
            stream,
            peer,
            outbox,
            inbox: Vec::new(),
        };
        Ok(RdmaPending {
            io,
            stage: Stage::Exchange(side),
            close_timeout,
        })
    }
}

impl<V: Verbs> PendingConnection for RdmaPending<V> {
    type Connection = RdmaConnection<V>;

    fn poll(self) -> Result<Setup<RdmaConnection<V>, Self>> {
        let RdmaPending {
            mut io,
            stage,
            close_timeout,
        } = self;
        let engine = match stage {
            Stage::Exchange(side) => {
                io.pump(ConnInfo::LEN)?;
                if io.inbox.len() < ConnInfo::LEN {
                    let stage = Stage::Exchange(side);
                    return Ok(Setup::Pending(RdmaPending {
                        io,
                        stage,
                        close_timeout,
                    }));
                }
                let remote = ConnInfo::from_bytes(&io.inbox).map_err(|reason| Error::BadFrame {
                    transport: NAME,
                    peer: io.peer.clone(),
                    reason,
                })?;
                io.inbox.clear();
                let peer = format!("qp {:#x} via {}", remote.qp.qp_num, io.peer);
                let engine = side
                    .connect(remote, peer)
                    .map_err(|e| map_err(e, "connect"))?;
                io.outbox.push(READY);
                Box::new(engine)
            }
            Stage::Ready(engine) => engine,
        };
        io.pump(1)?;
        if io.inbox.is_empty() || !io.outbox.is_empty() {
            let stage = Stage::Ready(engine);
            return Ok(Setup::Pending(RdmaPending {
                io,
                stage,
                close_timeout,
            }));
        }
        if io.inbox[0] != READY {
            let reason = format!("setup byte {:#x} is not READY", io.inbox[0]);
            return Err(Error::BadFrame {
                transport: NAME,
                peer: io.peer,
                reason,
            });
        }
        Ok(Setup::Connected(RdmaConnection::new(
            *engine,
            close_timeout,
        )))
    }
}
