//! The portable backend: plain Rust over unaligned reads, in blocks so that the compiler can
//! vectorise the per-source loops for whatever target it builds for. It is also the tail of
//! every SIMD loop and the path for integer epilogues (which have no SIMD division).

use super::Job;
use crate::element::Element;
use crate::types::{code, DataType, EpiParams};
use half::{bf16, f16};
use std::mem::size_of;

/// Elements per block: small enough for the accumulator to stay in L1, large enough to
/// amortise the loop over sources.
const BLOCK: usize = 256;

/// Reduces elements `[start, end)` of `job`.
///
/// # Safety
/// `job` must satisfy [`Job`]'s contract, and `end <= job.len`.
#[inline]
pub(crate) unsafe fn run<T: Element, const OP: u8, const EPI: u8>(
    job: &Job<'_>,
    start: usize,
    end: usize,
    epi: &EpiParams,
) {
    let es = size_of::<T>();
    let (first, rest) = match job.srcs.split_first() {
        Some(x) => x,
        None => return,
    };
    // Unaligned bytes are copied into aligned, typed blocks first, so that the arithmetic
    // runs over plain slices that the compiler vectorises for the build target.
    let mut acc = [T::Acc::default(); BLOCK];
    let mut tmp = [T::zeroed(); BLOCK];
    let mut i = start;
    while i < end {
        let n = BLOCK.min(end - i);
        let base = i * es;
        let load = |src: *const u8, tmp: &mut [T; BLOCK]| {
            // SAFETY: elements [i, i + n) lie inside every source (Job contract, `end <=
            // job.len`), `tmp` holds BLOCK >= n elements, and a local array cannot overlap
            // caller memory.
            unsafe {
                std::ptr::copy_nonoverlapping(src.add(base), tmp.as_mut_ptr().cast::<u8>(), n * es)
            }
        };
        load(*first, &mut tmp);
        for (a, t) in acc[..n].iter_mut().zip(&tmp[..n]) {
            *a = t.to_acc();
        }
        for s in rest {
            load(*s, &mut tmp);
            for (a, t) in acc[..n].iter_mut().zip(&tmp[..n]) {
                *a = T::combine::<OP>(*a, t.to_acc());
            }
        }
        for (t, a) in tmp[..n].iter_mut().zip(&acc[..n]) {
            *t = T::from_acc(T::epilogue::<EPI>(*a, epi));
        }
        for d in job.dsts {
            // SAFETY: elements [i, i + n) lie inside every destination (Job contract); every
            // source element of this block was read above, so in-place jobs are fine.
            unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr().cast::<u8>(), d.add(base), n * es) }
        }
        i += n;
    }
}

/// Monomorphises `$f::<T, OP, EPI>` for a run-time operator code and epilogue kind.
macro_rules! dispatch_op_epi {
    ($f:ident :: <$t:ty>, $op:expr, $epi:expr, ($($a:expr),*)) => {{
        use $crate::types::code::{EPI_DIVIDE, EPI_NONE, EPI_SCALE, MAX, MIN, PROD, SUM};
        match ($op, $epi) {
            (SUM, EPI_NONE) => $f::<$t, SUM, EPI_NONE>($($a),*),
            (SUM, EPI_SCALE) => $f::<$t, SUM, EPI_SCALE>($($a),*),
            (SUM, _) => $f::<$t, SUM, EPI_DIVIDE>($($a),*),
            (PROD, EPI_NONE) => $f::<$t, PROD, EPI_NONE>($($a),*),
            (PROD, EPI_SCALE) => $f::<$t, PROD, EPI_SCALE>($($a),*),
            (PROD, _) => $f::<$t, PROD, EPI_DIVIDE>($($a),*),
            (MIN, EPI_NONE) => $f::<$t, MIN, EPI_NONE>($($a),*),
            (MIN, EPI_SCALE) => $f::<$t, MIN, EPI_SCALE>($($a),*),
            (MIN, _) => $f::<$t, MIN, EPI_DIVIDE>($($a),*),
            (_, EPI_NONE) => $f::<$t, MAX, EPI_NONE>($($a),*),
            (_, EPI_SCALE) => $f::<$t, MAX, EPI_SCALE>($($a),*),
            (_, _) => $f::<$t, MAX, EPI_DIVIDE>($($a),*),
        }
    }};
}
pub(crate) use dispatch_op_epi;

/// Runs `[start, end)` of `job` with the portable loops.
///
/// # Safety
/// `job` must satisfy [`Job`]'s contract, and `end <= job.len`.
pub(crate) unsafe fn dispatch(
    dtype: DataType,
    op: u8,
    epi: &EpiParams,
    job: &Job<'_>,
    start: usize,
    end: usize,
) {
    debug_assert!(op <= code::MAX);
    // SAFETY: in every arm, forwarded from this function's contract.
    unsafe {
        match dtype {
            DataType::F32 => dispatch_op_epi!(run::<f32>, op, epi.kind, (job, start, end, epi)),
            DataType::F64 => dispatch_op_epi!(run::<f64>, op, epi.kind, (job, start, end, epi)),
            DataType::F16 => dispatch_op_epi!(run::<f16>, op, epi.kind, (job, start, end, epi)),
            DataType::BF16 => dispatch_op_epi!(run::<bf16>, op, epi.kind, (job, start, end, epi)),
            DataType::I8 => dispatch_op_epi!(run::<i8>, op, epi.kind, (job, start, end, epi)),
            DataType::U8 => dispatch_op_epi!(run::<u8>, op, epi.kind, (job, start, end, epi)),
            DataType::I32 => dispatch_op_epi!(run::<i32>, op, epi.kind, (job, start, end, epi)),
            DataType::U32 => dispatch_op_epi!(run::<u32>, op, epi.kind, (job, start, end, epi)),
            DataType::I64 => dispatch_op_epi!(run::<i64>, op, epi.kind, (job, start, end, epi)),
            DataType::U64 => dispatch_op_epi!(run::<u64>, op, epi.kind, (job, start, end, epi)),
        }
    }
}
