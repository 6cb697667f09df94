//! # oxccl-kernels: fused streaming reductions at memory speed
//!
//! Every step of an all-reduce is "read what arrived, combine it with my chunk, write it on".
//! This crate is that step, usable alone: element-wise reductions of k input buffers into m
//! output buffers in **one pass over memory**, for every element type and operator NCCL has.
//!
//! ## Operations
//! - [`reduce`]`(op, dst, srcs)`: `dst = dst op srcs[0] op srcs[1] ...` in place.
//! - [`reduce_copy`]`(op, srcs, dsts)`: read k inputs once, write the result to m outputs
//!   (NCCL's `recvReduceCopySend`).
//! - `*_bytes` forms take a run-time [`DataType`] and byte slices of **any alignment** (ring
//!   slots, user buffers); `*_with` forms take a combining operator plus an [`Epilogue`]
//!   (scale or divide) applied to the combined value in the same pass, which is how Avg and
//!   PreMulSum are done ([`ReduceOp::split`]); `*_opts` forms take [`Options`] (backend,
//!   [`StoreMode`], threads); [`par_reduce_copy_bytes_with`] splits large buffers across
//!   threads.
//!
//! ## Contracts
//! - Every input and output has the same length; byte lengths are a multiple of the element
//!   size. Anything else is a [`KernelError`], never a panic.
//! - Integer Sum and Prod **wrap** on overflow (two's complement), as in NCCL; integer Avg is
//!   the wrapped sum divided with truncation; integer PreMulSum needs an integral scalar.
//! - The 16-bit floats accumulate in f32 across all k inputs and round once to the output
//!   type (round to nearest even). f32 and f64 accumulate in their own type, left to right.
//! - Min and Max of a NaN and a number is unspecified (it follows the x86 `min`/`max`
//!   instructions: the later operand wins).
//!
//! ## Backends
//! The CPU backend is chosen once per process ([`CpuBackend::detect`]): AVX-512 (F/BW/DQ/VL)
//! or AVX2 (+FMA, F16C) on x86-64, NEON on aarch64, else portable Rust. Set
//! `OXCCL_KERNELS_BACKEND=portable|avx2|avx512|neon` to force one. With the cargo feature
//! `cuda`, the `cuda` module runs the same operations on a GPU with kernels written in Rust
//! and compiled to PTX; without a driver it returns [`KernelError::CudaUnavailable`].
//!
//! ## Stores
//! A large reduction is limited by memory bandwidth, and a normal store first reads the
//! destination line (read-for-ownership). [`StoreMode::Auto`] therefore uses non-temporal
//! stores once a call's working set exceeds most of the last-level cache
//! ([`streaming_threshold_bytes`]) and normal stores below, so that a collective that reads its result back soon finds it in
//! cache. Collectives that know better pass [`StoreMode::Normal`] or
//! [`StoreMode::Streaming`].
//!
//! ## Example
//! ```
//! use oxccl_kernels::{reduce, reduce_copy_bytes_with, DataType, Epilogue, ReduceOp};
//!
//! // Typed, in place: dst = dst + a + b.
//! let mut dst = vec![1.0f32; 5];
//! let a = vec![2.0f32; 5];
//! let b = vec![3.0f32; 5];
//! reduce(ReduceOp::Sum, &mut dst, &[&a, &b])?;
//! assert_eq!(dst, vec![6.0; 5]);
//!
//! // Bytes at an odd offset, average of two ranks' contributions, written to two outputs.
//! let x: Vec<u8> = [4.0f32, 8.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let y: Vec<u8> = [2.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
//! let mut out1 = vec![0u8; 9];
//! let mut out2 = vec![0u8; 8];
//! let (combine, epilogue) = ReduceOp::Avg.split(2);
//! assert_eq!((combine, epilogue), (ReduceOp::Sum, Epilogue::Divide(2)));
//! reduce_copy_bytes_with(DataType::F32, combine, epilogue, &[&x, &y], &mut [&mut out1[1..], &mut out2])?;
//! assert_eq!(out2, [3.0f32, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
//! assert_eq!(out1[1..], out2[..]);
//!
//! // Bad input is an error, not a panic.
//! assert!(reduce(ReduceOp::Sum, &mut dst, &[&a[..3]]).is_err());
//! # Ok::<(), oxccl_kernels::KernelError>(())
//! ```

mod api;
mod convert;
mod cpu;
pub mod cuda;
mod element;
mod types;

pub use api::{
    par_reduce_copy_bytes_with, reduce, reduce_bytes, reduce_bytes_opts, reduce_bytes_with,
    reduce_copy, reduce_copy_bytes, reduce_copy_bytes_opts, reduce_copy_bytes_with,
    streaming_threshold_bytes, Options, StoreMode, MIN_BYTES_PER_THREAD,
};
pub use cpu::{last_level_cache_bytes, CpuBackend};
pub use element::Element;
pub use types::{DataType, Epilogue, KernelError, ReduceOp};
