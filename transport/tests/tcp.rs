//! The conformance suite over TCP on 127.0.0.1, and the wire's bad-input handling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use oxccl_transport::tcp::wire::{self, Frame, Hello};
use oxccl_transport::tcp::{Tcp, TcpAddress, TcpConfig};
use oxccl_transport::wait::{self, Deadline};
use oxccl_transport::{conformance, Address, Error, Listener, Transport};

fn tcp(nsocks: usize) -> Tcp {
    Tcp::with_config(TcpConfig {
        nsocks,
        ..TcpConfig::loopback()
    })
    .expect("config")
}

#[test]
fn tcp_passes_the_conformance_suite() {
    conformance::run_all(|| tcp(1));
}

#[test]
fn tcp_striped_over_four_sockets_passes_the_conformance_suite() {
    conformance::run_all(|| {
        Tcp::with_config(TcpConfig {
            nsocks: 4,
            stripe_min: 4096,
            ..TcpConfig::loopback()
        })
        .expect("config")
    });
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1 GiB in a debug build is slow; run with --release"
)]
fn tcp_one_gib_message() {
    conformance::large_message(&|| tcp(2), &conformance::Options::default(), 1 << 30);
}

fn dl() -> Deadline {
    Deadline::after(Duration::from_secs(20))
}

/// A hand-rolled dialer: connects one raw socket, says hello, reads the acknowledgement.
fn raw_peer(t: &Tcp) -> (oxccl_transport::tcp::TcpConnection, TcpStream) {
    let mut l = t.listen().expect("listen");
    let addr: TcpAddress = l.address();
    let bytes = addr.to_bytes();
    let nonce = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap());
    let mut s = TcpStream::connect(addr.addr).expect("connect");
    s.write_all(
        &Hello {
            nonce,
            conn_id: 42,
            index: 0,
            nsocks: 1,
            max_message: 1 << 20,
        }
        .encode(),
    )
    .unwrap();
    let conn = wait::accept(&mut l, dl()).expect("accept");
    let mut ack = [0u8; wire::ACK_LEN];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(wire::decode_ack(&ack), Ok(1 << 30));
    (conn, s)
}

fn expect_bad_frame(bytes: &[u8], close: bool, what: &str) {
    let t = Tcp::with_config(TcpConfig {
        max_message: 1 << 30,
        ..TcpConfig::loopback()
    })
    .unwrap();
    let (conn, mut s) = raw_peer(&t);
    s.write_all(bytes).unwrap();
    if close {
        drop(s);
    } else {
        // Keep the socket open: the error must not wait for the peer to go away.
        std::mem::forget(s.try_clone().unwrap());
    }
    let mut buf = vec![0u8; 64];
    match wait::recv(&conn, 1, &mut buf, dl()) {
        Err(Error::BadFrame { peer, reason, .. }) => {
            assert!(
                peer.contains("127.0.0.1"),
                "{what}: error does not name the peer: {peer}"
            );
            eprintln!("{what}: {reason}");
        }
        other => panic!("{what}: expected BadFrame, got {other:?}"),
    }
    // The connection is closed: further use reports it, never hangs.
    assert!(wait::recv(&conn, 1, &mut buf, dl()).is_err());
}

#[test]
fn wrong_magic_is_a_bad_frame() {
    let mut f = Frame {
        kind: wire::KIND_MESSAGE,
        tag: 1,
        len: 8,
    }
    .encode();
    f[..4].copy_from_slice(b"HTTP");
    expect_bad_frame(&f, false, "wrong magic");
}

#[test]
fn length_over_the_limit_is_a_bad_frame_and_allocates_nothing() {
    // 2^62 bytes could never be allocated: reaching the error proves nothing tried.
    let f = Frame {
        kind: wire::KIND_MESSAGE,
        tag: 1,
        len: 1 << 62,
    }
    .encode();
    expect_bad_frame(&f, false, "length over limit");
    // Also for a tag nobody waits for (that path would spill into a buffer).
    let f = Frame {
        kind: wire::KIND_MESSAGE,
        tag: 99,
        len: (1 << 30) + 1,
    }
    .encode();
    expect_bad_frame(&f, false, "unexpected tag over limit");
}

#[test]
fn truncated_header_is_a_bad_frame() {
    let f = Frame {
        kind: wire::KIND_MESSAGE,
        tag: 1,
        len: 8,
    }
    .encode();
    expect_bad_frame(&f[..10], true, "truncated header");
}

#[test]
fn port_in_use_is_an_error_naming_it() {
    let t = tcp(1);
    let l = t.listen().unwrap();
    let port = l.address().addr.port();
    let again = Tcp::with_config(TcpConfig {
        port,
        ..TcpConfig::loopback()
    })
    .unwrap();
    match again.listen() {
        Err(e @ Error::AddrInUse { .. }) => {
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}")
        }
        Err(e) => panic!("expected AddrInUse, got {e}"),
        Ok(_) => panic!("listening twice on port {port} succeeded"),
    }
}

#[test]
fn bad_hello_fails_that_connection_only() {
    let t = tcp(1);
    let mut l = t.listen().unwrap();
    let mut s = TcpStream::connect(l.address().addr).unwrap();
    s.write_all(&[0u8; wire::HELLO_LEN]).unwrap();
    let deadline = dl();
    let err = loop {
        match l.poll_accept() {
            Err(e) => break e,
            Ok(Some(_)) => panic!("a zero hello was accepted"),
            Ok(None) => assert!(!deadline.expired(), "bad hello never reported"),
        }
    };
    assert!(matches!(err, Error::BadFrame { .. }), "{err}");
    // The listener still works.
    let (a, _b) = wait::connect_pair(&t, &t, dl()).unwrap();
    drop(a);
}

#[test]
fn sending_above_the_peers_limit_is_refused_before_anything_moves() {
    let small = Tcp::with_config(TcpConfig {
        max_message: 1000,
        ..TcpConfig::loopback()
    })
    .unwrap();
    let big = tcp(1);
    let (from_big, to_small) = wait::connect_pair(&big, &small, dl()).unwrap();
    match wait::send(&from_big, 1, &[0u8; 1001], dl()) {
        Err(Error::TooLarge { limit: 1000, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    wait::send(&from_big, 1, &[7u8; 1000], dl()).unwrap();
    let mut buf = [0u8; 1000];
    assert_eq!(wait::recv(&to_small, 1, &mut buf, dl()).unwrap(), 1000);
}

/// A connection turned stream: the bytes socket 0 read past the last message are the start of
/// the stream, the chunks it sends are checked frames, and a chunk out of order is a bad
/// frame the reader sees, not data.
#[test]
fn stream_chunks_are_framed_checked_and_follow_the_last_message() {
    use oxccl_transport::stream::StreamConfig;
    use oxccl_transport::Connection;
    let t = Tcp::with_config(TcpConfig {
        max_message: 1 << 30,
        ..TcpConfig::loopback()
    })
    .unwrap();
    let (conn, mut s) = raw_peer(&t);
    let chunk = |tag: u64, data: &[u8]| {
        let mut v = Frame {
            kind: wire::KIND_STREAM,
            tag,
            len: data.len() as u64,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(data);
        v
    };
    // A greeting message and the first stream chunk in one write: reading the message takes
    // the chunk into the connection's buffer too.
    let mut first = Frame {
        kind: wire::KIND_MESSAGE,
        tag: 1,
        len: 5,
    }
    .encode()
    .to_vec();
    first.extend_from_slice(b"hello");
    first.extend(chunk(0, b"abc"));
    s.write_all(&first).unwrap();
    let mut buf = [0u8; 5];
    wait::recv(&conn, 1, &mut buf, dl()).expect("greeting");
    assert_eq!(&buf, b"hello");
    let mut st = conn
        .into_stream("tcp", &StreamConfig::default())
        .expect("into_stream");
    // Stream bytes out: one chunk header, then the bytes.
    assert_eq!(st.write(b"xyz").unwrap(), 3);
    let mut hdr = [0u8; wire::FRAME_LEN];
    s.read_exact(&mut hdr).unwrap();
    assert_eq!(wire::decode_stream_chunk(&hdr, 0, 1 << 20), Ok(3));
    let mut got = [0u8; 3];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"xyz");
    // Stream bytes in, then a chunk with the wrong index.
    s.write_all(&chunk(1, b"de")).unwrap();
    s.write_all(&chunk(5, b"zz")).unwrap();
    std::mem::forget(s.try_clone().unwrap());
    let d = dl();
    let mut seen = Vec::new();
    let err = loop {
        assert!(!d.expired(), "stream stalled with {seen:?}");
        match st.peek() {
            Ok(v) => {
                let v = v.to_vec();
                st.consume(v.len());
                seen.extend(v);
            }
            Err(e) => break e,
        }
    };
    assert_eq!(seen, b"abcde");
    let text = err.to_string();
    assert!(
        text.contains("chunk 5 where chunk 2 was due"),
        "unexpected error: {text}"
    );
}
