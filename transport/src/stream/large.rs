//! The single-copy path of native streams: a large message crosses memory once.
//!
//! Through the ring every byte is copied twice (sender buffer -> ring -> destination). For a
//! message of at least the connection's threshold (negotiated at connect, so both ends agree
//! from the length alone), the sender instead writes a 32-byte header into the stream; if the
//! peer can read its memory the header carries the buffer's address and the receiver copies
//! straight out of it into its destination (`process_vm_readv` between processes, a plain copy
//! between threads of one process), in pieces, then counts the message as pulled in the
//! connection's header (`pulled[r]`, see `stream::ring`), which completes the sender's job.
//! Otherwise (cross-memory attach refused: ptrace rules, containers) the header says "inline"
//! and the bytes follow in the stream as usual. Open MPI's vader moves large messages the
//! same way (`btl_vader_single_copy_mechanism`).
//!
//! Header: magic u32, mode u32 (1 pull, 2 inline), length u64, address u64, ticket u64 (the
//! sender's count of pull offers before this one).

use std::sync::Arc;
use std::time::Duration;

use super::{RingStream, Stream};
use crate::error::{Error, Result};

const MAGIC: u32 = u32::from_le_bytes(*b"OXSC");
const MODE_PULL: u32 = 1;
const MODE_INLINE: u32 = 2;
/// Bytes of a large message's header in the stream.
pub const LARGE_HEADER: usize = 32;

/// How long closing or aborting waits for a peer that is inside a copy out of our memory.
const UNPULL_WAIT: Duration = Duration::from_secs(2);

/// What [`crate::Stream::offer`] did with a large message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The peer copies the bytes out of our memory; they stay unchanged until
    /// [`crate::Stream::taken`] says so.
    Pull(u64),
    /// The bytes follow through [`crate::Stream::write`] as usual.
    Inline,
}

/// What arrived for a large message ([`crate::Stream::arrival`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Copy it out of the sender with [`crate::Stream::pull`], then [`crate::Stream::pulled`].
    Pull(Pull),
    /// The bytes follow in the stream.
    Inline,
}

/// A large message the receiver copies out of the sender's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull {
    addr: u64,
    /// Its length.
    pub len: usize,
}

/// A native stream's single-copy setup: the agreed threshold and how to reach the peer.
pub(crate) struct SingleCopy {
    /// Messages of at least this many bytes take the large path (both ends use one value).
    pub(crate) min: usize,
    /// Whether the peer can read this process's memory now (the sender's choice per message).
    pub(crate) peer_reads_us: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The peer's process, or `None` when it is this process (a plain copy).
    pub(crate) peer_pid: Option<u32>,
    /// Pull offers made so far (the next one's ticket).
    offered: u64,
    /// Whether a fallback to the ring was logged already.
    told: bool,
}

impl SingleCopy {
    pub(crate) fn new(
        min: usize,
        peer_reads_us: Arc<dyn Fn() -> bool + Send + Sync>,
        peer_pid: Option<u32>,
    ) -> Option<Self> {
        (min > 0).then(|| SingleCopy {
            min,
            peer_reads_us,
            peer_pid: peer_pid.filter(|&p| p != std::process::id()),
            offered: 0,
            told: false,
        })
    }
}

impl RingStream {
    fn single(&mut self) -> Result<&mut SingleCopy> {
        let (fabric, peer) = (self.fabric, &self.peer);
        self.single.as_mut().ok_or_else(|| Error::Usage {
            transport: fabric,
            reason: format!("the stream to {peer} has no single-copy path"),
        })
    }

    pub(super) fn offer_large(
        &mut self,
        ptr: *const u8,
        len: usize,
        whole: bool,
    ) -> Result<Option<Offer>> {
        let (fabric, peer) = (self.fabric, self.peer.clone());
        let sc = self.single()?;
        let pull = whole && (sc.peer_reads_us)();
        if !pull && whole && !sc.told {
            sc.told = true;
            tracing::debug!(fabric, %peer, "single-copy: the peer cannot read our memory; large messages go through the ring");
        }
        let ticket = sc.offered;
        let mut h = [0u8; LARGE_HEADER];
        h[..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&(if pull { MODE_PULL } else { MODE_INLINE }).to_le_bytes());
        h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
        h[16..24].copy_from_slice(&(ptr as u64).to_le_bytes());
        h[24..32].copy_from_slice(&ticket.to_le_bytes());
        match self.tx.write_whole(&h) {
            Err(()) => Err(self.closed(" while a large send waited")),
            Ok(false) => Ok(None),
            Ok(true) if pull => {
                self.single()?.offered += 1;
                Ok(Some(Offer::Pull(ticket)))
            }
            Ok(true) => Ok(Some(Offer::Inline)),
        }
    }

    pub(super) fn taken_large(&mut self, ticket: u64) -> Result<bool> {
        if self.tx.pulled() > ticket {
            return Ok(true);
        }
        // The peer counts its pull before it closes: seen closed, the count is read again.
        if self.tx.closed_any() && self.tx.pulled() <= ticket {
            return Err(self.closed(" before it copied a large message out of our memory"));
        }
        Ok(self.tx.pulled() > ticket)
    }

    pub(super) fn arrival_large(&mut self, len: usize) -> Result<Option<Arrival>> {
        let view = self.peek()?;
        if view.len() < LARGE_HEADER {
            // The header is written whole, but may straddle the ring's end: copy it in two.
            if view.is_empty() {
                return Ok(None);
            }
        }
        let mut h = [0u8; LARGE_HEADER];
        let first = view.len().min(LARGE_HEADER);
        h[..first].copy_from_slice(&view[..first]);
        if first < LARGE_HEADER {
            self.rx.consume(first);
            let rest = self.peek()?;
            if rest.len() < LARGE_HEADER - first {
                return Err(self.bad("a large message's header arrived in part"));
            }
            h[first..].copy_from_slice(&rest[..LARGE_HEADER - first]);
            self.rx.consume(LARGE_HEADER - first);
        } else {
            self.rx.consume(LARGE_HEADER);
        }
        let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let magic = u32::from_le_bytes(h[..4].try_into().expect("4 bytes"));
        let mode = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        if magic != MAGIC || word(8) != len as u64 {
            return Err(self.bad(&format!(
                "expected the header of a {len}-byte large message, got magic {magic:#x} length {}",
                word(8)
            )));
        }
        match mode {
            MODE_INLINE => Ok(Some(Arrival::Inline)),
            MODE_PULL => Ok(Some(Arrival::Pull(Pull {
                addr: word(16),
                len,
            }))),
            m => Err(self.bad(&format!("unknown large-message mode {m}"))),
        }
    }

    pub(super) fn pull_large(&mut self, p: &Pull, pos: usize, dst: &mut [u8]) -> Result<()> {
        if pos + dst.len() > p.len {
            return Err(Error::Usage {
                transport: self.fabric,
                reason: format!(
                    "pulling [{pos}, +{}) of a {}-byte message",
                    dst.len(),
                    p.len
                ),
            });
        }
        let pid = self.single()?.peer_pid;
        if !self.rx.set_pulling(true) {
            return Err(self.closed(" (it gave up on a large message we were copying)"));
        }
        let addr = p.addr + pos as u64;
        let r = match pid {
            Some(pid) => crate::shm::cma::read(pid, addr, dst),
            None => {
                // SAFETY: the sender of this process keeps [addr, addr + len) valid and
                // unchanged until it sees the message pulled, and before it may free it after
                // giving up it waits for our `pulling` flag to drop (`wait_unpulled`), which
                // we raised above after checking that it had not given up.
                let src = unsafe { std::slice::from_raw_parts(addr as *const u8, dst.len()) };
                dst.copy_from_slice(src);
                Ok(())
            }
        };
        self.rx.set_pulling(false);
        match r {
            Ok(()) if !self.tx.closed_any() => Ok(()),
            // What we copied may be stale: the sender gave up while we read (it closes only
            // after the message is pulled, or when it gives up).
            Ok(()) => Err(self.closed(" (it aborted while we copied a large message)")),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) || self.tx.closed_any() => {
                Err(self.closed(&format!(" (while we copied a large message: {e})")))
            }
            Err(e) => Err(Error::io(
                self.fabric,
                format!("copying a {}-byte message out of {}", p.len, self.peer),
                e,
            )),
        }
    }

    pub(super) fn pulled_large(&mut self) {
        self.rx.add_pulled();
    }

    /// After closing or aborting: a peer thread inside a plain copy out of our memory finishes
    /// before the memory may be freed. A peer process needs no wait (`process_vm_readv` on
    /// freed memory is `EFAULT`, and it checks the closed flags after each piece), and must
    /// not get one: a process killed inside a copy leaves its flag raised for good.
    pub(super) fn settle_pulls(&self) {
        let same_process = self
            .single
            .as_ref()
            .is_some_and(|s| s.peer_pid.is_none() && s.offered > self.tx.pulled());
        if same_process {
            self.tx.wait_unpulled(UNPULL_WAIT);
        }
    }

    fn bad(&self, reason: &str) -> Error {
        Error::BadFrame {
            transport: self.fabric,
            peer: self.peer.clone(),
            reason: reason.to_string(),
        }
    }
}
