//! The receiving half of a `shm` connection: matching arrived messages to receives, spilling
//! the ones nobody waits for yet, and noticing a peer that is gone.

use super::*;

impl ShmConnection {
    /// Takes a fully or partly spilled message for receive (tag, seq), if one is waiting.
    /// Returns (bytes, filled, complete); an incomplete spill is the message being read, which
    /// the caller then owns from byte `filled` on.
    pub(super) fn take_spill(&self, rx: &mut Rx, tag: Tag, seq: u64) -> Option<Taken> {
        if let Some(i) = rx.spilled_for.iter().position(|(k, _)| *k == (tag, seq)) {
            let (_, s) = rx.spilled_for.swap_remove(i);
            let complete = s.filled == s.data.len();
            if !complete {
                if let Some(cur) = rx.cur.as_mut() {
                    cur.owner = Owner::Recv(tag, seq);
                }
            }
            return Some(Taken::Bytes(s.data, s.filled, complete));
        }
        if !rx.seqs.is_next(tag, seq) {
            return None;
        }
        let qi = rx
            .unexpected
            .iter()
            .position(|(t, q)| *t == tag && !q.is_empty())?;
        let s = rx.unexpected[qi].1.pop_front()?;
        if rx.unexpected[qi].1.is_empty() {
            rx.unexpected.swap_remove(qi);
        }
        rx.seqs.take(tag, seq);
        if let Some(r) = s.rdv {
            return Some(Taken::Rdv(r));
        }
        let complete = s.filled == s.data.len();
        if !complete {
            // Only the message being read can be incomplete.
            if let Some(cur) = rx.cur.as_mut() {
                cur.owner = Owner::Recv(tag, seq);
            }
        }
        Some(Taken::Bytes(s.data, s.filled, complete))
    }

    pub(in crate::shm) fn spill_of(&self, tag: Tag, seq: u64) -> Option<Taken> {
        let mut rx = self.rx.borrow_mut();
        self.take_spill(&mut rx, tag, seq)
    }

    /// Advances the receive stream on behalf of receive (tag, seq), which has no spill waiting
    /// (call `spill_of` first). `matched` says whether it already took its message.
    pub(in crate::shm) fn pump(
        &self,
        tag: Tag,
        seq: u64,
        matched: bool,
        mut sink: Sink<'_>,
    ) -> Result<Pumped> {
        if self.chunk_out.get() {
            return Ok(if matched {
                self.progress_of(tag, seq)
            } else {
                Pumped::Waiting
            });
        }
        let mut guard = self.rx.borrow_mut();
        let rx = &mut *guard;
        if let Some(why) = &rx.failed {
            return Err(Error::Broken {
                transport: NAME,
                peer: self.peer.clone(),
                reason: why.clone(),
            });
        }
        let ring = 1 - self.side;
        let me = (tag, seq);
        if !matched && !rx.seqs.is_next(tag, seq) {
            // An earlier receive of this tag must take the next message first.
            return Ok(Pumped::Waiting);
        }
        let mut matched = matched;
        let mut outcome = None;
        loop {
            if let Some(cur) = &rx.cur {
                if cur.done == cur.len {
                    // All data consumed: skip the padding once the producer published it.
                    let end = align_rec(rx.tail);
                    if rx.head_cache < end {
                        rx.head_cache = self.refreshed_head(rx.head_cache, ring);
                        if rx.head_cache < end {
                            break;
                        }
                    }
                    if cur.owner == Owner::Recv(tag, seq) {
                        outcome = Some(Pumped::Progress {
                            done: cur.len,
                            len: cur.len,
                        });
                    }
                    rx.tail = end;
                    rx.cur = None;
                }
            }
            let Some(cur) = rx.cur.as_mut() else {
                if matched || !rx.seqs.is_next(tag, seq) {
                    // Done, or an earlier receive of this tag is owed the next message: do not
                    // read ahead on its behalf.
                    break;
                }
                // A record is there once its marker holds its own position (plus one): one
                // cache line carries the signal, the header and a small message.
                if self.map.marker(ring, rx.tail).load(Ordering::Acquire) != rx.tail + 1 {
                    break;
                }
                let mut hdr = [0u8; 24];
                // SAFETY: the header was published by the marker's release store; we are the
                // only consumer.
                unsafe { self.map.read(ring, rx.tail + 8, &mut hdr) };
                let t = u64::from_ne_bytes(hdr[..8].try_into().unwrap_or_default());
                let len = u64::from_ne_bytes(hdr[8..16].try_into().unwrap_or_default());
                let first = u64::from_ne_bytes(hdr[16..].try_into().unwrap_or_default());
                if first == RDV_FIRST && len <= MAX_MESSAGE {
                    let mut d = [0u8; 24];
                    // SAFETY: a rendezvous record is published whole by its marker.
                    unsafe { self.map.read(ring, rx.tail + HDR, &mut d) };
                    let word =
                        |i: usize| u64::from_ne_bytes(d[i..i + 8].try_into().unwrap_or_default());
                    let r = Rdv {
                        pid: word(0) as u32,
                        addr: word(8),
                        seq: word(16),
                        len: len as usize,
                    };
                    rx.tail += REC_ALIGN;
                    rx.head_cache = rx.head_cache.max(rx.tail);
                    if t == tag {
                        rx.seqs.take(tag, seq);
                        self.publish_tail(rx);
                        return Ok(Pumped::Rendezvous(r));
                    }
                    let spill = Spill {
                        data: Vec::new(),
                        filled: 0,
                        rdv: Some(r),
                    };
                    match rx.unexpected.iter_mut().find(|(u, _)| *u == t) {
                        Some((_, q)) => q.push_back(spill),
                        None => rx.unexpected.push((t, VecDeque::from([spill]))),
                    }
                    continue;
                }
                if len > MAX_MESSAGE || first > len {
                    let why = format!(
                        "record header claims {len} bytes ({first} published): ring corrupted"
                    );
                    rx.failed = Some(why.clone());
                    return Err(Error::BadFrame {
                        transport: NAME,
                        peer: self.peer.clone(),
                        reason: why,
                    });
                }
                // What the header's release published, without reading the producer's head.
                let published = if first == len {
                    align_rec(rx.tail + HDR + len)
                } else {
                    rx.tail + HDR + first
                };
                rx.head_cache = rx.head_cache.max(published);
                let len = len as usize;
                rx.tail += HDR;
                if t != tag {
                    let spill = Spill {
                        data: alloc_spill(len)?,
                        filled: 0,
                        rdv: None,
                    };
                    match rx.unexpected.iter_mut().find(|(u, _)| *u == t) {
                        Some((_, q)) => q.push_back(spill),
                        None => rx.unexpected.push((t, VecDeque::from([spill]))),
                    }
                    rx.cur = Some(Cur {
                        tag: t,
                        len,
                        done: 0,
                        owner: Owner::Unexpected,
                    });
                    continue;
                }
                rx.seqs.take(tag, seq);
                matched = true;
                let wrong = match &sink {
                    Sink::Copy(buf) if len > buf.len() => Some(Error::Truncated {
                        transport: NAME,
                        peer: self.peer.clone(),
                        tag,
                        message: len,
                        buffer: buf.len(),
                    }),
                    Sink::View(want) if len != *want => Some(Error::SizeMismatch {
                        transport: NAME,
                        peer: self.peer.clone(),
                        tag,
                        message: len,
                        expected: *want,
                    }),
                    _ => None,
                };
                let owner = if wrong.is_some() {
                    Owner::Discard
                } else {
                    Owner::Recv(tag, seq)
                };
                rx.cur = Some(Cur {
                    tag,
                    len,
                    done: 0,
                    owner,
                });
                if let Some(e) = wrong {
                    self.publish_tail(rx);
                    return Err(e);
                }
                continue;
            };
            // Move data of the current record.
            let mut avail = rx.head_cache - rx.tail;
            if avail == 0 {
                rx.head_cache = self.refreshed_head(rx.head_cache, ring);
                avail = rx.head_cache - rx.tail;
                if avail == 0 {
                    break;
                }
            }
            let n = (avail as usize).min(cur.len - cur.done);
            match (cur.owner, &mut sink) {
                (Owner::Recv(t, s), Sink::Copy(buf)) if (t, s) == me => {
                    // SAFETY: n published, unreleased bytes at tail; we are the only consumer.
                    unsafe {
                        self.map
                            .read(ring, rx.tail, &mut buf[cur.done..cur.done + n])
                    };
                    cur.done += n;
                    rx.tail += n as u64;
                }
                (Owner::Recv(t, s), Sink::View(_)) if (t, s) == me => {
                    let at = (rx.tail % self.map.ring_bytes as u64) as usize;
                    let n = n.min(self.map.ring_bytes - at);
                    outcome = Some(Pumped::Visible {
                        pos: rx.tail,
                        offset: cur.done,
                        len: n,
                    });
                    break;
                }
                (Owner::Recv(t, s), _) => {
                    // Its receive is not the one being tested: keep the stream moving.
                    let data = alloc_spill(cur.len - cur.done)?;
                    rx.spilled_for.push((
                        (t, s),
                        Spill {
                            data,
                            filled: 0,
                            rdv: None,
                        },
                    ));
                    cur.owner = Owner::SpillFor(t, s, cur.done);
                }
                (Owner::SpillFor(t, s, base), _) => {
                    if let Some((_, sp)) = rx.spilled_for.iter_mut().find(|(k, _)| *k == (t, s)) {
                        let from = cur.done - base;
                        // SAFETY: as above.
                        unsafe { self.map.read(ring, rx.tail, &mut sp.data[from..from + n]) };
                        sp.filled = from + n;
                    }
                    cur.done += n;
                    rx.tail += n as u64;
                }
                (Owner::Unexpected, _) => {
                    let t = cur.tag;
                    if let Some(sp) = rx
                        .unexpected
                        .iter_mut()
                        .find(|(u, _)| *u == t)
                        .and_then(|(_, q)| q.back_mut())
                    {
                        // SAFETY: as above.
                        unsafe {
                            self.map
                                .read(ring, rx.tail, &mut sp.data[cur.done..cur.done + n])
                        };
                        sp.filled = cur.done + n;
                    }
                    cur.done += n;
                    rx.tail += n as u64;
                }
                (Owner::Discard, _) => {
                    cur.done += n;
                    rx.tail += n as u64;
                }
            }
        }
        self.publish_tail(rx);
        let outcome = match outcome {
            Some(o) => o,
            None if matched => match &rx.cur {
                Some(c) if c.owner == Owner::Recv(tag, seq) => Pumped::Progress {
                    done: c.done,
                    len: c.len,
                },
                // Our record was finished in an earlier call (complete) or spilled.
                _ => Pumped::Waiting,
            },
            None => Pumped::Waiting,
        };
        let stalled = match outcome {
            Pumped::Waiting => true,
            Pumped::Progress { done, len } => done < len,
            Pumped::Visible { .. } | Pumped::Rendezvous(_) => false,
        };
        if stalled {
            self.check_peer(rx, Some(me))?;
        } else {
            rx.idle_polls = 0;
        }
        Ok(outcome)
    }

    pub(super) fn progress_of(&self, tag: Tag, seq: u64) -> Pumped {
        match &self.rx.borrow().cur {
            Some(c) if c.owner == Owner::Recv(tag, seq) => Pumped::Progress {
                done: c.done,
                len: c.len,
            },
            _ => Pumped::Waiting,
        }
    }

    /// How far the producer has published, looked at again. The producer stores a record's
    /// marker (with its header and first piece) before it moves its head past them, so what
    /// this consumer already took on a marker's word can lie beyond the head it now reads:
    /// the view never moves back (a head behind `tail` would make `head - tail` wrap, and a
    /// release build read bytes not yet written).
    fn refreshed_head(&self, cached: u64, ring: usize) -> u64 {
        cached.max(self.map.head(ring).load(Ordering::Acquire))
    }

    pub(super) fn publish_tail(&self, rx: &mut Rx) {
        if rx.tail != rx.published_tail {
            self.map
                .tail(1 - self.side)
                .store(rx.tail, Ordering::Release);
            rx.published_tail = rx.tail;
        }
    }

    /// With nothing to read: is the peer gone for good?
    pub(super) fn check_peer(&self, rx: &mut Rx, me: Option<(Tag, u64)>) -> Result<()> {
        let closed = self.peer_closed() || self.peer_dead(rx);
        if !closed {
            return Ok(());
        }
        // Data published before the close flag is visible now: only fail when none is left.
        let head = self.map.head(1 - self.side).load(Ordering::Acquire);
        if head != rx.tail {
            return Ok(());
        }
        let during = match (me, &rx.cur) {
            (_, Some(c)) => format!(
                " during a {}-byte message with tag {} ({} received)",
                c.len, c.tag, c.done
            ),
            (Some((t, _)), None) => format!(" while a receive with tag {t} was waiting"),
            _ => String::new(),
        };
        Err(self.closed_error(during))
    }

    /// Checks that no message is in flight either way (what a stream needs to start from
    /// these rings) and publishes how far this end read.
    pub(in crate::shm) fn quiesce(&self) -> Result<()> {
        let tx = self.tx.borrow();
        let mut rx = self.rx.borrow_mut();
        let busy = if tx.broken.is_some() {
            Some("the connection is broken")
        } else if tx.active != tx.next_seq || self.chunk_out.get() {
            Some("a send or a zero-copy chunk is still out")
        } else if rx.cur.is_some() || !rx.unexpected.is_empty() || !rx.spilled_for.is_empty() {
            Some("a message arrived that nobody received")
        } else {
            None
        };
        if let Some(why) = busy {
            return Err(Error::Usage {
                transport: NAME,
                reason: format!("a connection becomes a stream with no message in flight: {why}"),
            });
        }
        self.publish_tail(&mut rx);
        Ok(())
    }

    /// Called when a zero-copy chunk of `n` bytes is dropped.
    pub(in crate::shm) fn release_chunk(&self, n: usize) {
        let mut rx = self.rx.borrow_mut();
        rx.tail += n as u64;
        if let Some(cur) = rx.cur.as_mut() {
            cur.done += n;
        }
        self.publish_tail(&mut rx);
        self.chunk_out.set(false);
    }

    /// A receive that matched (or not) is dropped before completing.
    pub(in crate::shm) fn abandon_recv(&self, tag: Tag, seq: u64, matched: bool) {
        let mut rx = self.rx.borrow_mut();
        if !matched {
            rx.seqs.cancel(tag, seq);
            return;
        }
        rx.spilled_for.retain(|(k, _)| *k != (tag, seq));
        if let Some(cur) = rx.cur.as_mut() {
            match cur.owner {
                Owner::Recv(t, s) | Owner::SpillFor(t, s, _) if (t, s) == (tag, seq) => {
                    cur.owner = Owner::Discard
                }
                _ => {}
            }
        }
    }
}
