//! The reservations of one link direction, served first come first served by arrival at the
//! link (work-conserving).
//!
//! A message reserves every hop of its route when it is posted, so a reservation on a
//! downstream link may start in the future. A message that reaches that link earlier must not
//! wait behind it while the link sits idle: it takes the first idle gap, from its own arrival
//! at the link, that holds it whole. A single "free from" time per link would make it wait.

use std::collections::VecDeque;

/// Busy intervals `[start, end)` of one link direction, sorted, disjoint, none ending in the
/// past (pruned as the clock moves), touching ones merged so back-to-back traffic keeps the
/// queue at one entry.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkQueue {
    busy: VecDeque<(f64, f64)>,
}

impl LinkQueue {
    /// Reserves the link for `occupy` seconds from the earliest time at or after `at` where it
    /// is idle that long, and returns that start. `now` is the simulation clock: no later
    /// request starts before it (`at >= now`), so intervals that ended by then are dropped.
    pub(super) fn reserve(&mut self, now: f64, at: f64, occupy: f64) -> f64 {
        debug_assert!(at >= now, "a reservation from {at} before the clock {now}");
        while self.busy.front().is_some_and(|&(_, end)| end <= now) {
            self.busy.pop_front();
        }
        // Ends are sorted (the intervals are disjoint and sorted by start), so the intervals
        // before `i` all end by `at` and cannot be in the way.
        let mut i = self.busy.partition_point(|&(_, end)| end <= at);
        let mut start = at;
        while let Some(&(s, e)) = self.busy.get(i) {
            if s >= start + occupy {
                break;
            }
            start = start.max(e);
            i += 1;
        }
        let end = start + occupy;
        let joins_before = i > 0 && self.busy[i - 1].1 == start;
        let joins_after = self.busy.get(i).is_some_and(|&(s, _)| s == end);
        match (joins_before, joins_after) {
            (true, true) => {
                self.busy[i - 1].1 = self.busy[i].1;
                self.busy.remove(i);
            }
            (true, false) => self.busy[i - 1].1 = end,
            (false, true) => self.busy[i].0 = start,
            (false, false) => self.busy.insert(i, (start, end)),
        }
        start
    }

    #[cfg(test)]
    fn intervals(&self) -> Vec<(f64, f64)> {
        self.busy.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::LinkQueue;

    #[test]
    fn back_to_back_requests_queue_and_merge() {
        let mut q = LinkQueue::default();
        assert_eq!(q.reserve(0.0, 0.0, 2.0), 0.0);
        assert_eq!(q.reserve(0.0, 0.0, 3.0), 2.0);
        assert_eq!(q.reserve(1.0, 1.0, 1.0), 5.0);
        assert_eq!(q.intervals(), vec![(0.0, 6.0)]);
    }

    #[test]
    fn an_earlier_arrival_fills_an_idle_gap_before_a_future_reservation() {
        let mut q = LinkQueue::default();
        // Reserved from 10 (a message whose head reaches this link later).
        assert_eq!(q.reserve(0.0, 10.0, 5.0), 10.0);
        // Fits before it: served at its arrival, not after 15.
        assert_eq!(q.reserve(0.0, 2.0, 8.0), 2.0);
        assert_eq!(q.intervals(), vec![(2.0, 15.0)]);
        // Does not fit in any gap: after the last.
        assert_eq!(q.reserve(0.0, 1.0, 2.0), 15.0);
        assert_eq!(q.intervals(), vec![(2.0, 17.0)]);
        // Fits the gap before 2 exactly.
        assert_eq!(q.reserve(0.0, 0.5, 1.5), 0.5);
        assert_eq!(q.intervals(), vec![(0.5, 17.0)]);
    }

    #[test]
    fn a_request_too_long_for_a_gap_skips_it() {
        let mut q = LinkQueue::default();
        q.reserve(0.0, 0.0, 1.0);
        q.reserve(0.0, 3.0, 1.0);
        q.reserve(0.0, 6.0, 1.0);
        // The gaps [1, 3) and [4, 6) are 2 long; 2.5 fits only after 7.
        assert_eq!(q.reserve(0.0, 0.0, 2.5), 7.0);
        // 2 fits the first gap from 1.
        assert_eq!(q.reserve(0.0, 0.0, 2.0), 1.0);
        assert_eq!(q.intervals(), vec![(0.0, 4.0), (6.0, 9.5)]);
    }

    #[test]
    fn the_past_is_pruned_and_capacity_is_never_double_booked() {
        let mut q = LinkQueue::default();
        let mut t = 0.0;
        let mut booked = Vec::new();
        // A deterministic mix of future and immediate requests.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += (x % 7) as f64 * 0.25;
            let at = t + (x >> 8) as f64 % 5.0;
            let occupy = 0.125 + (x >> 16) as f64 % 3.0;
            let s = q.reserve(t, at, occupy);
            assert!(s >= at);
            booked.push((s, s + occupy));
        }
        booked.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in booked.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {:?} {:?}", w[0], w[1]);
        }
        assert!(q.busy.iter().all(|&(_, e)| e > t));
        assert!(q.busy.len() < 50, "{} intervals kept", q.busy.len());
    }
}
