//! Helpers shared by the collectives' integration tests: thread ranks, data unique per (rank,
//! index) for every dtype, and the exact expected results.

#![allow(dead_code)]

use oxccl_collectives::{Communicator, DataType, Error, LocalTransport, Options, ReduceOp};
use std::time::{Duration, Instant};

/// Runs `f` on each rank of a fresh thread communicator; panics (naming the rank) if any does.
pub fn on_ranks<F>(p: usize, transport: LocalTransport, options: Options, f: F)
where
    F: Fn(Communicator) + Send + Sync + Clone + 'static,
{
    let comms = Communicator::local_with(p, transport, options).expect("local communicator");
    let handles: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let f = f.clone();
            std::thread::Builder::new()
                .name(format!("rank{}", c.rank()))
                .spawn(move || f(c))
                .expect("spawn")
        })
        .collect();
    for (r, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            panic!("rank {r} of {p} ({transport:?}) failed");
        }
    }
}

/// A mixing hash: values look random but are reproducible from (seed, rank, index).
fn mix(seed: u64, rank: usize, i: usize) -> u64 {
    let mut x = seed
        ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x
}

/// A small integer value for (rank, index), chosen so that every sum, product, min and max
/// over up to 16 ranks is exact in `dtype` (or wraps exactly like the kernels for integers).
pub fn value(dtype: DataType, op: ReduceOp, seed: u64, rank: usize, i: usize) -> f64 {
    let h = mix(seed, rank, i);
    if op == ReduceOp::Prod {
        // Products of 13 values from {-1, 1, 2} stay within 2^13: exact in every float type.
        // (Unsigned types hold -1 as their maximum; products wrap consistently either way.)
        return [-1.0, 1.0, 2.0, 1.0][(h % 4) as usize];
    }
    let span = match dtype {
        DataType::F16 | DataType::BF16 | DataType::I8 | DataType::U8 => 9,
        _ => 2001,
    };
    let v = (h % span) as f64;
    if dtype_is_unsigned(dtype) {
        v
    } else {
        v - (span / 2) as f64
    }
}

fn dtype_is_unsigned(d: DataType) -> bool {
    matches!(d, DataType::U8 | DataType::U32 | DataType::U64)
}

pub fn encode(dtype: DataType, v: f64, out: &mut [u8]) {
    match dtype {
        DataType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => out.copy_from_slice(&v.to_le_bytes()),
        DataType::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        DataType::BF16 => out.copy_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
        DataType::I8 => out.copy_from_slice(&(v as i64 as i8).to_le_bytes()),
        DataType::U8 => out.copy_from_slice(&(v as i64 as u8).to_le_bytes()),
        DataType::I32 => out.copy_from_slice(&(v as i64 as i32).to_le_bytes()),
        DataType::U32 => out.copy_from_slice(&(v as i64 as u32).to_le_bytes()),
        DataType::I64 => out.copy_from_slice(&(v as i64).to_le_bytes()),
        DataType::U64 => out.copy_from_slice(&(v as i64 as u64).to_le_bytes()),
    }
}

pub fn decode(dtype: DataType, b: &[u8]) -> f64 {
    let a = |n: usize| -> [u8; 8] {
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&b[..n]);
        x
    };
    match dtype {
        DataType::F32 => f32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::F64 => f64::from_le_bytes(b.try_into().unwrap()),
        DataType::F16 => half::f16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::BF16 => half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64(),
        DataType::I8 => b[0] as i8 as f64,
        DataType::U8 => b[0] as f64,
        DataType::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::U32 => u32::from_le_bytes(b.try_into().unwrap()) as f64,
        DataType::I64 => i64::from_le_bytes(a(8)) as f64,
        DataType::U64 => u64::from_le_bytes(a(8)) as f64,
    }
}

/// `count` elements of rank `rank`'s data.
pub fn data(dtype: DataType, op: ReduceOp, seed: u64, rank: usize, count: usize) -> Vec<u8> {
    let es = dtype.size();
    let mut v = vec![0u8; count * es];
    for (i, c) in v.chunks_exact_mut(es).enumerate() {
        encode(dtype, value(dtype, op, seed, rank, i), c);
    }
    v
}

/// What the kernels compute for element `i` reduced over `p` ranks, in `dtype`.
pub fn expected(dtype: DataType, op: ReduceOp, seed: u64, p: usize, i: usize) -> f64 {
    let vals: Vec<f64> = (0..p).map(|r| value(dtype, op, seed, r, i)).collect();
    let sum: f64 = vals.iter().sum();
    let raw = match op {
        ReduceOp::Sum => sum,
        ReduceOp::Prod => vals.iter().product(),
        ReduceOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
        ReduceOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Avg if dtype.is_float() => sum / p as f64,
        ReduceOp::Avg => {
            // Truncating division of the wrapped sum, in the element's width.
            let wrapped = wrap(dtype, sum);
            return wrap(dtype, (wrapped as i128 / p as i128) as f64);
        }
        ReduceOp::PreMulSum(s) => sum * s,
    };
    if dtype.is_float() {
        raw
    } else {
        wrap(dtype, raw)
    }
}

/// An integer result as the element type holds it (two's complement wrap).
fn wrap(dtype: DataType, v: f64) -> f64 {
    let x = v as i128;
    match dtype {
        DataType::I8 => x as i8 as f64,
        DataType::U8 => x as u8 as f64,
        DataType::I32 => x as i32 as f64,
        DataType::U32 => x as u32 as f64,
        DataType::I64 => x as i64 as f64,
        DataType::U64 => x as u64 as f64,
        _ => v,
    }
}

/// Relative tolerance of a float result: exact inputs, one rounding for Avg and PreMulSum
/// (the 16-bit types round once to their 8 or 11 significant bits).
pub fn tolerance(dtype: DataType) -> f64 {
    match dtype {
        DataType::F16 => 1e-3,
        DataType::BF16 => 8e-3,
        DataType::F32 => 1e-6,
        DataType::F64 => 1e-13,
        _ => 0.0,
    }
}

/// Panics at the first element of `got` that differs from `want(i)`.
pub fn check(what: &str, dtype: DataType, got: &[u8], want: impl Fn(usize) -> f64) {
    let es = dtype.size();
    for (i, c) in got.chunks_exact(es).enumerate() {
        let g = decode(dtype, c);
        let w = want(i);
        let tol = tolerance(dtype) * w.abs().max(1.0);
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w}"
        );
    }
}

/// One in-place sum all-reduce of `n` elements of `dtype` on `comm`, from `data(.., seed, ..)`,
/// checked on every element against the reference (`what` names it in a failure).
pub fn all_reduce_sum_checked(
    comm: &Communicator,
    dtype: DataType,
    n: usize,
    seed: u64,
    what: &str,
) {
    let mut buf = data(dtype, ReduceOp::Sum, seed, comm.rank(), n);
    comm.all_reduce_in_place_bytes(&mut buf, dtype, ReduceOp::Sum)
        .unwrap();
    let p = comm.size();
    check(what, dtype, &buf, |i| {
        expected(dtype, ReduceOp::Sum, seed, p, i)
    });
}

/// Default options with the given `OXCCL_TIMEOUT`, in seconds.
pub fn opts(timeout_s: f64) -> Options {
    Options {
        timeout: Duration::from_secs_f64(timeout_s),
        ..Options::default()
    }
}

/// Runs `f` on each of `p` thread ranks (in-memory rings) and returns what each returned and
/// how long it took, for tests where ranks are expected to fail.
pub fn each<T: Send + 'static>(
    p: usize,
    o: Options,
    f: impl Fn(usize, &Communicator) -> Result<T, Error> + Send + Sync + Clone + 'static,
) -> Vec<(Result<T, Error>, Duration)> {
    each_on(LocalTransport::Memory, p, o, f)
}

/// [`each`] over `transport`.
pub fn each_on<T: Send + 'static>(
    transport: LocalTransport,
    p: usize,
    o: Options,
    f: impl Fn(usize, &Communicator) -> Result<T, Error> + Send + Sync + Clone + 'static,
) -> Vec<(Result<T, Error>, Duration)> {
    let comms = Communicator::local_with(p, transport, o).unwrap();
    let hs: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let f = f.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (f(c.rank(), &c), t.elapsed())
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every rank failed within 10 s, and at least one named the disagreement (`Error::Mismatch`).
pub fn assert_every_rank_failed_with_a_mismatch<T>(
    name: &str,
    res: &[(Result<T, Error>, Duration)],
) {
    for (r, (out, took)) in res.iter().enumerate() {
        assert!(out.is_err(), "{name}: rank {r} succeeded");
        assert!(
            *took < Duration::from_secs(10),
            "{name}: rank {r} took {took:?}"
        );
    }
    assert!(
        res.iter()
            .any(|(o, _)| matches!(o, Err(Error::Mismatch { .. }))),
        "{name}: no rank reported a mismatch: {:?}",
        res.iter()
            .map(|(o, _)| o.as_ref().err().map(ToString::to_string))
            .collect::<Vec<_>>()
    );
}
