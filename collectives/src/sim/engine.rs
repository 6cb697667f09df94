//! The discrete-event simulator: runs a [`Schedule`] on a [`Network`].
//!
//! Events are `(time, kind, rank, op)` packed into two `u64`s in one binary heap; per-rank state
//! and per-link state live in flat vectors; nothing is allocated per event once the per-pair
//! message queues have warmed up. Events due "now" skip the heap.
//!
//! Semantics (those of `schedule.rs`):
//! - a rank starts step `i + 1` when every receive (and copy) of step `i` has finished; the
//!   sends of a step are posted when it starts and may still be in flight when it ends; with
//!   lanes, step `i + 1` starts once it is issued in order and its own lane's earlier step has
//!   finished, so a rank runs up to one step per lane at once, and its messages to one peer
//!   leave in program order (a forward not yet ready holds back later messages to that peer);
//! - a fused op (`RecvReduceSend`, `RecvCopySend`) posts its send when its receive (and
//!   reduction) has finished;
//! - messages between a pair are matched in posting order (per pair FIFO); a message may arrive
//!   before its receive is posted (the executor's buffers absorb it);
//! - a reduction of `b` bytes occupies the receiving device for `b * gamma`, after the data has
//!   arrived; reductions on one device run one at a time; a `Copy` likewise at the copy rate.
//!
//! Links: each link direction serves messages first come first served by arrival at the link. A
//! message posted at `t` crosses its route's links in order, cut-through: on each link it starts
//! when its head gets there and the link is idle long enough to carry it whole (an idle gap
//! before a later message's reservation counts: links are work-conserving, see `link_queue.rs`),
//! occupies the link for `bytes / bandwidth`, and cannot finish before it has finished on the
//! link before; it arrives after the last link plus the route's latency. Concurrent flows on a
//! link therefore take turns at full rate instead of sharing the rate (max-min fairness): the
//! link's capacity is conserved exactly, the last of `k` equal flows finishes when it would under
//! fair sharing, and the first ones finish earlier.
//!
//! Hosts emulated on one machine (`network.shared_stack`): a message between nodes first passes
//! the one stack server all nodes share, which it occupies for `message_us + bytes / gb_s`
//! (cut-through like a link, so its wire time overlaps that).

use super::host::{node_terms, NodeTerms};
use super::link_queue::LinkQueue;
use super::network::Network;
use super::SimError;
use crate::schedule::{Blocks, Collective, Op, Schedule};
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// What a simulation found.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// Completion time of the collective (the last rank), in seconds.
    pub time: f64,
    /// When each rank finished its program, in seconds.
    pub rank_times: Vec<f64>,
    /// The collective's buffer size in bytes.
    pub bytes: u64,
    pub collective: Collective,
    pub ranks: usize,
    /// Lanes of the schedule (1: synchronous steps).
    pub lanes: usize,
    /// Messages sent and bytes they carried.
    pub messages: u64,
    pub wire_bytes: u64,
    /// Events processed.
    pub events: u64,
    /// Seconds each link direction was busy (indexed like [`Network::link_name`]).
    pub link_busy: Vec<f64>,
}

/// Utilisation of one tier of links over the collective's duration.
#[derive(Clone, Debug)]
pub struct TierUse {
    pub tier: String,
    /// Link directions of this tier that carried traffic.
    pub links_used: usize,
    /// Mean busy fraction over those links, and the busiest link with its fraction.
    pub mean: f64,
    pub max: f64,
    pub busiest: String,
}

impl SimReport {
    /// Algorithm bandwidth, bytes / time, in GB/s (nccl-tests' algbw).
    pub fn algbw_gbps(&self) -> f64 {
        if self.time > 0.0 {
            self.bytes as f64 / self.time / 1e9
        } else {
            0.0
        }
    }

    /// Bus bandwidth in GB/s, with nccl-tests' factor for the collective.
    pub fn busbw_gbps(&self) -> f64 {
        self.algbw_gbps() * bus_factor(self.collective, self.ranks)
    }

    /// Per-tier link utilisation, in the network's tier order.
    pub fn tiers(&self, net: &Network) -> Vec<TierUse> {
        let mut out: Vec<TierUse> = net
            .tiers()
            .iter()
            .map(|t| TierUse {
                tier: t.clone(),
                links_used: 0,
                mean: 0.0,
                max: 0.0,
                busiest: String::new(),
            })
            .collect();
        let mut argmax = vec![usize::MAX; out.len()];
        for (l, &busy) in self.link_busy.iter().enumerate() {
            if busy <= 0.0 {
                continue;
            }
            let t = net.tier_of(l);
            let u = busy / self.time.max(f64::MIN_POSITIVE);
            out[t].links_used += 1;
            out[t].mean += u;
            if u > out[t].max {
                out[t].max = u;
                argmax[t] = l;
            }
        }
        for (t, o) in out.iter_mut().enumerate() {
            if o.links_used > 0 {
                o.mean /= o.links_used as f64;
                o.busiest = net.link_name(argmax[t]);
            }
        }
        out
    }
}

/// nccl-tests' bus bandwidth factor: what a bandwidth-optimal algorithm moves per rank, relative
/// to the buffer size.
pub fn bus_factor(collective: Collective, ranks: usize) -> f64 {
    let p = ranks.max(1) as f64;
    match collective {
        Collective::AllReduce => 2.0 * (p - 1.0) / p,
        // nccl-tests: gather, scatter and all-to-all move (p - 1)/p of the buffer too.
        Collective::ReduceScatter
        | Collective::AllGather
        | Collective::Gather { .. }
        | Collective::Scatter { .. }
        | Collective::AllToAll => (p - 1.0) / p,
        Collective::Broadcast { .. } | Collective::Reduce { .. } => 1.0,
    }
}

/// Simulates `schedule` on `net` for a buffer of `bytes` bytes of `elem_bytes`-byte elements.
pub fn simulate(
    net: &Network,
    schedule: &Schedule,
    bytes: u64,
    elem_bytes: usize,
) -> Result<SimReport, SimError> {
    simulate_with_progress(net, schedule, bytes, elem_bytes, &mut |_, _| {})
}

const STEP: u64 = 0;
const ARRIVE: u64 = 1;
const FORWARD: u64 = 2;

#[derive(Clone, Copy)]
enum Entry {
    /// A message posted and not yet received: when it arrives and how many blocks it carries.
    Msg { arrival: f64, len: u32 },
    /// A receive posted before its message: the receiving op's index in its program.
    Wait { op: u32 },
}

#[derive(Clone, Copy, Default)]
struct RankState {
    /// The next step to issue, and the index of its first op in the program's flat op list.
    step: u32,
    op_base: u32,
    /// Lanes with a step in flight.
    busy_lanes: u32,
    dev_free: f64,
    done: f64,
}

/// The step a lane of a rank has in flight.
#[derive(Clone, Copy, Default)]
struct LaneState {
    busy: bool,
    outstanding: u32,
    step_end: f64,
    /// Its ops, as flat indices `op_lo..op_hi`.
    op_lo: u32,
    op_hi: u32,
}

/// A message of a multi-lane program waiting for its turn on its pair (program order).
#[derive(Clone, Copy)]
enum Slot {
    /// A fused op's forward whose receive has not finished (the op's flat index).
    Pending(u32),
    Ready(Blocks),
}

/// The `op` of a STEP event that only issues (rather than ends a lane's step).
const ISSUE: u32 = u32::MAX;

/// FxHash-style multiplicative hasher for the `(from, to)` pair keys.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

struct Sim<'a> {
    net: &'a Network,
    sched: &'a Schedule,
    /// Byte offset of each block boundary.
    bound: Vec<u64>,
    ranks: Vec<RankState>,
    /// `lanes` lane states per rank.
    lane: Vec<LaneState>,
    lanes: usize,
    /// Per pair, messages of a multi-lane program not yet sent (empty with one lane, whose
    /// sends are in program order by construction).
    outbox: HashMap<u64, VecDeque<Slot>, BuildHasherDefault<PairHasher>>,
    /// Per link direction, its reservations (served by arrival at the link).
    links: Vec<LinkQueue>,
    busy: Vec<f64>,
    pairs: HashMap<u64, VecDeque<Entry>, BuildHasherDefault<PairHasher>>,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    /// Events due now, in the order they were raised (same-time events are served FIFO, so
    /// rank 0's message posted at t takes a link before rank 2's posted at t).
    ready: VecDeque<u64>,
    now: f64,
    finished: usize,
    messages: u64,
    wire_bytes: u64,
    reduce: f64,
    copy: f64,
    /// Seconds per byte of each link direction in this simulation: the network's, with a host
    /// node's intra-node links slowed by time-sharing and its memory server's rate set.
    inv_bw: Cow<'a, [f64]>,
    /// Per-node host terms; empty when the nodes have no host model.
    host: Vec<NodeTerms>,
}

/// [`simulate`], calling `progress(ops_done, ops_total)` now and then (every ~4 M events).
pub fn simulate_with_progress(
    net: &Network,
    schedule: &Schedule,
    bytes: u64,
    elem_bytes: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SimReport, SimError> {
    let p = schedule.ranks;
    if p > net.devices() {
        return Err(SimError::TooManyRanks {
            ranks: p,
            devices: net.devices(),
            cluster: net.spec().name.clone(),
        });
    }
    if elem_bytes == 0 {
        return Err(SimError::BadSchedule {
            rank: 0,
            step: 0,
            reason: "element size is 0 bytes".into(),
        });
    }
    let total_ops = check_schedule(schedule)?;
    let elems = bytes / elem_bytes as u64;
    let nb = schedule.blocks as u64;
    let bound = (0..=nb)
        .map(|i| ((i as u128 * elems as u128) / nb.max(1) as u128) as u64 * elem_bytes as u64)
        .collect();
    let mut sim = Sim {
        net,
        sched: schedule,
        bound,
        ranks: vec![RankState::default(); p],
        lane: vec![LaneState::default(); p * schedule.lanes()],
        lanes: schedule.lanes(),
        outbox: HashMap::default(),
        links: vec![LinkQueue::default(); net.links()],
        busy: vec![0.0; net.links()],
        pairs: HashMap::default(),
        heap: BinaryHeap::with_capacity(4 * p),
        ready: VecDeque::with_capacity(64),
        now: 0.0,
        finished: 0,
        messages: 0,
        wire_bytes: 0,
        reduce: net.reduce_s_per_byte(),
        copy: net.copy_s_per_byte(),
        inv_bw: Cow::Borrowed(net.inv_bw()),
        host: Vec::new(),
    };
    if let Some(h) = &net.spec().node.host {
        let dpn = net.devices_per_node();
        let terms = node_terms(h, net.spec().nodes, dpn, p, bytes);
        let inv = sim.inv_bw.to_mut();
        for (node, t) in terms.iter().enumerate() {
            if t.cpu != 1.0 {
                let base = node * net.per_node();
                for (l, v) in inv.iter_mut().enumerate().skip(base).take(net.per_node()) {
                    if net.intra_node(l) {
                        *v *= t.cpu;
                    }
                }
            }
            if let Some(m) = net.memory_server(node) {
                inv[m] = t.mem;
            }
        }
        sim.host = terms;
    }
    for r in 0..p {
        sim.ready.push_back(pack(STEP, r, ISSUE));
    }
    let mut events = 0u64;
    loop {
        let ev = if let Some(ev) = sim.ready.pop_front() {
            ev
        } else if let Some(Reverse((t, ev))) = sim.heap.pop() {
            sim.now = f64::from_bits(t);
            ev
        } else {
            break;
        };
        events += 1;
        if events & ((1 << 22) - 1) == 0 {
            let done: u64 = sim.ranks.iter().map(|s| s.op_base as u64).sum();
            progress(done, total_ops);
        }
        let (kind, rank, op) = (ev >> 62, ((ev >> 32) & 0x3fff_ffff) as usize, ev as u32);
        match kind {
            STEP => sim.lane_done(rank, op)?,
            ARRIVE => sim.arrive(rank, op)?,
            _ => sim.forward(rank, op)?,
        }
    }
    if sim.finished < p {
        let (rank, st) = sim
            .ranks
            .iter()
            .enumerate()
            .find(|(r, s)| (s.step as usize) < schedule.programs[*r].len() || s.busy_lanes > 0)
            .expect("an unfinished rank");
        // The stuck step: the earliest one in flight (each lane's holds its ops from op_lo).
        let prog = &schedule.programs[rank];
        let step = sim.lane[rank * sim.lanes..(rank + 1) * sim.lanes]
            .iter()
            .filter(|l| l.busy)
            .map(|l| l.op_lo)
            .min()
            .and_then(|op| {
                (0..prog.len())
                    .rev()
                    .find(|&i| prog.step_start(i) as u32 <= op)
            })
            .unwrap_or(st.step as usize);
        return Err(SimError::Deadlock {
            rank,
            step,
            time: sim.now,
        });
    }
    for (&key, q) in &sim.pairs {
        if !q.is_empty() {
            return Err(SimError::Unmatched {
                from: (key >> 32) as usize,
                to: (key & 0xffff_ffff) as usize,
                count: q.len(),
            });
        }
    }
    progress(total_ops, total_ops);
    let rank_times: Vec<f64> = sim.ranks.iter().map(|s| s.done).collect();
    tracing::debug!(
        algorithm = %schedule.algorithm,
        ranks = p,
        bytes,
        events,
        messages = sim.messages,
        "simulated on `{}`",
        net.spec().name
    );
    Ok(SimReport {
        time: rank_times.iter().copied().fold(0.0, f64::max),
        rank_times,
        bytes,
        collective: schedule.collective,
        ranks: p,
        lanes: sim.lanes,
        messages: sim.messages,
        wire_bytes: sim.wire_bytes,
        events,
        link_busy: sim.busy,
    })
}

#[inline]
fn pack(kind: u64, rank: usize, op: u32) -> u64 {
    (kind << 62) | ((rank as u64) << 32) | op as u64
}

/// Rejects what would make the simulation meaningless or panic; returns the number of ops.
fn check_schedule(s: &Schedule) -> Result<u64, SimError> {
    let bad = |rank, step, reason: String| SimError::BadSchedule { rank, step, reason };
    if s.programs.len() != s.ranks {
        return Err(bad(
            0,
            0,
            format!("{} programs for {} ranks", s.programs.len(), s.ranks),
        ));
    }
    if s.ranks >= 1 << 30 || s.blocks > u32::MAX as usize {
        return Err(bad(0, 0, "too many ranks or blocks".into()));
    }
    if s.lanes() > crate::schedule::MAX_LANES {
        return Err(bad(
            0,
            0,
            format!(
                "{} lanes (at most {})",
                s.lanes(),
                crate::schedule::MAX_LANES
            ),
        ));
    }
    let mut total = 0u64;
    for (r, prog) in s.programs.iter().enumerate() {
        if prog.ops().len() > u32::MAX as usize {
            return Err(bad(r, 0, "more than 2^32 ops".into()));
        }
        for (i, step) in prog.steps().enumerate() {
            for op in step {
                let peer_ok = |p: u32| (p as usize) < s.ranks && p as usize != r;
                let in_range = |b: Blocks| b.end() as usize <= s.blocks && b.start <= b.end();
                if op.recv_from().is_some_and(|p| !peer_ok(p))
                    || op.send_to().is_some_and(|p| !peer_ok(p))
                {
                    return Err(bad(r, i, format!("{op:?} names an invalid peer")));
                }
                let blocks_ok = match *op {
                    Op::Copy { from, to } => in_range(from) && in_range(to) && from.len == to.len,
                    _ => in_range(op.blocks()),
                };
                if !blocks_ok {
                    return Err(bad(r, i, format!("{op:?} has blocks out of range")));
                }
            }
        }
        total += prog.ops().len() as u64;
    }
    Ok(total)
}

impl Sim<'_> {
    #[inline]
    fn bytes(&self, b: Blocks) -> u64 {
        self.bound[b.end() as usize] - self.bound[b.start as usize]
    }

    #[inline]
    fn at(&mut self, t: f64, ev: u64) {
        if t <= self.now {
            self.ready.push_back(ev);
        } else {
            self.heap.push(Reverse((t.to_bits(), ev)));
        }
    }

    /// Lane `lane` of rank `r` has finished its step (or, with [`ISSUE`], nothing has
    /// finished and the rank only tries to issue); issues what can start now.
    fn lane_done(&mut self, r: usize, lane: u32) -> Result<(), SimError> {
        if lane != ISSUE {
            self.lane[r * self.lanes + lane as usize].busy = false;
            self.ranks[r].busy_lanes -= 1;
        }
        self.issue(r)
    }

    /// Posts the ops of rank `r`'s next steps, in order, while each one's lane is free; runs
    /// on through steps that finish at once.
    fn issue(&mut self, r: usize) -> Result<(), SimError> {
        let prog = &self.sched.programs[r];
        loop {
            let st = self.ranks[r];
            if st.step as usize >= prog.len() {
                if st.busy_lanes == 0 {
                    self.ranks[r].done = self.now;
                    self.finished += 1;
                }
                return Ok(());
            }
            let li = r * self.lanes + prog.lane(st.step as usize) as usize;
            if self.lane[li].busy {
                return Ok(());
            }
            let ops = prog.step(st.step as usize);
            self.lane[li] = LaneState {
                busy: true,
                outstanding: 0,
                step_end: self.now,
                op_lo: st.op_base,
                op_hi: st.op_base + ops.len() as u32,
            };
            self.ranks[r].busy_lanes += 1;
            self.ranks[r].step += 1;
            self.ranks[r].op_base += ops.len() as u32;
            for (i, op) in ops.iter().enumerate() {
                let idx = st.op_base + i as u32;
                match *op {
                    Op::Send { to, blocks } => {
                        self.post_send(r, to as usize, Slot::Ready(blocks))?
                    }
                    Op::Copy { to, .. } => {
                        let b = self.bytes(to);
                        let start = self.ranks[r].dev_free.max(self.now);
                        let end = self.cpu_work(r, start, b, self.copy);
                        self.ranks[r].dev_free = end;
                        let l = &mut self.lane[li];
                        l.step_end = l.step_end.max(end);
                    }
                    _ => {
                        self.lane[li].outstanding += 1;
                        if let Some(to) = op.send_to() {
                            if self.lanes > 1 {
                                self.post_send(r, to as usize, Slot::Pending(idx))?;
                            }
                        }
                        let from = op.recv_from().unwrap_or_default() as usize;
                        self.recv(r, from, idx, op.blocks())?;
                    }
                }
            }
            let l = self.lane[li];
            if l.outstanding > 0 {
                continue;
            }
            if l.step_end > self.now {
                let lane = (li - r * self.lanes) as u32;
                self.at(l.step_end, pack(STEP, r, lane));
                continue;
            }
            self.lane[li].busy = false;
            self.ranks[r].busy_lanes -= 1;
        }
    }

    /// Queues a message of rank `a` for `b` behind the earlier ones (multi-lane programs), or
    /// sends it now (one lane, where program order holds by construction).
    fn post_send(&mut self, a: usize, b: usize, slot: Slot) -> Result<(), SimError> {
        if self.lanes == 1 {
            if let Slot::Ready(blocks) = slot {
                self.send(a, b, blocks)?;
            }
            return Ok(());
        }
        let key = ((a as u64) << 32) | b as u64;
        self.outbox.entry(key).or_default().push_back(slot);
        self.flush(a, b)
    }

    /// Sends rank `a`'s messages for `b` that are ready and have no earlier one pending.
    fn flush(&mut self, a: usize, b: usize) -> Result<(), SimError> {
        let key = ((a as u64) << 32) | b as u64;
        while let Some(q) = self.outbox.get_mut(&key) {
            let Some(&Slot::Ready(blocks)) = q.front() else {
                break;
            };
            q.pop_front();
            self.send(a, b, blocks)?;
        }
        Ok(())
    }

    /// The message for op `op` of rank `r` has arrived.
    fn arrive(&mut self, r: usize, op: u32) -> Result<(), SimError> {
        let o = self.sched.programs[r].ops()[op as usize];
        let mut t = self.now;
        if o.reduces() {
            let b = self.bytes(o.blocks());
            let start = self.ranks[r].dev_free.max(t);
            t = self.cpu_work(r, start, b, self.reduce);
            self.ranks[r].dev_free = t;
        }
        if o.send_to().is_some() {
            self.at(t, pack(FORWARD, r, op));
            Ok(())
        } else {
            self.complete(r, op, t)
        }
    }

    /// A fused op has its data ready: send it on, and the op is done.
    fn forward(&mut self, r: usize, op: u32) -> Result<(), SimError> {
        let o = self.sched.programs[r].ops()[op as usize];
        let to = o.send_to().unwrap_or_default() as usize;
        if self.lanes == 1 {
            self.send(r, to, o.blocks())?;
        } else {
            let key = ((r as u64) << 32) | to as u64;
            if let Some(slot) = self.outbox.get_mut(&key).and_then(|q| {
                q.iter_mut()
                    .find(|s| matches!(s, Slot::Pending(i) if *i == op))
            }) {
                *slot = Slot::Ready(o.blocks());
            }
            self.flush(r, to)?;
        }
        self.complete(r, op, self.now)
    }

    /// Op `op` of rank `r` (a receive) has finished at `t`.
    fn complete(&mut self, r: usize, op: u32, t: f64) -> Result<(), SimError> {
        let lanes = &mut self.lane[r * self.lanes..(r + 1) * self.lanes];
        let Some(lane) = lanes
            .iter()
            .position(|l| l.busy && (l.op_lo..l.op_hi).contains(&op))
        else {
            return Err(SimError::BadSchedule {
                rank: r,
                step: self.ranks[r].step as usize,
                reason: format!("op {op} finished outside any step in flight"),
            });
        };
        let l = &mut lanes[lane];
        l.step_end = l.step_end.max(t);
        l.outstanding -= 1;
        if l.outstanding == 0 {
            let t = l.step_end;
            self.at(t, pack(STEP, r, lane as u32));
        }
        Ok(())
    }

    /// `bytes` of CPU work (a reduction or copy at `s_per_byte`) by rank `r` that can start at
    /// `start`; returns when it ends. On a host node it takes `cpu` times as long and its
    /// memory traffic queues at the node's memory server, the two overlapping.
    fn cpu_work(&mut self, r: usize, start: f64, bytes: u64, s_per_byte: f64) -> f64 {
        let cost = bytes as f64 * s_per_byte;
        if self.host.is_empty() {
            return start + cost;
        }
        let node = r / self.net.devices_per_node();
        let mut end = start + cost * self.host[node].cpu;
        if let Some(m) = self.net.memory_server(node) {
            let occupy = bytes as f64 * self.inv_bw[m];
            let m_start = self.links[m].reserve(self.now, start, occupy);
            self.busy[m] += occupy;
            end = end.max(m_start + occupy);
        }
        end
    }

    fn send(&mut self, a: usize, b: usize, blocks: Blocks) -> Result<(), SimError> {
        let bytes = self.bytes(blocks);
        let now = self.now;
        let (mut head, mut tail) = (now, now);
        let (links, busy, inv_bw) = (&mut self.links, &mut self.busy, &self.inv_bw);
        let mut hop = |l: usize, fixed: f64| {
            let occupy = fixed + bytes as f64 * inv_bw[l];
            let start = links[l].reserve(now, head, occupy);
            busy[l] += occupy;
            head = start;
            tail = tail.max(start + occupy);
        };
        let dpn = self.net.devices_per_node();
        let (na, nb) = (a / dpn, b / dpn);
        // Hosts emulated on one machine: the sender's stack work comes first, on the CPU all
        // nodes' stacks share.
        if let Some((s, per_message)) = self.net.stack_server().filter(|_| na != nb) {
            hop(s, per_message);
        }
        let mut latency = self.net.route(a, b, |l| hop(l, 0.0));
        if !self.host.is_empty() {
            if na == nb {
                if let Some(m) = self.net.memory_server(na) {
                    hop(m, 0.0);
                }
            }
            latency += self.host[nb].switch;
        }
        let arrival = tail + latency;
        self.messages += 1;
        self.wire_bytes += bytes;
        let q = self.pairs.entry(((a as u64) << 32) | b as u64).or_default();
        match q.front() {
            Some(&Entry::Wait { op }) => {
                q.pop_front();
                self.check_len(a, b, blocks.len, op)?;
                self.at(arrival, pack(ARRIVE, b, op));
            }
            _ => q.push_back(Entry::Msg {
                arrival,
                len: blocks.len,
            }),
        }
        Ok(())
    }

    fn recv(&mut self, b: usize, a: usize, op: u32, blocks: Blocks) -> Result<(), SimError> {
        let q = self.pairs.entry(((a as u64) << 32) | b as u64).or_default();
        match q.front() {
            Some(&Entry::Msg { arrival, len }) => {
                q.pop_front();
                if len != blocks.len {
                    return Err(self.mismatch(a, b, len, blocks.len));
                }
                self.at(arrival.max(self.now), pack(ARRIVE, b, op));
            }
            _ => q.push_back(Entry::Wait { op }),
        }
        Ok(())
    }

    fn check_len(&self, a: usize, b: usize, sent: u32, op: u32) -> Result<(), SimError> {
        let want = self.sched.programs[b].ops()[op as usize].blocks().len;
        if sent == want {
            Ok(())
        } else {
            Err(self.mismatch(a, b, sent, want))
        }
    }

    fn mismatch(&self, a: usize, b: usize, sent: u32, want: u32) -> SimError {
        SimError::BadSchedule {
            rank: b,
            step: self.ranks[b].step as usize,
            reason: format!(
                "rank {a} sends {sent} blocks where rank {b} receives {want} (per-pair FIFO order)"
            ),
        }
    }
}
