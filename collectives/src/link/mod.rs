//! Byte streams between two ranks, one per peer, in order: what the executor moves chunks over.
//!
//! Each link is non-blocking in both directions: `write` takes what fits, `peek` shows what has
//! arrived (as a view straight into the shared-memory ring where there is one), `consume`
//! releases it. A failure (the peer aborted, the connection broke, the peer process is gone) is
//! an `Err` with a description; the executor adds the operation and the peer.

pub mod ring;
pub mod shm;
pub mod tcp;

use ring::{RingReader, RingWriter};
use tcp::TcpLink;

/// How a link moves bytes (reported by [`crate::Communicator::transport_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// Rings in this process's memory (ranks that are threads).
    Memory,
    /// Rings in a shared file mapping (processes on one host).
    Shm,
    /// A TCP connection.
    Tcp,
}

pub enum Link {
    Ring {
        tx: RingWriter,
        rx: RingReader,
        /// The peer's process id where it is another process of this host, to notice its death.
        pid: Option<u32>,
        kind: LinkKind,
    },
    Tcp(TcpLink),
}

impl Link {
    pub fn kind(&self) -> LinkKind {
        match self {
            Link::Ring { kind, .. } => *kind,
            Link::Tcp(_) => LinkKind::Tcp,
        }
    }

    #[inline]
    pub fn write(&mut self, data: &[u8]) -> Result<usize, String> {
        match self {
            Link::Ring { tx, .. } => tx
                .write(data)
                .map_err(|()| "the peer aborted (ring closed)".to_string()),
            Link::Tcp(t) => t.write(data),
        }
    }

    #[inline]
    pub fn peek(&mut self) -> Result<&[u8], String> {
        match self {
            Link::Ring { rx, .. } => rx
                .peek()
                .map_err(|()| "the peer aborted (ring closed)".to_string()),
            Link::Tcp(t) => t.peek(),
        }
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        match self {
            Link::Ring { rx, .. } => rx.consume(n),
            Link::Tcp(t) => t.consume(n),
        }
    }

    /// Tells the peer this rank gives up: it sees an error at its next wait on this link.
    pub fn abort(&mut self) {
        match self {
            Link::Ring { tx, rx, .. } => {
                tx.abort();
                rx.abort();
            }
            Link::Tcp(t) => t.abort(),
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
            _ => Ok(()),
        }
    }
}
