//! An in-process software model of reliable-connected (RC) verbs, so the RDMA protocol runs and is
//! tested on machines without an RDMA NIC (like CI).
//!
//! What it models, because the protocol depends on it:
//! - Ordered, reliable delivery per queue pair: a send queue is processed strictly in order, one
//!   head at a time, and a blocked head (receive-not-ready) holds back everything behind it.
//! - Completion queues shared by a queue pair's send and receive sides, with a fixed depth
//!   (overrunning one is an error, as on hardware).
//! - The RC state machine: posting sends needs RTS, posting receives needs INIT or later, the
//!   responder must be in RTR or RTS, PSNs must match what was exchanged.
//! - Receive-not-ready: a write with immediate that finds no posted receive is retried after the
//!   responder's `min_rnr_timer` (the IB timer table), up to `rnr_retry` times (7 = forever), then
//!   completes with [`WcStatus::RnrRetryExceeded`].
//! - Remote access checks: the rkey must name a live region of the responder's protection domain
//!   with remote write access, and the target range must lie inside it, else
//!   [`WcStatus::RemoteAccess`] and both queue pairs go to ERR.
//! - Errors are sticky: a queue pair in ERR completes every outstanding and later work request
//!   with [`WcStatus::WrFlush`].
//! - Peer death: destroying a queue pair (a process dying destroys its queue pairs) moves its
//!   connected peer to ERR at once, as a connection manager's disconnect event would; with
//!   [`SimConfig::peer_death_notice`] off the peer finds out like hardware without a CM does:
//!   its next write times out ([`WcStatus::RetryExceeded`]) after `timeout * (retry_cnt + 1)`.
//!
//! What it does not model: packets, MTUs, bandwidth, partial writes, or a NIC reading the source
//! after the post (the model copies the source when the request is posted).
//!
//! Progress happens inside the calls (post, poll), under one fabric-wide lock: the model has no
//! threads of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::verbs::{
    check_bounds, Access, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps,
    QpState, QpTransition, QueuePair, Verbs, VerbsError, WcOpcode, WcStatus, WorkCompletion,
    WriteWr,
};

/// Knobs of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Destroying a queue pair moves its peer to ERR immediately (true, default), or the peer
    /// learns through a retry timeout on its next write (false).
    pub peer_death_notice: bool,
    /// Scale of the ACK timeout `4.096 us * 2^timeout`; 1.0 is the IB value.
    pub timeout_scale: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            peer_death_notice: true,
            timeout_scale: 1.0,
        }
    }
}

/// One simulated fabric: every queue pair and region created from it can reach the others.
/// Clones share it.
#[derive(Clone)]
pub struct SimVerbs {
    fabric: Arc<Fabric>,
}

struct Fabric {
    config: SimConfig,
    state: Mutex<FabricState>,
}

#[derive(Default)]
struct FabricState {
    next_qpn: u32,
    next_key: u32,
    next_addr: u64,
    next_pd: u32,
    next_lid: u16,
    qps: HashMap<u32, SimQpState>,
    mrs: HashMap<u32, Weak<MrInner>>,
}

struct SimQpState {
    pd: u32,
    state: QpState,
    cq: Arc<CqInner>,
    caps: QpCaps,
    remote_qpn: Option<u32>,
    /// Next PSN this side sends / expects.
    sq_psn: u32,
    rq_psn: u32,
    min_rnr_timer: u8,
    timeout: u8,
    retry_cnt: u8,
    rnr_retry: u8,
    remote_write: bool,
    sq: VecDeque<PendingWrite>,
    rq: VecDeque<u64>,
}

struct PendingWrite {
    wr_id: u64,
    data: Vec<u8>,
    remote_addr: u64,
    rkey: u32,
    imm: Option<u32>,
    first_try: Instant,
    rnr_retries: u32,
    next_try: Instant,
}

struct MrInner {
    key: u32,
    pd: u32,
    addr: u64,
    access: Access,
    bytes: Mutex<Vec<u8>>,
}

struct CqInner {
    depth: usize,
    entries: Mutex<CqEntries>,
}

#[derive(Default)]
struct CqEntries {
    queue: VecDeque<WorkCompletion>,
    overrun: bool,
}

impl CqInner {
    fn push(&self, wc: WorkCompletion) {
        let mut e = lock(&self.entries);
        if e.queue.len() >= self.depth {
            e.overrun = true;
        } else {
            e.queue.push_back(wc);
        }
    }
}

/// Locks, recovering from poisoning: the model's state stays consistent between statements, so
/// a panic elsewhere (a failed test assertion) must not cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The IB spec's RNR NAK timer table (`min_rnr_timer` code to delay).
fn rnr_delay(code: u8) -> Duration {
    const US: [u32; 32] = [
        655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560, 3840,
        5120, 7680, 10_240, 15_360, 20_480, 30_720, 40_960, 61_440, 81_920, 122_880, 163_840,
        245_760, 327_680, 491_520,
    ];
    Duration::from_micros(u64::from(US[usize::from(code & 31)]))
}

impl SimVerbs {
    /// A fresh fabric with default [`SimConfig`].
    pub fn new() -> Self {
        Self::with_config(SimConfig::default())
    }

    /// A fresh fabric.
    pub fn with_config(config: SimConfig) -> Self {
        let state = FabricState {
            next_qpn: 0x100,
            next_key: 0x1000,
            next_addr: 0x10_0000,
            next_lid: 1,
            ..Default::default()
        };
        SimVerbs {
            fabric: Arc::new(Fabric {
                config,
                state: Mutex::new(state),
            }),
        }
    }
}

impl Default for SimVerbs {
    fn default() -> Self {
        Self::new()
    }
}

impl Fabric {
    fn ack_timeout(&self, code: u8) -> Duration {
        let us = 4.096 * 2f64.powi(i32::from(code.min(31)));
        Duration::from_secs_f64(us * self.config.timeout_scale / 1e6)
    }

    /// Moves `qpn` to ERR and flushes its queues (after any completion already pushed).
    fn fail_qp(st: &mut FabricState, qpn: u32) {
        let Some(qp) = st.qps.get_mut(&qpn) else {
            return;
        };
        qp.state = QpState::Error;
        let flushed = WorkCompletion {
            wr_id: 0,
            status: WcStatus::WrFlush,
            opcode: WcOpcode::Other(0),
            imm_data: None,
            byte_len: 0,
            qp_num: qpn,
        };
        for w in qp.sq.drain(..) {
            qp.cq.push(WorkCompletion {
                wr_id: w.wr_id,
                ..flushed
            });
        }
        for id in qp.rq.drain(..) {
            qp.cq.push(WorkCompletion {
                wr_id: id,
                ..flushed
            });
        }
    }

    fn complete_head_with_error(st: &mut FabricState, qpn: u32, status: WcStatus) {
        let Some(qp) = st.qps.get_mut(&qpn) else {
            return;
        };
        if let Some(w) = qp.sq.pop_front() {
            qp.cq.push(WorkCompletion {
                wr_id: w.wr_id,
                status,
                opcode: WcOpcode::Other(0),
                imm_data: None,
                byte_len: 0,
                qp_num: qpn,
            });
        }
        Self::fail_qp(st, qpn);
    }

    /// Runs every send queue as far as it can go now.
    fn progress(&self, st: &mut FabricState) {
        let now = Instant::now();
        let senders: Vec<u32> = st
            .qps
            .iter()
            .filter(|(_, q)| q.state == QpState::Rts && !q.sq.is_empty())
            .map(|(n, _)| *n)
            .collect();
        for qpn in senders {
            while self.try_deliver_head(st, qpn, now) {}
        }
    }

    /// Tries the head of `qpn`'s send queue; true if it completed and the next may go.
    fn try_deliver_head(&self, st: &mut FabricState, qpn: u32, now: Instant) -> bool {
        let Some(a) = st.qps.get(&qpn) else {
            return false;
        };
        let Some(head) = a.sq.front() else {
            return false;
        };
        if a.state != QpState::Rts || head.next_try > now {
            return false;
        }
        let (a_psn, remote) = (a.sq_psn, a.remote_qpn);
        let retry_budget = self.ack_timeout(a.timeout) * (u32::from(a.retry_cnt) + 1);
        let first_try = head.first_try;

        // No answer from the responder (gone, not ready, wrong PSN): the requester retries
        // until its ACK timeout budget is spent.
        let responder_ok = remote.and_then(|r| st.qps.get(&r)).is_some_and(|b| {
            matches!(b.state, QpState::Rtr | QpState::Rts)
                && b.rq_psn == a_psn
                && b.remote_qpn == Some(qpn)
        });
        if !responder_ok {
            if now.duration_since(first_try) >= retry_budget {
                Self::complete_head_with_error(st, qpn, WcStatus::RetryExceeded);
                return true;
            }
            return false;
        }
        let bqpn = remote.unwrap_or_default();
        let (head_rkey, head_addr, head_len, head_imm) = {
            let h = &st.qps[&qpn].sq[0];
            (h.rkey, h.remote_addr, h.data.len(), h.imm)
        };
        let b = &st.qps[&bqpn];
        let mr = st.mrs.get(&head_rkey).and_then(Weak::upgrade);
        let access_ok = mr.as_ref().is_some_and(|m| {
            m.pd == b.pd
                && m.access.remote_write
                && b.remote_write
                && head_addr >= m.addr
                && check_bounds(
                    (head_addr - m.addr) as usize,
                    head_len,
                    lock(&m.bytes).len(),
                )
                .is_ok()
        });
        if !access_ok {
            Self::complete_head_with_error(st, qpn, WcStatus::RemoteAccess);
            Self::fail_qp(st, bqpn);
            return true;
        }
        if head_imm.is_some() && b.rq.is_empty() {
            let delay = rnr_delay(b.min_rnr_timer);
            let a = st.qps.get_mut(&qpn).expect("sender checked above");
            let rnr_retry = a.rnr_retry;
            let h = a.sq.front_mut().expect("head checked above");
            if rnr_retry != 7 && h.rnr_retries >= u32::from(rnr_retry) {
                Self::complete_head_with_error(st, qpn, WcStatus::RnrRetryExceeded);
                return true;
            }
            h.rnr_retries += 1;
            h.next_try = now + delay;
            return false;
        }
        // Deliver.
        let a = st.qps.get_mut(&qpn).expect("sender checked above");
        let w = a.sq.pop_front().expect("head checked above");
        a.sq_psn = (a.sq_psn + 1) & 0x00ff_ffff;
        a.cq.push(WorkCompletion {
            wr_id: w.wr_id,
            status: WcStatus::Success,
            opcode: WcOpcode::RdmaWrite,
            imm_data: None,
            byte_len: w.data.len() as u32,
            qp_num: qpn,
        });
        if let Some(m) = mr {
            let off = (w.remote_addr - m.addr) as usize;
            lock(&m.bytes)[off..off + w.data.len()].copy_from_slice(&w.data);
        }
        let b = st.qps.get_mut(&bqpn).expect("responder checked above");
        b.rq_psn = (b.rq_psn + 1) & 0x00ff_ffff;
        if let Some(imm) = w.imm {
            let rid = b.rq.pop_front().expect("receive checked above");
            b.cq.push(WorkCompletion {
                wr_id: rid,
                status: WcStatus::Success,
                opcode: WcOpcode::RecvRdmaWithImm,
                imm_data: Some(imm),
                byte_len: w.data.len() as u32,
                qp_num: bqpn,
            });
        }
        true
    }
}

impl Verbs for SimVerbs {
    type Context = SimContext;
    type Pd = SimPd;
    type Mr = SimMr;
    type Cq = SimCq;
    type Qp = SimQp;

    fn name(&self) -> &'static str {
        "sim"
    }

    fn device_names(&self) -> Result<Vec<String>, VerbsError> {
        Ok(vec!["sim0".to_string()])
    }

    fn open(&self, device: Option<&str>) -> Result<SimContext, VerbsError> {
        if let Some(name) = device {
            if name != "sim0" {
                return Err(VerbsError::DeviceNotFound {
                    name: name.to_string(),
                    available: vec!["sim0".into()],
                });
            }
        }
        let mut st = lock(&self.fabric.state);
        let lid = st.next_lid;
        st.next_lid = st.next_lid.wrapping_add(1);
        Ok(SimContext {
            fabric: Arc::clone(&self.fabric),
            lid,
        })
    }
}

/// An open simulated device.
pub struct SimContext {
    fabric: Arc<Fabric>,
    lid: u16,
}

impl Context<SimVerbs> for SimContext {
    fn device_name(&self) -> &str {
        "sim0"
    }

    fn alloc_pd(&self) -> Result<SimPd, VerbsError> {
        let mut st = lock(&self.fabric.state);
        st.next_pd += 1;
        Ok(SimPd {
            fabric: Arc::clone(&self.fabric),
            id: st.next_pd,
        })
    }

    fn create_cq(&self, depth: u32) -> Result<SimCq, VerbsError> {
        if depth == 0 {
            return Err(VerbsError::Sim(
                "completion queue depth must be at least 1".into(),
            ));
        }
        let inner = CqInner {
            depth: depth as usize,
            entries: Mutex::new(CqEntries::default()),
        };
        Ok(SimCq {
            fabric: Arc::clone(&self.fabric),
            inner: Arc::new(inner),
        })
    }

    fn port_address(&self) -> Result<(u16, [u8; 16]), VerbsError> {
        let mut gid = [0u8; 16];
        gid[14..16].copy_from_slice(&self.lid.to_be_bytes());
        Ok((self.lid, gid))
    }
}

/// A simulated protection domain.
pub struct SimPd {
    fabric: Arc<Fabric>,
    id: u32,
}

impl ProtectionDomain<SimVerbs> for SimPd {
    fn alloc_mr(&self, len: usize, access: Access) -> Result<SimMr, VerbsError> {
        let mut st = lock(&self.fabric.state);
        st.next_key += 1;
        let key = st.next_key;
        let addr = st.next_addr;
        // Keep fake addresses disjoint and page aligned, so a write past one region's end can
        // never land in another.
        st.next_addr += (len as u64).div_ceil(4096).max(1) * 4096 + 4096;
        let inner = Arc::new(MrInner {
            key,
            pd: self.id,
            addr,
            access,
            bytes: Mutex::new(vec![0; len]),
        });
        st.mrs.insert(key, Arc::downgrade(&inner));
        Ok(SimMr {
            fabric: Arc::clone(&self.fabric),
            inner,
        })
    }

    fn create_qp(&self, cq: &SimCq, caps: QpCaps) -> Result<SimQp, VerbsError> {
        if !Arc::ptr_eq(&cq.fabric, &self.fabric) {
            return Err(VerbsError::Sim(
                "completion queue belongs to another fabric".into(),
            ));
        }
        let mut st = lock(&self.fabric.state);
        st.next_qpn += 1;
        let qpn = st.next_qpn;
        st.qps.insert(
            qpn,
            SimQpState {
                pd: self.id,
                state: QpState::Reset,
                cq: Arc::clone(&cq.inner),
                caps,
                remote_qpn: None,
                sq_psn: 0,
                rq_psn: 0,
                min_rnr_timer: 0,
                timeout: 0,
                retry_cnt: 0,
                rnr_retry: 0,
                remote_write: false,
                sq: VecDeque::new(),
                rq: VecDeque::new(),
            },
        );
        Ok(SimQp {
            fabric: Arc::clone(&self.fabric),
            qpn,
        })
    }
}

/// A simulated registered region; dropping it invalidates its rkey.
pub struct SimMr {
    fabric: Arc<Fabric>,
    inner: Arc<MrInner>,
}

impl Drop for SimMr {
    fn drop(&mut self) {
        lock(&self.fabric.state).mrs.remove(&self.inner.key);
    }
}

impl MemoryRegion for SimMr {
    fn lkey(&self) -> u32 {
        self.inner.key
    }
    fn rkey(&self) -> u32 {
        self.inner.key
    }
    fn addr(&self) -> u64 {
        self.inner.addr
    }
    fn len(&self) -> usize {
        lock(&self.inner.bytes).len()
    }
    fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), VerbsError> {
        let mut b = lock(&self.inner.bytes);
        check_bounds(offset, src.len(), b.len())?;
        b[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), VerbsError> {
        let b = lock(&self.inner.bytes);
        check_bounds(offset, dst.len(), b.len())?;
        dst.copy_from_slice(&b[offset..offset + dst.len()]);
        Ok(())
    }
    fn read_u64(&self, offset: usize) -> Result<u64, VerbsError> {
        let mut w = [0u8; 8];
        if offset % 8 != 0 {
            return Err(VerbsError::Sim(format!(
                "unaligned u64 read at offset {offset}"
            )));
        }
        self.read_at(offset, &mut w)?;
        Ok(u64::from_le_bytes(w))
    }
}

/// A simulated completion queue; clones share it.
#[derive(Clone)]
pub struct SimCq {
    fabric: Arc<Fabric>,
    inner: Arc<CqInner>,
}

impl CompletionQueue for SimCq {
    fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize, VerbsError> {
        {
            let mut st = lock(&self.fabric.state);
            self.fabric.progress(&mut st);
        }
        let mut e = lock(&self.inner.entries);
        if e.overrun {
            return Err(VerbsError::Sim(format!(
                "completion queue overrun (depth {})",
                self.inner.depth
            )));
        }
        let n = max.min(e.queue.len());
        out.extend(e.queue.drain(..n));
        Ok(n)
    }
}

/// A simulated RC queue pair.
pub struct SimQp {
    fabric: Arc<Fabric>,
    qpn: u32,
}

impl Drop for SimQp {
    fn drop(&mut self) {
        let mut st = lock(&self.fabric.state);
        let Some(gone) = st.qps.remove(&self.qpn) else {
            return;
        };
        if self.fabric.config.peer_death_notice {
            if let Some(peer) = gone.remote_qpn {
                if st
                    .qps
                    .get(&peer)
                    .is_some_and(|p| p.remote_qpn == Some(self.qpn))
                {
                    Fabric::fail_qp(&mut st, peer);
                }
            }
        }
    }
}

impl SimQp {
    fn post_error(&self, op: &'static str, reason: impl Into<String>) -> VerbsError {
        VerbsError::Post {
            qp_num: self.qpn,
            op,
            reason: reason.into(),
        }
    }
}

impl QueuePair<SimVerbs> for SimQp {
    fn qp_num(&self) -> u32 {
        self.qpn
    }

    fn state(&self) -> QpState {
        lock(&self.fabric.state)
            .qps
            .get(&self.qpn)
            .map_or(QpState::Error, |q| q.state)
    }

    fn modify(&mut self, t: QpTransition) -> Result<(), VerbsError> {
        let mut st = lock(&self.fabric.state);
        let qpn = self.qpn;
        let qp = st
            .qps
            .get_mut(&qpn)
            .ok_or_else(|| VerbsError::Sim(format!("queue pair {qpn} destroyed")))?;
        if !t.allowed_from(qp.state) {
            return Err(VerbsError::BadTransition {
                qp_num: qpn,
                from: qp.state,
                to: t.target(),
            });
        }
        match t {
            QpTransition::Init { remote_write } => qp.remote_write = remote_write,
            QpTransition::Rtr {
                remote,
                min_rnr_timer,
            } => {
                qp.remote_qpn = Some(remote.qp_num);
                qp.rq_psn = remote.psn;
                qp.min_rnr_timer = min_rnr_timer & 31;
            }
            QpTransition::Rts {
                sq_psn,
                timeout,
                retry_cnt,
                rnr_retry,
            } => {
                qp.sq_psn = sq_psn & 0x00ff_ffff;
                qp.timeout = timeout;
                qp.retry_cnt = retry_cnt.min(7);
                qp.rnr_retry = rnr_retry.min(7);
            }
            QpTransition::Error => {
                Fabric::fail_qp(&mut st, qpn);
                return Ok(());
            }
            QpTransition::Reset => {
                qp.sq.clear();
                qp.rq.clear();
                qp.remote_qpn = None;
            }
        }
        qp.state = t.target();
        Ok(())
    }

    fn post_write(&mut self, wr: WriteWr<'_, SimMr>) -> Result<(), VerbsError> {
        let mut st = lock(&self.fabric.state);
        let qpn = self.qpn;
        let qp = st
            .qps
            .get_mut(&qpn)
            .ok_or_else(|| self.post_error("send", "queue pair destroyed"))?;
        let now = Instant::now();
        let mut pending = PendingWrite {
            wr_id: wr.wr_id,
            data: Vec::new(),
            remote_addr: wr.remote_addr,
            rkey: wr.rkey,
            imm: wr.imm,
            first_try: now,
            rnr_retries: 0,
            next_try: now,
        };
        match qp.state {
            QpState::Rts => {}
            QpState::Error => {
                // Verbs accepts posts in ERR and flushes them.
                qp.sq.push_back(pending);
                Fabric::fail_qp(&mut st, qpn);
                return Ok(());
            }
            s => return Err(self.post_error("send", format!("queue pair is in {s:?}, not RTS"))),
        }
        if qp.sq.len() >= qp.caps.max_send_wr as usize {
            return Err(self.post_error(
                "send",
                format!("send queue full ({} outstanding)", qp.sq.len()),
            ));
        }
        let local_ok = Arc::ptr_eq(&wr.local.fabric, &self.fabric) && wr.local.inner.pd == qp.pd;
        let mut data = vec![0u8; wr.len];
        if !local_ok || wr.local.read_at(wr.local_offset, &mut data).is_err() {
            // Bad scatter entry: the request completes in error and breaks the queue pair.
            qp.sq.push_back(pending);
            let status = if local_ok {
                WcStatus::LocalLength
            } else {
                WcStatus::LocalProtection
            };
            Fabric::complete_head_with_error(&mut st, qpn, status);
            return Ok(());
        }
        pending.data = data;
        qp.sq.push_back(pending);
        self.fabric.progress(&mut st);
        Ok(())
    }

    fn post_recv(&mut self, wr_id: u64) -> Result<(), VerbsError> {
        let mut st = lock(&self.fabric.state);
        let qpn = self.qpn;
        let qp = st
            .qps
            .get_mut(&qpn)
            .ok_or_else(|| self.post_error("recv", "queue pair destroyed"))?;
        match qp.state {
            QpState::Reset => return Err(self.post_error("recv", "queue pair is in RESET")),
            QpState::Error => {
                qp.rq.push_back(wr_id);
                Fabric::fail_qp(&mut st, qpn);
                return Ok(());
            }
            _ => {}
        }
        if qp.rq.len() >= qp.caps.max_recv_wr as usize {
            return Err(self.post_error(
                "recv",
                format!("receive queue full ({} posted)", qp.rq.len()),
            ));
        }
        qp.rq.push_back(wr_id);
        self.fabric.progress(&mut st);
        Ok(())
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
