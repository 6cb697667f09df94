//! Every datatype and reduction through the C entry points, on random data, against a reference
//! computed here: all-reduce, reduce and reduce-scatter, out of place and in place.
//! Integers must match exactly (sums and products wrap, Avg truncates the wrapped sum, as NCCL);
//! floats are drawn from [-2, 2) and checked to a relative tolerance (of max(1, |want|)) of
//! 1e-2 for float16, 4e-2 for bfloat16, 1e-5 for float32 and 1e-12 for float64: a few roundings
//! of each type's epsilon (2^-11, 2^-8, 2^-24, 2^-53) over up to 4 ranks.

// Every unsafe block here calls a C entry point with buffers of the sizes the call reads and
// writes (NULL only where the call reads nothing), which is all those functions require.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::{ok, on_ranks};
use half::{bf16, f16};
use oxccl::*;
use rand::{Rng, SeedableRng};
use std::ffi::c_void;
use std::fmt::Debug;

const NULL: *mut c_void = std::ptr::null_mut();

trait Elem: bytemuck::Pod + Debug + PartialEq + Send + Sync {
    const DT: oxcclDataType_t;
    fn draw(rng: &mut rand::rngs::StdRng) -> Self;
    fn reference(op: oxcclRedOp_t, vals: &[Self]) -> Self;
    fn close(got: Self, want: Self) -> bool;
}

macro_rules! int_elem {
    ($t:ty, $dt:expr) => {
        impl Elem for $t {
            const DT: oxcclDataType_t = $dt as oxcclDataType_t;
            fn draw(rng: &mut rand::rngs::StdRng) -> Self {
                rng.gen()
            }
            fn reference(op: oxcclRedOp_t, v: &[Self]) -> Self {
                let sum = || v.iter().fold(0 as $t, |a, &b| a.wrapping_add(b));
                match op {
                    0 => sum(),
                    1 => v.iter().fold(1 as $t, |a, &b| a.wrapping_mul(b)),
                    2 => *v.iter().max().unwrap(),
                    3 => *v.iter().min().unwrap(),
                    _ => sum() / (v.len() as $t),
                }
            }
            fn close(got: Self, want: Self) -> bool {
                got == want
            }
        }
    };
}

int_elem!(i8, oxcclDataType::oxcclInt8);
int_elem!(u8, oxcclDataType::oxcclUint8);
int_elem!(i32, oxcclDataType::oxcclInt32);
int_elem!(u32, oxcclDataType::oxcclUint32);
int_elem!(i64, oxcclDataType::oxcclInt64);
int_elem!(u64, oxcclDataType::oxcclUint64);

macro_rules! float_elem {
    ($t:ty, $dt:expr, $from:expr, $to:expr, $tol:expr) => {
        impl Elem for $t {
            const DT: oxcclDataType_t = $dt as oxcclDataType_t;
            fn draw(rng: &mut rand::rngs::StdRng) -> Self {
                $from(rng.gen_range(-2.0f64..2.0))
            }
            fn reference(op: oxcclRedOp_t, v: &[Self]) -> Self {
                let v: Vec<f64> = v.iter().map(|&x| $to(x)).collect();
                let sum: f64 = v.iter().sum();
                $from(match op {
                    0 => sum,
                    1 => v.iter().product(),
                    2 => v.iter().copied().fold(f64::MIN, f64::max),
                    3 => v.iter().copied().fold(f64::MAX, f64::min),
                    _ => sum / v.len() as f64,
                })
            }
            fn close(got: Self, want: Self) -> bool {
                let (g, w) = ($to(got), $to(want));
                (g - w).abs() <= $tol * w.abs().max(1.0)
            }
        }
    };
}

float_elem!(
    f16,
    oxcclDataType::oxcclFloat16,
    f16::from_f64,
    f16::to_f64,
    1e-2
);
float_elem!(
    bf16,
    oxcclDataType::oxcclBfloat16,
    bf16::from_f64,
    bf16::to_f64,
    4e-2
);
float_elem!(
    f32,
    oxcclDataType::oxcclFloat32,
    |x| x as f32,
    f64::from,
    1e-5
);
float_elem!(f64, oxcclDataType::oxcclFloat64, |x| x, |x| x, 1e-12);

fn inputs<T: Elem>(seed: u64, n: usize, count: usize) -> Vec<Vec<T>> {
    (0..n)
        .map(|q| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1000 + q as u64);
            (0..count).map(|_| T::draw(&mut rng)).collect()
        })
        .collect()
}

#[track_caller]
fn expect_close<T: Elem>(got: &[T], want: &[T], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            T::close(*g, *w),
            "{what}: element {i}: got {g:?}, want {w:?}"
        );
    }
}

/// All-reduce, reduce and reduce-scatter of random `T`s with every op on `n` ranks.
fn check<T: Elem>(n: usize, per_rank: usize) {
    on_ranks(n, move |comm, me| {
        let count = per_rank * n;
        for op in 0..oxcclRedOp::oxcclNumOps as oxcclRedOp_t {
            let what = |call: &str| format!("{call} {:?} op {op} rank {me}/{n}", T::DT);
            let all = inputs::<T>(T::DT as u64 * 10 + op as u64, n, count);
            let want: Vec<T> = (0..count)
                .map(|i| T::reference(op, &all.iter().map(|v| v[i]).collect::<Vec<_>>()))
                .collect();
            let mine = &all[me];
            let (sp, dt) = (mine.as_ptr().cast::<c_void>(), T::DT);

            let mut out = vec![T::zeroed(); count];
            // SAFETY (every call below): buffers of the sizes the call reads and writes.
            ok(
                unsafe { oxcclAllReduce(sp, out.as_mut_ptr().cast(), count, dt, op, comm, NULL) },
                comm,
            );
            expect_close(&out, &want, &what("all-reduce"));

            let mut buf = mine.clone();
            let p = buf.as_mut_ptr().cast::<c_void>();
            ok(
                unsafe { oxcclAllReduce(p, p, count, dt, op, comm, NULL) },
                comm,
            );
            expect_close(&buf, &want, &what("in-place all-reduce"));

            let root = (op as usize + 1) % n;
            let mut out = vec![T::zeroed(); if me == root { count } else { 0 }];
            let rp = if me == root {
                out.as_mut_ptr().cast()
            } else {
                NULL
            };
            ok(
                unsafe { oxcclReduce(sp, rp, count, dt, op, root as i32, comm, NULL) },
                comm,
            );
            if me == root {
                expect_close(&out, &want, &what("reduce"));
            }
            let mut buf = mine.clone();
            let p = buf.as_mut_ptr().cast::<c_void>();
            ok(
                unsafe { oxcclReduce(p, p, count, dt, op, root as i32, comm, NULL) },
                comm,
            );
            if me == root {
                expect_close(&buf, &want, &what("in-place reduce"));
            } else {
                assert_eq!(
                    &buf,
                    mine,
                    "{}: a non-root's buffer changed",
                    what("reduce")
                );
            }

            let block = &want[me * per_rank..(me + 1) * per_rank];
            let mut out = vec![T::zeroed(); per_rank];
            ok(
                unsafe {
                    oxcclReduceScatter(sp, out.as_mut_ptr().cast(), per_rank, dt, op, comm, NULL)
                },
                comm,
            );
            expect_close(&out, block, &what("reduce-scatter"));
            let mut buf = mine.clone();
            let s = buf.as_mut_ptr();
            // SAFETY: block `me` of the same buffer, NCCL's in-place arrangement.
            let r = unsafe { s.add(me * per_rank) };
            ok(
                unsafe { oxcclReduceScatter(s.cast(), r.cast(), per_rank, dt, op, comm, NULL) },
                comm,
            );
            expect_close(
                &buf[me * per_rank..(me + 1) * per_rank],
                block,
                &what("in-place reduce-scatter"),
            );
        }
    });
}

#[test]
fn int8() {
    check::<i8>(3, 101);
}
#[test]
fn uint8() {
    check::<u8>(4, 64);
}
#[test]
fn int32() {
    check::<i32>(3, 1000);
}
#[test]
fn uint32() {
    check::<u32>(2, 517);
}
#[test]
fn int64() {
    check::<i64>(4, 333);
}
#[test]
fn uint64() {
    check::<u64>(3, 250);
}
#[test]
fn float16() {
    check::<f16>(3, 400);
}
#[test]
fn bfloat16() {
    check::<bf16>(4, 300);
}
#[test]
fn float32() {
    check::<f32>(3, 7000);
}
#[test]
fn float64() {
    check::<f64>(2, 1001);
}
