//! Every dtype x op x CPU backend against the reference in `common`, on random non-zero data,
//! at lengths 0, 1, 7, 63, 64, 65, 1000 (and (1 << 20) + 3 for a few cases), with misaligned
//! starts, normal and streaming stores, in place and out of place.

mod common;

use common::{check, ops_for, random_buf, rng};
use oxccl_kernels::{
    reduce_bytes_opts, reduce_copy_bytes_opts, CpuBackend, DataType, Options, ReduceOp, StoreMode,
};

const LENGTHS: [usize; 7] = [0, 1, 7, 63, 64, 65, 1000];
const INPUTS: [usize; 4] = [2, 3, 8, 1];

/// Runs one case both out of place (two outputs at different misalignments) and in place.
fn case(
    backend: CpuBackend,
    dt: DataType,
    op: ReduceOp,
    k: usize,
    n: usize,
    seed: u64,
    (stores, threads): (StoreMode, usize),
) {
    let mut r = rng(seed);
    let es = dt.size();
    let bufs: Vec<Vec<u8>> = (0..k)
        .map(|j| random_buf(dt, op, n, (j * 3 + 1) % 8, &mut r))
        .collect();
    let srcs: Vec<&[u8]> = bufs
        .iter()
        .enumerate()
        .map(|(j, b)| &b[(j * 3 + 1) % 8..])
        .collect();
    let opts = Options {
        backend: Some(backend),
        stores,
        threads,
    };
    let ctx = format!("backend={backend} seed={seed} stores={stores:?} threads={threads}");

    // Out of place, two outputs.
    let mut o1 = vec![0x55u8; n * es + 5];
    let mut o2 = vec![0x55u8; n * es];
    let (combine, epilogue) = op.split(k);
    reduce_copy_bytes_opts(
        &opts,
        dt,
        combine,
        epilogue,
        &srcs,
        &mut [&mut o1[5..], &mut o2[..]],
    )
    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    check(dt, op, &srcs, &o1[5..]).unwrap_or_else(|e| panic!("{ctx} reduce_copy out1: {e}"));
    assert_eq!(o1[5..], o2[..], "{ctx}: the two outputs differ");
    assert!(
        o1[..5].iter().all(|b| *b == 0x55),
        "{ctx}: wrote before the output"
    );

    // In place: dst is the first input.
    let mut dst = vec![0u8; 3];
    dst.extend_from_slice(srcs[0]);
    let (combine, epilogue) = op.split(k);
    reduce_bytes_opts(&opts, dt, combine, epilogue, &mut dst[3..], &srcs[1..])
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
    check(dt, op, &srcs, &dst[3..]).unwrap_or_else(|e| panic!("{ctx} reduce: {e}"));
}

fn sweep(dt: DataType) {
    let backends = CpuBackend::available();
    eprintln!("{dt}: testing backends {backends:?}");
    for (bi, &b) in backends.iter().enumerate() {
        for (oi, op) in ops_for(dt).into_iter().enumerate() {
            for (li, &n) in LENGTHS.iter().enumerate() {
                let k = INPUTS[(li + oi) % INPUTS.len()];
                let stores = if (li + bi) % 2 == 0 {
                    StoreMode::Normal
                } else {
                    StoreMode::Streaming
                };
                let seed = (bi * 1000 + oi * 100 + li) as u64;
                case(b, dt, op, k, n, seed, (stores, 1));
            }
            // Every op with eight inputs at one length that exercises head, body and tail.
            case(b, dt, op, 8, 1000, 7, (StoreMode::Streaming, 1));
        }
    }
}

macro_rules! dtype_tests {
    ($($name:ident => $dt:expr),*) => {$(
        #[test]
        fn $name() {
            sweep($dt);
        }
    )*};
}

dtype_tests!(
    sweep_f32 => DataType::F32,
    sweep_f64 => DataType::F64,
    sweep_f16 => DataType::F16,
    sweep_bf16 => DataType::BF16,
    sweep_i8 => DataType::I8,
    sweep_u8 => DataType::U8,
    sweep_i32 => DataType::I32,
    sweep_u32 => DataType::U32,
    sweep_i64 => DataType::I64,
    sweep_u64 => DataType::U64
);

/// (1 << 20) + 3 elements: the long-buffer path of every SIMD backend with streaming stores,
/// and the multi-threaded split. Few cases, because debug builds are slow.
#[test]
fn large_buffers() {
    let n = (1 << 20) + 3;
    let cases = [
        (DataType::F32, ReduceOp::Sum),
        (DataType::BF16, ReduceOp::Avg),
        (DataType::F16, ReduceOp::Sum),
        (DataType::I8, ReduceOp::Prod),
    ];
    for b in CpuBackend::available() {
        if b == CpuBackend::Portable {
            continue;
        }
        for (i, (dt, op)) in cases.into_iter().enumerate() {
            case(b, dt, op, 2, n, 900 + i as u64, (StoreMode::Auto, 1));
        }
        case(
            b,
            DataType::F32,
            ReduceOp::Max,
            3,
            n,
            950,
            (StoreMode::Streaming, 3),
        );
    }
}
