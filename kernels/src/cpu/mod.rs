//! The CPU backend: one generic SIMD driver over a small per-ISA `Lanes` trait, chosen once at
//! run time, plus the portable loops.

use crate::types::{DataType, EpiParams, KernelError};
use std::mem::size_of;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod portable;

/// A dtype-erased reduction over raw pointers: `dsts[j][i] = op(srcs[0][i], srcs[1][i], ...)`.
///
/// Contract (checked by the safe entry points before a `Job` is made): `srcs` is non-empty;
/// every pointer is valid for `len * size` bytes of its kind (read for `srcs`, write for
/// `dsts`); a source may be the same memory as a destination only at the same offsets (the
/// in-place `reduce`), which is safe because each element is read before it is written.
pub(crate) struct Job<'a> {
    pub srcs: &'a [*const u8],
    pub dsts: &'a [*mut u8],
    pub len: usize,
}

/// A CPU implementation of the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuBackend {
    /// Plain Rust, any target.
    Portable,
    /// x86-64 AVX2 + FMA + F16C (256-bit vectors).
    Avx2,
    /// x86-64 AVX-512 F/BW/DQ/VL + F16C (512-bit vectors).
    Avx512,
    /// aarch64 Advanced SIMD (128-bit vectors).
    Neon,
}

impl CpuBackend {
    /// Every backend, best first.
    pub const ALL: [CpuBackend; 4] = [
        CpuBackend::Avx512,
        CpuBackend::Avx2,
        CpuBackend::Neon,
        CpuBackend::Portable,
    ];

    /// Lower-case name (`portable`, `avx2`, `avx512`, `neon`).
    pub const fn name(self) -> &'static str {
        match self {
            CpuBackend::Portable => "portable",
            CpuBackend::Avx2 => "avx2",
            CpuBackend::Avx512 => "avx512",
            CpuBackend::Neon => "neon",
        }
    }

    /// Whether this processor and build can run the backend.
    pub fn is_available(self) -> bool {
        match self {
            CpuBackend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            CpuBackend::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            CpuBackend::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            CpuBackend::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The backends this machine can run, best first.
    pub fn available() -> Vec<CpuBackend> {
        Self::ALL.into_iter().filter(|b| b.is_available()).collect()
    }

    /// The backend used by default: the best available one, or the one named by
    /// `OXCCL_KERNELS_BACKEND` (`portable`, `avx2`, `avx512`, `neon`) when it is available.
    /// Decided once per process.
    pub fn detect() -> CpuBackend {
        static CHOICE: OnceLock<CpuBackend> = OnceLock::new();
        *CHOICE.get_or_init(|| {
            let best = Self::available()[0];
            match std::env::var("OXCCL_KERNELS_BACKEND") {
                Ok(name) => match name.parse::<CpuBackend>() {
                    Ok(b) if b.is_available() => b,
                    Ok(b) => {
                        tracing::warn!(requested = b.name(), using = best.name(), "OXCCL_KERNELS_BACKEND names an unavailable backend");
                        best
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, using = best.name(), "ignoring OXCCL_KERNELS_BACKEND");
                        best
                    }
                },
                Err(_) => best,
            }
        })
    }
}

impl std::fmt::Display for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CpuBackend {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, KernelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" => Ok(CpuBackend::Portable),
            "avx2" => Ok(CpuBackend::Avx2),
            "avx512" | "avx-512" => Ok(CpuBackend::Avx512),
            "neon" => Ok(CpuBackend::Neon),
            _ => Err(KernelError::UnknownName {
                kind: "CPU backend",
                name: s.to_string(),
                expected: "portable avx2 avx512 neon",
            }),
        }
    }
}

/// One SIMD register's worth of elements for one ISA and element type. Methods are
/// `#[inline(always)]` without `#[target_feature]`; they are only called from the per-ISA
/// `#[target_feature]` entry points, into which they inline.
pub(crate) trait Lanes {
    /// The element type in memory.
    type E: crate::Element;
    /// The register type (for 16-bit floats, the f32 widening of `N` elements).
    type V: Copy;
    /// Epilogue constants, broadcast once per call.
    type K: Copy;
    /// Elements per register.
    const N: usize;
    /// # Safety: `p` readable for `N` elements; the ISA is available.
    unsafe fn load(p: *const u8) -> Self::V;
    /// # Safety: `p` writable for `N` elements; the ISA is available.
    unsafe fn store(p: *mut u8, v: Self::V);
    /// Non-temporal store. # Safety: as `store`, and `p` aligned to `N * size_of::<E>()`.
    unsafe fn stream(p: *mut u8, v: Self::V);
    /// # Safety: the ISA is available.
    unsafe fn combine<const OP: u8>(a: Self::V, b: Self::V) -> Self::V;
    /// # Safety: the ISA is available.
    unsafe fn prepare(e: &EpiParams) -> Self::K;
    /// # Safety: the ISA is available.
    unsafe fn epilogue<const EPI: u8>(v: Self::V, k: &Self::K) -> Self::V;
    /// Whether calls with [`MANY_INPUTS`] or more inputs take [`WIDE_UNROLL`] registers per
    /// input per iteration instead of [`UNROLL`] (only where the registers are there for it).
    const WIDE_FOR_MANY_INPUTS: bool = false;
}

/// Registers per input per loop iteration: enough independent loads in flight to cover
/// memory latency.
const UNROLL: usize = 4;
/// Registers per input per iteration for [`MANY_INPUTS`] or more inputs, where the lanes opt in
/// ([`Lanes::WIDE_FOR_MANY_INPUTS`]): 8 lines of each input per iteration instead of 4 made
/// AVX-512 f16/bf16 with 8 inputs 1-17% faster on one Zen core in a same-process A/B, with no
/// consistent change for 4 inputs (bench/results/kernels.md, "Issue 14, second pass").
const WIDE_UNROLL: usize = 8;
/// The input count from which [`WIDE_UNROLL`] applies.
const MANY_INPUTS: usize = 6;
/// Alignment of the destination for the streaming body (a cache line, a multiple of every
/// register width).
const STREAM_ALIGN: usize = 64;

/// How many leading elements to do with normal stores so that every destination is
/// `STREAM_ALIGN`-aligned; `None` when the destinations cannot all be aligned together.
fn stream_head(dsts: &[*mut u8], es: usize) -> Option<usize> {
    let mis = *dsts.first()? as usize % STREAM_ALIGN;
    if dsts.iter().any(|d| *d as usize % STREAM_ALIGN != mis) {
        return None;
    }
    let bytes = (STREAM_ALIGN - mis) % STREAM_ALIGN;
    bytes.is_multiple_of(es).then_some(bytes / es)
}

/// The generic SIMD driver for `[0, job.len)`.
///
/// # Safety
/// `job` satisfies [`Job`]'s contract and `L`'s ISA is available.
#[inline(always)]
pub(crate) unsafe fn simd_run<L: Lanes, const OP: u8, const EPI: u8>(
    job: &Job<'_>,
    epi: &EpiParams,
    stream: bool,
) {
    let es = size_of::<L::E>();
    // SAFETY: in the whole body, forwarded from this function's contract.
    unsafe {
        let k = L::prepare(epi);
        let n = job.len;
        let plan = if stream {
            stream_head(job.dsts, es)
        } else {
            None
        };
        let wide = L::WIDE_FOR_MANY_INPUTS && job.srcs.len() >= MANY_INPUTS;
        let mut i = 0;
        if let Some(head) = plan {
            let head = head.min(n);
            portable::run::<L::E, OP, EPI>(job, 0, head, epi);
            i = if wide {
                body::<L, OP, EPI, true, WIDE_UNROLL>(job, &k, head)
            } else {
                body::<L, OP, EPI, true, UNROLL>(job, &k, head)
            };
            #[cfg(target_arch = "x86_64")]
            std::arch::x86_64::_mm_sfence();
        } else if wide {
            i = body::<L, OP, EPI, false, WIDE_UNROLL>(job, &k, i);
        } else {
            i = body::<L, OP, EPI, false, UNROLL>(job, &k, i);
        }
        portable::run::<L::E, OP, EPI>(job, i, n, epi);
    }
}

/// Whole registers from `start`, `U` registers per input per iteration; returns the first
/// element not done.
#[inline(always)]
unsafe fn body<L: Lanes, const OP: u8, const EPI: u8, const STREAM: bool, const U: usize>(
    job: &Job<'_>,
    k: &L::K,
    start: usize,
) -> usize {
    let es = size_of::<L::E>();
    let vb = L::N * es;
    let n = job.len;
    let (s0, rest) = (job.srcs[0], &job.srcs[1..]);
    // No software prefetch: the hardware prefetchers follow up to 8 input streams, and
    // prefetching 2 KiB ahead into L1 made 4-8 inputs 10-35% slower for every dtype once the
    // 16-bit types load whole cache lines (bench/results/kernels.md, "many-input gap").
    let mut i = start;
    // SAFETY: in the whole body, every access covers elements [i, i + U * N) or [i, i + N)
    // with that range inside [0, n), so it is in bounds (Job contract); streaming stores are
    // aligned because `simd_run` started the body at an aligned element and `vb` divides
    // STREAM_ALIGN or is a multiple of it.
    unsafe {
        while i + U * L::N <= n {
            let off = i * es;
            let mut acc: [L::V; U] = std::array::from_fn(|u| L::load(s0.add(off + u * vb)));
            for s in rest {
                for (u, a) in acc.iter_mut().enumerate() {
                    *a = L::combine::<OP>(*a, L::load(s.add(off + u * vb)));
                }
            }
            if EPI != 0 {
                for a in acc.iter_mut() {
                    *a = L::epilogue::<EPI>(*a, k);
                }
            }
            for d in job.dsts {
                for (u, a) in acc.iter().enumerate() {
                    if STREAM {
                        L::stream(d.add(off + u * vb), *a);
                    } else {
                        L::store(d.add(off + u * vb), *a);
                    }
                }
            }
            i += U * L::N;
        }
        while i + L::N <= n {
            let off = i * es;
            let mut a = L::load(s0.add(off));
            for s in rest {
                a = L::combine::<OP>(a, L::load(s.add(off)));
            }
            if EPI != 0 {
                a = L::epilogue::<EPI>(a, k);
            }
            for d in job.dsts {
                if STREAM {
                    L::stream(d.add(off), a);
                } else {
                    L::store(d.add(off), a);
                }
            }
            i += L::N;
        }
    }
    i
}

/// Monomorphises a SIMD entry point `$run::<L, OP, EPI>` for a run-time operator code and
/// epilogue kind; integer types have no SIMD epilogue, so they only get `EPI_NONE`.
macro_rules! simd_dispatch {
    (float $run:ident :: <$l:ty>, $op:expr, $epi:expr, ($($a:expr),*)) => {
        $crate::cpu::portable::dispatch_op_epi!($run::<$l>, $op, $epi, ($($a),*))
    };
    (int $run:ident :: <$l:ty>, $op:expr, ($($a:expr),*)) => {{
        use $crate::types::code::{EPI_NONE, MAX, MIN, PROD, SUM};
        match $op {
            SUM => $run::<$l, SUM, EPI_NONE>($($a),*),
            PROD => $run::<$l, PROD, EPI_NONE>($($a),*),
            MIN => $run::<$l, MIN, EPI_NONE>($($a),*),
            _ => $run::<$l, MAX, EPI_NONE>($($a),*),
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use simd_dispatch;

/// Runs a whole job on `backend`.
///
/// # Safety
/// `job` satisfies [`Job`]'s contract and `backend.is_available()`.
pub(crate) unsafe fn execute(
    backend: CpuBackend,
    dtype: DataType,
    op: u8,
    epi: &EpiParams,
    job: &Job<'_>,
    stream: bool,
) {
    let simd_epilogue_ok = dtype.is_float() || epi.kind == crate::types::code::EPI_NONE;
    // SAFETY: forwarded from this function's contract; each ISA entry point is only called
    // for its own backend, which the caller checked is available.
    unsafe {
        match backend {
            #[cfg(target_arch = "x86_64")]
            CpuBackend::Avx2 if simd_epilogue_ok => avx2::dispatch(dtype, op, epi, job, stream),
            #[cfg(target_arch = "x86_64")]
            CpuBackend::Avx512 if simd_epilogue_ok => avx512::dispatch(dtype, op, epi, job, stream),
            #[cfg(target_arch = "aarch64")]
            CpuBackend::Neon if simd_epilogue_ok => neon::dispatch(dtype, op, epi, job, stream),
            _ => portable::dispatch(dtype, op, epi, job, 0, job.len),
        }
    }
}

/// The last-level cache size in bytes (from sysfs on Linux), used to decide when outputs are
/// large enough that streaming stores pay. 32 MiB when it cannot be read.
pub fn last_level_cache_bytes() -> usize {
    static LLC: OnceLock<usize> = OnceLock::new();
    *LLC.get_or_init(|| {
        let mut best = 0;
        for idx in 0..8 {
            let base = format!("/sys/devices/system/cpu/cpu0/cache/index{idx}");
            let Ok(size) = std::fs::read_to_string(format!("{base}/size")) else {
                continue;
            };
            let size = size.trim();
            let (num, mult) = match size.strip_suffix('K') {
                Some(n) => (n, 1024),
                None => match size.strip_suffix('M') {
                    Some(n) => (n, 1024 * 1024),
                    None => (size, 1),
                },
            };
            if let Ok(v) = num.parse::<usize>() {
                best = best.max(v * mult);
            }
        }
        if best == 0 {
            32 << 20
        } else {
            best
        }
    })
}
