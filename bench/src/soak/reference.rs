//! The soak's data and its reference: every rank can compute any rank's input of any call
//! (a hash of the call's seed, the rank and the index), so each rank checks every element it
//! receives against a value it computed alone.
//!
//! Values are small nonzero integers, so float sums, products, minima and maxima are exact in
//! every float type (|sum| <= 8 * ranks, products of +-1 and +-2); float `Avg` and
//! `PreMulSum(0.5)` are checked within 2 units in the last place of their type.
//! Integer reductions are computed with the kernels' documented wrapping, so they must match
//! bit for bit.

use oxccl_collectives::{DataType, ReduceOp};

/// splitmix64: a fast, well-mixed hash of a counter (Steele, Lea, Flood 2014).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A reproducible random sequence (the same on every rank from the same seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant at these ranges).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rank `rank`'s input element `i` in the call with seed `call`.
pub fn value(call: u64, rank: usize, i: usize, dtype: DataType, op: Option<ReduceOp>) -> i64 {
    let h = mix(call ^ mix((rank as u64) << 40 ^ i as u64));
    let signed = dtype.is_float() || matches!(dtype, DataType::I8 | DataType::I32 | DataType::I64);
    match (op, signed) {
        // Products stay exact in every float type and small in every integer type.
        (Some(ReduceOp::Prod), true) => [-2, -1, 1, 2][(h % 4) as usize],
        (Some(ReduceOp::Prod), false) => 1 + (h % 3) as i64,
        (_, true) => {
            let v = (h % 16) as i64 - 8; // -8..=7
            if v >= 0 {
                v + 1
            } else {
                v
            }
        }
        (_, false) => 1 + (h % 16) as i64,
    }
}

/// Writes `v` as one element of `dtype` (integers truncate, i.e. wrap, to the type's width).
pub fn encode(dtype: DataType, v: i128, out: &mut [u8]) {
    match dtype {
        DataType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => out.copy_from_slice(&(v as f64).to_le_bytes()),
        DataType::F16 => out.copy_from_slice(&half::f16::from_f64(v as f64).to_le_bytes()),
        DataType::BF16 => out.copy_from_slice(&half::bf16::from_f64(v as f64).to_le_bytes()),
        DataType::I8 => out.copy_from_slice(&(v as i8).to_le_bytes()),
        DataType::U8 => out.copy_from_slice(&(v as u8).to_le_bytes()),
        DataType::I32 => out.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::U32 => out.copy_from_slice(&(v as u32).to_le_bytes()),
        DataType::I64 => out.copy_from_slice(&(v as i64).to_le_bytes()),
        DataType::U64 => out.copy_from_slice(&(v as u64).to_le_bytes()),
    }
}

/// Reads one float element as f64.
fn decode_float(dtype: DataType, b: &[u8]) -> f64 {
    match dtype {
        DataType::F32 => f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64,
        DataType::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
        DataType::F16 => half::f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
        DataType::BF16 => half::bf16::from_le_bytes(b.try_into().expect("2 bytes")).to_f64(),
        _ => unreachable!("integer types are compared bytewise"),
    }
}

/// Wraps `v` to the range of the integer type `dtype`.
fn wrap(dtype: DataType, v: i128) -> i128 {
    match dtype {
        DataType::I8 => v as i8 as i128,
        DataType::U8 => v as u8 as i128,
        DataType::I32 => v as i32 as i128,
        DataType::U32 => v as u32 as i128,
        DataType::I64 => v as i64 as i128,
        _ => v as u64 as i128,
    }
}

/// What one element of a result should be.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Want {
    /// Exactly this integer-valued element.
    Exact(i128),
    /// A float within 2 units in the last place (float `Avg` and `PreMulSum`).
    Near(f64),
}

/// The scalar of `PreMulSum` for `dtype`: integer types need an integral one.
pub fn premul_scalar(dtype: DataType) -> f64 {
    if dtype.is_float() {
        0.5
    } else {
        3.0
    }
}

/// `op` over the values `vals` of every rank, as the kernels define it for `dtype`.
pub fn reduce(dtype: DataType, op: ReduceOp, vals: impl Iterator<Item = i64> + Clone) -> Want {
    let p = vals.clone().count() as i128;
    let sum: i128 = vals.clone().map(i128::from).sum();
    let float = dtype.is_float();
    match op {
        ReduceOp::Sum => Want::Exact(sum),
        ReduceOp::Prod => Want::Exact(vals.map(i128::from).fold(1i128, |a, v| {
            if float {
                a * v
            } else {
                wrap(dtype, a * v)
            }
        })),
        ReduceOp::Min => Want::Exact(vals.min().unwrap_or(0).into()),
        ReduceOp::Max => Want::Exact(vals.max().unwrap_or(0).into()),
        ReduceOp::Avg if float => Want::Near(sum as f64 / p as f64),
        ReduceOp::Avg => Want::Exact(wrap(dtype, sum) / p),
        ReduceOp::PreMulSum(s) if float => Want::Near(sum as f64 * s),
        ReduceOp::PreMulSum(s) => Want::Exact(wrap(dtype, wrap(dtype, sum) * s as i128)),
    }
}

/// Whether the element `got` (bytes of one `dtype` element) is `want`.
pub fn matches(dtype: DataType, got: &[u8], want: Want) -> bool {
    let mut expect = [0u8; 8];
    let expect = &mut expect[..dtype.size()];
    match want {
        Want::Exact(v) if !dtype.is_float() => {
            encode(dtype, v, expect);
            got == expect
        }
        // Integer-valued and small: exact once rounded to the type (compared as numbers so
        // that +0 and -0 agree).
        Want::Exact(v) => {
            encode(dtype, v, expect);
            decode_float(dtype, got) == decode_float(dtype, expect)
        }
        Want::Near(v) => {
            let ulp = match dtype {
                DataType::F16 => 2f64.powi(-10),
                DataType::BF16 => 2f64.powi(-7),
                DataType::F32 => 2f64.powi(-23),
                _ => 2f64.powi(-52),
            };
            (decode_float(dtype, got) - v).abs() <= 2.0 * ulp * v.abs().max(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_reductions_wrap_like_the_kernels() {
        // 3 * 100 wraps in an i8: 300 - 256 = 44.
        let v = [100i64, 100, 100];
        assert_eq!(
            reduce(DataType::I8, ReduceOp::Sum, v.iter().copied()),
            Want::Exact(300)
        );
        assert!(matches(DataType::I8, &[44], Want::Exact(300)));
        assert_eq!(
            reduce(DataType::I8, ReduceOp::Avg, v.iter().copied()),
            Want::Exact(44 / 3)
        );
        assert!(matches(DataType::U8, &[255], Want::Exact(-1)));
    }

    #[test]
    fn float_checks_are_exact_except_avg() {
        let mut b = [0u8; 2];
        encode(DataType::BF16, 7, &mut b);
        assert!(matches(DataType::BF16, &b, Want::Exact(7)));
        assert!(!matches(DataType::BF16, &b, Want::Exact(6)));
        assert!(matches(DataType::BF16, &b, Want::Near(7.0 + 7.0 / 256.0)));
        assert!(!matches(DataType::BF16, &b, Want::Near(7.5)));
    }

    #[test]
    fn values_are_nonzero_and_in_range() {
        for dtype in DataType::ALL {
            for i in 0..1000 {
                let v = value(42, i % 3, i, dtype, None);
                assert!(v != 0 && (-8..=16).contains(&v), "{dtype} {v}");
            }
        }
    }
}
