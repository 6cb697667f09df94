//! `shm` between two processes: this test binary runs itself again as the peer.

use std::process::Command;
use std::time::Duration;

use oxccl_transport::shm::{Shm, ShmAddress};
use oxccl_transport::stream::{Arrival, Choice, Offer, Offering};
use oxccl_transport::wait::{self, drain_view, Deadline};
use oxccl_transport::{conformance, Address, Connection, Error, Listener, StreamConfig, Transport};

const PEER_ENV: &str = "OXCCL_TEST_SHM_PEER";
const MODE_ENV: &str = "OXCCL_TEST_SHM_MODE";
const SIZES: [usize; 4] = [8, 5000, 3 << 20, 9 << 20];
/// The message the "pull-die" peer offers and then dies with.
const PULL_DIE_BYTES: usize = 8 << 20;

fn dl() -> Deadline {
    Deadline::after(Duration::from_secs(30))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn spawn_peer(addr: &ShmAddress, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "peer_process", "--ignored", "--test-threads=1"])
        .env(PEER_ENV, hex(&addr.to_bytes()))
        .env(MODE_ENV, mode)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning the peer process")
}

#[test]
fn shm_between_two_processes() {
    let t = Shm::from_env().unwrap();
    let mut l = t.listen().unwrap();
    let mut child = spawn_peer(&l.address(), "echo");
    let c = wait::accept(&mut l, dl()).expect("the peer process connects");
    for (i, n) in SIZES.into_iter().enumerate() {
        let msg = conformance::pattern(i as u64, n);
        wait::send(&c, 1, &msg, dl()).unwrap();
        // The echo comes back through a zero-copy view.
        let mut v = c.irecv_view(2, n).unwrap().expect("view");
        let mut got = vec![0u8; n];
        drain_view(&mut v, dl(), c.peer(), |off, b| {
            got[off..off + b.len()].copy_from_slice(b)
        })
        .unwrap();
        drop(v);
        assert!(got == msg, "echo of {n} bytes differs");
    }
    drop(c);
    assert!(child.wait().unwrap().success(), "the peer process failed");
}

#[test]
fn a_peer_process_that_dies_without_closing_is_noticed() {
    let t = Shm::from_env().unwrap();
    let mut l = t.listen().unwrap();
    let mut child = spawn_peer(&l.address(), "abort");
    let c = wait::accept(&mut l, dl()).expect("the peer process connects");
    let mut buf = [0u8; 16];
    assert_eq!(
        wait::recv(&c, 1, &mut buf, dl()).unwrap(),
        5,
        "the peer's message before it dies"
    );
    // Reap it, so its /proc entry goes away (a zombie still has one).
    let status = child.wait().unwrap();
    assert!(!status.success(), "the peer was meant to abort");
    match wait::recv(&c, 1, &mut buf, dl()) {
        Err(Error::PeerClosed { .. }) => {}
        other => panic!("expected PeerClosed from a dead peer process, got {other:?}"),
    }
}

#[test]
fn a_peer_process_that_dies_while_we_copy_out_of_it_is_an_error() {
    let t = Shm::from_env().unwrap();
    let mut l = t.listen().unwrap();
    let mut child = spawn_peer(&l.address(), "pull-die");
    let c = wait::accept(&mut l, dl()).expect("the peer process connects");
    let mut s = c.into_stream("shm", &StreamConfig::default()).unwrap();
    let Some(min) = s.single_copy_min() else {
        eprintln!("single-copy path off (OXCCL_SINGLE_COPY_MIN=0): nothing to check");
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    };
    let n = PULL_DIE_BYTES.max(min);
    let deadline = dl();
    let mut arrive = |len: usize| loop {
        if let Some(a) = s.arrival(len).unwrap() {
            break a;
        }
        assert!(!deadline.expired(), "no large message from the peer");
        std::thread::yield_now();
    };
    let Arrival::Pull(first) = arrive(min) else {
        eprintln!("cross-memory attach refused here: the message came through the ring");
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    };
    // Both offers are in flight: the second's header is in the stream behind the first, whose
    // pull may still fail if the peer is already gone (then the second is never looked at).
    let Arrival::Pull(p) = arrive(n) else {
        panic!("the second offer came inline after a pulled first one");
    };
    let mut whole = vec![0u8; min];
    match s.pull(&first, 0, &mut whole) {
        Ok(()) => {
            assert!(
                whole == conformance::pattern(6, min),
                "the first message differs"
            );
            s.pulled();
        }
        Err(Error::PeerClosed { .. }) => {}
        Err(e) => panic!("the first pull failed with {e:?}"),
    }
    let mut piece = vec![0u8; 1 << 20];
    // The peer may already be gone: then the first piece fails the same way.
    let first = s.pull(&p, 0, &mut piece);
    if first.is_ok() {
        assert!(
            piece == conformance::pattern(7, n)[..1 << 20],
            "the first piece differs"
        );
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the peer was meant to abort");
    match s.pull(&p, 1 << 20, &mut piece) {
        Err(Error::PeerClosed { .. }) => {}
        other => panic!("expected PeerClosed from a pull out of a dead process, got {other:?}"),
    }
}

/// The other path of a large message: the sender chose the ring (its header says inline),
/// wrote part of the bytes and died without closing. We get what it wrote, exactly, then an
/// error naming the dead peer (not a hang, not stale bytes).
#[test]
fn a_peer_process_that_dies_while_it_streams_a_large_message_is_an_error() {
    let t = Shm::from_env().unwrap();
    let mut l = t.listen().unwrap();
    let mut child = spawn_peer(&l.address(), "stream-die");
    let c = wait::accept(&mut l, dl()).expect("the peer process connects");
    let mut s = c.into_stream("shm", &StreamConfig::default()).unwrap();
    if s.single_copy_min().is_none() {
        eprintln!("single-copy path off (OXCCL_SINGLE_COPY_MIN=0): nothing to check");
        child.kill().unwrap();
        child.wait().unwrap();
        return;
    }
    let deadline = dl();
    let arrival = loop {
        if let Some(a) = s.arrival(PULL_DIE_BYTES).unwrap() {
            break a;
        }
        assert!(!deadline.expired(), "no large message from the peer");
        std::thread::yield_now();
    };
    assert_eq!(arrival, Arrival::Inline, "the peer chose the ring");
    let data = conformance::pattern(8, PULL_DIE_BYTES);
    let mut got = 0;
    let err = loop {
        match s.peek() {
            Ok(v) if !v.is_empty() => {
                let n = v.len();
                assert!(v == &data[got..got + n], "bytes {got}.. differ");
                s.consume(n);
                got += n;
            }
            Ok(_) => {
                if let Err(e) = s.check_alive() {
                    break e;
                }
                assert!(!deadline.expired(), "a dead peer was not noticed");
                std::thread::yield_now();
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::PeerClosed { .. }), "got {err:?}");
    assert!(got < PULL_DIE_BYTES, "the whole message came");
    assert!(
        !child.wait().unwrap().success(),
        "the peer was meant to abort"
    );
}

/// The peer half of the tests above; does nothing unless started by them.
#[test]
#[ignore = "runs only as the child process of the shm_process tests"]
fn peer_process() {
    let Ok(addr) = std::env::var(PEER_ENV) else {
        eprintln!("{PEER_ENV} not set: this is the child half of another test");
        return;
    };
    let bytes: Vec<u8> = (0..addr.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&addr[i..i + 2], 16).unwrap())
        .collect();
    let addr = ShmAddress::from_bytes(&bytes).unwrap();
    let t = Shm::from_env().unwrap();
    let c = wait::establish(t.connect(&addr).unwrap(), dl(), "parent").unwrap();
    if std::env::var(MODE_ENV).as_deref() == Ok("pull-die") {
        let mut s = c.into_stream("shm", &StreamConfig::default()).unwrap();
        let min = s.single_copy_min().unwrap_or(0);
        // Two offers in flight: the first is pulled whole, the second is where it dies.
        let first = conformance::pattern(6, min);
        let data = conformance::pattern(7, PULL_DIE_BYTES.max(min));
        let deadline = dl();
        for m in [&first, &data] {
            // SAFETY: both live until the process dies below, which is the point of the test.
            while unsafe { s.offer(m.as_ptr(), m.len(), Offering::WHOLE) }
                .unwrap()
                .is_none()
            {
                assert!(!deadline.expired(), "no room for the header");
                std::thread::yield_now();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        std::process::abort();
    }
    if std::env::var(MODE_ENV).as_deref() == Ok("stream-die") {
        let config = StreamConfig {
            single_copy_choice: Choice::Stream,
            ..StreamConfig::default()
        };
        let mut s = c.into_stream("shm", &config).unwrap();
        let data = conformance::pattern(8, PULL_DIE_BYTES);
        // SAFETY: an inline offer does not keep the pointer.
        let offer = unsafe { s.offer(data.as_ptr(), data.len(), Offering::WHOLE) };
        assert_eq!(offer.unwrap(), Some(Offer::Inline));
        // What fits in the ring (the parent drains it meanwhile), well short of the whole.
        let deadline = dl();
        let mut sent = 0;
        while sent < PULL_DIE_BYTES / 2 {
            sent += s.write(&data[sent..PULL_DIE_BYTES / 2]).unwrap();
            assert!(!deadline.expired(), "the parent stopped reading");
        }
        std::thread::sleep(Duration::from_millis(100));
        std::process::abort();
    }
    if std::env::var(MODE_ENV).as_deref() == Ok("abort") {
        wait::send(&c, 1, b"hello", dl()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Die without closing: no destructor runs, the close flag is never set.
        std::process::abort();
    }
    for n in SIZES {
        let mut buf = vec![0u8; n];
        assert_eq!(wait::recv(&c, 1, &mut buf, dl()).unwrap(), n);
        wait::send(&c, 2, &buf, dl()).unwrap();
    }
    // Wait for the parent to finish reading before closing.
    let mut none = [0u8; 1];
    let _ = wait::recv(&c, 9, &mut none, dl());
}
