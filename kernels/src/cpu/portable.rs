//! The portable backend: plain Rust over unaligned reads of fixed-size arrays, which the
//! compiler vectorises for whatever target it builds for. It is also the tail of
//! every SIMD loop and the path for integer epilogues (which have no SIMD division).

use super::Job;
use crate::element::Element;
use crate::types::{code, DataType, EpiParams};
use half::{bf16, f16};
use std::mem::size_of;

/// Elements per step: a fixed-size array the compiler unrolls and vectorises (SLP) for the
/// build target's vector width, like one unrolled iteration of the SIMD driver.
const W: usize = 16;

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
    let mut i = start;
    while i + W <= end {
        let off = i * es;
        // SAFETY: elements [i, i + W) lie inside every source and destination (Job contract,
        // `end <= job.len`); unaligned array reads and writes have no alignment requirement;
        // every source element is read before the destinations are written (in-place jobs).
        unsafe {
            let v = first.add(off).cast::<[T; W]>().read_unaligned();
            let mut acc: [T::Acc; W] = std::array::from_fn(|j| v[j].to_acc());
            for s in rest {
                let v = s.add(off).cast::<[T; W]>().read_unaligned();
                for (a, x) in acc.iter_mut().zip(v) {
                    *a = T::combine::<OP>(*a, x.to_acc());
                }
            }
            let out: [T; W] = std::array::from_fn(|j| T::from_acc(T::epilogue::<EPI>(acc[j], epi)));
            for d in job.dsts {
                d.add(off).cast::<[T; W]>().write_unaligned(out);
            }
        }
        i += W;
    }
    while i < end {
        let off = i * es;
        // SAFETY: as above, for the single element `i < end`.
        unsafe {
            let mut a = first.add(off).cast::<T>().read_unaligned().to_acc();
            for s in rest {
                a = T::combine::<OP>(a, s.add(off).cast::<T>().read_unaligned().to_acc());
            }
            let v = T::from_acc(T::epilogue::<EPI>(a, epi));
            for d in job.dsts {
                d.add(off).cast::<T>().write_unaligned(v);
            }
        }
        i += 1;
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
