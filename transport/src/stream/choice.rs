//! Which path a large message of a native stream takes: through the ring (two copies, the
//! bytes cross between the caches of the two cores), through the ring written with
//! non-temporal stores (the bytes go through memory instead, `stream::nt`), or pulled by the
//! receiver straight out of the sender's memory (one copy, a system call per piece between
//! processes).
//!
//! None wins everywhere, and the winner changes while a job runs: on the development
//! machine the ring copies 11-16 GB/s in one state and 2.1-2.4 in another that comes and goes
//! every few minutes, while a pull moves 7-12 GB/s in both (`bench/RESULTS.md`, "adaptive"),
//! and the ring with non-temporal stores ~9-10 in both.
//! So the receiver measures every large message it takes, from its header to its last byte,
//! and keeps a moving speed per size class and path in the connection's shared control block
//! (`stream::ring`, `speeds[r]`); the sender reads them when it offers the next message of that
//! class and takes the fastest path, trying the others now and then (at most one message in
//! [`EXPLORE_SHARE`] of the time, and not more often than every [`EXPLORE_EVERY`]) so that a
//! change of state is noticed. Every path starts with the same header, whose mode says which
//! one follows, so the receiver knows what it measures and needs no agreement beyond the
//! threshold.
//!
//! Crowded hosts: where a host has more ranks than cores (the collectives say so,
//! [`crate::Stream::set_crowded`]), messages at least as large as the ring are always pulled,
//! and so are those sent in one call alongside others to other peers when together they are
//! (an all-to-all's; [`crate::Offering::alongside`]). Through the ring such bytes need both
//! ends on a core at once, and take two copies of the scarce cores' time against one; the
//! receiver's timing of one message shows neither. 4 ranks on 2 cores, 10 interleaved rounds
//! (`bench/RESULTS.md`, session 14): sendrecv 2-16 MiB 0.86-1.26x of Open MPI pulling against
//! 0.73-1.11x by the speeds, all-to-all-v 8-16 MiB 1.21x against 1.02-1.10x. A lone message
//! smaller than the ring keeps the choice (at 256-512 KiB the ring beats pulling there,
//! 1.5-1.7x of Open MPI, the bytes still in the cache of the core both ends take turns on);
//! an all-to-all's 290-880 KiB messages at 2 MiB a rank do not: all ranks' rings together
//! outgrow the cache, and the ring path took 20-35% more CPU time a call than pulling (`perf
//! stat`, session 15), 0.86-0.96x of Open MPI against 1.02-1.12x pulled.
//!
//! `OXCCL_SINGLE_COPY_CHOICE` overrides it: `auto` (the default, as above), `pull` (always pull
//! from the threshold on: the rule before the choice existed), `stream` (always the ring) or
//! `stream-nt` (always the ring, non-temporal stores).

use std::time::{Duration, Instant};

use super::ring::SIZE_CLASSES;
use crate::error::{Error, Result};

/// Least time between two tries of a slower path for one size class.
pub(crate) const EXPLORE_EVERY: Duration = Duration::from_millis(20);
/// A try of a slower path comes at most once per this many of its own messages' time, so that
/// each slower path costs at most 1/`EXPLORE_SHARE` of the time, however slow it is. (Spaced
/// by the faster path's time instead, the two rings of the slow state, 3-5x slower than a
/// pull there, cost 4-8% together: 2-rank sendrecv at 4-8 MiB ran at 0.91x of Open MPI
/// choosing, 0.97-1.03x always pulling; bench/RESULTS.md, session 12.)
pub(crate) const EXPLORE_SHARE: u32 = 100;

/// How the sender chooses (`OXCCL_SINGLE_COPY_CHOICE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Choice {
    /// By the receiver's measurements of every path (the default).
    #[default]
    Auto,
    /// Always pull (where the peer can read our memory).
    Pull,
    /// Always through the ring, ordinary stores.
    Stream,
    /// Always through the ring, written with non-temporal stores (`stream::nt`).
    StreamNt,
}

impl std::str::FromStr for Choice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "auto" => Ok(Choice::Auto),
            "pull" => Ok(Choice::Pull),
            "stream" => Ok(Choice::Stream),
            "stream-nt" => Ok(Choice::StreamNt),
            other => Err(Error::Config {
                var: "OXCCL_SINGLE_COPY_CHOICE",
                value: other.to_string(),
                reason: "expected auto, pull, stream or stream-nt".into(),
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

/// The paths of a large message; the value is its index among the measured speeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// Through the ring, written with ordinary stores.
    Ring = 0,
    /// Pulled out of the sender's memory.
    Pull = 1,
    /// Through the ring, written with non-temporal stores.
    RingNt = 2,
}

/// How many paths there are.
pub(crate) const PATHS: usize = 3;

impl Path {
    /// Every path, in the order a size class with nothing measured tries them: pulled first
    /// (the threshold's meaning), then the two rings.
    pub(crate) const ALL: [Path; PATHS] = [Path::Pull, Path::Ring, Path::RingNt];

    fn name(self) -> &'static str {
        match self {
            Path::Ring => "the ring",
            Path::Pull => "pull",
            Path::RingNt => "the ring with non-temporal stores",
        }
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
    /// Messages of at least this many bytes, or sent alongside at least this many, are pulled
    /// where the peer can read us (a crowded host: the ring's size; `None`: by the speeds).
    pub(crate) pull_from: Option<usize>,
    tried: [[Option<Instant>; PATHS]; SIZE_CLASSES],
    speeds: [[u32; PATHS]; SIZE_CLASSES],
    read: [Option<Instant>; SIZE_CLASSES],
    /// The faster path last logged per class.
    best: [Path; SIZE_CLASSES],
    /// [`EXPLORE_EVERY`], but for tests that must not depend on the clock.
    explore_every: Duration,
    /// [`READ_EVERY`], but for tests that change the speeds.
    read_every: Duration,
}

impl Chooser {
    pub(crate) fn new(choice: Choice) -> Self {
        Chooser {
            choice,
            pull_from: None,
            tried: [[None; PATHS]; SIZE_CLASSES],
            speeds: [[0; PATHS]; SIZE_CLASSES],
            read: [None; SIZE_CLASSES],
            best: [Path::Pull; SIZE_CLASSES],
            explore_every: EXPLORE_EVERY,
            read_every: READ_EVERY,
        }
    }

    /// With the slower paths tried again only after `every`, the speeds read for every message
    /// (tests).
    #[cfg(test)]
    pub(crate) fn exploring_every(mut self, every: Duration) -> Self {
        self.explore_every = every;
        self.read_every = Duration::ZERO;
        self
    }

    /// The path of a message of `len` bytes sent with `alongside` bytes in its call
    /// ([`crate::Offering::alongside`]), given `speeds(class)`: the receiver's speeds of a
    /// class by path (indexed by [`Path`]) in MB/s (0: not measured yet), at time `now`.
    /// Without `can_pull` (the peer cannot read our memory now) it is one of the rings.
    pub(crate) fn path(
        &mut self,
        len: usize,
        alongside: usize,
        can_pull: bool,
        speeds: impl FnOnce(usize) -> [u32; PATHS],
        now: Instant,
    ) -> Path {
        match self.choice {
            Choice::Pull if can_pull => return Path::Pull,
            Choice::Pull | Choice::Stream => return Path::Ring,
            Choice::StreamNt => return Path::RingNt,
            Choice::Auto => {}
        }
        if can_pull
            && self
                .pull_from
                .is_some_and(|from| len.max(alongside) >= from)
        {
            return Path::Pull;
        }
        let class = size_class(len);
        if self.read[class].is_none_or(|t| now.saturating_duration_since(t) >= self.read_every) {
            self.speeds[class] = speeds(class);
            self.read[class] = Some(now);
        }
        let speed = self.speeds[class];
        let open = |p: &Path| can_pull || *p != Path::Pull;
        // A path not measured yet counts as the best one until it is.
        let best = Path::ALL
            .into_iter()
            .filter(open)
            .find(|&p| speed[p as usize] == 0)
            .or_else(|| {
                Path::ALL
                    .into_iter()
                    .filter(open)
                    .max_by_key(|&p| speed[p as usize])
            })
            .expect("the rings are always open");
        let best_speed = speed[best as usize];
        // A slower path is tried again once stale: EXPLORE_EVERY, or EXPLORE_SHARE messages'
        // time at its own speed for a large class (bytes / (MB/s) = microseconds).
        let period = |p: Path| match speed[p as usize] {
            0 => self.explore_every,
            s => self.explore_every.max(Duration::from_micros(
                (len as u64 / u64::from(s)) * u64::from(EXPLORE_SHARE),
            )),
        };
        if best != self.best[class] && best_speed > 0 {
            self.best[class] = best;
            tracing::debug!(
                class_bytes = 4096usize << class,
                ring_mbps = speed[Path::Ring as usize],
                pull_mbps = speed[Path::Pull as usize],
                ring_nt_mbps = speed[Path::RingNt as usize],
                "single-copy: {} is now the faster path for this size",
                best.name()
            );
        }
        // The first message of a class takes the best path, each of the next ones tries
        // another one not tried yet; after that the stalest path due for a try.
        let tried = self.tried[class];
        let best_tried = tried[best as usize].is_some();
        let path = Path::ALL
            .into_iter()
            .filter(|p| open(p) && *p != best)
            .filter(|&p| match tried[p as usize] {
                None => best_tried,
                Some(t) => now.saturating_duration_since(t) >= period(p),
            })
            .min_by_key(|&p| tried[p as usize])
            .unwrap_or(best);
        self.tried[class][path as usize] = Some(now);
        path
    }

    /// The ring path for a message that is not measured (its bytes are not all ready): the
    /// faster ring as last read, without a try of the other.
    pub(crate) fn ring_path(&self, len: usize) -> Path {
        match self.choice {
            Choice::StreamNt => Path::RingNt,
            Choice::Pull | Choice::Stream => Path::Ring,
            Choice::Auto => {
                let s = self.speeds[size_class(len)];
                if s[Path::RingNt as usize] > s[Path::Ring as usize] && s[Path::Ring as usize] > 0 {
                    Path::RingNt
                } else {
                    Path::Ring
                }
            }
        }
    }
}

/// The receiver's side: its moving speeds per class and path, and what it last showed the
/// sender (shown again only when it moved by more than an eighth, so that the line with the
/// shared words is not written for every message).
#[derive(Default)]
pub(crate) struct Measured {
    speed: [[u32; PATHS]; SIZE_CLASSES],
    shown: [[u32; PATHS]; SIZE_CLASSES],
    /// Whether the first message of a class and path has been taken (and left out).
    warm: [[bool; PATHS]; SIZE_CLASSES],
}

impl Measured {
    /// Folds one measurement (MB/s) in: a moving average, a quarter of the weight on the new
    /// one, so that one preempted message does not flip the choice. The first message of each
    /// class and path is left out: it pays for first touches (a fresh destination's pages
    /// faulted in by the copy), which made the first 4 MiB pull 1.2-1.6 GB/s against ~7
    /// warm, so that the rings kept the lead for most of a 2-rank sendrecv sweep
    /// (`bench/RESULTS.md`, session 14). Until a path's second message its speed stays 0, which
    /// the sender takes for "not measured yet" and tries it again. Returns the speed to show
    /// the sender, when it should see a new one.
    pub(crate) fn add(&mut self, class: usize, path: Path, mbps: u32) -> Option<u32> {
        let (class, path) = (class.min(SIZE_CLASSES - 1), path as usize);
        if !std::mem::replace(&mut self.warm[class][path], true) {
            return None;
        }
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
    pub(crate) path: Path,
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
    use Path::{Pull, Ring, RingNt};

    /// Speeds (ring, pulled, ring with non-temporal stores) as the ring's words hold them.
    fn sp(ring: u32, pull: u32, nt: u32) -> impl Fn(usize) -> [u32; PATHS] {
        move |_| [ring, pull, nt]
    }

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
        assert_eq!("stream-nt".parse::<Choice>().unwrap(), Choice::StreamNt);
        let e = "ring".parse::<Choice>().unwrap_err().to_string();
        assert!(e.contains("OXCCL_SINGLE_COPY_CHOICE") && e.contains("auto, pull, stream or"));
    }

    #[test]
    fn fixed_choices_ignore_the_speeds() {
        let now = Instant::now();
        let mut p = Chooser::new(Choice::Pull);
        let mut s = Chooser::new(Choice::Stream);
        let mut n = Chooser::new(Choice::StreamNt);
        for speeds in [[0, 0, 0], [1, 100, 1], [100, 1, 1], [1, 1, 100]] {
            assert_eq!(p.path(1 << 20, 0, true, |_| speeds, now), Pull);
            assert_eq!(p.path(1 << 20, 0, false, |_| speeds, now), Ring);
            assert_eq!(s.path(1 << 20, 0, true, |_| speeds, now), Ring);
            assert_eq!(n.path(1 << 20, 0, true, |_| speeds, now), RingNt);
            assert_eq!(n.ring_path(1 << 20), RingNt);
            assert_eq!(s.ring_path(1 << 20), Ring);
        }
    }

    #[test]
    fn auto_tries_each_then_takes_the_fastest_and_follows_a_change() {
        let mut c = Chooser::new(Choice::Auto);
        let t0 = Instant::now();
        let len = 64 << 10;
        // Nothing measured: pulled first, then each ring is tried.
        assert_eq!(c.path(len, 0, true, sp(0, 0, 0), t0), Pull);
        assert_eq!(c.path(len, 0, true, sp(0, 0, 0), t0), Ring);
        assert_eq!(c.path(len, 0, true, sp(0, 0, 0), t0), RingNt);
        assert_eq!(c.path(len, 0, true, sp(0, 0, 0), t0), Pull);
        // The ring is 5x faster: it is taken, and the others are tried again only once stale.
        let ms = |n| t0 + Duration::from_millis(n);
        let fast_ring = sp(10_000, 2_000, 3_000);
        assert!((0..100).all(|i| c.path(
            len,
            0,
            true,
            &fast_ring,
            ms(1) + Duration::from_micros(i)
        ) == Ring));
        let a = c.path(len, 0, true, &fast_ring, ms(1) + EXPLORE_EVERY);
        let b = c.path(len, 0, true, &fast_ring, ms(1) + EXPLORE_EVERY);
        assert_eq!([a, b], [Pull, RingNt], "the stale ones, the oldest first");
        assert_eq!(
            c.path(len, 0, true, &fast_ring, ms(2) + EXPLORE_EVERY),
            Ring
        );
        // The state flips (the ring's measurements fall): the non-temporal ring at once.
        let slow_ring = sp(1_500, 8_000, 9_000);
        assert_eq!(
            c.path(len, 0, true, &slow_ring, ms(3) + EXPLORE_EVERY),
            RingNt
        );
        assert_eq!(
            c.path(len, 0, true, &slow_ring, ms(4) + EXPLORE_EVERY),
            RingNt
        );
        assert_eq!(c.ring_path(len), RingNt);
        // Where the peer cannot read us, pull is never taken, however fast it was.
        let fast_pull = sp(1_500, 90_000, 9_000);
        assert!((5..60).all(|i| c.path(len, 0, false, &fast_pull, ms(i) + EXPLORE_EVERY) != Pull));
        // Another size class keeps its own record.
        assert_eq!(c.path(4 << 20, 0, true, sp(0, 0, 0), ms(5)), Pull);
        assert_eq!(c.path(4 << 20, 0, true, sp(0, 0, 0), ms(5)), Ring);
        assert_eq!(c.ring_path(4 << 20), Ring);
    }

    /// A chooser of a crowded host with a 1 MiB ring.
    fn crowded() -> Chooser {
        let mut c = Chooser::new(Choice::Auto);
        c.pull_from = Some(1 << 20);
        c
    }

    /// The paths of four messages of `len` bytes, each with `alongside`, at one instant, where
    /// the ring is the fastest: by the speeds, the ring, then each other path once, then the
    /// ring again.
    fn four_paths(c: &mut Chooser, len: usize, alongside: usize) -> Vec<Path> {
        let now = Instant::now();
        let fast_ring = sp(20_000, 1_000, 10_000);
        (0..4)
            .map(|_| c.path(len, alongside, true, &fast_ring, now))
            .collect()
    }

    #[test]
    fn a_crowded_host_pulls_from_the_ring_size_whatever_the_speeds() {
        let mut c = crowded();
        let now = Instant::now();
        let fast_ring = sp(20_000, 1_000, 10_000);
        for len in [1 << 20, 3 << 20, 64 << 20] {
            assert!(
                (0..10).all(|_| c.path(len, 0, true, &fast_ring, now) == Pull),
                "{len}"
            );
            // Not where the peer cannot read us.
            assert_ne!(c.path(len, 0, false, &fast_ring, now), Pull, "{len}");
        }
        // Smaller messages keep the choice by the speeds.
        assert_eq!(
            four_paths(&mut c, (1 << 20) - 1, 0),
            [Ring, Pull, RingNt, Ring]
        );
    }

    #[test]
    fn a_crowded_host_pulls_messages_sent_alongside_others_as_large_as_the_ring() {
        // An all-to-all's 300 KiB messages, 1.5 MiB to all peers together: pulled.
        let len = 300 << 10;
        let mut c = crowded();
        assert!(four_paths(&mut c, len, 5 * len).iter().all(|&p| p == Pull));
        let fast_ring = sp(20_000, 1_000, 10_000);
        assert_ne!(
            c.path(len, 5 * len, false, &fast_ring, Instant::now()),
            Pull
        );
        // Together under the ring: by the speeds, as a message sent alone.
        let under = (1 << 20) - 1;
        assert_eq!(
            four_paths(&mut crowded(), len, under),
            [Ring, Pull, RingNt, Ring]
        );
        // Not crowded: the speeds decide, whatever is sent alongside.
        let mut c = Chooser::new(Choice::Auto);
        assert_eq!(
            four_paths(&mut c, len, 64 << 20),
            [Ring, Pull, RingNt, Ring]
        );
    }

    #[test]
    fn tries_of_the_slower_paths_are_spaced_by_their_own_message_time_for_large_classes() {
        let mut c = Chooser::new(Choice::Auto);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // 64 MiB: a message takes 6.7 ms pulled (10 GB/s), 13.4 ms through the non-temporal
        // ring (5 GB/s) and 33.6 ms through the ring (2 GB/s); each slower path is tried once
        // per 100 of its own messages' time: every 1.34 s and 3.36 s.
        let len = 64 << 20;
        let s = sp(2_000, 10_000, 5_000);
        assert_eq!(c.path(len, 0, true, &s, t0), Pull);
        assert_eq!(c.path(len, 0, true, &s, t0), Ring);
        assert_eq!(c.path(len, 0, true, &s, t0), RingNt);
        assert_eq!(c.path(len, 0, true, &s, ms(700)), Pull);
        assert_eq!(c.path(len, 0, true, &s, ms(1_300)), Pull);
        assert_eq!(c.path(len, 0, true, &s, ms(1_400)), RingNt);
        assert_eq!(c.path(len, 0, true, &s, ms(1_400)), Pull);
        assert_eq!(c.path(len, 0, true, &s, ms(2_700)), Pull);
        assert_eq!(c.path(len, 0, true, &s, ms(2_800)), RingNt);
        assert_eq!(c.path(len, 0, true, &s, ms(3_300)), Pull);
        assert_eq!(c.path(len, 0, true, &s, ms(3_400)), Ring);
        assert_eq!(c.path(len, 0, true, &s, ms(3_400)), Pull);
    }

    #[test]
    fn the_receiver_shows_a_moving_speed_when_it_moved() {
        let mut m = Measured::default();
        // The first of each class and path is left out (first touches).
        for (class, path) in [(3, Pull), (3, Ring), (3, RingNt), (99, Ring)] {
            assert_eq!(m.add(class, path, 1), None);
        }
        assert_eq!(m.speed[3], [0, 0, 0]);
        assert_eq!(m.add(3, Pull, 8_000), Some(8_000));
        // A quarter of the weight on each new one; small moves are not shown.
        assert_eq!(m.add(3, Pull, 10_000), None);
        assert_eq!(m.speed[3][Pull as usize], 8_500);
        assert_eq!(m.add(3, Pull, 0), Some(6_375));
        // The other paths and classes are apart.
        assert_eq!(m.add(3, Ring, 2_000), Some(2_000));
        assert_eq!(m.add(3, RingNt, 9_000), Some(9_000));
        assert_eq!(m.add(99, Ring, 5), Some(5));
        assert_eq!(m.speed[SIZE_CLASSES - 1][Ring as usize], 5);
        assert_eq!(m.speed[3], [2_000, 6_375, 9_000]);
    }

    #[test]
    fn speed_is_bytes_per_microsecond() {
        let start = Instant::now();
        let t = Timing {
            class: 0,
            path: Pull,
            len: 1 << 20,
            start,
            end: 0,
        };
        assert_eq!(t.mbps(start + Duration::from_micros(100)), 10_485);
        assert_eq!(t.mbps(start), 1_048_576_000);
    }
}
