//! aarch64 Advanced SIMD (NEON): 128-bit registers for f32, f64, bf16 (widened to f32 with
//! `vshll`, narrowed with round-to-nearest-even), i8, u8, i32 and u32. f16 (whose NEON
//! conversions need the unstable `f16` type in Rust), i64 and u64 (no NEON multiply or
//! min/max) use the portable loops. NEON has no non-temporal store intrinsic, so "streaming"
//! stores are normal stores here.
//!
//! No aarch64 machine was available: the CPU tests pass for this module under qemu user-mode
//! emulation (`kernels/scripts/test-aarch64.sh`), which checks correctness, not speed.

use super::{portable, simd_dispatch, simd_run, Job, Lanes};
use crate::types::{code, DataType, EpiParams};
use half::bf16;
use std::arch::aarch64::*;

/// The NEON entry point for one monomorphised kernel.
///
/// # Safety
/// `job` satisfies `Job`'s contract and the CPU has NEON.
#[target_feature(enable = "neon")]
unsafe fn run<L: Lanes, const OP: u8, const EPI: u8>(job: &Job<'_>, epi: &EpiParams, stream: bool) {
    // SAFETY: forwarded; NEON is enabled on this function.
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
            DataType::F32 => simd_dispatch!(float run::<F32x4>, op, k, (job, epi, stream)),
            DataType::F64 => simd_dispatch!(float run::<F64x2>, op, k, (job, epi, stream)),
            DataType::BF16 => simd_dispatch!(float run::<Bf16x4>, op, k, (job, epi, stream)),
            DataType::I8 => simd_dispatch!(int run::<I8x16>, op, (job, epi, stream)),
            DataType::U8 => simd_dispatch!(int run::<U8x16>, op, (job, epi, stream)),
            DataType::I32 => simd_dispatch!(int run::<I32x4>, op, (job, epi, stream)),
            DataType::U32 => simd_dispatch!(int run::<U32x4>, op, (job, epi, stream)),
            DataType::F16 | DataType::I64 | DataType::U64 => {
                portable::dispatch(dtype, op, epi, job, 0, job.len)
            }
        }
    }
}

macro_rules! float_lanes {
    ($name:ident, $elem:ty, $v:ty, $n:expr, $ld:ident, $st:ident, $dup:ident,
     $add:ident, $mul:ident, $min:ident, $max:ident, $div:ident, $cast:ty) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = $v;
            type K = $v;
            const N: usize = $n;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $v {
                // SAFETY: caller guarantees 16 readable bytes; vld1q has no alignment need.
                unsafe { $ld(p.cast()) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: $v) {
                // SAFETY: caller guarantees 16 writable bytes.
                unsafe { $st(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: $v) {
                // SAFETY: as `store`.
                unsafe { $st(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(a: $v, b: $v) -> $v {
                // SAFETY: only reached from `run`, which enables NEON.
                unsafe {
                    match OP {
                        code::SUM => $add(a, b),
                        code::PROD => $mul(a, b),
                        code::MIN => $min(a, b),
                        _ => $max(a, b),
                    }
                }
            }
            #[inline(always)]
            unsafe fn prepare(e: &EpiParams) -> $v {
                // SAFETY: only reached from `run`, which enables NEON.
                unsafe {
                    match e.kind {
                        code::EPI_SCALE => $dup(e.scale as $cast),
                        _ => $dup(e.divisor as $cast),
                    }
                }
            }
            #[inline(always)]
            unsafe fn epilogue<const EPI: u8>(v: $v, k: &$v) -> $v {
                // SAFETY: only reached from `run`, which enables NEON.
                unsafe {
                    match EPI {
                        code::EPI_SCALE => $mul(v, *k),
                        code::EPI_DIVIDE => $div(v, *k),
                        _ => v,
                    }
                }
            }
        }
    };
}

float_lanes!(
    F32x4,
    f32,
    float32x4_t,
    4,
    vld1q_f32,
    vst1q_f32,
    vdupq_n_f32,
    vaddq_f32,
    vmulq_f32,
    vminq_f32,
    vmaxq_f32,
    vdivq_f32,
    f32
);
float_lanes!(
    F64x2,
    f64,
    float64x2_t,
    2,
    vld1q_f64,
    vst1q_f64,
    vdupq_n_f64,
    vaddq_f64,
    vmulq_f64,
    vminq_f64,
    vmaxq_f64,
    vdivq_f64,
    f64
);

/// Narrows 4 f32 to 4 bf16 with round-to-nearest-even; NaNs stay quiet NaNs.
#[inline(always)]
unsafe fn f32_to_bf16(v: float32x4_t) -> uint16x4_t {
    // SAFETY: only reached from `run`, which enables NEON.
    unsafe {
        let bits = vreinterpretq_u32_f32(v);
        let lsb = vandq_u32(vshrq_n_u32::<16>(bits), vdupq_n_u32(1));
        let rounded = vaddq_u32(bits, vaddq_u32(lsb, vdupq_n_u32(0x7fff)));
        let r = vshrn_n_u32::<16>(rounded);
        let quiet = vorr_u16(vshrn_n_u32::<16>(bits), vdup_n_u16(0x40));
        let not_nan = vmovn_u32(vceqq_f32(v, v));
        vbsl_u16(not_nan, r, quiet)
    }
}

pub(super) struct Bf16x4;
impl Lanes for Bf16x4 {
    type E = bf16;
    type V = float32x4_t;
    type K = float32x4_t;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> float32x4_t {
        // SAFETY: caller guarantees 8 readable bytes.
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: float32x4_t) {
        // SAFETY: caller guarantees 8 writable bytes.
        unsafe { vst1_u16(p.cast(), f32_to_bf16(v)) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: float32x4_t) {
        // SAFETY: as `store`.
        unsafe { Self::store(p, v) }
    }
    #[inline(always)]
    unsafe fn combine<const OP: u8>(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: forwarded.
        unsafe { F32x4::combine::<OP>(a, b) }
    }
    #[inline(always)]
    unsafe fn prepare(e: &EpiParams) -> float32x4_t {
        // SAFETY: forwarded.
        unsafe { F32x4::prepare(e) }
    }
    #[inline(always)]
    unsafe fn epilogue<const EPI: u8>(v: float32x4_t, k: &float32x4_t) -> float32x4_t {
        // SAFETY: forwarded.
        unsafe { F32x4::epilogue::<EPI>(v, k) }
    }
}

macro_rules! int_lanes {
    ($name:ident, $elem:ty, $v:ty, $n:expr, $ld:ident, $st:ident,
     $add:ident, $mul:ident, $min:ident, $max:ident) => {
        pub(super) struct $name;
        impl Lanes for $name {
            type E = $elem;
            type V = $v;
            type K = ();
            const N: usize = $n;
            #[inline(always)]
            unsafe fn load(p: *const u8) -> $v {
                // SAFETY: caller guarantees 16 readable bytes.
                unsafe { $ld(p.cast()) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut u8, v: $v) {
                // SAFETY: caller guarantees 16 writable bytes.
                unsafe { $st(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn stream(p: *mut u8, v: $v) {
                // SAFETY: as `store`.
                unsafe { $st(p.cast(), v) }
            }
            #[inline(always)]
            unsafe fn combine<const OP: u8>(a: $v, b: $v) -> $v {
                // SAFETY: only reached from `run`, which enables NEON.
                unsafe {
                    match OP {
                        code::SUM => $add(a, b),
                        code::PROD => $mul(a, b),
                        code::MIN => $min(a, b),
                        _ => $max(a, b),
                    }
                }
            }
            #[inline(always)]
            unsafe fn prepare(_: &EpiParams) {}
            #[inline(always)]
            unsafe fn epilogue<const EPI: u8>(v: $v, _: &()) -> $v {
                v
            }
        }
    };
}

int_lanes!(I8x16, i8, int8x16_t, 16, vld1q_s8, vst1q_s8, vaddq_s8, vmulq_s8, vminq_s8, vmaxq_s8);
int_lanes!(U8x16, u8, uint8x16_t, 16, vld1q_u8, vst1q_u8, vaddq_u8, vmulq_u8, vminq_u8, vmaxq_u8);
int_lanes!(
    I32x4, i32, int32x4_t, 4, vld1q_s32, vst1q_s32, vaddq_s32, vmulq_s32, vminq_s32, vmaxq_s32
);
int_lanes!(
    U32x4, u32, uint32x4_t, 4, vld1q_u32, vst1q_u32, vaddq_u32, vmulq_u32, vminq_u32, vmaxq_u32
);
