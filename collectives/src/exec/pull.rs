//! The engine's side of the single-copy path (`oxccl_transport::stream::Stream::offer`): a
//! large message's receive copies straight out of the sender's memory, piece by piece.

use super::engine::{Engine, RecvKind};
use crate::error::Error;
use oxccl_transport::stream::{Pull, PULL_PIECE};

/// Where a send job stands on the single-copy path. Offered jobs (`Pull`) stay at the front
/// of their peer's queue until pulled, in offer order, while the jobs behind them go on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SendLarge {
    /// Not looked at yet (or a message below the stream's threshold).
    Fresh,
    /// Its bytes go through the stream (below the threshold, or the header said so).
    Stream,
    /// The peer copies it out of our memory; done when the stream says `taken`.
    Pull(u64),
}

/// Where the front receive job of a peer stands on the single-copy path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RecvLarge {
    Fresh,
    Stream,
    /// The message is pulled; the front job holds its bytes from this offset on (a message
    /// that lands in several places is several jobs).
    Pull(Pull, usize),
}

impl Engine {
    /// Copies the next piece of the front receive job of `peer` straight out of the sender's
    /// memory into its destination (the job's bytes start at `base` in the message).
    pub(super) fn pull_piece(&mut self, peer: usize, p: &Pull, base: usize) -> Result<(), Error> {
        let op = self.op;
        let job = &mut self.recvq[peer].front_mut().expect("front").1;
        let link = self.links[peer]
            .as_mut()
            .expect("a job for a peer without a link");
        if !matches!(job.kind, RecvKind::Copy) {
            // Headers are below every threshold, and reductions' messages never carry an
            // offer (`Engine::pull_from`): the peer is out of step.
            return Err(Error::Protocol {
                op,
                peer,
                detail: "a pull offer for a message that may not be pulled".into(),
            });
        }
        let take = PULL_PIECE.min(job.len - job.pos);
        // SAFETY: [dst, dst + len) is writable, owned by the running operation, and no queued
        // send reads it (the job was cleared before it started).
        let dst = unsafe { std::slice::from_raw_parts_mut(job.dst.add(job.pos), take) };
        link.stream()
            .pull(p, base + job.pos, dst)
            .map_err(|source| Error::PeerFailed { op, peer, source })?;
        job.pos += take;
        if let Some((to, id)) = job.fwd {
            let produced = job.pos;
            if let Some(s) = self.sendq[to].iter_mut().find(|s| s.id == id) {
                s.avail = produced;
            }
        }
        Ok(())
    }
}
