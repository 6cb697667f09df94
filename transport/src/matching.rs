//! Per-tag ordering of posted receives, shared by the transports.
//!
//! Each receive gets a number when posted; it may take a message only when every earlier
//! receive of its tag has taken one (or was dropped unmatched). This gives
//! MPI's rule: same tag, same order; different tags, any order.
//!
//! Tags in use at once are few (a collective step uses one or two), so a short vector beats a
//! hash map here; a tag's entry leaves as soon as it has no receive waiting, so tags that are
//! unique per operation do not pile up.

use crate::api::Tag;

/// Receive numbers are unique per connection (never reused, even across tags), so a finished
/// receive's number can never be mistaken for a later one's.
#[derive(Debug, Default)]
pub(crate) struct Seqs {
    next: u64,
    /// Receives not yet matched, in posting order (a flat list: it holds a handful).
    waiting: Vec<(Tag, u64)>,
}

impl Seqs {
    /// Numbers a new receive for `tag`.
    pub(crate) fn post(&mut self, tag: Tag) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.waiting.push((tag, seq));
        seq
    }

    /// True when receive `seq` of `tag` is the next to take a message.
    pub(crate) fn is_next(&mut self, tag: Tag, seq: u64) -> bool {
        self.waiting
            .iter()
            .find(|(t, _)| *t == tag)
            .is_some_and(|(_, s)| *s == seq)
    }

    /// Receive `seq` of `tag` took its message (it must be the next).
    pub(crate) fn take(&mut self, tag: Tag, seq: u64) {
        self.remove(tag, seq);
    }

    /// Receive `seq` of `tag` was dropped before it took a message.
    pub(crate) fn cancel(&mut self, tag: Tag, seq: u64) {
        self.remove(tag, seq);
    }

    fn remove(&mut self, tag: Tag, seq: u64) {
        if let Some(i) = self.waiting.iter().position(|e| *e == (tag, seq)) {
            self.waiting.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_within_tag_and_cancel() {
        let mut s = Seqs::default();
        let a = s.post(1);
        let b = s.post(1);
        let c = s.post(2);
        assert!(s.is_next(1, a));
        assert!(!s.is_next(1, b));
        assert!(s.is_next(2, c));
        s.cancel(1, a);
        assert!(s.is_next(1, b));
        s.take(1, b);
        let d = s.post(1);
        assert!(s.is_next(1, d));
        s.take(1, d);
        s.take(2, c);
        assert!(s.waiting.is_empty(), "settled tags leave no entry");
        assert!(s.post(1) > d, "numbers are never reused");
    }

    #[test]
    fn cancel_of_a_later_receive_waits_its_turn() {
        let mut s = Seqs::default();
        let a = s.post(9);
        let b = s.post(9);
        let c = s.post(9);
        s.cancel(9, b);
        assert!(s.is_next(9, a));
        s.take(9, a);
        assert!(s.is_next(9, c));
        s.take(9, c);
        assert!(s.waiting.is_empty());
    }
}
