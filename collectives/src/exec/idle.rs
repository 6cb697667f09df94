//! How the engine waits when a pass over its links moved nothing: spin, then yield the core,
//! then sleep in the kernel on the links' doorbells until a peer writes, frees space, posts a
//! tiny message or gives up.
//!
//! Spinning keeps the small-message latency (a peer that is running answers within a
//! microsecond or two); yielding lets another rank of an oversubscribed host have the core;
//! parking stops an idle rank from taking cycles from the training process and from the other
//! ranks at all (Gloo's ranks sleep in `recv()` the same way). Parking needs a doorbell on every
//! link waited on (`shm`, `loopback`); with a proxied fabric among them, long waits fall back to
//! short timed sleeps.
//!
//! Parking takes two idle rounds, with the caller's progress pass between them as the re-check
//! that makes it safe: the first round arms the doorbells (counts this rank as their sleeper),
//! the pass looks at the links once more, and the second round sleeps unless a bell rang since
//! it was armed. Each sleep lasts at most [`PARK_MAX`] (or what is left before the deadline), so
//! the abort flag, the deadline and the peers' liveness are checked as before.

use super::engine::Engine;
use crate::error::Error;
use crate::link::Link;
use oxccl_transport::stream::doorbell::{self, Armed};
use oxccl_transport::wait::PARK_MAX;
use std::time::{Duration, Instant};

/// How often a parked waiter checks that the peers it waits on are alive.
const LIVENESS_EVERY: Duration = Duration::from_millis(50);
/// Links without a doorbell: past this much idleness, each idle round sleeps [`NAP`].
const NAP_AFTER: Duration = Duration::from_millis(5);
const NAP: Duration = Duration::from_micros(50);

/// Bookkeeping of one wait.
pub(crate) struct Waiter {
    idle: u32,
    progressed_since_check: bool,
    last_progress: Option<Instant>,
    /// Past the yield budget with doorbells on every link: park from now on.
    parking: bool,
    /// The doorbells armed by the last idle round (to sleep on in the next one).
    armed: Vec<Armed>,
    last_liveness: Option<Instant>,
    /// A liveness check found a peer gone: the next check fails unless a pass progressed in
    /// between (what the peer finished before it exited, such as the end of a pull from our
    /// memory, is seen by a pass, not by the check).
    peer_gone: bool,
}

impl Waiter {
    pub fn new() -> Self {
        // `last_progress` is only read after a check has set it (progressed_since_check
        // starts true), so a call that never waits long reads no clock.
        Self {
            idle: 0,
            progressed_since_check: true,
            last_progress: None,
            parking: false,
            armed: Vec::new(),
            last_liveness: None,
            peer_gone: false,
        }
    }

    #[inline]
    pub fn progress(&mut self) {
        self.idle = 0;
        self.progressed_since_check = true;
        self.peer_gone = false;
        if self.parking {
            self.parking = false;
            self.armed.clear();
        }
    }

    /// Idle rounds since the last progress.
    pub fn idle_rounds(&self) -> u32 {
        self.idle
    }
}

impl Engine {
    /// One idle round: spin, then yield, then park on the doorbells (or nap, without them);
    /// every so often check the abort flag, the peers' liveness and the deadline. `blame`
    /// names the peer a timeout is about; without it (the scheduled path) only the `peers`
    /// with queued jobs are checked for liveness.
    pub(super) fn idle(
        &mut self,
        w: &mut Waiter,
        peers: &[usize],
        blame: Option<usize>,
    ) -> Result<(), Error> {
        w.idle = w.idle.wrapping_add(1);
        if w.parking {
            return self.park(w, peers, blame);
        }
        let policy = self.idle_policy;
        if w.idle < policy.spin {
            std::hint::spin_loop();
            return Ok(());
        }
        // Without a yield budget (an oversubscribed host), the first round past the spin arms
        // the doorbells: a yield would hand the core to a rank that computes only to take it
        // back. Without doorbells to arm, the rounds after it yield as below.
        let park_now = policy.yield_for.is_zero() && w.idle == policy.spin.max(1);
        if !park_now {
            std::thread::yield_now();
            if w.idle % 64 != 0 {
                return Ok(());
            }
        }
        let now = Instant::now();
        let liveness = w.peer_gone || w.idle % 1024 == 0;
        let waited = self.check(w, peers, blame, now, liveness)?;
        if waited >= policy.yield_for && self.arm(w, peers) {
            w.parking = true;
        } else if waited > NAP_AFTER {
            // Long waits (a slow peer, an oversubscribed machine) should not burn a core.
            std::thread::sleep(NAP);
        }
        Ok(())
    }

    /// A parked round: sleep on the bells armed by the last round (the caller's pass since then
    /// found nothing), arm again for the next round, and run the checks.
    fn park(&mut self, w: &mut Waiter, peers: &[usize], blame: Option<usize>) -> Result<(), Error> {
        if !w.armed.is_empty() {
            let left = w
                .last_progress
                .map_or(PARK_MAX, |t| self.timeout.saturating_sub(t.elapsed()));
            doorbell::sleep(&w.armed, left.min(PARK_MAX));
            w.armed.clear();
        }
        // Armed before the checks, so that an abort flag set after them rings the bell.
        if !self.arm(w, peers) {
            // A peer without a doorbell joined the wait: back to yielding.
            w.parking = false;
        }
        let now = Instant::now();
        let liveness = w.peer_gone
            || w.last_liveness
                .is_none_or(|t| now.duration_since(t) >= LIVENESS_EVERY);
        if liveness {
            w.last_liveness = Some(now);
        }
        self.check(w, peers, blame, now, liveness)?;
        Ok(())
    }

    /// Arms the doorbell of every link in `peers`; false (nothing armed) unless all have one.
    fn arm(&mut self, w: &mut Waiter, peers: &[usize]) -> bool {
        w.armed.clear();
        if peers.len() > doorbell::MAX_BELLS {
            return false;
        }
        for &peer in peers {
            match self.links[peer].as_ref().and_then(Link::doorbell) {
                Some(bell) => w.armed.push(bell.arm()),
                None => {
                    w.armed.clear();
                    return false;
                }
            }
        }
        !w.armed.is_empty()
    }

    /// The doorbells this rank sleeps on, one per link that has one: another thread rings them
    /// to have a parked wait look up at once (an abort, a call that wants the engine).
    pub(crate) fn doorbells(&self) -> Vec<oxccl_transport::stream::Doorbell> {
        self.links
            .iter()
            .flatten()
            .filter_map(Link::doorbell)
            .collect()
    }

    /// The abort flag, the liveness of the peers (when `liveness`) and the deadline; returns
    /// how long the wait has gone without progress.
    fn check(
        &mut self,
        w: &mut Waiter,
        peers: &[usize],
        blame: Option<usize>,
        now: Instant,
        liveness: bool,
    ) -> Result<Duration, Error> {
        if w.progressed_since_check || w.last_progress.is_none() {
            w.progressed_since_check = false;
            w.last_progress = Some(now);
        }
        let last = w.last_progress.unwrap_or(now);
        if self.abort_flag.load(std::sync::atomic::Ordering::Relaxed) {
            let e = Error::Aborted {
                op: self.op,
                reason: "aborted by the user".into(),
            };
            return Err(self.fail(e));
        }
        if liveness {
            self.check_peers_alive(w, peers, blame)?;
        }
        let waited = now.duration_since(last);
        self.note_long_wait(waited, peers, blame);
        if waited >= self.timeout {
            let e = match blame {
                Some(peer) => Error::Timeout {
                    op: self.op,
                    peer,
                    waiting: "for data from it",
                    after: waited,
                },
                None => self.timeout_error(peers, waited),
            };
            return Err(self.fail(e));
        }
        Ok(waited)
    }

    fn check_peers_alive(
        &mut self,
        w: &mut Waiter,
        peers: &[usize],
        blame: Option<usize>,
    ) -> Result<(), Error> {
        for &peer in peers {
            // A peer whose part of this call is done may have exited already (it had all it
            // needed from us): only a peer we still wait on can fail this call.
            if blame.is_none() && !self.has_jobs_for(peer) {
                continue;
            }
            if let Some(Err(source)) = self.links[peer].as_mut().map(Link::check_alive) {
                // What it wrote before it exited may still sit in the stream: read that
                // first (the next pass does), and fail only on an empty stream.
                let unread = self.links[peer]
                    .as_mut()
                    .is_some_and(|l| l.peek().is_ok_and(|v| !v.is_empty()));
                if unread {
                    continue;
                }
                if !w.peer_gone {
                    // One more pass first (parking at once put this check right after the
                    // wake-up that the peer's last signal rang, before the pass that reads it).
                    w.peer_gone = true;
                    return Ok(());
                }
                let e = Error::PeerFailed {
                    op: self.op,
                    peer,
                    source,
                };
                return Err(self.fail(e));
            }
        }
        Ok(())
    }
}
