//! The one error type of every transport.
//!
//! Each variant carries the context a user needs to act on it: which peer, which tag, which
//! size, which address. Errors that come from a peer (a bad frame, a closed connection) name
//! the peer with the transport's own description of it (`Connection::peer`).

use std::time::Duration;

use crate::Tag;

/// Result alias used by the whole crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end (or died) before the operation could complete.
    #[error("{transport}: peer {peer} closed the connection{during}")]
    PeerClosed {
        /// Transport name (`shm`, `tcp`, ...).
        transport: &'static str,
        /// The peer, as the transport describes it.
        peer: String,
        /// What was going on, e.g. " during a 4096-byte message with tag 7" (may be empty).
        during: String,
    },
    /// A blocking helper ran past its deadline.
    #[error("{transport}: timed out after {waited:?} waiting for {what} (peer {peer})")]
    Timeout {
        /// Transport name.
        transport: &'static str,
        /// What was awaited (`"receive with tag 3"`, `"connection setup"`).
        what: String,
        /// The peer, or the listening address.
        peer: String,
        /// How long the helper waited.
        waited: Duration,
    },
    /// A message arrived that is longer than the buffer posted for it. The message is
    /// discarded and the connection stays usable.
    #[error("{transport}: message from {peer} with tag {tag} has {message} bytes but the receive buffer has {buffer}")]
    Truncated {
        /// Transport name.
        transport: &'static str,
        /// The peer.
        peer: String,
        /// The tag.
        tag: Tag,
        /// Length of the arriving message.
        message: usize,
        /// Length of the posted buffer.
        buffer: usize,
    },
    /// A zero-copy receive asked for exactly `expected` bytes and the message had another
    /// length. The message is discarded and the connection stays usable.
    #[error("{transport}: message from {peer} with tag {tag} has {message} bytes, expected exactly {expected}")]
    SizeMismatch {
        /// Transport name.
        transport: &'static str,
        /// The peer.
        peer: String,
        /// The tag.
        tag: Tag,
        /// Length of the arriving message.
        message: usize,
        /// The length the receiver asked for.
        expected: usize,
    },
    /// The peer sent something that is not a valid frame (wrong magic, wrong version, a
    /// length above the limit, a truncated header). The connection is closed.
    #[error("{transport}: bad frame from {peer}: {reason}; connection closed")]
    BadFrame {
        /// Transport name.
        transport: &'static str,
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// A message is larger than this transport accepts.
    #[error("{transport}: message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Transport name.
        transport: &'static str,
        /// Length asked for.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Binding a listening endpoint failed because the address is taken.
    #[error("{transport}: address {addr} is already in use")]
    AddrInUse {
        /// Transport name.
        transport: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Nobody listens at the address (or it belongs to another host).
    #[error("{transport}: cannot connect to {addr}: {reason}")]
    ConnectFailed {
        /// Transport name.
        transport: &'static str,
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// Address bytes that do not decode.
    #[error("{transport}: invalid address: {reason}")]
    BadAddress {
        /// Transport name.
        transport: &'static str,
        /// Why.
        reason: String,
    },
    /// An earlier error or an abandoned request left the connection unusable.
    #[error("{transport}: connection to {peer} is broken: {reason}")]
    Broken {
        /// Transport name.
        transport: &'static str,
        /// The peer.
        peer: String,
        /// The first error that broke it.
        reason: String,
    },
    /// The caller broke a rule of the API (documented on the method).
    #[error("{transport}: invalid use: {reason}")]
    Usage {
        /// Transport name.
        transport: &'static str,
        /// Which rule.
        reason: String,
    },
    /// An `OXCCL_*` variable has a value that does not parse.
    #[error("environment variable {var}={value:?}: {reason}")]
    Config {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The fabric is not available here (no device, no driver, feature off).
    #[error("{transport} not available: {reason}")]
    NotAvailable {
        /// Transport name.
        transport: &'static str,
        /// Why.
        reason: String,
    },
    /// A fault injected by [`crate::fault`] on purpose.
    #[error("injected fault on {peer}: {what}")]
    Injected {
        /// The peer of the wrapped connection.
        peer: String,
        /// Which fault.
        what: String,
    },
    /// An operating-system call failed.
    #[error("{transport}: {context}: {source}")]
    Io {
        /// Transport name.
        transport: &'static str,
        /// What was being done, naming the peer or path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(transport: &'static str, context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            transport,
            context: context.into(),
            source,
        }
    }

    /// True for errors after which the connection cannot be used any more.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Truncated { .. }
                | Error::SizeMismatch { .. }
                | Error::Timeout { .. }
                | Error::TooLarge { .. }
                | Error::Usage { .. }
        )
    }
}
