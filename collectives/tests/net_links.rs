//! Links through `oxccl-transport`'s network fabrics (what ranks on different hosts use), run as
//! thread ranks: TCP over 127.0.0.1, and the RDMA protocol over the in-process model of RC
//! verbs — the whole cross-host path of a cluster run (proxy threads, credits, RDMA write with
//! immediate, striping and reassembly) without a NIC.

mod common;

use common::on_ranks;
use oxccl_collectives::{LocalTransport, Options, ReduceOp};

/// Integer-valued floats unique per (rank, index), so sums are exact.
fn value(rank: usize, i: usize) -> f32 {
    ((rank * 7919 + i * 31) % 1021) as f32 - 500.0
}

fn check_ops(transport: LocalTransport, p: usize, n: usize) {
    let opts = Options {
        small_bytes: 0,
        ..Options::default()
    };
    on_ranks(p, transport, opts, move |c| {
        let me = c.rank();
        let input: Vec<f32> = (0..n).map(|i| value(me, i)).collect();
        let mut out = vec![0f32; n];
        c.all_reduce(&input, &mut out, ReduceOp::Sum).unwrap();
        for (i, &x) in out.iter().enumerate() {
            let want: f32 = (0..p).map(|r| value(r, i)).sum();
            assert_eq!(x, want, "{transport:?} all_reduce rank {me} element {i}");
        }
        let mut buf = if me == p - 1 {
            input.clone()
        } else {
            vec![0f32; n]
        };
        c.broadcast(&mut buf, p - 1).unwrap();
        for (i, &x) in buf.iter().enumerate() {
            assert_eq!(x, value(p - 1, i), "{transport:?} broadcast element {i}");
        }
        let mut gathered = vec![0f32; n * p];
        c.all_gather(&input, &mut gathered).unwrap();
        for (i, &x) in gathered.iter().enumerate() {
            assert_eq!(
                x,
                value(i / n, i % n),
                "{transport:?} all_gather element {i}"
            );
        }
        c.barrier().unwrap();
    });
}

#[test]
fn tcp_fabric_links_carry_collectives() {
    // 300_007 floats: the messages pass TCP's striping threshold, so pieces arrive out of order.
    for p in [2, 3] {
        check_ops(LocalTransport::Tcp, p, 300_007);
    }
}

#[test]
fn rdma_protocol_on_the_verbs_model_carries_collectives() {
    for p in [2, 3, 4] {
        check_ops(LocalTransport::RdmaModel, p, 40_009);
    }
}
