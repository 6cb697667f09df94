//! The receive side of [`Engine`]: matching posted receives to arrived messages (per tag, in
//! order), copying into the caller's buffer, truncation, cancellation, and the piecewise
//! hand-out used by views.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{Engine, ProtoError, RecvId};
use crate::rdma::verbs::Verbs;

/// Per-tag order of posted receives (MPI rule: same tag, same order).
#[derive(Default)]
pub(super) struct RecvOrder {
    posted: HashMap<u64, u64>,
    matched: HashMap<u64, u64>,
    cancelled: HashSet<(u64, u64)>,
}

impl RecvOrder {
    pub(super) fn post(&mut self, tag: u64) -> u64 {
        let n = self.posted.entry(tag).or_insert(0);
        *n += 1;
        *n - 1
    }
    pub(super) fn is_next(&mut self, tag: u64, seq: u64) -> bool {
        let m = self.matched.entry(tag).or_insert(0);
        while self.cancelled.remove(&(tag, *m)) {
            *m += 1;
        }
        *m == seq
    }
    pub(super) fn take(&mut self, tag: u64) {
        *self.matched.entry(tag).or_insert(0) += 1;
    }
    /// Receives of `tag` posted before `seq` that have not taken a message nor been dropped.
    pub(super) fn ahead(&self, tag: u64, seq: u64) -> u64 {
        let matched = self.matched.get(&tag).copied().unwrap_or(0);
        let dropped = self
            .cancelled
            .iter()
            .filter(|&&(t, s)| t == tag && s >= matched && s < seq)
            .count();
        seq.saturating_sub(matched).saturating_sub(dropped as u64)
    }
    pub(super) fn cancel(&mut self, tag: u64, seq: u64) {
        if seq >= self.matched.get(&tag).copied().unwrap_or(0) {
            self.cancelled.insert((tag, seq));
        }
    }
}

impl<V: Verbs> Engine<V> {
    /// Posts a receive for the next message with `tag`.
    pub fn post_recv(&mut self, tag: u64) -> RecvId {
        RecvId {
            tag,
            seq: self.order.post(tag),
        }
    }

    /// Claims the next message of the receive's tag if it is this receive's turn.
    fn try_claim(&mut self, id: RecvId) -> Option<u64> {
        if let Some(m) = self.claims.get(&id) {
            return Some(*m);
        }
        if !self.order.is_next(id.tag, id.seq) {
            return None;
        }
        let msg = self.by_tag.get_mut(&id.tag)?.pop_front()?;
        self.order.take(id.tag);
        self.claims.insert(id, msg);
        Some(msg)
    }

    /// Advances a receive into `buf`; `Some(len)` when the whole message is there.
    pub fn recv_test(&mut self, id: RecvId, buf: &mut [u8]) -> Result<Option<usize>, ProtoError> {
        let claimed = self.try_claim(id);
        if let Some(msg) = claimed {
            let total = self.incoming.get(&msg).map_or(0, |m| m.total);
            if total > buf.len() {
                return Err(self.truncate(id, msg, buf.len()));
            }
        }
        self.progress(claimed.map(|m| (m, &mut *buf)))?;
        let Some(msg) = claimed.or_else(|| self.try_claim(id)) else {
            self.check_waiting(id)?;
            return Ok(None);
        };
        let m = self
            .incoming
            .get_mut(&msg)
            .expect("claimed messages stay until taken");
        if m.total > buf.len() {
            return Err(self.truncate(id, msg, buf.len()));
        }
        let (d, s) = (m.delivered, m.spill.len());
        buf[d..d + s].copy_from_slice(&m.spill);
        m.delivered += s;
        m.spill.clear();
        if m.delivered == m.total {
            let total = m.total;
            self.incoming.remove(&msg);
            self.claims.remove(&id);
            return Ok(Some(total));
        }
        let during = format!(
            " during a {}-byte message with tag {} ({} bytes arrived)",
            m.total, id.tag, m.received
        );
        self.check_usable(|| during)?;
        Ok(None)
    }

    fn truncate(&mut self, id: RecvId, msg: u64, buffer: usize) -> ProtoError {
        self.claims.remove(&id);
        let m = self
            .incoming
            .get_mut(&msg)
            .expect("claimed messages stay until taken");
        let message = m.total;
        m.discard = true;
        m.spill = Vec::new();
        if m.received == m.total {
            self.incoming.remove(&msg);
        }
        ProtoError::Truncated {
            peer: self.peer.clone(),
            tag: id.tag,
            message,
            buffer,
        }
    }

    /// A receive was dropped before completing: its message (if it claimed one) is discarded,
    /// otherwise the next receive of the tag takes its place.
    pub fn cancel_recv(&mut self, id: RecvId) {
        match self.claims.remove(&id) {
            Some(msg) => {
                if let Some(m) = self.incoming.get_mut(&msg) {
                    m.discard = true;
                    m.spill = Vec::new();
                    if m.received == m.total {
                        self.incoming.remove(&msg);
                    }
                }
            }
            None => self.order.cancel(id.tag, id.seq),
        }
    }

    /// For a receive without a message yet: fails if none can come any more. Messages already
    /// queued for its tag beyond those the receives ahead of it will take are still coming.
    pub fn check_waiting(&mut self, id: RecvId) -> Result<(), ProtoError> {
        let queued = self.by_tag.get(&id.tag).map_or(0, VecDeque::len) as u64;
        if queued > self.order.ahead(id.tag, id.seq) {
            return Ok(());
        }
        self.check_usable(|| format!(" while a receive with tag {} waited", id.tag))
    }

    /// Length of the message a receive claimed, if it claimed one (after making progress).
    pub fn claimed_len(&mut self, id: RecvId) -> Result<Option<usize>, ProtoError> {
        self.progress(None)?;
        Ok(self
            .try_claim(id)
            .and_then(|m| self.incoming.get(&m))
            .map(|m| m.total))
    }

    /// Takes the bytes of a claimed message that arrived since the last call (for zero-copy style
    /// views that hand data out in pieces). Returns the offset of the piece.
    pub fn take_arrived(
        &mut self,
        id: RecvId,
        out: &mut Vec<u8>,
    ) -> Result<Option<(usize, bool)>, ProtoError> {
        self.progress(None)?;
        let Some(msg) = self.try_claim(id) else {
            self.check_waiting(id)?;
            return Ok(None);
        };
        let m = self
            .incoming
            .get_mut(&msg)
            .expect("claimed messages stay until taken");
        out.clear();
        std::mem::swap(out, &mut m.spill);
        let off = m.delivered;
        m.delivered += out.len();
        let done = m.delivered == m.total;
        if done {
            self.incoming.remove(&msg);
            self.claims.remove(&id);
        } else if out.is_empty() {
            let during = format!(" during a {}-byte message with tag {}", m.total, id.tag);
            self.check_usable(|| during)?;
        }
        Ok(Some((off, done)))
    }
}
