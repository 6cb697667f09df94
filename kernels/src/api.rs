//! The safe entry points: validation, operator splitting, store-mode choice and threading.

use crate::cpu::{self, CpuBackend, Job};
use crate::element::Element;
use crate::types::{combine_code, DataType, EpiParams, Epilogue, KernelError, ReduceOp};
use std::sync::OnceLock;

/// How results are written to memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreMode {
    /// Streaming stores when the call's working set (every input and output) is at least
    /// [`streaming_threshold_bytes`], normal stores otherwise.
    #[default]
    Auto,
    /// Normal stores: the result stays in cache. Right for data that is read again soon (a
    /// collective's next step).
    Normal,
    /// Non-temporal stores: the result bypasses the cache, saving the read-for-ownership of
    /// every destination line. Right for outputs larger than the cache.
    Streaming,
}

/// Knobs of one call. `Options::default()` is what the plain functions use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The CPU backend; `None` means [`CpuBackend::detect`].
    pub backend: Option<CpuBackend>,
    /// Streaming or normal stores.
    pub stores: StoreMode,
    /// Threads to split the buffer across: 1 runs on the caller's thread, 0 means one per
    /// available core. Buffers below [`MIN_BYTES_PER_THREAD`] per thread use fewer threads.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: None,
            stores: StoreMode::Auto,
            threads: 1,
        }
    }
}

/// Smallest slice of a buffer worth a thread of its own (bytes per input).
pub const MIN_BYTES_PER_THREAD: usize = 256 * 1024;

/// Working-set size (bytes of every input and output of one call) from which
/// `StoreMode::Auto` streams: three quarters of the last-level cache (about where the
/// outputs start to evict data that is still needed), or `OXCCL_KERNELS_STREAM_BYTES`.
pub fn streaming_threshold_bytes() -> usize {
    static T: OnceLock<usize> = OnceLock::new();
    *T.get_or_init(|| {
        match std::env::var("OXCCL_KERNELS_STREAM_BYTES")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(v) => v,
            None => cpu::last_level_cache_bytes() / 4 * 3,
        }
    })
}

/// Typed, in place: `dst[i] = dst[i] op srcs[0][i] op srcs[1][i] ...`.
///
/// `Avg` divides by `1 + srcs.len()`. Every source must have `dst.len()` elements.
pub fn reduce<T: Element>(op: ReduceOp, dst: &mut [T], srcs: &[&[T]]) -> Result<(), KernelError> {
    let srcs: Vec<&[u8]> = srcs.iter().map(|s| bytemuck::cast_slice(s)).collect();
    reduce_bytes(T::DTYPE, op, bytemuck::cast_slice_mut(dst), &srcs)
}

/// Typed, out of place: reads every input once and writes the result to every output.
///
/// `Avg` divides by `srcs.len()`.
pub fn reduce_copy<T: Element>(
    op: ReduceOp,
    srcs: &[&[T]],
    dsts: &mut [&mut [T]],
) -> Result<(), KernelError> {
    let srcs: Vec<&[u8]> = srcs.iter().map(|s| bytemuck::cast_slice(s)).collect();
    let mut dsts: Vec<&mut [u8]> = dsts
        .iter_mut()
        .map(|d| bytemuck::cast_slice_mut(d))
        .collect();
    reduce_copy_bytes(T::DTYPE, op, &srcs, &mut dsts)
}

/// [`reduce`] on byte buffers of any alignment holding `dtype` elements.
pub fn reduce_bytes(
    dtype: DataType,
    op: ReduceOp,
    dst: &mut [u8],
    srcs: &[&[u8]],
) -> Result<(), KernelError> {
    let (combine, epilogue) = op.split(1 + srcs.len());
    reduce_bytes_opts(&Options::default(), dtype, combine, epilogue, dst, srcs)
}

/// [`reduce_copy`] on byte buffers of any alignment holding `dtype` elements.
pub fn reduce_copy_bytes(
    dtype: DataType,
    op: ReduceOp,
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> Result<(), KernelError> {
    let (combine, epilogue) = op.split(srcs.len());
    reduce_copy_bytes_opts(&Options::default(), dtype, combine, epilogue, srcs, dsts)
}

/// Out of place with an explicit combining operator (Sum, Prod, Min, Max) and an epilogue
/// applied to the combined value in the same pass. This is the form a collective uses: its
/// intermediate steps pass `(Sum, None)` and its final step `(Sum, Divide(ranks))` for Avg.
pub fn reduce_copy_bytes_with(
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> Result<(), KernelError> {
    reduce_copy_bytes_opts(&Options::default(), dtype, combine, epilogue, srcs, dsts)
}

/// In place with an explicit combining operator and epilogue:
/// `dst = epilogue(dst combine srcs[0] combine ...)`.
pub fn reduce_bytes_with(
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    dst: &mut [u8],
    srcs: &[&[u8]],
) -> Result<(), KernelError> {
    reduce_bytes_opts(&Options::default(), dtype, combine, epilogue, dst, srcs)
}

/// [`reduce_copy_bytes_with`] split across `threads` threads (0: one per core) for large
/// buffers, with `std::thread::scope`.
pub fn par_reduce_copy_bytes_with(
    threads: usize,
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> Result<(), KernelError> {
    let opts = Options {
        threads,
        ..Options::default()
    };
    reduce_copy_bytes_opts(&opts, dtype, combine, epilogue, srcs, dsts)
}

/// The most general out-of-place form: every knob in `opts`.
pub fn reduce_copy_bytes_opts(
    opts: &Options,
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    srcs: &[&[u8]],
    dsts: &mut [&mut [u8]],
) -> Result<(), KernelError> {
    let first = srcs.first().ok_or(KernelError::NoInputs)?;
    if dsts.is_empty() {
        return Err(KernelError::NoOutputs);
    }
    let len = first.len();
    check_len(dtype, || "srcs[0]".into(), len, len)?;
    for (i, s) in srcs.iter().enumerate() {
        check_len(dtype, || format!("srcs[{i}]"), s.len(), len)?;
    }
    for (i, d) in dsts.iter().enumerate() {
        check_len(dtype, || format!("dsts[{i}]"), d.len(), len)?;
    }
    with_table(srcs.iter().map(|s| s.as_ptr()), |src_ptrs| {
        with_table(dsts.iter_mut().map(|d| d.as_mut_ptr()), |dst_ptrs| {
            // SAFETY: every pointer covers `len` bytes (checked above), the sources are
            // shared borrows and the destinations exclusive ones, so they cannot overlap.
            unsafe { execute(opts, dtype, combine, epilogue, src_ptrs, dst_ptrs, len) }
        })
    })
}

/// The most general in-place form: every knob in `opts`.
pub fn reduce_bytes_opts(
    opts: &Options,
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    dst: &mut [u8],
    srcs: &[&[u8]],
) -> Result<(), KernelError> {
    let len = dst.len();
    check_len(dtype, || "dst".into(), len, len)?;
    for (i, s) in srcs.iter().enumerate() {
        check_len(dtype, || format!("srcs[{i}]"), s.len(), len)?;
    }
    let d = dst.as_mut_ptr();
    let all = std::iter::once(d.cast_const()).chain(srcs.iter().map(|s| s.as_ptr()));
    with_table(all, |src_ptrs| {
        // SAFETY: every pointer covers `len` bytes (checked above); `dst` is read and
        // written through the same pointer at the same offsets only, and the other sources
        // are shared borrows that cannot overlap the exclusive `dst`.
        unsafe { execute(opts, dtype, combine, epilogue, src_ptrs, &[d], len) }
    })
}

/// Pointer tables up to this long live on the stack: small calls (a collective's chunks)
/// then allocate nothing.
const INLINE_TABLE: usize = 16;

fn with_table<P: Copy, R>(items: impl Iterator<Item = P>, f: impl FnOnce(&[P]) -> R) -> R {
    let mut inline: [Option<P>; INLINE_TABLE] = [None; INLINE_TABLE];
    let mut heap = Vec::new();
    let mut n = 0;
    for p in items {
        if n < INLINE_TABLE {
            inline[n] = Some(p);
        } else {
            if heap.is_empty() {
                heap.extend(inline.iter().flatten().copied());
            }
            heap.push(p);
        }
        n += 1;
    }
    if n > INLINE_TABLE {
        return f(&heap);
    }
    match inline[0] {
        None => f(&[]),
        Some(first) => {
            let flat = inline.map(|p| p.unwrap_or(first));
            f(&flat[..n])
        }
    }
}

/// `what` names the slice in the error; it is a closure so that the check, which runs on every
/// call, allocates nothing when the lengths are right (tiny all-reduces call this per message).
fn check_len(
    dtype: DataType,
    what: impl Fn() -> String,
    got: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if got != expected {
        return Err(KernelError::LengthMismatch {
            what: what(),
            got,
            expected,
        });
    }
    if !got.is_multiple_of(dtype.size()) {
        return Err(KernelError::RaggedLength {
            what: what(),
            len: got,
            dtype,
            size: dtype.size(),
        });
    }
    Ok(())
}

/// Raw pointer tables shared by the worker threads.
struct Tables<'a> {
    srcs: &'a [*const u8],
    dsts: &'a [*mut u8],
}
// SAFETY: the tables are only read; each worker derives pointers to its own disjoint range
// of elements, so no two threads touch the same bytes.
unsafe impl Sync for Tables<'_> {}

/// # Safety
/// `srcs` non-empty, each pointer valid for `len_bytes` bytes, destinations not overlapping
/// sources except a destination that is also a source at the same address.
unsafe fn execute(
    opts: &Options,
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    srcs: &[*const u8],
    dsts: &[*mut u8],
    len_bytes: usize,
) -> Result<(), KernelError> {
    let op = combine_code(combine)?;
    let epi = EpiParams::new(dtype, epilogue)?;
    let backend = match opts.backend {
        Some(b) if b.is_available() => b,
        Some(b) => return Err(KernelError::BackendUnavailable(b.name())),
        None => CpuBackend::detect(),
    };
    let es = dtype.size();
    let n = len_bytes / es;
    if n == 0 {
        return Ok(());
    }
    let stream = match opts.stores {
        StoreMode::Normal => false,
        StoreMode::Streaming => true,
        StoreMode::Auto => {
            len_bytes.saturating_mul(srcs.len() + dsts.len()) >= streaming_threshold_bytes()
        }
    };
    let wanted = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    let threads = wanted.min(len_bytes / MIN_BYTES_PER_THREAD).max(1);
    if threads == 1 {
        let job = Job { srcs, dsts, len: n };
        // SAFETY: forwarded from this function's contract; `backend` is available.
        unsafe { cpu::execute(backend, dtype, op, &epi, &job, stream) };
        return Ok(());
    }
    // Chunks are whole pages so that threads never share a cache line.
    let page = 4096 / es;
    let chunk = n.div_ceil(threads).div_ceil(page) * page;
    let tables = Tables { srcs, dsts };
    std::thread::scope(|scope| {
        for start in (0..n).step_by(chunk) {
            let len = chunk.min(n - start);
            let (tables, epi) = (&tables, &epi);
            scope.spawn(move || {
                let off = start * es;
                // SAFETY: `start + len <= n`, so the offset pointers stay inside each buffer.
                let s: Vec<*const u8> = tables.srcs.iter().map(|p| unsafe { p.add(off) }).collect();
                // SAFETY: as above.
                let d: Vec<*mut u8> = tables.dsts.iter().map(|p| unsafe { p.add(off) }).collect();
                let job = Job {
                    srcs: &s,
                    dsts: &d,
                    len,
                };
                // SAFETY: this thread's range [start, start + len) is disjoint from every
                // other thread's; the rest is forwarded from `execute`'s contract.
                unsafe { cpu::execute(backend, dtype, op, epi, &job, stream) };
            });
        }
    });
    Ok(())
}
