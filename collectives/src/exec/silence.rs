//! Saying on the failure board whom a long wait is for (`link/blame.rs`), so that when ranks
//! time out together they can tell a rank that stopped from one that only waits for it.

use super::engine::Engine;
use std::time::Duration;

/// What a wait that is past its deadline still spends to say whom it waited on: a live
/// store answers in far less, a stopped one costs no more than this.
const SAY_LATE: Duration = Duration::from_millis(100);

impl Engine {
    /// Called by every idle check of a wait that has gone `waited` without progress: past half
    /// the timeout, says once whom the wait is for (`blame`, or the first peer with queued
    /// work); after progress, unsays it.
    pub(super) fn note_long_wait(
        &mut self,
        waited: Duration,
        peers: &[usize],
        blame: Option<usize>,
    ) {
        let long = waited >= self.timeout / 2;
        if long == self.said_waiting {
            return;
        }
        if !long {
            self.unsay_waiting();
            return;
        }
        let on = blame.or_else(|| self.waited_on(peers));
        if let Some(peer) = on {
            // Within what is left of the wait: saying it must not move its deadline (the
            // store's host may be the rank that stopped). A wait already past it (its first
            // look since half the timeout came late, on a loaded host) still gets a moment:
            // the ranks that wait on this one follow its note to the silent rank.
            let left = self.timeout.saturating_sub(waited).max(SAY_LATE);
            self.blame.say_waiting(self.rank, Some(peer), Some(left));
            self.said_waiting = true;
        }
    }

    /// Takes back what [`Engine::note_long_wait`] said (the wait ended or moved).
    pub(super) fn unsay_waiting(&mut self) {
        if self.said_waiting {
            self.blame.say_waiting(self.rank, None, None);
            self.said_waiting = false;
        }
    }

    /// The peer a wait is for: one we wait to hear from, else one that does not take our
    /// data, else one whose receipt has not come.
    fn waited_on(&self, peers: &[usize]) -> Option<usize> {
        let on = |f: &dyn Fn(usize) -> bool| peers.iter().copied().find(|&q| f(q));
        on(&|q| !self.recvq[q].is_empty())
            .or_else(|| on(&|q| !self.sendq_is_empty(q)))
            .or_else(|| on(&|q| self.awaits_receipt(q)))
    }
}
