//! The typed API, error cases, names, and the reference checker itself.

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use half::{bf16, f16};
use oxccl_kernels::{
    par_reduce_copy_bytes_with, reduce, reduce_bytes, reduce_copy, reduce_copy_bytes,
    reduce_copy_bytes_with, CpuBackend, DataType, Element, Epilogue, KernelError, ReduceOp,
};

#[test]
fn typed_forms_match_byte_forms() {
    fn one<T: Element>(vals: &[f64], conv: impl Fn(f64) -> T) {
        let a: Vec<T> = vals.iter().map(|v| conv(*v)).collect();
        let b: Vec<T> = vals.iter().map(|v| conv(v * 0.5 + 1.0)).collect();
        let mut dst = a.clone();
        reduce(ReduceOp::Max, &mut dst, &[&b]).unwrap();
        let mut o1 = vec![conv(1.0); a.len()];
        let mut o2 = vec![conv(1.0); a.len()];
        reduce_copy(ReduceOp::Max, &[&a, &b], &mut [&mut o1, &mut o2]).unwrap();
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&dst),
            bytemuck::cast_slice::<T, u8>(&o1)
        );
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&o1),
            bytemuck::cast_slice::<T, u8>(&o2)
        );
        let mut o3 = vec![0u8; a.len() * T::DTYPE.size()];
        let srcs = [bytemuck::cast_slice(&a), bytemuck::cast_slice(&b)];
        reduce_copy_bytes(T::DTYPE, ReduceOp::Max, &srcs, &mut [&mut o3]).unwrap();
        assert_eq!(bytemuck::cast_slice::<T, u8>(&o1), &o3[..]);
        common::check(T::DTYPE, ReduceOp::Max, &srcs, &o3).unwrap();
    }
    let vals: Vec<f64> = (0..77)
        .map(|i| (i as f64 * 1.7).sin() * 50.0 + 0.3)
        .collect();
    one::<f32>(&vals, |v| v as f32);
    one::<f64>(&vals, |v| v);
    one::<f16>(&vals, f16::from_f64);
    one::<bf16>(&vals, bf16::from_f64);
    one::<i8>(&vals, |v| v as i8);
    one::<u8>(&vals, |v| v.abs() as u8);
    one::<i32>(&vals, |v| (v * 1e6) as i32);
    one::<u32>(&vals, |v| (v.abs() * 1e6) as u32);
    one::<i64>(&vals, |v| (v * 1e15) as i64);
    one::<u64>(&vals, |v| (v.abs() * 1e15) as u64);
}

#[test]
fn integer_sum_and_prod_wrap() {
    let mut d = vec![i8::MAX, i8::MIN, 100];
    reduce(ReduceOp::Sum, &mut d, &[&[1, -1, 100]]).unwrap();
    assert_eq!(d, vec![i8::MIN, i8::MAX, -56]);
    let mut d = vec![u64::MAX; 70];
    reduce(ReduceOp::Prod, &mut d, &[&[2; 70]]).unwrap();
    assert!(d.iter().all(|v| *v == u64::MAX - 1));
    let mut d = vec![7i32; 33];
    reduce(ReduceOp::Avg, &mut d, &[&[-2; 33]]).unwrap();
    assert!(
        d.iter().all(|v| *v == 2),
        "(7 - 2) / 2 truncates to 2: {d:?}"
    );
}

#[test]
fn errors_are_clean() {
    let a = [0u8; 12];
    let b = [0u8; 8];
    let mut out = [0u8; 12];
    let e =
        reduce_copy_bytes(DataType::F32, ReduceOp::Sum, &[&a, &b], &mut [&mut out]).unwrap_err();
    assert!(
        matches!(e, KernelError::LengthMismatch { ref what, got: 8, expected: 12 } if what == "srcs[1]"),
        "{e}"
    );
    let e = reduce_copy_bytes(DataType::F64, ReduceOp::Sum, &[&a], &mut [&mut out]).unwrap_err();
    assert!(
        matches!(
            e,
            KernelError::RaggedLength {
                size: 8,
                len: 12,
                ..
            }
        ),
        "{e}"
    );
    let mut short = [0u8; 4];
    let e = reduce_copy_bytes(DataType::F32, ReduceOp::Sum, &[&a], &mut [&mut short]).unwrap_err();
    assert!(matches!(e, KernelError::LengthMismatch { .. }), "{e}");
    let e = reduce_copy_bytes(DataType::F32, ReduceOp::Sum, &[], &mut [&mut out]).unwrap_err();
    assert_eq!(e, KernelError::NoInputs);
    let e = reduce_copy_bytes(DataType::F32, ReduceOp::Sum, &[&a], &mut []).unwrap_err();
    assert_eq!(e, KernelError::NoOutputs);
    let e = reduce_copy_bytes_with(
        DataType::F32,
        ReduceOp::Avg,
        Epilogue::None,
        &[&a],
        &mut [&mut out],
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::NotCombining(ReduceOp::Avg)), "{e}");
    let e = reduce_copy_bytes_with(
        DataType::I32,
        ReduceOp::Sum,
        Epilogue::Scale(0.5),
        &[&a],
        &mut [&mut out],
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::InvalidEpilogue { .. }), "{e}");
    let e = reduce_copy_bytes_with(
        DataType::F32,
        ReduceOp::Sum,
        Epilogue::Divide(0),
        &[&a],
        &mut [&mut out],
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::InvalidEpilogue { .. }), "{e}");
    let e = reduce_copy_bytes_with(
        DataType::F32,
        ReduceOp::Sum,
        Epilogue::Scale(f64::NAN),
        &[&a],
        &mut [&mut out],
    )
    .unwrap_err();
    assert!(matches!(e, KernelError::InvalidEpilogue { .. }), "{e}");
    let mut d = [1.0f32; 3];
    assert!(reduce(ReduceOp::Sum, &mut d, &[&[1.0; 4]]).is_err());
    assert!(reduce_bytes(DataType::BF16, ReduceOp::Sum, &mut [0u8; 3], &[]).is_err());
    // Every error renders a message that names the problem.
    assert!(e.to_string().contains("not finite"), "{e}");
}

#[test]
fn zero_length_and_single_input() {
    let mut out: [&mut [u8]; 1] = [&mut []];
    reduce_copy_bytes(DataType::F32, ReduceOp::Sum, &[&[]], &mut out).unwrap();
    let x = [3.0f64, -1.5];
    let mut o = [0.0f64; 2];
    reduce_copy(ReduceOp::PreMulSum(2.0), &[&x], &mut [&mut o]).unwrap();
    assert_eq!(o, [6.0, -3.0]);
}

#[test]
fn names_parse_and_print() {
    for dt in DataType::ALL {
        assert_eq!(dt.name().parse::<DataType>().unwrap(), dt);
        assert_eq!(dt.short_name().parse::<DataType>().unwrap(), dt);
        assert_eq!(dt.to_string(), dt.name());
    }
    assert!("float128".parse::<DataType>().is_err());
    for op in ["sum", "prod", "min", "max", "avg"] {
        assert_eq!(op.parse::<ReduceOp>().unwrap().to_string(), op);
    }
    assert_eq!(
        "premulsum".parse::<ReduceOp>().unwrap(),
        ReduceOp::PreMulSum(1.0)
    );
    assert_eq!(
        "premulsum(0.25)".parse::<ReduceOp>().unwrap(),
        ReduceOp::PreMulSum(0.25)
    );
    assert!("median".parse::<ReduceOp>().is_err());
    assert_eq!(ReduceOp::Avg.split(4), (ReduceOp::Sum, Epilogue::Divide(4)));
    assert_eq!(
        ReduceOp::PreMulSum(0.5).split(4),
        (ReduceOp::Sum, Epilogue::Scale(0.5))
    );
    assert_eq!(ReduceOp::Min.split(4), (ReduceOp::Min, Epilogue::None));
    assert!(CpuBackend::available().contains(&CpuBackend::Portable));
    assert_eq!("avx2".parse::<CpuBackend>().unwrap(), CpuBackend::Avx2);
}

#[test]
fn unavailable_backend_is_an_error() {
    let missing = CpuBackend::ALL.into_iter().find(|b| !b.is_available());
    let Some(b) = missing else {
        skip!("skipped: every CPU backend is available on this machine");
        return;
    };
    let opts = oxccl_kernels::Options {
        backend: Some(b),
        ..Default::default()
    };
    let a = [0u8; 8];
    let mut o = [0u8; 8];
    let e = oxccl_kernels::reduce_copy_bytes_opts(
        &opts,
        DataType::F32,
        ReduceOp::Sum,
        Epilogue::None,
        &[&a],
        &mut [&mut o],
    )
    .unwrap_err();
    assert_eq!(e, KernelError::BackendUnavailable(b.name()));
}

#[test]
fn par_form_matches_single_thread() {
    let mut r = common::rng(5);
    let n = 3 * (oxccl_kernels::MIN_BYTES_PER_THREAD / 4) + 17;
    let a = common::random_buf(DataType::F32, ReduceOp::Sum, n, 0, &mut r);
    let b = common::random_buf(DataType::F32, ReduceOp::Sum, n, 0, &mut r);
    let mut p = vec![0u8; n * 4];
    let mut s = vec![0u8; n * 4];
    par_reduce_copy_bytes_with(
        3,
        DataType::F32,
        ReduceOp::Sum,
        Epilogue::Divide(2),
        &[&a, &b],
        &mut [&mut p],
    )
    .unwrap();
    par_reduce_copy_bytes_with(
        1,
        DataType::F32,
        ReduceOp::Sum,
        Epilogue::Divide(2),
        &[&a, &b],
        &mut [&mut s],
    )
    .unwrap();
    assert_eq!(p, s);
    common::check(DataType::F32, ReduceOp::Avg, &[&a, &b], &p).unwrap();
}

/// The checker must notice a wrong element, or the sweeps prove nothing.
#[test]
fn checker_rejects_wrong_results() {
    let mut r = common::rng(9);
    for dt in DataType::ALL {
        let a = common::random_buf(dt, ReduceOp::Sum, 50, 0, &mut r);
        let b = common::random_buf(dt, ReduceOp::Sum, 50, 0, &mut r);
        let mut o = vec![0u8; a.len()];
        reduce_copy_bytes(dt, ReduceOp::Sum, &[&a, &b], &mut [&mut o]).unwrap();
        common::check(dt, ReduceOp::Sum, &[&a, &b], &o).unwrap();
        // Flip a low mantissa/integer bit and then a high one in element 17.
        let i = 17 * dt.size();
        o[i + dt.size() - 1] ^= 0x40;
        assert!(
            common::check(dt, ReduceOp::Sum, &[&a, &b], &o).is_err(),
            "{dt}: high-bit error not caught"
        );
        o[i + dt.size() - 1] ^= 0x40;
        o[i] ^= 0x01;
        if !dt.is_float() {
            assert!(
                common::check(dt, ReduceOp::Sum, &[&a, &b], &o).is_err(),
                "{dt}: low-bit error not caught"
            );
        }
    }
}

/// Integer Avg divides the wrapped sum with truncation toward zero, for extreme values and
/// divisors too (the 8- and 32-bit paths divide through f64).
#[test]
fn integer_division_is_exact_at_the_edges() {
    use oxccl_kernels::{reduce_copy_bytes_with, Epilogue};
    fn go<T: Element + PartialEq + std::fmt::Debug>(vals: &[T], d: u64, want: impl Fn(T) -> T) {
        let src: &[u8] = bytemuck::cast_slice(vals);
        let mut out = vec![0u8; src.len()];
        reduce_copy_bytes_with(
            T::DTYPE,
            ReduceOp::Sum,
            Epilogue::Divide(d),
            &[src],
            &mut [&mut out],
        )
        .unwrap();
        let got: Vec<T> = bytemuck::pod_collect_to_vec(&out);
        let expect: Vec<T> = vals.iter().map(|v| want(*v)).collect();
        assert_eq!(got, expect, "{} / {d}", T::DTYPE);
    }
    for d in [
        1u64,
        2,
        3,
        7,
        127,
        128,
        255,
        65_537,
        (1 << 31) + 1,
        u32::MAX as u64,
        1 << 40,
        u64::MAX,
    ] {
        let i32s = [i32::MIN, i32::MIN + 1, -7, -1, 1, 7, i32::MAX - 1, i32::MAX];
        go(&i32s, d, |v| (v as i128 / d as i128) as i32);
        let u32s = [1u32, 2, 7, u32::MAX - 1, u32::MAX, 1 << 31];
        go(&u32s, d, |v| (v as u128 / d as u128) as u32);
        go(&[i8::MIN, -1, 1, i8::MAX], d, |v| {
            (v as i128 / d as i128) as i8
        });
        go(&[1u8, 128, u8::MAX], d, |v| (v as u128 / d as u128) as u8);
        go(&[i64::MIN, -1, 1, i64::MAX], d, |v| {
            (v as i128 / d as i128) as i64
        });
        go(&[1u64, u64::MAX - 1, u64::MAX], d, |v| v / d);
    }
}
