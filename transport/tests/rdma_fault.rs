//! The fault-injection wrapper around the RDMA protocol on the software verbs model: each fault
//! ends in an error or a timeout on both sides, never a hang.

use std::time::Duration;

use oxccl_transport::fault::{FaultPlan, Faulty};
use oxccl_transport::rdma::sim::SimVerbs;
use oxccl_transport::rdma::{RdmaConfig, RdmaTransport};
use oxccl_transport::wait::{self, connect_pair, Deadline};
use oxccl_transport::{conformance, Error, Transport};

fn dl() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

type Conn = <Faulty<RdmaTransport<SimVerbs>> as Transport>::Connection;

/// (faulty end, healthy end) on one simulated fabric.
fn pair(plan: FaultPlan) -> (Conn, Conn) {
    let t = RdmaTransport::new(SimVerbs::new(), RdmaConfig::default());
    let bad = Faulty::new(t.clone(), plan);
    let good = Faulty::new(t, FaultPlan::default());
    connect_pair(&bad, &good, dl()).expect("setup")
}

#[test]
fn dropped_connection_is_seen_by_the_peer() {
    let plan = FaultPlan {
        drop_after_bytes: Some(1000),
        ..FaultPlan::default()
    };
    let (a, b) = pair(plan);
    wait::send(&a, 1, &[1u8; 600], dl()).unwrap();
    wait::send(&a, 1, &[2u8; 600], dl()).unwrap();
    assert!(matches!(
        wait::send(&a, 1, &[3u8; 600], dl()),
        Err(Error::Injected { .. })
    ));
    drop(a);
    let mut buf = [0u8; 600];
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 600);
    assert_eq!(buf, [1u8; 600]);
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 600);
    match wait::recv(&b, 1, &mut buf, dl()) {
        Err(Error::PeerClosed { .. }) | Err(Error::Broken { .. }) => {}
        other => panic!("the healthy end should see the drop, got {other:?}"),
    }
}

#[test]
fn corrupted_byte_arrives_corrupted_and_nothing_else() {
    let plan = FaultPlan {
        corrupt_byte: Some(1500),
        ..FaultPlan::default()
    };
    let (a, b) = pair(plan);
    let (m1, m2) = (conformance::pattern(2, 1000), conformance::pattern(3, 1000));
    wait::send(&a, 1, &m1, dl()).unwrap();
    wait::send(&a, 1, &m2, dl()).unwrap();
    let mut buf = vec![0u8; 1000];
    wait::recv(&b, 1, &mut buf, dl()).unwrap();
    assert_eq!(buf, m1);
    wait::recv(&b, 1, &mut buf, dl()).unwrap();
    let wrong: Vec<usize> = (0..1000).filter(|&i| buf[i] != m2[i]).collect();
    assert_eq!(wrong, vec![500]);
}

#[test]
fn stalled_end_makes_both_deadlines_fire() {
    let plan = FaultPlan {
        stall_after_bytes: Some(100),
        ..FaultPlan::default()
    };
    let (a, b) = pair(plan);
    wait::send(&a, 1, &[9u8; 200], dl()).unwrap();
    let short = || Deadline::after(Duration::from_millis(200));
    assert!(matches!(
        wait::send(&a, 1, &[9u8; 10], short()),
        Err(Error::Timeout { .. })
    ));
    let mut buf = [0u8; 200];
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 200);
    assert!(matches!(
        wait::recv(&b, 1, &mut buf, short()),
        Err(Error::Timeout { .. })
    ));
}
