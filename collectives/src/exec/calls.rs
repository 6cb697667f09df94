//! The byte-level body of every operation, run on the communicator's state at the call's turn.
//!
//! Buffers arrive as raw parts because the non-blocking forms run on another thread; every
//! function documents what it needs from them, and the safe wrappers in `ops.rs` guarantee it.

use super::engine::{Engine, RecvJob, RecvKind, Reduction, Until};
use super::header::{
    dtype_code, op_code, Header, KIND_ALL_GATHER, KIND_ALL_REDUCE, KIND_ALL_TO_ALL, KIND_BARRIER,
    KIND_BROADCAST, KIND_P2P, KIND_REDUCE, KIND_REDUCE_SCATTER, KIND_SMALL_ALL_REDUCE,
};
use super::plan::Plan;
use super::run::{self, Buffers};
use super::select;
use super::tiny;
use super::{Group, State};
use crate::error::{Error, Result};
use crate::schedule::{Blocks, Collective};
use oxccl_kernels::{DataType, Epilogue, ReduceOp};
use std::sync::Arc;

pub(super) fn header(
    kind: u8,
    dtype: Option<DataType>,
    op: Option<ReduceOp>,
    count: usize,
    extra: u64,
) -> Header {
    let (opc, scalar) = op.map_or((0, 0), op_code);
    Header {
        kind,
        dtype: dtype.map_or(0, dtype_code),
        op: opc,
        seq: 0,
        count: count as u64,
        extra: extra ^ scalar,
    }
}

/// Queues the header exchange with every peer in `peers`.
pub(super) fn begin(st: &mut State, hdr: Header, peers: impl IntoIterator<Item = usize>) {
    st.engine.mine = hdr;
    for q in peers {
        let mut h = hdr;
        h.seq = st.engine.tx_seq[q];
        st.hdrs[q] = h.to_bytes();
        let ptr = st.hdrs[q].as_ptr();
        st.engine.exchange_header(q, ptr);
    }
}

fn pad_for(bytes: usize) -> usize {
    (8 - bytes % 8) % 8
}

fn recv_copy(engine: &mut Engine, from: usize, dst: *mut u8, len: usize) {
    engine.recv(
        from,
        RecvJob {
            kind: RecvKind::Copy,
            dst,
            len,
            pos: 0,
            pad: pad_for(len),
            fwd: None,
            in_step: false,
            cleared: true,
        },
    );
}

/// A receive of exactly `len` bytes (no padding: the small all-reduce's whole-line messages).
fn recv_copy_exact(engine: &mut Engine, from: usize, dst: *mut u8, len: usize) {
    engine.recv(
        from,
        RecvJob {
            kind: RecvKind::Copy,
            dst,
            len,
            pos: 0,
            pad: 0,
            fwd: None,
            in_step: false,
            cleared: true,
        },
    );
}

fn plan(
    inner: &dyn Group,
    st: &mut State,
    op: &'static str,
    collective: Collective,
    bytes: usize,
) -> Result<Arc<Plan>> {
    // The tuner's choice is a pure function of (collective, size): remember it per size.
    if let Some(p) = st.by_size.get(&(collective, bytes)) {
        return Ok(p.clone());
    }
    let (algo, k, lanes) = select::choose(inner, op, collective, bytes)?;
    let key = (algo.to_string(), collective, k, lanes);
    if let Some(p) = st.plans.get(&key) {
        let p = p.clone();
        if st.by_size.len() < 4096 {
            st.by_size.insert((collective, bytes), p.clone());
        }
        return Ok(p);
    }
    let err = |detail: String| Error::Algorithm {
        op,
        algo: algo.to_string(),
        detail,
    };
    let schedule = algo
        .schedule_lanes(collective, inner.size(), k, lanes)
        .map_err(|e| err(e.to_string()))?;
    let plan = Arc::new(Plan::new(schedule, inner.rank()).map_err(err)?);
    tracing::info!(op, algo = %algo, pipeline = k, lanes, ranks = inner.size(), "new plan");
    st.plans.insert(key, plan.clone());
    if st.by_size.len() < 4096 {
        st.by_size.insert((collective, bytes), plan.clone());
    }
    Ok(plan)
}

/// `dst = epilogue(src)` (or a copy when `epi` is None). `src == dst` works in place.
///
/// # Safety
/// `src` and `dst` must be valid for `len` bytes; when different they must not overlap.
pub(super) unsafe fn finish_copy(
    r: Reduction,
    epi: Epilogue,
    src: *const u8,
    dst: *mut u8,
    len: usize,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let res = if std::ptr::eq(src, dst.cast_const()) {
        if epi == Epilogue::None {
            return Ok(());
        }
        // SAFETY: the caller's contract.
        let d = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        oxccl_kernels::reduce_bytes_with(r.dtype, r.combine, epi, d, &[])
    } else if epi == Epilogue::None {
        // SAFETY: the caller's contract (valid, disjoint).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return Ok(());
    } else {
        // SAFETY: the caller's contract (valid, disjoint).
        let (s, d) = unsafe {
            (
                std::slice::from_raw_parts(src, len),
                std::slice::from_raw_parts_mut(dst, len),
            )
        };
        oxccl_kernels::reduce_copy_bytes_with(r.dtype, r.combine, epi, &[s], &mut [d])
    };
    res.map_err(|e| Error::invalid("reduce", e.to_string()))
}

/// Copies this rank's own part of an all-to-all (`len` bytes, of a call of `call_bytes` per
/// rank) into its output, which the call does not read again: with streaming stores once the
/// call's bytes on all the host's ranks (they run it at once and share the last-level cache)
/// reach the kernels' streaming threshold, since the part leaves the cache before anyone reads
/// it and ordinary stores would first read every line they overwrite. (The received parts'
/// threshold, `Engine::stream`, counts this rank's output alone: those copies are the pulls'
/// and the ring's, whose stores are the transport's.) 4 ranks on 2 cores, all-to-all-v at
/// 8-16 MiB: 1.07-1.12x of Open MPI with streaming own parts against 0.99-1.05x without,
/// interleaved (bench/RESULTS.md, session 14).
///
/// # Safety
/// `src` and `dst` valid for `len` bytes and disjoint.
pub(super) unsafe fn copy_own_part(
    engine: &Engine,
    call_bytes: usize,
    src: *const u8,
    dst: *mut u8,
    len: usize,
) {
    let stream =
        call_bytes.saturating_mul(engine.host_ranks) >= oxccl_kernels::streaming_threshold_bytes();
    // SAFETY: the caller's contract (valid, disjoint).
    let (s, d) = unsafe {
        (
            std::slice::from_raw_parts(src, len),
            std::slice::from_raw_parts_mut(dst, len),
        )
    };
    super::engine::copy(stream, d, s);
}

/// Runs `plan` on `b` after exchanging headers; returns the materialised flags.
fn execute(
    st: &mut State,
    plan: &Plan,
    hdr: Header,
    b: &Buffers,
    red: Option<Reduction>,
) -> Result<Vec<bool>> {
    st.engine.reduction = red;
    st.engine.esize = b.esize;
    st.engine.stream = b.elems * b.esize >= oxccl_kernels::streaming_threshold_bytes();
    if matches!(hdr.kind, KIND_BROADCAST | KIND_REDUCE) {
        // Data moves one way along a tree here: a rank could finish having heard only from
        // neighbours that agree with it. Headers to and from every rank make every rank see any
        // disagreement (another root, count, dtype, op) within this call.
        let (me, p) = (plan.rank, plan.schedule.ranks);
        begin(st, hdr, (0..p).filter(|&q| q != me));
    } else {
        begin(st, hdr, plan.peers.iter().copied());
    }
    let mut mat = run::initial_materialized(plan, b);
    st.engine
        .with_call_stores(hdr.kind, b.elems * b.esize, &plan.peers, |e| {
            run::run(e, plan, b, &mut mat)
        })?;
    Ok(mat)
}

/// Copies the still-lazy blocks of `range` (work coordinates) to `out` and applies the
/// epilogue where the plan says; `out` receives elements `range` (offset by `range.start`).
///
/// # Safety
/// `b`'s buffers must be valid; `out` valid for `range.len()` elements and either equal to
/// `b.work + range.start` or disjoint from `b.work` and `b.input`.
unsafe fn finalize(
    plan: &Plan,
    b: &Buffers,
    mat: &[bool],
    red: Option<Reduction>,
    blocks: Blocks,
    out: *mut u8,
) -> Result<()> {
    let nb = plan.schedule.blocks;
    let base = blocks.elems(b.elems, nb).start;
    for i in blocks.range() {
        let r = Blocks::one(i as u32).elems(b.elems, nb);
        let len = r.len() * b.esize;
        let dst = out.wrapping_add((r.start - base) * b.esize);
        let src = if mat[i] {
            b.work.wrapping_add(r.start * b.esize).cast_const()
        } else {
            b.input_at(r.start)
        };
        let (red, epi) = match red {
            Some(rd) if plan.epilogue_after[i] => (rd, rd.epilogue),
            Some(rd) => (rd, Epilogue::None),
            None => (
                Reduction {
                    dtype: DataType::U8,
                    combine: ReduceOp::Sum,
                    epilogue: Epilogue::None,
                },
                Epilogue::None,
            ),
        };
        // SAFETY: the caller's contract; lazy blocks come from the input, which is disjoint
        // from `out` unless the call is in place (then nothing is lazy).
        unsafe { finish_copy(red, epi, src, dst, len)? };
    }
    Ok(())
}

pub(super) fn reduction(dtype: DataType, op: ReduceOp, contributors: usize) -> Reduction {
    let (combine, epilogue) = op.split(contributors);
    Reduction {
        dtype,
        combine,
        epilogue,
    }
}

/// All-reduce of `bytes` bytes from `input` to `output` (equal for in place).
///
/// # Safety
/// `input` valid for reads and `output` for writes of `bytes` bytes, equal or disjoint, and
/// untouched by anyone else during the call.
pub(crate) unsafe fn all_reduce(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    bytes: usize,
    dtype: DataType,
    op: ReduceOp,
) -> Result<()> {
    const OP: &str = "all_reduce";
    let p = inner.size();
    let esize = dtype.size();
    let count = bytes / esize;
    let red = reduction(dtype, op, p);
    if p == 1 {
        // SAFETY: the caller's contract.
        return unsafe { finish_copy(red, red.epilogue, input, output, bytes) };
    }
    let small = bytes <= inner.options().small_bytes && inner.options().algorithm.is_none();
    if small && bytes <= tiny::TINY_BYTES && st.engine.tiny {
        let State { engine, others, .. } = st;
        // SAFETY: the caller's contract.
        return unsafe { tiny::all_reduce(engine, others, input, output, bytes, dtype, op) };
    }
    if small {
        // SAFETY: the caller's contract.
        return unsafe { small_all_reduce(inner, st, input, output, bytes, dtype, op) };
    }
    let plan = plan(inner, st, OP, Collective::AllReduce, bytes)?;
    let in_place = std::ptr::eq(input, output.cast_const());
    let b = Buffers {
        work: output,
        input: if in_place { std::ptr::null() } else { input },
        in_lo: 0,
        in_hi: count,
        elems: count,
        esize,
        parts: None,
    };
    let hdr = header(KIND_ALL_REDUCE, Some(dtype), Some(op), count, 0);
    let mat = execute(st, &plan, hdr, &b, Some(red))?;
    let all = Blocks::new(0, plan.schedule.blocks as u32);
    // SAFETY: output is the work buffer; lazy blocks read the disjoint input.
    unsafe { finalize(&plan, &b, &mat, Some(red), all, output) }
}

/// Every rank sends its whole vector to every peer and reduces all of them in rank order (so
/// every rank computes bit-identical results). One message per peer, header included, and no
/// job queues: the latency path.
///
/// # Safety
/// As [`all_reduce`].
unsafe fn small_all_reduce(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    bytes: usize,
    dtype: DataType,
    op: ReduceOp,
) -> Result<()> {
    let p = inner.size();
    let me = inner.rank();
    // Whole cache lines: a message of up to 32 data bytes is exactly one line of the ring.
    let len = (Header::LEN + bytes).next_multiple_of(64);
    if st.scratch.len() < len * p {
        st.scratch.resize(len * p, 0);
    }
    let hdr = header(
        KIND_SMALL_ALL_REDUCE,
        Some(dtype),
        Some(op),
        bytes / dtype.size(),
        0,
    );
    st.engine.mine = hdr;
    // SAFETY: the caller's contract: input is valid for `bytes`.
    let data = unsafe { std::slice::from_raw_parts(input, bytes) };
    let State {
        engine,
        scratch,
        small_msg,
        others,
        ..
    } = st;
    small_msg.clear();
    small_msg.extend_from_slice(&hdr.to_bytes());
    small_msg.extend_from_slice(data);
    small_msg.resize(len, 0);
    // Every rank makes every small all-reduce, so one counter numbers them for all peers.
    let mut h = hdr;
    h.seq = engine.small_seq;
    small_msg[..Header::LEN].copy_from_slice(&h.to_bytes());
    if engine.has_queued() {
        // Sends and receives posted earlier still own the streams' next bytes: the same
        // message goes through the queues, behind them.
        engine.reduction = None;
        engine.esize = 1;
        engine.stream = false;
        // The header by a header job (which checks it, and before which receipts of
        // posted receives are taken off the stream), then the rest.
        // A reduction's messages never pull, so no offer header: besides, the sender's one
        // job is the receiver's two, which could not agree on one.
        engine.mine = h;
        let pull_from = std::mem::replace(&mut engine.pull_from, usize::MAX);
        for &q in others.iter() {
            engine.send(q, small_msg.as_ptr(), len, len, 0);
            engine.recv(q, RecvJob::header(h));
            let rest = scratch.as_mut_ptr().wrapping_add(q * len + Header::LEN);
            recv_copy_exact(engine, q, rest, len - Header::LEN);
        }
        engine.pull_from = pull_from;
        engine.drive(Until::All)?;
    } else {
        engine.exchange_all(others, small_msg, scratch, len, |q, got| {
            let got = Header::from_bytes(got.try_into().expect("32 bytes"));
            h.check(&got, "all_reduce", q)
        })?;
    }
    engine.small_seq += 1;
    scratch[me * len + Header::LEN..me * len + Header::LEN + bytes].copy_from_slice(data);
    // Up to 16 ranks without allocating.
    let mut stack: [&[u8]; 16] = [&[]; 16];
    let mut heap = Vec::new();
    let srcs: &[&[u8]] = if p <= 16 {
        for (q, s) in stack.iter_mut().enumerate().take(p) {
            *s = &scratch[q * len + Header::LEN..q * len + Header::LEN + bytes];
        }
        &stack[..p]
    } else {
        heap.extend((0..p).map(|q| &scratch[q * len + Header::LEN..q * len + Header::LEN + bytes]));
        &heap
    };
    // SAFETY: the caller's contract: output is valid for `bytes` and not borrowed elsewhere
    // (scratch belongs to the state; `data` was copied out of input before this borrow).
    let out = unsafe { std::slice::from_raw_parts_mut(output, bytes) };
    let red = reduction(dtype, op, p);
    oxccl_kernels::reduce_copy_bytes_with(dtype, red.combine, red.epilogue, srcs, &mut [out])
        .map_err(|e| Error::invalid("all_reduce", e.to_string()))
}

/// Reduce-scatter: `input` holds `size * out_bytes` bytes, `output` receives this rank's part.
///
/// # Safety
/// As [`all_reduce`], with `input` of `size * out_bytes` and `output` of `out_bytes` bytes,
/// disjoint.
pub(crate) unsafe fn reduce_scatter(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    out_bytes: usize,
    dtype: DataType,
    op: ReduceOp,
) -> Result<()> {
    const OP: &str = "reduce_scatter";
    let p = inner.size();
    let esize = dtype.size();
    let c = out_bytes / esize;
    let red = reduction(dtype, op, p);
    if p == 1 {
        // SAFETY: the caller's contract.
        return unsafe { finish_copy(red, red.epilogue, input, output, out_bytes) };
    }
    let n = c * p;
    let plan = plan(inner, st, OP, Collective::ReduceScatter, n * esize)?;
    let (owned, parts) = ownership(&plan, inner.rank(), n, c, OP)?;
    if st.scratch.len() < n * esize {
        st.scratch.resize(n * esize, 0);
    }
    let b = Buffers {
        work: st.scratch.as_mut_ptr(),
        input,
        in_lo: 0,
        in_hi: n,
        elems: n,
        esize,
        parts,
    };
    let hdr = header(KIND_REDUCE_SCATTER, Some(dtype), Some(op), c, 0);
    let mat = execute(st, &plan, hdr, &b, Some(red))?;
    // SAFETY: output is disjoint from scratch and input (the caller's contract).
    unsafe { finalize(&plan, &b, &mat, Some(red), owned, output) }
}

/// This rank's owned blocks, and the part map when ownership is not in rank order: work part
/// `j` holds the part of rank `map[j]`.
#[allow(clippy::type_complexity)]
fn ownership(
    plan: &Plan,
    rank: usize,
    n: usize,
    c: usize,
    op: &'static str,
) -> Result<(Blocks, Option<(usize, Vec<usize>)>)> {
    let err = |detail: String| Error::Algorithm {
        op,
        algo: plan.schedule.algorithm.clone(),
        detail,
    };
    let p = plan.schedule.ranks;
    let mut map = vec![usize::MAX; p];
    for q in 0..p {
        let owned = plan
            .schedule
            .owned(q as u32)
            .ok_or_else(|| err(format!("the schedule gives rank {q} no blocks")))?;
        let r = owned.elems(n, plan.schedule.blocks);
        if c == 0 {
            continue;
        }
        if r.len() != c || r.start % c != 0 || map[r.start / c] != usize::MAX {
            return Err(err(format!(
                "rank {q} owns elements {r:?}, not one whole part of {c}"
            )));
        }
        map[r.start / c] = q;
    }
    let owned = plan.schedule.owned(rank as u32).expect("checked above");
    let in_order = c == 0 || map.iter().enumerate().all(|(j, &q)| j == q);
    Ok((owned, (!in_order).then_some((c, map))))
}

/// All-gather: `input` (`in_bytes`) lands at `rank * in_bytes` of `output`.
///
/// # Safety
/// `input` valid for `in_bytes`, `output` for `size * in_bytes`; `input` either disjoint from
/// `output` or exactly this rank's slot of it.
pub(crate) unsafe fn all_gather(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    in_bytes: usize,
    dtype: DataType,
) -> Result<()> {
    const OP: &str = "all_gather";
    let p = inner.size();
    let esize = dtype.size();
    let c = in_bytes / esize;
    let n = c * p;
    let me = inner.rank();
    let my_slot = output.wrapping_add(me * in_bytes);
    if p == 1 {
        if !std::ptr::eq(input, my_slot.cast_const()) {
            // SAFETY: the caller's contract (disjoint, valid).
            unsafe { std::ptr::copy_nonoverlapping(input, output, in_bytes) };
        }
        return Ok(());
    }
    let plan = plan(inner, st, OP, Collective::AllGather, n * esize)?;
    let (owned, parts) = ownership(&plan, me, n, c, OP)?;
    let hdr = header(KIND_ALL_GATHER, Some(dtype), None, c, 0);
    let lo = owned.elems(n, plan.schedule.blocks).start;
    let Some((_, map)) = parts else {
        let in_place = std::ptr::eq(input, my_slot.cast_const());
        let b = Buffers {
            work: output,
            input: if in_place { std::ptr::null() } else { input },
            in_lo: lo,
            in_hi: lo + c,
            elems: n,
            esize,
            parts: None,
        };
        let mat = execute(st, &plan, hdr, &b, None)?;
        // SAFETY: my slot of output is the work buffer; input is disjoint or it (then not lazy).
        return unsafe { finalize(&plan, &b, &mat, None, owned, my_slot) };
    };
    // Ownership out of rank order: gather in scratch, then move each part to its rank's place.
    if st.scratch.len() < n * esize {
        st.scratch.resize(n * esize, 0);
    }
    let b = Buffers {
        work: st.scratch.as_mut_ptr(),
        input,
        in_lo: lo,
        in_hi: lo + c,
        elems: n,
        esize,
        parts: None,
    };
    let mat = execute(st, &plan, hdr, &b, None)?;
    // SAFETY: my part goes to my slot of output; input is disjoint from scratch.
    unsafe { finalize(&plan, &b, &mat, None, owned, my_slot)? };
    for (j, &q) in map.iter().enumerate() {
        if q != me {
            // SAFETY: part j of scratch and part q of output are in bounds (n elements each)
            // and in different buffers.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    b.work.add(j * in_bytes),
                    output.add(q * in_bytes),
                    in_bytes,
                )
            };
        }
    }
    Ok(())
}

/// Broadcast of `bytes` in place from `root`.
///
/// # Safety
/// `buf` valid for reads and writes of `bytes`.
pub(crate) unsafe fn broadcast(
    inner: &dyn Group,
    st: &mut State,
    buf: *mut u8,
    bytes: usize,
    dtype: DataType,
    root: usize,
) -> Result<()> {
    const OP: &str = "broadcast";
    if inner.size() == 1 {
        return Ok(());
    }
    let esize = dtype.size();
    let n = bytes / esize;
    let plan = plan(
        inner,
        st,
        OP,
        Collective::Broadcast { root: root as u32 },
        bytes,
    )?;
    let b = Buffers {
        work: buf,
        input: std::ptr::null(),
        in_lo: 0,
        in_hi: 0,
        elems: n,
        esize,
        parts: None,
    };
    let hdr = header(KIND_BROADCAST, Some(dtype), None, n, root as u64);
    execute(st, &plan, hdr, &b, None).map(|_| ())
}

/// Reduce to `root`: `output` (only used at root) receives the reduction of every `input`.
///
/// # Safety
/// `input` valid for `bytes`; at root, `output` valid for `bytes` and equal to or disjoint
/// from `input`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn reduce(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    bytes: usize,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
) -> Result<()> {
    const OP: &str = "reduce";
    let p = inner.size();
    let me = inner.rank();
    let esize = dtype.size();
    let n = bytes / esize;
    let red = reduction(dtype, op, p);
    if p == 1 {
        // SAFETY: the caller's contract.
        return unsafe { finish_copy(red, red.epilogue, input, output, bytes) };
    }
    let plan = plan(
        inner,
        st,
        OP,
        Collective::Reduce { root: root as u32 },
        bytes,
    )?;
    let work = if me == root {
        output
    } else {
        if st.scratch.len() < bytes {
            st.scratch.resize(bytes, 0);
        }
        st.scratch.as_mut_ptr()
    };
    let in_place = std::ptr::eq(input, work.cast_const());
    let b = Buffers {
        work,
        input: if in_place { std::ptr::null() } else { input },
        in_lo: 0,
        in_hi: n,
        elems: n,
        esize,
        parts: None,
    };
    let hdr = header(KIND_REDUCE, Some(dtype), Some(op), n, root as u64);
    let mat = execute(st, &plan, hdr, &b, Some(red))?;
    if me == root {
        let all = Blocks::new(0, plan.schedule.blocks as u32);
        // SAFETY: output is the work buffer; lazy blocks read the disjoint input.
        unsafe { finalize(&plan, &b, &mat, Some(red), all, output)? };
    }
    Ok(())
}

/// All-to-all: block `q` of `input` (`block` bytes each) goes to rank `q`, which stores it at
/// block `rank` of its `output`.
///
/// # Safety
/// `input` and `output` valid for `size * block` bytes and disjoint.
pub(crate) unsafe fn all_to_all(
    inner: &dyn Group,
    st: &mut State,
    input: *const u8,
    output: *mut u8,
    block: usize,
    dtype: DataType,
) -> Result<()> {
    let p = inner.size();
    let me = inner.rank();
    let hdr = header(KIND_ALL_TO_ALL, Some(dtype), None, block / dtype.size(), 0);
    st.engine.reduction = None;
    st.engine.esize = 1;
    st.engine.stream = false;
    begin(st, hdr, (0..p).filter(|&q| q != me));
    st.engine.alongside = (p - 1) * block;
    // Start with the next rank so that not everyone sends to rank 0 first.
    for k in 1..p {
        let q = (me + k) % p;
        st.engine.send(
            q,
            input.wrapping_add(q * block),
            block,
            block,
            pad_for(block),
        );
        let from = (me + p - k) % p;
        recv_copy(
            &mut st.engine,
            from,
            output.wrapping_add(from * block),
            block,
        );
    }
    st.engine.alongside = 0;
    // SAFETY: the caller's contract (valid, disjoint).
    unsafe {
        copy_own_part(
            &st.engine,
            p * block,
            input.add(me * block),
            output.add(me * block),
            block,
        )
    };
    st.engine.drive(Until::All)
}

/// Returns once every rank has called it.
pub(crate) fn barrier(inner: &dyn Group, st: &mut State) -> Result<()> {
    let me = inner.rank();
    st.engine.reduction = None;
    st.engine.esize = 1;
    st.engine.stream = false;
    begin(
        st,
        header(KIND_BARRIER, None, None, 0, 0),
        (0..inner.size()).filter(|&q| q != me),
    );
    st.engine.drive(Until::All)
}

/// Queues a send of `bytes` to `peer` (matched by the peer's receive in call order) under the
/// engine's current operation, without waiting: the jobs move whenever the engine is driven.
///
/// # Safety
/// `data` valid for `bytes` and unchanged until the operation is done (or the engine failed).
pub(crate) unsafe fn post_send(
    st: &mut State,
    data: *const u8,
    bytes: usize,
    dtype: DataType,
    peer: usize,
) {
    let mut h = header(KIND_P2P, Some(dtype), None, bytes / dtype.size(), 0);
    st.engine.await_receipt(peer, h);
    h.seq = st.engine.tx_seq[peer];
    st.engine.tx_seq[peer] += 1;
    st.engine.send_inline(peer, h.to_bytes());
    st.engine.send(peer, data, bytes, bytes, pad_for(bytes));
}

/// Queues a receive of `bytes` from `peer`, without waiting.
///
/// # Safety
/// `buf` valid for writes of `bytes`, and not touched by anyone else until the operation is
/// done (or the engine failed).
pub(crate) unsafe fn post_recv(
    st: &mut State,
    buf: *mut u8,
    bytes: usize,
    dtype: DataType,
    peer: usize,
) {
    let mut h = header(KIND_P2P, Some(dtype), None, bytes / dtype.size(), 0);
    st.engine.post_receipt(peer, h);
    h.seq = st.engine.rx_seq[peer];
    st.engine.rx_seq[peer] += 1;
    st.engine.mine = h;
    st.engine.recv(peer, RecvJob::header(h));
    recv_copy(&mut st.engine, peer, buf, bytes);
}

/// Sends `bytes` to `peer` and waits until they are handed to the link and the receiver's
/// receipt agrees (`exec/receipt.rs`).
///
/// # Safety
/// `data` valid for `bytes`.
pub(crate) unsafe fn send(
    st: &mut State,
    data: *const u8,
    bytes: usize,
    dtype: DataType,
    peer: usize,
) -> Result<()> {
    // SAFETY: the caller's contract; the wait below outlives the jobs.
    unsafe { post_send(st, data, bytes, dtype, peer) };
    drive_at_rest(st)
}

/// Drives the current operation (a send or receive: no collective is on the streams, so
/// receipts can be taken wherever the streams are between messages).
fn drive_at_rest(st: &mut State) -> Result<()> {
    st.engine.at_rest = true;
    let r = st.engine.drive(Until::All);
    st.engine.at_rest = false;
    r
}

/// Receives `bytes` from `peer`.
///
/// # Safety
/// `buf` valid for writes of `bytes`.
pub(crate) unsafe fn recv(
    st: &mut State,
    buf: *mut u8,
    bytes: usize,
    dtype: DataType,
    peer: usize,
) -> Result<()> {
    // SAFETY: the caller's contract; the wait below outlives the jobs.
    unsafe { post_recv(st, buf, bytes, dtype, peer) };
    drive_at_rest(st)
}
