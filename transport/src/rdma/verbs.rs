//! The small verbs interface the RDMA protocol is written against.
//!
//! It covers exactly what a reliable-connected, write-with-immediate protocol needs and nothing
//! more: open a device, allocate a protection domain, register memory (the region owns its bytes,
//! so no caller can free memory a NIC may still write), create a completion queue that a queue
//! pair's send and receive sides share, move a queue pair through RESET, INIT, RTR, RTS (and ERR),
//! post RDMA WRITE (with or without immediate data) and zero-length receives, and poll
//! completions. Two implementations exist: [`super::sim`] (an in-process model of RC semantics,
//! always compiled) and, behind the `rdma` feature, `super::sideway_verbs` on real rdma-core.
//!
//! Queue pair endpoints travel between peers as bytes ([`QpEndpoint::to_bytes`]), checked on the
//! way in: a peer's bytes are input, never trusted.

use std::fmt;

/// What can go wrong in a verbs call. Completion errors are not here: they arrive as
/// [`WorkCompletion`]s with a non-success [`WcStatus`].
#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    /// The verbs library works but reports no device, or the kernel has no RDMA support at all
    /// (ENOSYS from `ibv_get_device_list` reads as this too).
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// A device was named (`OXCCL_IB_DEVICE`) but is not in the list.
    #[error("RDMA device {name:?} not found (available: {available:?})")]
    DeviceNotFound {
        /// The requested device.
        name: String,
        /// What the device list held.
        available: Vec<String>,
    },
    /// A queue-pair state change that the RC state machine does not allow.
    #[error("queue pair {qp_num}: illegal transition {from:?} -> {to:?}")]
    BadTransition {
        /// Queue pair number.
        qp_num: u32,
        /// Current state.
        from: QpState,
        /// Requested state.
        to: QpState,
    },
    /// Posting a work request failed immediately (queue full, wrong state, bad bounds).
    #[error("queue pair {qp_num}: post {op} failed: {reason}")]
    Post {
        /// Queue pair number.
        qp_num: u32,
        /// `send` or `recv`.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// An access to a local memory region outside its bounds.
    #[error("memory region access out of bounds: offset {offset} + len {len} > region {region}")]
    OutOfBounds {
        /// Offset of the access.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Region length.
        region: usize,
    },
    /// Endpoint bytes from a peer that do not decode.
    #[error("malformed queue pair endpoint: {0}")]
    BadEndpoint(String),
    /// Any other failure reported by the verbs library, with the call that failed.
    #[error("{call} failed: {source}")]
    Os {
        /// The verbs call.
        call: &'static str,
        /// The error it returned.
        source: std::io::Error,
    },
    /// The software model's limits (no such queue pair, fabric shut down, ...).
    #[error("{0}")]
    Sim(String),
}

/// Queue pair states of the RC state machine (IB spec section 10.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpState {
    /// Just created; nothing can be posted.
    Reset,
    /// Receives can be posted; nothing is processed yet.
    Init,
    /// Ready to receive: incoming writes are accepted.
    Rtr,
    /// Ready to send.
    Rts,
    /// Broken: every outstanding and future work request completes with [`WcStatus::WrFlush`].
    Error,
}

/// Access rights of a memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The local NIC may write into it (needed for anything remote peers write).
    pub local_write: bool,
    /// Remote peers may RDMA WRITE into it with its rkey.
    pub remote_write: bool,
}

impl Access {
    /// Local use only: source of writes.
    pub const LOCAL: Access = Access {
        local_write: true,
        remote_write: false,
    };
    /// Remote peers may write into it.
    pub const REMOTE_WRITE: Access = Access {
        local_write: true,
        remote_write: true,
    };
}

/// Sizes a queue pair is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpCaps {
    /// Maximum outstanding send work requests.
    pub max_send_wr: u32,
    /// Maximum outstanding receive work requests.
    pub max_recv_wr: u32,
}

/// The address of a queue pair, as the peer needs it to connect (what `rc_pingpong` exchanges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpEndpoint {
    /// Queue pair number.
    pub qp_num: u32,
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Global identifier (RoCE, or routed InfiniBand).
    pub gid: [u8; 16],
    /// First packet sequence number this side will send.
    pub psn: u32,
}

impl QpEndpoint {
    /// Encoded size in bytes.
    pub const LEN: usize = 4 + 2 + 16 + 4;

    /// Little-endian encoding, fixed size.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&self.qp_num.to_le_bytes());
        b[4..6].copy_from_slice(&self.lid.to_le_bytes());
        b[6..22].copy_from_slice(&self.gid);
        b[22..26].copy_from_slice(&self.psn.to_le_bytes());
        b
    }

    /// Decodes [`QpEndpoint::to_bytes`]; a wrong length or a PSN over 24 bits is an error.
    pub fn from_bytes(b: &[u8]) -> Result<Self, VerbsError> {
        if b.len() != Self::LEN {
            return Err(VerbsError::BadEndpoint(format!(
                "expected {} bytes, got {}",
                Self::LEN,
                b.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let psn = u32_at(22);
        if psn > 0x00ff_ffff {
            return Err(VerbsError::BadEndpoint(format!(
                "psn {psn:#x} exceeds 24 bits"
            )));
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[6..22]);
        Ok(QpEndpoint {
            qp_num: u32_at(0),
            lid: u16::from_le_bytes([b[4], b[5]]),
            gid,
            psn,
        })
    }
}

/// A queue pair state change with the attributes that state needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpTransition {
    /// RESET -> INIT: port and remote access rights.
    Init {
        /// Allow remote peers to RDMA WRITE through this queue pair.
        remote_write: bool,
    },
    /// INIT -> RTR: the remote endpoint is fixed here.
    Rtr {
        /// The peer's endpoint.
        remote: QpEndpoint,
        /// Minimum RNR NAK timer code (IB encoding, 0..=31); how long the peer waits before
        /// retrying a write that found no posted receive here.
        min_rnr_timer: u8,
    },
    /// RTR -> RTS: retry behaviour of this side's sends.
    Rts {
        /// This side's first PSN (must equal what the peer was told).
        sq_psn: u32,
        /// Local ACK timeout code (4.096 us * 2^timeout).
        timeout: u8,
        /// Transport retries on timeout (0..=7).
        retry_cnt: u8,
        /// Retries on receive-not-ready (0..=7; 7 means forever).
        rnr_retry: u8,
    },
    /// Any state -> ERR: flush everything outstanding.
    Error,
    /// Any state -> RESET.
    Reset,
}

impl QpTransition {
    /// The state this transition leads to.
    pub fn target(&self) -> QpState {
        match self {
            QpTransition::Init { .. } => QpState::Init,
            QpTransition::Rtr { .. } => QpState::Rtr,
            QpTransition::Rts { .. } => QpState::Rts,
            QpTransition::Error => QpState::Error,
            QpTransition::Reset => QpState::Reset,
        }
    }

    /// Whether the RC state machine allows `from -> self.target()`.
    pub fn allowed_from(&self, from: QpState) -> bool {
        matches!(
            (from, self.target()),
            (QpState::Reset, QpState::Init)
                | (QpState::Init, QpState::Rtr)
                | (QpState::Rtr, QpState::Rts)
                | (_, QpState::Error)
                | (_, QpState::Reset)
        )
    }
}

/// Completion status, the subset of `ibv_wc_status` an RC write protocol can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcStatus {
    /// Done.
    Success,
    /// Local length error (scatter entry beyond its region).
    LocalLength,
    /// Local protection error (bad lkey).
    LocalProtection,
    /// Flushed because the queue pair went to the error state.
    WrFlush,
    /// The responder rejected the rkey, the range or the access rights.
    RemoteAccess,
    /// The responder could not process the request (e.g. its queue pair is not ready).
    RemoteInvalidRequest,
    /// No ACK after `retry_cnt` retries: the peer is gone.
    RetryExceeded,
    /// Receive-not-ready after `rnr_retry` retries.
    RnrRetryExceeded,
    /// Any other status, raw.
    Other(u32),
}

impl fmt::Display for WcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a completion completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcOpcode {
    /// Our RDMA WRITE (with or without immediate) finished.
    RdmaWrite,
    /// A peer's RDMA WRITE WITH IMMEDIATE consumed one of our receives.
    RecvRdmaWithImm,
    /// Any other opcode, raw (also used when a failed completion carries no valid opcode).
    Other(u32),
}

/// One entry popped from a completion queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkCompletion {
    /// The id the work request was posted with.
    pub wr_id: u64,
    /// Outcome.
    pub status: WcStatus,
    /// Operation (valid only when `status` is `Success`, as in verbs).
    pub opcode: WcOpcode,
    /// Immediate data of a received write-with-immediate.
    pub imm_data: Option<u32>,
    /// Bytes written by a received write-with-immediate.
    pub byte_len: u32,
    /// The local queue pair this completion belongs to (a CQ may be shared).
    pub qp_num: u32,
}

/// One RDMA WRITE work request: `len` bytes from `local[local_offset..]` to `remote_addr` in the
/// peer's region `rkey`, optionally with 32 bits of immediate data that consume one of the
/// peer's posted receives and surface in its completion queue.
#[derive(Debug)]
pub struct WriteWr<'a, M> {
    /// Returned in this side's completion.
    pub wr_id: u64,
    /// Registered source region.
    pub local: &'a M,
    /// Offset of the data in `local`.
    pub local_offset: usize,
    /// Bytes to write (0 is allowed: a pure immediate).
    pub len: usize,
    /// Target virtual address in the peer's region.
    pub remote_addr: u64,
    /// The peer region's remote key.
    pub rkey: u32,
    /// Immediate data; `None` is a plain RDMA WRITE that the peer never sees as a completion.
    pub imm: Option<u32>,
}

/// The verbs backend: names the object types and opens devices.
pub trait Verbs: Send + Sync + 'static {
    /// An open device (`ibv_context`).
    type Context: Context<Self> + Send + Sync;
    /// A protection domain.
    type Pd: ProtectionDomain<Self> + Send + Sync;
    /// A registered memory region that owns its bytes.
    type Mr: MemoryRegion + Send + Sync;
    /// A completion queue; clones share the queue.
    type Cq: CompletionQueue + Clone + Send + Sync;
    /// A reliable-connected queue pair.
    type Qp: QueuePair<Self> + Send;

    /// Short name for logs and errors (`sim`, `sideway`).
    fn name(&self) -> &'static str;

    /// Names of the devices present. No device at all is `Err(NoDevice)`, so callers see one
    /// clear error whatever the reason (no NIC, no kernel support, no rdma-core).
    fn device_names(&self) -> Result<Vec<String>, VerbsError>;

    /// Opens `device`, or the first device when `None`.
    fn open(&self, device: Option<&str>) -> Result<Self::Context, VerbsError>;
}

/// An open device.
pub trait Context<V: Verbs + ?Sized> {
    /// The device name.
    fn device_name(&self) -> &str;
    /// Allocates a protection domain.
    fn alloc_pd(&self) -> Result<V::Pd, VerbsError>;
    /// Creates a completion queue with room for `depth` entries.
    fn create_cq(&self, depth: u32) -> Result<V::Cq, VerbsError>;
    /// The port's LID and GID that go into this side's [`QpEndpoint`].
    fn port_address(&self) -> Result<(u16, [u8; 16]), VerbsError>;
}

/// A protection domain: regions and queue pairs created here can work together.
pub trait ProtectionDomain<V: Verbs + ?Sized> {
    /// Allocates `len` zeroed bytes and registers them.
    fn alloc_mr(&self, len: usize, access: Access) -> Result<V::Mr, VerbsError>;
    /// Creates an RC queue pair in RESET whose send and receive sides both complete on `cq`.
    fn create_qp(&self, cq: &V::Cq, caps: QpCaps) -> Result<V::Qp, VerbsError>;
}

/// A registered region. Reads and writes go through these methods because the NIC may write the
/// bytes at any time: no Rust reference to them is ever handed out.
pub trait MemoryRegion {
    /// Local key (for this side's scatter/gather entries).
    fn lkey(&self) -> u32;
    /// Remote key (what peers use to write here).
    fn rkey(&self) -> u32;
    /// Virtual address peers target (offset 0 of the region).
    fn addr(&self) -> u64;
    /// Length in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `src` into the region at `offset`.
    fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), VerbsError>;
    /// Copies from the region at `offset` into `dst`.
    fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), VerbsError>;
    /// Reads the little-endian `u64` at `offset` (a multiple of 8) with one aligned load, so a
    /// counter a peer RDMA-writes is never seen torn.
    fn read_u64(&self, offset: usize) -> Result<u64, VerbsError>;
}

/// A completion queue.
pub trait CompletionQueue {
    /// Pops up to `max` completions into `out` (appending); returns how many. Never blocks.
    fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize, VerbsError>;
}

/// A reliable-connected queue pair.
pub trait QueuePair<V: Verbs + ?Sized> {
    /// Its number.
    fn qp_num(&self) -> u32;
    /// Its current state (the model's or the library's view).
    fn state(&self) -> QpState;
    /// Moves to another state; illegal transitions are [`VerbsError::BadTransition`].
    fn modify(&mut self, transition: QpTransition) -> Result<(), VerbsError>;
    /// Posts a signaled RDMA WRITE (with immediate when `wr.imm` is set). The queue pair keeps
    /// `wr.local` alive until it is destroyed, so the NIC never reads freed memory.
    fn post_write(&mut self, wr: WriteWr<'_, V::Mr>) -> Result<(), VerbsError>;
    /// Posts a zero-length receive: room for one incoming write-with-immediate.
    fn post_recv(&mut self, wr_id: u64) -> Result<(), VerbsError>;
}

/// Checks `offset + len <= region` without overflow.
pub(crate) fn check_bounds(offset: usize, len: usize, region: usize) -> Result<(), VerbsError> {
    match offset.checked_add(len) {
        Some(end) if end <= region => Ok(()),
        _ => Err(VerbsError::OutOfBounds {
            offset,
            len,
            region,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trips_and_rejects_bad_bytes() {
        let ep = QpEndpoint {
            qp_num: 0x1234_5678,
            lid: 7,
            gid: [3; 16],
            psn: 0xab_cdef,
        };
        let b = ep.to_bytes();
        assert_eq!(QpEndpoint::from_bytes(&b).unwrap(), ep);
        assert!(QpEndpoint::from_bytes(&b[..10]).is_err());
        let mut bad = b;
        bad[25] = 0xff;
        assert!(matches!(
            QpEndpoint::from_bytes(&bad),
            Err(VerbsError::BadEndpoint(_))
        ));
    }

    #[test]
    fn rc_transitions() {
        let init = QpTransition::Init { remote_write: true };
        assert!(init.allowed_from(QpState::Reset));
        assert!(!init.allowed_from(QpState::Rts));
        let rts = QpTransition::Rts {
            sq_psn: 0,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
        };
        assert!(!rts.allowed_from(QpState::Init));
        assert!(rts.allowed_from(QpState::Rtr));
        assert!(QpTransition::Error.allowed_from(QpState::Rts));
    }

    #[test]
    fn bounds() {
        assert!(check_bounds(0, 4, 4).is_ok());
        assert!(check_bounds(1, 4, 4).is_err());
        assert!(check_bounds(usize::MAX, 2, 4).is_err());
    }
}
