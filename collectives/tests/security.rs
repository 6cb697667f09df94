//! Strangers are kept out: without the secret no one joins, whatever else they know.

mod common;

use common::opts;
use oxccl_collectives::{Bootstrap, Communicator, Error, ReduceOp};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oxccl-security-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bootstrap(vars: &HashMap<&str, String>) -> Bootstrap {
    Bootstrap::from_vars(|k| vars.get(k).cloned()).unwrap()
}

#[test]
fn a_stranger_knowing_every_variable_but_the_secret_cannot_join() {
    // The job's user; the stranger is another user (another home), same host, same job.
    let (home, other) = (scratch("home"), scratch("other"));
    let port = free_port().to_string();
    let env = |rank: usize, home: &PathBuf| -> HashMap<&str, String> {
        [
            ("RANK", rank.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("LOCAL_RANK", rank.to_string()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.clone()),
            ("HOME", home.display().to_string()),
        ]
        .into()
    };
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            let b = bootstrap(&env(r, &home));
            std::thread::spawn(move || {
                let c = Communicator::init_with(b, opts(20.0)).unwrap();
                let mut x = [c.rank() as u64 + 1];
                c.all_reduce_in_place(&mut x, ReduceOp::Sum).unwrap();
                assert_eq!(x, [3]);
                // Keep rank 0's store up while the strangers knock.
                std::thread::sleep(Duration::from_millis(1500));
                c.barrier().unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Every variable of rank 1, but another user's secret file.
    let stranger = Communicator::init_with(bootstrap(&env(1, &other)), opts(5.0));
    let e = stranger.expect_err("another user's secret must be refused");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    // What the secret used to be derived from (the store address and the run id) is refused too.
    let derived = format!("oxccl-job:torchrun:127.0.0.1:{port}/");
    let mut guessed = bootstrap(&env(1, &other));
    guessed.secret = derived.into_bytes();
    let e = Communicator::init_with(guessed, opts(5.0)).expect_err("a derived secret");
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    for h in ranks {
        h.join().unwrap();
    }
    let file = home.join(".config/oxccl/secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::remove_dir_all(home).unwrap();
    std::fs::remove_dir_all(other).unwrap();
}

fn tcp_store() -> oxccl_collectives::StoreAddr {
    oxccl_collectives::StoreAddr::Tcp(format!("127.0.0.1:{}", free_port()))
}

#[test]
fn a_rank_that_fails_at_once_does_not_break_a_peer_still_joining() {
    // Rank 0 finishes init and goes away at once (as after a failed first call); its store
    // must outlive it until rank 1 has read every key.
    for _ in 0..20 {
        let store = tcp_store();
        let hs: Vec<_> = (0..3)
            .map(|r| {
                let b = Bootstrap::new(r, 3, store.clone(), "s");
                std::thread::spawn(move || Communicator::init_with(b, opts(20.0)).map(drop))
            })
            .collect();
        for h in hs {
            h.join().unwrap().unwrap();
        }
    }
}

#[test]
fn a_rank_failing_its_bootstrap_is_named_with_its_reason() {
    for _ in 0..5 {
        let store = tcp_store();
        let hs: Vec<_> = (0..3)
            .map(|r| {
                let b = Bootstrap::new(r, 3, store.clone(), "s");
                let mut o = opts(20.0);
                if r == 0 {
                    // Only rank 0 is misconfigured: it fails after publishing its record.
                    o.algorithm = Some("bogus".into());
                }
                std::thread::spawn(move || Communicator::init_with(b, o).map(drop))
            })
            .collect();
        let out: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let e0 = out[0].as_ref().unwrap_err().to_string();
        assert!(e0.contains("bogus"), "{e0}");
        for e in &out[1..] {
            let e = e.as_ref().unwrap_err();
            assert!(matches!(e, Error::BootstrapPeer { rank: 0, .. }), "{e}");
            assert!(e.to_string().contains("bogus"), "{e}");
        }
    }
}

#[test]
fn a_bootstrap_timeout_leaves_no_rendezvous_file() {
    let file = std::env::temp_dir().join(format!("oxccl-ompi-test{}.store", std::process::id()));
    let b = Bootstrap::new(0, 2, oxccl_collectives::StoreAddr::File(file.clone()), "s");
    let e = Communicator::init_with(b, opts(1.0)).unwrap_err();
    assert!(matches!(e, Error::BootstrapTimeout { .. }), "{e}");
    assert!(!file.exists(), "{} left behind", file.display());
}
