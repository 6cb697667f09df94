//! The CUDA backend. Without a driver (this repository's CI machines), creating it must return
//! a clean `CudaUnavailable` error and the GPU tests print why they skip. With a GPU, every
//! dtype x op runs on the device against the same reference as the CPU tests.

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod common;

use oxccl_kernels::{cuda, KernelError};

#[test]
fn probe_without_driver_is_a_clean_error() {
    match cuda::probe() {
        Ok(n) => skip!("skipped: {n} CUDA device(s) present, so there is no error to check"),
        Err(e) => {
            assert!(matches!(e, KernelError::CudaUnavailable(_)), "{e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with("CUDA is not available: "), "{msg}");
            eprintln!("as expected here: {msg}");
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::common::{check, ops_for, random_buf, rng};
    use oxccl_kernels::cuda::CudaKernels;
    use oxccl_kernels::{DataType, KernelError};

    fn kernels() -> Option<CudaKernels> {
        match CudaKernels::new(0) {
            Ok(k) => Some(k),
            Err(e) => {
                assert!(matches!(e, KernelError::CudaUnavailable(_)), "{e:?}");
                skip!("skipped: {e}");
                None
            }
        }
    }

    #[test]
    fn new_without_driver_is_a_clean_error() {
        if let Some(k) = kernels() {
            skip!("skipped: a CUDA device is present ({k:?})");
        }
    }

    #[test]
    fn every_dtype_and_op_on_device() {
        let Some(k) = kernels() else { return };
        for dt in DataType::ALL {
            let es = dt.size();
            for (oi, op) in ops_for(dt).into_iter().enumerate() {
                for (li, &n) in [0usize, 1, 7, 63, 64, 65, 1000, (1 << 20) + 3]
                    .iter()
                    .enumerate()
                {
                    // 1..=11 inputs (more than one launch holds), 1..=5 outputs.
                    let kin = [2, 3, 8, 11, 1][(li + oi) % 5];
                    let m = 1 + (li + oi) % 5;
                    let mut r = rng((oi * 100 + li) as u64);
                    let host: Vec<Vec<u8>> = (0..kin)
                        .map(|_| random_buf(dt, op, n + 1, 0, &mut r))
                        .collect();
                    let dev: Vec<_> = host.iter().map(|h| k.upload(h).unwrap()).collect();
                    // Odd inputs start one element in: not 16-byte aligned, so the scalar path runs.
                    let off = |j: usize| (j % 2) * es;
                    let views: Vec<_> = dev
                        .iter()
                        .enumerate()
                        .map(|(j, d)| d.slice(off(j)..off(j) + n * es))
                        .collect();
                    let view_refs: Vec<_> = views.iter().collect();
                    let mut outs: Vec<_> = (0..m)
                        .map(|_| k.upload(&vec![0u8; n * es]).unwrap())
                        .collect();
                    {
                        let mut out_views: Vec<_> =
                            outs.iter_mut().map(|o| o.slice_mut(..)).collect();
                        let mut out_refs: Vec<_> = out_views.iter_mut().collect();
                        let (c, e) = op.split(kin);
                        k.reduce_copy(dt, c, e, &view_refs, &mut out_refs).unwrap();
                    }
                    let srcs: Vec<&[u8]> = host
                        .iter()
                        .enumerate()
                        .map(|(j, h)| &h[off(j)..off(j) + n * es])
                        .collect();
                    let first = k.download(&outs[0]).unwrap();
                    check(dt, op, &srcs, &first).unwrap_or_else(|e| panic!("cuda: {e}"));
                    for o in &outs[1..] {
                        assert_eq!(k.download(o).unwrap(), first, "{dt} {op}: outputs differ");
                    }
                }
            }
        }
    }
}
