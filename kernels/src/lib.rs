//! # oxccl-kernels: streaming reductions at memory speed
//!
//! Fused `reduce` and `reduce_copy` over every element type and reduction operator the
//! collectives use, on the CPU with hand-written SIMD and on CUDA devices.
//!
//! (Being built: see the kernels issue.)
