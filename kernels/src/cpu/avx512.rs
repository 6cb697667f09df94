//! x86-64 AVX-512 (F, BW, DQ, VL): 512-bit registers. The same shapes as the AVX2 module;
//! here 64-bit multiply and min/max are single instructions, NaN selection uses mask
//! registers, and the 16-bit floats go 32 to a register pair (one 64-byte load or store per
//! cache line; bf16 widened and narrowed in place by shifts and masks, no shuffle).

use super::{simd_dispatch, simd_run, Job, Lanes};
use crate::types::{code, DataType, EpiParams};
use half::{bf16, f16};
use std::arch::x86_64::*;

/// The AVX-512 entry point for one monomorphised kernel.
///
/// # Safety
/// `job` satisfies `Job`'s contract and the CPU has AVX-512 F/BW/DQ/VL and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
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
            DataType::F32 => simd_dispatch!(float run::<F32x16>, op, k, (job, epi, stream)),
            DataType::F64 => simd_dispatch!(float run::<F64x8>, op, k, (job, epi, stream)),
            DataType::F16 => simd_dispatch!(float run::<F16x32>, op, k, (job, epi, stream)),
            DataType::BF16 => simd_dispatch!(float run::<Bf16x32>, op, k, (job, epi, stream)),
            DataType::I8 => simd_dispatch!(int run::<I8x64>, op, (job, epi, stream)),
            DataType::U8 => simd_dispatch!(int run::<U8x64>, op, (job, epi, stream)),
            DataType::I32 => simd_dispatch!(int run::<I32x16>, op, (job, epi, stream)),
            DataType::U32 => simd_dispatch!(int run::<U32x16>, op, (job, epi, stream)),
            DataType::I64 => simd_dispatch!(int run::<I64x8>, op, (job, epi, stream)),
            DataType::U64 => simd_dispatch!(int run::<U64x8>, op, (job, epi, stream)),
        }
    }
}

#[inline(always)]
unsafe fn combine_ps<const OP: u8>(a: __m512, b: __m512) -> __m512 {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        match OP {
            code::SUM => _mm512_add_ps(a, b),
            code::PROD => _mm512_mul_ps(a, b),
            code::MIN => _mm512_min_ps(a, b),
            _ => _mm512_max_ps(a, b),
        }
    }
}

#[inline(always)]
unsafe fn prepare_ps(e: &EpiParams) -> __m512 {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        match e.kind {
            code::EPI_SCALE => _mm512_set1_ps(e.scale as f32),
            _ => _mm512_set1_ps(e.divisor as f32),
        }
    }
}

#[inline(always)]
unsafe fn epilogue_ps<const EPI: u8>(v: __m512, k: &__m512) -> __m512 {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        match EPI {
            code::EPI_SCALE => _mm512_mul_ps(v, *k),
            code::EPI_DIVIDE => _mm512_div_ps(v, *k),
            _ => v,
        }
    }
}

pub(super) struct F32x16;
impl Lanes for F32x16 {
    type E = f32;
    type V = __m512;
    type K = __m512;
    const N: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512 {
        // SAFETY: caller guarantees 64 readable bytes; no alignment needed.
        unsafe { _mm512_loadu_ps(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m512) {
        // SAFETY: caller guarantees 64 writable bytes.
        unsafe { _mm512_storeu_ps(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m512) {
        // SAFETY: caller guarantees 64 writable, 64-byte-aligned bytes.
        unsafe { _mm512_stream_ps(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn combine<const OP: u8>(a: __m512, b: __m512) -> __m512 {
        // SAFETY: forwarded.
        unsafe { combine_ps::<OP>(a, b) }
    }
    #[inline(always)]
    unsafe fn prepare(e: &EpiParams) -> __m512 {
        // SAFETY: forwarded.
        unsafe { prepare_ps(e) }
    }
    #[inline(always)]
    unsafe fn epilogue<const EPI: u8>(v: __m512, k: &__m512) -> __m512 {
        // SAFETY: forwarded.
        unsafe { epilogue_ps::<EPI>(v, k) }
    }
}

pub(super) struct F64x8;
impl Lanes for F64x8 {
    type E = f64;
    type V = __m512d;
    type K = __m512d;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512d {
        // SAFETY: caller guarantees 64 readable bytes.
        unsafe { _mm512_loadu_pd(p.cast()) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m512d) {
        // SAFETY: caller guarantees 64 writable bytes.
        unsafe { _mm512_storeu_pd(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m512d) {
        // SAFETY: caller guarantees 64 writable, aligned bytes.
        unsafe { _mm512_stream_pd(p.cast(), v) }
    }
    #[inline(always)]
    unsafe fn combine<const OP: u8>(a: __m512d, b: __m512d) -> __m512d {
        // SAFETY: only reached from `run`, which enables AVX-512F.
        unsafe {
            match OP {
                code::SUM => _mm512_add_pd(a, b),
                code::PROD => _mm512_mul_pd(a, b),
                code::MIN => _mm512_min_pd(a, b),
                _ => _mm512_max_pd(a, b),
            }
        }
    }
    #[inline(always)]
    unsafe fn prepare(e: &EpiParams) -> __m512d {
        // SAFETY: only reached from `run`, which enables AVX-512F.
        unsafe {
            match e.kind {
                code::EPI_SCALE => _mm512_set1_pd(e.scale),
                _ => _mm512_set1_pd(e.divisor as f64),
            }
        }
    }
    #[inline(always)]
    unsafe fn epilogue<const EPI: u8>(v: __m512d, k: &__m512d) -> __m512d {
        // SAFETY: only reached from `run`, which enables AVX-512F.
        unsafe {
            match EPI {
                code::EPI_SCALE => _mm512_mul_pd(v, *k),
                code::EPI_DIVIDE => _mm512_div_pd(v, *k),
                _ => v,
            }
        }
    }
}

#[inline(always)]
unsafe fn ps_to_f16(v: __m512) -> __m256i {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe { _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v) }
}

/// The f32 values of 32 bf16 elements as (even elements, odd elements): a 32-bit lane holds
/// the pair `e[2i] | e[2i+1] << 16`, so a shift and a mask widen both halves in place, with
/// one 64-byte load and no shuffle.
#[inline(always)]
unsafe fn bf16_pairs_to_ps(x: __m512i) -> (__m512, __m512) {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(x));
        let odd = _mm512_castsi512_ps(_mm512_and_si512(x, _mm512_set1_epi32(-0x1_0000)));
        (even, odd)
    }
}

/// 16 f32 rounded to bf16 (nearest even; NaNs stay quiet NaNs) in the high half of each
/// 32-bit lane; the low half is not meaningful.
#[inline(always)]
unsafe fn ps_to_bf16_high(v: __m512) -> __m512i {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        let bits = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let quiet = _mm512_or_si512(bits, _mm512_set1_epi32(0x40_0000));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }
}

/// The inverse of [`bf16_pairs_to_ps`], rounding each value once.
#[inline(always)]
unsafe fn ps_pairs_to_bf16(v: (__m512, __m512)) -> __m512i {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        let even = _mm512_srli_epi32::<16>(ps_to_bf16_high(v.0));
        let odd = ps_to_bf16_high(v.1);
        // even | (odd & 0xffff0000): A | (B & C) is truth table 0xF8.
        _mm512_ternarylogic_epi32::<0xF8>(even, odd, _mm512_set1_epi32(-0x1_0000))
    }
}

/// The f32 values of 32 f16 elements as (first 16, last 16).
#[inline(always)]
unsafe fn f16_halves_to_ps(p: *const u8) -> (__m512, __m512) {
    // SAFETY: caller guarantees 64 readable bytes; only reached from `run`, which enables
    // AVX-512F and F16C.
    unsafe {
        (
            _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(32).cast())),
        )
    }
}

#[inline(always)]
unsafe fn ps_halves_to_f16(v: (__m512, __m512)) -> __m512i {
    // SAFETY: only reached from `run`, which enables AVX-512F.
    unsafe {
        let lo = _mm512_castsi256_si512(ps_to_f16(v.0));
        _mm512_inserti64x4::<1>(lo, ps_to_f16(v.1))
    }
}

/// 16-bit floats 32 to a register pair: a whole cache line per load and per (streaming) store,
/// and 4 lines per source per unrolled iteration, as for f32. With 16 per register (half a
/// line per load, 32-byte streaming stores) 4-8 inputs ran at 0.5-0.7x of a copy; this way
/// 0.8-1.0x (bench/results/kernels.md, "many-input gap").
macro_rules! half_pair_lanes {
    ($name:ident, $elem:ty, $load:expr, $narrow:expr) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = (__m512, __m512);
            type K = __m512;
            const N: usize = 32;
            // 8 register pairs of accumulators take 16 of the 32 zmm registers.
            const WIDE_FOR_MANY_INPUTS: bool = true;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> (__m512, __m512) {
                // SAFETY: caller guarantees 64 readable bytes; the ISA is enabled by `run`.
                unsafe { ($load)(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: (__m512, __m512)) {
                // SAFETY: caller guarantees 64 writable bytes.
                unsafe { _mm512_storeu_si512(p.cast(), ($narrow)(v)) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: (__m512, __m512)) {
                // SAFETY: caller guarantees 64 writable, 64-byte-aligned bytes.
                unsafe { _mm512_stream_si512(p.cast(), ($narrow)(v)) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(
                a: (__m512, __m512),
                b: (__m512, __m512),
            ) -> (__m512, __m512) {
                // SAFETY: forwarded.
                unsafe { (combine_ps::<OP>(a.0, b.0), combine_ps::<OP>(a.1, b.1)) }
            }
            #[inline(always)]
            unsafe fn prepare(e: &EpiParams) -> __m512 {
                // SAFETY: forwarded.
                unsafe { prepare_ps(e) }
            }
            #[inline(always)]
            unsafe fn epilogue<const EPI: u8>(v: (__m512, __m512), k: &__m512) -> (__m512, __m512) {
                // SAFETY: forwarded.
                unsafe { (epilogue_ps::<EPI>(v.0, k), epilogue_ps::<EPI>(v.1, k)) }
            }
        }
    };
}

half_pair_lanes!(F16x32, f16, f16_halves_to_ps, ps_halves_to_f16);
half_pair_lanes!(
    Bf16x32,
    bf16,
    |p: *const u8| bf16_pairs_to_ps(_mm512_loadu_si512(p.cast())),
    ps_pairs_to_bf16
);

/// 8-bit lane product modulo 2^8 from two 16-bit multiplies (even and odd bytes).
#[inline(always)]
unsafe fn mullo_epi8(a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: only reached from `run`, which enables AVX-512BW.
    unsafe {
        let even = _mm512_and_si512(_mm512_mullo_epi16(a, b), _mm512_set1_epi16(0xff));
        let odd = _mm512_mullo_epi16(_mm512_srli_epi16::<8>(a), _mm512_srli_epi16::<8>(b));
        _mm512_or_si512(even, _mm512_slli_epi16::<8>(odd))
    }
}

macro_rules! int_lanes {
    ($name:ident, $elem:ty, $n:expr, $add:expr, $mul:expr, $min:expr, $max:expr) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = __m512i;
            type K = ();
            const N: usize = $n;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> __m512i {
                // SAFETY: caller guarantees 64 readable bytes.
                unsafe { _mm512_loadu_si512(p.cast()) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: __m512i) {
                // SAFETY: caller guarantees 64 writable bytes.
                unsafe { _mm512_storeu_si512(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: __m512i) {
                // SAFETY: caller guarantees 64 writable, aligned bytes.
                unsafe { _mm512_stream_si512(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(a: __m512i, b: __m512i) -> __m512i {
                // SAFETY: only reached from `run`, which enables AVX-512 F/BW/DQ.
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
            unsafe fn epilogue<const EPI: u8>(v: __m512i, _: &()) -> __m512i {
                v
            }
        }
    };
}

int_lanes!(
    I8x64,
    i8,
    64,
    _mm512_add_epi8,
    mullo_epi8,
    _mm512_min_epi8,
    _mm512_max_epi8
);
int_lanes!(
    U8x64,
    u8,
    64,
    _mm512_add_epi8,
    mullo_epi8,
    _mm512_min_epu8,
    _mm512_max_epu8
);
int_lanes!(
    I32x16,
    i32,
    16,
    _mm512_add_epi32,
    _mm512_mullo_epi32,
    _mm512_min_epi32,
    _mm512_max_epi32
);
int_lanes!(
    U32x16,
    u32,
    16,
    _mm512_add_epi32,
    _mm512_mullo_epi32,
    _mm512_min_epu32,
    _mm512_max_epu32
);
int_lanes!(
    I64x8,
    i64,
    8,
    _mm512_add_epi64,
    _mm512_mullo_epi64,
    _mm512_min_epi64,
    _mm512_max_epi64
);
int_lanes!(
    U64x8,
    u64,
    8,
    _mm512_add_epi64,
    _mm512_mullo_epi64,
    _mm512_min_epu64,
    _mm512_max_epu64
);
