//! Per-tag ordering of posted receives, shared by the transports.
//!
//! Each receive gets a sequence number within its tag when posted; it may take a message only
//! when every earlier receive of that tag has taken one (or was dropped unmatched). This gives
//! MPI's rule: same tag, same order; different tags, any order.

use std::collections::{HashMap, HashSet};

use crate::api::Tag;

#[derive(Debug, Default)]
pub(crate) struct Seqs {
    posted: HashMap<Tag, u64>,
    matched: HashMap<Tag, u64>,
    cancelled: HashSet<(Tag, u64)>,
}

impl Seqs {
    /// Numbers a new receive for `tag`.
    pub(crate) fn post(&mut self, tag: Tag) -> u64 {
        let n = self.posted.entry(tag).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// True when receive `seq` of `tag` is the next to take a message.
    pub(crate) fn is_next(&mut self, tag: Tag, seq: u64) -> bool {
        let m = self.matched.entry(tag).or_insert(0);
        while self.cancelled.remove(&(tag, *m)) {
            *m += 1;
        }
        *m == seq
    }

    /// Receive `seq` of `tag` took its message.
    pub(crate) fn take(&mut self, tag: Tag, seq: u64) {
        debug_assert!(self.matched.get(&tag).copied().unwrap_or(0) == seq);
        *self.matched.entry(tag).or_insert(0) = seq + 1;
    }

    /// Receive `seq` of `tag` was dropped before it took a message.
    pub(crate) fn cancel(&mut self, tag: Tag, seq: u64) {
        let m = self.matched.get(&tag).copied().unwrap_or(0);
        if seq >= m {
            self.cancelled.insert((tag, seq));
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
    }
}
