//! Groups and non-blocking operations: matched sends and receives complete whatever their size
//! (64 MiB both ways between every pair and around a ring, inside one group), mixed with
//! collectives in the same group, and the non-blocking forms on owned and borrowed buffers
//! (the pattern of the issue: both ranks start a send and then a receive of 1M f32 to each
//! other). Every received element is checked against data unique per (sender, receiver, index).

mod common;

use common::on_ranks;
use oxccl_collectives::{Communicator, DataType, Error, LocalTransport, Options, ReduceOp};

/// Element `i` of what `from` sends to `to`.
fn word(from: usize, to: usize, i: usize) -> u64 {
    let x = (from as u64) << 56 | (to as u64) << 48 | i as u64;
    x ^ (x >> 17).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn message(from: usize, to: usize, n: usize) -> Vec<u64> {
    (0..n).map(|i| word(from, to, i)).collect()
}

fn check_from(got: &[u64], from: usize, to: usize) {
    for (i, g) in got.iter().enumerate() {
        if *g != word(from, to, i) {
            panic!("rank {to}: element {i} from rank {from} is {g:#x}");
        }
    }
}

const MIB64: usize = (64 << 20) / 8;

#[test]
fn every_pair_exchanges_64_mib_both_ways_in_one_group() {
    on_ranks(3, LocalTransport::Memory, Options::default(), |comm| {
        let (me, p) = (comm.rank(), comm.size());
        let peers: Vec<usize> = (0..p).filter(|&q| q != me).collect();
        let outgoing: Vec<Vec<u64>> = peers.iter().map(|&q| message(me, q, MIB64)).collect();
        let mut incoming: Vec<Vec<u64>> = peers.iter().map(|_| vec![0u64; MIB64]).collect();
        let g = comm.group();
        // Every send first, then every receive: the order that deadlocks blocking calls.
        for (k, &q) in peers.iter().enumerate() {
            g.send(&outgoing[k], q).unwrap();
        }
        for (k, buf) in incoming.iter_mut().enumerate() {
            g.recv(buf, peers[k]).unwrap();
        }
        g.end().unwrap();
        for (k, &q) in peers.iter().enumerate() {
            check_from(&incoming[k], q, me);
        }
    });
}

#[test]
fn a_ring_of_64_mib_messages_in_one_group() {
    on_ranks(4, LocalTransport::Shm, Options::default(), |comm| {
        let (me, p) = (comm.rank(), comm.size());
        let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
        let out = message(me, next, MIB64);
        let mut inc = vec![0u64; MIB64];
        let g = comm.group();
        g.send(&out, next).unwrap();
        g.recv(&mut inc, prev).unwrap();
        g.end().unwrap();
        check_from(&inc, prev, me);
    });
}

/// Sends, receives and collectives in one group, over several transports; the collectives'
/// sizes cover the tiny, small and scheduled paths, which must go behind the queued bytes.
#[test]
fn sends_receives_and_collectives_in_one_group() {
    for (transport, p) in [
        (LocalTransport::Memory, 4),
        (LocalTransport::Shm, 3),
        (LocalTransport::Tcp, 3),
        (LocalTransport::Memory, 1),
    ] {
        for count in [1usize, 1000, 300_000] {
            on_ranks(p, transport, Options::default(), move |comm| {
                let (me, p) = (comm.rank(), comm.size());
                let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
                let out = message(me, next, 250_000);
                let mut inc = vec![0u64; 250_000];
                let input: Vec<i64> = (0..count).map(|i| (me * 31 + i % 101) as i64 - 7).collect();
                let mut sum = vec![0i64; count];
                let mut gathered = vec![0u32; 5 * p];
                let g = comm.group();
                g.all_reduce(&input, &mut sum, ReduceOp::Sum);
                if p > 1 {
                    g.send(&out, next).unwrap();
                    g.recv(&mut inc, prev).unwrap();
                }
                let mine = [me as u32 * 3; 5];
                g.all_gather(&mine, &mut gathered);
                g.end().unwrap();
                if p > 1 {
                    check_from(&inc, prev, me);
                }
                for (i, s) in sum.iter().enumerate() {
                    let want: i64 = (0..p).map(|q| (q * 31 + i % 101) as i64 - 7).sum();
                    assert_eq!(
                        *s, want,
                        "rank {me}: all_reduce element {i} ({transport:?})"
                    );
                }
                for q in 0..p {
                    assert_eq!(gathered[5 * q..5 * q + 5], [q as u32 * 3; 5]);
                }
            });
        }
    }
}

/// The case: each rank starts a send of 1M f32 to the other, then a receive from it.
#[test]
fn started_send_then_receive_both_ways_completes() {
    on_ranks(2, LocalTransport::Shm, Options::default(), |comm| {
        let me = comm.rank();
        let other = 1 - me;
        let n = 1 << 20;
        let data: Vec<f32> = (0..n).map(|i| (me * n + i) as f32).collect();
        let s = comm.start_send(data, other).unwrap();
        let r = comm.start_recv(vec![0f32; n], other).unwrap();
        let got = r.wait().unwrap();
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (other * n + i) as f32));
        assert_eq!(s.wait().unwrap().len(), n);
    });
}

/// Posted sends and receives stay queued, and move, while blocking collectives of every size
/// (the tiny, small and scheduled paths) run in between, on every rank in the same place.
#[test]
fn posted_operations_survive_collectives_in_between() {
    on_ranks(3, LocalTransport::Shm, Options::default(), |comm| {
        let (me, p) = (comm.rank(), comm.size());
        let (next, prev) = ((me + 1) % p, (me + p - 1) % p);
        let r = comm.start_recv(vec![0u64; 300_000], prev).unwrap();
        let s = comm.start_send(message(me, next, 300_000), next).unwrap();
        for count in [1usize, 2, 100, 5000, 200_000] {
            let mut v: Vec<u32> = (0..count).map(|i| (me + i) as u32).collect();
            comm.all_reduce_in_place(&mut v, ReduceOp::Max).unwrap();
            assert!(v.iter().enumerate().all(|(i, &x)| x == (p - 1 + i) as u32));
        }
        comm.barrier().unwrap();
        check_from(&r.wait().unwrap(), prev, me);
        drop(s);
    });
}

/// Non-blocking forms on borrowed buffers: sends and receives posted, collectives in line on
/// the scope's threads, everything checked after the scope.
#[test]
fn scoped_operations_on_borrowed_buffers() {
    on_ranks(4, LocalTransport::Memory, Options::default(), |comm| {
        let (me, p) = (comm.rank(), comm.size());
        let peers: Vec<usize> = (0..p).filter(|&q| q != me).collect();
        let outgoing: Vec<Vec<u64>> = peers.iter().map(|&q| message(me, q, 200_000)).collect();
        let mut incoming: Vec<Vec<u64>> = peers.iter().map(|_| vec![0u64; 200_000]).collect();
        let input: Vec<f64> = (0..10_000)
            .map(|i| (me * 10_000 + i) as f64 * 0.5)
            .collect();
        let mut sum = vec![0f64; input.len()];
        let mut bytes = vec![me as u8; 64];
        comm.scope(|s| {
            let mut reqs = Vec::new();
            for (k, &q) in peers.iter().enumerate() {
                reqs.push(s.send(&outgoing[k], q).unwrap());
            }
            for (k, buf) in incoming.iter_mut().enumerate() {
                reqs.push(s.recv(buf, peers[k]).unwrap());
            }
            let ar = s.all_reduce(&input, &mut sum, ReduceOp::Sum);
            let bc = s.broadcast_bytes(&mut bytes, DataType::U8, 2);
            ar.wait().unwrap();
            bc.wait().unwrap();
            for r in reqs {
                r.wait().unwrap();
            }
        });
        for (k, &q) in peers.iter().enumerate() {
            check_from(&incoming[k], q, me);
        }
        for (i, x) in sum.iter().enumerate() {
            let want: f64 = (0..p).map(|q| (q * 10_000 + i) as f64 * 0.5).sum();
            assert!(
                (x - want).abs() <= 1e-9 * want.abs(),
                "rank {me}: element {i}"
            );
        }
        assert_eq!(bytes, vec![2u8; 64]);
    });
}

/// Requests that are never waited for still finish before the scope ends.
#[test]
fn a_scope_finishes_what_was_not_waited_for() {
    on_ranks(2, LocalTransport::Memory, Options::default(), |comm| {
        let me = comm.rank();
        let out = message(me, 1 - me, 500_000);
        let mut inc = vec![0u64; 500_000];
        comm.scope(|s| {
            let _ = s.send(&out, 1 - me).unwrap();
            std::mem::forget(s.recv(&mut inc, 1 - me).unwrap());
        });
        check_from(&inc, 1 - me, me);
    });
}

#[test]
fn bad_arguments_are_refused_when_added() {
    let comms = Communicator::local(2).unwrap();
    let c = &comms[0];
    let g = c.group();
    let data = [0u8; 3];
    assert!(matches!(
        g.send_bytes(&data, DataType::F32, 1),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        g.send_bytes(&data, DataType::U8, 0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        g.send_bytes(&data, DataType::U8, 7),
        Err(Error::Invalid { .. })
    ));
    // An empty group is fine.
    g.end().unwrap();
    assert!(matches!(
        c.start_send(vec![1u8], 5),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn uneven_collectives_run_in_groups_and_scopes() {
    use oxccl_collectives::Parts;
    on_ranks(3, LocalTransport::Memory, Options::default(), |comm| {
        let (me, p) = (comm.rank(), comm.size());
        // Rank q contributes q + 1 elements (rank 1's part is empty in the all-to-all below).
        let counts: Vec<usize> = (0..p).map(|q| q + 1).collect();
        let total: usize = counts.iter().sum();
        let mine = message(me, me, counts[me]);
        let mut gathered = vec![0u64; total];
        let sends: Vec<usize> = (0..p).map(|q| if q == 1 { 0 } else { 2 }).collect();
        let recvs: Vec<usize> = vec![if me == 1 { 0 } else { 2 }; p];
        let out: Vec<u64> = (0..p).flat_map(|q| message(me, q, sends[q])).collect();
        let mut inc = vec![0u64; recvs.iter().sum()];
        let g = comm.group();
        g.all_gather_v(&mine, &mut gathered, Parts::packed(&counts));
        g.all_to_all_v(&out, Parts::packed(&sends), &mut inc, Parts::packed(&recvs));
        g.end().unwrap();
        let mut at = 0;
        for (q, &c) in counts.iter().enumerate() {
            check_from(&gathered[at..at + c], q, q);
            at += c;
        }
        for q in 0..p {
            check_from(&inc[q * recvs[q]..(q + 1) * recvs[q]], q, me);
        }
        let mut root_buf = vec![0u64; if me == 0 { total } else { 0 }];
        comm.scope(|s| {
            s.gather_v(&mine, &mut root_buf, Parts::packed(&counts), 0)
                .wait()
        })
        .unwrap();
        if me == 0 {
            assert_eq!(root_buf, gathered);
        }
    });
}

/// A receipt that arrives before its send is posted (the receiver posted both receives at
/// once, so the first blocking send takes both receipts off the stream) still completes the
/// second send.
#[test]
fn a_receipt_that_comes_before_its_send() {
    for transport in [
        LocalTransport::Memory,
        LocalTransport::Shm,
        LocalTransport::Tcp,
    ] {
        on_ranks(2, transport, Options::default(), |comm| {
            if comm.rank() == 1 {
                let a = comm.start_recv(vec![0u64; 1000], 0).unwrap();
                let b = comm.start_recv(vec![0u64; 3000], 0).unwrap();
                check_from(&a.wait().unwrap(), 0, 1);
                check_from(&b.wait().unwrap(), 0, 1);
            } else {
                // Let both receipts arrive before the first send looks for its own.
                std::thread::sleep(std::time::Duration::from_millis(50));
                comm.send(&message(0, 1, 1000), 1).unwrap();
                comm.send(&message(0, 1, 3000), 1).unwrap();
            }
            comm.barrier().unwrap();
        });
    }
}

/// Message lengths (u64 elements) below and above the single-copy threshold (256 KiB), in an
/// order that puts several large ones back to back: their offers are in flight together.
const MIXED: [usize; 7] = [40_000, 1_000, 131_072, 20_000, 600_000, 32_769, 0];

/// Several large messages to one peer in flight at once (offered for the single-copy pull
/// while the ones before them are still being pulled), mixed with small ones through the
/// ring, every send posted before any receive; threads and shm, 2 and 3 ranks, with the
/// threshold at its default and at its floor (every message but the smallest pulled).
#[test]
fn several_large_messages_to_one_peer_in_flight() {
    for (transport, p, min) in [
        (LocalTransport::Memory, 2, None),
        (LocalTransport::Shm, 3, None),
        (LocalTransport::Shm, 2, Some(2048)),
    ] {
        let mut options = Options::default();
        if let Some(m) = min {
            options.single_copy_min = m;
        }
        on_ranks(p, transport, options, |comm| {
            let (me, p) = (comm.rank(), comm.size());
            let peers: Vec<usize> = (0..p).filter(|&q| q != me).collect();
            // Message k to q is tagged (me, q * 16 + k) so that every one is unique.
            let out: Vec<Vec<u64>> = peers
                .iter()
                .flat_map(|&q| (0..MIXED.len()).map(move |k| message(me, q * 16 + k, MIXED[k])))
                .collect();
            let mut inc: Vec<Vec<u64>> = peers
                .iter()
                .flat_map(|_| MIXED.iter().map(|&n| vec![0u64; n]))
                .collect();
            let g = comm.group();
            for (i, m) in out.iter().enumerate() {
                g.send(m, peers[i / MIXED.len()]).unwrap();
            }
            for (i, b) in inc.iter_mut().enumerate() {
                g.recv(b, peers[i / MIXED.len()]).unwrap();
            }
            g.end().unwrap();
            for (i, b) in inc.iter().enumerate() {
                let (q, k) = (peers[i / MIXED.len()], i % MIXED.len());
                check_from(b, q, me * 16 + k);
            }
        });
    }
}
