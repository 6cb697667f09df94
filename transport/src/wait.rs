//! Blocking helpers on top of the non-blocking API, each with a deadline.
//!
//! Waiting spins briefly (a message between two cores arrives in well under a microsecond),
//! then yields the core (ranks may outnumber cores: four ranks on two cores must let each other
//! run), then sleeps in growing steps up to a millisecond, so an idle wait costs little CPU.

use std::time::{Duration, Instant};

use crate::api::{
    Connection, Listener, PendingConnection, Post, RecvView, Request, Setup, Tag, Transport,
};
use crate::error::{Error, Result};

/// Default deadline of every blocking helper when `OXCCL_TIMEOUT` is not set: 60 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The deadline of blocking helpers: `OXCCL_TIMEOUT` (seconds, fractions allowed) or
/// [`DEFAULT_TIMEOUT`]. A value that does not parse is a [`Error::Config`].
pub fn default_timeout() -> Result<Duration> {
    match std::env::var("OXCCL_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(Error::Config {
                var: "OXCCL_TIMEOUT",
                value: v,
                reason: "expected a positive number of seconds".into(),
            }),
        },
    }
}

/// Spin, then yield, then sleep: the waiting policy of every blocking helper.
#[derive(Debug, Clone)]
pub struct Backoff {
    polls: u32,
    started: Option<Instant>,
    spin: Duration,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Spin,
    Yield,
    Sleep(Duration),
}

const YIELD_FOR: Duration = Duration::from_millis(20);
/// Default of `OXCCL_SPIN_US`.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The longest single sleep on a doorbell: a bound on how late a deadline, a dead peer or an
/// abort from another thread is noticed.
pub const PARK_MAX: Duration = Duration::from_millis(1);

/// How long a waiter spins before it starts yielding its core: `OXCCL_SPIN_US` microseconds
/// (default 50; read once). Longer keeps latency low on a busy machine; shorter wastes less
/// when ranks outnumber cores.
pub fn spin_budget() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        std::env::var("OXCCL_SPIN_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_micros)
            .unwrap_or(DEFAULT_SPIN)
    })
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A fresh backoff (starts spinning).
    pub fn new() -> Self {
        Backoff {
            polls: 0,
            started: None,
            spin: spin_budget(),
            phase: Phase::Spin,
        }
    }

    /// A fresh backoff that spins for `spin` (instead of [`spin_budget`]) before it yields.
    pub fn with_spin(spin: Duration) -> Self {
        Backoff {
            spin,
            ..Self::new()
        }
    }

    /// Starts over after progress was made.
    pub fn reset(&mut self) {
        self.polls = 0;
        self.started = None;
        self.phase = Phase::Spin;
    }

    /// Waits a little, longer as the wait goes on.
    pub fn snooze(&mut self) {
        self.polls = self.polls.wrapping_add(1);
        // The clock is read only every 32 polls: it costs about as much as a poll.
        if self.polls % 32 == 0 {
            let now = Instant::now();
            let idle = now - *self.started.get_or_insert(now);
            self.phase = if idle < self.spin {
                Phase::Spin
            } else if idle < self.spin + YIELD_FOR {
                Phase::Yield
            } else {
                // Grow from 50 us to 1 ms over the next ~100 ms of idleness.
                Phase::Sleep(Duration::from_micros(
                    (50 + idle.as_micros() as u64 / 100).min(1000),
                ))
            };
        }
        match self.phase {
            Phase::Spin => std::hint::spin_loop(),
            Phase::Yield => std::thread::yield_now(),
            Phase::Sleep(d) => std::thread::sleep(d),
        }
    }
}

/// A point in time after which blocking helpers give up.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    limit: Duration,
}

impl Deadline {
    /// `limit` from now.
    pub fn after(limit: Duration) -> Self {
        Deadline {
            start: Instant::now(),
            limit,
        }
    }

    /// [`default_timeout`] from now.
    pub fn from_env() -> Result<Self> {
        Ok(Self::after(default_timeout()?))
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        self.start.elapsed() > self.limit
    }

    /// The [`Error::Timeout`] to report.
    pub fn error(&self, transport: &'static str, what: impl Into<String>, peer: &str) -> Error {
        Error::Timeout {
            transport,
            what: what.into(),
            peer: peer.to_string(),
            waited: self.start.elapsed(),
        }
    }
}

/// Tests `req` until it completes, fails or the deadline passes. Returns the byte count.
pub fn wait<R: Request + ?Sized>(
    req: &mut R,
    deadline: Deadline,
    what: &str,
    peer: &str,
) -> Result<usize> {
    wait_for(req, deadline, || what.to_string(), peer)
}

/// [`wait`] with the description built only if it is needed (an error): formatting one per
/// message would cost more than a shared-memory hop.
fn wait_for<R: Request + ?Sized>(
    req: &mut R,
    deadline: Deadline,
    what: impl FnOnce() -> String,
    peer: &str,
) -> Result<usize> {
    let mut backoff = Backoff::new();
    let mut polls = 0u32;
    let mut moved = req.progress();
    loop {
        if let Some(n) = req.test()? {
            return Ok(n);
        }
        // Reading the clock costs about as much as a poll: look at it once in a while.
        polls = polls.wrapping_add(1);
        if polls % 64 == 0 && deadline.expired() {
            return Err(deadline.error("transport", what(), peer));
        }
        let now = req.progress();
        if now != moved {
            // Data is moving: a long transfer is not an idle wait, keep polling hot.
            moved = now;
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

/// Tests every request in turn until all complete; the first error wins. Use this when a rank
/// both sends and receives (sends progress only while tested: waiting on the receive alone
/// can deadlock with a peer doing the same).
pub fn wait_all(
    reqs: &mut [&mut dyn Request],
    deadline: Deadline,
    peer: &str,
) -> Result<Vec<usize>> {
    let mut done: Vec<Option<usize>> = vec![None; reqs.len()];
    let mut backoff = Backoff::new();
    let mut moved = 0usize;
    loop {
        let mut progressed = false;
        let mut now = 0usize;
        for (req, slot) in reqs.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                if let Some(n) = req.test()? {
                    *slot = Some(n);
                    progressed = true;
                }
                now = now.wrapping_add(req.progress());
            }
        }
        if now != moved {
            moved = now;
            progressed = true;
        }
        if done.iter().all(Option::is_some) {
            return Ok(done.into_iter().flatten().collect());
        }
        if deadline.expired() {
            let left = done.iter().filter(|d| d.is_none()).count();
            return Err(deadline.error(
                "transport",
                format!("{left} of {} requests", reqs.len()),
                peer,
            ));
        }
        if progressed {
            backoff.reset();
        } else {
            backoff.snooze();
        }
    }
}

/// Polls a pending connection until it is connected.
pub fn establish<P: PendingConnection>(
    mut pending: P,
    deadline: Deadline,
    peer: &str,
) -> Result<P::Connection> {
    let mut backoff = Backoff::new();
    loop {
        match pending.poll()? {
            Setup::Connected(c) => return Ok(c),
            Setup::Pending(p) => pending = p,
        }
        if deadline.expired() {
            return Err(deadline.error("transport", "connection setup", peer));
        }
        backoff.snooze();
    }
}

/// Waits for one incoming connection and completes its handshake.
pub fn accept<L>(
    listener: &mut L,
    deadline: Deadline,
) -> Result<<L::Pending as PendingConnection>::Connection>
where
    L: Listener,
    L::Pending: PendingConnection,
{
    let mut backoff = Backoff::new();
    loop {
        if let Some(p) = listener.poll_accept()? {
            return establish(p, deadline, &listener.address().to_string());
        }
        if deadline.expired() {
            return Err(deadline.error(
                "transport",
                "an incoming connection",
                &listener.address().to_string(),
            ));
        }
        backoff.snooze();
    }
}

/// Connects `a` to a listener of `b` inside one thread by polling both sides in turn: the
/// way tests and thread-rank communicators build a pair. Returns (a's end, b's end).
pub fn connect_pair<T: Transport>(
    a: &T,
    b: &T,
    deadline: Deadline,
) -> Result<(T::Connection, T::Connection)> {
    let mut listener = b.listen()?;
    let addr = listener.address();
    let mut dialing = Some(a.connect(&addr)?);
    let mut accepting: Option<T::Pending> = None;
    let (mut ca, mut cb) = (None, None);
    let mut backoff = Backoff::new();
    while ca.is_none() || cb.is_none() {
        if let Some(p) = dialing.take() {
            match p.poll()? {
                Setup::Connected(c) => ca = Some(c),
                Setup::Pending(p) => dialing = Some(p),
            }
        }
        if cb.is_none() {
            let p = match accepting.take() {
                Some(p) => Some(p),
                None => listener.poll_accept()?,
            };
            if let Some(p) = p {
                match p.poll()? {
                    Setup::Connected(c) => cb = Some(c),
                    Setup::Pending(p) => accepting = Some(p),
                }
            }
        }
        if deadline.expired() {
            return Err(deadline.error(a.name(), "connection setup", &addr.to_string()));
        }
        backoff.snooze();
    }
    match (ca, cb) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(deadline.error(a.name(), "connection setup", &addr.to_string())),
    }
}

/// Blocking send of one message.
pub fn send<C: Connection>(conn: &C, tag: Tag, buf: &[u8], deadline: Deadline) -> Result<()> {
    let mut backoff = Backoff::new();
    let mut req = loop {
        if let Post::Posted(r) = conn.isend(tag, buf)? {
            break r;
        }
        if deadline.expired() {
            return Err(deadline.error(
                "transport",
                format!("a send slot for tag {tag}"),
                conn.peer(),
            ));
        }
        backoff.snooze();
    };
    wait_for(
        &mut req,
        deadline,
        || format!("send with tag {tag}"),
        conn.peer(),
    )
    .map(|_| ())
}

/// Blocking receive of one message; returns its length.
pub fn recv<C: Connection>(
    conn: &C,
    tag: Tag,
    buf: &mut [u8],
    deadline: Deadline,
) -> Result<usize> {
    let mut backoff = Backoff::new();
    let mut buf = buf;
    let mut req = loop {
        match conn.irecv(tag, buf)? {
            Post::Posted(r) => break r,
            Post::Retry(b) => buf = b,
        }
        if deadline.expired() {
            return Err(deadline.error(
                "transport",
                format!("a receive slot for tag {tag}"),
                conn.peer(),
            ));
        }
        backoff.snooze();
    };
    wait_for(
        &mut req,
        deadline,
        || format!("receive with tag {tag}"),
        conn.peer(),
    )
}

/// Drives a zero-copy receive to completion, handing each chunk to `f(offset, bytes)`.
pub fn drain_view<V: RecvView + ?Sized>(
    view: &mut V,
    deadline: Deadline,
    peer: &str,
    mut f: impl FnMut(usize, &[u8]),
) -> Result<()> {
    let mut backoff = Backoff::new();
    while !view.is_complete() {
        let got = match view.next_chunk()? {
            Some(chunk) => {
                f(chunk.offset(), &chunk);
                true
            }
            None => false,
        };
        if got {
            backoff.reset();
        } else if !view.is_complete() {
            {
                if deadline.expired() {
                    return Err(deadline.error("transport", "a zero-copy receive", peer));
                }
                backoff.snooze();
            }
        }
    }
    Ok(())
}
