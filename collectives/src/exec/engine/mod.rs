//! The progress engine: per-peer FIFO queues of send and receive jobs over the links, driven
//! by one polling loop on the calling thread.
//!
//! Every job belongs to an operation (an id from [`Engine::begin_op`]); a call waits for its
//! own operation's jobs only ([`Until::All`], [`Until::Op`]), while every wait moves every
//! queued job forward. That is what lets non-blocking sends and receives (and the sends and
//! receives of a group) stay queued across calls and progress together with whatever runs
//! next: each peer's queue is FIFO, so the bytes on each stream stay in call order.
//!
//! A job points into memory the caller keeps alive and untouched until [`Engine::drive`]
//! returns (the operation's buffers, or the engine's scratch). A receive job copies or reduces
//! straight out of the link's view (the shared-memory ring) into its destination and can
//! forward what it produced to another peer as it goes (recv-reduce-send in one pass). Every
//! wait is bounded: no progress for the communicator's timeout is an error naming the peer,
//! and any failure aborts every link so that the peers stop waiting too.

use super::header::{Header, RECEIPT_FIRST_BYTE};
pub(crate) use super::idle::Waiter;
use super::pull::{RecvLarge, SendLarge};
use crate::error::Error;
use crate::link::Link;
use oxccl_kernels::{DataType, Epilogue, ReduceOp};

use std::collections::VecDeque;
use std::time::Duration;

mod progress;
pub(super) use progress::copy;

static ZEROS: [u8; 8] = [0; 8];

/// A run of bytes to push to a peer. `avail` grows while a forwarding receive produces it.
pub(crate) struct SendJob {
    pub ptr: *const u8,
    pub len: usize,
    pub avail: usize,
    pub pos: usize,
    /// Zero bytes appended so that the next message starts 8-byte aligned in the stream.
    pub pad: usize,
    pub id: u64,
    /// The operation the job belongs to.
    owner: u64,
    /// The bytes themselves, for a header that must outlive the call that queued it (a
    /// non-blocking send's); `ptr` is unused then.
    inline: Option<[u8; Header::LEN]>,
    /// From this many bytes the message may go by the single-copy path ([`Engine::pull_from`]
    /// when queued).
    pull_from: usize,
    /// Bytes its operation sends alongside it ([`Engine::alongside`] when queued).
    alongside: usize,
    /// Bytes of the message this job opens (0: it continues the message of the job before,
    /// a message whose bytes lie in several places). A message is framed as a whole: the
    /// receiver may hold it in other pieces than ours, but both ends know its length.
    msg: usize,
    /// Where the job stands on the single-copy path.
    large: SendLarge,
}

pub(crate) enum RecvKind {
    /// A collective's header, compared with ours.
    Header(Header),
    /// Copy into `dst`.
    Copy,
    /// `dst = local op received` (with `local == dst` for in place).
    Reduce { local: *const u8, epilogue: bool },
}

pub(crate) struct RecvJob {
    pub kind: RecvKind,
    pub dst: *mut u8,
    pub len: usize,
    pub pos: usize,
    pub pad: usize,
    /// Forward the produced bytes to (peer, send job id).
    pub fwd: Option<(usize, u64)>,
    /// Counts towards the current step's completion.
    pub in_step: bool,
    /// The hazard check against in-flight sends has passed.
    pub cleared: bool,
}

impl RecvJob {
    /// The receive of a call's 32-byte header, checked against `expect` when it is in.
    pub fn header(expect: Header) -> Self {
        Self {
            kind: RecvKind::Header(expect),
            dst: std::ptr::null_mut(),
            len: Header::LEN,
            pos: 0,
            pad: 0,
            fwd: None,
            in_step: false,
            cleared: true,
        }
    }
}

/// What the engine keeps beside a queued receive job.
#[derive(Clone, Copy)]
pub(super) struct RecvTag {
    /// The operation the job belongs to.
    pub op: u64,
    /// From this many bytes its message may come by the single-copy path
    /// ([`Engine::pull_from`] when queued, as for the matching send job: both ends queue a
    /// message from the same schedule and call).
    pub pull_from: usize,
    /// Bytes of the message this job opens (0: a continuation piece), as for send jobs.
    pub msg: usize,
}

/// What [`Engine::drive`] waits for.
#[derive(Clone, Copy)]
pub(crate) enum Until {
    /// The current step's receives are done.
    Step,
    /// Every job of the current operation is done.
    All,
    /// No queued send still reads `[ptr, ptr + len)`.
    NoSendReads(*const u8, usize),
    /// At least this many receive jobs from this peer are done (the count
    /// [`Engine::recvs_posted`] gave after posting the last one waited for): a lane's step.
    Received(usize, u64),
}

/// The reduction of the running collective.
#[derive(Clone, Copy)]
pub(crate) struct Reduction {
    pub dtype: DataType,
    pub combine: ReduceOp,
    pub epilogue: Epilogue,
}

pub(crate) struct Engine {
    pub rank: usize,
    pub links: Vec<Option<Link>>,
    pub(super) sendq: Vec<VecDeque<SendJob>>,
    /// Receive jobs with what the engine keeps beside each.
    pub(super) recvq: Vec<VecDeque<(RecvTag, RecvJob)>>,
    /// The operation new jobs belong to.
    cur_op: u64,
    next_op: u64,
    /// Jobs (sends and receives) not done yet, per operation with any.
    left: Vec<(u64, usize)>,
    /// Peers with queued work, in the order they were first used.
    active: Vec<usize>,
    is_active: Vec<bool>,
    next_id: u64,
    pub tx_seq: Vec<u64>,
    /// Small all-reduces made so far (every rank makes each one).
    pub small_seq: u64,
    pub rx_seq: Vec<u64>,
    /// Every link has a mailbox (all peers share this host): tiny all-reduces use them.
    pub tiny: bool,
    /// Tiny all-reduces made so far (every rank makes each one, with every peer).
    pub tiny_seq: u64,
    /// The messages of the running tiny all-reduce, one per rank (kept between calls).
    pub tiny_msgs: Vec<oxccl_transport::stream::MailboxMessage>,
    /// Bytes of a header received so far, per peer.
    hdr_buf: Vec<[u8; Header::LEN]>,
    pub reduction: Option<Reduction>,
    pub esize: usize,
    /// The call's output is larger than the cache: copy it with streaming stores.
    pub stream: bool,
    /// Ranks of this host that run each call at once, sharing its last-level cache (the
    /// host's ranks, `Options::host_ranks`): what sizes the cache's share of one call.
    pub host_ranks: usize,
    /// The host has more ranks (and network proxies) than cores: see [`Engine::set_crowded`].
    crowded: bool,
    step_left: usize,
    /// Receive jobs posted to and finished from each peer, ever (lanes wait on these).
    recvs_posted: Vec<u64>,
    recvs_done: Vec<u64>,
    pub timeout: Duration,
    /// How idle rounds spin, yield and park (`exec/idle.rs`).
    pub idle_policy: crate::options::IdlePolicy,
    /// Why the engine is unusable (after a failure or abort).
    pub poisoned: Option<String>,
    pub op: &'static str,
    /// Description of the running call, for mismatch errors.
    pub mine: Header,
    /// Per-peer progress of [`Engine::exchange_all`], kept to avoid allocating per call.
    small_sent: Vec<usize>,
    small_got: Vec<usize>,
    /// The peers [`Engine::exchange_all`] still waits on, refilled before each idle round.
    small_waiting: Vec<usize>,
    /// Set by [`crate::Communicator::abort`] from any thread.
    pub abort_flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Where the ranks tell each other who failed first.
    pub blame: crate::link::blame::Board,
    /// The single-copy state of each peer's front receive job (a send job keeps its own).
    rx_large: Vec<RecvLarge>,
    /// Messages queued now (sends and receives alike) of at least this many bytes and the
    /// stream's threshold may take the single-copy path: they travel as an offer (a header,
    /// then a pull or the bytes); the rest go plainly through the stream. 0 for sends and
    /// receives; `exec/run.rs` raises it to [`crate::COLLECTIVE_SINGLE_COPY_MIN`] for a
    /// collective's schedule, and to `usize::MAX` (never) for the schedules that must not pull
    /// (lanes, reductions: see `run_in`). Both ends of a message queue it from the same
    /// schedule and the same constants, so they agree on its framing.
    pub pull_from: usize,
    /// Bytes the operation queuing sends now sends its peers in all, where that is one
    /// exchange with all of them (an all-to-all's); 0 otherwise. Its messages' offers say so
    /// ([`oxccl_transport::stream::Offering::alongside`]): on a crowded host they are pulled
    /// when together they fill a ring.
    pub alongside: usize,
    /// Per peer, the receipts of sends and receives (`exec/receipt.rs`).
    pub(super) receipts: Vec<super::receipt::Receipts>,
    /// No collective is on the streams (a send, a receive or a wait outside calls drives the
    /// engine): an empty receive queue then means the stream is at a message boundary.
    pub at_rest: bool,
    /// This rank said on the failure board whom its long wait is for (`exec/silence.rs`).
    pub(super) said_waiting: bool,
    /// The per-call choice of the ring writes' stores (`exec/stores.rs`); `None`: the links
    /// keep the stores `OXCCL_RING_NT` gave them.
    pub call_stores: Option<super::stores::CallStores>,
}

// SAFETY: the raw pointers in queued jobs are only dereferenced inside `drive`, on the thread
// that owns the engine, while the operation that queued them keeps the memory alive.
unsafe impl Send for Engine {}

impl Drop for Engine {
    /// Every network link starts flushing before the first one's drop waits for its proxy, so a
    /// communicator's links finish in parallel rather than one after another.
    fn drop(&mut self) {
        for link in self.links.iter_mut().flatten() {
            link.close();
        }
    }
}

impl Engine {
    pub fn new(
        rank: usize,
        links: Vec<Option<Link>>,
        timeout: Duration,
        idle_policy: crate::options::IdlePolicy,
    ) -> Self {
        let p = links.len();
        let mut links = links;
        let tiny = links
            .iter_mut()
            .enumerate()
            .all(|(q, l)| q == rank || l.as_mut().is_some_and(|l| l.mailbox().is_some()));
        Self {
            rank,
            links,
            sendq: (0..p).map(|_| VecDeque::new()).collect(),
            recvq: (0..p).map(|_| VecDeque::new()).collect(),
            active: Vec::with_capacity(p),
            is_active: vec![false; p],
            cur_op: 0,
            next_op: 1,
            left: Vec::new(),
            next_id: 0,
            tx_seq: vec![0; p],
            small_seq: 0,
            rx_seq: vec![0; p],
            tiny,
            tiny_seq: 0,
            tiny_msgs: Vec::new(),
            hdr_buf: vec![[0; Header::LEN]; p],
            reduction: None,
            esize: 1,
            stream: false,
            host_ranks: 1,
            crowded: false,
            step_left: 0,
            recvs_posted: vec![0; p],
            recvs_done: vec![0; p],
            timeout,
            idle_policy,
            poisoned: None,
            op: "",
            mine: Header::default(),
            small_sent: Vec::with_capacity(p),
            small_got: Vec::with_capacity(p),
            small_waiting: Vec::with_capacity(p),
            abort_flag: Default::default(),
            blame: crate::link::blame::Board::nowhere(),
            pull_from: 0,
            alongside: 0,
            rx_large: vec![RecvLarge::Fresh; p],
            receipts: (0..p).map(|_| Default::default()).collect(),
            at_rest: false,
            said_waiting: false,
            call_stores: None,
        }
    }

    /// Tells every link whether this host has more ranks (and network proxies) than cores:
    /// there, messages at least as large as a ring are pulled, whatever the speeds the
    /// receivers measured (`oxccl_transport::stream::Stream::set_crowded`).
    pub fn set_crowded(&mut self, crowded: bool) {
        self.crowded = crowded;
        for link in self.links.iter_mut().flatten() {
            link.stream().set_crowded(crowded);
        }
    }

    /// Whether this host has more ranks than cores ([`Engine::set_crowded`]).
    pub fn crowded(&self) -> bool {
        self.crowded
    }

    /// Starts a new operation: the jobs queued from now on belong to it. Returns its id.
    pub fn begin_op(&mut self) -> u64 {
        self.cur_op = self.next_op;
        self.next_op += 1;
        self.cur_op
    }

    /// The operation new jobs belong to.
    pub fn current_op(&self) -> u64 {
        self.cur_op
    }

    /// Whether every job of operation `op` is done.
    pub fn op_done(&self, op: u64) -> bool {
        !self.left.iter().any(|&(o, _)| o == op)
    }

    /// Whether any job is queued (of any operation): then the paths that write to the links
    /// directly would cut into the queued bytes.
    pub fn has_queued(&self) -> bool {
        !self.left.is_empty()
    }

    /// Whether any job (of any operation) is queued for `peer`.
    pub(super) fn has_jobs_for(&self, peer: usize) -> bool {
        !self.sendq[peer].is_empty() || !self.recvq[peer].is_empty() || self.awaits_receipt(peer)
    }

    /// Whether the current operation waits for stream bytes from `peer`.
    pub(super) fn current_expects(&self, peer: usize) -> bool {
        let op = self.cur_op;
        self.recvq[peer].iter().any(|(t, _)| t.op == op)
    }

    pub(super) fn count(&mut self, op: u64) {
        match self.left.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += 1,
            None => self.left.push((op, 1)),
        }
    }

    pub(super) fn uncount(&mut self, op: u64) {
        if let Some(i) = self.left.iter().position(|&(o, _)| o == op) {
            self.left[i].1 -= 1;
            if self.left[i].1 == 0 {
                self.left.swap_remove(i);
            }
        }
    }

    /// Queues a 32-byte header for `peer` whose bytes the job keeps (the caller's copy may go).
    pub fn send_inline(&mut self, peer: usize, hdr: [u8; Header::LEN]) {
        let job = self.inline_job(hdr);
        self.sendq[peer].push_back(job);
        self.activate(peer);
    }

    /// A send job of 32 bytes it keeps itself, counted to the current operation.
    fn inline_job(&mut self, bytes: [u8; Header::LEN]) -> SendJob {
        self.next_id += 1;
        let owner = self.cur_op;
        self.count(owner);
        SendJob {
            ptr: std::ptr::null(),
            len: Header::LEN,
            avail: Header::LEN,
            pos: 0,
            pad: 0,
            id: self.next_id,
            owner,
            inline: Some(bytes),
            pull_from: usize::MAX,
            alongside: 0,
            msg: Header::LEN,
            large: SendLarge::Fresh,
        }
    }

    /// Queues 32 bytes for `peer` at the first message boundary of its queue (ahead of the
    /// sends that have not started): a receipt, which must not wait behind data.
    pub(super) fn send_inline_first(&mut self, peer: usize, bytes: [u8; Header::LEN]) {
        // Only whole messages are queued here (no collective is running), and each opens
        // with an inline header: an inline job not yet started is a boundary. Receipts keep
        // their order: the first boundary after the last receipt.
        let q = &self.sendq[peer];
        let receipt = |j: &SendJob| j.inline.is_some_and(|b| b[0] == RECEIPT_FIRST_BYTE);
        let after = q.iter().rposition(receipt).map_or(0, |i| i + 1);
        let at = (after..q.len())
            .find(|&i| q[i].inline.is_some() && q[i].pos == 0)
            .unwrap_or(q.len());
        let job = self.inline_job(bytes);
        self.sendq[peer].insert(at, job);
        self.activate(peer);
    }

    pub(super) fn activate(&mut self, peer: usize) {
        if !self.is_active[peer] {
            self.is_active[peer] = true;
            self.active.push(peer);
        }
    }

    /// Queues `len` bytes at `ptr` for `peer`, `avail` of them ready now: a whole message.
    /// Returns the job id.
    pub fn send(
        &mut self,
        peer: usize,
        ptr: *const u8,
        len: usize,
        avail: usize,
        pad: usize,
    ) -> u64 {
        self.send_piece(peer, ptr, len, avail, pad, len)
    }

    /// [`Engine::send`] of a piece of a message: `msg` is the whole message's length on the
    /// first piece with bytes, 0 on the others.
    pub fn send_piece(
        &mut self,
        peer: usize,
        ptr: *const u8,
        len: usize,
        avail: usize,
        pad: usize,
        msg: usize,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if len + pad == 0 {
            return id;
        }
        let owner = self.cur_op;
        self.sendq[peer].push_back(SendJob {
            ptr,
            len,
            avail,
            pos: 0,
            pad,
            id,
            owner,
            inline: None,
            pull_from: self.pull_from,
            alongside: self.alongside,
            msg,
            large: SendLarge::Fresh,
        });
        self.count(owner);
        self.activate(peer);
        id
    }

    /// Queues a receive of a whole message.
    pub fn recv(&mut self, peer: usize, job: RecvJob) {
        let msg = job.len;
        self.recv_piece(peer, job, msg);
    }

    /// [`Engine::recv`] of a piece of a message: `msg` as for [`Engine::send_piece`].
    pub fn recv_piece(&mut self, peer: usize, job: RecvJob, msg: usize) {
        if job.len + job.pad == 0 {
            return;
        }
        if job.in_step {
            self.step_left += 1;
        }
        self.recvs_posted[peer] += 1;
        let owner = self.cur_op;
        self.count(owner);
        let tag = RecvTag {
            op: owner,
            pull_from: self.pull_from,
            msg,
        };
        self.recvq[peer].push_back((tag, job));
        self.activate(peer);
    }

    /// Receive jobs ever posted from `peer` (see [`Until::Received`]).
    pub fn recvs_posted(&self, peer: usize) -> u64 {
        self.recvs_posted[peer]
    }

    /// Queues this call's header to and from `peer`.
    pub fn exchange_header(&mut self, peer: usize, hdr_out: *const u8) {
        self.send(peer, hdr_out, Header::LEN, Header::LEN, 0);
        let mut expect = self.mine;
        expect.seq = self.rx_seq[peer];
        self.tx_seq[peer] += 1;
        self.rx_seq[peer] += 1;
        self.recv(peer, RecvJob::header(expect));
    }

    /// Polls until `until` holds.
    pub fn drive(&mut self, until: Until) -> Result<(), Error> {
        let mut w = Waiter::new();
        loop {
            match until {
                Until::All => {
                    if self.op_done(self.cur_op) {
                        self.forget_idle_peers();
                        self.unsay_waiting();
                        return Ok(());
                    }
                }
                Until::Step => {
                    if self.step_left == 0 {
                        return Ok(());
                    }
                }
                Until::NoSendReads(ptr, len) => {
                    if !self.overlaps_send(ptr, len, None) {
                        return Ok(());
                    }
                }
                Until::Received(peer, count) => {
                    if self.recvs_done[peer] >= count {
                        return Ok(());
                    }
                }
            }
            if self.progress_all()? {
                w.progress();
            } else {
                if w.idle_rounds() % 64 == 63 {
                    self.check_tiny_mismatch().map_err(|e| self.fail(e))?;
                }
                let peers = std::mem::take(&mut self.active);
                let r = self.idle(&mut w, &peers, None);
                self.active = peers;
                r?;
            }
        }
    }

    /// One pass over every peer with queued jobs; whether anything moved.
    pub(super) fn progress_all(&mut self) -> Result<bool, Error> {
        let mut progressed = false;
        for i in 0..self.active.len() {
            let peer = self.active[i];
            progressed |= self.progress_sends(peer).map_err(|e| self.fail(e))?;
            progressed |= self.progress_recvs(peer).map_err(|e| self.fail(e))?;
            // A receipt that came before its send was posted.
            if self.receipts[peer].pairable() {
                self.match_receipts(peer).map_err(|e| self.fail(e))?;
                progressed = true;
            }
            // A peer we expect nothing else from may be gone already: read only for a
            // receipt we wait for.
            if self.at_rest && self.recvq[peer].is_empty() && self.awaits_receipt(peer) {
                progressed |= self.take_receipts(peer).map_err(|e| self.fail(e))?;
            }
        }
        Ok(progressed)
    }

    /// Drops the peers whose queues are empty from the active list.
    fn forget_idle_peers(&mut self) {
        let (sendq, recvq, receipts) = (&self.sendq, &self.recvq, &self.receipts);
        let is_active = &mut self.is_active;
        self.active.retain(|&p| {
            let keep = !sendq[p].is_empty() || !recvq[p].is_empty() || receipts[p].awaiting();
            is_active[p] = keep;
            keep
        });
    }

    /// Drives operation `op` (a non-blocking one, waited for outside any call) until it is
    /// done (`Ok(true)`) or `stop()` says another call wants the engine (`Ok(false)`: call
    /// again, with the same `w`, so that the deadline counts across slices).
    pub fn drive_slice(
        &mut self,
        op: u64,
        w: &mut Waiter,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, Error> {
        loop {
            if self.op_done(op) {
                self.forget_idle_peers();
                self.unsay_waiting();
                return Ok(true);
            }
            if stop() {
                return Ok(false);
            }
            if self.progress_all()? {
                w.progress();
            } else {
                let peers = std::mem::take(&mut self.active);
                let r = self.idle(w, &peers, None);
                self.active = peers;
                r?;
            }
        }
    }

    /// The latency path: writes `msg` to every peer in `peers` and reads `len` bytes from each
    /// into `slots[peer * len..]`, checking each peer's first 32 bytes with `check` as soon as
    /// they are in. One message per peer, no queues.
    pub fn exchange_all(
        &mut self,
        peers: &[usize],
        msg: &[u8],
        slots: &mut [u8],
        len: usize,
        mut check: impl FnMut(usize, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let op = self.op;
        let n = peers.len();
        self.small_sent.clear();
        self.small_sent.resize(n, 0);
        self.small_got.clear();
        self.small_got.resize(n, 0);
        let mut left = 2 * n;
        let mut w = Waiter::new();
        while left > 0 {
            let mut progressed = false;
            for (k, &q) in peers.iter().enumerate() {
                let link = self.links[q].as_mut().expect("a peer without a link");
                let sent = self.small_sent[k];
                if sent < msg.len() {
                    let r = link.write(&msg[sent..]);
                    let m = r.map_err(|source| Error::PeerFailed {
                        op,
                        peer: q,
                        source,
                    });
                    let m = m.map_err(|e| self.fail(e))?;
                    if m > 0 {
                        progressed = true;
                        self.small_sent[k] += m;
                        left -= usize::from(self.small_sent[k] == msg.len());
                    }
                }
                let got = self.small_got[k];
                if got == 0 {
                    // A receipt may come first: the stream is at a boundary here.
                    progressed |= self.take_receipts(q).map_err(|e| self.fail(e))?;
                    if !self.message_next(q) {
                        continue;
                    }
                }
                let link = self.links[q].as_mut().expect("a peer without a link");
                if got < len {
                    let view = link.peek();
                    let view = view.map_err(|source| Error::PeerFailed {
                        op,
                        peer: q,
                        source,
                    });
                    let view = match view {
                        Ok(v) => v,
                        Err(e) => return Err(self.fail(e)),
                    };
                    let m = view.len().min(len - got);
                    if m > 0 {
                        let dst = &mut slots[q * len + got..q * len + got + m];
                        dst.copy_from_slice(&view[..m]);
                        link.consume(m);
                        progressed = true;
                        let now = got + m;
                        self.small_got[k] = now;
                        if got < Header::LEN && now >= Header::LEN {
                            let h = &slots[q * len..q * len + Header::LEN];
                            if let Err(e) = check(q, h) {
                                return Err(self.fail(e));
                            }
                        }
                        left -= usize::from(now == len);
                    }
                }
            }
            if progressed {
                w.progress();
            } else {
                // Only the peers we still send to or receive from: one that has taken our
                // message and given us its own may finish the call and exit, which is no
                // failure (the emulated cluster's ranks did, while a peer behind a TCP proxy
                // was still on its way, and the liveness check named the one that had left).
                // A timeout names the first of them we still receive from.
                let mut waiting = std::mem::take(&mut self.small_waiting);
                waiting.clear();
                let mut blame = None;
                for (k, &q) in peers.iter().enumerate() {
                    let receiving = self.small_got[k] < len;
                    if receiving && blame.is_none() {
                        blame = Some(q);
                    }
                    if receiving || self.small_sent[k] < msg.len() {
                        waiting.push(q);
                    }
                }
                let r = self.idle(&mut w, &waiting, blame);
                self.small_waiting = waiting;
                r?;
            }
        }
        Ok(())
    }

    /// The timeout of a wait on `peers`: about the first one we wait for data from, else the
    /// first one we wait for to take ours.
    pub(super) fn timeout_error(&self, peers: &[usize], after: Duration) -> Error {
        for &peer in peers {
            if !self.recvq[peer].is_empty() {
                return Error::Timeout {
                    op: self.op,
                    peer,
                    waiting: "for data from it",
                    after,
                };
            }
        }
        for &peer in peers {
            if !self.sendq[peer].is_empty() {
                return Error::Timeout {
                    op: self.op,
                    peer,
                    waiting: "for it to take our data",
                    after,
                };
            }
        }
        for &peer in &self.active {
            if self.awaits_receipt(peer) {
                return Error::Timeout {
                    op: self.op,
                    peer,
                    waiting: "for it to post the receive matching our send",
                    after,
                };
            }
        }
        Error::Timeout {
            op: self.op,
            peer: self.rank,
            waiting: "(nothing queued)",
            after,
        }
    }

    /// Aborts every link and poisons the engine; returns the error for the caller (the first
    /// failure's origin when this one was passed on by another rank: see `link::blame`).
    pub fn fail(&mut self, e: Error) -> Error {
        let e = if self.poisoned.is_none() {
            self.blame.settle(self.rank, self.op, e, &mut self.links)
        } else {
            e
        };
        tracing::warn!(rank = self.rank, error = %e, "aborting the communicator");
        for l in self.links.iter_mut().flatten() {
            l.abort();
        }
        for q in &mut self.sendq {
            q.clear();
        }
        for q in &mut self.recvq {
            q.clear();
        }
        for r in &mut self.receipts {
            r.clear();
        }
        self.active.clear();
        self.is_active.iter_mut().for_each(|a| *a = false);
        self.step_left = 0;
        self.left.clear();
        self.rx_large.fill(RecvLarge::Fresh);
        if self.poisoned.is_none() {
            self.poisoned = Some(e.to_string());
        }
        e
    }

    pub(super) fn sendq_is_empty(&self, peer: usize) -> bool {
        self.sendq[peer].is_empty()
    }
}
