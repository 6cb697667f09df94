//! Runs one rank's program of a [`Schedule`](crate::schedule::Schedule) on the engine.
//!
//! The work buffer of the schedule is `work` (the output where the collective allows, else
//! scratch). Blocks the rank starts with are not copied into it first: until a block is
//! written in `work` ("materialised"), sends read it from the input and reductions read their
//! local operand from the input and write the result to `work`, which saves a full pass over
//! memory. The caller copies whatever is still unmaterialised at the end.

use super::engine::{Engine, RecvJob, RecvKind, Until};
use super::plan::Plan;
use crate::error::Error;
use crate::schedule::{BlockLayout, Blocks, Collective, Op};

/// The memory of one call, in elements of `esize` bytes.
pub(crate) struct Buffers {
    /// The schedule's work buffer, `elems` elements.
    pub work: *mut u8,
    /// Where the rank's initial data is, covering elements `in_lo..in_hi` of the work buffer;
    /// null or equal to `work` when there is nothing to read lazily.
    pub input: *const u8,
    pub in_lo: usize,
    pub in_hi: usize,
    pub elems: usize,
    pub esize: usize,
    /// When the schedule's ownership is not in rank order (hierarchical reduce-scatter):
    /// the part size `c` and, per part of the work buffer, the part of the input it reads.
    pub parts: Option<(usize, Vec<usize>)>,
}

impl Buffers {
    fn at(&self, e: usize) -> *mut u8 {
        self.work.wrapping_add(e * self.esize)
    }

    pub(crate) fn input_at(&self, e: usize) -> *const u8 {
        let e = match &self.parts {
            Some((c, map)) => map[e / c] * c + e % c,
            None => e,
        };
        self.input.wrapping_add((e - self.in_lo) * self.esize)
    }

    /// Which input part element `e` of the work buffer reads (0 without a part map).
    fn part(&self, e: usize) -> usize {
        self.parts.as_ref().map_or(0, |(c, _)| e / c)
    }
}

/// Per block: true once `work` holds the block's value.
pub(crate) fn initial_materialized(plan: &Plan, b: &Buffers) -> Vec<bool> {
    initial_materialized_in(&BlockLayout::even(b.elems, plan.schedule.blocks), b)
}

/// [`initial_materialized`] with the blocks where `layout` puts them.
pub(crate) fn initial_materialized_in(layout: &BlockLayout, b: &Buffers) -> Vec<bool> {
    let lazy_possible = !b.input.is_null() && !std::ptr::eq(b.input, b.work.cast_const());
    (0..layout.blocks())
        .map(|i| {
            let r = layout.block(i);
            !(lazy_possible && r.start >= b.in_lo && r.end <= b.in_hi && !r.is_empty())
        })
        .collect()
}

/// Maximal runs of `blocks` that are contiguous in the layout and share one materialised state
/// (and, with a part map, one input part, so that a lazy run reads contiguous input):
/// (elements, materialised). Empty blocks are skipped.
fn runs<'a>(
    blocks: Blocks,
    mat: &'a [bool],
    b: &'a Buffers,
    layout: &'a BlockLayout,
) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + 'a {
    let mut i = blocks.start as usize;
    let end = blocks.end() as usize;
    let key = move |k: usize, r: &std::ops::Range<usize>| (mat[k], b.part(r.start));
    std::iter::from_fn(move || {
        while i < end && layout.block(i).is_empty() {
            i += 1;
        }
        if i >= end {
            return None;
        }
        let mut run = layout.block(i);
        let state = key(i, &run);
        i += 1;
        while i < end {
            let next = layout.block(i);
            if next.is_empty() {
                i += 1;
            } else if next.start == run.end && key(i, &next) == state {
                run.end = next.end;
                i += 1;
            } else {
                break;
            }
        }
        Some((run, state.0))
    })
}

fn pad_for(bytes: usize) -> usize {
    (8 - bytes % 8) % 8
}

/// Executes `plan` (headers already exchanged by the caller); leaves the engine idle.
pub(crate) fn run(
    engine: &mut Engine,
    plan: &Plan,
    b: &Buffers,
    mat: &mut [bool],
) -> Result<(), Error> {
    let layout = BlockLayout::even(b.elems, plan.schedule.blocks);
    run_in(engine, plan, b, &layout, mat)
}

/// [`run`] with the blocks where `layout` puts them in the work buffer (and, for lazy blocks,
/// in the input, at the same element offsets less `b.in_lo`).
pub(crate) fn run_in(
    engine: &mut Engine,
    plan: &Plan,
    b: &Buffers,
    layout: &BlockLayout,
    mat: &mut [bool],
) -> Result<(), Error> {
    // Which of the call's messages may take the single-copy path (`Engine::pull_from`). Both
    // ends of every message must decide alike (it sets the message's framing), so only from
    // what every rank's copy of the schedule says: the lanes of all programs, not this rank's.
    // Not with lanes: a lane's receives are posted only after its previous step, so a send
    // waiting to be pulled could wait on a lane that waits on it. Not for reductions: a pulled
    // piece is copied and then reduced by the receiver alone, where through the ring the
    // sender's copy and the receiver's reduction overlap on two cores (all-reduce at 2 ranks,
    // 1-64 MiB: 1.7-2x slower pulled, measured); their messages carry no offer header either.
    // The others only from `COLLECTIVE_SINGLE_COPY_MIN`: below it a collective's ring writes
    // take the stores chosen for the whole call (`exec/stores.rs`), which served all-to-all-v
    // better than a per-message offer (`crate::options::COLLECTIVE_SINGLE_COPY_MIN`).
    let reduces = matches!(
        plan.schedule.collective,
        Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce { .. }
    );
    engine.pull_from = if plan.schedule.lanes() == 1 && !reduces {
        crate::options::COLLECTIVE_SINGLE_COPY_MIN
    } else {
        usize::MAX
    };
    let r = run_program(engine, plan, b, layout, mat);
    engine.pull_from = 0;
    r
}

fn run_program(
    engine: &mut Engine,
    plan: &Plan,
    b: &Buffers,
    layout: &BlockLayout,
    mat: &mut [bool],
) -> Result<(), Error> {
    if layout.blocks() != plan.schedule.blocks {
        return Err(Error::Protocol {
            op: engine.op,
            peer: engine.rank,
            detail: format!(
                "a layout of {} blocks for a schedule of {}",
                layout.blocks(),
                plan.schedule.blocks
            ),
        });
    }
    let prog = &plan.schedule.programs[plan.rank];
    let mut flat = 0;
    if prog.lanes() == 1 {
        for ops in prog.steps() {
            for op in ops {
                let is_final = plan.final_op[flat];
                flat += 1;
                post(engine, b, mat, layout, *op, is_final)?;
            }
            engine.drive(Until::Step)?;
        }
        return engine.drive(Until::All);
    }
    // Lanes: steps are posted in program order (so messages keep their per-pair order), each
    // once its own lane's previous step has received everything; the other lanes' steps stay
    // in flight meanwhile. `waits[l]`: per peer, the receive count lane `l`'s step in flight
    // needs (receives from one peer finish in the order posted).
    let mut waits: Vec<Vec<(usize, u64)>> = vec![Vec::new(); prog.lanes()];
    for (i, ops) in prog.steps().enumerate() {
        let lane = prog.lane(i) as usize;
        for &(peer, count) in &waits[lane] {
            engine.drive(Until::Received(peer, count))?;
        }
        waits[lane].clear();
        for op in ops {
            let is_final = plan.final_op[flat];
            flat += 1;
            post(engine, b, mat, layout, *op, is_final)?;
            if let Some(from) = op.recv_from() {
                let from = from as usize;
                let count = engine.recvs_posted(from);
                match waits[lane].iter_mut().find(|w| w.0 == from) {
                    Some(w) => w.1 = count,
                    None => waits[lane].push((from, count)),
                }
            }
        }
    }
    engine.drive(Until::All)
}

fn post(
    engine: &mut Engine,
    b: &Buffers,
    mat: &mut [bool],
    layout: &BlockLayout,
    op: Op,
    is_final: bool,
) -> Result<(), Error> {
    let blocks = op.blocks();
    let total = layout.len(blocks) * b.esize;
    let pad = pad_for(total);
    match op {
        Op::Send { to, blocks } => {
            // One message in as many pieces as its bytes have places here (the receiver's
            // may differ): the first piece carries the message's length.
            let mut left = total;
            for (r, m) in runs(blocks, mat, b, layout) {
                let len = r.len() * b.esize;
                let msg = if left == total { total } else { 0 };
                left -= len;
                let ptr = if m {
                    b.at(r.start).cast_const()
                } else {
                    b.input_at(r.start)
                };
                let pad = if left == 0 { pad } else { 0 };
                engine.send_piece(to as usize, ptr, len, len, pad, msg);
            }
        }
        Op::Recv { from, .. } | Op::RecvCopySend { from, .. } => {
            // One message, landing in as many places as the layout has runs; only the last
            // piece takes the message's padding.
            let mut left = total;
            for r in layout.runs(blocks) {
                let len = r.len() * b.esize;
                if len == 0 {
                    continue;
                }
                let msg = if left == total { total } else { 0 };
                left -= len;
                let pad = if left == 0 { pad } else { 0 };
                let fwd = op.send_to().map(|to| {
                    let id = engine.send_piece(to as usize, b.at(r.start), len, 0, pad, msg);
                    (to as usize, id)
                });
                engine.recv_piece(
                    from as usize,
                    RecvJob {
                        kind: RecvKind::Copy,
                        dst: b.at(r.start),
                        len,
                        pos: 0,
                        pad,
                        fwd,
                        in_step: true,
                        cleared: false,
                    },
                    msg,
                );
            }
            mat[blocks.range()].iter_mut().for_each(|m| *m = true);
        }
        Op::RecvReduce { from, .. } | Op::RecvReduceSend { from, .. } => {
            let mut left = total;
            let pieces: Vec<_> = runs(blocks, mat, b, layout).collect();
            for (r, m) in pieces {
                let len = r.len() * b.esize;
                if len == 0 {
                    continue;
                }
                let msg = if left == total { total } else { 0 };
                left -= len;
                let pad = if left == 0 { pad } else { 0 };
                let local = if m {
                    b.at(r.start).cast_const()
                } else {
                    b.input_at(r.start)
                };
                let fwd = op.send_to().map(|to| {
                    let id = engine.send_piece(to as usize, b.at(r.start), len, 0, pad, msg);
                    (to as usize, id)
                });
                engine.recv_piece(
                    from as usize,
                    RecvJob {
                        kind: RecvKind::Reduce {
                            local,
                            epilogue: is_final,
                        },
                        dst: b.at(r.start),
                        len,
                        pos: 0,
                        pad,
                        fwd,
                        in_step: true,
                        cleared: false,
                    },
                    msg,
                );
            }
            mat[blocks.range()].iter_mut().for_each(|m| *m = true);
        }
        Op::Copy { from, to } => {
            let (src, dst) = (layout.len(from), layout.len(to));
            if src != dst {
                return Err(Error::Protocol {
                    op: engine.op,
                    peer: engine.rank,
                    detail: format!("schedule copies {src} elements onto {dst}"),
                });
            }
            for r in layout.runs(to) {
                engine.drive(Until::NoSendReads(b.at(r.start), r.len() * b.esize))?;
            }
            // Read each block from where it is (materialised or still in the input).
            for (k, i) in (from.start..from.end()).enumerate() {
                let s = layout.block(i as usize);
                let d = layout.block(to.start as usize + k);
                let n = s.len().min(d.len()) * b.esize;
                let sp = if mat[i as usize] {
                    b.at(s.start).cast_const()
                } else {
                    b.input_at(s.start)
                };
                // SAFETY: both ranges lie inside their buffers (block ranges of `elems`
                // elements) and do not overlap (the schedule's Copy contract; distinct buffers
                // when the source is the input); no queued send reads the destination.
                unsafe { std::ptr::copy(sp, b.at(d.start), n) };
            }
            mat[to.range()].iter_mut().for_each(|m| *m = true);
        }
    }
    Ok(())
}
