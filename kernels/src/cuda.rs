//! The CUDA backend (cargo feature `cuda`): the same fused operations on device buffers,
//! launched on a stream.
//!
//! The device kernels are Rust (`kernels/device/`), compiled by nightly rustc's
//! `nvptx64-nvidia-cuda` target to the PTX committed in `kernels/ptx/oxccl_kernels.ptx`, which
//! is embedded in this crate and JIT-compiled by the driver when `CudaKernels::new` loads
//! it (PTX ISA 7.0, `sm_70` and newer). The host side is `cudarc`, which loads `libcuda` at
//! run time: the feature builds on machines without CUDA, and `CudaKernels::new` returns
//! [`KernelError::CudaUnavailable`] when there is no driver or no device. (`CudaKernels` exists
//! only with the feature, so these names are not links.)
//!
//! One launch reads at most 8 inputs and writes at most 4 outputs; longer lists are chained
//! through the first output (which then holds partial results between launches).

use crate::types::{combine_code, DataType, EpiParams, Epilogue, KernelError, ReduceOp};

/// The PTX of every device kernel, as committed.
pub const PTX: &str = include_str!("../ptx/oxccl_kernels.ptx");

/// Whether a CUDA device can be used: `Ok(number of devices)`, or why not. Never panics,
/// with or without the `cuda` feature.
pub fn probe() -> Result<usize, KernelError> {
    #[cfg(feature = "cuda")]
    {
        imp::probe()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(KernelError::CudaUnavailable(
            "oxccl-kernels was built without the `cuda` feature".to_string(),
        ))
    }
}

/// Launch parameters shared by both forms, after validation.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct Plan {
    dtype: DataType,
    op: u8,
    epi: EpiParams,
    n: u64,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn plan(
    dtype: DataType,
    combine: ReduceOp,
    epilogue: Epilogue,
    lens: impl Iterator<Item = (String, usize)>,
) -> Result<Plan, KernelError> {
    let op = combine_code(combine)?;
    let epi = EpiParams::new(dtype, epilogue)?;
    let mut expected = None;
    for (what, len) in lens {
        let exp = *expected.get_or_insert(len);
        if len != exp {
            return Err(KernelError::LengthMismatch {
                what,
                got: len,
                expected: exp,
            });
        }
        if !len.is_multiple_of(dtype.size()) {
            return Err(KernelError::RaggedLength {
                what,
                len,
                dtype,
                size: dtype.size(),
            });
        }
    }
    let bytes = expected.unwrap_or(0);
    Ok(Plan {
        dtype,
        op,
        epi,
        n: (bytes / dtype.size()) as u64,
    })
}

#[cfg(feature = "cuda")]
pub use imp::CudaKernels;

#[cfg(feature = "cuda")]
mod imp {
    use super::{plan, Plan, PTX};
    use crate::types::{DataType, Epilogue, KernelError, ReduceOp};
    use cudarc::driver::{
        CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
        DevicePtrMut, LaunchConfig, PushKernelArg,
    };
    use std::sync::Arc;

    const MAX_SRCS: usize = 8;
    const MAX_DSTS: usize = 4;
    const BLOCK: u32 = 256;

    fn driver_present() -> Result<(), KernelError> {
        // SAFETY: this only asks the dynamic loader whether libcuda can be opened.
        if unsafe { cudarc::driver::sys::is_culib_present() } {
            Ok(())
        } else {
            Err(KernelError::CudaUnavailable(
                "the NVIDIA driver library (libcuda.so) was not found".to_string(),
            ))
        }
    }

    fn cuda_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
        move |e| KernelError::Cuda {
            op,
            msg: format!("{e:?}"),
        }
    }

    /// cudarc panics on some driver-loading failures; those become errors here.
    fn guarded<T>(f: impl FnOnce() -> Result<T, KernelError>) -> Result<T, KernelError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver could not be loaded".to_string());
            Err(KernelError::CudaUnavailable(msg))
        })
    }

    pub(super) fn probe() -> Result<usize, KernelError> {
        driver_present()?;
        guarded(|| {
            let n = CudaContext::device_count().map_err(|e| {
                KernelError::CudaUnavailable(format!("cuInit or device query failed: {e:?}"))
            })?;
            if n <= 0 {
                Err(KernelError::CudaUnavailable("no CUDA device".to_string()))
            } else {
                Ok(n as usize)
            }
        })
    }

    /// The CUDA kernels loaded on one device, with the stream they run on.
    pub struct CudaKernels {
        ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        /// Indexed by `dtype index * 4 + op code`.
        funcs: Vec<CudaFunction>,
        max_grid: u32,
    }

    impl std::fmt::Debug for CudaKernels {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CudaKernels")
                .field("ordinal", &self.ctx.ordinal())
                .field("max_grid", &self.max_grid)
                .finish()
        }
    }

    impl CudaKernels {
        /// Opens device `ordinal`, loads the PTX and makes a stream. Returns
        /// [`KernelError::CudaUnavailable`] without a driver or device.
        pub fn new(ordinal: usize) -> Result<Self, KernelError> {
            let count = probe()?;
            if ordinal >= count {
                return Err(KernelError::CudaUnavailable(format!(
                    "device {ordinal} requested, {count} present"
                )));
            }
            guarded(|| {
                let ctx = CudaContext::new(ordinal).map_err(cuda_err("context creation"))?;
                let module = ctx
                    .load_module(cudarc::nvrtc::Ptx::from_src(PTX))
                    .map_err(cuda_err("loading the PTX module"))?;
                let mut funcs = Vec::with_capacity(40);
                for dt in DataType::ALL {
                    for op in ["sum", "prod", "min", "max"] {
                        let name = format!("oxccl_reduce_{}_{op}", dt.short_name());
                        funcs.push(
                            module
                                .load_function(&name)
                                .map_err(cuda_err("loading a kernel"))?,
                        );
                    }
                }
                let sms = ctx
                    .attribute(
                        cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                    )
                    .map_err(cuda_err("device attribute query"))?;
                let stream = ctx.new_stream().map_err(cuda_err("stream creation"))?;
                Ok(CudaKernels {
                    ctx,
                    stream,
                    funcs,
                    // Enough resident blocks to saturate memory; the kernels loop over the rest.
                    max_grid: (sms.max(1) as u32) * 16,
                })
            })
        }

        /// The device context.
        pub fn context(&self) -> &Arc<CudaContext> {
            &self.ctx
        }

        /// The stream every launch goes on.
        pub fn stream(&self) -> &Arc<CudaStream> {
            &self.stream
        }

        /// Copies host bytes to a new device buffer.
        pub fn upload(&self, host: &[u8]) -> Result<CudaSlice<u8>, KernelError> {
            self.stream
                .clone_htod(host)
                .map_err(cuda_err("host-to-device copy"))
        }

        /// Copies a device buffer back to the host (waits for the stream).
        pub fn download(&self, dev: &CudaSlice<u8>) -> Result<Vec<u8>, KernelError> {
            self.stream
                .clone_dtoh(dev)
                .map_err(cuda_err("device-to-host copy"))
        }

        /// Waits for every launch on the stream.
        pub fn synchronize(&self) -> Result<(), KernelError> {
            self.stream
                .synchronize()
                .map_err(cuda_err("stream synchronize"))
        }

        /// `dsts[j] = epilogue(srcs[0] combine srcs[1] ...)` on device buffers, queued on
        /// the stream (call [`CudaKernels::synchronize`] to wait).
        pub fn reduce_copy(
            &self,
            dtype: DataType,
            combine: ReduceOp,
            epilogue: Epilogue,
            srcs: &[&CudaView<'_, u8>],
            dsts: &mut [&mut CudaViewMut<'_, u8>],
        ) -> Result<(), KernelError> {
            if srcs.is_empty() {
                return Err(KernelError::NoInputs);
            }
            if dsts.is_empty() {
                return Err(KernelError::NoOutputs);
            }
            let lens = srcs
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("srcs[{i}]"), s.len()))
                .chain(
                    dsts.iter()
                        .enumerate()
                        .map(|(i, d)| (format!("dsts[{i}]"), d.len())),
                );
            let p = plan(dtype, combine, epilogue, lens)?;
            let stream = &self.stream;
            let (sp, _sg): (Vec<u64>, Vec<_>) = srcs.iter().map(|s| s.device_ptr(stream)).unzip();
            let (dp, _dg): (Vec<u64>, Vec<_>) =
                dsts.iter_mut().map(|d| d.device_ptr_mut(stream)).unzip();
            self.launch_chain(&p, &sp, &dp)
        }

        /// In place on the device: `dst = epilogue(dst combine srcs[0] ...)`.
        pub fn reduce(
            &self,
            dtype: DataType,
            combine: ReduceOp,
            epilogue: Epilogue,
            dst: &mut CudaViewMut<'_, u8>,
            srcs: &[&CudaView<'_, u8>],
        ) -> Result<(), KernelError> {
            let lens = std::iter::once(("dst".to_string(), dst.len())).chain(
                srcs.iter()
                    .enumerate()
                    .map(|(i, s)| (format!("srcs[{i}]"), s.len())),
            );
            let p = plan(dtype, combine, epilogue, lens)?;
            let stream = &self.stream;
            let (d, _dg) = dst.device_ptr_mut(stream);
            let (mut sp, _sg): (Vec<u64>, Vec<_>) =
                srcs.iter().map(|s| s.device_ptr(stream)).unzip();
            sp.insert(0, d);
            self.launch_chain(&p, &sp, &[d])
        }

        /// Splits long input and output lists into launches of at most 8 and 4.
        fn launch_chain(&self, p: &Plan, srcs: &[u64], dsts: &[u64]) -> Result<(), KernelError> {
            if p.n == 0 {
                return Ok(());
            }
            let es = p.dtype.size() as u64;
            if let Some(bad) = srcs.iter().chain(dsts).find(|ptr| **ptr % es != 0) {
                return Err(KernelError::Cuda {
                    op: "launch",
                    msg: format!("device address {bad:#x} is not aligned to {es}-byte elements"),
                });
            }
            let none = Plan {
                epi: crate::types::EpiParams::new(p.dtype, Epilogue::None)?,
                ..*p
            };
            let acc = dsts[0];
            let mut rest = srcs;
            let mut first = true;
            loop {
                let take = if first { MAX_SRCS } else { MAX_SRCS - 1 };
                let (now, later) = rest.split_at(rest.len().min(take));
                let mut batch: Vec<u64> = if first { vec![] } else { vec![acc] };
                batch.extend_from_slice(now);
                rest = later;
                first = false;
                if rest.is_empty() {
                    let head = &dsts[..dsts.len().min(MAX_DSTS)];
                    self.launch(p, &batch, head)?;
                    // Extra outputs are copies of the first (one input, no epilogue).
                    for extra in dsts[head.len()..].chunks(MAX_DSTS) {
                        self.launch(&none, &[acc], extra)?;
                    }
                    return Ok(());
                }
                self.launch(&none, &batch, &[acc])?;
            }
        }

        fn launch(&self, p: &Plan, srcs: &[u64], dsts: &[u64]) -> Result<(), KernelError> {
            let mut s = [0u64; MAX_SRCS];
            s[..srcs.len()].copy_from_slice(srcs);
            let mut d = [0u64; MAX_DSTS];
            d[..dsts.len()].copy_from_slice(dsts);
            let (nsrcs, ndsts) = (srcs.len() as u32, dsts.len() as u32);
            let vec_ok = u32::from(srcs.iter().chain(dsts).all(|ptr| ptr % 16 == 0));
            let lanes = 16 / p.dtype.size() as u64;
            let items = if vec_ok == 1 {
                p.n.div_ceil(lanes)
            } else {
                p.n
            };
            let grid = items.div_ceil(BLOCK as u64).clamp(1, self.max_grid as u64) as u32;
            let idx = DataType::ALL
                .iter()
                .position(|d| *d == p.dtype)
                .unwrap_or(0)
                * 4
                + p.op as usize;
            let func = &self.funcs[idx];
            let (kind, scale, scale_int, divisor) = (
                p.epi.kind as u32,
                p.epi.scale,
                p.epi.scale_int,
                p.epi.divisor,
            );
            let mut b = self.stream.launch_builder(func);
            for ptr in &s {
                b.arg(ptr);
            }
            b.arg(&nsrcs);
            for ptr in &d {
                b.arg(ptr);
            }
            b.arg(&ndsts)
                .arg(&p.n)
                .arg(&kind)
                .arg(&scale)
                .arg(&scale_int)
                .arg(&divisor)
                .arg(&vec_ok);
            let cfg = LaunchConfig {
                grid_dim: (grid, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the argument list matches the kernel signature in kernels/device
            // (8 pointers, u32, 4 pointers, u32, u64, u32, f64, i64, u64, u32); every pointer
            // covers `n` elements (lengths checked by `plan`) and is element-aligned (checked
            // in `launch_chain`); unused pointer slots are never read (nsrcs/ndsts).
            unsafe { b.launch(cfg) }.map_err(cuda_err("kernel launch"))?;
            Ok(())
        }
    }
}
