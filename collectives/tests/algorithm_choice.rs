//! Which algorithm runs, on the executor: the hierarchical reduce-scatter and all-gather (the
//! halves of DDL's all-reduce) on given dims, checked element by element; a forced algorithm
//! that does not implement a call falls back to the tuner's choice with a `warn` line, and the
//! communicator goes on working.

mod common;

use common::{data, decode, expected, on_ranks};
use oxccl_collectives::{DataType, LocalTransport, Options, Parts, ReduceOp};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[test]
fn hierarchical_reduce_scatter_and_all_gather_on_given_dims() {
    for (dims, p) in [("hier:2x3", 6), ("hier:3x2", 6), ("hier:2x2x2", 8)] {
        let options = Options {
            algorithm: Some(dims.into()),
            chunk_bytes: 256,
            ..Options::default()
        };
        on_ranks(p, LocalTransport::Memory, options, move |c| {
            let me = c.rank();
            for (seed, n) in [0usize, 1, 17, 1009].into_iter().enumerate() {
                let seed = seed as u64;
                for dt in [DataType::F32, DataType::I64, DataType::BF16] {
                    let es = dt.size();
                    let op = ReduceOp::Sum;
                    let input = data(dt, op, seed, me, n * p);
                    let mut rs = vec![0u8; n * es];
                    c.reduce_scatter_bytes(&input, &mut rs, dt, op).unwrap();
                    for (i, x) in rs.chunks_exact(es).enumerate() {
                        let want = expected(dt, op, seed, p, me * n + i);
                        assert_eq!(decode(dt, x), want, "{dims} rs {dt} n={n} element {i}");
                    }
                    let mine = data(dt, op, seed, me, n);
                    let mut ag = vec![0u8; n * p * es];
                    c.all_gather_bytes(&mine, &mut ag, dt).unwrap();
                    let want: Vec<u8> = (0..p).flat_map(|q| data(dt, op, seed, q, n)).collect();
                    assert_eq!(ag, want, "{dims} ag {dt} n={n}");
                }
            }
            let algo = c
                .algorithm_for(
                    oxccl_collectives::schedule::Collective::ReduceScatter,
                    1 << 20,
                )
                .unwrap();
            assert!(algo.starts_with(dims), "{algo}");
        });
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_forced_algorithm_that_does_not_fit_a_call_falls_back_with_a_warning() {
    // dbtree only does all-reduce; hier cannot run uneven parts (its shards are out of rank
    // order); tree does no all-gather.
    for (algo, p) in [("dbtree", 4), ("hier:2x2", 4), ("tree", 3)] {
        let options = Options {
            algorithm: Some(algo.into()),
            ..Options::default()
        };
        let log = Captured::default();
        let sink = log.clone();
        on_ranks(p, LocalTransport::Memory, options, move |c| {
            let sink = sink.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let me = c.rank();
                let counts: Vec<usize> = (0..p).map(|q| q * 3).collect();
                let mine = vec![me as u32; counts[me]];
                let mut out = vec![0u32; counts.iter().sum()];
                c.all_gather_v(&mine, &mut out, Parts::packed(&counts))
                    .unwrap();
                let want: Vec<u32> = (0..p)
                    .flat_map(|q| std::iter::repeat_n(q as u32, counts[q]))
                    .collect();
                assert_eq!(out, want);
                let mut gathered = vec![0u32; if me == 0 { 2 * p } else { 0 }];
                c.gather(&[me as u32, 7], &mut gathered, 0).unwrap();
                if me == 0 {
                    let want: Vec<u32> = (0..p as u32).flat_map(|q| [q, 7]).collect();
                    assert_eq!(gathered, want);
                }
                let mut all = vec![0f32; p];
                c.all_gather(&[me as f32], &mut all).unwrap();
                assert_eq!(all, (0..p).map(|q| q as f32).collect::<Vec<_>>());
            });
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("WARN"),
            "OXCCL_ALGO={algo}: no warning in {text:?}"
        );
        assert!(text.contains("ignored"), "OXCCL_ALGO={algo}: {text}");
    }
}
