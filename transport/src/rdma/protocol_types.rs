//! The protocol's error and configuration types.

use std::time::Duration;

use crate::rdma::verbs::VerbsError;
use crate::rdma::wire::{MAX_SLOT, MAX_SLOTS, MIN_SLOT};

/// Protocol errors; the transport layer maps them onto [`crate::Error`].
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// A verbs call failed.
    #[error("{peer}: {source}")]
    Verbs {
        /// The peer.
        peer: String,
        /// The failing call.
        source: VerbsError,
    },
    /// The peer closed or died.
    #[error("peer {peer} closed the connection{during}")]
    PeerClosed {
        /// The peer.
        peer: String,
        /// What was in progress.
        during: String,
    },
    /// The peer wrote something that is not a valid slot.
    #[error("bad frame from {peer}: {reason}")]
    BadFrame {
        /// The peer.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection is unusable after an earlier error.
    #[error("connection to {peer} is broken: {reason}")]
    Broken {
        /// The peer.
        peer: String,
        /// The first error.
        reason: String,
    },
    /// The message is longer than the posted buffer (message discarded).
    #[error("message from {peer} with tag {tag} has {message} bytes but the buffer has {buffer}")]
    Truncated {
        /// The peer.
        peer: String,
        /// Its tag.
        tag: u64,
        /// Message length.
        message: usize,
        /// Buffer length.
        buffer: usize,
    },
    /// A deadline passed.
    #[error("timed out after {waited:?} waiting for {what} (peer {peer})")]
    Timeout {
        /// The peer.
        peer: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A configuration value out of range.
    #[error("invalid RDMA configuration: {0}")]
    Config(String),
}

/// Geometry of this side's receive arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtoConfig {
    /// Slots in the receive ring (= credits the peer starts with).
    pub slots: u32,
    /// Bytes per slot, header included.
    pub slot_size: usize,
    /// RNR retry count for the queue pair (7 = forever; the protocol never causes RNR).
    pub rnr_retry: u8,
    /// ACK timeout code (4.096 us * 2^timeout) and retry count: how long until a dead peer is
    /// noticed by a write.
    pub timeout: u8,
    /// See `timeout`.
    pub retry_cnt: u8,
    /// After this long without hearing from the peer, a zero-length RDMA WRITE probes it: its
    /// ACK proves the peer's queue pair is alive, its failure (after the ACK timeout and
    /// retries) reports a peer that died without saying CLOSE.
    pub keepalive: Duration,
}

impl Default for ProtoConfig {
    fn default() -> Self {
        ProtoConfig {
            slots: 16,
            slot_size: 128 << 10,
            rnr_retry: 7,
            timeout: 14,
            retry_cnt: 7,
            keepalive: Duration::from_secs(1),
        }
    }
}

impl ProtoConfig {
    pub(super) fn check(&self) -> Result<(), ProtoError> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(ProtoError::Config(format!(
                "slots = {} (allowed 1..={MAX_SLOTS})",
                self.slots
            )));
        }
        if !(MIN_SLOT..=MAX_SLOT).contains(&self.slot_size) {
            return Err(ProtoError::Config(format!(
                "slot size {} (allowed {MIN_SLOT}..={MAX_SLOT})",
                self.slot_size
            )));
        }
        Ok(())
    }
}
