//! Conformance of the stream face ([`crate::stream`]): every connection becomes a byte stream
//! that delivers in order, closes cleanly, reports an abort, and (where it has one) carries
//! whole tiny messages in its mailbox.

use super::{assert_same, dl, expect_closed, must, pair, pattern, Options};
use crate::api::{Connection, Transport};
use crate::error::Result;
use crate::stream::{doorbell, Choice, Doorbell, RingNt, Stream, StreamConfig, MAILBOX_BYTES};
use crate::wait::{self, Backoff, Deadline};
use std::time::Duration;

/// Small rings, so every check wraps them many times.
fn config() -> StreamConfig {
    StreamConfig {
        ring_bytes: 16 << 10,
        ..StreamConfig::default()
    }
}

/// [`config`] with every ring write that may take non-temporal stores taking them: the
/// writes of at least [`crate::stream::NT_MIN_WRITE`] bytes, and large messages through the
/// ring (`stream::nt`; on fabrics whose streams have no ring of their own, the proxy's ring).
pub(super) fn nt_config() -> StreamConfig {
    StreamConfig {
        ring_nt: RingNt::On,
        single_copy_choice: Choice::StreamNt,
        ..config()
    }
}

pub(super) fn streams<T: Transport>(
    make: &dyn Fn() -> T,
    o: &Options,
) -> (Box<dyn Stream>, Box<dyn Stream>)
where
    T::Connection: 'static,
{
    streams_with(make, o, &config())
}

pub(super) fn streams_with<T: Transport>(
    make: &dyn Fn() -> T,
    o: &Options,
    config: &StreamConfig,
) -> (Box<dyn Stream>, Box<dyn Stream>)
where
    T::Connection: 'static,
{
    let (a, b) = pair(make, o);
    // A message before the conversion is allowed (a greeting, as a communicator sends).
    must(wait::send(&a, 9, b"hello", dl(o)), "greeting");
    let mut buf = [0u8; 8];
    assert_eq!(must(wait::recv(&b, 9, &mut buf, dl(o)), "greeting"), 5);
    let name = make().name();
    let sa = must(a.into_stream(name, config), "into_stream (side a)");
    let sb = must(b.into_stream(name, config), "into_stream (side b)");
    (sa, sb)
}

/// Writes all of `data` in pieces of varying size, interleaved with reading `want` bytes;
/// with `toggle`, the writer switches between non-temporal and ordinary stores every few
/// writes ([`Stream::set_ring_nt`], as the collectives do per call).
fn exchange(
    s: &mut dyn Stream,
    data: &[u8],
    want: usize,
    deadline: Deadline,
    toggle: bool,
) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::with_capacity(want);
    let mut backoff = Backoff::new();
    let mut step = 1usize;
    while sent < data.len() || got.len() < want {
        let mut moved = false;
        if sent < data.len() {
            step = (step * 7 + 13) % 40_000 + 1;
            let end = (sent + step).min(data.len());
            if toggle {
                s.set_ring_nt(if step % 3 == 0 {
                    RingNt::On
                } else {
                    RingNt::Call
                });
            }
            let n = must(s.write(&data[sent..end]), "stream write");
            sent += n;
            moved |= n > 0;
        }
        if got.len() < want {
            let v = must(s.peek(), "stream peek");
            let n = v.len().min(want - got.len()).min(step / 3 + 1);
            got.extend_from_slice(&v[..n]);
            s.consume(n);
            moved |= n > 0;
        }
        if moved {
            backoff.reset();
        } else {
            assert!(
                !deadline.expired(),
                "stream stalled: sent {sent} of {}, got {} of {want}",
                data.len(),
                got.len()
            );
            must(s.check_alive(), "check_alive of a live peer");
            backoff.snooze();
        }
    }
    got
}

/// Both ends write 3 MiB at once in odd-sized pieces through 16 KiB rings and read the
/// other's bytes back in order, exactly.
pub fn stream_roundtrip<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    roundtrip(streams(make, o), o, false);
}

/// [`stream_roundtrip`] with non-temporal stores forced (`OXCCL_RING_NT=on`): the pieces of
/// at least 4 KiB take them, from every misaligned start, the others ordinary stores; then
/// with each writer choosing its stores (`OXCCL_RING_NT=auto`); then with the writers told
/// which stores to take every few writes (`OXCCL_RING_NT=call` and `Stream::set_ring_nt`).
pub fn stream_roundtrip_nt<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    roundtrip(streams_with(make, o, &nt_config()), o, false);
    let auto = StreamConfig {
        ring_nt: RingNt::Auto,
        ..config()
    };
    roundtrip(streams_with(make, o, &auto), o, false);
    let call = StreamConfig {
        ring_nt: RingNt::Call,
        ..config()
    };
    roundtrip(streams_with(make, o, &call), o, true);
}

fn roundtrip((mut a, mut b): (Box<dyn Stream>, Box<dyn Stream>), o: &Options, toggle: bool) {
    let n = 3 << 20;
    let (da, db) = (pattern(21, n), pattern(22, n));
    std::thread::scope(|s| {
        let (da, db) = (&da, &db);
        let t = s.spawn(move || {
            let got = exchange(&mut *b, db, n, dl(o), toggle);
            (b, got)
        });
        let got_a = exchange(&mut *a, da, n, dl(o), toggle);
        let (_b, got_b) = t.join().expect("side b");
        assert_same(&got_a, db, "bytes a read from b");
        assert_same(&got_b, da, "bytes b read from a");
    });
}

/// Peeks until at least `min` bytes show (the deadline bounds the wait); returns the view.
fn peek_at_least<'s>(
    s: &'s mut dyn Stream,
    min: usize,
    deadline: Deadline,
    what: &str,
) -> &'s [u8] {
    let mut backoff = Backoff::new();
    loop {
        let shown = must(s.peek(), what).len();
        if shown >= min {
            return must(s.peek(), what);
        }
        assert!(
            !deadline.expired(),
            "{what}: the view stays at {shown} bytes, {min} were written"
        );
        backoff.snooze();
    }
}

/// A reader that consumes only part of a view (a reduction takes whole 8-byte elements and
/// leaves half of one) still sees the bytes written after it: a stale view hung reduces.
pub fn stream_partial_consume<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = streams(make, o);
    let data = pattern(23, 16);
    assert_eq!(must(a.write(&data[..12]), "stream write"), 12);
    assert_same(
        &peek_at_least(&mut *b, 12, dl(o), "first 12 bytes")[..12],
        &data[..12],
        "first 12 bytes",
    );
    b.consume(8);
    assert_eq!(must(a.write(&data[12..]), "stream write"), 4);
    assert_same(
        &peek_at_least(&mut *b, 8, dl(o), "the element completed later")[..8],
        &data[8..],
        "the element completed later",
    );
    b.consume(8);
}

/// Reads until `want` bytes came, then expects the closed peer's error, within the deadline.
fn read_then_closed(s: &mut dyn Stream, want: &[u8], deadline: Deadline, what: &str) {
    let mut got = Vec::new();
    let mut backoff = Backoff::new();
    let end: Result<usize> = loop {
        match s.peek() {
            Ok([]) => {
                assert!(
                    !deadline.expired(),
                    "{what}: no error after the peer closed"
                );
                backoff.snooze();
            }
            Ok(v) => {
                let n = v.len();
                got.extend_from_slice(v);
                s.consume(n);
            }
            Err(e) => break Err(e),
        }
    };
    assert_same(
        &got,
        want,
        &format!("{what}: bytes written before the close"),
    );
    expect_closed(end, what);
}

/// A peer that writes and drops its end: the bytes arrive, then reads fail with `PeerClosed`.
pub fn stream_close<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = streams(make, o);
    let data = pattern(23, 100_000);
    let deadline = dl(o);
    std::thread::scope(|s| {
        let data = &data;
        s.spawn(move || {
            let mut sent = 0;
            while sent < data.len() {
                sent += must(a.write(&data[sent..]), "write before close");
                assert!(!deadline.expired(), "write before close stalled");
            }
            a.close();
            drop(a);
        });
        read_then_closed(&mut *b, data, deadline, "read after the peer closed");
    });
}

/// A peer that aborts: the other end's reads (or its liveness check) fail, never hang.
pub fn stream_abort<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = streams(make, o);
    a.abort();
    let deadline = dl(o);
    let mut backoff = Backoff::new();
    loop {
        match b.peek() {
            Ok([]) => {}
            Ok(v) => panic!("read {} bytes nobody wrote", v.len()),
            Err(e) => {
                expect_closed(Err(e), "read after the peer aborted");
                break;
            }
        }
        if let Err(e) = b.check_alive() {
            expect_closed(Err(e), "liveness check after the peer aborted");
            break;
        }
        assert!(!deadline.expired(), "no error after the peer aborted");
        backoff.snooze();
    }
    drop(a);
}

/// Where the stream has a mailbox: tiny messages alternate between its slots without
/// disturbing the stream; oversized payloads are an error.
pub fn stream_mailbox<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = streams(make, o);
    if a.mailbox().is_none() {
        assert!(
            b.mailbox().is_none(),
            "one end of a connection has a mailbox and the other not"
        );
        return;
    }
    let deadline = dl(o);
    let mut out = [0u8; MAILBOX_BYTES + 12];
    for seq in 0..6u64 {
        let data = pattern(30 + seq, 1 + (seq as usize * 61) % MAILBOX_BYTES);
        let mut mb = a.mailbox().expect("mailbox");
        must(mb.post(seq, 7 + seq as u32, !seq, &data), "mailbox post");
        let mb = b.mailbox().expect("mailbox");
        let mut backoff = Backoff::new();
        while !mb.poll(seq, &mut out, 12 + data.len()) {
            assert!(!deadline.expired(), "mailbox message {seq} never came");
            backoff.snooze();
        }
        assert_eq!(out[..4], (7 + seq as u32).to_le_bytes(), "fingerprint");
        assert_eq!(out[4..12], (!seq).to_le_bytes(), "extra word");
        assert_same(&out[12..12 + data.len()], &data, "mailbox payload");
        assert!(!mb.posted(seq + 1), "a message that was not posted");
    }
    let mut mb = a.mailbox().expect("mailbox");
    assert!(mb.post(9, 0, 0, &[0; MAILBOX_BYTES + 1]).is_err());
    assert!(!must(
        b.mailbox().expect("mailbox").stream_pending(),
        "stream_pending"
    ));
    let _ = must(a.write(&[1, 2, 3]), "stream write");
    let mut backoff = Backoff::new();
    while !must(
        b.mailbox().expect("mailbox").stream_pending(),
        "stream_pending",
    ) {
        assert!(
            !deadline.expired(),
            "stream bytes next to the mailbox never came"
        );
        backoff.snooze();
    }
}

/// Where the stream has a doorbell: a waiter parked on it is woken by the peer's write, by the
/// peer's consume (space for the waiter's writes), by a mailbox post and by an abort, and a
/// park with nothing coming ends at its timeout.
pub fn stream_doorbell<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = streams(make, o);
    let (Some(bell_a), Some(bell_b)) = (a.doorbell(), b.doorbell()) else {
        assert!(
            a.doorbell().is_none() && b.doorbell().is_none(),
            "one end of a connection has a doorbell and the other not"
        );
        return;
    };
    // Nothing comes: the park ends at its timeout, and nothing arrived.
    let armed = [bell_b.arm()];
    let t0 = std::time::Instant::now();
    doorbell::sleep(&armed, Duration::from_millis(30));
    assert!(
        t0.elapsed() >= Duration::from_millis(20),
        "woke with nothing rung"
    );
    assert!(!armed[0].rang() && must(b.peek(), "peek").is_empty());
    drop(armed);

    // Each wake-up must come from the peer's action, not from the park's timeout.
    let long = o.timeout.max(Duration::from_secs(5));
    let parked = |bell: &Doorbell, ready: &mut dyn FnMut() -> bool, what: &str| {
        let t0 = std::time::Instant::now();
        loop {
            let armed = [bell.arm()];
            if ready() {
                return;
            }
            doorbell::sleep(&armed, long);
            assert!(
                t0.elapsed() < long,
                "a parked waiter was not woken by {what}"
            );
        }
    };
    std::thread::scope(|s| {
        // A write wakes the reader.
        let writer = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            must(a.write(b"wake"), "write");
            a
        });
        parked(
            &bell_b,
            &mut || !must(b.peek(), "peek").is_empty(),
            "a write",
        );
        let mut a = writer.join().expect("writer");
        assert_eq!(must(b.peek(), "peek"), b"wake");
        b.consume(4);

        // A consume wakes a writer that found the ring full.
        let fill = vec![7u8; 4096];
        while must(a.write(&fill), "fill") > 0 {}
        let reader = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            let n = must(b.peek(), "peek").len();
            b.consume(n);
            b
        });
        parked(
            &bell_a,
            &mut || must(a.write(&[1]), "write") > 0,
            "a consume",
        );
        let mut b = reader.join().expect("reader");

        // A mailbox post and an abort wake the reader too.
        if a.mailbox().is_some() {
            let poster = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                let mut mb = a.mailbox().expect("mailbox");
                must(mb.post(0, 1, 2, b"tiny"), "post");
                a
            });
            let mut ready = || b.mailbox().expect("mailbox").posted(0);
            parked(&bell_b, &mut ready, "a mailbox post");
            a = poster.join().expect("poster");
        }
        let drained = |b: &mut Box<dyn Stream>| loop {
            match b.peek() {
                Ok([]) => return false,
                Ok(v) => {
                    let n = v.len();
                    b.consume(n);
                }
                Err(_) => return true,
            }
        };
        drained(&mut b);
        let aborter = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            a.abort();
            a
        });
        parked(&bell_b, &mut || drained(&mut b), "an abort");
        drop(aborter.join().expect("aborter"));
    });
}
