//! Every operation on thread ranks over in-memory rings and shared-memory files: ranks 1..=9 and
//! 13, sizes 0, 1, primes and sizes not divisible by the rank count, every dtype and reduction,
//! each element checked against the exact answer.

mod common;

use common::{check, data, expected, on_ranks, value};
use oxccl_collectives::{Communicator, DataType, LocalTransport, Options, ReduceOp};

const RANKS: [usize; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 13];

fn ops_for(dtype: DataType) -> Vec<ReduceOp> {
    let scale = if dtype.is_float() { 0.5 } else { 3.0 };
    vec![
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
        ReduceOp::PreMulSum(scale),
    ]
}

/// Counts: 0, 1, a prime, and one more than a multiple of the rank count.
fn counts(p: usize) -> [usize; 4] {
    [0, 1, 97, 3 * p + 1]
}

/// Every operation once per (dtype, count), reductions rotating over the ops.
fn all_ops(c: Communicator, dtypes: &[DataType], big: usize) {
    let (p, me) = (c.size(), c.rank());
    let mut k = 0u64;
    for &dt in dtypes {
        let es = dt.size();
        let ops = ops_for(dt);
        let mut cs = counts(p).to_vec();
        cs.push(big);
        for &n in &cs {
            k += 1;
            let op = ops[k as usize % ops.len()];
            let tag = format!("p={p} rank={me} {dt} n={n} {op}");
            // all_reduce, out of place: every op for this dtype.
            for &op in &ops {
                let input = data(dt, op, k, me, n);
                let mut out = vec![0u8; n * es];
                c.all_reduce_bytes(&input, &mut out, dt, op)
                    .unwrap_or_else(|e| panic!("{tag} all_reduce {op}: {e}"));
                check(&format!("{tag} all_reduce {op}"), dt, &out, |i| {
                    expected(dt, op, k, p, i)
                });
            }
            // in place
            let mut buf = data(dt, op, k, me, n);
            c.all_reduce_in_place_bytes(&mut buf, dt, op).unwrap();
            check(&format!("{tag} all_reduce_in_place"), dt, &buf, |i| {
                expected(dt, op, k, p, i)
            });
            // reduce_scatter: n elements per rank
            let input = data(dt, op, k, me, n * p);
            let mut out = vec![0u8; n * es];
            c.reduce_scatter_bytes(&input, &mut out, dt, op).unwrap();
            check(&format!("{tag} reduce_scatter"), dt, &out, |i| {
                expected(dt, op, k, p, me * n + i)
            });
            // all_gather
            let input: Vec<u8> = data(dt, ReduceOp::Sum, k, me, n);
            let mut out = vec![0u8; n * p * es];
            c.all_gather_bytes(&input, &mut out, dt).unwrap();
            check(&format!("{tag} all_gather"), dt, &out, |i| {
                value(dt, ReduceOp::Sum, k, i / n.max(1), i % n.max(1))
            });
            // broadcast from a rotating root
            let root = k as usize % p;
            let mut buf = if me == root {
                data(dt, ReduceOp::Sum, k, me, n)
            } else {
                vec![0xAB; n * es]
            };
            c.broadcast_bytes(&mut buf, dt, root).unwrap();
            check(&format!("{tag} broadcast root {root}"), dt, &buf, |i| {
                value(dt, ReduceOp::Sum, k, root, i)
            });
            // reduce to the same root
            let input = data(dt, op, k, me, n);
            let mut out = if me == root {
                vec![0u8; n * es]
            } else {
                Vec::new()
            };
            c.reduce_bytes(&input, &mut out, dt, op, root).unwrap();
            if me == root {
                check(&format!("{tag} reduce root {root}"), dt, &out, |i| {
                    expected(dt, op, k, p, i)
                });
            }
            // all_to_all: n elements per pair
            let input = data(dt, ReduceOp::Sum, k, me, n * p);
            let mut out = vec![0u8; n * p * es];
            c.all_to_all_bytes(&input, &mut out, dt).unwrap();
            check(&format!("{tag} all_to_all"), dt, &out, |i| {
                value(dt, ReduceOp::Sum, k, i / n.max(1), me * n + i % n.max(1))
            });
            // send/recv around a ring (even ranks send first so nobody waits on a full ring forever)
            if p > 1 {
                let to = (me + 1) % p;
                let from = (me + p - 1) % p;
                let msg = data(dt, ReduceOp::Sum, k, me, n);
                let mut got = vec![0u8; n * es];
                if me % 2 == 0 {
                    c.send_bytes(&msg, dt, to).unwrap();
                    c.recv_bytes(&mut got, dt, from).unwrap();
                } else {
                    c.recv_bytes(&mut got, dt, from).unwrap();
                    c.send_bytes(&msg, dt, to).unwrap();
                }
                check(&format!("{tag} recv"), dt, &got, |i| {
                    value(dt, ReduceOp::Sum, k, from, i)
                });
            }
            c.barrier().unwrap();
        }
    }
}

#[test]
fn every_op_every_dtype_memory() {
    for p in RANKS {
        on_ranks(p, LocalTransport::Memory, Options::default(), |c| {
            all_ops(c, &DataType::ALL, 1500)
        });
    }
}

#[test]
fn every_op_shm_and_schedules_for_small_sizes() {
    // small_bytes 0 sends even one element through the schedules; a 4 KiB ring wraps often.
    let opts = Options {
        small_bytes: 0,
        ring_bytes: 4096,
        ..Options::default()
    };
    for p in RANKS {
        let dts = [DataType::F32, DataType::I8, DataType::BF16, DataType::U64];
        on_ranks(p, LocalTransport::Shm, opts.clone(), move |c| {
            all_ops(c, &dts, 3001)
        });
    }
}

#[test]
fn tcp_links_carry_every_op() {
    for p in [2, 3, 5] {
        let opts = Options {
            small_bytes: 0,
            ..Options::default()
        };
        on_ranks(p, LocalTransport::Tcp, opts, |c| {
            all_ops(c, &[DataType::F64, DataType::I32], 20_011)
        });
    }
}

#[test]
fn every_algorithm_all_reduce() {
    for algo in ["ring", "rhd", "tree", "dbtree"] {
        for p in RANKS {
            let opts = Options {
                algorithm: Some(algo.into()),
                ring_bytes: 8192,
                chunk_bytes: 512,
                ..Options::default()
            };
            on_ranks(p, LocalTransport::Memory, opts, move |c| {
                let me = c.rank();
                for (k, n) in [0usize, 1, 13, 1024 * p + 3, 40_009]
                    .into_iter()
                    .enumerate()
                {
                    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max] {
                        let dt = DataType::F32;
                        let input = data(dt, op, k as u64, me, n);
                        let mut out = vec![0u8; n * 4];
                        c.all_reduce_bytes(&input, &mut out, dt, op)
                            .unwrap_or_else(|e| panic!("{algo} p={p} n={n}: {e}"));
                        check(&format!("{algo} p={p} n={n} {op}"), dt, &out, |i| {
                            expected(dt, op, k as u64, p, i)
                        });
                    }
                }
            });
        }
    }
}

#[test]
fn hierarchical_algorithm_on_given_dims() {
    for (dims, p) in [
        ("hier:2x2", 4),
        ("hier:2x3", 6),
        ("hier:3x2", 6),
        ("hier:2x2x2", 8),
    ] {
        let opts = Options {
            algorithm: Some(dims.into()),
            chunk_bytes: 1024,
            ..Options::default()
        };
        on_ranks(p, LocalTransport::Memory, opts, move |c| {
            let me = c.rank();
            for (k, n) in [1usize, 17, 10_007].into_iter().enumerate() {
                let dt = DataType::F64;
                let op = ReduceOp::Sum;
                let input = data(dt, op, k as u64, me, n);
                let mut out = vec![0u8; n * 8];
                c.all_reduce_bytes(&input, &mut out, dt, op).unwrap();
                check(&format!("{dims} n={n}"), dt, &out, |i| {
                    expected(dt, op, k as u64, p, i)
                });
                let rs_in = data(dt, op, k as u64, me, n * p);
                let mut rs = vec![0u8; n * 8];
                c.reduce_scatter_bytes(&rs_in, &mut rs, dt, op).unwrap();
                check(&format!("{dims} rs n={n}"), dt, &rs, |i| {
                    expected(dt, op, k as u64, p, me * n + i)
                });
            }
        });
    }
}

#[test]
fn non_blocking_calls_complete_in_call_order() {
    on_ranks(4, LocalTransport::Memory, Options::default(), |c| {
        let me = c.rank() as f32;
        let a = c.start_all_reduce(vec![me; 1000], ReduceOp::Sum);
        let b = c.start_all_gather(vec![me; 3]);
        let d = c.start_broadcast(vec![me; 5], 2);
        // A blocking call made after them runs after them.
        let mut x = [me];
        c.all_reduce_in_place(&mut x, ReduceOp::Max).unwrap();
        assert_eq!(x, [3.0]);
        assert_eq!(a.wait().unwrap(), vec![6.0; 1000]);
        let g = b.wait().unwrap();
        assert_eq!(
            g,
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0]
        );
        assert_eq!(d.wait().unwrap(), vec![2.0; 5]);
        c.start_barrier().wait().unwrap();
    });
}

#[test]
fn typed_calls_and_bad_arguments() {
    on_ranks(3, LocalTransport::Memory, Options::default(), |c| {
        let v: Vec<i64> = (0..10).map(|i| i * (c.rank() as i64 + 1)).collect();
        let mut out = vec![0i64; 10];
        c.all_reduce(&v, &mut out, ReduceOp::Sum).unwrap();
        assert_eq!(out, (0..10).map(|i| i * 6).collect::<Vec<_>>());
        // Wrong lengths and roots are caught before anything is sent, on every rank alike.
        assert!(c.all_reduce(&v, &mut out[..5], ReduceOp::Sum).is_err());
        assert!(c.broadcast(&mut out, 3).is_err());
        assert!(c.all_gather(&v, &mut out).is_err());
        assert!(c.send(&v, c.rank()).is_err());
        assert!(c
            .all_reduce_bytes(&[0u8; 3], &mut [0u8; 3], DataType::F32, ReduceOp::Sum)
            .is_err());
        // An integer PreMulSum needs an integral scale.
        assert!(c
            .all_reduce(&v, &mut out, ReduceOp::PreMulSum(0.5))
            .is_err());
        // The communicator still works afterwards.
        c.all_reduce(&v, &mut out, ReduceOp::Max).unwrap();
        assert_eq!(out, (0..10).map(|i| i * 3).collect::<Vec<_>>());
    });
}
