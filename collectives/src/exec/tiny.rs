//! The tiny all-reduce: up to [`TINY_BYTES`] per rank between ranks of one host, through
//! each link's mailbox (see `oxccl_transport::stream`: one cache line carries up to 48 bytes, a few more
//! lines up to 368) instead of the stream. Used when every link is a ring, the size is also
//! within `OXCCL_SMALL_BYTES` and no `OXCCL_ALGO` is forced (ranks configured differently
//! get a mismatch, below).
//!
//! Every rank posts its whole vector, with a fingerprint of the call (dtype, op, size and the
//! PreMulSum scalar), to every peer's mailbox and reduces the peers' messages in rank order,
//! so every rank computes bit-identical results. Message `n` goes to slot `n % 2`: a rank
//! posts message `n` only after reading every peer's message `n - 1`, which every peer posted
//! only after reading ours of `n - 2`, so a slot is never overwritten while it is still read.
//!
//! Disagreement stays an error, as on the stream: a peer whose fingerprint differs is a
//! mismatch; a peer that writes to the stream while this rank waits in its mailbox is making
//! another call (calls end only once their stream bytes are read, so at the start of a call
//! the stream holds nothing older); and a rank waiting for stream bytes from a peer that
//! instead posted its next tiny message sees the same mismatch from its side
//! ([`Engine::check_tiny_mismatch`]). The wait is bounded like every other one.

use super::engine::{Engine, Waiter};
use super::header::{dtype_code, op_code, Header, KIND_SMALL_ALL_REDUCE};
use crate::error::{Error, Result};
use oxccl_kernels::{DataType, Epilogue, ReduceOp};
use oxccl_transport::stream::MailboxMessage;

/// The largest tiny all-reduce, in bytes per rank.
pub(crate) use oxccl_transport::stream::MAILBOX_BYTES as TINY_BYTES;

/// Ranks whose messages fit on the stack.
const STACK_RANKS: usize = 16;

/// The fingerprint word: what every rank must agree on besides the PreMulSum scalar.
fn fingerprint(dtype: DataType, op: ReduceOp, bytes: usize) -> u32 {
    u32::from(dtype_code(dtype)) | u32::from(op_code(op).0) << 8 | (bytes as u32) << 16
}

/// The call a fingerprint describes, as a header, for the mismatch message.
fn described(fp: u32, extra: u64, seq: u64) -> Header {
    let dtype = (fp & 0xff) as u8;
    let esize = DataType::ALL
        .get(usize::from(dtype).wrapping_sub(1))
        .map_or(1, |d| d.size());
    Header {
        kind: KIND_SMALL_ALL_REDUCE,
        dtype,
        op: (fp >> 8) as u8,
        seq,
        count: u64::from(fp >> 16) / esize as u64,
        extra,
    }
}

/// All-reduce of `bytes <= TINY_BYTES` through the mailboxes (`engine.tiny` must hold).
///
/// # Safety
/// `input` valid for reads and `output` for writes of `bytes` bytes, equal or disjoint.
pub(crate) unsafe fn all_reduce(
    engine: &mut Engine,
    others: &[usize],
    input: *const u8,
    output: *mut u8,
    bytes: usize,
    dtype: DataType,
    op: ReduceOp,
) -> Result<()> {
    debug_assert!(engine.tiny && bytes <= TINY_BYTES);
    let me = engine.rank;
    let p = others.len() + 1;
    let seq = engine.tiny_seq;
    let fp = fingerprint(dtype, op, bytes);
    let extra = op_code(op).1;
    // SAFETY: the caller's contract.
    let data = unsafe { std::slice::from_raw_parts(input, bytes) };
    for &q in others {
        if let Some(mut mailbox) = engine.links[q].as_mut().and_then(|l| l.mailbox()) {
            let posted = mailbox.post(seq, fp, extra, data);
            posted.map_err(|e| Error::invalid("all_reduce", e.to_string()))?;
        }
    }
    // Kept in the engine: no per-call zeroing or allocation.
    let mut msgs = std::mem::take(&mut engine.tiny_msgs);
    msgs.resize(p, [0u8; std::mem::size_of::<MailboxMessage>()]);
    let got = engine.collect_tiny(others, seq, fp, extra, &mut msgs, bytes);
    if let Err(e) = got {
        engine.tiny_msgs = msgs;
        return Err(engine.fail(e));
    }
    engine.tiny_seq += 1;
    msgs[me][12..12 + bytes].copy_from_slice(data);
    // SAFETY: the caller's contract: output is valid for `bytes`; `data` was copied out of
    // the input above and is not read through any more, so an in-place call is fine.
    let out = unsafe { std::slice::from_raw_parts_mut(output, bytes) };
    let (combine, epilogue) = op.split(p);
    if epilogue == Epilogue::None
        && combine == ReduceOp::Sum
        && sum_in_rank_order(dtype, out, &msgs, bytes)
    {
        engine.tiny_msgs = msgs;
        return Ok(());
    }
    // `out = rank 0's`, then `out op= ranks 1..p` in rank order: the same fold as reducing
    // all of them at once, with fewer slices for the kernel to check (it formats a name for
    // each, which costs more than the arithmetic at these sizes).
    out.copy_from_slice(&msgs[0][12..12 + bytes]);
    let mut stack: [&[u8]; STACK_RANKS] = [&[]; STACK_RANKS];
    let mut heap = Vec::new();
    let srcs: &[&[u8]] = if p <= STACK_RANKS + 1 {
        for (s, m) in stack.iter_mut().zip(&msgs[1..]) {
            *s = &m[12..12 + bytes];
        }
        &stack[..p - 1]
    } else {
        heap.extend(msgs[1..].iter().map(|m| &m[12..12 + bytes]));
        &heap
    };
    let r = oxccl_kernels::reduce_bytes_with(dtype, combine, epilogue, out, srcs)
        .map_err(|e| Error::invalid("all_reduce", e.to_string()));
    engine.tiny_msgs = msgs;
    r
}

/// `out = rank 0's + rank 1's + ...`, element by element in rank order, for the sums of the
/// 32- and 64-bit types (integers wrap), straight from the messages; `false` for other types.
///
/// This is the kernel's fold (`acc = acc + src` per source, in source order, in the type
/// itself), so it gives the same bits; it skips the kernel's entry (length checks, pointer
/// tables, backend and epilogue selection), which at a few dozen elements cost about as much as
/// the wait for the peers' line. Every rank of a call takes the same branch.
fn sum_in_rank_order(
    dtype: DataType,
    out: &mut [u8],
    msgs: &[MailboxMessage],
    bytes: usize,
) -> bool {
    fn fold<T: bytemuck::Pod, const N: usize>(
        out: &mut [u8],
        msgs: &[MailboxMessage],
        bytes: usize,
        add: impl Fn(T, T) -> T,
    ) {
        let take = |m: &MailboxMessage, at: usize| -> T {
            bytemuck::pod_read_unaligned(&m[12 + at..12 + at + N])
        };
        for at in (0..bytes).step_by(N) {
            let mut acc = take(&msgs[0], at);
            for m in &msgs[1..] {
                acc = add(acc, take(m, at));
            }
            out[at..at + N].copy_from_slice(bytemuck::bytes_of(&acc));
        }
    }
    match dtype {
        DataType::F32 => fold::<f32, 4>(out, msgs, bytes, |a, b| a + b),
        DataType::F64 => fold::<f64, 8>(out, msgs, bytes, |a, b| a + b),
        DataType::I32 | DataType::U32 => fold::<u32, 4>(out, msgs, bytes, u32::wrapping_add),
        DataType::I64 | DataType::U64 => fold::<u64, 8>(out, msgs, bytes, u64::wrapping_add),
        _ => return false,
    }
    true
}

impl Engine {
    /// Waits for tiny message `seq` of every peer in `others` and copies it to `msgs[peer]`.
    fn collect_tiny(
        &mut self,
        others: &[usize],
        seq: u64,
        fp: u32,
        extra: u64,
        msgs: &mut [MailboxMessage],
        bytes: usize,
    ) -> Result<()> {
        let op = self.op;
        let mut left = others.len();
        // Peers still to hear from are the first `left` of `order`.
        let mut order_stack = [0usize; STACK_RANKS];
        let mut order_heap = Vec::new();
        let order: &mut [usize] = if others.len() <= STACK_RANKS {
            order_stack[..others.len()].copy_from_slice(others);
            &mut order_stack[..others.len()]
        } else {
            order_heap.extend_from_slice(others);
            &mut order_heap
        };
        let mut w = Waiter::new();
        while left > 0 {
            let mut progressed = false;
            let mut i = 0;
            while i < left {
                let q = order[i];
                let Some(mailbox) = self.links[q].as_mut().and_then(|l| l.mailbox()) else {
                    unreachable!("the tiny path runs only where every link has a mailbox")
                };
                if mailbox.poll(seq, &mut msgs[q], 12 + bytes) {
                    let got_fp = u32::from_le_bytes(msgs[q][..4].try_into().expect("4"));
                    let got_extra = u64::from_le_bytes(msgs[q][4..12].try_into().expect("8"));
                    if (got_fp, got_extra) != (fp, extra) {
                        let mine = described(fp, extra, seq);
                        return mine.check(&described(got_fp, got_extra, seq), op, q);
                    }
                    progressed = true;
                    left -= 1;
                    order.swap(i, left);
                } else {
                    let Some(mut mailbox) = self.links[q].as_mut().and_then(|l| l.mailbox()) else {
                        unreachable!("the tiny path runs only where every link has a mailbox")
                    };
                    // Stream bytes mean the peer is in another call, unless it posted right
                    // after writing them (then the mailbox, read again, has our message).
                    let pending = match mailbox.stream_pending() {
                        Ok(p) => p,
                        // A peer that posted our message and then finished and closed: its
                        // post came before its close, so the mailbox, read again, has it.
                        Err(_) if mailbox.posted(seq) => continue,
                        Err(source) => {
                            return Err(Error::PeerFailed {
                                op,
                                peer: q,
                                source,
                            })
                        }
                    };
                    let posted = mailbox.posted(seq);
                    // Bytes for a receive posted earlier (non-blocking, or in a group) are
                    // not another call: they wait for that receive's job.
                    if pending && !posted && self.recvq[q].is_empty() {
                        // Receipts of receives the peer posted are not another call: with
                        // nothing queued from it, its stream is between messages.
                        if self.take_receipts(q)? {
                            progressed = true;
                            continue;
                        }
                        if self.receipt_unfinished(q) {
                            i += 1;
                            continue;
                        }
                        return Err(Error::Mismatch {
                            op,
                            peer: q,
                            mine: described(fp, extra, seq).describe(),
                            theirs: "another call (it wrote to the stream)".into(),
                        });
                    }
                    i += 1;
                }
            }
            // Queued sends and receives (non-blocking ones) move on while we wait.
            if self.has_queued() {
                progressed |= self.progress_all()?;
            }
            if progressed {
                w.progress();
            } else if left > 0 {
                let blame = order[0];
                self.idle(&mut w, &order[..left], Some(blame))?;
            }
        }
        Ok(())
    }

    /// Called while a stream call waits: a peer we expect stream bytes from, whose stream is
    /// empty but who posted the next tiny all-reduce, is in another call.
    pub(super) fn check_tiny_mismatch(&mut self) -> Result<()> {
        if !self.tiny {
            return Ok(());
        }
        let seq = self.tiny_seq;
        for q in 0..self.links.len() {
            if !self.current_expects(q) {
                continue;
            }
            let Some(mut mailbox) = self.links[q].as_mut().and_then(|l| l.mailbox()) else {
                continue;
            };
            // The mailbox first: a peer that posted after writing to the stream has its
            // stream bytes visible by then.
            if mailbox.posted(seq) && matches!(mailbox.stream_pending(), Ok(false)) {
                return Err(Error::Mismatch {
                    op: self.op,
                    peer: q,
                    mine: self.mine.describe(),
                    theirs: format!("a tiny all_reduce as small call #{seq}"),
                });
            }
        }
        Ok(())
    }
}
