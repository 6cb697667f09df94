//! Byte streams between two ranks, one per peer, in order: what the executor moves chunks over.
//!
//! Each link is non-blocking in both directions: `write` takes what fits, `peek` shows what has
//! arrived (as a view straight into the shared-memory ring where there is one), `consume`
//! releases it. A failure (the peer aborted, the connection broke, the peer process is gone) is
//! an `Err` with a description; the executor adds the operation and the peer.

pub mod net;
pub mod ring;
pub mod shm;

use net::NetLink;
use ring::{RingReader, RingWriter};

/// How a link moves bytes (reported by [`crate::Communicator::transport_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// Rings in this process's memory (ranks that are threads).
    Memory,
    /// Rings in a shared file mapping (processes on one host).
    Shm,
    /// `oxccl-transport`'s TCP fabric, through a proxy thread.
    Tcp,
    /// `oxccl-transport`'s RDMA fabric (a NIC, or the software verbs model), through a proxy thread.
    Rdma,
    /// Another `oxccl-transport` fabric, by name, through a proxy thread.
    Fabric(&'static str),
}

pub enum Link {
    Ring {
        tx: RingWriter,
        rx: RingReader,
        /// The peer's process id where it is another process of this host, to notice its death.
        pid: Option<u32>,
        kind: LinkKind,
    },
    /// A connection of an `oxccl-transport` fabric, for ranks on other hosts.
    Net(NetLink),
}

impl Link {
    pub fn kind(&self) -> LinkKind {
        match self {
            Link::Ring { kind, .. } => *kind,
            Link::Net(n) => match n.fabric() {
                "tcp" => LinkKind::Tcp,
                "rdma" => LinkKind::Rdma,
                other => LinkKind::Fabric(other),
            },
        }
    }

    #[inline]
    pub fn write(&mut self, data: &[u8]) -> Result<usize, String> {
        match self {
            Link::Ring { tx, .. } => tx
                .write(data)
                .map_err(|()| "the peer aborted (ring closed)".to_string()),
            Link::Net(n) => n.tx.write(data).map_err(|()| net::describe(&n.failure)),
        }
    }

    #[inline]
    pub fn peek(&mut self) -> Result<&[u8], String> {
        match self {
            Link::Ring { rx, .. } => rx
                .peek()
                .map_err(|()| "the peer aborted (ring closed)".to_string()),
            Link::Net(NetLink { rx, failure, .. }) => {
                rx.peek().map_err(|()| net::describe(failure))
            }
        }
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        match self {
            Link::Ring { rx, .. } => rx.consume(n),
            Link::Net(l) => l.rx.consume(n),
        }
    }

    /// Starts an orderly close: a network link's proxy sends what is left (dropping the link
    /// then waits for it). Nothing to do for rings in memory.
    pub fn close(&self) {
        if let Link::Net(n) = self {
            n.close();
        }
    }

    /// Tells the peer this rank gives up: it sees an error at its next wait on this link.
    pub fn abort(&mut self) {
        match self {
            Link::Ring { tx, rx, .. } => {
                tx.abort();
                rx.abort();
            }
            Link::Net(n) => n.abort(),
        }
    }

    /// Slow checks run while waiting: is the peer still there?
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self {
            Link::Ring {
                tx, pid: Some(pid), ..
            } => {
                if tx.aborted() {
                    return Err("the peer aborted (ring closed)".into());
                }
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Err(_) => Err(format!("the peer process {pid} has exited")),
                    Ok(stat) => {
                        // The state follows the parenthesised command name.
                        let state = stat
                            .rsplit_once(')')
                            .and_then(|(_, r)| r.trim_start().chars().next());
                        if matches!(state, Some('Z') | Some('X')) {
                            Err(format!("the peer process {pid} has exited"))
                        } else {
                            Ok(())
                        }
                    }
                }
            }
            Link::Ring { tx, .. } if tx.aborted() => Err("the peer aborted (ring closed)".into()),
            // A closed connection is an error only when this rank waits for data on it, and
            // then `peek` says so; here only the fabric's own failures count.
            Link::Net(n) => n.failure().map_or(Ok(()), Err),
            _ => Ok(()),
        }
    }
}
