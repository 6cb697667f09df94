//! Moving bytes: the front send job of each peer into its link, the front receive job out of
//! it (copied or reduced into place, or pulled straight from the sender's memory on the
//! single-copy path, `exec/pull.rs`). `mod.rs` keeps the queues and the waits around them.

use super::{Engine, RecvKind, Reduction, ZEROS};
use crate::error::Error;
use crate::exec::header::Header;
use crate::exec::pull::{RecvLarge, SendLarge};
use crate::link::Link;
use oxccl_kernels::{DataType, Epilogue, ReduceOp};
use oxccl_transport::stream::{Arrival, Offer, Offering};

/// Whether a message of `msg` bytes travels as an offer (a header, then a pull or the bytes)
/// on a link whose agreed single-copy threshold is `single_copy_min`, queued with
/// [`Engine::pull_from`] `pull_from`. Sender and receiver both ask this, with what their
/// copies of the schedule and the link say, so they agree on the message's framing.
fn offered(pull_from: usize, single_copy_min: Option<usize>, msg: usize) -> bool {
    msg >= pull_from && single_copy_min.is_some_and(|m| msg >= m)
}

impl Engine {
    pub(super) fn link(&mut self, peer: usize) -> &mut Link {
        self.links[peer]
            .as_mut()
            .expect("a job for a peer without a link")
    }

    pub(super) fn progress_sends(&mut self, peer: usize) -> Result<bool, Error> {
        let op = self.op;
        let failed = |source| Error::PeerFailed { op, peer, source };
        let mut progressed = false;
        // Offers the peer has pulled are done, oldest first (it pulls them in stream order).
        while let Some(SendLarge::Pull(ticket)) = self.sendq[peer].front().map(|j| j.large) {
            if !self.link(peer).stream().taken(ticket).map_err(failed)? {
                break;
            }
            let done = self.sendq[peer].pop_front().expect("front exists");
            self.uncount(done.owner);
            progressed = true;
        }
        // Offered jobs wait at the front for the peer's pull, with their headers already in the
        // stream; the jobs behind them go on (several pulls in flight per peer, so the peer's
        // pull of one overlaps our offer of the next). `at`: the first job not offered.
        let mut at = self.sendq[peer]
            .iter()
            .take_while(|j| matches!(j.large, SendLarge::Pull(_)))
            .count();
        while let Some(job) = self.sendq[peer].get_mut(at) {
            let (ptr, avail, pos, len, pad, msg) =
                (job.ptr, job.avail, job.pos, job.len, job.pad, job.msg);
            let link = self.links[peer]
                .as_mut()
                .expect("a job for a peer without a link");
            if job.large == SendLarge::Fresh {
                // The receiver expects the offer's header exactly when we send it: both ends
                // decide from `pull_from` and the message's length (whatever its pieces).
                // Only a message in one piece may be pulled; one in several says "inline".
                let large = job.inline.is_none()
                    && offered(job.pull_from, link.stream().single_copy_min(), msg);
                if large {
                    let how = Offering {
                        whole: msg == len && avail == len,
                        alongside: job.alongside,
                    };
                    // SAFETY: [ptr, ptr + len) stays readable and unchanged while the job is
                    // queued (the queuing operation's contract), and the job stays queued
                    // until the peer has taken it (or the engine fails, which aborts the
                    // link, and the abort waits for a copy in progress). The address is only
                    // read when the offer is whole (then `msg == len`).
                    let offer = unsafe { link.stream().offer(ptr, msg, how) };
                    match offer.map_err(failed)? {
                        None => break,
                        Some(Offer::Pull(ticket)) => {
                            job.large = SendLarge::Pull(ticket);
                            at += 1;
                            progressed = true;
                            continue;
                        }
                        Some(Offer::Inline) => job.large = SendLarge::Stream,
                    }
                    progressed = true;
                } else {
                    job.large = SendLarge::Stream;
                }
            }
            let chunk: &[u8] = if let Some(hdr) = &job.inline {
                &hdr[pos..]
            } else if pos < len {
                if avail == pos {
                    break;
                }
                // SAFETY: [ptr, ptr + avail) is readable and stays unchanged while the job is
                // queued (the queuing operation's contract; writers check `overlaps_send`).
                unsafe { std::slice::from_raw_parts(ptr.add(pos), avail - pos) }
            } else {
                &ZEROS[..len + pad - pos]
            };
            let n = link.write(chunk).map_err(failed)?;
            if n == 0 {
                break;
            }
            progressed = true;
            job.pos += n;
            if job.pos == job.len + job.pad {
                let done = self.sendq[peer].remove(at).expect("the job exists");
                self.uncount(done.owner);
            } else {
                break;
            }
        }
        Ok(progressed)
    }

    /// True when a queued send (other than `except`) still reads bytes in `[ptr, ptr + len)`.
    pub(super) fn overlaps_send(&self, ptr: *const u8, len: usize, except: Option<u64>) -> bool {
        let (a0, a1) = (ptr as usize, ptr as usize + len);
        self.active.iter().any(|&p| {
            self.sendq[p].iter().any(|s| {
                if Some(s.id) == except || s.inline.is_some() {
                    return false;
                }
                let (b0, b1) = (s.ptr as usize + s.pos.min(s.len), s.ptr as usize + s.len);
                a0 < b1 && b0 < a1
            })
        })
    }

    pub(super) fn progress_recvs(&mut self, peer: usize) -> Result<bool, Error> {
        let op = self.op;
        let esize = self.esize;
        let mut progressed = false;
        while let Some((_, job)) = self.recvq[peer].front() {
            if job.pos == 0 && matches!(job.kind, RecvKind::Header(_)) {
                // A message boundary: receipts may stand before the header.
                progressed |= self.take_receipts(peer)?;
                if !self.message_next(peer) {
                    break;
                }
            }
            let Some((_, job)) = self.recvq[peer].front() else {
                break;
            };
            if !job.cleared {
                let own = job.fwd.map(|(_, id)| id);
                if self.overlaps_send(job.dst, job.len, own) {
                    break;
                }
                self.recvq[peer].front_mut().expect("front").1.cleared = true;
            }
            if self.rx_large[peer] == RecvLarge::Fresh {
                let (tag, job) = self.recvq[peer].front().expect("front");
                let header = matches!(job.kind, RecvKind::Header(_));
                let (pull_from, msg) = (tag.pull_from, tag.msg);
                let link = self.links[peer]
                    .as_mut()
                    .expect("a job for a peer without a link");
                // As the sender decided (`progress_sends`): an offer's header comes first.
                let large = !header && offered(pull_from, link.stream().single_copy_min(), msg);
                self.rx_large[peer] = if large {
                    let arrival = link
                        .stream()
                        .arrival(msg)
                        .map_err(|source| Error::PeerFailed { op, peer, source })?;
                    match arrival {
                        None => break,
                        Some(Arrival::Inline) => RecvLarge::Stream,
                        Some(Arrival::Pull(p)) => RecvLarge::Pull(p, 0),
                    }
                } else {
                    RecvLarge::Stream
                };
                progressed |= large;
            }
            if let RecvLarge::Pull(p, base) = self.rx_large[peer] {
                self.pull_piece(peer, &p, base)?;
                progressed = true;
                let job = &self.recvq[peer].front().expect("front").1;
                if job.pos < job.len {
                    // One piece per pass: the other peers' offers and pulls go on in between
                    // (an all-to-all's offers to every peer go out before its first pull ends).
                    break;
                }
                // The message's next piece (ours in several places) pulls on from here.
                let base = base + job.len;
                self.rx_large[peer] = if base < p.len {
                    RecvLarge::Pull(p, base)
                } else {
                    self.link(peer).stream().pulled();
                    RecvLarge::Fresh
                };
                let (tag, job) = self.recvq[peer].pop_front().expect("front");
                if job.in_step {
                    self.step_left -= 1;
                }
                self.uncount(tag.op);
                continue;
            }
            let reduction = self.reduction;
            let stream = self.stream;
            let link = self.links[peer]
                .as_mut()
                .expect("a job for a peer without a link");
            let view = link
                .peek()
                .map_err(|source| Error::PeerFailed { op, peer, source })?;
            if view.is_empty() {
                break;
            }
            let job = &mut self.recvq[peer].front_mut().expect("front").1;
            let n;
            if job.pos < job.len {
                let mut take = view.len().min(job.len - job.pos);
                match &job.kind {
                    RecvKind::Header(_) => {
                        self.hdr_buf[peer][job.pos..job.pos + take].copy_from_slice(&view[..take]);
                    }
                    RecvKind::Copy => {
                        // SAFETY: [dst, dst + len) is writable, owned by the running operation,
                        // and no queued send reads it (cleared above).
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(job.dst.add(job.pos), take) };
                        copy(stream, dst, &view[..take]);
                    }
                    RecvKind::Reduce { local, epilogue } => {
                        take -= take % esize;
                        if take == 0 {
                            break;
                        }
                        let r = reduction.expect("a reduce job without a reduction");
                        let epi = if *epilogue {
                            r.epilogue
                        } else {
                            Epilogue::None
                        };
                        reduce_into(r, epi, *local, job.dst, job.pos, &view[..take]).map_err(
                            |e| Error::Protocol {
                                op,
                                peer,
                                detail: e,
                            },
                        )?;
                    }
                }
                n = take;
                job.pos += take;
                if let Some((to, id)) = job.fwd {
                    let produced = job.pos;
                    if let Some(s) = self.sendq[to].iter_mut().find(|s| s.id == id) {
                        s.avail = produced;
                    }
                }
            } else {
                n = view.len().min(job.len + job.pad - job.pos);
                job.pos += n;
            }
            self.link(peer).consume(n);
            progressed = true;
            let job = &self.recvq[peer].front().expect("front").1;
            if job.pos < job.len + job.pad {
                // Partial: the link has nothing more contiguous right now.
                continue;
            }
            self.rx_large[peer] = RecvLarge::Fresh;
            let (tag, job) = self.recvq[peer].pop_front().expect("front");
            if let RecvKind::Header(expect) = job.kind {
                let got = Header::from_bytes(&self.hdr_buf[peer]);
                expect.check(&got, op, peer)?;
            }
            if job.in_step {
                self.step_left -= 1;
            }
            self.recvs_done[peer] += 1;
            self.uncount(tag.op);
        }
        Ok(progressed)
    }
}

/// A received piece (or a rank's own part, `calls::copy_own_part`) into its destination. Past
/// the cache size, streaming stores skip the read-for-ownership of every destination line (the
/// data is not read again soon).
pub(in crate::exec) fn copy(stream: bool, dst: &mut [u8], src: &[u8]) {
    if stream && dst.len() >= 4096 {
        let opts = oxccl_kernels::Options {
            stores: oxccl_kernels::StoreMode::Streaming,
            ..oxccl_kernels::Options::default()
        };
        let one = oxccl_kernels::reduce_copy_bytes_opts(
            &opts,
            DataType::U8,
            ReduceOp::Sum,
            Epilogue::None,
            &[src],
            &mut [dst],
        );
        if one.is_ok() {
            return;
        }
    }
    dst.copy_from_slice(src);
}

/// `dst[pos..] = local[pos..] op recv` (Reduce with `local == dst` reduces in place).
fn reduce_into(
    r: Reduction,
    epi: Epilogue,
    local: *const u8,
    dst: *mut u8,
    pos: usize,
    recv: &[u8],
) -> Result<(), String> {
    let n = recv.len();
    if std::ptr::eq(local, dst.cast_const()) {
        // SAFETY: [dst + pos, + n) is inside the job's destination, exclusively ours for the
        // duration of the call; `recv` is a view into the link, disjoint from it.
        let d = unsafe { std::slice::from_raw_parts_mut(dst.add(pos), n) };
        oxccl_kernels::reduce_bytes_with(r.dtype, r.combine, epi, d, &[recv])
    } else {
        // SAFETY: `local` and `dst` are distinct buffers of at least pos + n bytes (the job's
        // contract); dst is exclusively ours, local only read.
        let (l, d) = unsafe {
            (
                std::slice::from_raw_parts(local.add(pos), n),
                std::slice::from_raw_parts_mut(dst.add(pos), n),
            )
        };
        oxccl_kernels::reduce_copy_bytes_with(r.dtype, r.combine, epi, &[l, recv], &mut [d])
    }
    .map_err(|e| format!("reduction failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::offered;
    use crate::COLLECTIVE_SINGLE_COPY_MIN as COLL;
    use oxccl_transport::stream::DEFAULT_SINGLE_COPY_MIN as P2P;

    #[test]
    fn sends_offer_from_the_link_threshold_and_collectives_from_theirs() {
        // A send or receive (`pull_from` 0): from the link's threshold.
        assert!(!offered(0, Some(P2P), P2P - 1));
        assert!(offered(0, Some(P2P), P2P));
        // A collective's message: from the larger of the two thresholds.
        assert!(!offered(COLL, Some(P2P), COLL - 1));
        assert!(offered(COLL, Some(P2P), COLL));
        assert!(!offered(COLL, Some(2 * COLL), 2 * COLL - 1));
        assert!(offered(COLL, Some(2 * COLL), 2 * COLL));
        // Never on a link without the path, nor for a schedule that must not pull.
        assert!(!offered(0, None, usize::MAX));
        assert!(!offered(usize::MAX, Some(P2P), 1 << 40));
    }
}
