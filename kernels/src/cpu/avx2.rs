//! x86-64 AVX2 (+FMA, F16C): 256-bit registers. f16 widens with F16C; bf16 widens to f32 by a
//! 16-bit shift and narrows with round-to-nearest-even in integer arithmetic (bit-identical to
//! `half::bf16::from_f32`). Integer products of 8-bit lanes go through 16-bit multiplies, and
//! 64-bit products and min/max are composed, since AVX2 has no instruction for them.

use super::{simd_dispatch, simd_run, Job, Lanes};
use crate::types::{code, DataType, EpiParams};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// The AVX2 entry point for one monomorphised kernel.
///
/// # Safety
/// `job` satisfies `Job`'s contract and the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run<L: Lanes, const OP: u8, const EPI: u8>(job: &Job<'_>, epi: &EpiParams, stream: bool) {
    // SAFETY: forwarded; the features `L` needs are enabled on this function.
    unsafe { simd_run::<L, OP, EPI>(job, epi, stream) }
}

/// # Safety
/// As [`run`]; for integer types `epi.kind` must be `EPI_NONE`.
pub(super) unsafe fn dispatch(
    dtype: DataType,
    op: u8,
    epi: &EpiParams,
    job: &Job<'_>,
    stream: bool,
) {
    let k = epi.kind;
    // SAFETY: in every arm, forwarded from this function's contract.
    unsafe {
        match dtype {
            DataType::F32 => simd_dispatch!(float run::<F32x8>, op, k, (job, epi, stream)),
            DataType::F64 => simd_dispatch!(float run::<F64x4>, op, k, (job, epi, stream)),
            DataType::F16 => simd_dispatch!(float run::<F16x8>, op, k, (job, epi, stream)),
            DataType::BF16 => simd_dispatch!(float run::<Bf16x8>, op, k, (job, epi, stream)),
            DataType::I8 => simd_dispatch!(int run::<I8x32>, op, (job, epi, stream)),
            DataType::U8 => simd_dispatch!(int run::<U8x32>, op, (job, epi, stream)),
            DataType::I32 => simd_dispatch!(int run::<I32x8>, op, (job, epi, stream)),
            DataType::U32 => simd_dispatch!(int run::<U32x8>, op, (job, epi, stream)),
            DataType::I64 => simd_dispatch!(int run::<I64x4>, op, (job, epi, stream)),
            DataType::U64 => simd_dispatch!(int run::<U64x4>, op, (job, epi, stream)),
        }
    }
}

/// Float arithmetic on `__m256` shared by f32, f16 and bf16.
#[inline(always)]
unsafe fn combine_ps<const OP: u8>(a: __m256, b: __m256) -> __m256 {
    // SAFETY: only reached from `run`, which enables AVX.
    unsafe {
        match OP {
            code::SUM => _mm256_add_ps(a, b),
            code::PROD => _mm256_mul_ps(a, b),
            code::MIN => _mm256_min_ps(a, b),
            _ => _mm256_max_ps(a, b),
        }
    }
}

#[inline(always)]
unsafe fn prepare_ps(e: &EpiParams) -> __m256 {
    // SAFETY: only reached from `run`, which enables AVX.
    unsafe {
        match e.kind {
            code::EPI_SCALE => _mm256_set1_ps(e.scale as f32),
            _ => _mm256_set1_ps(e.divisor as f32),
        }
    }
}

#[inline(always)]
unsafe fn epilogue_ps<const EPI: u8>(v: __m256, k: &__m256) -> __m256 {
    // SAFETY: only reached from `run`, which enables AVX.
    unsafe {
        match EPI {
            code::EPI_SCALE => _mm256_mul_ps(v, *k),
            code::EPI_DIVIDE => _mm256_div_ps(v, *k),
            _ => v,
        }
    }
}

pub(super) struct F32x8;
impl Lanes for F32x8 {
    type E = f32;
    type V = __m256;
    type K = __m256;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256 {
        // SAFETY: caller guarantees 32 readable bytes; loadu has no alignment requirement.
        unsafe { _mm256_loadu_ps(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256) {
        // SAFETY: caller guarantees 32 writable bytes.
        unsafe { _mm256_storeu_ps(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m256) {
        // SAFETY: caller guarantees 32 writable, 32-byte-aligned bytes.
        unsafe { _mm256_stream_ps(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn combine<const OP: u8>(a: __m256, b: __m256) -> __m256 {
        // SAFETY: forwarded.
        unsafe { combine_ps::<OP>(a, b) }
    }
    #[inline(always)]
    unsafe fn prepare(e: &EpiParams) -> __m256 {
        // SAFETY: forwarded.
        unsafe { prepare_ps(e) }
    }
    #[inline(always)]
    unsafe fn epilogue<const EPI: u8>(v: __m256, k: &__m256) -> __m256 {
        // SAFETY: forwarded.
        unsafe { epilogue_ps::<EPI>(v, k) }
    }
}

pub(super) struct F64x4;
impl Lanes for F64x4 {
    type E = f64;
    type V = __m256d;
    type K = __m256d;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256d {
        // SAFETY: caller guarantees 32 readable bytes.
        unsafe { _mm256_loadu_pd(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256d) {
        // SAFETY: caller guarantees 32 writable bytes.
        unsafe { _mm256_storeu_pd(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m256d) {
        // SAFETY: caller guarantees 32 writable, aligned bytes.
        unsafe { _mm256_stream_pd(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn combine<const OP: u8>(a: __m256d, b: __m256d) -> __m256d {
        // SAFETY: only reached from `run`, which enables AVX.
        unsafe {
            match OP {
                code::SUM => _mm256_add_pd(a, b),
                code::PROD => _mm256_mul_pd(a, b),
                code::MIN => _mm256_min_pd(a, b),
                _ => _mm256_max_pd(a, b),
            }
        }
    }
    #[inline(always)]
    unsafe fn prepare(e: &EpiParams) -> __m256d {
        // SAFETY: only reached from `run`, which enables AVX.
        unsafe {
            match e.kind {
                code::EPI_SCALE => _mm256_set1_pd(e.scale),
                _ => _mm256_set1_pd(e.divisor as f64),
            }
        }
    }
    #[inline(always)]
    unsafe fn epilogue<const EPI: u8>(v: __m256d, k: &__m256d) -> __m256d {
        // SAFETY: only reached from `run`, which enables AVX.
        unsafe {
            match EPI {
                code::EPI_SCALE => _mm256_mul_pd(v, *k),
                code::EPI_DIVIDE => _mm256_div_pd(v, *k),
                _ => v,
            }
        }
    }
}

/// Narrows 8 f32 to 8 bf16 with round-to-nearest-even; NaNs stay quiet NaNs.
#[inline(always)]
unsafe fn ps_to_bf16(v: __m256) -> __m128i {
    // SAFETY: only reached from `run`, which enables AVX2.
    unsafe {
        let bits = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
        let rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
        let r = _mm256_srli_epi32::<16>(rounded);
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(0x40));
        let r = _mm256_blendv_epi8(r, quiet, nan);
        // packus works within 128-bit halves; gather quadwords 0 and 2 into the low half.
        let packed = _mm256_packus_epi32(r, r);
        _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(packed))
    }
}

macro_rules! half_lanes {
    ($name:ident, $elem:ty, $widen:expr, $narrow:expr) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = __m256;
            type K = __m256;
            const N: usize = 8;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> __m256 {
                // SAFETY: caller guarantees 16 readable bytes; the ISA is enabled by `run`.
                unsafe { ($widen)(_mm_loadu_si128(p.cast())) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: __m256) {
                // SAFETY: caller guarantees 16 writable bytes.
                unsafe { _mm_storeu_si128(p.cast(), ($narrow)(v)) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: __m256) {
                // SAFETY: caller guarantees 16 writable, 16-byte-aligned bytes.
                unsafe { _mm_stream_si128(p.cast(), ($narrow)(v)) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(a: __m256, b: __m256) -> __m256 {
                // SAFETY: forwarded.
                unsafe { combine_ps::<OP>(a, b) }
            }
            #[inline(always)]
            unsafe fn prepare(e: &EpiParams) -> __m256 {
                // SAFETY: forwarded.
                unsafe { prepare_ps(e) }
            }
            #[inline(always)]
            unsafe fn epilogue<const EPI: u8>(v: __m256, k: &__m256) -> __m256 {
                // SAFETY: forwarded.
                unsafe { epilogue_ps::<EPI>(v, k) }
            }
        }
    };
}

#[inline(always)]
unsafe fn bf16_to_ps(x: __m128i) -> __m256 {
    // SAFETY: only reached from `run`, which enables AVX2.
    unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(x))) }
}

#[inline(always)]
unsafe fn ps_to_f16(v: __m256) -> __m128i {
    // SAFETY: only reached from `run`, which enables F16C.
    unsafe { _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v) }
}

half_lanes!(F16x8, f16, _mm256_cvtph_ps, ps_to_f16);
half_lanes!(Bf16x8, bf16, bf16_to_ps, ps_to_bf16);

/// 64-bit lane product modulo 2^64 from three 32x32->64 multiplies.
#[inline(always)]
unsafe fn mullo_epi64(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: only reached from `run`, which enables AVX2.
    unsafe {
        let lolo = _mm256_mul_epu32(a, b);
        let lohi = _mm256_mul_epu32(a, _mm256_srli_epi64::<32>(b));
        let hilo = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), b);
        let cross = _mm256_slli_epi64::<32>(_mm256_add_epi64(lohi, hilo));
        _mm256_add_epi64(lolo, cross)
    }
}

/// 8-bit lane product modulo 2^8 from two 16-bit multiplies (even and odd bytes).
#[inline(always)]
unsafe fn mullo_epi8(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: only reached from `run`, which enables AVX2.
    unsafe {
        let even = _mm256_and_si256(_mm256_mullo_epi16(a, b), _mm256_set1_epi16(0xff));
        let odd = _mm256_mullo_epi16(_mm256_srli_epi16::<8>(a), _mm256_srli_epi16::<8>(b));
        _mm256_or_si256(even, _mm256_slli_epi16::<8>(odd))
    }
}

/// Min or max of 64-bit lanes; `FLIP` is the sign bit for unsigned compares.
#[inline(always)]
unsafe fn minmax_epi64<const MAX: bool, const FLIP: i64>(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: only reached from `run`, which enables AVX2.
    unsafe {
        let f = _mm256_set1_epi64x(FLIP);
        let a_gt_b = _mm256_cmpgt_epi64(_mm256_xor_si256(a, f), _mm256_xor_si256(b, f));
        if MAX {
            _mm256_blendv_epi8(b, a, a_gt_b)
        } else {
            _mm256_blendv_epi8(a, b, a_gt_b)
        }
    }
}

macro_rules! int_lanes {
    ($name:ident, $elem:ty, $n:expr, $add:expr, $mul:expr, $min:expr, $max:expr) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = __m256i;
            type K = ();
            const N: usize = $n;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> __m256i {
                // SAFETY: caller guarantees 32 readable bytes.
                unsafe { _mm256_loadu_si256(p.cast()) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: __m256i) {
                // SAFETY: caller guarantees 32 writable bytes.
                unsafe { _mm256_storeu_si256(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: __m256i) {
                // SAFETY: caller guarantees 32 writable, aligned bytes.
                unsafe { _mm256_stream_si256(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(a: __m256i, b: __m256i) -> __m256i {
                // SAFETY: only reached from `run`, which enables AVX2.
                unsafe {
                    match OP {
                        code::SUM => ($add)(a, b),
                        code::PROD => ($mul)(a, b),
                        code::MIN => ($min)(a, b),
                        _ => ($max)(a, b),
                    }
                }
            }
            #[inline(always)]
            unsafe fn prepare(_: &EpiParams) {}
            #[inline(always)]
            unsafe fn epilogue<const EPI: u8>(v: __m256i, _: &()) -> __m256i {
                v
            }
        }
    };
}

int_lanes!(
    I8x32,
    i8,
    32,
    _mm256_add_epi8,
    mullo_epi8,
    _mm256_min_epi8,
    _mm256_max_epi8
);
int_lanes!(
    U8x32,
    u8,
    32,
    _mm256_add_epi8,
    mullo_epi8,
    _mm256_min_epu8,
    _mm256_max_epu8
);
int_lanes!(
    I32x8,
    i32,
    8,
    _mm256_add_epi32,
    _mm256_mullo_epi32,
    _mm256_min_epi32,
    _mm256_max_epi32
);
int_lanes!(
    U32x8,
    u32,
    8,
    _mm256_add_epi32,
    _mm256_mullo_epi32,
    _mm256_min_epu32,
    _mm256_max_epu32
);
int_lanes!(
    I64x4,
    i64,
    4,
    _mm256_add_epi64,
    mullo_epi64,
    minmax_epi64::<false, 0>,
    minmax_epi64::<true, 0>
);
int_lanes!(
    U64x4,
    u64,
    4,
    _mm256_add_epi64,
    mullo_epi64,
    minmax_epi64::<false, { i64::MIN }>,
    minmax_epi64::<true, { i64::MIN }>
);
