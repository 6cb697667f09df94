//! The tests on the stream face (`Connection::into_stream`): the path the collectives take,
//! shm natively on its connection's rings, tcp through the transport's proxy. A message is
//! `bytes` written into the stream and read back out of it, large ones through the single-copy
//! path (`OXCCL_SINGLE_COPY_MIN`) as the collectives move them.

use super::{bandwidth, bibw, latency, schedule, Role, Row, STEP};
use anyhow::bail;
use oxccl_transport::stream::{Arrival, Offer, Offering, PULL_PIECE};
use oxccl_transport::wait::Deadline;
use oxccl_transport::{Connection, Stream, StreamConfig};

use std::time::Instant;

/// What the tests run on: the message face (tagged isend/irecv) or the stream face.
pub(super) enum Face<'a, C> {
    Message(&'a C),
    Stream(&'a mut dyn Stream),
}

/// One side's tests on the face `face` of `c`.
pub(super) fn run_face<C: Connection + 'static>(
    a: &super::Args,
    name: &'static str,
    c: C,
    role: Role,
    out: &mut dyn FnMut(Row),
) -> anyhow::Result<()> {
    match a.face() {
        "message" => schedule(a, name, &mut Face::Message(&c), role, out),
        "stream" => {
            let mut s = c.into_stream(name, &StreamConfig::from_env()?)?;
            schedule(a, name, &mut Face::<C>::Stream(&mut *s), role, out)
        }
        other => bail!("unknown face {other:?} (message, stream)"),
    }
}

impl<C: Connection> Face<'_, C> {
    pub(super) fn latency(
        &mut self,
        role: Role,
        buf: &mut [u8],
        iters: usize,
        warm: usize,
    ) -> anyhow::Result<f64> {
        match self {
            Face::Message(c) => latency(*c, role, buf, iters, warm),
            Face::Stream(s) => stream_latency(*s, role, buf, iters, warm),
        }
    }

    pub(super) fn bandwidth(
        &mut self,
        role: Role,
        buf: &mut [u8],
        win: usize,
        iters: usize,
        warm: usize,
    ) -> anyhow::Result<f64> {
        match self {
            Face::Message(c) => bandwidth(*c, role, buf, win, iters, warm),
            Face::Stream(s) => stream_bandwidth(*s, role, buf, win, iters, warm),
        }
    }

    pub(super) fn bibw(
        &mut self,
        sbuf: &[u8],
        rbuf: &mut [u8],
        win: usize,
        iters: usize,
        warm: usize,
    ) -> anyhow::Result<f64> {
        match self {
            Face::Message(c) => bibw(*c, sbuf, rbuf, win, iters, warm),
            // A stream is one ordered byte pipe per direction; both sides writing a window
            // before reading would need the ring to hold it, so bibw is a message-face test.
            Face::Stream(_) => bail!("bibw runs on the message face only (--face message)"),
        }
    }
}

/// Sends `data` as one message and waits until the peer has it (a blocking send).
fn stream_write(s: &mut dyn Stream, data: &[u8], dl: Deadline) -> anyhow::Result<()> {
    // SAFETY: `data` stays borrowed, unchanged, until the wait for its ticket below returns
    // (or an error ends the benchmark and drops the stream, which waits for a copy in
    // progress).
    match unsafe { stream_post(s, data, dl) }? {
        Some(ticket) => wait_taken(s, ticket, dl),
        None => Ok(()),
    }
}

/// How the stream tests wait for their peer: spin, then yield, never sleep, as osu_bw's MPI
/// ranks poll. `wait::Backoff` sleeps up to 1 ms once idle a while: a sender blocked behind a
/// full ring while the receiver pulls the offers before it then slept through the time the
/// receiver drained its ring, and a ring message measured half its speed (the collectives'
/// engine sleeps on the doorbell instead, woken by every consume).
#[derive(Default)]
struct Backoff {
    polls: u32,
}

impl Backoff {
    fn snooze(&mut self) {
        self.polls = self.polls.saturating_add(1);
        if self.polls < 256 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }

    fn reset(&mut self) {
        self.polls = 0;
    }
}

/// Waits until the peer has copied every pull offer up to `ticket` (they are taken in order).
fn wait_taken(s: &mut dyn Stream, ticket: u64, dl: Deadline) -> anyhow::Result<()> {
    let mut backoff = Backoff::default();
    while !s.taken(ticket)? {
        if dl.expired() {
            bail!("the stream peer stopped pulling");
        }
        backoff.snooze();
    }
    Ok(())
}

/// Starts sending `data` as one message the way the collectives do, without waiting for the
/// peer to take it (a non-blocking send): from the stream's single-copy threshold on, a
/// header the peer pulls the bytes through (`Some(ticket)`: `data` must stay as it is until
/// [`wait_taken`] for that ticket returns), or, where the peer cannot read our memory, a
/// header and the bytes; below the threshold the bytes (`None`: done with `data`).
///
/// # Safety
/// When this returns `Some(ticket)`, `data` stays valid and unchanged until the peer took
/// the ticket or the stream is dropped.
unsafe fn stream_post(
    s: &mut dyn Stream,
    data: &[u8],
    dl: Deadline,
) -> anyhow::Result<Option<u64>> {
    let mut backoff = Backoff::default();
    if s.single_copy_min().is_some_and(|m| data.len() >= m) {
        loop {
            // SAFETY: the caller keeps `data` as it is until the ticket is taken.
            match unsafe { s.offer(data.as_ptr(), data.len(), Offering::WHOLE) }? {
                Some(Offer::Pull(ticket)) => return Ok(Some(ticket)),
                Some(Offer::Inline) => break,
                None => {
                    if dl.expired() {
                        bail!("the stream peer stopped reading");
                    }
                    backoff.snooze();
                }
            }
        }
    }
    let mut sent = 0;
    while sent < data.len() {
        let n = s.write(&data[sent..])?;
        sent += n;
        if n > 0 {
            backoff.reset();
        } else {
            if dl.expired() {
                bail!("the stream peer stopped reading");
            }
            backoff.snooze();
        }
    }
    Ok(None)
}

/// Reads exactly `buf.len()` bytes from the stream into `buf` (what a receive costs; a
/// collective reduces out of the view instead, at the same single pass over the bytes).
fn stream_read(s: &mut dyn Stream, buf: &mut [u8], dl: Deadline) -> anyhow::Result<()> {
    let mut got = 0;
    let mut backoff = Backoff::default();
    if s.single_copy_min().is_some_and(|m| buf.len() >= m) {
        let arrival = loop {
            if let Some(a) = s.arrival(buf.len())? {
                break a;
            }
            if dl.expired() {
                bail!("the stream peer stopped writing");
            }
            backoff.snooze();
        };
        if let Arrival::Pull(p) = arrival {
            // In pieces, as the collectives' receives pull.
            for (k, piece) in buf.chunks_mut(PULL_PIECE).enumerate() {
                s.pull(&p, k * PULL_PIECE, piece)?;
            }
            s.pulled();
            return Ok(());
        }
    }
    while got < buf.len() {
        let view = s.peek()?;
        let n = view.len().min(buf.len() - got);
        buf[got..got + n].copy_from_slice(&view[..n]);
        s.consume(n);
        got += n;
        if n > 0 {
            backoff.reset();
        } else {
            if dl.expired() {
                bail!("the stream peer stopped writing");
            }
            backoff.snooze();
        }
    }
    Ok(())
}

/// The latency test on the stream face.
fn stream_latency(
    s: &mut dyn Stream,
    role: Role,
    buf: &mut [u8],
    iters: usize,
    warm: usize,
) -> anyhow::Result<f64> {
    let dl = Deadline::after(STEP);
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        if role == Role::Leader {
            stream_write(s, buf, dl)?;
            stream_read(s, buf, dl)?;
        } else {
            stream_read(s, buf, dl)?;
            stream_write(s, buf, dl)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The bandwidth test on the stream face: a window of `win` messages, then an ack, as
/// osu_bw and the Open MPI baseline (`mpi_pingpong.c`) measure: all `win` sends are posted
/// (MPI_Isend; here the single-copy offers, each the same buffer) before the sender waits
/// for them (MPI_Waitall; here the last ticket, since the peer pulls in order), and the
/// receiver takes them one after the other. Messages below the single-copy threshold go
/// through the ring, which the sender fills as the receiver drains it.
fn stream_bandwidth(
    s: &mut dyn Stream,
    role: Role,
    buf: &mut [u8],
    win: usize,
    iters: usize,
    warm: usize,
) -> anyhow::Result<f64> {
    let mut ack = [0u8; 4];
    let mut t0 = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t0 = Instant::now();
        }
        let dl = Deadline::after(STEP);
        if role == Role::Leader {
            let mut last = None;
            for _ in 0..win {
                // SAFETY: `buf` is not written before the wait for the last ticket below
                // (or an error, which drops the stream).
                last = unsafe { stream_post(s, buf, dl) }?.or(last);
            }
            if let Some(ticket) = last {
                wait_taken(s, ticket, dl)?;
            }
            stream_read(s, &mut ack, dl)?;
        } else {
            for _ in 0..win {
                stream_read(s, buf, dl)?;
            }
            stream_write(s, &ack, dl)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}
