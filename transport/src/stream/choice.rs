//! Which path a large message of a native stream takes: through the ring (two copies, the
//! bytes cross between the caches of the two cores) or pulled by the receiver straight out of
//! the sender's memory (one copy, a system call per piece between processes).
//!
//! Neither wins everywhere, and the winner changes while a job runs: on the development
//! machine the ring copies 11-16 GB/s in one state and 2.1-2.4 in another that comes and goes
//! every few minutes, while a pull moves 7-12 GB/s in both (`bench/RESULTS.md`, "adaptive").
//! So the receiver measures every large message it takes, from its header to its last byte,
//! and keeps a moving speed per size class and path in the connection's shared control block
//! (`stream::ring`, `speeds[r]`); the sender reads them when it offers the next message of that
//! class and takes the faster path, trying the other one now and then (at most one message in
//! [`EXPLORE_SHARE`] of the time, and not more often than every [`EXPLORE_EVERY`]) so that a
//! change of state is noticed. Both paths already start with the same header, which says
//! which one follows, so the receiver needs no agreement beyond the threshold.
//!
//! `OXCCL_SINGLE_COPY_CHOICE` overrides it: `auto` (the default, as above), `pull` (always pull
//! from the threshold on: the rule before the choice existed) or `stream` (always the ring).

use std::time::{Duration, Instant};

use super::ring::SIZE_CLASSES;
use crate::error::{Error, Result};

/// Least time between two tries of the slower path for one size class.
pub(crate) const EXPLORE_EVERY: Duration = Duration::from_millis(20);
/// A try of the slower path comes at most once per this many messages' worth of time at the
/// faster path's speed (so a try of a path 5x slower costs at most ~4% of the time).
pub(crate) const EXPLORE_SHARE: u32 = 100;

/// How the sender chooses (`OXCCL_SINGLE_COPY_CHOICE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Choice {
    /// By the receiver's measurements of both paths (the default).
    #[default]
    Auto,
    /// Always pull (where the peer can read our memory).
    Pull,
    /// Always through the ring.
    Stream,
}

impl std::str::FromStr for Choice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(Choice::Auto),
            "pull" => Ok(Choice::Pull),
            "stream" => Ok(Choice::Stream),
            other => Err(Error::Config {
                var: "OXCCL_SINGLE_COPY_CHOICE",
                value: other.to_string(),
                reason: "expected auto, pull or stream".into(),
            }),
        }
    }
}

/// `OXCCL_SINGLE_COPY_CHOICE`, else [`Choice::Auto`].
pub fn single_copy_choice_from_env() -> Result<Choice> {
    match std::env::var("OXCCL_SINGLE_COPY_CHOICE") {
        Err(_) => Ok(Choice::Auto),
        Ok(v) => v.parse(),
    }
}

/// The size class of a message of `len` bytes: one per power of two from 4 KiB, the last
/// one open-ended.
pub(crate) fn size_class(len: usize) -> usize {
    let log = usize::BITS - 1 - len.max(1).leading_zeros();
    (log.saturating_sub(12) as usize).min(SIZE_CLASSES - 1)
}

/// How often the sender reads the receiver's speeds of a class again: the words sit on a line
/// the receiver writes, so reading them for every message would move that line between the
/// cores twice a message (a quarter of an 8 KiB message's time in the fast state).
pub(crate) const READ_EVERY: Duration = Duration::from_millis(1);

/// The sender's side of the choice: when it last sent each class by each path, and the
/// receiver's speeds as last read.
pub(crate) struct Chooser {
    choice: Choice,
    tried: [[Option<Instant>; 2]; SIZE_CLASSES],
    speeds: [(u32, u32); SIZE_CLASSES],
    read: [Option<Instant>; SIZE_CLASSES],
    /// The faster path last logged per class (pulled: true).
    best: [bool; SIZE_CLASSES],
    /// [`EXPLORE_EVERY`], but for tests that must not depend on the clock.
    explore_every: Duration,
    /// [`READ_EVERY`], but for tests that change the speeds.
    read_every: Duration,
}

impl Chooser {
    pub(crate) fn new(choice: Choice) -> Self {
        Chooser {
            choice,
            tried: [[None; 2]; SIZE_CLASSES],
            speeds: [(0, 0); SIZE_CLASSES],
            read: [None; SIZE_CLASSES],
            best: [true; SIZE_CLASSES],
            explore_every: EXPLORE_EVERY,
            read_every: READ_EVERY,
        }
    }

    /// With the slower path tried again only after `every`, the speeds read for every message
    /// (tests).
    #[cfg(test)]
    pub(crate) fn exploring_every(mut self, every: Duration) -> Self {
        self.explore_every = every;
        self.read_every = Duration::ZERO;
        self
    }

    /// Whether a message of `len` bytes goes pulled, given `speeds(class)`: the receiver's
    /// speeds of a class `(ring, pulled)` in MB/s (0: not measured yet), at time `now`.
    pub(crate) fn pull(
        &mut self,
        len: usize,
        speeds: impl FnOnce(usize) -> (u32, u32),
        now: Instant,
    ) -> bool {
        match self.choice {
            Choice::Pull => return true,
            Choice::Stream => return false,
            Choice::Auto => {}
        }
        let class = size_class(len);
        if self.read[class].is_none_or(|t| now.saturating_duration_since(t) >= self.read_every) {
            self.speeds[class] = speeds(class);
            self.read[class] = Some(now);
        }
        let (ring, pulled) = self.speeds[class];
        let (best, best_speed) = match (ring, pulled) {
            (_, 0) => (true, 0),
            (0, _) => (false, 0),
            (r, p) if p > r => (true, p),
            (r, _) => (false, r),
        };
        let other = !best;
        // A path not measured yet counts as the best one until it is. The slower path is
        // tried again once it is stale: EXPLORE_EVERY, or EXPLORE_SHARE messages' time at the
        // best speed for a large class (bytes / (MB/s) = microseconds).
        let period = match best_speed {
            0 => self.explore_every,
            s => self.explore_every.max(Duration::from_micros(
                (len as u64 / u64::from(s)) * u64::from(EXPLORE_SHARE),
            )),
        };
        // The first message of a class takes the best path (pulled, with nothing measured:
        // the path of the threshold's meaning), the next one tries the other.
        if best != self.best[class] && best_speed > 0 {
            self.best[class] = best;
            tracing::debug!(
                class_bytes = 4096usize << class,
                ring_mbps = ring,
                pull_mbps = pulled,
                "single-copy: {} is now the faster path for this size",
                if best { "pull" } else { "the ring" }
            );
        }
        let stale = match self.tried[class][usize::from(other)] {
            None => self.tried[class][usize::from(best)].is_some(),
            Some(t) => now.saturating_duration_since(t) >= period,
        };
        let pull = if stale { other } else { best };
        self.tried[class][usize::from(pull)] = Some(now);
        pull
    }
}

/// The receiver's side: its moving speeds per class and path, and what it last showed the
/// sender (shown again only when it moved by more than an eighth, so that the line with the
/// shared words is not written for every message).
#[derive(Default)]
pub(crate) struct Measured {
    speed: [[u32; 2]; SIZE_CLASSES],
    shown: [[u32; 2]; SIZE_CLASSES],
}

impl Measured {
    /// Folds one measurement (MB/s) in: a moving average, a quarter of the weight on the new
    /// one, so that one preempted message does not flip the choice. Returns the speed to show
    /// the sender, when it should see a new one.
    pub(crate) fn add(&mut self, class: usize, pulled: bool, mbps: u32) -> Option<u32> {
        let (class, path) = (class.min(SIZE_CLASSES - 1), usize::from(pulled));
        let old = self.speed[class][path];
        let new = match old {
            0 => mbps,
            _ => ((3 * u64::from(old) + u64::from(mbps)) / 4) as u32,
        }
        .max(1);
        self.speed[class][path] = new;
        let shown = self.shown[class][path];
        (new.abs_diff(shown) > shown / 8 || shown == 0).then(|| {
            self.shown[class][path] = new;
            new
        })
    }
}

/// A receiver's measurement of the large message it is taking.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub(crate) class: usize,
    pub(crate) pulled: bool,
    pub(crate) len: usize,
    pub(crate) start: Instant,
    /// Where its last byte ends in the ring (through the ring only).
    pub(crate) end: u64,
}

impl Timing {
    /// Its speed in MB/s (bytes per microsecond), if it took any measurable time.
    pub(crate) fn mbps(&self, now: Instant) -> u32 {
        let ns = now.saturating_duration_since(self.start).as_nanos().max(1);
        (self.len as u128 * 1000 / ns).clamp(1, u128::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two_from_4_kib() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(4095), 0);
        assert_eq!(size_class(4096), 0);
        assert_eq!(size_class(8191), 0);
        assert_eq!(size_class(8192), 1);
        assert_eq!(size_class(256 << 10), 6);
        assert_eq!(size_class(usize::MAX), SIZE_CLASSES - 1);
    }

    #[test]
    fn the_choice_is_read_and_checked() {
        assert_eq!("auto".parse::<Choice>().unwrap(), Choice::Auto);
        assert_eq!(" pull ".parse::<Choice>().unwrap(), Choice::Pull);
        assert_eq!("stream".parse::<Choice>().unwrap(), Choice::Stream);
        let e = "ring".parse::<Choice>().unwrap_err().to_string();
        assert!(e.contains("OXCCL_SINGLE_COPY_CHOICE") && e.contains("auto, pull or stream"));
    }

    #[test]
    fn fixed_choices_ignore_the_speeds() {
        let now = Instant::now();
        let mut p = Chooser::new(Choice::Pull);
        let mut s = Chooser::new(Choice::Stream);
        for speeds in [(0, 0), (1, 100), (100, 1)] {
            assert!(p.pull(1 << 20, |_| speeds, now));
            assert!(!s.pull(1 << 20, |_| speeds, now));
        }
    }

    #[test]
    fn auto_tries_both_then_takes_the_faster_and_follows_a_change() {
        let mut c = Chooser::new(Choice::Auto);
        let t0 = Instant::now();
        let len = 64 << 10;
        // Nothing measured: pulled first, then the ring is tried.
        assert!(c.pull(len, |_| (0, 0), t0));
        assert!(!c.pull(len, |_| (0, 0), t0));
        assert!(c.pull(len, |_| (0, 0), t0));
        // The ring is 5x faster: it is taken, and pull is tried again only once stale.
        let ms = |n| t0 + Duration::from_millis(n);
        assert!((0..100).all(|i| !c.pull(
            len,
            |_| (10_000, 2_000),
            ms(1) + Duration::from_micros(i)
        )));
        assert!(c.pull(len, |_| (10_000, 2_000), ms(1) + EXPLORE_EVERY));
        assert!(!c.pull(len, |_| (10_000, 2_000), ms(2) + EXPLORE_EVERY));
        // The state flips (the ring's measurements fall): pull at once.
        assert!(c.pull(len, |_| (1_500, 9_000), ms(3) + EXPLORE_EVERY));
        assert!(c.pull(len, |_| (1_500, 9_000), ms(4) + EXPLORE_EVERY));
        // Another size class keeps its own record.
        assert!(c.pull(4 << 20, |_| (0, 0), ms(5)));
        assert!(!c.pull(4 << 20, |_| (0, 0), ms(5)));
    }

    #[test]
    fn tries_of_the_slower_path_are_spaced_by_the_message_time_for_large_classes() {
        let mut c = Chooser::new(Choice::Auto);
        let t0 = Instant::now();
        let len = 64 << 20; // 64 MiB at 10 GB/s: 6.7 ms a message, so a try every 0.67 s
        assert!(c.pull(len, |_| (2_000, 10_000), t0));
        assert!(!c.pull(len, |_| (2_000, 10_000), t0));
        assert!(c.pull(len, |_| (2_000, 10_000), t0 + Duration::from_millis(300)));
        assert!(!c.pull(len, |_| (2_000, 10_000), t0 + Duration::from_millis(700)));
    }

    #[test]
    fn the_receiver_shows_a_moving_speed_when_it_moved() {
        let mut m = Measured::default();
        assert_eq!(m.add(3, true, 8_000), Some(8_000));
        // A quarter of the weight on each new one; small moves are not shown.
        assert_eq!(m.add(3, true, 10_000), None);
        assert_eq!(m.speed[3][1], 8_500);
        assert_eq!(m.add(3, true, 0), Some(6_375));
        // The other path and class are apart.
        assert_eq!(m.add(3, false, 2_000), Some(2_000));
        assert_eq!(m.add(99, false, 5), Some(5));
        assert_eq!(m.speed[SIZE_CLASSES - 1][0], 5);
    }

    #[test]
    fn speed_is_bytes_per_microsecond() {
        let start = Instant::now();
        let t = Timing {
            class: 0,
            pulled: true,
            len: 1 << 20,
            start,
            end: 0,
        };
        assert_eq!(t.mbps(start + Duration::from_micros(100)), 10_485);
        assert_eq!(t.mbps(start), 1_048_576_000);
    }
}
