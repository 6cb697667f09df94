use oxccl_collectives::{Communicator, LocalTransport, Options, ReduceOp};

#[test]
fn all_reduce_sum_f64() {
    for transport in [
        LocalTransport::Memory,
        LocalTransport::Shm,
        LocalTransport::Tcp,
    ] {
        for p in [1usize, 2, 3, 4, 5] {
            for n in [0usize, 1, 7, 1000, 5003, 100_000] {
                let comms = Communicator::local_with(
                    p,
                    transport,
                    Options {
                        ring_bytes: 8192,
                        timeout: std::time::Duration::from_secs(3),
                        ..Options::default()
                    },
                )
                .unwrap();
                let hs: Vec<_> = comms
                    .into_iter()
                    .map(|c| {
                        std::thread::spawn(move || {
                            let r = c.rank();
                            let input: Vec<f64> = (0..n).map(|i| (r * 1000 + i) as f64).collect();
                            let mut out = vec![0f64; n];
                            c.all_reduce(&input, &mut out, ReduceOp::Sum)
                                .unwrap_or_else(|e| panic!("{transport:?} p={p} n={n}: {e}"));
                            for (i, v) in out.iter().enumerate() {
                                let want: f64 = (0..p).map(|q| (q * 1000 + i) as f64).sum();
                                assert_eq!(*v, want, "{transport:?} p={p} n={n} i={i}");
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            }
        }
    }
}
