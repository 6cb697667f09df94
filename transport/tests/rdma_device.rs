//! The RDMA transport on real verbs (feature `rdma`). Without a device only the "no device"
//! path can run; the rest needs a NIC and is ignored unless asked for:
//! `OXCCL_IB_DEVICE=mlx5_0 cargo test -p oxccl-transport --features rdma -- --ignored`.
#![cfg(feature = "rdma")]

/// Says why a test skips. The test harness captures `println!` of passing tests, so this writes
/// to the terminal's stderr directly: a skip is never silent.
macro_rules! skip {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use oxccl_transport::conformance;
use oxccl_transport::rdma::sideway_verbs::SidewayVerbs;
use oxccl_transport::rdma::verbs::{
    Access, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps, QpEndpoint,
    QpTransition, QueuePair, Verbs, VerbsError, WcOpcode, WcStatus, WriteWr,
};
use oxccl_transport::{Error, Transport};

fn device_present() -> bool {
    SidewayVerbs::default().device_names().is_ok()
}

#[test]
fn no_device_is_a_clean_not_available_error() {
    if device_present() {
        eprintln!(
            "skipped: this machine has an RDMA device, so the no-device path cannot be observed"
        );
        return;
    }
    match SidewayVerbs::default().device_names() {
        Err(VerbsError::NoDevice(reason)) => eprintln!("as expected: no RDMA device ({reason})"),
        other => panic!("expected NoDevice, got {other:?}"),
    }
    assert!(matches!(
        SidewayVerbs::default().open(None),
        Err(VerbsError::NoDevice(_))
    ));
    match oxccl_transport::rdma::from_env() {
        Err(Error::NotAvailable {
            transport: "rdma",
            reason,
        }) => {
            assert!(reason.contains("no RDMA device"), "{reason}");
        }
        Err(e) => panic!("expected NotAvailable, got {e}"),
        Ok(_) => panic!("expected NotAvailable, got a transport"),
    }
    let t = oxccl_transport::rdma::RdmaTransport::new(SidewayVerbs::default(), Default::default());
    assert!(matches!(t.listen(), Err(Error::NotAvailable { .. })));
}

fn device() -> Option<String> {
    std::env::var("OXCCL_IB_DEVICE").ok()
}

#[test]
#[ignore = "needs an RDMA NIC; set OXCCL_IB_DEVICE"]
fn write_with_immediate_between_two_queue_pairs_on_the_device() {
    let Some(dev) = device() else {
        skip!("skipped: OXCCL_IB_DEVICE is not set");
        return;
    };
    let v = SidewayVerbs::from_env().expect("OXCCL_IB_PORT / OXCCL_IB_GID_INDEX");
    let ctx = v.open(Some(&dev)).expect("open the device");
    let pd = ctx.alloc_pd().expect("protection domain");
    let cq = ctx.create_cq(64).expect("completion queue");
    let caps = QpCaps {
        max_send_wr: 8,
        max_recv_wr: 8,
    };
    let mut a = pd.create_qp(&cq, caps).expect("qp a");
    let mut b = pd.create_qp(&cq, caps).expect("qp b");
    let (lid, gid) = ctx.port_address().expect("port address");
    let ea = QpEndpoint {
        qp_num: a.qp_num(),
        lid,
        gid,
        psn: 100,
    };
    let eb = QpEndpoint {
        qp_num: b.qp_num(),
        lid,
        gid,
        psn: 200,
    };
    for (qp, remote, psn) in [(&mut a, eb, 100), (&mut b, ea, 200)] {
        qp.modify(QpTransition::Init { remote_write: true })
            .unwrap();
        qp.modify(QpTransition::Rtr {
            remote,
            min_rnr_timer: 12,
        })
        .unwrap();
        qp.modify(QpTransition::Rts {
            sq_psn: psn,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
        })
        .unwrap();
    }
    let src = pd.alloc_mr(4096, Access::LOCAL).unwrap();
    let dst = pd.alloc_mr(4096, Access::REMOTE_WRITE).unwrap();
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    src.write_at(0, &data).unwrap();
    b.post_recv(9).unwrap();
    let wr = WriteWr {
        wr_id: 1,
        local: &src,
        local_offset: 0,
        len: 4096,
        remote_addr: dst.addr(),
        rkey: dst.rkey(),
        imm: Some(0xabcd),
    };
    a.post_write(wr).unwrap();
    let mut wcs = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wcs.len() < 2 && std::time::Instant::now() < deadline {
        cq.poll(&mut wcs, 2).unwrap();
    }
    assert_eq!(wcs.len(), 2, "two completions within 10 s");
    assert!(wcs.iter().all(|w| w.status == WcStatus::Success), "{wcs:?}");
    let recv = wcs
        .iter()
        .find(|w| w.opcode == WcOpcode::RecvRdmaWithImm)
        .expect("receive completion");
    assert_eq!(
        (recv.wr_id, recv.imm_data, recv.byte_len),
        (9, Some(0xabcd), 4096)
    );
    let mut got = vec![0u8; 4096];
    dst.read_at(0, &mut got).unwrap();
    assert_eq!(got, data);
}

#[test]
#[ignore = "needs an RDMA NIC; set OXCCL_IB_DEVICE"]
fn rdma_on_the_device_passes_the_conformance_suite() {
    if device().is_none() {
        skip!("skipped: OXCCL_IB_DEVICE is not set");
        return;
    }
    conformance::run_all(|| {
        oxccl_transport::rdma::from_env().expect("RDMA transport from OXCCL_IB_*")
    });
}
