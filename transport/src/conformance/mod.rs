//! The conformance suite every transport passes.
//!
//! Generic over `T: Transport`; `make` builds one transport value per simulated rank (two
//! values stand for two processes). Each check panics with a message naming what broke, like
//! any test helper, so call it from a `#[test]`:
//!
//! ```
//! oxccl_transport::conformance::run_all(oxccl_transport::loopback::Loopback::new);
//! ```
//!
//! The checks use threads for the two ends (a connection is `Send`), except setup, which is
//! polled from one thread to prove that listen, connect and accept never block.
//!
//! The `stream_*` checks cover the stream face ([`crate::stream`]): a fabric that keeps the
//! default [`Connection::into_stream`] is checked through the generic proxy, one that
//! overrides it on its own ring.

mod large;
mod stream;

pub use large::{stream_single_copy, stream_single_copy_abort, stream_single_copy_nt};
pub use stream::{
    stream_abort, stream_close, stream_doorbell, stream_mailbox, stream_partial_consume,
    stream_roundtrip, stream_roundtrip_nt,
};

use std::time::Duration;

use crate::api::{Address, Connection, Post, RecvView, Request, Tag, Transport};
use crate::error::{Error, Result};
use crate::wait::{self, connect_pair, drain_view, Backoff, Deadline};

/// What the suite runs with.
#[derive(Debug, Clone)]
pub struct Options {
    /// Size of the large-message check: 1 GiB in release builds, 32 MiB in debug builds
    /// (`OXCCL_CONFORMANCE_LARGE` overrides, in bytes).
    pub large_bytes: usize,
    /// Deadline of every blocking step (a hang becomes a failure after this long).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let default = if cfg!(debug_assertions) {
            32 << 20
        } else {
            1 << 30
        };
        let large_bytes = std::env::var("OXCCL_CONFORMANCE_LARGE")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default);
        Options {
            large_bytes,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Runs every check with [`Options::default`].
pub fn run_all<T: Transport>(make: impl Fn() -> T)
where
    T::Connection: 'static,
{
    run_all_with(make, &Options::default())
}

/// Runs every check.
pub fn run_all_with<T: Transport>(make: impl Fn() -> T, opts: &Options)
where
    T::Connection: 'static,
{
    type Check<'c, T> = &'c dyn Fn(&dyn Fn() -> T, &Options);
    let checks: &[(&str, Check<'_, T>)] = &[
        ("address_roundtrip", &|m, _| address_roundtrip(m)),
        ("ping_pong", &|m, o| ping_pong(m, o)),
        ("ordering_per_tag", &|m, o| ordering_per_tag(m, o)),
        ("many_in_flight", &|m, o| many_in_flight(m, o)),
        ("out_of_order_tags", &|m, o| out_of_order_tags(m, o)),
        ("zero_length", &|m, o| zero_length(m, o)),
        ("wrong_size", &|m, o| wrong_size(m, o)),
        ("view_roundtrip", &|m, o| view_roundtrip(m, o)),
        ("bidirectional", &|m, o| bidirectional(m, o)),
        ("large_message", &|m, o| large_message(m, o, o.large_bytes)),
        ("timeout", &|m, o| timeout(m, o)),
        ("peer_close_idle", &|m, o| peer_close_idle(m, o)),
        ("peer_close_mid_message", &|m, o| {
            peer_close_mid_message(m, o)
        }),
        ("several_connections", &|m, o| several_connections(m, o)),
        ("region", &|m, o| region(m, o)),
        ("stream_roundtrip", &|m, o| stream_roundtrip(m, o)),
        ("stream_roundtrip_nt", &|m, o| stream_roundtrip_nt(m, o)),
        ("stream_close", &|m, o| stream_close(m, o)),
        ("stream_abort", &|m, o| stream_abort(m, o)),
        ("stream_mailbox", &|m, o| stream_mailbox(m, o)),
        ("stream_doorbell", &|m, o| stream_doorbell(m, o)),
        ("stream_partial_consume", &|m, o| {
            stream_partial_consume(m, o)
        }),
        ("stream_single_copy", &|m, o| stream_single_copy(m, o)),
        ("stream_single_copy_nt", &|m, o| stream_single_copy_nt(m, o)),
        ("stream_single_copy_abort", &|m, o| {
            stream_single_copy_abort(m, o)
        }),
    ];
    let make: &dyn Fn() -> T = &make;
    for (name, check) in checks {
        let t0 = std::time::Instant::now();
        check(make, opts);
        tracing::info!(check = name, elapsed = ?t0.elapsed(), "conformance check passed");
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for every `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    out
}

pub(crate) fn pair<T: Transport>(
    make: &dyn Fn() -> T,
    o: &Options,
) -> (T::Connection, T::Connection) {
    let (a, b) = (make(), make());
    connect_pair(&a, &b, Deadline::after(o.timeout)).expect("connection setup between two ranks")
}

pub(crate) fn dl(o: &Options) -> Deadline {
    Deadline::after(o.timeout)
}

pub(crate) fn must<V>(r: Result<V>, what: &str) -> V {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub(crate) fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = first_diff(got, want) {
        panic!("{what}: first wrong byte at offset {i} of {}", want.len());
    }
}

/// Posts a send, testing `inflight` while the transport answers "retry".
fn post_send<'a, C: Connection>(
    conn: &'a C,
    tag: Tag,
    buf: &'a [u8],
    inflight: &mut [C::SendRequest<'a>],
    deadline: Deadline,
) -> C::SendRequest<'a> {
    let mut backoff = Backoff::new();
    loop {
        if let Post::Posted(r) = must(conn.isend(tag, buf), "isend") {
            return r;
        }
        for r in inflight.iter_mut() {
            must(r.test(), "test of an earlier send");
        }
        assert!(!deadline.expired(), "isend kept answering retry");
        backoff.snooze();
    }
}

fn send_all<C: Connection>(conn: &C, msgs: &[(Tag, Vec<u8>)], o: &Options) {
    let deadline = dl(o);
    let mut reqs: Vec<C::SendRequest<'_>> = Vec::new();
    for (tag, m) in msgs {
        let r = post_send(conn, *tag, m, &mut reqs, deadline);
        reqs.push(r);
    }
    let mut dynreqs: Vec<&mut dyn Request> =
        reqs.iter_mut().map(|r| r as &mut dyn Request).collect();
    must(
        wait::wait_all(&mut dynreqs, deadline, conn.peer()),
        "waiting for sends",
    );
}

/// Addresses survive `to_bytes`/`from_bytes`; garbage bytes are an error, not a panic.
pub fn address_roundtrip<T: Transport>(make: &dyn Fn() -> T) {
    let t = make();
    let l = must(t.listen(), "listen");
    let addr = crate::api::Listener::address(&l);
    let back = must(
        T::Address::from_bytes(&addr.to_bytes()),
        "address from its own bytes",
    );
    assert_eq!(back.to_string(), addr.to_string(), "address round trip");
    for junk in [&b""[..], b"x", &[0xff; 7], &[0u8; 300]] {
        assert!(
            T::Address::from_bytes(junk).is_err(),
            "{} junk bytes decoded as an address",
            junk.len()
        );
    }
}

/// One message each way, several sizes, random data.
pub fn ping_pong<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let sizes = [1usize, 7, 8, 64, 1000, 4096, 65_537, 1 << 20];
    std::thread::scope(|s| {
        s.spawn(move || {
            for (i, len) in sizes.into_iter().enumerate() {
                must(
                    wait::send(&a, 1, &pattern(i as u64, len), dl(o)),
                    "ping send",
                );
                let mut buf = vec![0u8; len];
                let n = must(wait::recv(&a, 2, &mut buf, dl(o)), "pong receive");
                assert_eq!(n, len);
                assert_same(&buf, &pattern(1000 + i as u64, len), "pong");
            }
            must(a.close(), "close");
        });
        for (i, len) in sizes.into_iter().enumerate() {
            let mut buf = vec![0u8; len];
            let n = must(wait::recv(&b, 1, &mut buf, dl(o)), "ping receive");
            assert_eq!(n, len);
            assert_same(&buf, &pattern(i as u64, len), "ping");
            must(
                wait::send(&b, 2, &pattern(1000 + i as u64, len), dl(o)),
                "pong send",
            );
        }
    });
    must(b.close(), "close");
}

/// Two tags interleaved, 200 messages of varying size: each tag's messages arrive in order.
pub fn ordering_per_tag<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let msgs: Vec<(Tag, Vec<u8>)> = (0..200u64)
        .map(|i| (10 + i % 2, pattern(i, 1 + (i as usize * 7919) % 20_000)))
        .collect();
    std::thread::scope(|s| {
        s.spawn({
            let msgs = &msgs;
            move || send_all(&a, msgs, o)
        });
        // Receive all of tag 11 first, then all of tag 10: tag 10 must be buffered meanwhile.
        for tag in [11, 10] {
            for (t, m) in msgs.iter().filter(|(t, _)| *t == tag) {
                let mut buf = vec![0u8; 20_000];
                let n = must(wait::recv(&b, *t, &mut buf, dl(o)), "ordered receive");
                assert_same(&buf[..n], m, &format!("message with tag {t}"));
            }
        }
    });
}

/// 256 sends and 256 receives posted before any completes.
pub fn many_in_flight<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let msgs: Vec<(Tag, Vec<u8>)> = (0..256u64)
        .map(|i| (i % 4, pattern(i + 7, 16_381 + i as usize)))
        .collect();
    let mut bufs: Vec<Vec<u8>> = msgs.iter().map(|(_, m)| vec![0u8; m.len()]).collect();
    std::thread::scope(|s| {
        s.spawn({
            let msgs = &msgs;
            move || send_all(&a, msgs, o)
        });
        let mut reqs = Vec::new();
        for ((tag, _), buf) in msgs.iter().zip(bufs.iter_mut()) {
            let mut backoff = Backoff::new();
            let deadline = dl(o);
            let mut buf: &mut [u8] = buf;
            loop {
                match must(b.irecv(*tag, buf), "irecv") {
                    Post::Posted(r) => {
                        reqs.push(r);
                        break;
                    }
                    Post::Retry(b0) => {
                        buf = b0;
                        for r in reqs.iter_mut() {
                            must(Request::test(r), "test");
                        }
                        assert!(!deadline.expired(), "irecv kept answering retry");
                        backoff.snooze();
                    }
                }
            }
        }
        let mut dynreqs: Vec<&mut dyn Request> =
            reqs.iter_mut().map(|r| r as &mut dyn Request).collect();
        let sizes = must(
            wait::wait_all(&mut dynreqs, dl(o), b.peer()),
            "waiting for receives",
        );
        for (n, (_, m)) in sizes.iter().zip(&msgs) {
            assert_eq!(*n, m.len());
        }
    });
    for (buf, (_, m)) in bufs.iter().zip(&msgs) {
        assert_same(buf, m, "message in flight");
    }
}

/// Tags 1..=8 sent in order, received in reverse order.
pub fn out_of_order_tags<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let msgs: Vec<(Tag, Vec<u8>)> = (1..=8u64)
        .map(|t| (t, pattern(t, 1000 + t as usize * 3000)))
        .collect();
    std::thread::scope(|s| {
        s.spawn({
            let msgs = &msgs;
            move || send_all(&a, msgs, o)
        });
        for (t, m) in msgs.iter().rev() {
            let mut buf = vec![0u8; m.len()];
            let n = must(wait::recv(&b, *t, &mut buf, dl(o)), "out-of-order receive");
            assert_eq!(n, m.len());
            assert_same(&buf, m, &format!("tag {t}"));
        }
    });
}

/// Zero-length messages, into an empty and a non-empty buffer and through a view.
pub fn zero_length<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    for _ in 0..3 {
        must(wait::send(&a, 5, &[], dl(o)), "empty send");
    }
    let mut big = [7u8; 16];
    assert_eq!(must(wait::recv(&b, 5, &mut [], dl(o)), "empty receive"), 0);
    assert_eq!(
        must(wait::recv(&b, 5, &mut big, dl(o)), "empty into 16 bytes"),
        0
    );
    assert_eq!(big, [7u8; 16], "an empty message wrote into the buffer");
    let mut v = must(b.irecv_view(5, 0), "irecv_view").expect("view posted");
    let mut total = 0;
    must(
        drain_view(&mut v, dl(o), "peer", |_, c| total += c.len()),
        "empty view",
    );
    assert_eq!(total, 0);
    assert!(v.is_complete());
}

/// Longer than the buffer: `Truncated`; shorter: its length; view of the wrong length:
/// `SizeMismatch`. The connection stays usable after each.
pub fn wrong_size<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let long = pattern(1, 100);
    let short = pattern(2, 50);
    let after = pattern(3, 300);
    std::thread::scope(|s| {
        let msgs = [
            (1, long.clone()),
            (1, short.clone()),
            (1, long.clone()),
            (1, after.clone()),
        ];
        s.spawn(move || send_all(&a, &msgs, o));
        let mut buf = vec![0u8; 60];
        match wait::recv(&b, 1, &mut buf, dl(o)) {
            Err(Error::Truncated {
                message: 100,
                buffer: 60,
                ..
            }) => {}
            other => panic!("100 bytes into 60: expected Truncated, got {other:?}"),
        }
        let mut buf = vec![0u8; 100];
        let n = must(wait::recv(&b, 1, &mut buf, dl(o)), "shorter message");
        assert_eq!(n, 50);
        assert_same(&buf[..50], &short, "short message");
        let mut v = must(b.irecv_view(1, 99), "irecv_view").expect("view");
        match drain_view(&mut v, dl(o), "peer", |_, _| {}) {
            Err(Error::SizeMismatch {
                message: 100,
                expected: 99,
                ..
            }) => {}
            other => panic!("view of 99 for 100 bytes: expected SizeMismatch, got {other:?}"),
        }
        drop(v);
        let mut buf = vec![0u8; 300];
        let n = must(
            wait::recv(&b, 1, &mut buf, dl(o)),
            "message after the errors",
        );
        assert_same(&buf[..n], &after, "message after the errors");
    });
}

/// Zero-copy receives of sizes up to 8 MiB reassemble to the sent bytes.
pub fn view_roundtrip<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let msgs: Vec<(Tag, Vec<u8>)> = [3usize, 4096, 100_003, 1 << 20, 8 << 20]
        .into_iter()
        .enumerate()
        .map(|(i, n)| (9, pattern(i as u64 + 50, n)))
        .collect();
    std::thread::scope(|s| {
        s.spawn({
            let msgs = &msgs;
            move || send_all(&a, msgs, o)
        });
        for (t, m) in &msgs {
            let mut v = must(b.irecv_view(*t, m.len()), "irecv_view").expect("view");
            let mut got = vec![0u8; m.len()];
            let mut covered = 0usize;
            must(
                drain_view(&mut v, dl(o), b.peer(), |off, c| {
                    got[off..off + c.len()].copy_from_slice(c);
                    covered += c.len();
                }),
                "view",
            );
            assert_eq!(covered, m.len(), "view chunks cover the message once");
            assert_eq!(v.received(), m.len());
            assert_same(&got, m, "view message");
        }
    });
}

/// Both ends send 16 MiB to each other at once; with `wait_all` neither deadlocks.
pub fn bidirectional<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let n = 16 << 20;
    let (pa, pb) = (pattern(11, n), pattern(12, n));
    let side = |c: T::Connection, mine: &[u8], theirs: &[u8]| {
        let mut buf = vec![0u8; n];
        {
            let mut s = must(c.isend(3, mine), "isend").posted().expect("send slot");
            let mut r = must(c.irecv(3, &mut buf), "irecv")
                .posted()
                .expect("recv slot");
            must(
                wait::wait_all(&mut [&mut s, &mut r], dl(o), c.peer()),
                "exchange",
            );
        }
        drop(c);
        assert_same(&buf, theirs, "exchanged message");
    };
    std::thread::scope(|s| {
        s.spawn(|| side(a, &pa, &pb));
        side(b, &pb, &pa);
    });
}

/// One message of `bytes` bytes.
pub fn large_message<T: Transport>(make: &dyn Fn() -> T, o: &Options, bytes: usize) {
    let (a, b) = pair(make, o);
    let msg = pattern(99, bytes);
    std::thread::scope(|s| {
        let msg = &msg;
        s.spawn(move || {
            must(
                wait::send(&a, 77, msg, Deadline::after(o.timeout * 4)),
                "large send",
            )
        });
        let mut buf = vec![0u8; bytes];
        let n = must(
            wait::recv(&b, 77, &mut buf, Deadline::after(o.timeout * 4)),
            "large receive",
        );
        assert_eq!(n, bytes);
        assert_same(&buf, msg, "large message");
    });
}

/// A receive that nothing satisfies times out; the connection stays usable.
pub fn timeout<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let mut buf = [0u8; 8];
    match wait::recv(&b, 4, &mut buf, Deadline::after(Duration::from_millis(100))) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    must(wait::send(&a, 4, b"after-to", dl(o)), "send after timeout");
    assert_eq!(
        must(wait::recv(&b, 4, &mut buf, dl(o)), "receive after timeout"),
        8
    );
    assert_eq!(&buf, b"after-to");
}

pub(crate) fn expect_closed(r: Result<usize>, what: &str) {
    match r {
        Err(Error::PeerClosed { .. }) | Err(Error::Broken { .. }) => {}
        Err(Error::Timeout { .. }) => {
            panic!("{what}: timed out instead of reporting the closed peer")
        }
        other => panic!("{what}: expected PeerClosed, got {other:?}"),
    }
}

/// The peer closes with nothing in flight: delivered messages still arrive, then receives
/// fail with `PeerClosed` well before the deadline.
pub fn peer_close_idle<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    must(wait::send(&a, 1, b"last words", dl(o)), "send before close");
    must(a.close(), "close");
    let mut buf = [0u8; 32];
    assert_eq!(
        must(
            wait::recv(&b, 1, &mut buf, dl(o)),
            "message sent before close"
        ),
        10
    );
    expect_closed(
        wait::recv(&b, 1, &mut buf, dl(o)),
        "receive after the peer closed",
    );
    let t = make();
    let l = must(t.listen(), "listen");
    drop(l);
}

/// The peer abandons a 64 MiB send part way and closes: the receiver gets an error (or,
/// where the transport moved the message whole, the intact message), never a hang.
pub fn peer_close_mid_message<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let (a, b) = pair(make, o);
    let n = 64 << 20;
    let msg = pattern(5, n);
    std::thread::scope(|s| {
        let msg = &msg;
        s.spawn(move || {
            {
                let mut r = must(a.isend(2, msg), "isend").posted().expect("send slot");
                for _ in 0..3 {
                    let _ = r.test();
                }
            }
            let _ = a.close();
        });
        let mut buf = vec![0u8; n];
        match wait::recv(&b, 2, &mut buf, dl(o)) {
            Ok(got) => {
                assert_eq!(got, n, "a partial message was reported complete");
                assert_same(&buf, msg, "message delivered whole before close");
            }
            Err(e) => expect_closed(Err(e), "receive of an abandoned message"),
        }
    });
}

/// One listener accepts three connections; each carries its own messages.
pub fn several_connections<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let server = make();
    let mut listener = must(server.listen(), "listen");
    let addr = crate::api::Listener::address(&listener);
    let addr = must(T::Address::from_bytes(&addr.to_bytes()), "address bytes");
    let clients: Vec<T> = (0..3).map(|_| make()).collect();
    std::thread::scope(|s| {
        for (i, c) in clients.iter().enumerate() {
            let addr = addr.clone();
            s.spawn(move || {
                let p = must(c.connect(&addr), "connect");
                let conn = must(wait::establish(p, dl(o), "server"), "establish");
                must(
                    wait::send(&conn, 0, &pattern(i as u64, 10_000), dl(o)),
                    "client send",
                );
                let mut buf = [0u8; 8];
                must(wait::recv(&conn, 0, &mut buf, dl(o)), "client ack");
                assert_eq!(buf, (i as u64).to_le_bytes());
            });
        }
        let conns: Vec<_> = (0..3)
            .map(|_| must(wait::accept(&mut listener, dl(o)), "accept"))
            .collect();
        for conn in &conns {
            let mut buf = vec![0u8; 10_000];
            must(wait::recv(conn, 0, &mut buf, dl(o)), "server receive");
            let who = (0..3u64)
                .find(|i| buf == pattern(*i, 10_000))
                .expect("message from one of the clients");
            must(wait::send(conn, 0, &who.to_le_bytes(), dl(o)), "ack");
        }
    });
}

/// Registered memory has the asked length and carries messages like any buffer.
pub fn region<T: Transport>(make: &dyn Fn() -> T, o: &Options) {
    let ta = make();
    let tb = make();
    let (a, b) = must(connect_pair(&ta, &tb, dl(o)), "setup");
    let mut src = must(ta.register(1 << 16), "register");
    let mut dst = must(tb.register(1 << 16), "register");
    assert_eq!(src.len(), 1 << 16);
    src.copy_from_slice(&pattern(8, 1 << 16));
    let (srcs, dsts): (&[u8], &mut [u8]) = (&src, &mut dst);
    std::thread::scope(|s| {
        s.spawn(move || must(wait::send(&a, 1, srcs, dl(o)), "send from region"));
        must(wait::recv(&b, 1, dsts, dl(o)), "receive into region");
    });
    assert_same(&dst, &src, "region message");
    let empty = must(ta.register(0), "register 0 bytes");
    assert!(empty.is_empty());
}
