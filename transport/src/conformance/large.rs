//! Conformance of the stream face's single-copy path ([`crate::stream::Stream::offer`]): large
//! messages around the threshold, odd lengths, ones mixed with small ones, the inline
//! fallback, and a peer that gives up while the receiver copies out of its memory. Streams
//! without the path ([`crate::stream::Stream::single_copy_min`] is `None`) pass trivially.

use super::{assert_same, dl, must, pattern, Options};
use crate::api::Transport;
use crate::error::Error;
use crate::stream::{Arrival, Offer, Offering, Stream};
use crate::wait::{Backoff, Deadline};

/// The receiver's piece: odd, so pieces end anywhere in the message.
const PIECE: usize = 100_003;

/// Sends one message of `data.len()` bytes the way the collectives do: the large path from
/// the threshold on (with `whole` false the bytes must follow in the stream), the plain
/// stream below it. Returns once the bytes are the peer's (taken or written).
pub(crate) fn send_message(s: &mut dyn Stream, data: &[u8], whole: bool, deadline: Deadline) {
    let mut backoff = Backoff::new();
    let large = s.single_copy_min().is_some_and(|m| data.len() >= m);
    let mut inline = !large;
    if large {
        // SAFETY: `data` is borrowed for this whole function, which returns only after the
        // peer took the bytes (or panics, which the test reports).
        match unsafe { offer_until(s, data, whole, deadline) } {
            Offer::Pull(ticket) => {
                assert!(
                    whole,
                    "a message whose bytes are not all there was offered for a pull"
                );
                while !must(s.taken(ticket), "taken") {
                    assert!(
                        !deadline.expired(),
                        "the peer never pulled {} bytes",
                        data.len()
                    );
                    backoff.snooze();
                }
                return;
            }
            Offer::Inline => inline = true,
        }
    }
    assert!(inline);
    let mut sent = 0;
    while sent < data.len() {
        let n = must(s.write(&data[sent..]), "stream write");
        sent += n;
        if n == 0 {
            assert!(!deadline.expired(), "the peer stopped reading");
            backoff.snooze();
        }
    }
}

/// Offers `data` as a large message until its header fits.
///
/// # Safety
/// As [`Stream::offer`]: `data` stays unchanged until taken, or the stream is aborted or
/// dropped.
unsafe fn offer_until(s: &mut dyn Stream, data: &[u8], whole: bool, deadline: Deadline) -> Offer {
    let how = Offering {
        whole,
        alongside: 0,
    };
    let mut backoff = Backoff::new();
    loop {
        // SAFETY: the caller's contract.
        let offered = unsafe { s.offer(data.as_ptr(), data.len(), how) };
        if let Some(x) = must(offered, "offer") {
            return x;
        }
        assert!(!deadline.expired(), "no room for a large message's header");
        backoff.snooze();
    }
}

/// Receives one message of `len` bytes (see [`send_message`]).
pub(crate) fn recv_message(s: &mut dyn Stream, len: usize, deadline: Deadline) -> Vec<u8> {
    let mut backoff = Backoff::new();
    let mut out = vec![0u8; len];
    if s.single_copy_min().is_some_and(|m| len >= m) {
        let arrival = loop {
            if let Some(a) = must(s.arrival(len), "arrival") {
                break a;
            }
            assert!(!deadline.expired(), "no large message arrived");
            backoff.snooze();
        };
        if let Arrival::Pull(p) = arrival {
            assert_eq!(p.len, len);
            for pos in (0..len).step_by(PIECE) {
                let end = (pos + PIECE).min(len);
                must(s.pull(&p, pos, &mut out[pos..end]), "pull");
            }
            s.pulled();
            return out;
        }
    }
    let mut got = 0;
    while got < len {
        let v = must(s.peek(), "stream peek");
        let n = v.len().min(len - got);
        out[got..got + n].copy_from_slice(&v[..n]);
        s.consume(n);
        got += n;
        if n == 0 {
            assert!(!deadline.expired(), "the peer stopped writing");
            backoff.snooze();
        }
    }
    out
}

/// Messages from just below the threshold to several pieces over it, odd lengths, small ones
/// between them and one whose bytes must follow in the stream, both ways at once: every byte
/// arrives, in order.
pub fn stream_single_copy<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    single_copy(super::stream::streams(make, o), o);
}

/// [`stream_single_copy`] with the sender's choice forced to the ring written with
/// non-temporal stores (`OXCCL_SINGLE_COPY_CHOICE=stream-nt`, `OXCCL_RING_NT=on`).
pub fn stream_single_copy_nt<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let config = super::stream::nt_config();
    single_copy(super::stream::streams_with(make, o, &config), o);
}

fn single_copy((mut a, mut b): (Box<dyn Stream>, Box<dyn Stream>), o: &Options) {
    let Some(min) = a.single_copy_min() else {
        return;
    };
    assert_eq!(
        b.single_copy_min(),
        Some(min),
        "the two ends disagree on the threshold"
    );
    // (length, whole): a message not wholly there yet goes inline.
    let plan: Vec<(usize, bool)> = vec![
        (min - 1, true),
        (min, true),
        (7, true),
        (min + 1, true),
        (min + 7, false),
        (3 * min + 13, true),
        (1000, true),
        (5 * PIECE + 3, true),
    ];
    let plan: Vec<(usize, bool)> = plan.into_iter().filter(|&(n, _)| n > 0).collect();
    std::thread::scope(|s| {
        let plan = &plan;
        let t = s.spawn(move || {
            for (i, &(n, whole)) in plan.iter().enumerate() {
                let got = recv_message(&mut *b, n, dl(o));
                assert_same(&got, &pattern(40 + i as u64, n), "a message a sent to b");
                send_message(&mut *b, &pattern(60 + i as u64, n), whole, dl(o));
            }
            b
        });
        for (i, &(n, whole)) in plan.iter().enumerate() {
            send_message(&mut *a, &pattern(40 + i as u64, n), whole, dl(o));
            let got = recv_message(&mut *a, n, dl(o));
            assert_same(&got, &pattern(60 + i as u64, n), "a message b sent to a");
        }
        drop(t.join().expect("side b"));
    });
}

/// A sender that gives up (aborts and frees the buffer) while its peer copies out of it: the
/// peer's next pull fails with [`Error::PeerClosed`] (no crash, no stale bytes accepted), and
/// a receiver that gives up fails the sender's wait for `taken` the same way.
pub fn stream_single_copy_abort<T: Transport>(make: &dyn Fn() -> T, o: &Options)
where
    T::Connection: 'static,
{
    let (mut a, mut b) = super::stream::streams(make, o);
    let Some(min) = a.single_copy_min() else {
        return;
    };
    let n = 4 * min + 5;
    let data = pattern(80, n);
    let mut backoff = Backoff::new();
    // SAFETY: `data` outlives the offer: it is dropped only after `a` aborted (which waits for
    // a copy in progress) and was dropped.
    let offer = unsafe { offer_until(&mut *a, &data, true, dl(o)) };
    let arrival = loop {
        if let Some(x) = must(b.arrival(n), "arrival") {
            break x;
        }
        assert!(!dl(o).expired(), "no large message arrived");
        backoff.snooze();
    };
    let (Offer::Pull(ticket), Arrival::Pull(p)) = (offer, arrival) else {
        // The peer cannot read our memory here (ptrace rules): nothing to give up on.
        return;
    };
    // Half the message when it is smaller than a piece (a small threshold).
    let piece = PIECE.min(n / 2);
    let mut first = vec![0u8; piece];
    must(b.pull(&p, 0, &mut first), "the first piece");
    assert_same(&first, &data[..piece], "the first piece");
    assert!(
        !must(a.taken(ticket), "taken"),
        "taken before it was pulled"
    );
    a.abort();
    drop(a);
    drop(data);
    match b.pull(&p, piece, &mut first) {
        Err(e @ Error::PeerClosed { .. }) => assert!(e.is_fatal()),
        other => panic!("a pull from a sender that gave up: expected PeerClosed, got {other:?}"),
    }

    // The other way round: the receiver gives up before pulling.
    let (mut a, b) = super::stream::streams(make, o);
    let data = pattern(81, n);
    // SAFETY: as above; `data` lives until the end of the function.
    let offer = unsafe { offer_until(&mut *a, &data, true, dl(o)) };
    if let Offer::Pull(ticket) = offer {
        drop(b);
        match a.taken(ticket) {
            Err(Error::PeerClosed { .. }) => {}
            other => panic!("a sender whose receiver left: expected PeerClosed, got {other:?}"),
        }
    }
}
