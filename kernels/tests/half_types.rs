//! The 16-bit float kernels in depth: the SIMD backends' f16 and bf16 paths against the
//! reference (tolerances in `common`) and bit for bit against the portable loop (which
//! accumulates in f32 in the same order and rounds once), for every op, 1 to 8 inputs, lengths
//! around the SIMD body's register and iteration sizes, misaligned inputs and outputs, normal
//! and streaming stores; then special values (zeros, infinities, NaNs, subnormals, rounding
//! ties) bit for bit against the portable loop.

mod common;

use common::{check, ops_for, random_buf, rng};
use half::{bf16, f16};
use oxccl_kernels::{reduce_copy_bytes_opts, CpuBackend, DataType, Options, ReduceOp, StoreMode};
use rand::Rng;

/// Around 16 and 32 elements (one register, one register pair), 128 (one unrolled body
/// iteration of the pair lanes) and 256 (one wide iteration, taken with 6 or more inputs),
/// plus longer odd lengths; all of them for 1, 2 and 8 inputs, the middle ones for the rest
/// (debug builds are slow).
const LENGTHS: [usize; 9] = [1, 15, 33, 127, 129, 255, 257, 1000, 4099];

fn lengths(k: usize) -> &'static [usize] {
    if matches!(k, 1 | 2 | 8) {
        &LENGTHS
    } else {
        &LENGTHS[2..8]
    }
}

fn simd_backends() -> Vec<CpuBackend> {
    CpuBackend::available()
        .into_iter()
        .filter(|b| *b != CpuBackend::Portable)
        .collect()
}

/// Runs `srcs` through `backend` into an output at byte offset `mis`; returns the output.
fn run(
    backend: CpuBackend,
    stores: StoreMode,
    dt: DataType,
    op: ReduceOp,
    srcs: &[&[u8]],
    mis: usize,
) -> Vec<u8> {
    let opts = Options {
        backend: Some(backend),
        stores,
        threads: 1,
    };
    let mut out = vec![0x55u8; srcs[0].len() + mis];
    let (combine, epilogue) = op.split(srcs.len());
    reduce_copy_bytes_opts(&opts, dt, combine, epilogue, srcs, &mut [&mut out[mis..]])
        .unwrap_or_else(|e| panic!("{backend} {dt} {op:?}: {e}"));
    out.drain(..mis);
    out
}

/// Bit-for-bit equality of two 16-bit float buffers, any NaN matching any NaN.
fn same_bits(dt: DataType, a: &[u8], b: &[u8]) -> Result<(), String> {
    let nan = |x: u16| match dt {
        DataType::F16 => f16::from_bits(x).is_nan(),
        _ => bf16::from_bits(x).is_nan(),
    };
    for (i, (x, y)) in a.chunks_exact(2).zip(b.chunks_exact(2)).enumerate() {
        let (x, y) = (
            u16::from_le_bytes([x[0], x[1]]),
            u16::from_le_bytes([y[0], y[1]]),
        );
        if x != y && !(nan(x) && nan(y)) {
            return Err(format!("element {i}: {x:#06x} vs portable {y:#06x}"));
        }
    }
    Ok(())
}

#[test]
fn every_op_and_input_count_matches_the_reference_and_the_portable_loop() {
    let backends = simd_backends();
    eprintln!("testing {backends:?}");
    for dt in [DataType::F16, DataType::BF16] {
        for (oi, op) in ops_for(dt).into_iter().enumerate() {
            for k in 1..=8 {
                for (li, &n) in lengths(k).iter().enumerate() {
                    let seed = (oi * 1000 + k * 100 + li) as u64;
                    let mut r = rng(seed);
                    // Inputs at every byte misalignment, odd ones included.
                    let bufs: Vec<Vec<u8>> = (0..k)
                        .map(|j| random_buf(dt, op, n, (j + li) % 4, &mut r))
                        .collect();
                    let srcs: Vec<&[u8]> = bufs
                        .iter()
                        .enumerate()
                        .map(|(j, b)| &b[(j + li) % 4..])
                        .collect();
                    let portable = run(CpuBackend::Portable, StoreMode::Normal, dt, op, &srcs, 0);
                    for &b in &backends {
                        for (stores, mis) in [(StoreMode::Normal, 3), (StoreMode::Streaming, 2)] {
                            let ctx = format!("{b} {dt} {op:?} k={k} n={n} {stores:?} mis={mis}");
                            let got = run(b, stores, dt, op, &srcs, mis);
                            check(dt, op, &srcs, &got).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                            same_bits(dt, &got, &portable).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                        }
                    }
                }
            }
        }
    }
}

/// Special 16-bit patterns: signed zeros, infinities, quiet and signalling NaNs, the smallest
/// and largest subnormals and normals, and values next to rounding ties.
fn specials(dt: DataType) -> Vec<u16> {
    match dt {
        DataType::F16 => vec![
            0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xfe01, 0x0001, 0x8001, 0x03ff, 0x0400,
            0x7bff, 0xfbff, 0x3c00, 0x3c01, 0x1400, 0x1000, 0xbc00,
        ],
        _ => vec![
            0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffc1, 0x0001, 0x8001, 0x007f, 0x0080,
            0x7f7f, 0xff7f, 0x3f80, 0x3f81, 0x3b80, 0x3b00, 0xbf80,
        ],
    }
}

#[test]
fn special_values_match_the_portable_loop_bit_for_bit() {
    for dt in [DataType::F16, DataType::BF16] {
        let pool = specials(dt);
        for (oi, op) in ops_for(dt).into_iter().enumerate() {
            for k in 1..=8 {
                let mut r = rng(7000 + (oi * 10 + k) as u64);
                let n = 300;
                let bufs: Vec<Vec<u8>> = (0..k)
                    .map(|_| {
                        (0..n)
                            .flat_map(|_| pool[r.gen_range(0..pool.len())].to_le_bytes())
                            .collect()
                    })
                    .collect();
                let srcs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
                let portable = run(CpuBackend::Portable, StoreMode::Normal, dt, op, &srcs, 0);
                for b in simd_backends() {
                    for stores in [StoreMode::Normal, StoreMode::Streaming] {
                        let got = run(b, stores, dt, op, &srcs, 0);
                        same_bits(dt, &got, &portable)
                            .unwrap_or_else(|e| panic!("{b} {dt} {op:?} k={k} {stores:?}: {e}"));
                    }
                }
            }
        }
    }
}
