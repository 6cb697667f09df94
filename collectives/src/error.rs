//! The one error type of the crate: every failure names what was being done and, where one is
//! involved, the peer.

use std::time::Duration;

/// Anything a communicator, its bootstrap or one of its operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The launcher's environment does not say who this rank is, or says it inconsistently.
    #[error("bootstrap: {0}")]
    Env(String),
    /// The store address (`OXCCL_STORE_ADDR`, `MASTER_ADDR:MASTER_PORT`, ...) is already in use.
    #[error("bootstrap: cannot serve the store on {addr}: address already in use (another job, or a stale process?); set OXCCL_STORE_ADDR to a free port")]
    AddrInUse { addr: String },
    /// The store refused this rank: its secret differs from rank 0's.
    #[error("bootstrap: the store at {addr} refused this rank: wrong secret (OXCCL_SECRET, OXCCL_SECRET_FILE or the per-user ~/.config/oxccl/secret must be the same on every rank)")]
    Refused { addr: String },
    /// Another rank failed or died during bootstrap: its own error, as it published it, or
    /// what this rank saw (its process gone, its store connection closed).
    #[error("bootstrap: rank {rank} failed: {reason}")]
    BootstrapPeer { rank: usize, reason: String },
    /// A deadline passed during bootstrap.
    #[error("bootstrap: timed out after {after:?} while {what}")]
    BootstrapTimeout { what: String, after: Duration },
    /// An I/O error during bootstrap or connection setup.
    #[error("bootstrap: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A peer sent something that does not follow the protocol.
    #[error("bootstrap: {what}: {source}")]
    Net {
        what: String,
        #[source]
        source: oxccl_transport::Error,
    },
    #[error("{op}: protocol error from rank {peer}: {detail}")]
    Protocol {
        op: &'static str,
        peer: usize,
        detail: String,
    },
    /// Ranks called different operations, sizes, dtypes or ops in the same position.
    #[error(
        "{op}: mismatch with rank {peer}: this rank called {mine}, rank {peer} called {theirs}"
    )]
    Mismatch {
        op: &'static str,
        peer: usize,
        mine: String,
        theirs: String,
    },
    /// The deadline (`OXCCL_TIMEOUT`) passed while waiting for a peer.
    #[error("{op}: timed out after {after:?} waiting for rank {peer} ({waiting})")]
    Timeout {
        op: &'static str,
        peer: usize,
        waiting: &'static str,
        after: Duration,
    },
    /// The connection to a peer broke, or the peer process died or aborted; `source` is the
    /// transport's error (its [`oxccl_transport::Error::is_fatal`] and chain intact).
    #[error("{op}: connection to rank {peer} failed: {source}")]
    PeerFailed {
        op: &'static str,
        peer: usize,
        #[source]
        source: oxccl_transport::Error,
    },
    /// Another rank failed first and this rank's call broke because of it (its link was
    /// aborted or closed): `origin` is the rank that failed (or that the first rank to notice
    /// the failure blamed), `origin_op` what that rank was running, `cause` why. `seen` is what
    /// this rank saw itself, kept as the source.
    #[error("{op}: rank {origin} failed first (in {origin_op}): {cause}")]
    Remote {
        op: &'static str,
        origin: usize,
        origin_op: String,
        cause: String,
        #[source]
        seen: Box<Error>,
    },
    /// The caller's arguments are wrong (buffer lengths, root out of range, ...).
    #[error("{op}: invalid argument: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// No algorithm can run this collective (unsupported, or the schedule builder failed).
    #[error("{op}: algorithm {algo}: {detail}")]
    Algorithm {
        op: &'static str,
        algo: String,
        detail: String,
    },
    /// The communicator was aborted (by [`crate::Communicator::abort`] or an earlier failure).
    #[error("{op}: communicator aborted ({reason})")]
    Aborted { op: &'static str, reason: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn net(what: impl Into<String>, source: oxccl_transport::Error) -> Self {
        Error::Net {
            what: what.into(),
            source,
        }
    }

    /// The transport's error underneath, for failures of a link or of connection setup.
    pub fn transport_error(&self) -> Option<&oxccl_transport::Error> {
        match self {
            Error::PeerFailed { source, .. } | Error::Net { source, .. } => Some(source),
            Error::Remote { seen, .. } => seen.transport_error(),
            _ => None,
        }
    }

    /// The rank this error blames for the failure, where it names one: the origin of a
    /// failure relayed from another rank, or the peer that failed, timed out or disagreed.
    pub fn failed_rank(&self) -> Option<usize> {
        match self {
            Error::Remote { origin, .. } => Some(*origin),
            Error::PeerFailed { peer, .. }
            | Error::Timeout { peer, .. }
            | Error::Mismatch { peer, .. }
            | Error::Protocol { peer, .. } => Some(*peer),
            Error::BootstrapPeer { rank, .. } => Some(*rank),
            _ => None,
        }
    }

    pub(crate) fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
