//! Criterion benches of the inner loops: every CPU backend, f32 / bf16 / f16 / i32 Sum with
//! 2 and 8 inputs, in cache (64 KiB per buffer) and out of cache (16 MiB) with normal and
//! streaming stores. Throughput is bytes read + written.
//!
//! `cargo bench -p oxccl-kernels --bench inner` (add `-- f32` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxccl_kernels::{
    reduce_copy_bytes_opts, CpuBackend, DataType, Epilogue, Options, ReduceOp, StoreMode,
};

fn fill(dt: DataType, bytes: usize, seed: u32) -> Vec<u8> {
    // Values in [1, 2) for floats (no denormals, no overflow), any bits for integers.
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut out = Vec::with_capacity(bytes);
    while out.len() < bytes {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let f = 1.0 + (x >> 8) as f32 / (1 << 24) as f32;
        match dt {
            DataType::F32 => out.extend(f.to_le_bytes()),
            DataType::BF16 => out.extend(((f.to_bits() >> 16) as u16).to_le_bytes()),
            DataType::F16 => out.extend((0x3c00u16 | (x as u16 & 0x3ff)).to_le_bytes()),
            _ => out.extend(x.to_le_bytes()),
        }
    }
    out.truncate(bytes);
    out
}

fn bench(c: &mut Criterion) {
    let cases = [
        (DataType::F32, 2),
        (DataType::F32, 8),
        (DataType::BF16, 2),
        (DataType::F16, 2),
        (DataType::I32, 2),
    ];
    for (dt, k) in cases {
        for bytes in [64 << 10, 16 << 20] {
            let mut g =
                c.benchmark_group(format!("{}_sum_x{k}_{}KiB", dt.short_name(), bytes >> 10));
            g.throughput(Throughput::Bytes(((k + 1) * bytes) as u64));
            if bytes > 1 << 20 {
                g.sample_size(20);
            }
            let inputs: Vec<Vec<u8>> = (0..k).map(|j| fill(dt, bytes, j as u32 + 1)).collect();
            let srcs: Vec<&[u8]> = inputs.iter().map(|v| &v[..]).collect();
            let mut out = vec![0u8; bytes];
            for backend in CpuBackend::available() {
                for stores in [StoreMode::Normal, StoreMode::Streaming] {
                    if bytes < 1 << 20 && stores == StoreMode::Streaming {
                        continue;
                    }
                    let opts = Options {
                        backend: Some(backend),
                        stores,
                        threads: 1,
                    };
                    let id = BenchmarkId::new(backend.name(), format!("{stores:?}").to_lowercase());
                    g.bench_function(id, |b| {
                        b.iter(|| {
                            reduce_copy_bytes_opts(
                                &opts,
                                dt,
                                ReduceOp::Sum,
                                Epilogue::None,
                                &srcs,
                                &mut [&mut out],
                            )
                            .expect("valid input")
                        })
                    });
                }
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
