//! Receipts: how a send learns, in its own call, whether its receiver agrees (MPI_Ssend's
//! handshake, reduced to one 32-byte message).
//!
//! A receive, when it is posted, sends its peer a receipt: the receive's own description
//! (dtype and count, numbered among this rank's receives from that peer). A send is done only
//! when its data is on its way *and* the receipt of the matching receive has come back and
//! agrees; otherwise both ranks fail the call with a mismatch naming both calls (the
//! receiver's header check fails it on its side). So a blocking send returns once its
//! receiver has posted the receive, and every mismatch fails on every rank in the call, not
//! at the sender's next one. The receipt is posted before any data is waited for, so a
//! receiver that posted first has its receipt back before the sender's data is in the ring,
//! and for messages that wait on ring space it costs nothing more.
//!
//! Receipts share the stream with the data, in any order relative to the messages around
//! them (a rank posts its receives and sends in whatever order it likes), so they open with
//! their own magic ([`Header::to_receipt_bytes`]) and are taken off the stream wherever one
//! can start: at a message boundary, that is before a job that reads a header, or on an empty
//! queue while no collective is on the streams ([`Engine::at_rest`]). A receiver puts its
//! receipt ahead of its own sends that have not started, so a receipt never waits behind a
//! large message the sender has not asked for yet.

use super::engine::Engine;
use super::header::{Header, RECEIPT_FIRST_BYTE};
use crate::error::Error;
use std::collections::VecDeque;

/// One peer's receipts, both ways.
#[derive(Default)]
pub(crate) struct Receipts {
    /// Our sends to the peer whose receipt has not come: (operation, our description).
    awaited: VecDeque<(u64, Header)>,
    /// Receipts that came before the send they answer was posted.
    early: VecDeque<Header>,
    /// A receipt being read (TCP may hand it over in pieces).
    buf: [u8; Header::LEN],
    pos: usize,
    /// Receipts sent to the peer, and sends made to it: the numbers that pair them.
    sent: u64,
    sends: u64,
}

impl Receipts {
    pub fn awaiting(&self) -> bool {
        !self.awaited.is_empty()
    }

    /// A send waits for a receipt that has come already.
    pub fn pairable(&self) -> bool {
        !self.awaited.is_empty() && !self.early.is_empty()
    }

    pub fn clear(&mut self) {
        self.awaited.clear();
        self.pos = 0;
    }
}

impl Engine {
    /// The receiver's side: queues the receipt of a receive from `peer` described by `h`.
    pub(crate) fn post_receipt(&mut self, peer: usize, mut h: Header) {
        h.seq = self.receipts[peer].sent;
        self.receipts[peer].sent += 1;
        self.send_inline_first(peer, h.to_receipt_bytes());
    }

    /// The sender's side: the send to `peer` described by `h` (under the current operation)
    /// is done only once its receipt has come and agrees.
    pub(crate) fn await_receipt(&mut self, peer: usize, mut h: Header) {
        h.seq = self.receipts[peer].sends;
        self.receipts[peer].sends += 1;
        let owner = self.current_op();
        self.receipts[peer].awaited.push_back((owner, h));
        self.count(owner);
        self.activate(peer);
    }

    /// Takes the receipts at the head of `peer`'s stream, which must be at a message
    /// boundary; whether it took any bytes. While [`Engine::receipt_unfinished`], a receipt
    /// has started but its rest has not arrived, and nothing else may read the stream.
    pub(crate) fn take_receipts(&mut self, peer: usize) -> Result<bool, Error> {
        let op = self.op;
        let mut took = false;
        loop {
            let link = self.links[peer]
                .as_mut()
                .expect("a receipt from a peer without a link");
            let view = match link.peek() {
                Ok(view) => view,
                // A peer may write its last receipt and then finish and close: what we took
                // stands, and a reader that still needs the stream reports the close.
                Err(_) if took => return Ok(true),
                Err(source) => return Err(Error::PeerFailed { op, peer, source }),
            };
            let r = &mut self.receipts[peer];
            if view.is_empty() || (r.pos == 0 && view[0] != RECEIPT_FIRST_BYTE) {
                return Ok(took);
            }
            let n = view.len().min(Header::LEN - r.pos);
            r.buf[r.pos..r.pos + n].copy_from_slice(&view[..n]);
            r.pos += n;
            link.consume(n);
            took = true;
            if r.pos < Header::LEN {
                return Ok(true);
            }
            r.pos = 0;
            let Some(got) = Header::receipt_from_bytes(&r.buf) else {
                return Err(Error::Protocol {
                    op,
                    peer,
                    detail: "a receipt with a bad magic".into(),
                });
            };
            r.early.push_back(got);
            self.match_receipts(peer)?;
        }
    }

    /// Whether the head of `peer`'s stream (at a boundary, receipts taken) is the first byte of
    /// a message: a reader may start only then, or it could read a receipt that arrived just
    /// after [`Engine::take_receipts`] looked.
    pub(crate) fn message_next(&mut self, peer: usize) -> bool {
        if self.receipt_unfinished(peer) {
            return false;
        }
        let link = self.links[peer].as_mut().expect("a peer without a link");
        // An error is left to the reader, which reports it.
        link.peek().map_or(true, |v| {
            v.first().is_some_and(|&b| b != RECEIPT_FIRST_BYTE)
        })
    }

    /// A receipt from `peer` is half read: the stream is not at a message boundary.
    pub(crate) fn receipt_unfinished(&self, peer: usize) -> bool {
        self.receipts[peer].pos > 0
    }

    /// Pairs `peer`'s receipts with our sends that wait for them, in order; a receipt that
    /// disagrees with its send fails the call.
    pub(crate) fn match_receipts(&mut self, peer: usize) -> Result<(), Error> {
        loop {
            let r = &mut self.receipts[peer];
            if r.awaited.is_empty() || r.early.is_empty() {
                return Ok(());
            }
            let (owner, mine) = r.awaited.pop_front().expect("checked");
            let got = r.early.pop_front().expect("checked");
            self.uncount(owner);
            mine.check(&got, self.op, peer)?;
        }
    }

    /// Whether a receipt from `peer` is what we still wait for (for the timeout's words).
    pub(crate) fn awaits_receipt(&self, peer: usize) -> bool {
        self.receipts[peer].awaiting()
    }
}
