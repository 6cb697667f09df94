//! The sealed `Element` trait and the scalar arithmetic every backend falls back to.

use crate::convert;
use crate::types::{code, DataType, EpiParams};
use half::{bf16, f16};

/// A type the kernels can reduce: f32, f64, `half::f16`, `half::bf16`, i8, u8, i32, u32, i64,
/// u64. Sealed: the set matches [`DataType`] and cannot grow outside this crate.
pub trait Element: sealed::Scalar + bytemuck::Pod + Send + Sync + 'static {
    /// The run-time tag of this type.
    const DTYPE: DataType;
}

pub(crate) mod sealed {
    use crate::types::EpiParams;

    /// Scalar arithmetic in the accumulation type (f32 for the 16-bit floats, so that a
    /// k-input reduction rounds once, as the SIMD paths do).
    pub trait Scalar: Copy {
        type Acc: Copy + Default;
        fn to_acc(self) -> Self::Acc;
        fn from_acc(a: Self::Acc) -> Self;
        fn combine<const OP: u8>(a: Self::Acc, b: Self::Acc) -> Self::Acc;
        fn epilogue<const EPI: u8>(a: Self::Acc, e: &EpiParams) -> Self::Acc;
    }
}

macro_rules! float_scalar {
    ($t:ty, $acc:ty, $dt:expr, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DataType = $dt;
        }
        impl sealed::Scalar for $t {
            type Acc = $acc;
            #[inline(always)]
            fn to_acc(self) -> $acc {
                ($to)(self)
            }
            #[inline(always)]
            fn from_acc(a: $acc) -> Self {
                ($from)(a)
            }
            #[inline(always)]
            fn combine<const OP: u8>(a: $acc, b: $acc) -> $acc {
                match OP {
                    code::SUM => a + b,
                    code::PROD => a * b,
                    // Written as compares (not f32::min) so that NaN handling matches the
                    // SIMD min/max instructions: the second operand wins on NaN.
                    code::MIN => {
                        if a < b {
                            a
                        } else {
                            b
                        }
                    }
                    _ => {
                        if a > b {
                            a
                        } else {
                            b
                        }
                    }
                }
            }
            #[inline(always)]
            fn epilogue<const EPI: u8>(a: $acc, e: &EpiParams) -> $acc {
                match EPI {
                    code::EPI_SCALE => a * (e.scale as $acc),
                    code::EPI_DIVIDE => a / (e.divisor as $acc),
                    _ => a,
                }
            }
        }
    };
}

float_scalar!(f32, f32, DataType::F32, |x| x, |a| a);
float_scalar!(f64, f64, DataType::F64, |x| x, |a| a);
// The crate's own conversions (not `half`'s calls), so that the loops vectorise.
float_scalar!(
    f16,
    f32,
    DataType::F16,
    |x: f16| convert::f16_to_f32(x.to_bits()),
    |a| f16::from_bits(convert::f32_to_f16(a))
);
float_scalar!(
    bf16,
    f32,
    DataType::BF16,
    |x: bf16| convert::bf16_to_f32(x.to_bits()),
    |a| bf16::from_bits(convert::f32_to_bf16(a))
);

macro_rules! int_scalar {
    ($t:ty, $dt:expr, $div:expr) => {
        impl Element for $t {
            const DTYPE: DataType = $dt;
        }
        impl sealed::Scalar for $t {
            type Acc = $t;
            #[inline(always)]
            fn to_acc(self) -> $t {
                self
            }
            #[inline(always)]
            fn from_acc(a: $t) -> Self {
                a
            }
            #[inline(always)]
            fn combine<const OP: u8>(a: $t, b: $t) -> $t {
                match OP {
                    code::SUM => a.wrapping_add(b),
                    code::PROD => a.wrapping_mul(b),
                    code::MIN => a.min(b),
                    _ => a.max(b),
                }
            }
            #[inline(always)]
            fn epilogue<const EPI: u8>(a: $t, e: &EpiParams) -> $t {
                match EPI {
                    // Reducing the scalar modulo 2^bits first gives the same wrapped product.
                    code::EPI_SCALE => a.wrapping_mul(e.scale_int as $t),
                    code::EPI_DIVIDE => ($div)(a, e.divisor),
                    _ => a,
                }
            }
        }
    };
}

/// Truncating division of a value of at most 32 bits through f64, which vectorises where
/// integer division does not. Exact: with `a = q * d + r`, the f64 quotient is off by at most
/// `(|q| + 1) * 2^-53`, less than the `1 / d` that separates `a / d` from the next integer,
/// because `(|q| + 1) * d <= |a| + d < 2^33` (and for `d >= 2^33` the quotient is below 1).
///
/// The quotient is converted with `to_int_unchecked` rather than a saturating `as`, which
/// keeps the loop vectorisable.
macro_rules! div_small {
    ($t:ty) => {
        |a: $t, d: u64| {
            let q = a as f64 / d as f64;
            // SAFETY: `q` is finite (d >= 1) and |q| <= |a|, so its truncation (which the
            // conversion performs) is in range of `$t`.
            unsafe { q.to_int_unchecked::<$t>() }
        }
    };
}

/// Truncating division of an i64 by a divisor of up to 64 bits.
#[inline(always)]
fn div_i64(a: i64, d: u64) -> i64 {
    if d > i64::MAX as u64 {
        0
    } else {
        a / d as i64
    }
}

int_scalar!(i8, DataType::I8, div_small!(i8));
int_scalar!(u8, DataType::U8, div_small!(u8));
int_scalar!(i32, DataType::I32, div_small!(i32));
int_scalar!(u32, DataType::U32, div_small!(u32));
int_scalar!(i64, DataType::I64, div_i64);
int_scalar!(u64, DataType::U64, |a: u64, d: u64| a / d);
