use std::time::{Duration, Instant};

use super::*;
use crate::rdma::sim::SimVerbs;

type E = Engine<SimVerbs>;

fn small() -> ProtoConfig {
    ProtoConfig {
        slots: 2,
        slot_size: 256,
        ..ProtoConfig::default()
    }
}

fn pair_with(v: &SimVerbs, ca: ProtoConfig, cb: ProtoConfig) -> (E, E) {
    let a = PreparedSide::new(v, None, ca).unwrap();
    let b = PreparedSide::new(v, None, cb).unwrap();
    // The info travels as bytes, as between processes.
    let ia = ConnInfo::from_bytes(&a.info().to_bytes()).unwrap();
    let ib = ConnInfo::from_bytes(&b.info().to_bytes()).unwrap();
    (
        a.connect(ib, "b".into()).unwrap(),
        b.connect(ia, "a".into()).unwrap(),
    )
}

fn pair(cfg: ProtoConfig) -> (E, E) {
    pair_with(&SimVerbs::new(), cfg, cfg)
}

/// Runs `f` until it yields, failing after 10 s instead of hanging.
fn wait<T>(
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>, ProtoError>,
) -> Result<T, ProtoError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(x) = f()? {
            return Ok(x);
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn send(e: &mut E, tag: u64, buf: &[u8]) -> Result<usize, ProtoError> {
    let mut id = wait("send credit", || e.isend(tag, buf))?;
    wait("send completion", || e.send_test(&mut id, buf))
}

fn recv(e: &mut E, tag: u64, buf: &mut [u8]) -> Result<usize, ProtoError> {
    let id = e.post_recv(tag);
    wait("receive", || e.recv_test(id, buf))
}

/// xorshift64*: random test data without a dependency.
fn random_bytes(state: &mut u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| {
            *state ^= *state >> 12;
            *state ^= *state << 25;
            *state ^= *state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn messages_of_every_shape_arrive_intact_and_credits_are_never_overrun() {
    let (mut a, mut b) = pair_with(
        &SimVerbs::new(),
        small(),
        ProtoConfig {
            slots: 3,
            slot_size: 512,
            ..small()
        },
    );
    let room = 256 - SLOT_HEADER;
    let sizes = [0, 1, room - 1, room, room + 1, 3 * room + 7, 10_007, 65_536];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let msgs: Vec<Vec<u8>> = sizes.iter().map(|&n| random_bytes(&mut rng, n)).collect();
    let expect = msgs.clone();
    let t = std::thread::spawn(move || {
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(send(&mut a, i as u64 % 3, m).unwrap(), m.len());
        }
        // And the other direction, with the larger slots of the peer.
        let mut back = vec![0u8; 5000];
        assert_eq!(recv(&mut a, 99, &mut back).unwrap(), 4999);
        assert!(back[..4999]
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i % 251) as u8));
        assert!(
            a.max_outstanding() <= 3,
            "sender exceeded the receiver's 3 slots"
        );
        a
    });
    for (i, m) in expect.iter().enumerate() {
        let mut buf = vec![0xeeu8; m.len() + 3];
        assert_eq!(
            recv(&mut b, i as u64 % 3, &mut buf).unwrap(),
            m.len(),
            "message {i}"
        );
        assert_eq!(&buf[..m.len()], &m[..], "message {i}");
    }
    let back: Vec<u8> = (0..4999).map(|i| (i % 251) as u8).collect();
    send(&mut b, 99, &back).unwrap();
    assert!(
        b.max_outstanding() <= 2,
        "sender exceeded the receiver's 2 slots"
    );
    t.join().unwrap();
}

#[test]
fn different_tags_may_be_received_in_any_order_same_tag_in_order() {
    let (mut a, mut b) = pair(small());
    let t = std::thread::spawn(move || {
        for (tag, byte, len) in [(1u64, 1u8, 700usize), (2, 2, 10), (1, 3, 20), (3, 4, 2000)] {
            send(&mut a, tag, &vec![byte; len]).unwrap();
        }
        a
    });
    let mut buf = vec![0u8; 4096];
    assert_eq!(recv(&mut b, 3, &mut buf).unwrap(), 2000);
    assert!(buf[..2000].iter().all(|&x| x == 4));
    assert_eq!(recv(&mut b, 2, &mut buf).unwrap(), 10);
    assert_eq!(recv(&mut b, 1, &mut buf).unwrap(), 700);
    assert!(buf[..700].iter().all(|&x| x == 1));
    assert_eq!(recv(&mut b, 1, &mut buf).unwrap(), 20);
    assert!(buf[..20].iter().all(|&x| x == 3));
    t.join().unwrap();
}

#[test]
fn many_sends_in_flight_complete_whichever_is_tested_first() {
    let (mut a, mut b) = pair(small());
    let bufs: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; 600]).collect();
    let t = std::thread::spawn(move || {
        let mut out = Vec::new();
        for i in 0..6u64 {
            let mut buf = vec![0u8; 600];
            assert_eq!(recv(&mut b, i, &mut buf).unwrap(), 600);
            out.push(buf);
        }
        (b, out)
    });
    let mut ids = Vec::new();
    for (i, buf) in bufs.iter().enumerate() {
        ids.push(wait("credit", || a.isend(i as u64, buf)).unwrap());
    }
    // Test the last one first: it must not wait for the others to be tested.
    for (i, id) in ids.iter_mut().enumerate().rev() {
        assert_eq!(wait("send", || a.send_test(id, &bufs[i])).unwrap(), 600);
    }
    let (_b, out) = t.join().unwrap();
    assert_eq!(out, bufs);
}

#[test]
fn too_small_a_buffer_is_truncation_and_the_connection_survives() {
    let (mut a, mut b) = pair(small());
    let t = std::thread::spawn(move || {
        send(&mut a, 5, &[7u8; 1000]).unwrap();
        send(&mut a, 5, &[8u8; 10]).unwrap();
        a
    });
    let mut small_buf = [0u8; 100];
    let err = recv(&mut b, 5, &mut small_buf).unwrap_err();
    assert!(
        matches!(
            err,
            ProtoError::Truncated {
                message: 1000,
                buffer: 100,
                tag: 5,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(recv(&mut b, 5, &mut small_buf).unwrap(), 10);
    assert_eq!(&small_buf[..10], &[8u8; 10]);
    t.join().unwrap();
}

#[test]
fn close_delivers_what_was_sent_then_reports_peer_closed() {
    let (mut a, mut b) = pair(small());
    send(&mut a, 1, b"last words").unwrap();
    a.close(Duration::from_secs(5)).unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(recv(&mut b, 1, &mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], b"last words");
    let err = recv(&mut b, 1, &mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::PeerClosed { .. }), "{err}");
    assert!(matches!(
        b.isend(1, b"x"),
        Err(ProtoError::PeerClosed { .. })
    ));
}

#[test]
fn peer_death_mid_message_is_an_error_not_a_hang() {
    let (mut a, b) = pair(small());
    let big = vec![3u8; 10_000];
    let mut id = wait("credit", || a.isend(1, &big)).unwrap();
    drop(b);
    let err = wait("send", || a.send_test(&mut id, &big)).unwrap_err();
    assert!(matches!(err, ProtoError::PeerClosed { .. }), "{err}");

    // The receiving side of a dying sender, mid-message.
    let (mut a, mut b) = pair(small());
    let t = std::thread::spawn(move || {
        let mut id = wait("credit", || a.isend(1, &big)).unwrap();
        for _ in 0..50 {
            let _ = a.send_test(&mut id, &big);
        }
        drop(a);
    });
    let mut buf = vec![0u8; 10_000];
    let err = recv(&mut b, 1, &mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::PeerClosed { ref during, .. } if during.contains("10000-byte")),
        "{err}"
    );
    t.join().unwrap();
}

#[test]
fn abandoned_receive_discards_its_message_and_dropped_receive_yields_its_turn() {
    let (mut a, mut b) = pair(small());
    let t = std::thread::spawn(move || {
        send(&mut a, 4, &[1u8; 600]).unwrap();
        send(&mut a, 4, &[2u8; 50]).unwrap();
        send(&mut a, 6, &[3u8; 40]).unwrap();
        a
    });
    // Receive A claims the 600-byte message, then is abandoned: that message is gone.
    let mut buf = vec![0u8; 600];
    let first = b.post_recv(4);
    let _ = wait("claim", || b.claimed_len(first));
    b.cancel_recv(first);
    assert_eq!(recv(&mut b, 4, &mut buf).unwrap(), 50);
    // Receive C is posted and dropped before any message: the next one takes its turn.
    let unused = b.post_recv(6);
    b.cancel_recv(unused);
    assert_eq!(recv(&mut b, 6, &mut buf).unwrap(), 40);
    t.join().unwrap();
}

#[test]
fn bad_slot_contents_break_the_connection_with_bad_frame() {
    let v = SimVerbs::new();
    let mut a = PreparedSide::new(&v, None, small()).unwrap();
    let b = PreparedSide::new(&v, None, small()).unwrap();
    let (ia, ib) = (a.info(), b.info());
    let mut eb = b.connect(ia, "a".into()).unwrap();
    a.qp.modify(QpTransition::Rtr {
        remote: ib.qp,
        min_rnr_timer: 1,
    })
    .unwrap();
    a.qp.modify(QpTransition::Rts {
        sq_psn: ia.qp.psn,
        timeout: 10,
        retry_cnt: 3,
        rnr_retry: 7,
    })
    .unwrap();
    // A raw writer: a header with the wrong magic.
    let junk = a.pd.alloc_mr(256, Access::LOCAL).unwrap();
    junk.write_at(0, &[0x55; 64]).unwrap();
    let wr = WriteWr {
        wr_id: 1,
        local: &junk,
        local_offset: 0,
        len: 40,
        remote_addr: ib.arena_addr + CREDIT_AREA as u64,
        rkey: ib.arena_rkey,
        imm: Some(imm(Kind::First, 8)),
    };
    a.qp.post_write(wr).unwrap();
    let mut buf = [0u8; 8];
    let err = recv(&mut eb, 0, &mut buf).unwrap_err();
    assert!(
        matches!(err, ProtoError::BadFrame { ref reason, .. } if reason.contains("magic")),
        "{err}"
    );
}

#[test]
fn config_is_checked() {
    let v = SimVerbs::new();
    assert!(matches!(
        PreparedSide::new(
            &v,
            None,
            ProtoConfig {
                slots: 0,
                ..small()
            }
        ),
        Err(ProtoError::Config(_))
    ));
    assert!(matches!(
        PreparedSide::new(
            &v,
            None,
            ProtoConfig {
                slot_size: 8,
                ..small()
            }
        ),
        Err(ProtoError::Config(_))
    ));
    assert!(matches!(
        PreparedSide::new(&v, Some("mlx5_9"), small()),
        Err(ProtoError::Verbs { .. })
    ));
}

#[test]
fn a_later_receive_does_not_fail_while_its_message_is_queued_behind_a_closed_peer() {
    let (mut a, mut b) = pair(small());
    send(&mut a, 2, b"one").unwrap();
    send(&mut a, 2, b"two").unwrap();
    a.close(Duration::from_secs(5)).unwrap();
    drop(a);
    let (first, second) = (b.post_recv(2), b.post_recv(2));
    let third = b.post_recv(2);
    let mut buf = [0u8; 8];
    // Tested before the first: the CLOSE and the peer's death are seen now, yet "two" is queued.
    assert_eq!(b.recv_test(second, &mut buf).unwrap(), None);
    assert_eq!(wait("first", || b.recv_test(first, &mut buf)).unwrap(), 3);
    assert_eq!(&buf[..3], b"one");
    assert_eq!(wait("second", || b.recv_test(second, &mut buf)).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");
    assert!(matches!(
        b.recv_test(third, &mut buf),
        Err(ProtoError::PeerClosed { .. })
    ));
}

#[test]
fn a_peer_that_dies_without_close_is_found_by_the_keepalive_probe() {
    // Without a connection manager's notice, only a write can find out the peer is gone.
    let v = SimVerbs::with_config(crate::rdma::sim::SimConfig {
        peer_death_notice: false,
        ..Default::default()
    });
    let cfg = ProtoConfig {
        keepalive: Duration::from_millis(20),
        timeout: 10, // 4 ms ACK timeout
        retry_cnt: 2,
        ..small()
    };
    let (a, mut b) = pair_with(&v, cfg, cfg);
    drop(a); // no CLOSE: the process died
    let started = Instant::now();
    let mut buf = [0u8; 8];
    let err = recv(&mut b, 1, &mut buf).unwrap_err();
    assert!(matches!(err, ProtoError::PeerClosed { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "found after {:?}",
        started.elapsed()
    );
}
