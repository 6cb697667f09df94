//! CUDA device kernels of `oxccl-kernels`, written in Rust and compiled by nightly rustc's
//! `nvptx64-nvidia-cuda` target to PTX (`kernels/scripts/build-ptx.sh`).
//!
//! One kernel per element type and combining operator, named
//! `oxccl_reduce_<dtype>_<op>` (`f32`, `f64`, `f16`, `bf16`, `i8`, `u8`, `i32`, `u32`, `i64`,
//! `u64` x `sum`, `prod`, `min`, `max`), each with the parameters
//! `(s0..s7: *const u8, nsrcs: u32, d0..d3: *mut u8, ndsts: u32, n: u64, epi_kind: u32,
//! scale: f64, scale_int: i64, divisor: u64, vec_ok: u32)`:
//! `d[i] = epilogue(s0[i] op s1[i] op ... op s{nsrcs-1}[i])` for every `d` of the first
//! `ndsts`, over `n` elements, in a grid-stride loop. Pointers are separate scalar
//! parameters (no pointer table in device memory, no aggregate by value), so a launch needs
//! no copy and the ABI is plain. `epi_kind` is 0 (none), 1 (scale) or 2 (divide).
//!
//! When `vec_ok` is 1 (every pointer 16-byte aligned, checked by the host), each thread moves
//! 16 bytes per buffer per step through a `#[repr(align(16))]` type, which LLVM turns into
//! `ld.global.v4.u32` / `st.global.v4.u32`; the rest is element by element.
//!
//! f16 and bf16 are `u16` bit patterns converted to f32 and back with integer arithmetic
//! (round to nearest even, NaN kept quiet), so no `f16` type, `half` crate or inline PTX is
//! needed; the arithmetic is f32 across all inputs with one rounding at the end, as on the CPU.
//! Integer Sum and Prod wrap.
#![no_std]
#![feature(abi_ptx, stdarch_nvptx, portable_simd)]

use core::arch::nvptx::{_block_dim_x, _block_idx_x, _grid_dim_x, _thread_idx_x};
use core::simd::Simd;

const SUM: u8 = 0;
const PROD: u8 = 1;
const MIN: u8 = 2;

/// One element type: its accumulation type and arithmetic.
trait Elem: Copy {
    type Acc: Copy;
    /// Elements per 16-byte vector.
    const LANES: usize;
    fn to_acc(self) -> Self::Acc;
    fn from_acc(a: Self::Acc) -> Self;
    fn combine<const OP: u8>(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn epilogue(a: Self::Acc, e: &Epi) -> Self::Acc;
    /// Element `l` of a 16-byte vector held as four 32-bit words (register bit operations,
    /// no type punning through memory, so nothing spills to local memory).
    fn lane(w: &[u32; 4], l: usize) -> Self;
    /// Ors element `l` into a zero-initialised 16-byte vector.
    fn pack(w: &mut [u32; 4], l: usize, v: Self);
}

#[derive(Clone, Copy)]
struct Epi {
    kind: u32,
    scale: f64,
    scale_int: i64,
    divisor: u64,
}

#[derive(Clone, Copy)]
#[repr(transparent)]
struct F16(u16);
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Bf16(u16);

// The same conversions as the CPU side (and tested there against `half`, bit for bit).
#[path = "../../src/convert.rs"]
mod convert;
use convert::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};

macro_rules! float_elem {
    ($t:ty, $acc:ty, $lanes:expr, $to:expr, $from:expr, $lane:expr, $pack:expr) => {
        impl Elem for $t {
            type Acc = $acc;
            const LANES: usize = $lanes;
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
                    SUM => a + b,
                    PROD => a * b,
                    MIN => {
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
            fn epilogue(a: $acc, e: &Epi) -> $acc {
                match e.kind {
                    1 => a * (e.scale as $acc),
                    2 => a / (e.divisor as $acc),
                    _ => a,
                }
            }
            #[inline(always)]
            fn lane(w: &[u32; 4], l: usize) -> Self {
                ($lane)(w, l)
            }
            #[inline(always)]
            fn pack(w: &mut [u32; 4], l: usize, v: Self) {
                ($pack)(w, l, v)
            }
        }
    };
}

#[inline(always)]
fn lane16(w: &[u32; 4], l: usize) -> u16 {
    (w[l / 2] >> (16 * (l % 2))) as u16
}
#[inline(always)]
fn pack16(w: &mut [u32; 4], l: usize, v: u16) {
    w[l / 2] |= (v as u32) << (16 * (l % 2));
}
#[inline(always)]
fn lane64(w: &[u32; 4], l: usize) -> u64 {
    w[2 * l] as u64 | (w[2 * l + 1] as u64) << 32
}
#[inline(always)]
fn pack64(w: &mut [u32; 4], l: usize, v: u64) {
    w[2 * l] = v as u32;
    w[2 * l + 1] = (v >> 32) as u32;
}
#[inline(always)]
fn lane8(w: &[u32; 4], l: usize) -> u8 {
    (w[l / 4] >> (8 * (l % 4))) as u8
}
#[inline(always)]
fn pack8(w: &mut [u32; 4], l: usize, v: u8) {
    w[l / 4] |= (v as u32) << (8 * (l % 4));
}

float_elem!(
    f32,
    f32,
    4,
    |x| x,
    |a| a,
    |w: &[u32; 4], l: usize| f32::from_bits(w[l]),
    |w: &mut [u32; 4], l: usize, v: f32| w[l] = v.to_bits()
);
float_elem!(
    f64,
    f64,
    2,
    |x| x,
    |a| a,
    |w: &[u32; 4], l| f64::from_bits(lane64(w, l)),
    |w: &mut [u32; 4], l, v: f64| pack64(w, l, v.to_bits())
);
float_elem!(
    F16,
    f32,
    8,
    |x: F16| f16_to_f32(x.0),
    |a| F16(f32_to_f16(a)),
    |w: &[u32; 4], l| F16(lane16(w, l)),
    |w: &mut [u32; 4], l, v: F16| pack16(w, l, v.0)
);
float_elem!(
    Bf16,
    f32,
    8,
    |x: Bf16| bf16_to_f32(x.0),
    |a| Bf16(f32_to_bf16(a)),
    |w: &[u32; 4], l| Bf16(lane16(w, l)),
    |w: &mut [u32; 4], l, v: Bf16| pack16(w, l, v.0)
);

macro_rules! int_elem {
    ($t:ty, $lanes:expr, $div:expr, $lane:expr, $pack:expr) => {
        impl Elem for $t {
            type Acc = $t;
            const LANES: usize = $lanes;
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
                    SUM => a.wrapping_add(b),
                    PROD => a.wrapping_mul(b),
                    MIN => {
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
            fn epilogue(a: $t, e: &Epi) -> $t {
                match e.kind {
                    1 => a.wrapping_mul(e.scale_int as $t),
                    2 => ($div)(a, e.divisor),
                    _ => a,
                }
            }
            #[inline(always)]
            fn lane(w: &[u32; 4], l: usize) -> Self {
                ($lane)(w, l) as $t
            }
            #[inline(always)]
            fn pack(w: &mut [u32; 4], l: usize, v: Self) {
                ($pack)(w, l, v as _)
            }
        }
    };
}

/// Truncating division of a signed value by a positive divisor of up to 64 bits.
#[inline(always)]
fn div_signed(a: i64, d: u64) -> i64 {
    if d > i64::MAX as u64 {
        0
    } else {
        a / d as i64
    }
}

#[inline(always)]
fn lane32(w: &[u32; 4], l: usize) -> u32 {
    w[l]
}
#[inline(always)]
fn pack32(w: &mut [u32; 4], l: usize, v: u32) {
    w[l] = v;
}

int_elem!(i8, 16, |a: i8, d| div_signed(a as i64, d) as i8, lane8, |w, l, v: i8| pack8(w, l, v as u8));
int_elem!(u8, 16, |a: u8, d| (a as u64 / d) as u8, lane8, pack8);
int_elem!(i32, 4, |a: i32, d| div_signed(a as i64, d) as i32, lane32, |w, l, v: i32| pack32(w, l, v as u32));
int_elem!(u32, 4, |a: u32, d| (a as u64 / d) as u32, lane32, pack32);
int_elem!(i64, 2, |a: i64, d| div_signed(a, d), lane64, |w, l, v: i64| pack64(w, l, v as u64));
int_elem!(u64, 2, |a: u64, d| a / d, lane64, pack64);

struct Bufs {
    s: [*const u8; 8],
    nsrcs: u32,
    d: [*mut u8; 4],
    ndsts: u32,
}

/// The grid-stride body shared by every kernel.
///
/// # Safety
/// The host guarantees that the first `nsrcs` sources and `ndsts` destinations hold `n`
/// elements of `T`, and with `vec_ok` that each is 16-byte aligned.
#[inline(always)]
unsafe fn reduce<T: Elem, const OP: u8, const L: usize>(b: &Bufs, n: u64, e: &Epi, vec_ok: bool) {
    // SAFETY: reading the special registers has no preconditions.
    let (tid, stride) = unsafe {
        (
            (_block_idx_x() as u64) * (_block_dim_x() as u64) + _thread_idx_x() as u64,
            (_grid_dim_x() as u64) * (_block_dim_x() as u64),
        )
    };
    let lanes = L as u64;
    let nvec = if vec_ok { n / lanes } else { 0 };
    let mut v = tid;
    while v < nvec {
        let off = (v * 16) as usize;
        // SAFETY: vector `v` lies inside every buffer (v < n / lanes) and is 16-byte aligned
        // (`vec_ok`), so the `Simd<u32, 4>` loads and stores are in bounds and aligned.
        unsafe {
            let w = (*(b.s[0].add(off) as *const Simd<u32, 4>)).to_array();
            let mut acc: [T::Acc; L] = core::array::from_fn(|l| T::lane(&w, l).to_acc());
            // Written out per source (not a loop) so that every pointer index is a constant
            // and the pointer array stays in registers instead of local memory.
            macro_rules! src {
                ($($j:literal)*) => {$(
                    if $j < b.nsrcs as usize {
                        let x = (*(b.s[$j].add(off) as *const Simd<u32, 4>)).to_array();
                        for (l, a) in acc.iter_mut().enumerate() {
                            *a = T::combine::<OP>(*a, T::lane(&x, l).to_acc());
                        }
                    }
                )*};
            }
            src!(1 2 3 4 5 6 7);
            let mut out = [0u32; 4];
            for (l, a) in acc.iter().enumerate() {
                T::pack(&mut out, l, T::from_acc(T::epilogue(*a, e)));
            }
            let out = Simd::from_array(out);
            macro_rules! dst {
                ($($j:literal)*) => {$(
                    if $j < b.ndsts as usize {
                        *(b.d[$j].add(off) as *mut Simd<u32, 4>) = out;
                    }
                )*};
            }
            dst!(0 1 2 3);
        }
        v += stride;
    }
    let mut i = nvec * lanes + tid;
    while i < n {
        let off = i as usize * core::mem::size_of::<T>();
        // SAFETY: element `i` lies inside every buffer; unaligned element access is not
        // needed because the host only launches on element-aligned pointers.
        unsafe {
            let mut a = (*(b.s[0].add(off) as *const T)).to_acc();
            macro_rules! src {
                ($($j:literal)*) => {$(
                    if $j < b.nsrcs as usize {
                        a = T::combine::<OP>(a, (*(b.s[$j].add(off) as *const T)).to_acc());
                    }
                )*};
            }
            src!(1 2 3 4 5 6 7);
            let r = T::from_acc(T::epilogue(a, e));
            macro_rules! dst {
                ($($j:literal)*) => {$(
                    if $j < b.ndsts as usize {
                        *(b.d[$j].add(off) as *mut T) = r;
                    }
                )*};
            }
            dst!(0 1 2 3);
        }
        i += stride;
    }
}

macro_rules! kernel {
    ($name:ident, $t:ty, $op:expr) => {
        /// # Safety
        /// See the crate documentation: the host launches it on valid device buffers.
        #[no_mangle]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "ptx-kernel" fn $name(
            s0: *const u8,
            s1: *const u8,
            s2: *const u8,
            s3: *const u8,
            s4: *const u8,
            s5: *const u8,
            s6: *const u8,
            s7: *const u8,
            nsrcs: u32,
            d0: *mut u8,
            d1: *mut u8,
            d2: *mut u8,
            d3: *mut u8,
            ndsts: u32,
            n: u64,
            epi_kind: u32,
            scale: f64,
            scale_int: i64,
            divisor: u64,
            vec_ok: u32,
        ) {
            let b = Bufs {
                s: [s0, s1, s2, s3, s4, s5, s6, s7],
                nsrcs: if nsrcs > 8 { 8 } else { nsrcs },
                d: [d0, d1, d2, d3],
                ndsts: if ndsts > 4 { 4 } else { ndsts },
            };
            let e = Epi {
                kind: epi_kind,
                scale,
                scale_int,
                divisor: if divisor == 0 { 1 } else { divisor },
            };
            // SAFETY: forwarded from the launch contract.
            unsafe { reduce::<$t, { $op }, { <$t as Elem>::LANES }>(&b, n, &e, vec_ok != 0) }
        }
    };
}

macro_rules! kernels_for {
    ($t:ty, $sum:ident, $prod:ident, $min:ident, $max:ident) => {
        kernel!($sum, $t, 0);
        kernel!($prod, $t, 1);
        kernel!($min, $t, 2);
        kernel!($max, $t, 3);
    };
}

kernels_for!(f32, oxccl_reduce_f32_sum, oxccl_reduce_f32_prod, oxccl_reduce_f32_min, oxccl_reduce_f32_max);
kernels_for!(f64, oxccl_reduce_f64_sum, oxccl_reduce_f64_prod, oxccl_reduce_f64_min, oxccl_reduce_f64_max);
kernels_for!(F16, oxccl_reduce_f16_sum, oxccl_reduce_f16_prod, oxccl_reduce_f16_min, oxccl_reduce_f16_max);
kernels_for!(Bf16, oxccl_reduce_bf16_sum, oxccl_reduce_bf16_prod, oxccl_reduce_bf16_min, oxccl_reduce_bf16_max);
kernels_for!(i8, oxccl_reduce_i8_sum, oxccl_reduce_i8_prod, oxccl_reduce_i8_min, oxccl_reduce_i8_max);
kernels_for!(u8, oxccl_reduce_u8_sum, oxccl_reduce_u8_prod, oxccl_reduce_u8_min, oxccl_reduce_u8_max);
kernels_for!(i32, oxccl_reduce_i32_sum, oxccl_reduce_i32_prod, oxccl_reduce_i32_min, oxccl_reduce_i32_max);
kernels_for!(u32, oxccl_reduce_u32_sum, oxccl_reduce_u32_prod, oxccl_reduce_u32_min, oxccl_reduce_u32_max);
kernels_for!(i64, oxccl_reduce_i64_sum, oxccl_reduce_i64_prod, oxccl_reduce_i64_min, oxccl_reduce_i64_max);
kernels_for!(u64, oxccl_reduce_u64_sum, oxccl_reduce_u64_prod, oxccl_reduce_u64_min, oxccl_reduce_u64_max);
