//! Failures become errors on every rank, promptly: mismatched calls, a rank that aborts or never
//! comes, a stranger at the store, a port in use.

mod common;

use common::{assert_every_rank_failed_with_a_mismatch, each, each_on, opts};
use oxccl_collectives::{
    Bootstrap, Communicator, DataType, Error, LocalTransport, ReduceOp, StoreAddr,
};
use std::time::Duration;

/// Runs `f(rank, comm)` on 2..p thread ranks and returns each rank's result and duration.
#[test]
fn mismatched_calls_fail_on_every_rank() {
    type Case = fn(usize, &Communicator) -> Result<(), Error>;
    let cases: Vec<(&str, Case)> = vec![
        ("count", |r, c| {
            c.all_reduce(&vec![1f32; 10 + r], &mut vec![0f32; 10 + r], ReduceOp::Sum)
        }),
        ("dtype", |r, c| {
            if r == 0 {
                c.all_reduce(&[1f32; 4], &mut [0f32; 4], ReduceOp::Sum)
            } else {
                c.all_reduce(&[1i32; 4], &mut [0i32; 4], ReduceOp::Sum)
            }
        }),
        ("op", |r, c| {
            let op = if r == 1 { ReduceOp::Max } else { ReduceOp::Sum };
            c.all_reduce(&[1f64; 3], &mut [0f64; 3], op)
        }),
        ("collective", |r, c| {
            let mut b = vec![1u8; 64];
            if r == 0 {
                c.broadcast(&mut b, 0)
            } else {
                c.all_reduce_in_place(&mut b, ReduceOp::Sum)
            }
        }),
        ("large count", |r, c| {
            let n = 100_000 + r * 8;
            c.all_reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum)
        }),
        ("root", |r, c| c.broadcast(&mut [0u32; 5000], r % 2)),
    ];
    for (name, case) in cases {
        // A rank whose own peers agreed may finish the call, but then the communicator is
        // aborted under it: its next call fails.
        let res = each(3, opts(20.0), move |r, c| {
            case(r, c).and_then(|()| c.barrier())
        });
        assert_every_rank_failed_with_a_mismatch(name, &res);
    }
}

/// Issue 11: every kind of mismatch fails on every rank *in the call* (no later call needed),
/// ranks that only send included, and the messages name the calls in the API's words.
#[test]
fn every_mismatch_fails_every_rank_in_the_call() {
    type Case = fn(usize, &Communicator) -> Result<(), Error>;
    // (name, ranks, case, words every rank's error contains)
    let cases: Vec<(&str, usize, Case, &[&str])> = vec![
        (
            "send 100 / recv 101",
            2,
            |r, c| {
                if r == 0 {
                    c.send(&[1f32; 100], 1)
                } else {
                    c.recv(&mut [0f32; 101], 0)
                }
            },
            &["count 100", "count 101", "float32"],
        ),
        (
            "send float32 / recv int32",
            2,
            |r, c| {
                if r == 0 {
                    c.send(&[1f32; 64], 1)
                } else {
                    c.recv(&mut [0i32; 64], 0)
                }
            },
            &["float32", "int32"],
        ),
        (
            "non-blocking send 100 / recv 101",
            2,
            |r, c| {
                if r == 0 {
                    c.start_send(vec![1f32; 100], 1)?.wait().map(drop)
                } else {
                    c.start_recv(vec![0f32; 101], 0)?.wait().map(drop)
                }
            },
            &["count 100", "count 101"],
        ),
        (
            "broadcast root",
            3,
            |r, c| c.broadcast(&mut [r as u32; 64], r % 2),
            &["root"],
        ),
        (
            "broadcast count",
            3,
            |r, c| c.broadcast(&mut vec![7u8; 100 + r], 0),
            &["broadcast"],
        ),
        (
            "reduce count",
            3,
            |r, c| {
                let n = 100 + r;
                c.reduce(&vec![1f32; n], &mut vec![0f32; n], ReduceOp::Sum, 0)
            },
            &["reduce", "float32", "sum"],
        ),
        (
            "reduce root",
            3,
            |r, c| {
                c.reduce(
                    &[1f32; 64],
                    &mut [0f32; 64],
                    ReduceOp::Sum,
                    usize::from(r == 2),
                )
            },
            &["root"],
        ),
        (
            "all_reduce dtype",
            3,
            |r, c| {
                if r == 0 {
                    c.all_reduce(&[1f32; 4], &mut [0f32; 4], ReduceOp::Sum)
                } else {
                    c.all_reduce(&[1i32; 4], &mut [0i32; 4], ReduceOp::Sum)
                }
            },
            &["float32", "int32", "sum"],
        ),
    ];
    for transport in [LocalTransport::Shm, LocalTransport::Tcp] {
        for &(name, p, case, words) in &cases {
            let res = each_on(transport, p, opts(20.0), case);
            for (r, (out, took)) in res.iter().enumerate() {
                let e = match out {
                    Ok(()) => panic!("{transport:?} {name}: rank {r} returned Ok"),
                    Err(e) => e.to_string(),
                };
                // Promptly (well under the 20 s timeout: nobody waits for a deadline).
                assert!(
                    *took < Duration::from_secs(5),
                    "{transport:?} {name}: rank {r} took {took:?}: {e}"
                );
                for w in words {
                    assert!(
                        e.contains(w),
                        "{transport:?} {name}: rank {r}: no {w:?} in: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_rank_that_never_comes_times_out_naming_it() {
    let res = each(3, opts(0.5), |r, c| {
        if r == 2 {
            // Stay alive past the others' deadline without calling.
            std::thread::sleep(Duration::from_secs(2));
            return Ok(());
        }
        c.all_reduce(&vec![1f32; 50_000], &mut vec![0f32; 50_000], ReduceOp::Sum)
    });
    for (r, (out, took)) in res.iter().take(2).enumerate() {
        let e = out.as_ref().expect_err("must fail");
        assert!(
            *took < Duration::from_millis(1900),
            "rank {r} took {took:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("all_reduce") && msg.contains("rank"),
            "rank {r}: {msg}"
        );
    }
}

#[test]
fn abort_stops_the_peers_quickly() {
    let res = each(4, opts(30.0), |r, c| {
        if r == 3 {
            std::thread::sleep(Duration::from_millis(100));
            c.abort();
            // Every later call fails at once.
            let e = c.barrier().expect_err("aborted");
            assert!(matches!(e, Error::Aborted { .. }), "{e}");
            return Ok(());
        }
        c.all_reduce(
            &vec![1f32; 1 << 20],
            &mut vec![0f32; 1 << 20],
            ReduceOp::Sum,
        )
    });
    for (r, (out, took)) in res.iter().take(3).enumerate() {
        assert!(out.is_err(), "rank {r} succeeded");
        assert!(*took < Duration::from_secs(10), "rank {r} took {took:?}");
    }
}

#[test]
fn abort_from_another_thread_interrupts_a_call() {
    let res = each(2, opts(30.0), |r, c| {
        if r == 0 {
            let c2 = c.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                c2.abort();
            });
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Rank 1 waits for a message rank 0 never sends.
        if r == 1 {
            c.recv(&mut [0u8; 16], 0)
        } else {
            c.recv(&mut [0u8; 16], 1)
        }
    });
    for (r, (out, took)) in res.iter().enumerate() {
        assert!(out.is_err(), "rank {r}");
        assert!(*took < Duration::from_secs(10), "rank {r} took {took:?}");
    }
    // Rank 1 learns it from its link, and who failed first from rank 0's notice; what it saw
    // itself (the transport's own error) stays the source.
    let e = res[1].0.as_ref().expect_err("rank 1 failed");
    assert!(matches!(e, Error::Remote { origin: 0, .. }), "{e}");
    assert!(e.to_string().contains("aborted by the user"), "{e}");
    let source = e.transport_error().expect("the transport's error");
    assert!(source.is_fatal(), "{source}");
    assert!(
        matches!(source, oxccl_transport::Error::PeerClosed { .. }),
        "{source}"
    );
    assert!(std::error::Error::source(e).is_some());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ranks_meet_at_the_store_and_a_stranger_is_refused() {
    let addr = format!("127.0.0.1:{}", free_port());
    let o = opts(20.0);
    let hs: Vec<_> = (0..3)
        .map(|r| {
            let (addr, o) = (addr.clone(), o.clone());
            std::thread::spawn(move || {
                let c = Communicator::init_with(
                    Bootstrap::new(r, 3, StoreAddr::Tcp(addr), "the secret"),
                    o,
                )
                .unwrap();
                let mut x = [r as u64 + 1];
                c.all_reduce_in_place(&mut x, ReduceOp::Sum).unwrap();
                assert_eq!(x, [6]);
                // One process: every pair shares memory.
                for q in (0..3).filter(|&q| q != r) {
                    assert_eq!(c.transport_to(q), Some(oxccl_collectives::LinkKind::Shm));
                }
                // Keep rank 0's store up while the stranger knocks.
                std::thread::sleep(Duration::from_millis(500));
                c.barrier().unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let stranger = Communicator::init_with(
        Bootstrap::new(1, 3, StoreAddr::Tcp(addr.clone()), "guess"),
        opts(5.0),
    );
    let e = stranger.expect_err("a wrong secret must be refused");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    for h in hs {
        h.join().unwrap();
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let e = Communicator::init_with(Bootstrap::new(0, 2, StoreAddr::Tcp(addr), "s"), opts(2.0))
        .unwrap_err();
    assert!(matches!(e, Error::AddrInUse { .. }), "{e}");
    assert!(e.to_string().contains("in use"));
}

#[test]
fn dtype_erased_calls_validate_dtype() {
    let res = each(2, opts(5.0), |_, c| {
        c.all_reduce_bytes(&[0u8; 6], &mut [0u8; 6], DataType::F32, ReduceOp::Sum)
    });
    for (out, _) in res {
        assert!(matches!(out, Err(Error::Invalid { .. })));
    }
}

#[test]
fn bad_forced_algorithms_are_refused_at_creation() {
    use oxccl_collectives::schedule::Collective;
    use oxccl_collectives::LocalTransport;
    let make = |algo: &str, n: usize| {
        let options = oxccl_collectives::Options {
            algorithm: Some(algo.into()),
            ..opts(5.0)
        };
        Communicator::local_with(n, LocalTransport::Memory, options)
    };
    for (algo, n, want) in [
        // Thread ranks: one host, no NUMA nodes known, so the map has no levels.
        (
            "hier",
            4,
            "no dims from the map: the map has one level only",
        ),
        (
            "hier:3x3",
            4,
            "dims 3x3 multiply to 9, not to the communicator's 4 ranks",
        ),
        (
            "hier:2x3",
            5,
            "dims 2x3 multiply to 6, not to the communicator's 5 ranks",
        ),
        ("hier:2x", 4, "unknown algorithm"),
        ("hier:0x4", 4, "unknown algorithm"),
        ("bogus", 2, "unknown algorithm"),
    ] {
        match make(algo, n) {
            Err(e) => {
                let text = e.to_string();
                eprintln!("{algo}: {text}");
                assert!(text.contains(want), "{algo}: {text}");
                assert!(text.contains("init") && text.contains(algo), "{text}");
            }
            Ok(_) => panic!("OXCCL_ALGO={algo} was accepted at creation with {n} ranks"),
        }
    }
    let ranks = make("hier:2x2", 4).unwrap();
    assert!(ranks[0]
        .algorithm_for(Collective::AllReduce, 1 << 20)
        .unwrap()
        .starts_with("hier:2x2"));
}
