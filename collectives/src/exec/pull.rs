//! The engine's side of the single-copy path (`oxccl_transport::stream::Stream::offer`): a
//! large message's receive copies straight out of the sender's memory, piece by piece.

use super::engine::{reduce_into, Engine, RecvKind};
use crate::error::Error;
use oxccl_kernels::Epilogue;
use oxccl_transport::stream::{Pull, PULL_PIECE};

/// Bytes a pulled reducing receive copies into cache-resident scratch before reducing them.
const REDUCE_PIECE: usize = 64 << 10;

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
    /// memory (the job's bytes start at `base` in the message): into the destination for a
    /// copy, through cache-sized scratch for a reduction.
    pub(super) fn pull_piece(&mut self, peer: usize, p: &Pull, base: usize) -> Result<(), Error> {
        let op = self.op;
        let reduction = self.reduction;
        let job = &mut self.recvq[peer].front_mut().expect("front").1;
        let link = self.links[peer]
            .as_mut()
            .expect("a job for a peer without a link");
        let failed = |source| Error::PeerFailed { op, peer, source };
        let take;
        match job.kind {
            RecvKind::Header(_) => unreachable!("headers are below every single-copy threshold"),
            RecvKind::Copy => {
                take = PULL_PIECE.min(job.len - job.pos);
                // SAFETY: [dst, dst + len) is writable, owned by the running operation, and no
                // queued send reads it (the job was cleared before it started).
                let dst = unsafe { std::slice::from_raw_parts_mut(job.dst.add(job.pos), take) };
                link.stream().pull(p, base + job.pos, dst).map_err(failed)?;
            }
            RecvKind::Reduce { local, epilogue } => {
                let r = reduction.expect("a reduce job without a reduction");
                // A whole number of elements (REDUCE_PIECE is a multiple of every size).
                take = REDUCE_PIECE.min(job.len - job.pos);
                if self.pull_scratch.len() < REDUCE_PIECE {
                    self.pull_scratch.resize(REDUCE_PIECE, 0);
                }
                let scratch = &mut self.pull_scratch[..take];
                link.stream()
                    .pull(p, base + job.pos, scratch)
                    .map_err(failed)?;
                let epi = if epilogue { r.epilogue } else { Epilogue::None };
                reduce_into(r, epi, local, job.dst, job.pos, scratch).map_err(|e| {
                    Error::Protocol {
                        op,
                        peer,
                        detail: e,
                    }
                })?;
            }
        }
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
