//! The byte-level bodies of gather, scatter and the uneven collectives (`all_gather_v`,
//! `reduce_scatter_v`, `all_to_all_v`), run on the communicator's state at the call's turn.
//!
//! Each runs a schedule of its collective (gather, scatter, all-gather, reduce-scatter,
//! all-to-all) like the even calls of `calls.rs`, with a [`BlockLayout`] that puts each
//! rank's part where its count and displacement say: part `q` of `p` is blocks
//! `q * chunks..(q + 1) * chunks` of the schedule (`(s, d)` is part `s * p + d` for
//! all-to-all). Parts this rank sends from its input are read there lazily; the rest lands in
//! the output where the collective's output is laid out as the schedule's work buffer (gather's
//! root, all-gather, all-to-all), else in scratch, packed, and is copied out at the end.
//!
//! Callers (`ops_v.rs`) have checked every count and displacement: parts in range, not
//! overlapping, and the buffers as large as they say.

use super::calls::{begin, copy_own_part, finish_copy, header, reduction};
use super::engine::Reduction;
use super::header::{
    Header, KIND_ALL_GATHER_V, KIND_ALL_TO_ALL_V, KIND_GATHER, KIND_REDUCE_SCATTER_V, KIND_SCATTER,
};
use super::plan::Plan;
use super::run::{self, Buffers};
use super::{select, Group, State};
use crate::error::{Error, Result};
use crate::schedule::{BlockLayout, Blocks, Collective};
use oxccl_kernels::{DataType, Epilogue, ReduceOp};
use std::sync::Arc;

/// `(start, count)` in elements of each rank's part of a buffer.
pub(crate) type Parts = [(usize, usize)];

/// The parts of `counts` packed one after another from 0.
pub(crate) fn packed(counts: impl IntoIterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut at = 0;
    counts
        .into_iter()
        .map(|c| {
            at += c;
            (at - c, c)
        })
        .collect()
}

/// A 64-bit digest of the counts every rank must agree on (FNV-1a), for the call header: ranks
/// called with different counts get [`Error::Mismatch`] instead of corrupt data.
fn digest(counts: impl IntoIterator<Item = usize>) -> u64 {
    counts.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The header (count = the parts' total, extra = a digest of the counts and `salt`) and the plan
/// of an uneven call whose parts hold `counts` elements.
#[allow(clippy::too_many_arguments)]
fn header_and_plan(
    inner: &dyn Group,
    st: &mut State,
    op: &'static str,
    kind: u8,
    collective: Collective,
    counts: impl Iterator<Item = usize> + Clone,
    dtype: DataType,
    red: Option<ReduceOp>,
    salt: u64,
) -> Result<(Header, Arc<Plan>)> {
    let hdr = header(
        kind,
        Some(dtype),
        red,
        counts.clone().sum(),
        digest(counts.clone()) ^ salt,
    );
    let part_bytes: Vec<usize> = counts.map(|c| c * dtype.size()).collect();
    Ok((hdr, plan_v(inner, st, op, collective, &part_bytes)?))
}

/// The plan for an uneven `collective` whose parts hold `part_bytes`. The tuner's choice is
/// remembered per digest of the parts: any schedule of the collective is correct for any
/// counts, so even a collision of two digests only costs speed.
fn plan_v(
    inner: &dyn Group,
    st: &mut State,
    op: &'static str,
    collective: Collective,
    part_bytes: &[usize],
) -> Result<Arc<Plan>> {
    let memo = (collective, digest(part_bytes.iter().copied()) as usize);
    if let Some(p) = st.by_size.get(&memo) {
        if in_rank_order(p) {
            return Ok(p.clone());
        }
    }
    let (algo, k) = select::choose_parts(inner, op, collective, part_bytes)?;
    let key = (algo.to_string(), collective, k, 1);
    let plan = match st.plans.get(&key) {
        Some(p) => p.clone(),
        None => {
            let err = |detail: String| Error::Algorithm {
                op,
                algo: algo.to_string(),
                detail,
            };
            let schedule = algo
                .schedule(collective, inner.size(), k)
                .map_err(|e| err(e.to_string()))?;
            let plan = Arc::new(Plan::new(schedule, inner.rank()).map_err(err)?);
            tracing::info!(op, algo = %algo, pipeline = k, ranks = inner.size(), "new plan");
            st.plans.insert(key, plan.clone());
            plan
        }
    };
    if !in_rank_order(&plan) {
        return Err(Error::Algorithm {
            op,
            algo: algo.to_string(),
            detail: "its schedule does not keep the ranks' parts in rank order".into(),
        });
    }
    if st.by_size.len() < 4096 {
        st.by_size.insert(memo, plan.clone());
    }
    Ok(plan)
}

/// Whether part `q` is blocks `q * c..(q + 1) * c` of the plan's schedule (the layouts here
/// assume it; hierarchical schedules own their shards out of rank order).
fn in_rank_order(plan: &Plan) -> bool {
    let s = &plan.schedule;
    let c = (s.blocks / s.ranks) as u32;
    s.owned.is_empty()
        || s.owned
            .iter()
            .enumerate()
            .all(|(q, o)| *o == Blocks::new(q as u32 * c, c))
}

/// Exchanges headers and runs `plan` with `layout`; the materialised flags.
fn execute(
    st: &mut State,
    plan: &Plan,
    hdr: Header,
    b: &Buffers,
    layout: &BlockLayout,
    red: Option<Reduction>,
) -> Result<Vec<bool>> {
    st.engine.reduction = red;
    st.engine.esize = b.esize;
    st.engine.stream = b.elems * b.esize >= oxccl_kernels::streaming_threshold_bytes();
    begin(st, hdr, plan.peers.iter().copied());
    let mut mat = run::initial_materialized_in(layout, b);
    st.engine
        .with_call_stores(hdr.kind, b.elems * b.esize, &plan.peers, |e| {
            run::run_in(e, plan, b, layout, &mut mat)
        })?;
    Ok(mat)
}

/// Copies `blocks` (one part) from wherever they are (work or lazily the input) to `out`,
/// which receives the part from its first element; applies the epilogue where the plan says.
///
/// # Safety
/// `b`'s buffers valid; `out` valid for the part's elements and equal to the part's place in
/// `b.work` or disjoint from `b.work` and `b.input`.
unsafe fn copy_out(
    plan: &Plan,
    b: &Buffers,
    layout: &BlockLayout,
    mat: &[bool],
    red: Option<Reduction>,
    blocks: Blocks,
    out: *mut u8,
) -> Result<()> {
    let mut at = out;
    for i in blocks.range() {
        let r = layout.block(i);
        let len = r.len() * b.esize;
        let src = if mat[i] {
            b.work.wrapping_add(r.start * b.esize).cast_const()
        } else {
            b.input_at(r.start)
        };
        let (rd, epi) = match red {
            Some(rd) if plan.epilogue_after[i] => (rd, rd.epilogue),
            Some(rd) => (rd, Epilogue::None),
            None => (reduction(DataType::U8, ReduceOp::Sum, 1), Epilogue::None),
        };
        // SAFETY: the caller's contract; the part's blocks are consecutive in `out`.
        unsafe { finish_copy(rd, epi, src, at, len)? };
        at = at.wrapping_add(len);
    }
    Ok(())
}

/// The blocks of part `q` when every part is `chunks` blocks.
fn part_blocks(q: usize, chunks: usize) -> Blocks {
    Blocks::new((q * chunks) as u32, chunks as u32)
}

fn grow(scratch: &mut Vec<u8>, bytes: usize) -> *mut u8 {
    if scratch.len() < bytes {
        scratch.resize(bytes, 0);
    }
    scratch.as_mut_ptr()
}

/// Gather: root's `output` receives rank `q`'s `input` (`counts[q]` elements) at `at_root[q]`.
///
/// # Safety
/// `input` valid for `counts[rank]` elements; at root, `output` valid for writes covering
/// every part of `at_root` and disjoint from `input`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gather(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    at_root: &Parts,
    dtype: DataType,
    root: usize,
) -> Result<()> {
    const OP: &str = "gather";
    let (p, me, esize) = (inner.size(), inner.rank(), dtype.size());
    let counts = || at_root.iter().map(|x| x.1);
    let total: usize = counts().sum();
    let collective = Collective::Gather { root: root as u32 };
    let planned = if p > 1 {
        let salt = root as u64;
        Some(header_and_plan(
            inner,
            st,
            OP,
            KIND_GATHER,
            collective,
            counts(),
            dtype,
            None,
            salt,
        )?)
    } else {
        None
    };
    // Root lays the parts out in its output; the others gather subtrees in packed scratch.
    let (work, parts) = if me == root {
        (output, at_root.to_vec())
    } else {
        (grow(&mut st.scratch, total * esize), packed(counts()))
    };
    let own = parts[me];
    let b = Buffers {
        work,
        input,
        in_lo: own.0,
        in_hi: own.0 + own.1,
        elems: total,
        esize,
        parts: None,
    };
    let Some((hdr, plan)) = planned else {
        // SAFETY: the caller's contract (one rank: root, disjoint buffers).
        return unsafe {
            finish_copy(
                reduction(dtype, ReduceOp::Sum, 1),
                Epilogue::None,
                input,
                output.add(own.0 * esize),
                own.1 * esize,
            )
        };
    };
    let chunks = plan.schedule.blocks / p;
    let layout = BlockLayout::parts(parts, chunks);
    let mat = execute(st, &plan, hdr, &b, &layout, None)?;
    if me == root {
        let dst = output.wrapping_add(own.0 * esize);
        // SAFETY: root's own part of output is its work buffer's; input is disjoint.
        unsafe { copy_out(&plan, &b, &layout, &mat, None, part_blocks(me, chunks), dst)? };
    }
    Ok(())
}

/// Scatter: rank `q`'s `output` (`counts[q]` elements) receives root's `input` at `at_root[q]`.
///
/// # Safety
/// `output` valid for `counts[rank]` elements; at root, `input` valid for reads covering every
/// part of `at_root` and disjoint from `output`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn scatter(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    at_root: &Parts,
    dtype: DataType,
    root: usize,
) -> Result<()> {
    const OP: &str = "scatter";
    let (p, me, esize) = (inner.size(), inner.rank(), dtype.size());
    let counts = || at_root.iter().map(|x| x.1);
    let total: usize = counts().sum();
    let collective = Collective::Scatter { root: root as u32 };
    let planned = if p > 1 {
        let salt = root as u64;
        Some(header_and_plan(
            inner,
            st,
            OP,
            KIND_SCATTER,
            collective,
            counts(),
            dtype,
            None,
            salt,
        )?)
    } else {
        None
    };
    let work = grow(&mut st.scratch, total * esize);
    // Root reads every part lazily from its input (it only sends); the others receive their
    // subtree's parts into packed scratch.
    let (parts, input, in_hi) = if me == root {
        let end = at_root.iter().map(|x| x.0 + x.1).max().unwrap_or(0);
        (at_root.to_vec(), input, end)
    } else {
        (packed(counts()), std::ptr::null(), 0)
    };
    let b = Buffers {
        work,
        input,
        in_lo: 0,
        in_hi,
        elems: total,
        esize,
        parts: None,
    };
    let own = parts[me];
    let Some((hdr, plan)) = planned else {
        // SAFETY: the caller's contract (one rank: root, disjoint buffers).
        return unsafe {
            finish_copy(
                reduction(dtype, ReduceOp::Sum, 1),
                Epilogue::None,
                input.add(own.0 * esize),
                output,
                own.1 * esize,
            )
        };
    };
    let chunks = plan.schedule.blocks / p;
    let layout = BlockLayout::parts(parts, chunks);
    let mat = execute(st, &plan, hdr, &b, &layout, None)?;
    // SAFETY: output is disjoint from scratch and from root's input (the caller's contract).
    unsafe {
        copy_out(
            &plan,
            &b,
            &layout,
            &mat,
            None,
            part_blocks(me, chunks),
            output,
        )
    }
}

/// All-gather of uneven parts: every rank's `output` receives rank `q`'s `input` (`counts[q]`
/// elements) at `at[q]`.
///
/// # Safety
/// `input` valid for `counts[rank]` elements, `output` for writes covering every part of `at`,
/// disjoint.
pub(crate) unsafe fn all_gather_v(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    at: &Parts,
    dtype: DataType,
) -> Result<()> {
    const OP: &str = "all_gather_v";
    let (p, me, esize) = (inner.size(), inner.rank(), dtype.size());
    let counts = || at.iter().map(|x| x.1);
    let total: usize = counts().sum();
    let own = at[me];
    let dst = output.wrapping_add(own.0 * esize);
    if p == 1 {
        // SAFETY: the caller's contract (valid, disjoint).
        unsafe { std::ptr::copy_nonoverlapping(input, dst, own.1 * esize) };
        return Ok(());
    }
    let (hdr, plan) = header_and_plan(
        inner,
        st,
        OP,
        KIND_ALL_GATHER_V,
        Collective::AllGather,
        counts(),
        dtype,
        None,
        0,
    )?;
    let b = Buffers {
        work: output,
        input,
        in_lo: own.0,
        in_hi: own.0 + own.1,
        elems: total,
        esize,
        parts: None,
    };
    let chunks = plan.schedule.blocks / p;
    let layout = BlockLayout::parts(at.iter().copied(), chunks);
    let mat = execute(st, &plan, hdr, &b, &layout, None)?;
    // SAFETY: my part of output is the work buffer's; input is disjoint.
    unsafe { copy_out(&plan, &b, &layout, &mat, None, part_blocks(me, chunks), dst) }
}

/// Reduce-scatter of uneven parts: `input` holds every rank's part packed (`counts[q]`
/// elements each, in rank order); `output` receives the reduction of this rank's part.
///
/// # Safety
/// `input` valid for the sum of `counts`, `output` for `counts[rank]` elements, disjoint.
pub(crate) unsafe fn reduce_scatter_v(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    counts: &[usize],
    dtype: DataType,
    op: ReduceOp,
) -> Result<()> {
    const OP: &str = "reduce_scatter_v";
    let (p, me, esize) = (inner.size(), inner.rank(), dtype.size());
    let red = reduction(dtype, op, p);
    let parts = packed(counts.iter().copied());
    let total: usize = counts.iter().sum();
    let own = parts[me];
    if p == 1 {
        // SAFETY: the caller's contract.
        return unsafe { finish_copy(red, red.epilogue, input, output, own.1 * esize) };
    }
    let (hdr, plan) = header_and_plan(
        inner,
        st,
        OP,
        KIND_REDUCE_SCATTER_V,
        Collective::ReduceScatter,
        counts.iter().copied(),
        dtype,
        Some(op),
        0,
    )?;
    let b = Buffers {
        work: grow(&mut st.scratch, total * esize),
        input,
        in_lo: 0,
        in_hi: total,
        elems: total,
        esize,
        parts: None,
    };
    let chunks = plan.schedule.blocks / p;
    let layout = BlockLayout::parts(parts, chunks);
    let mat = execute(st, &plan, hdr, &b, &layout, Some(red))?;
    // SAFETY: output is disjoint from scratch and input (the caller's contract).
    unsafe {
        copy_out(
            &plan,
            &b,
            &layout,
            &mat,
            Some(red),
            part_blocks(me, chunks),
            output,
        )
    }
}

/// All-to-all of uneven parts: `input`'s part `send[q]` goes to rank `q`, which stores it at
/// its `recv[rank]`. `send[rank]` and `recv[rank]` hold the same count (checked by the caller).
///
/// # Safety
/// `input` valid for reads covering `send`'s parts, `output` for writes covering `recv`'s,
/// disjoint.
pub(crate) unsafe fn all_to_all_v(
    inner: &dyn Group,
    st: &mut State,
    input: (*const u8, usize),
    output: (*mut u8, usize),
    send: &Parts,
    recv: &Parts,
    dtype: DataType,
) -> Result<()> {
    const OP: &str = "all_to_all_v";
    let (p, me, esize) = (inner.size(), inner.rank(), dtype.size());
    let ((input, in_elems), (output, out_elems)) = (input, output);
    // Rank `me`'s own part never leaves it.
    let (s, r) = (send[me], recv[me]);
    let sent: usize = send.iter().map(|part| part.1).sum();
    // SAFETY: the caller's contract (in range of both buffers, disjoint buffers).
    unsafe {
        copy_own_part(
            &st.engine,
            sent * esize,
            input.add(s.0 * esize),
            output.add(r.0 * esize),
            s.1 * esize,
        )
    };
    if p == 1 {
        return Ok(());
    }
    // Every rank knows only its own row and column of the counts, so the algorithm is chosen
    // from what they share: the rank count.
    let plan = plan_v(inner, st, OP, Collective::AllToAll, &[])?;
    let chunks = plan.schedule.blocks / (p * p);
    // One work space: the output, then the input after it (`base` on), read lazily.
    let base = out_elems;
    let layout = BlockLayout::parts(
        (0..p * p).map(|i| match (i / p, i % p) {
            (s, d) if d == me => recv[s],
            (s, d) if s == me => (base + send[d].0, send[d].1),
            _ => (0, 0),
        }),
        chunks,
    );
    let b = Buffers {
        work: output,
        input,
        in_lo: base,
        in_hi: base + in_elems,
        elems: out_elems,
        esize,
        parts: None,
    };
    // Counts differ per rank (my row is my peers' column), so the header can only say which
    // call this is; a rank called with counts its peers do not match falls out of step, which
    // the next call's header check reports.
    let hdr = header(KIND_ALL_TO_ALL_V, Some(dtype), None, 0, 0);
    st.engine.alongside = (sent - s.1) * esize;
    let r = execute(st, &plan, hdr, &b, &layout, None);
    st.engine.alongside = 0;
    r.map(|_| ())
}
