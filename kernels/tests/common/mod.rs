//! Shared test machinery: random inputs per dtype (never zero), an independent reference
//! (float64 for floats, exact i128 arithmetic reduced modulo 2^bits for integers) and
//! per-dtype tolerances.
//!
//! Tolerances (u = unit roundoff of the output type: f64 2^-53, f32 2^-24, f16 2^-11,
//! bf16 2^-8; k = number of inputs):
//! - Sum, Avg, PreMulSum: |got - ref| <= (k + 2) * u * sum(|x_i|) * |factor|
//! - Prod: |got - ref| <= (k + 2) * u * |ref|
//! - Min, Max and every integer result: exact.
#![allow(dead_code)]

use oxccl_kernels::{DataType, ReduceOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    F(f64),
    I(i128),
}

pub fn bits(dt: DataType) -> u32 {
    (dt.size() * 8) as u32
}

pub fn signed(dt: DataType) -> bool {
    matches!(dt, DataType::I8 | DataType::I32 | DataType::I64)
}

/// Reduces an exact integer to the value a `dt` holds (two's complement wrap).
pub fn wrap(dt: DataType, v: i128) -> i128 {
    let b = bits(dt);
    let m = v.rem_euclid(1i128 << b);
    if signed(dt) && m >= 1i128 << (b - 1) {
        m - (1i128 << b)
    } else {
        m
    }
}

pub fn unit_roundoff(dt: DataType) -> f64 {
    match dt {
        DataType::F64 => 2f64.powi(-53),
        DataType::F32 => 2f64.powi(-24),
        DataType::F16 => 2f64.powi(-11),
        DataType::BF16 => 2f64.powi(-8),
        _ => 0.0,
    }
}

pub fn decode(dt: DataType, b: &[u8]) -> Num {
    let a2 = || [b[0], b[1]];
    let a4 = || [b[0], b[1], b[2], b[3]];
    let a8 = || b[..8].try_into().unwrap();
    match dt {
        DataType::F32 => Num::F(f32::from_le_bytes(a4()) as f64),
        DataType::F64 => Num::F(f64::from_le_bytes(a8())),
        DataType::F16 => Num::F(half::f16::from_bits(u16::from_le_bytes(a2())).to_f64()),
        DataType::BF16 => Num::F(half::bf16::from_bits(u16::from_le_bytes(a2())).to_f64()),
        DataType::I8 => Num::I(b[0] as i8 as i128),
        DataType::U8 => Num::I(b[0] as i128),
        DataType::I32 => Num::I(i32::from_le_bytes(a4()) as i128),
        DataType::U32 => Num::I(u32::from_le_bytes(a4()) as i128),
        DataType::I64 => Num::I(i64::from_le_bytes(a8()) as i128),
        DataType::U64 => Num::I(u64::from_le_bytes(a8()) as i128),
    }
}

/// One random non-zero element, encoded little-endian. Floats for Prod stay in [0.5, 2) in
/// magnitude so that eight-input products neither overflow f16 nor underflow.
pub fn random_elem(dt: DataType, op: ReduceOp, rng: &mut StdRng, out: &mut Vec<u8>) {
    if dt.is_float() {
        let mag: f64 = if op == ReduceOp::Prod {
            rng.gen_range(0.5..2.0)
        } else {
            rng.gen_range(0.01..4.0)
        };
        let v = if rng.gen::<bool>() { mag } else { -mag };
        match dt {
            DataType::F32 => out.extend((v as f32).to_le_bytes()),
            DataType::F64 => out.extend(v.to_le_bytes()),
            DataType::F16 => out.extend(half::f16::from_f64(v).to_bits().to_le_bytes()),
            _ => out.extend(half::bf16::from_f64(v).to_bits().to_le_bytes()),
        }
    } else {
        loop {
            let v: u64 = rng.gen();
            let bytes = &v.to_le_bytes()[..dt.size()];
            if bytes.iter().any(|b| *b != 0) {
                out.extend_from_slice(bytes);
                break;
            }
        }
    }
}

/// `n` random elements placed at byte offset `mis` of a fresh buffer; returns the buffer.
/// Past 8191 elements, a random block of 8191 (a prime, so the pattern never lines up with
/// vector or page boundaries) is repeated, which keeps debug-mode tests fast.
pub fn random_buf(dt: DataType, op: ReduceOp, n: usize, mis: usize, rng: &mut StdRng) -> Vec<u8> {
    const BLOCK: usize = 8191;
    let mut v = vec![0xAAu8; mis];
    v.reserve(n * dt.size());
    for _ in 0..n.min(BLOCK) {
        random_elem(dt, op, rng, &mut v);
    }
    let block = v[mis..].to_vec();
    while v.len() < mis + n * dt.size() {
        let want = (mis + n * dt.size() - v.len()).min(block.len());
        v.extend_from_slice(&block[..want]);
    }
    v
}

/// Checks every element of `got` against the reference of `inputs` under the user-level
/// `op` with `inputs.len()` contributors. Returns a description of the first mismatch.
pub fn check(dt: DataType, op: ReduceOp, inputs: &[&[u8]], got: &[u8]) -> Result<(), String> {
    let es = dt.size();
    let n = got.len() / es;
    let k = inputs.len();
    let u = unit_roundoff(dt);
    assert!(k <= 16, "check supports up to 16 inputs");
    let mut f = [0f64; 16];
    let mut v = [0i128; 16];
    for i in 0..n {
        for (j, b) in inputs.iter().enumerate() {
            match decode(dt, &b[i * es..(i + 1) * es]) {
                Num::F(x) => f[j] = x,
                Num::I(x) => v[j] = x,
            }
        }
        let g = decode(dt, &got[i * es..(i + 1) * es]);
        let ok = match g {
            Num::F(g) => {
                let f = &f[..k];
                let abs: f64 = f.iter().map(|v| v.abs()).sum();
                let sum: f64 = f.iter().sum();
                let (r, bound) = match op {
                    ReduceOp::Sum => (sum, abs),
                    ReduceOp::Avg => (sum / k as f64, abs / k as f64),
                    ReduceOp::PreMulSum(s) => (sum * s, abs * s.abs()),
                    ReduceOp::Prod => {
                        let p: f64 = f.iter().product();
                        (p, p.abs())
                    }
                    ReduceOp::Min => (f.iter().cloned().fold(f64::INFINITY, f64::min), 0.0),
                    ReduceOp::Max => (f.iter().cloned().fold(f64::NEG_INFINITY, f64::max), 0.0),
                };
                let tol = (k as f64 + 2.0) * u * bound;
                if (g - r).abs() <= tol {
                    Ok(())
                } else {
                    Err(format!(
                        "got {g}, want {r} (tolerance {tol:e}); inputs {f:?}"
                    ))
                }
            }
            Num::I(g) => {
                let v = &v[..k];
                let sum = wrap(dt, v.iter().sum());
                let r = match op {
                    ReduceOp::Sum => sum,
                    ReduceOp::Avg => sum / k as i128,
                    ReduceOp::PreMulSum(s) => {
                        wrap(dt, v.iter().map(|x| wrap(dt, x * s as i128)).sum())
                    }
                    ReduceOp::Prod => v.iter().fold(1i128, |a, x| wrap(dt, a.wrapping_mul(*x))),
                    ReduceOp::Min => *v.iter().min().unwrap(),
                    ReduceOp::Max => *v.iter().max().unwrap(),
                };
                if g == r {
                    Ok(())
                } else {
                    Err(format!("got {g}, want {r}; inputs {v:?}"))
                }
            }
        };
        if let Err(e) = ok {
            return Err(format!("{dt} {op} k={k} n={n}: element {i}: {e}"));
        }
    }
    Ok(())
}

/// The scalar used for PreMulSum in the sweeps: 0.5 for floats, 3 for integers (which need
/// an integral scalar).
pub fn premul_for(dt: DataType) -> ReduceOp {
    if dt.is_float() {
        ReduceOp::PreMulSum(0.5)
    } else {
        ReduceOp::PreMulSum(3.0)
    }
}

pub fn ops_for(dt: DataType) -> [ReduceOp; 6] {
    [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
        premul_for(dt),
    ]
}
