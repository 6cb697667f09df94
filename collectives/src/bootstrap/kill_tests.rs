//! A rank killed during bootstrap is noticed from its pid, long before the deadline.

use super::store::StoreClient;
use super::{Bootstrap, StoreAddr};
use crate::comm::Communicator;
use crate::error::Error;
use crate::options::Options;
use std::time::{Duration, Instant};

#[test]
fn a_local_peer_killed_after_publishing_its_record_is_noticed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let options = Options {
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let b = Bootstrap::new(0, 2, StoreAddr::Tcp(addr.clone()), "s");
    let rank0 = std::thread::spawn(move || Communicator::init_with(b, options).map(drop));
    // "Rank 1": a process of this host that publishes its record, then is killed while its
    // connection to the store stays open (so only its pid can tell).
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut store = StoreClient::connect(&addr, b"s", deadline).unwrap();
    store.set("joined/1", b"").unwrap();
    let record = format!(
        "{}\n{}\ntcp:unused shm:unused",
        super::locality::host_id(),
        victim.id()
    );
    store.set("rank/1", record.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = Instant::now();
    let e = rank0.join().unwrap().unwrap_err();
    let noticed = killed.elapsed();
    assert!(matches!(e, Error::BootstrapPeer { rank: 1, .. }), "{e}");
    assert!(e.to_string().contains("has exited"), "{e}");
    // Well within a 60 s deadline; 2 s is the promise (a loaded machine may need a little).
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    eprintln!("rank 0: {e} ({noticed:?} after the kill)");
    drop(store);
}
