//! [`Verbs`] on a real NIC through the `sideway` crate (feature `rdma`).
//!
//! `sideway` loads `libibverbs.so.1` at run time, so this builds without rdma-core and a
//! machine without it (or without a device, or without kernel support) gets
//! [`VerbsError::NoDevice`] from [`Verbs::device_names`] / [`Verbs::open`], never a crash.
//!
//! The `unsafe` here is three kinds, each small: owning page-aligned memory that the NIC may
//! write (allocate, copy in and out, free), registering it, and naming it in a scatter/gather
//! entry. A queue pair keeps every region it posted from alive until it is destroyed, so a
//! posted request can never read freed memory.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{
    BasicCompletionQueue, GenericCompletionQueue, PollCompletionQueueError,
    WorkCompletionOperationType as Op, WorkCompletionStatus as St,
};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion as SwMr;
use sideway::ibverbs::protection_domain::ProtectionDomain as SwPd;
use sideway::ibverbs::queue_pair::{
    BasicQueuePair, PostSendGuard, QueuePair as _, QueuePairAttribute, QueuePairState,
    SetScatterGatherEntry, WorkRequestFlags,
};
use sideway::ibverbs::AccessFlags;

use super::verbs::{
    check_bounds, Access, CompletionQueue, Context, MemoryRegion, ProtectionDomain, QpCaps,
    QpState, QpTransition, QueuePair, Verbs, VerbsError, WcOpcode, WcStatus, WorkCompletion,
    WriteWr,
};

/// rdma-core through `sideway`. `port` and `gid_index` choose the port and GID (RoCE needs the
/// right GID index; `OXCCL_IB_PORT`, `OXCCL_IB_GID_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidewayVerbs {
    /// Port number (1-based).
    pub port: u8,
    /// GID table index.
    pub gid_index: u32,
}

impl Default for SidewayVerbs {
    fn default() -> Self {
        SidewayVerbs {
            port: 1,
            gid_index: 0,
        }
    }
}

impl SidewayVerbs {
    /// Port 1 and GID index 0 unless `OXCCL_IB_PORT` / `OXCCL_IB_GID_INDEX` say otherwise.
    pub fn from_env() -> crate::Result<Self> {
        let mut v = SidewayVerbs::default();
        for (var, slot) in [("OXCCL_IB_PORT", 0usize), ("OXCCL_IB_GID_INDEX", 1)] {
            let Ok(value) = std::env::var(var) else {
                continue;
            };
            let bad = || crate::Error::Config {
                var,
                value: value.clone(),
                reason: "expected a small non-negative integer".into(),
            };
            match slot {
                0 => {
                    v.port = value
                        .trim()
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(bad)?
                }
                _ => v.gid_index = value.trim().parse::<u8>().map_err(|_| bad())?.into(),
            }
        }
        Ok(v)
    }
}

fn os(call: &'static str, e: impl std::fmt::Display) -> VerbsError {
    VerbsError::Os {
        call,
        source: std::io::Error::other(e.to_string()),
    }
}

impl Verbs for SidewayVerbs {
    type Context = SwContext;
    type Pd = SwPdHandle;
    type Mr = SwMrHandle;
    type Cq = SwCq;
    type Qp = SwQp;

    fn name(&self) -> &'static str {
        "sideway"
    }

    fn device_names(&self) -> Result<Vec<String>, VerbsError> {
        // ENOSYS (no kernel RDMA support), EOPNOTSUPP (no libibverbs.so.1) and an empty list all
        // mean the same to a user: no device here.
        let list = DeviceList::new().map_err(|e| {
            let detail =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
            VerbsError::NoDevice(format!("listing RDMA devices failed ({detail})"))
        })?;
        let names: Vec<String> = list.iter().map(|d| d.name()).collect();
        if names.is_empty() {
            return Err(VerbsError::NoDevice("the device list is empty".into()));
        }
        Ok(names)
    }

    fn open(&self, device: Option<&str>) -> Result<SwContext, VerbsError> {
        let names = self.device_names()?;
        let name = match device {
            Some(want) if names.iter().any(|n| n == want) => want.to_string(),
            Some(want) => {
                return Err(VerbsError::DeviceNotFound {
                    name: want.into(),
                    available: names,
                })
            }
            None => names[0].clone(),
        };
        let list = DeviceList::new().map_err(|e| VerbsError::NoDevice(e.to_string()))?;
        let dev =
            list.iter()
                .find(|d| d.name() == name)
                .ok_or_else(|| VerbsError::DeviceNotFound {
                    name: name.clone(),
                    available: names.clone(),
                })?;
        let ctx = dev.open().map_err(|e| os("ibv_open_device", e))?;
        let port = ctx
            .query_port(self.port)
            .map_err(|e| os("ibv_query_port", e))?;
        let gid = ctx
            .query_gid(self.port, self.gid_index)
            .map_err(|e| os("ibv_query_gid", e))?;
        Ok(SwContext {
            ctx,
            name,
            port: self.port,
            gid_index: self.gid_index,
            lid: port.lid(),
            gid: gid.raw,
            mtu: port.active_mtu(),
        })
    }
}

/// An open device and the port it uses.
pub struct SwContext {
    ctx: Arc<DeviceContext>,
    name: String,
    port: u8,
    gid_index: u32,
    lid: u16,
    gid: [u8; 16],
    mtu: Mtu,
}

/// Port settings a queue pair needs for its transitions.
#[derive(Clone, Copy)]
struct PortInfo {
    port: u8,
    gid_index: u32,
    lid: u16,
    mtu: Mtu,
}

impl Context<SidewayVerbs> for SwContext {
    fn device_name(&self) -> &str {
        &self.name
    }

    fn alloc_pd(&self) -> Result<SwPdHandle, VerbsError> {
        let pd = self.ctx.alloc_pd().map_err(|e| os("ibv_alloc_pd", e))?;
        let port = PortInfo {
            port: self.port,
            gid_index: self.gid_index,
            lid: self.lid,
            mtu: self.mtu,
        };
        Ok(SwPdHandle { pd, port })
    }

    fn create_cq(&self, depth: u32) -> Result<SwCq, VerbsError> {
        let cq = self
            .ctx
            .create_cq_builder()
            .setup_cqe(depth)
            .build()
            .map_err(|e| os("ibv_create_cq", e))?;
        Ok(SwCq { cq })
    }

    fn port_address(&self) -> Result<(u16, [u8; 16]), VerbsError> {
        Ok((self.lid, self.gid))
    }
}

/// A protection domain.
pub struct SwPdHandle {
    pd: Arc<SwPd>,
    port: PortInfo,
}

impl ProtectionDomain<SidewayVerbs> for SwPdHandle {
    fn alloc_mr(&self, len: usize, access: Access) -> Result<SwMrHandle, VerbsError> {
        let buf = PinnedBuf::new(len)?;
        let mut flags = AccessFlags::LocalWrite;
        if access.remote_write {
            flags |= AccessFlags::RemoteWrite;
        }
        // SAFETY: `buf` owns `len` bytes at `ptr` (at least one page is allocated for len 0).
        // `MrInner` keeps it alive and declares `mr` first, so the region is deregistered before
        // the memory is freed; the NIC never touches it afterwards.
        let mr = unsafe { self.pd.reg_mr(buf.ptr.as_ptr() as usize, buf.cap, flags) }
            .map_err(|e| os("ibv_reg_mr", e))?;
        Ok(SwMrHandle(Arc::new(MrInner { mr, buf, len })))
    }

    fn create_qp(&self, cq: &SwCq, caps: QpCaps) -> Result<SwQp, VerbsError> {
        let generic = GenericCompletionQueue::from(Arc::clone(&cq.cq));
        let qp = self
            .pd
            .create_qp_builder()
            .setup_max_send_wr(caps.max_send_wr)
            .setup_max_recv_wr(caps.max_recv_wr)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_send_cq(generic.clone())
            .setup_recv_cq(generic)
            .build()
            .map_err(|e| os("ibv_create_qp", e))?;
        Ok(SwQp {
            qp,
            state: QpState::Reset,
            port: self.port,
            keep: Vec::new(),
        })
    }
}

/// Zeroed, page-aligned memory owned outside any Rust reference (the NIC writes it).
struct PinnedBuf {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain owned memory; all access goes through raw copies.
unsafe impl Send for PinnedBuf {}
// SAFETY: as above; concurrent copies race only with the NIC, which the protocol orders.
unsafe impl Sync for PinnedBuf {}

impl PinnedBuf {
    fn layout(cap: usize) -> Result<Layout, VerbsError> {
        Layout::from_size_align(cap, 4096)
            .map_err(|_| VerbsError::Sim(format!("cannot lay out {cap} bytes")))
    }

    fn new(len: usize) -> Result<Self, VerbsError> {
        let cap = len.max(1).div_ceil(4096) * 4096;
        let layout = Self::layout(cap)?;
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            os(
                "allocating a memory region",
                format!("{cap} bytes: out of memory"),
            )
        })?;
        Ok(PinnedBuf { ptr, cap })
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout (it was valid then).
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, 4096),
            )
        }
    }
}

struct MrInner {
    // Field order matters: deregister before freeing.
    mr: Arc<SwMr>,
    buf: PinnedBuf,
    len: usize,
}

/// A registered region that owns its memory.
#[derive(Clone)]
pub struct SwMrHandle(Arc<MrInner>);

impl MemoryRegion for SwMrHandle {
    fn lkey(&self) -> u32 {
        self.0.mr.lkey()
    }
    fn rkey(&self) -> u32 {
        self.0.mr.rkey()
    }
    fn addr(&self) -> u64 {
        self.0.buf.ptr.as_ptr() as u64
    }
    fn len(&self) -> usize {
        self.0.len
    }
    fn write_at(&self, offset: usize, src: &[u8]) -> Result<(), VerbsError> {
        check_bounds(offset, src.len(), self.0.len)?;
        // SAFETY: in bounds (checked); `src` is a Rust slice so it cannot overlap NIC memory
        // that has no Rust reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.0.buf.ptr.as_ptr().add(offset),
                src.len(),
            )
        };
        Ok(())
    }
    fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<(), VerbsError> {
        check_bounds(offset, dst.len(), self.0.len)?;
        // SAFETY: in bounds (checked); `dst` is exclusively borrowed Rust memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.0.buf.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }
    fn read_u64(&self, offset: usize) -> Result<u64, VerbsError> {
        check_bounds(offset, 8, self.0.len)?;
        if offset % 8 != 0 {
            return Err(VerbsError::OutOfBounds {
                offset,
                len: 8,
                region: self.0.len,
            });
        }
        // SAFETY: in bounds and 8-byte aligned (the buffer is page aligned, offset checked), so
        // it is a valid `AtomicU64`; the NIC's aligned 8-byte write is never seen torn.
        let word =
            unsafe { AtomicU64::from_ptr(self.0.buf.ptr.as_ptr().add(offset).cast::<u64>()) };
        Ok(u64::from_le(word.load(Ordering::Acquire)))
    }
}

/// A completion queue.
#[derive(Clone)]
pub struct SwCq {
    cq: Arc<BasicCompletionQueue>,
}

fn status(raw: u32) -> WcStatus {
    const MAP: [(St, WcStatus); 8] = [
        (St::Success, WcStatus::Success),
        (St::LocalLengthError, WcStatus::LocalLength),
        (St::LocalProtectionError, WcStatus::LocalProtection),
        (St::WorkRequestFlushedError, WcStatus::WrFlush),
        (St::RemoteAccessError, WcStatus::RemoteAccess),
        (
            St::RemoteInvalidRequestError,
            WcStatus::RemoteInvalidRequest,
        ),
        (St::RetryCounterExceededError, WcStatus::RetryExceeded),
        (
            St::ResponderNotReadyRetryCounterExceededError,
            WcStatus::RnrRetryExceeded,
        ),
    ];
    MAP.iter()
        .find(|(s, _)| *s as u32 == raw)
        .map_or(WcStatus::Other(raw), |(_, w)| *w)
}

impl CompletionQueue for SwCq {
    fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize, VerbsError> {
        let poller = match self.cq.start_poll() {
            Ok(p) => p,
            Err(PollCompletionQueueError::CompletionQueueEmpty) => return Ok(0),
            Err(e) => return Err(os("ibv_poll_cq", e)),
        };
        let before = out.len();
        for wc in poller.take(max) {
            let opcode = match wc.opcode() {
                o if o == Op::Write as u32 => WcOpcode::RdmaWrite,
                o if o == Op::ReceiveWithImmediate as u32 => WcOpcode::RecvRdmaWithImm,
                o => WcOpcode::Other(o),
            };
            let imm_data =
                (opcode == WcOpcode::RecvRdmaWithImm).then(|| u32::from_be(wc.imm_data()));
            out.push(WorkCompletion {
                wr_id: wc.wr_id(),
                status: status(wc.status()),
                opcode,
                imm_data,
                byte_len: wc.byte_len(),
                qp_num: 0,
            });
        }
        Ok(out.len() - before)
    }
}

/// An RC queue pair; `state` is this side's record of the last successful transition.
pub struct SwQp {
    qp: BasicQueuePair,
    state: QpState,
    port: PortInfo,
    /// Regions this queue pair posted from, kept until it is destroyed.
    keep: Vec<Arc<MrInner>>,
}

impl QueuePair<SidewayVerbs> for SwQp {
    fn qp_num(&self) -> u32 {
        self.qp.qp_number()
    }

    fn state(&self) -> QpState {
        self.state
    }

    fn modify(&mut self, t: QpTransition) -> Result<(), VerbsError> {
        if !t.allowed_from(self.state) {
            return Err(VerbsError::BadTransition {
                qp_num: self.qp_num(),
                from: self.state,
                to: t.target(),
            });
        }
        let mut attr = QueuePairAttribute::new();
        match t {
            QpTransition::Init { remote_write } => {
                let mut flags = AccessFlags::LocalWrite;
                if remote_write {
                    flags |= AccessFlags::RemoteWrite;
                }
                attr.setup_state(QueuePairState::Init)
                    .setup_pkey_index(0)
                    .setup_port(self.port.port)
                    .setup_access_flags(flags);
            }
            QpTransition::Rtr {
                remote,
                min_rnr_timer,
            } => {
                attr.setup_state(QueuePairState::ReadyToReceive)
                    .setup_path_mtu(self.port.mtu)
                    .setup_dest_qp_num(remote.qp_num)
                    .setup_rq_psn(remote.psn)
                    .setup_max_dest_read_atomic(0)
                    .setup_min_rnr_timer(min_rnr_timer);
                let mut ah = AddressHandleAttribute::new();
                ah.setup_dest_lid(remote.lid)
                    .setup_port(self.port.port)
                    .setup_service_level(0);
                // RoCE ports have no LID: address the peer by GID.
                if self.port.lid == 0 {
                    let gid = Gid { raw: remote.gid };
                    let index = u8::try_from(self.port.gid_index)
                        .map_err(|_| os("ibv_modify_qp", "GID index above 255"))?;
                    ah.setup_grh_src_gid_index(index)
                        .setup_grh_dest_gid(&gid)
                        .setup_grh_hop_limit(64);
                }
                attr.setup_address_vector(&ah);
            }
            QpTransition::Rts {
                sq_psn,
                timeout,
                retry_cnt,
                rnr_retry,
            } => {
                attr.setup_state(QueuePairState::ReadyToSend)
                    .setup_sq_psn(sq_psn)
                    .setup_timeout(timeout)
                    .setup_retry_cnt(retry_cnt)
                    .setup_rnr_retry(rnr_retry)
                    .setup_max_read_atomic(0);
            }
            QpTransition::Error => {
                attr.setup_state(QueuePairState::Error);
            }
            QpTransition::Reset => {
                attr.setup_state(QueuePairState::Reset);
            }
        }
        self.qp.modify(&attr).map_err(|e| os("ibv_modify_qp", e))?;
        self.state = t.target();
        Ok(())
    }

    fn post_write(&mut self, wr: WriteWr<'_, SwMrHandle>) -> Result<(), VerbsError> {
        let qp_num = self.qp_num();
        let post = |reason: String| VerbsError::Post {
            qp_num,
            op: "send",
            reason,
        };
        check_bounds(wr.local_offset, wr.len, wr.local.len()).map_err(|e| post(e.to_string()))?;
        let len = u32::try_from(wr.len)
            .map_err(|_| post(format!("{} bytes exceed a work request", wr.len)))?;
        if !self.keep.iter().any(|k| Arc::ptr_eq(k, &wr.local.0)) {
            self.keep.push(Arc::clone(&wr.local.0));
        }
        let mut guard = self.qp.start_post_send();
        let handle = guard.construct_wr(wr.wr_id, WorkRequestFlags::Signaled);
        let handle = match wr.imm {
            Some(imm) => handle.setup_write_imm(wr.rkey, wr.remote_addr, imm.to_be()),
            None => handle.setup_write(wr.rkey, wr.remote_addr),
        };
        if len > 0 {
            let addr = wr.local.addr() + wr.local_offset as u64;
            // SAFETY: the range lies inside the registered region (checked above), whose memory
            // `self.keep` holds until this queue pair is destroyed, after which the NIC no longer
            // reads it.
            unsafe { handle.setup_sge(wr.local.lkey(), addr, len) };
        }
        guard.post().map_err(|e| post(e.to_string()))
    }

    fn post_recv(&mut self, wr_id: u64) -> Result<(), VerbsError> {
        let qp_num = self.qp_num();
        let mut guard = self.qp.start_post_recv();
        // Zero scatter entries: a write with immediate consumes the receive, its data goes to
        // the address the writer named.
        let _ = guard.construct_wr(wr_id);
        guard.post().map_err(|e| VerbsError::Post {
            qp_num,
            op: "recv",
            reason: e.to_string(),
        })
    }
}
