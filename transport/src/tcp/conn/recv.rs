//! The receiving half of a `tcp` connection: matching arrived messages to receives, spilling
//! the ones nobody waits for yet, and noticing a peer that is gone.

use super::*;

impl TcpConnection {
    /// Reads from socket `k` into `dst`. Ok(0) with `dst` non-empty means "nothing now".
    pub(super) fn read_sock(&self, rx: &mut Rx, k: usize, dst: &mut [u8]) -> Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        if k == 0 && rx.in_start < rx.in_end {
            let n = dst.len().min(rx.in_end - rx.in_start);
            dst[..n].copy_from_slice(&rx.inbuf[rx.in_start..rx.in_start + n]);
            rx.in_start += n;
            return Ok(n);
        }
        if rx.eof[k] {
            return Ok(0);
        }
        let buffered = k == 0 && dst.len() < DIRECT;
        let res = if buffered {
            (&self.socks[0]).read(&mut rx.inbuf[..])
        } else {
            (&self.socks[k]).read(dst)
        };
        match res {
            Ok(0) => {
                rx.eof[k] = true;
                Ok(0)
            }
            Ok(n) if buffered => {
                rx.in_start = 0;
                rx.in_end = n;
                let m = dst.len().min(n);
                dst[..m].copy_from_slice(&rx.inbuf[..m]);
                rx.in_start = m;
                Ok(m)
            }
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) if gone(&e) => {
                rx.eof[k] = true;
                Ok(0)
            }
            Err(e) => Err(Error::io(NAME, format!("receiving from {}", self.peer), e)),
        }
    }

    pub(super) fn bad_frame(&self, rx: &mut Rx, reason: String) -> Error {
        rx.failed = Some(format!("bad frame: {reason}"));
        self.shut();
        Error::BadFrame {
            transport: NAME,
            peer: self.peer.clone(),
            reason,
        }
    }

    /// Takes a spill for receive (tag, seq). A complete one is returned; a partial one (the
    /// message being read) is copied into `sink` when it is a buffer, and ownership returns
    /// to the receive.
    pub(super) fn claim_spill(
        &self,
        rx: &mut Rx,
        tag: Tag,
        seq: u64,
        sink: &mut Sink<'_>,
    ) -> Result<Option<Pumped>> {
        let spill = if let Some(i) = rx.spilled_for.iter().position(|(k, _)| *k == (tag, seq)) {
            Some(rx.spilled_for.swap_remove(i).1)
        } else if rx.seqs.is_next(tag, seq) {
            let q = rx
                .unexpected
                .iter()
                .position(|(t, q)| *t == tag && !q.is_empty());
            match q {
                Some(qi) => {
                    let s = rx.unexpected[qi].1.pop_front();
                    if rx.unexpected[qi].1.is_empty() {
                        rx.unexpected.swap_remove(qi);
                    }
                    rx.seqs.take(tag, seq);
                    s
                }
                None => None,
            }
        } else {
            None
        };
        let Some(spill) = spill else { return Ok(None) };
        let len = spill.data.len();
        if let Sink::Copy(buf) = sink {
            if len > buf.len() {
                if !spill.complete {
                    if let Some(c) = rx.cur.as_mut() {
                        c.owner = Owner::Discard;
                    }
                }
                return Err(Error::Truncated {
                    transport: NAME,
                    peer: self.peer.clone(),
                    tag,
                    message: len,
                    buffer: buf.len(),
                });
            }
        }
        if spill.complete {
            if let Sink::Copy(buf) = sink {
                // A receive that had taken part of the message holds those bytes already; the
                // spill holds the rest, per part from `base` on.
                let ranges = wire::stripe(len, self.socks.len(), self.stripe_min);
                for ((off, plen), base) in ranges
                    .into_iter()
                    .zip(spill.base.iter().chain(std::iter::repeat(&0)))
                {
                    buf[off + base..off + plen]
                        .copy_from_slice(&spill.data[off + base..off + plen]);
                }
                return Ok(Some(Pumped::Progress { done: len, len }));
            }
            let ranges = wire::stripe(len, self.socks.len(), self.stripe_min)
                .into_iter()
                .zip(spill.base.iter().chain(std::iter::repeat(&0)))
                .map(|((off, plen), base)| (off + base, off + plen))
                .filter(|(a, b)| a < b)
                .collect();
            return Ok(Some(Pumped::Spilled {
                data: spill.data,
                ranges,
            }));
        }
        let Some(cur) = rx.cur.as_mut() else {
            return Ok(None);
        };
        match sink {
            Sink::Copy(buf) => {
                for (p, base) in cur
                    .parts
                    .iter()
                    .zip(spill.base.iter().chain(std::iter::repeat(&0)))
                {
                    let r = p.off + base..p.off + p.done;
                    buf[r.clone()].copy_from_slice(&spill.data[r]);
                }
                cur.owner = Owner::Recv(tag, seq);
                let done = cur.parts.iter().map(|p| p.done).sum();
                Ok(Some(Pumped::Progress { done, len }))
            }
            Sink::View { .. } => {
                // A view waits for the spill to fill, then hands it out whole.
                cur.owner = Owner::SpillFor(tag, seq);
                rx.spilled_for.push(((tag, seq), spill));
                Ok(Some(Pumped::Waiting))
            }
        }
    }

    /// Advances the stream for receive (tag, seq); `matched` says it already took a message.
    pub(in crate::tcp) fn pump(
        &self,
        tag: Tag,
        seq: u64,
        matched: bool,
        mut sink: Sink<'_>,
    ) -> Result<Pumped> {
        let mut guard = self.rx.borrow_mut();
        let rx = &mut *guard;
        if let Some(why) = &rx.failed {
            return Err(self.broken(why));
        }
        if let Some(p) = self.claim_spill(rx, tag, seq, &mut sink)? {
            if !matches!(p, Pumped::Progress { done, len } if done < len) {
                return Ok(p);
            }
        }
        let me = (tag, seq);
        let mut matched = matched
            || rx
                .cur
                .as_ref()
                .is_some_and(|c| c.owner == Owner::Recv(tag, seq));
        if !matched && !rx.seqs.is_next(tag, seq) {
            return Ok(Pumped::Waiting);
        }
        loop {
            if rx.cur.is_none() {
                if matched {
                    return Ok(Pumped::Waiting);
                }
                let mut hdr = rx.hdr;
                let n = self.read_sock(rx, 0, &mut hdr[rx.hdr_fill..])?;
                rx.hdr = hdr;
                rx.hdr_fill += n;
                if rx.hdr_fill < FRAME_LEN {
                    if rx.eof[0] && rx.in_start == rx.in_end {
                        if rx.hdr_fill > 0 {
                            let why = format!(
                                "connection ended {} bytes into a frame header",
                                rx.hdr_fill
                            );
                            return Err(self.bad_frame(rx, why));
                        }
                        return Err(
                            self.closed(format!(" while a receive with tag {tag} was waiting"))
                        );
                    }
                    return Ok(Pumped::Waiting);
                }
                rx.hdr_fill = 0;
                let f = match Frame::decode(&rx.hdr, self.my_max) {
                    Ok(f) if f.kind == KIND_MESSAGE => f,
                    Ok(f) => {
                        return Err(self.bad_frame(
                            rx,
                            format!("part frame (kind {}) where a message was due", f.kind),
                        ))
                    }
                    Err(why) => return Err(self.bad_frame(rx, why)),
                };
                let len = f.len as usize;
                let parts = wire::stripe(len, self.socks.len(), self.stripe_min)
                    .into_iter()
                    .enumerate()
                    .map(|(k, (off, plen))| RxPart {
                        sock: k,
                        off,
                        len: plen,
                        done: 0,
                        hdr: [0; FRAME_LEN],
                        hdr_fill: if k == 0 { FRAME_LEN } else { 0 },
                    })
                    .collect();
                let owner = if f.tag == tag {
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
                        Sink::View { want, .. } if len != *want => Some(Error::SizeMismatch {
                            transport: NAME,
                            peer: self.peer.clone(),
                            tag,
                            message: len,
                            expected: *want,
                        }),
                        _ => None,
                    };
                    if let Some(e) = wrong {
                        rx.cur = Some(Cur {
                            tag,
                            len,
                            parts,
                            owner: Owner::Discard,
                        });
                        return Err(e);
                    }
                    Owner::Recv(tag, seq)
                } else {
                    let spill = Spill {
                        data: alloc(len)?,
                        base: Vec::new(),
                        complete: false,
                    };
                    match rx.unexpected.iter_mut().find(|(t, _)| *t == f.tag) {
                        Some((_, q)) => q.push_back(spill),
                        None => rx.unexpected.push((f.tag, VecDeque::from([spill]))),
                    }
                    Owner::Unexpected
                };
                rx.cur = Some(Cur {
                    tag: f.tag,
                    len,
                    parts,
                    owner,
                });
            }
            let Some(mut cur) = rx.cur.take() else {
                continue;
            };
            if let Owner::Recv(t, s) = cur.owner {
                if (t, s) != me {
                    // Its receive is not the one being tested: keep the stream moving.
                    let data = alloc(cur.len)?;
                    let base = cur.parts.iter().map(|p| p.done).collect();
                    rx.spilled_for.push((
                        (t, s),
                        Spill {
                            data,
                            base,
                            complete: false,
                        },
                    ));
                    cur.owner = Owner::SpillFor(t, s);
                }
            }
            let res = self.move_parts(rx, &mut cur, me, &mut sink);
            let complete = cur
                .parts
                .iter()
                .all(|p| p.done == p.len && p.hdr_fill == FRAME_LEN);
            let (owner, ctag, clen) = (cur.owner, cur.tag, cur.len);
            let done: usize = cur.parts.iter().map(|p| p.done).sum();
            if complete {
                self.finish_spill(rx, owner, ctag);
            } else {
                rx.cur = Some(cur);
            }
            let staged = res?;
            if owner == Owner::Recv(tag, seq) {
                if let Some((offset, n)) = staged {
                    return Ok(Pumped::Staged {
                        offset,
                        n,
                        done,
                        len: clen,
                    });
                }
                return Ok(Pumped::Progress { done, len: clen });
            }
            if !complete {
                return Ok(Pumped::Waiting);
            }
        }
    }

    pub(super) fn finish_spill(&self, rx: &mut Rx, owner: Owner, tag: Tag) {
        match owner {
            Owner::Unexpected => {
                if let Some(s) = rx
                    .unexpected
                    .iter_mut()
                    .find(|(t, _)| *t == tag)
                    .and_then(|(_, q)| q.back_mut())
                {
                    s.complete = true;
                }
            }
            Owner::SpillFor(t, s) => {
                if let Some((_, sp)) = rx.spilled_for.iter_mut().find(|(k, _)| *k == (t, s)) {
                    sp.complete = true;
                }
            }
            _ => {}
        }
    }

    /// Moves bytes of `cur` from the sockets to their destination. For a view, stops after
    /// the first read and returns (message offset, bytes) staged.
    pub(super) fn move_parts(
        &self,
        rx: &mut Rx,
        cur: &mut Cur,
        me: (Tag, u64),
        sink: &mut Sink<'_>,
    ) -> Result<Option<(usize, usize)>> {
        loop {
            let mut progressed = false;
            for i in 0..cur.parts.len() {
                let k = cur.parts[i].sock;
                if cur.parts[i].hdr_fill < FRAME_LEN {
                    let mut hdr = cur.parts[i].hdr;
                    let from = cur.parts[i].hdr_fill;
                    let n = self.read_sock(rx, k, &mut hdr[from..])?;
                    cur.parts[i].hdr = hdr;
                    cur.parts[i].hdr_fill += n;
                    if cur.parts[i].hdr_fill < FRAME_LEN {
                        if rx.eof[k] {
                            let why = format!(
                                "socket {k} ended {} bytes into a part header",
                                cur.parts[i].hdr_fill
                            );
                            return Err(self.bad_frame(rx, why));
                        }
                        continue;
                    }
                    match Frame::decode(&hdr, self.my_max) {
                        Ok(f) if f.kind == KIND_PART && f.tag == cur.tag && f.len as usize == cur.parts[i].len => {}
                        Ok(f) => return Err(self.bad_frame(rx, format!("socket {k}: part header {f:?} does not match message of {} bytes with tag {}", cur.len, cur.tag))),
                        Err(why) => return Err(self.bad_frame(rx, format!("socket {k}: {why}"))),
                    }
                    progressed = true;
                }
                let p = &cur.parts[i];
                if p.done == p.len {
                    continue;
                }
                let (lo, hi) = (p.off + p.done, p.off + p.len);
                let n = match cur.owner {
                    Owner::Recv(t, s) if (t, s) == me => match sink {
                        Sink::Copy(buf) => self.read_sock(rx, k, &mut buf[lo..hi])?,
                        Sink::View { staging, .. } => {
                            let m = (hi - lo).min(staging.len());
                            let n = self.read_sock(rx, k, &mut staging[..m])?;
                            if n > 0 {
                                cur.parts[i].done += n;
                                return Ok(Some((lo, n)));
                            }
                            0
                        }
                    },
                    Owner::Unexpected => {
                        let tag = cur.tag;
                        let q = rx.unexpected.iter().position(|(t, _)| *t == tag);
                        let mut data = q
                            .and_then(|qi| {
                                rx.unexpected[qi]
                                    .1
                                    .back_mut()
                                    .map(|s| std::mem::take(&mut s.data))
                            })
                            .unwrap_or_default();
                        let n = if data.len() >= hi {
                            self.read_sock(rx, k, &mut data[lo..hi])?
                        } else {
                            0
                        };
                        if let Some(s) = q.and_then(|qi| rx.unexpected[qi].1.back_mut()) {
                            s.data = data;
                        }
                        n
                    }
                    Owner::SpillFor(t, s) => {
                        let at = rx.spilled_for.iter().position(|(key, _)| *key == (t, s));
                        let mut data = at
                            .map(|j| std::mem::take(&mut rx.spilled_for[j].1.data))
                            .unwrap_or_default();
                        let n = if data.len() >= hi {
                            self.read_sock(rx, k, &mut data[lo..hi])?
                        } else {
                            0
                        };
                        if let Some(j) = at {
                            rx.spilled_for[j].1.data = data;
                        }
                        n
                    }
                    Owner::Discard | Owner::Recv(..) => {
                        let mut scratch = [0u8; 8192];
                        let m = (hi - lo).min(scratch.len());
                        self.read_sock(rx, k, &mut scratch[..m])?
                    }
                };
                if n > 0 {
                    cur.parts[i].done += n;
                    progressed = true;
                } else if rx.eof[k] && !(k == 0 && rx.in_start < rx.in_end) {
                    rx.failed = Some("peer closed mid-message".into());
                    return Err(self.closed(format!(
                        " during a {}-byte message with tag {} ({} bytes received)",
                        cur.len,
                        cur.tag,
                        cur.parts.iter().map(|p| p.done).sum::<usize>()
                    )));
                }
            }
            let complete = cur
                .parts
                .iter()
                .all(|p| p.done == p.len && p.hdr_fill == FRAME_LEN);
            if complete || !progressed {
                return Ok(None);
            }
        }
    }

    pub(in crate::tcp) fn abandon_recv(&self, tag: Tag, seq: u64, matched: bool) {
        let mut rx = self.rx.borrow_mut();
        if !matched {
            rx.seqs.cancel(tag, seq);
            return;
        }
        rx.spilled_for.retain(|(k, _)| *k != (tag, seq));
        if let Some(cur) = rx.cur.as_mut() {
            if matches!(cur.owner, Owner::Recv(t, s) | Owner::SpillFor(t, s) if (t, s) == (tag, seq))
            {
                cur.owner = Owner::Discard;
            }
        }
    }
}
