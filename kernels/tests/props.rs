//! Property tests of the fused forms: for any lengths, offsets, input and output counts,
//! operators and epilogues, `reduce_copy` equals the reference, every output is identical,
//! and `reduce` equals `reduce_copy` of `[dst] ++ srcs`.

mod common;

use oxccl_kernels::{
    reduce_bytes_opts, reduce_copy_bytes_opts, CpuBackend, DataType, Options, ReduceOp, StoreMode,
};
use proptest::prelude::*;

fn dtype() -> impl Strategy<Value = DataType> {
    prop::sample::select(DataType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fused_forms_agree_with_reference(
        dt in dtype(),
        op_idx in 0usize..6,
        k in 1usize..9,
        m in 1usize..4,
        n in 0usize..300,
        offs in prop::collection::vec(0usize..16, 12),
        backend_idx in 0usize..4,
        streaming in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let backends = CpuBackend::available();
        let backend = backends[backend_idx % backends.len()];
        let op = common::ops_for(dt)[op_idx];
        let mut r = common::rng(seed);
        let bufs: Vec<Vec<u8>> = (0..k).map(|j| common::random_buf(dt, op, n, offs[j], &mut r)).collect();
        let srcs: Vec<&[u8]> = bufs.iter().enumerate().map(|(j, b)| &b[offs[j]..]).collect();
        let mut outs: Vec<Vec<u8>> = (0..m).map(|j| vec![0u8; offs[11 - j] + n * dt.size()]).collect();
        let mut dsts: Vec<&mut [u8]> = outs.iter_mut().enumerate().map(|(j, o)| &mut o[offs[11 - j]..]).collect();
        let stores = if streaming { StoreMode::Streaming } else { StoreMode::Normal };
        let opts = Options { backend: Some(backend), stores, threads: 1 };
        let (c, e) = op.split(k);
        reduce_copy_bytes_opts(&opts, dt, c, e, &srcs, &mut dsts).unwrap();
        prop_assert_eq!(common::check(dt, op, &srcs, dsts[0]), Ok(()));
        for d in &dsts[1..] {
            prop_assert_eq!(&d[..], &dsts[0][..]);
        }
        let mut inplace = srcs[0].to_vec();
        reduce_bytes_opts(&opts, dt, c, e, &mut inplace, &srcs[1..]).unwrap();
        prop_assert_eq!(&inplace[..], &dsts[0][..]);
    }

    #[test]
    fn backends_agree_bit_for_bit_on_sum(
        dt in dtype(),
        k in 1usize..5,
        n in 0usize..200,
        seed in any::<u64>(),
    ) {
        // Sum accumulates left to right in every backend, so results are identical.
        let mut r = common::rng(seed);
        let bufs: Vec<Vec<u8>> = (0..k).map(|_| common::random_buf(dt, ReduceOp::Sum, n, 0, &mut r)).collect();
        let srcs: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        let mut first: Option<Vec<u8>> = None;
        for b in CpuBackend::available() {
            let mut o = vec![0u8; n * dt.size()];
            let opts = Options { backend: Some(b), ..Options::default() };
            reduce_copy_bytes_opts(&opts, dt, ReduceOp::Sum, oxccl_kernels::Epilogue::None, &srcs, &mut [&mut o]).unwrap();
            match &first {
                None => first = Some(o),
                Some(f) => prop_assert_eq!(f, &o, "backend {} differs", b),
            }
        }
    }
}
