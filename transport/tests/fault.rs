//! The fault-injection wrapper over every transport: it is transparent without faults, and
//! each fault shows up as planned on both ends, with errors or timeouts and never a hang.

use std::time::Duration;

use oxccl_transport::fault::{FaultPlan, Faulty};
use oxccl_transport::loopback::Loopback;
use oxccl_transport::shm::Shm;
use oxccl_transport::tcp::{Tcp, TcpConfig};
use oxccl_transport::wait::{self, connect_pair, Deadline};
use oxccl_transport::{conformance, Connection, Error, Post, Request, Transport};

fn dl() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

/// (faulty end, healthy end)
fn pair<T: Transport + Clone>(
    t: &T,
    plan: FaultPlan,
) -> (
    <Faulty<T> as Transport>::Connection,
    <Faulty<T> as Transport>::Connection,
) {
    let bad = Faulty::new(t.clone(), plan);
    let good = Faulty::new(t.clone(), FaultPlan::default());
    connect_pair(&bad, &good, dl()).expect("setup")
}

fn delay<T: Transport + Clone>(t: &T) {
    let (a, b) = pair(
        t,
        FaultPlan {
            delay: Some(Duration::from_millis(50)),
            ..FaultPlan::default()
        },
    );
    let msg = conformance::pattern(1, 3000);
    let mut s = match a.isend(1, &msg).unwrap() {
        Post::Posted(s) => s,
        Post::Retry(_) => panic!("retry"),
    };
    assert_eq!(s.test().unwrap(), None, "a delayed send completed at once");
    let mut buf = vec![0u8; 3000];
    std::thread::scope(|sc| {
        sc.spawn(move || {
            wait::recv(&b, 1, &mut buf, dl())
                .map(|_| assert_eq!(buf, conformance::pattern(1, 3000)))
                .unwrap()
        });
        wait::wait(&mut s, dl(), "delayed send", "peer").unwrap();
    });
}

fn drop_after<T: Transport + Clone>(t: &T) {
    let (a, b) = pair(
        t,
        FaultPlan {
            drop_after_bytes: Some(1000),
            ..FaultPlan::default()
        },
    );
    wait::send(&a, 1, &[1u8; 600], dl()).unwrap();
    wait::send(&a, 1, &[2u8; 600], dl()).unwrap();
    match wait::send(&a, 1, &[3u8; 600], dl()) {
        Err(Error::Injected { .. }) => {}
        other => panic!("expected an injected drop, got {other:?}"),
    }
    drop(a);
    let mut buf = [0u8; 600];
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 600);
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 600);
    match wait::recv(&b, 1, &mut buf, dl()) {
        Err(Error::PeerClosed { .. }) | Err(Error::Broken { .. }) => {}
        other => panic!("the healthy end should see the drop, got {other:?}"),
    }
}

fn corrupt<T: Transport + Clone>(t: &T) {
    let (a, b) = pair(
        t,
        FaultPlan {
            corrupt_byte: Some(1500),
            ..FaultPlan::default()
        },
    );
    let (m1, m2) = (conformance::pattern(2, 1000), conformance::pattern(3, 1000));
    wait::send(&a, 1, &m1, dl()).unwrap();
    wait::send(&a, 1, &m2, dl()).unwrap();
    let mut buf = vec![0u8; 1000];
    wait::recv(&b, 1, &mut buf, dl()).unwrap();
    assert_eq!(buf, m1, "the first message is intact");
    wait::recv(&b, 1, &mut buf, dl()).unwrap();
    let wrong: Vec<usize> = (0..1000).filter(|&i| buf[i] != m2[i]).collect();
    assert_eq!(wrong, vec![500], "exactly stream byte 1500 is corrupted");
    assert_eq!(buf[500], !m2[500]);
}

fn stall<T: Transport + Clone>(t: &T) {
    let (a, b) = pair(
        t,
        FaultPlan {
            stall_after_bytes: Some(100),
            ..FaultPlan::default()
        },
    );
    wait::send(&a, 1, &[9u8; 200], dl()).unwrap();
    let short = Deadline::after(Duration::from_millis(200));
    assert!(
        matches!(
            wait::send(&a, 1, &[9u8; 10], short),
            Err(Error::Timeout { .. })
        ),
        "a stalled send must time out"
    );
    let mut buf = [0u8; 200];
    assert_eq!(wait::recv(&b, 1, &mut buf, dl()).unwrap(), 200);
    let short = Deadline::after(Duration::from_millis(200));
    assert!(
        matches!(
            wait::recv(&b, 1, &mut buf, short),
            Err(Error::Timeout { .. })
        ),
        "the peer of a stalled end must time out"
    );
    assert!(matches!(
        wait::recv(&a, 1, &mut buf, Deadline::after(Duration::from_millis(100))),
        Err(Error::Timeout { .. })
    ));
}

fn all_faults<T: Transport + Clone>(t: T) {
    delay(&t);
    drop_after(&t);
    corrupt(&t);
    stall(&t);
}

#[test]
fn faults_over_loopback() {
    all_faults(Loopback::new());
}

#[test]
fn faults_over_shm() {
    all_faults(Shm::from_env().unwrap());
}

#[test]
fn faults_over_tcp() {
    all_faults(Tcp::with_config(TcpConfig::loopback()).unwrap());
}

#[test]
fn the_wrapper_without_faults_passes_the_conformance_suite() {
    conformance::run_all(|| Faulty::new(Loopback::new(), FaultPlan::default()));
}
