//! The RDMA protocol state machine, written once against [`Verbs`].
//!
//! Each side owns a receive arena (a credit word, then `slots + 1` slots of `slot_size` bytes) that
//! the peer writes into, and a staging area of the same shape from which it writes into the
//! peer's arena. A message goes out as chunks, one per slot: an RDMA WRITE WITH IMMEDIATE of a
//! [`SlotHeader`] plus payload into slot `seq % (slots + 1)`, whose immediate (kind, payload length)
//! consumes one posted receive and tells the receiver a slot is full.
//!
//! Flow control is by credits: the receiver copies a slot out as soon as its completion is seen
//! (into the posted buffer that claimed the message, else into a spill buffer), counts it as
//! consumed, and RDMA-writes that count (plain write, no immediate, so it uses no receive) into
//! the sender's credit word. The sender writes chunk `seq` only if
//! `seq < min(peer_consumed, own_completed) + slots`: it never overwrites a slot the receiver has
//! not copied out, never reuses a staging slot the NIC may still read, and never sends more
//! immediates than the receiver has receives posted (it reposts one per completion).
//!
//! Each message's first chunk is written when the send is posted (or the post answers "retry"),
//! so first chunks arrive in posting order and receives of one tag match messages of that tag
//! in order; later chunks of different messages may interleave, so every send makes progress
//! whichever request the caller tests.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::verbs::{
    Access, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps, QpEndpoint,
    QpTransition, QueuePair, Verbs, VerbsError, WcOpcode, WcStatus, WorkCompletion, WriteWr,
};
use super::wire::{imm, ConnInfo, Kind, SlotHeader, CREDIT_AREA, SLOT_HEADER};

#[path = "protocol_types.rs"]
mod types;
pub use types::{ProtoConfig, ProtoError};

const WR_DATA: u64 = 1 << 56;
const WR_CREDIT: u64 = 2 << 56;
const WR_RECV: u64 = 3 << 56;
const WR_PROBE: u64 = 4 << 56;
const WR_KIND: u64 = 0xff << 56;

/// One side's verbs objects before the peer is known (queue pair in INIT, receives posted).
pub struct PreparedSide<V: Verbs> {
    qp: V::Qp,
    cq: V::Cq,
    arena: V::Mr,
    pd: V::Pd,
    ctx: V::Context,
    cfg: ProtoConfig,
    info: ConnInfo,
}

impl<V: Verbs> PreparedSide<V> {
    /// Opens `device` (or the first), registers the receive arena, creates the queue pair,
    /// moves it to INIT and posts one receive per slot.
    pub fn new(verbs: &V, device: Option<&str>, cfg: ProtoConfig) -> Result<Self, ProtoError> {
        cfg.check()?;
        let v = |source| ProtoError::Verbs {
            peer: "(not connected)".into(),
            source,
        };
        let ctx = verbs.open(device).map_err(v)?;
        let pd = ctx.alloc_pd().map_err(v)?;
        let slots = cfg.slots;
        let ring = slots + 1;
        let cq = ctx.create_cq(3 * ring + 8).map_err(v)?;
        let arena_len = cfg
            .slot_size
            .checked_mul(ring as usize)
            .and_then(|n| n.checked_add(CREDIT_AREA));
        let arena_len =
            arena_len.ok_or_else(|| ProtoError::Config("arena size overflows".into()))?;
        let arena = pd.alloc_mr(arena_len, Access::REMOTE_WRITE).map_err(v)?;
        let caps = QpCaps {
            max_send_wr: ring + 3,
            max_recv_wr: ring,
        };
        let mut qp = pd.create_qp(&cq, caps).map_err(v)?;
        qp.modify(QpTransition::Init { remote_write: true })
            .map_err(v)?;
        for _ in 0..ring {
            qp.post_recv(WR_RECV).map_err(v)?;
        }
        let (lid, gid) = ctx.port_address().map_err(v)?;
        let psn = psn_for(qp.qp_num());
        let info = ConnInfo {
            qp: QpEndpoint {
                qp_num: qp.qp_num(),
                lid,
                gid,
                psn,
            },
            arena_addr: arena.addr(),
            arena_rkey: arena.rkey(),
            slots,
            slot_size: cfg.slot_size as u32,
        };
        Ok(PreparedSide {
            qp,
            cq,
            arena,
            pd,
            ctx,
            cfg,
            info,
        })
    }

    /// What the peer needs (send it as [`ConnInfo::to_bytes`]).
    pub fn info(&self) -> ConnInfo {
        self.info
    }

    /// Moves the queue pair to RTR and RTS towards `remote`. The caller must not let the peer
    /// send before this returned on both sides' RTR (the transport's handshake sees to it).
    pub fn connect(mut self, remote: ConnInfo, peer: String) -> Result<Engine<V>, ProtoError> {
        let v = |source| ProtoError::Verbs {
            peer: peer.clone(),
            source,
        };
        let staging_len = (remote.slot_size as usize) * ring_len(&remote) as usize + CREDIT_AREA;
        let staging = self.pd.alloc_mr(staging_len, Access::LOCAL).map_err(v)?;
        self.qp
            .modify(QpTransition::Rtr {
                remote: remote.qp,
                min_rnr_timer: 12,
            })
            .map_err(v)?;
        let c = self.cfg;
        let rts = QpTransition::Rts {
            sq_psn: self.info.qp.psn,
            timeout: c.timeout,
            retry_cnt: c.retry_cnt,
            rnr_retry: c.rnr_retry,
        };
        self.qp.modify(rts).map_err(v)?;
        Ok(Engine {
            peer,
            qp: self.qp,
            cq: self.cq,
            arena: self.arena,
            staging,
            _pd: self.pd,
            _ctx: self.ctx,
            local: self.info,
            remote,
            next_seq: 0,
            completed: 0,
            peer_consumed: 0,
            staging_owner: vec![None; ring_len(&remote) as usize],
            inflight: HashMap::new(),
            credit_inflight: false,
            keepalive: self.cfg.keepalive,
            last_heard: Instant::now(),
            probe_inflight: false,
            advertised: 0,
            recv_seq: 0,
            consumed: 0,
            next_msg: 0,
            peer_next_msg: 0,
            incoming: HashMap::new(),
            by_tag: HashMap::new(),
            claims: HashMap::new(),
            order: recv::RecvOrder::default(),
            peer_closed: false,
            closed: false,
            dead: None,
            broken: None,
            bad_frame: false,
            wcs: Vec::with_capacity(64),
            max_outstanding: 0,
        })
    }
}

/// Physical slots of a ring: the advertised data slots plus the one reserved for CLOSE.
fn ring_len(info: &ConnInfo) -> u64 {
    u64::from(info.slots) + 1
}

/// Deterministic but distinct initial PSNs (any 24-bit value works; both sides exchange them).
fn psn_for(qpn: u32) -> u32 {
    qpn.wrapping_mul(0x9e37_79b9) & 0x00ff_ffff
}

/// A message whose first chunk arrived.
struct Incoming {
    total: usize,
    /// Bytes that arrived.
    received: usize,
    /// Bytes copied into the claiming receive's buffer; `spill` holds what follows them.
    delivered: usize,
    spill: Vec<u8>,
    /// Nobody wants it any more (truncated or abandoned): count bytes, keep none.
    discard: bool,
}

/// A handle to a posted receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecvId {
    tag: u64,
    seq: u64,
}

/// A send in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendId {
    msg: u64,
    /// Bytes posted so far.
    posted: usize,
    len: usize,
}

/// A connected RDMA channel. Fields drop in order: the queue pair first, so the NIC stops
/// touching the regions before they are deregistered.
pub struct Engine<V: Verbs> {
    peer: String,
    qp: V::Qp,
    cq: V::Cq,
    arena: V::Mr,
    staging: V::Mr,
    _pd: V::Pd,
    _ctx: V::Context,
    local: ConnInfo,
    remote: ConnInfo,
    // Sending.
    next_seq: u64,
    completed: u64,
    peer_consumed: u64,
    staging_owner: Vec<Option<u64>>,
    inflight: HashMap<u64, u32>,
    credit_inflight: bool,
    keepalive: Duration,
    last_heard: Instant,
    probe_inflight: bool,
    advertised: u64,
    // Receiving.
    recv_seq: u64,
    consumed: u64,
    next_msg: u64,
    peer_next_msg: u64,
    incoming: HashMap<u64, Incoming>,
    by_tag: HashMap<u64, VecDeque<u64>>,
    claims: HashMap<RecvId, u64>,
    order: recv::RecvOrder,
    // Health.
    peer_closed: bool,
    /// `close` ran (it runs once).
    closed: bool,
    dead: Option<String>,
    broken: Option<String>,
    /// `broken` because of what the peer wrote (reported as a bad frame).
    bad_frame: bool,
    wcs: Vec<WorkCompletion>,
    max_outstanding: u64,
}

impl<V: Verbs> Engine<V> {
    /// The peer's description.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The most chunks ever outstanding towards the peer (never above its slot count).
    pub fn max_outstanding(&self) -> u64 {
        self.max_outstanding
    }

    fn verbs_err(&self, source: VerbsError) -> ProtoError {
        ProtoError::Verbs {
            peer: self.peer.clone(),
            source,
        }
    }

    fn check_usable(&self, during: impl FnOnce() -> String) -> Result<(), ProtoError> {
        if self.closed {
            let reason = "the connection was closed by this side".to_string();
            return Err(ProtoError::Broken {
                peer: self.peer.clone(),
                reason,
            });
        }
        if let Some(reason) = &self.broken {
            let (peer, reason) = (self.peer.clone(), reason.clone());
            return Err(match self.bad_frame {
                true => ProtoError::BadFrame { peer, reason },
                false => ProtoError::Broken { peer, reason },
            });
        }
        if self.peer_closed || self.dead.is_some() {
            return Err(ProtoError::PeerClosed {
                peer: self.peer.clone(),
                during: during(),
            });
        }
        Ok(())
    }

    /// The peer wrote a slot that fails its checks: the connection is closed for good.
    fn bad_frame(&mut self, reason: String) {
        if self.broken.is_none() {
            self.bad_frame = true;
        }
        self.break_with(reason);
    }

    fn break_with(&mut self, reason: String) {
        tracing::warn!(peer = %self.peer, %reason, "rdma connection broken");
        if self.broken.is_none() {
            self.broken = Some(reason);
        }
    }

    /// Polls completions, copies arrived chunks out, returns credits. `direct` is the buffer of
    /// the receive being tested, with the message it claimed: its chunks go straight there.
    fn progress(&mut self, mut direct: Option<(u64, &mut [u8])>) -> Result<(), ProtoError> {
        if self.broken.is_some() {
            return Ok(());
        }
        loop {
            self.wcs.clear();
            let mut wcs = std::mem::take(&mut self.wcs);
            let n = self.cq.poll(&mut wcs, 64);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.wcs = wcs;
                    self.break_with(format!("polling the completion queue: {e}"));
                    return Ok(());
                }
            };
            for wc in wcs.drain(..) {
                self.on_completion(wc, direct.as_mut().map(|(m, b)| (*m, &mut **b)));
            }
            self.wcs = wcs;
            if n < 64 || self.broken.is_some() {
                break;
            }
        }
        self.peer_consumed = match self.arena.read_u64(0) {
            Ok(c) => c.max(self.peer_consumed),
            Err(e) => {
                self.break_with(format!("reading the credit word: {e}"));
                return Ok(());
            }
        };
        self.return_credits();
        self.probe_if_quiet();
        Ok(())
    }

    fn on_completion(&mut self, wc: WorkCompletion, direct: Option<(u64, &mut [u8])>) {
        if wc.status != WcStatus::Success {
            if self.dead.is_none() {
                let why = match wc.status {
                    WcStatus::WrFlush => "queue pair in error state (peer gone)".to_string(),
                    s => format!("work completion status {s}"),
                };
                tracing::debug!(peer = %self.peer, %why, "rdma peer lost");
                self.dead = Some(why);
            }
            if wc.wr_id & WR_KIND == WR_DATA {
                self.complete_write(wc.wr_id);
            }
            return;
        }
        self.last_heard = Instant::now();
        match (wc.wr_id & WR_KIND, wc.opcode) {
            (WR_DATA, _) => self.complete_write(wc.wr_id),
            (WR_CREDIT, _) => self.credit_inflight = false,
            (WR_PROBE, _) => self.probe_inflight = false,
            (WR_RECV, WcOpcode::RecvRdmaWithImm) => {
                let Some(imm) = wc.imm_data else {
                    self.bad_frame("receive completion without immediate data".into());
                    return;
                };
                self.on_chunk(imm, wc.byte_len, direct);
                if self.broken.is_none() {
                    if let Err(e) = self.qp.post_recv(WR_RECV) {
                        self.break_with(format!("reposting a receive: {e}"));
                    }
                }
            }
            (kind, op) => self.break_with(format!(
                "unexpected completion {op:?} for work request kind {kind:#x}"
            )),
        }
    }

    fn complete_write(&mut self, wr_id: u64) {
        let seq = wr_id & !WR_KIND;
        let slot = (seq % ring_len(&self.remote)) as usize;
        if let Some(msg) = self.staging_owner[slot].take() {
            if let Some(n) = self.inflight.get_mut(&msg) {
                *n = n.saturating_sub(1);
            }
        }
        self.completed += 1;
    }

    /// One slot is full: check it, copy it out, count it consumed.
    fn on_chunk(&mut self, imm_data: u32, byte_len: u32, direct: Option<(u64, &mut [u8])>) {
        let slot = (self.recv_seq % ring_len(&self.local)) as usize;
        let base = CREDIT_AREA + slot * self.local.slot_size as usize;
        self.recv_seq += 1;
        let mut raw = [0u8; SLOT_HEADER];
        if byte_len as usize > self.local.slot_size as usize {
            self.bad_frame(format!(
                "a write of {byte_len} bytes overflows a {}-byte slot",
                self.local.slot_size
            ));
            return;
        }
        if let Err(e) = self.arena.read_at(base, &mut raw) {
            self.break_with(format!("reading slot {slot}: {e}"));
            return;
        }
        let (h, len) = match SlotHeader::decode(&raw, imm_data, byte_len) {
            Ok(x) => x,
            Err(reason) => {
                self.bad_frame(reason);
                return;
            }
        };
        let payload = base + SLOT_HEADER;
        let result = match h.kind {
            Kind::Close => {
                self.peer_closed = true;
                Ok(())
            }
            Kind::First => self.on_first(h, len, payload, direct),
            Kind::Cont => self.on_cont(h, len, payload, direct),
        };
        if let Err(reason) = result {
            self.bad_frame(reason);
            return;
        }
        self.consumed += 1;
    }

    fn on_first(
        &mut self,
        h: SlotHeader,
        len: usize,
        at: usize,
        direct: Option<(u64, &mut [u8])>,
    ) -> Result<(), String> {
        if h.msg != self.peer_next_msg {
            return Err(format!(
                "message {} starts out of order (expected {})",
                h.msg, self.peer_next_msg
            ));
        }
        let total = usize::try_from(h.b)
            .map_err(|_| format!("message length {} does not fit this machine", h.b))?;
        if len > total {
            return Err(format!(
                "first chunk has {len} bytes of a {total}-byte message"
            ));
        }
        self.peer_next_msg += 1;
        let m = Incoming {
            total,
            received: 0,
            delivered: 0,
            spill: Vec::new(),
            discard: false,
        };
        self.incoming.insert(h.msg, m);
        self.by_tag.entry(h.a).or_default().push_back(h.msg);
        self.store(h.msg, len, at, direct)
    }

    fn on_cont(
        &mut self,
        h: SlotHeader,
        len: usize,
        at: usize,
        direct: Option<(u64, &mut [u8])>,
    ) -> Result<(), String> {
        let m = self
            .incoming
            .get(&h.msg)
            .ok_or_else(|| format!("chunk of unknown message {}", h.msg))?;
        if h.a != m.received as u64 {
            return Err(format!(
                "chunk of message {} at offset {} (expected {})",
                h.msg, h.a, m.received
            ));
        }
        if len == 0 || m.received + len > m.total {
            return Err(format!(
                "chunk of {len} bytes at {} overruns message {} of {} bytes",
                h.a, h.msg, m.total
            ));
        }
        self.store(h.msg, len, at, direct)
    }

    /// Copies `len` payload bytes at arena offset `at` into the claimer's buffer or the spill.
    fn store(
        &mut self,
        msg: u64,
        len: usize,
        at: usize,
        direct: Option<(u64, &mut [u8])>,
    ) -> Result<(), String> {
        let m = self
            .incoming
            .get_mut(&msg)
            .expect("caller checked the message exists");
        let off = m.received;
        m.received += len;
        let res = match direct {
            _ if m.discard => Ok(()),
            Some((dm, buf)) if dm == msg && m.spill.is_empty() && m.delivered == off => {
                m.delivered += len;
                self.arena.read_at(at, &mut buf[off..off + len])
            }
            _ => {
                let s = m.spill.len();
                m.spill.resize(s + len, 0);
                self.arena.read_at(at, &mut m.spill[s..])
            }
        };
        let m = &self.incoming[&msg];
        if m.discard && m.received == m.total {
            self.incoming.remove(&msg);
        }
        res.map_err(|e| format!("copying out of the receive arena: {e}"))
    }

    /// Posts a zero-length write when the peer has been silent for `keepalive`.
    fn probe_if_quiet(&mut self) {
        if self.probe_inflight || self.dead.is_some() || self.broken.is_some() {
            return;
        }
        if self.last_heard.elapsed() < self.keepalive {
            return;
        }
        let wr = WriteWr {
            wr_id: WR_PROBE,
            local: &self.staging,
            local_offset: 0,
            len: 0,
            remote_addr: self.remote.arena_addr,
            rkey: self.remote.arena_rkey,
            imm: None,
        };
        match self.qp.post_write(wr) {
            Ok(()) => {
                self.probe_inflight = true;
                self.last_heard = Instant::now();
            }
            Err(e) => self.break_with(format!("probing the peer: {e}")),
        }
    }

    fn return_credits(&mut self) {
        if self.credit_inflight || self.consumed == self.advertised || self.dead.is_some() {
            return;
        }
        let word = self.consumed.to_le_bytes();
        let wr = WriteWr {
            wr_id: WR_CREDIT,
            local: &self.staging,
            local_offset: 0,
            len: 8,
            remote_addr: self.remote.arena_addr,
            rkey: self.remote.arena_rkey,
            imm: None,
        };
        let res = self
            .staging
            .write_at(0, &word)
            .and_then(|()| self.qp.post_write(wr));
        match res {
            Ok(()) => {
                self.advertised = self.consumed;
                self.credit_inflight = true;
            }
            Err(e) => self.break_with(format!("returning credits: {e}")),
        }
    }

    /// Whether chunk `next_seq` may go out. Data uses `slots` credits; the ring has one slot
    /// more, reserved for CLOSE, so closing never waits for a receiver that stopped reading.
    fn can_post(&self, close: bool) -> bool {
        let credits = u64::from(self.remote.slots) + u64::from(close);
        let window = self.peer_consumed.min(self.completed) + credits;
        self.next_seq < window && self.dead.is_none() && self.broken.is_none()
    }

    fn post_chunk(&mut self, h: SlotHeader, payload: &[u8]) -> Result<(), ProtoError> {
        let size = self.remote.slot_size as usize;
        let slot = (self.next_seq % ring_len(&self.remote)) as usize;
        let base = CREDIT_AREA + slot * size;
        let staged = self
            .staging
            .write_at(base, &h.encode())
            .and_then(|()| self.staging.write_at(base + SLOT_HEADER, payload));
        staged.map_err(|e| self.verbs_err(e))?;
        let wr = WriteWr {
            wr_id: WR_DATA | self.next_seq,
            local: &self.staging,
            local_offset: base,
            len: SLOT_HEADER + payload.len(),
            remote_addr: self.remote.arena_addr + base as u64,
            rkey: self.remote.arena_rkey,
            imm: Some(imm(h.kind, payload.len())),
        };
        if let Err(e) = self.qp.post_write(wr) {
            self.break_with(format!("posting a write: {e}"));
            return Err(self.verbs_err(e));
        }
        self.staging_owner[slot] = Some(h.msg);
        self.next_seq += 1;
        self.max_outstanding = self.max_outstanding.max(self.next_seq - self.peer_consumed);
        Ok(())
    }

    /// Posts a send of `buf` (its first chunk goes out now). `Ok(None)`: no credit, retry.
    pub fn isend(&mut self, tag: u64, buf: &[u8]) -> Result<Option<SendId>, ProtoError> {
        self.check_usable(|| format!(" before a send with tag {tag}"))?;
        self.progress(None)?;
        if !self.can_post(false) {
            self.check_usable(|| format!(" before a send with tag {tag}"))?;
            return Ok(None);
        }
        let msg = self.next_msg;
        let n = buf.len().min(self.remote.slot_size as usize - SLOT_HEADER);
        let h = SlotHeader {
            kind: Kind::First,
            msg,
            a: tag,
            b: buf.len() as u64,
        };
        self.post_chunk(h, &buf[..n])?;
        self.next_msg += 1;
        self.inflight.insert(msg, 1);
        let mut id = SendId {
            msg,
            posted: n,
            len: buf.len(),
        };
        self.push_chunks(&mut id, buf)?;
        Ok(Some(id))
    }

    fn push_chunks(&mut self, id: &mut SendId, buf: &[u8]) -> Result<(), ProtoError> {
        let room = self.remote.slot_size as usize - SLOT_HEADER;
        while id.posted < id.len && self.can_post(false) {
            let n = (id.len - id.posted).min(room);
            let h = SlotHeader {
                kind: Kind::Cont,
                msg: id.msg,
                a: id.posted as u64,
                b: 0,
            };
            self.post_chunk(h, &buf[id.posted..id.posted + n])?;
            *self.inflight.entry(id.msg).or_insert(0) += 1;
            id.posted += n;
        }
        Ok(())
    }

    /// Advances a send; `Some(len)` once every chunk is written and acknowledged.
    pub fn send_test(&mut self, id: &mut SendId, buf: &[u8]) -> Result<Option<usize>, ProtoError> {
        let during = |id: &SendId| {
            format!(
                " during a {}-byte send ({} bytes posted)",
                id.len, id.posted
            )
        };
        self.progress(None)?;
        let acked = |e: &Self, id: &SendId| e.inflight.get(&id.msg).copied().unwrap_or(0) == 0;
        if id.posted == id.len && acked(self, id) {
            self.inflight.remove(&id.msg);
            return Ok(Some(id.len));
        }
        self.check_usable(|| during(id))?;
        self.push_chunks(id, buf)?;
        if id.posted == id.len && acked(self, id) {
            self.inflight.remove(&id.msg);
            return Ok(Some(id.len));
        }
        Ok(None)
    }

    /// A send request was dropped before completing. Once any chunk is out, the peer would wait
    /// for the rest, so a partial message breaks the connection.
    pub fn abandon_send(&mut self, id: &SendId) {
        self.inflight.remove(&id.msg);
        if id.posted < id.len {
            self.break_with(format!(
                "a {}-byte send was abandoned after {} bytes",
                id.len, id.posted
            ));
        }
    }

    /// Sends CLOSE and waits (until `deadline`) for every write to be acknowledged; the peer's
    /// pending receives then fail with `PeerClosed` while what it already got stays readable.
    pub fn close(&mut self, timeout: Duration) -> Result<(), ProtoError> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        let start = Instant::now();
        // Even a broken connection says CLOSE (best effort), so the peer does not wait for the
        // rest of a message that will never come.
        self.broken = None;
        loop {
            self.progress(None)?;
            if self.dead.is_some() {
                return Ok(());
            }
            if self.can_post(true) {
                let h = SlotHeader {
                    kind: Kind::Close,
                    msg: self.next_msg,
                    a: 0,
                    b: 0,
                };
                self.post_chunk(h, &[])?;
                break;
            }
            if start.elapsed() > timeout {
                return Err(ProtoError::Timeout {
                    peer: self.peer.clone(),
                    what: "a credit to send CLOSE".into(),
                    waited: start.elapsed(),
                });
            }
            std::thread::yield_now();
        }
        while self.completed < self.next_seq && self.dead.is_none() {
            if start.elapsed() > timeout {
                return Err(ProtoError::Timeout {
                    peer: self.peer.clone(),
                    what: "the CLOSE to be acknowledged".into(),
                    waited: start.elapsed(),
                });
            }
            std::thread::yield_now();
            self.progress(None)?;
        }
        Ok(())
    }
}

#[path = "protocol_recv.rs"]
mod recv;

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
