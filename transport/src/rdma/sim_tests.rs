use std::time::{Duration, Instant};

use super::*;
use crate::rdma::verbs::QpEndpoint;

struct Side {
    _ctx: SimContext,
    pd: SimPd,
    cq: SimCq,
    qp: SimQp,
    mr: SimMr,
    psn: u32,
}

fn side(v: &SimVerbs, psn: u32) -> Side {
    let ctx = v.open(None).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(64).unwrap();
    let qp = pd
        .create_qp(
            &cq,
            QpCaps {
                max_send_wr: 16,
                max_recv_wr: 16,
            },
        )
        .unwrap();
    let mr = pd.alloc_mr(4096, Access::REMOTE_WRITE).unwrap();
    Side {
        _ctx: ctx,
        pd,
        cq,
        qp,
        mr,
        psn,
    }
}

fn endpoint(s: &Side) -> QpEndpoint {
    QpEndpoint {
        qp_num: s.qp.qp_num(),
        lid: 0,
        gid: [0; 16],
        psn: s.psn,
    }
}

fn connect(a: &mut Side, b: &mut Side, rnr_retry: u8) {
    let (ea, eb) = (endpoint(a), endpoint(b));
    for (s, remote) in [(&mut *a, eb), (&mut *b, ea)] {
        s.qp.modify(QpTransition::Init { remote_write: true })
            .unwrap();
        s.qp.modify(QpTransition::Rtr {
            remote,
            min_rnr_timer: 1,
        })
        .unwrap();
        let sq_psn = s.psn;
        s.qp.modify(QpTransition::Rts {
            sq_psn,
            timeout: 1,
            retry_cnt: 2,
            rnr_retry,
        })
        .unwrap();
        assert_eq!(s.qp.state(), QpState::Rts);
    }
}

fn pair(rnr_retry: u8) -> (SimVerbs, Side, Side) {
    let v = SimVerbs::new();
    let mut a = side(&v, 11);
    let mut b = side(&v, 0x00ab_cdef);
    connect(&mut a, &mut b, rnr_retry);
    (v, a, b)
}

fn write<'a>(
    local: &'a SimMr,
    wr_id: u64,
    len: usize,
    to: &Side,
    off: u64,
    imm: Option<u32>,
) -> WriteWr<'a, SimMr> {
    WriteWr {
        wr_id,
        local,
        local_offset: 0,
        len,
        remote_addr: to.mr.addr() + off,
        rkey: to.mr.rkey(),
        imm,
    }
}

/// Polls until `n` completions arrived or 5 s passed.
fn poll_n(cq: &SimCq, n: usize) -> Vec<WorkCompletion> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let want = n - out.len();
        cq.poll(&mut out, want).unwrap();
        std::thread::yield_now();
    }
    out
}

#[test]
fn write_with_imm_delivers_data_and_completions_in_order() {
    let (_v, mut a, mut b) = pair(7);
    for i in 0..8 {
        b.qp.post_recv(100 + i).unwrap();
    }
    let payload: Vec<u8> = (0..256u32).map(|i| (i * 7 + 3) as u8).collect();
    a.mr.write_at(0, &payload).unwrap();
    for i in 0..8u64 {
        let wr = write(&a.mr, i, 32, &b, i * 32, Some(0x5000 + i as u32));
        let wr = WriteWr {
            local_offset: (i * 32) as usize,
            ..wr
        };
        a.qp.post_write(wr).unwrap();
    }
    let sends = poll_n(&a.cq, 8);
    assert_eq!(
        sends.iter().map(|w| w.wr_id).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(sends
        .iter()
        .all(|w| w.status == WcStatus::Success && w.opcode == WcOpcode::RdmaWrite));
    let recvs = poll_n(&b.cq, 8);
    for (i, w) in recvs.iter().enumerate() {
        assert_eq!(w.wr_id, 100 + i as u64);
        assert_eq!(w.opcode, WcOpcode::RecvRdmaWithImm);
        assert_eq!(w.imm_data, Some(0x5000 + i as u32));
        assert_eq!(w.byte_len, 32);
        assert_eq!(w.qp_num, b.qp.qp_num());
    }
    let mut got = vec![0u8; 256];
    b.mr.read_at(0, &mut got).unwrap();
    assert_eq!(got, payload);
}

#[test]
fn plain_write_lands_without_a_receive_or_remote_completion() {
    let (_v, mut a, b) = pair(0);
    a.mr.write_at(0, &[9, 8, 7, 6]).unwrap();
    a.qp.post_write(write(&a.mr, 1, 4, &b, 100, None)).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::Success);
    let mut got = [0u8; 4];
    b.mr.read_at(100, &mut got).unwrap();
    assert_eq!(got, [9, 8, 7, 6]);
    let mut none = Vec::new();
    assert_eq!(b.cq.poll(&mut none, 4).unwrap(), 0);
}

#[test]
fn receive_not_ready_retries_then_succeeds_once_a_receive_is_posted() {
    let (_v, mut a, mut b) = pair(7);
    a.qp.post_write(write(&a.mr, 1, 8, &b, 0, Some(1))).unwrap();
    let mut out = Vec::new();
    a.cq.poll(&mut out, 1).unwrap();
    assert!(out.is_empty(), "write must wait for a receive");
    b.qp.post_recv(5).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::Success);
    assert_eq!(poll_n(&b.cq, 1)[0].imm_data, Some(1));
}

#[test]
fn receive_not_ready_exhausts_retries_and_flushes_the_rest() {
    let (_v, mut a, _b) = pair(2);
    let b_end = &_b;
    a.qp.post_write(write(&a.mr, 1, 8, b_end, 0, Some(1)))
        .unwrap();
    a.qp.post_write(write(&a.mr, 2, 8, b_end, 0, Some(2)))
        .unwrap();
    let wcs = poll_n(&a.cq, 2);
    assert_eq!(wcs[0].wr_id, 1);
    assert_eq!(wcs[0].status, WcStatus::RnrRetryExceeded);
    assert_eq!(wcs[1].wr_id, 2);
    assert_eq!(wcs[1].status, WcStatus::WrFlush);
    assert_eq!(a.qp.state(), QpState::Error);
    // Later posts are accepted and flushed, as verbs does.
    a.qp.post_write(write(&a.mr, 3, 8, b_end, 0, None)).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::WrFlush);
}

#[test]
fn bad_rkey_and_out_of_bounds_are_remote_access_errors() {
    let (_v, mut a, mut b) = pair(7);
    b.qp.post_recv(1).unwrap();
    let wr = WriteWr {
        rkey: b.mr.rkey() ^ 0xffff,
        ..write(&a.mr, 1, 8, &b, 0, Some(1))
    };
    a.qp.post_write(wr).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::RemoteAccess);
    assert_eq!(a.qp.state(), QpState::Error);
    assert_eq!(b.qp.state(), QpState::Error);
    assert_eq!(poll_n(&b.cq, 1)[0].status, WcStatus::WrFlush);

    let (_v, mut a, b) = pair(7);
    a.qp.post_write(write(&a.mr, 1, 16, &b, 4090, None))
        .unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::RemoteAccess);
}

#[test]
fn region_without_remote_write_or_from_another_pd_is_refused() {
    let (_v, mut a, b) = pair(7);
    let local_only = b.pd.alloc_mr(64, Access::LOCAL).unwrap();
    let wr = WriteWr {
        rkey: local_only.rkey(),
        remote_addr: local_only.addr(),
        ..write(&a.mr, 1, 8, &b, 0, None)
    };
    a.qp.post_write(wr).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::RemoteAccess);

    let (_v, mut a, b) = pair(7);
    let foreign = a.pd.alloc_mr(64, Access::REMOTE_WRITE).unwrap();
    let wr = WriteWr {
        rkey: foreign.rkey(),
        remote_addr: foreign.addr(),
        ..write(&a.mr, 1, 8, &b, 0, None)
    };
    a.qp.post_write(wr).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::RemoteAccess);
}

#[test]
fn bad_local_range_completes_with_local_length_error() {
    let (_v, mut a, b) = pair(7);
    let wr = WriteWr {
        local_offset: 4090,
        ..write(&a.mr, 1, 16, &b, 0, None)
    };
    a.qp.post_write(wr).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::LocalLength);
}

#[test]
fn peer_destroyed_moves_survivor_to_error_and_flushes() {
    let (_v, mut a, b) = pair(7);
    a.qp.post_recv(41).unwrap();
    a.qp.post_recv(42).unwrap();
    drop(b);
    assert_eq!(a.qp.state(), QpState::Error);
    let wcs = poll_n(&a.cq, 2);
    assert_eq!(
        wcs.iter().map(|w| (w.wr_id, w.status)).collect::<Vec<_>>(),
        vec![(41, WcStatus::WrFlush), (42, WcStatus::WrFlush)]
    );
}

#[test]
fn without_peer_notice_a_dead_peer_is_a_retry_timeout() {
    let v = SimVerbs::with_config(SimConfig {
        peer_death_notice: false,
        timeout_scale: 1.0,
    });
    let mut a = side(&v, 1);
    let mut b = side(&v, 2);
    connect(&mut a, &mut b, 7);
    let dst = (b.mr.addr(), b.mr.rkey());
    drop(b);
    assert_eq!(a.qp.state(), QpState::Rts);
    let wr = WriteWr {
        wr_id: 9,
        local: &a.mr,
        local_offset: 0,
        len: 8,
        remote_addr: dst.0,
        rkey: dst.1,
        imm: None,
    };
    a.qp.post_write(wr).unwrap();
    let wcs = poll_n(&a.cq, 1);
    assert_eq!(wcs[0].status, WcStatus::RetryExceeded);
    assert_eq!(a.qp.state(), QpState::Error);
}

#[test]
fn psn_mismatch_is_never_acknowledged() {
    let v = SimVerbs::new();
    let mut a = side(&v, 1);
    let mut b = side(&v, 2);
    let (ea, mut eb) = (endpoint(&a), endpoint(&b));
    eb.psn = 3; // a is told the wrong PSN for b, so b's packets are out of sequence at a.
    a.qp.modify(QpTransition::Init { remote_write: true })
        .unwrap();
    a.qp.modify(QpTransition::Rtr {
        remote: eb,
        min_rnr_timer: 1,
    })
    .unwrap();
    a.qp.modify(QpTransition::Rts {
        sq_psn: 1,
        timeout: 1,
        retry_cnt: 1,
        rnr_retry: 0,
    })
    .unwrap();
    b.qp.modify(QpTransition::Init { remote_write: true })
        .unwrap();
    b.qp.modify(QpTransition::Rtr {
        remote: ea,
        min_rnr_timer: 1,
    })
    .unwrap();
    b.qp.modify(QpTransition::Rts {
        sq_psn: 2,
        timeout: 1,
        retry_cnt: 1,
        rnr_retry: 0,
    })
    .unwrap();
    b.qp.post_write(write(&b.mr, 1, 8, &a, 0, None)).unwrap();
    assert_eq!(poll_n(&b.cq, 1)[0].status, WcStatus::RetryExceeded);
}

#[test]
fn state_machine_is_enforced() {
    let v = SimVerbs::new();
    let mut a = side(&v, 1);
    let b = side(&v, 2);
    assert!(a.qp.post_recv(1).is_err(), "RESET takes no receives");
    let rts = QpTransition::Rts {
        sq_psn: 1,
        timeout: 1,
        retry_cnt: 1,
        rnr_retry: 0,
    };
    assert!(matches!(
        a.qp.modify(rts),
        Err(VerbsError::BadTransition {
            from: QpState::Reset,
            ..
        })
    ));
    a.qp.modify(QpTransition::Init { remote_write: true })
        .unwrap();
    a.qp.post_recv(1).unwrap();
    assert!(
        a.qp.post_write(write(&a.mr, 1, 8, &b, 0, None)).is_err(),
        "INIT cannot send"
    );
    a.qp.modify(QpTransition::Error).unwrap();
    assert_eq!(poll_n(&a.cq, 1)[0].status, WcStatus::WrFlush);
    a.qp.modify(QpTransition::Reset).unwrap();
    assert_eq!(a.qp.state(), QpState::Reset);
}

#[test]
fn queue_limits_and_cq_overrun_are_errors() {
    let v = SimVerbs::new();
    let ctx = v.open(Some("sim0")).unwrap();
    assert!(matches!(
        v.open(Some("mlx5_0")),
        Err(VerbsError::DeviceNotFound { .. })
    ));
    let pd = ctx.alloc_pd().unwrap();
    let cq = ctx.create_cq(2).unwrap();
    let mut qp = pd
        .create_qp(
            &cq,
            QpCaps {
                max_send_wr: 4,
                max_recv_wr: 3,
            },
        )
        .unwrap();
    qp.modify(QpTransition::Init {
        remote_write: false,
    })
    .unwrap();
    for i in 0..3 {
        qp.post_recv(i).unwrap();
    }
    assert!(matches!(qp.post_recv(3), Err(VerbsError::Post { .. })));
    qp.modify(QpTransition::Error).unwrap(); // three flushes into a CQ of two
    let mut out = Vec::new();
    assert!(cq.poll(&mut out, 8).is_err());
}

#[test]
fn rnr_table_matches_the_spec_endpoints() {
    assert_eq!(rnr_delay(0), Duration::from_micros(655_360));
    assert_eq!(rnr_delay(1), Duration::from_micros(10));
    assert_eq!(rnr_delay(31), Duration::from_micros(491_520));
}

#[test]
fn one_completion_queue_shared_by_two_queue_pairs_names_each() {
    let v = SimVerbs::new();
    let ctx = v.open(None).unwrap();
    let pd = ctx.alloc_pd().unwrap();
    let shared = ctx.create_cq(16).unwrap();
    let caps = QpCaps {
        max_send_wr: 4,
        max_recv_wr: 4,
    };
    let mut a = pd.create_qp(&shared, caps).unwrap();
    let mut b = pd.create_qp(&shared.clone(), caps).unwrap();
    let mr = pd.alloc_mr(64, Access::REMOTE_WRITE).unwrap();
    let ea = QpEndpoint {
        qp_num: a.qp_num(),
        lid: 0,
        gid: [0; 16],
        psn: 5,
    };
    let eb = QpEndpoint {
        qp_num: b.qp_num(),
        lid: 0,
        gid: [0; 16],
        psn: 6,
    };
    for (qp, remote, psn) in [(&mut a, eb, 5), (&mut b, ea, 6)] {
        qp.modify(QpTransition::Init { remote_write: true })
            .unwrap();
        qp.modify(QpTransition::Rtr {
            remote,
            min_rnr_timer: 1,
        })
        .unwrap();
        qp.modify(QpTransition::Rts {
            sq_psn: psn,
            timeout: 1,
            retry_cnt: 1,
            rnr_retry: 7,
        })
        .unwrap();
    }
    b.post_recv(77).unwrap();
    let wr = WriteWr {
        wr_id: 1,
        local: &mr,
        local_offset: 0,
        len: 8,
        remote_addr: mr.addr() + 32,
        rkey: mr.rkey(),
        imm: Some(3),
    };
    a.post_write(wr).unwrap();
    let wcs = poll_n(&shared, 2);
    assert_eq!(wcs.len(), 2);
    assert_eq!(
        (wcs[0].qp_num, wcs[0].opcode),
        (a.qp_num(), WcOpcode::RdmaWrite)
    );
    assert_eq!(
        (wcs[1].qp_num, wcs[1].wr_id, wcs[1].imm_data),
        (b.qp_num(), 77, Some(3))
    );
}
