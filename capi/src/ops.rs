//! The collectives and point-to-point calls: NCCL's argument lists, checked, then run now or
//! posted to the thread's group ([`crate::group`]).
//!
//! In-place forms are NCCL's: `sendbuff == recvbuff` for AllReduce, Broadcast and Reduce (and
//! AlltoAll, which NCCL leaves undefined and oxccl runs through a copy of the input);
//! `sendbuff == recvbuff + rank * sendcount` for AllGather; `recvbuff == sendbuff + rank *
//! recvcount` for ReduceScatter. Any other overlap of the two buffers is `oxcclInvalidArgument`.

use crate::group::submit;
use crate::handle::{entry, lookup, Failure};
use crate::{oxcclComm_t, oxcclDataType_t, oxcclRedOp_t, oxcclResult_t};
use oxccl_collectives::{Communicator, DataType, ReduceOp};
use std::ffi::{c_int, c_void};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    AllReduce,
    Broadcast,
    Reduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    Send,
    Recv,
}

/// One checked call: the caller's buffers as raw pointers (valid until the call, or the group
/// it was posted to, returns), element count as NCCL counts it, and root or peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub kind: Kind,
    pub send: *const u8,
    pub recv: *mut u8,
    pub count: usize,
    pub dtype: DataType,
    pub red: ReduceOp,
    /// The root of Broadcast and Reduce, the peer of Send and Recv.
    pub peer: usize,
}

// SAFETY: an Op is only the description of a call; the buffers behind its pointers belong to the
// C caller, who keeps them valid and untouched until the call (or its group) returns, and the
// group runs each communicator's Ops on one thread at a time.
unsafe impl Send for Op {}

/// NCCL's numbering of `oxcclDataType_t`.
const DTYPES: [DataType; 10] = [
    DataType::I8,
    DataType::U8,
    DataType::I32,
    DataType::U32,
    DataType::I64,
    DataType::U64,
    DataType::F16,
    DataType::F32,
    DataType::F64,
    DataType::BF16,
];

/// NCCL's numbering of `oxcclRedOp_t`.
const REDOPS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Prod,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::Avg,
];

pub(crate) fn dtype_of(v: oxcclDataType_t) -> Result<DataType, Failure> {
    usize::try_from(v)
        .ok()
        .and_then(|i| DTYPES.get(i).copied())
        .ok_or_else(|| Failure::invalid(format!("datatype {v} is not an oxcclDataType_t (0..=9)")))
}

fn redop_of(v: oxcclRedOp_t) -> Result<ReduceOp, Failure> {
    usize::try_from(v)
        .ok()
        .and_then(|i| REDOPS.get(i).copied())
        .ok_or_else(|| Failure::invalid(format!("op {v} is not an oxcclRedOp_t (0..=4)")))
}

fn rank_of(v: c_int, size: usize, what: &str) -> Result<usize, Failure> {
    usize::try_from(v)
        .ok()
        .filter(|&r| r < size)
        .ok_or_else(|| {
            Failure::invalid(format!(
                "{what} {v} is not a rank of this {size}-rank communicator"
            ))
        })
}

fn bytes_of(count: usize, times: usize, dtype: DataType) -> Result<usize, Failure> {
    count
        .checked_mul(times)
        .and_then(|n| n.checked_mul(dtype.size()))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| Failure::invalid(format!("count {count} of {dtype} is too large")))
}

fn need(ptr: *const u8, bytes: usize, what: &str) -> Result<(), Failure> {
    if ptr.is_null() && bytes > 0 {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    Ok(())
}

fn overlap(a: *const u8, la: usize, b: *const u8, lb: usize) -> bool {
    let (a, b) = (a as usize, b as usize);
    la > 0 && lb > 0 && a < b.wrapping_add(lb) && b < a.wrapping_add(la)
}

impl Op {
    /// Whether the buffers are in NCCL's in-place arrangement for this call on rank `me`.
    fn in_place(&self, me: usize) -> bool {
        let (s, r) = (self.send as usize, self.recv as usize);
        let n = self.count.wrapping_mul(self.dtype.size());
        match self.kind {
            Kind::AllReduce | Kind::AllToAll | Kind::Broadcast | Kind::Reduce => s == r,
            Kind::AllGather => s == r.wrapping_add(me.wrapping_mul(n)),
            Kind::ReduceScatter => r == s.wrapping_add(me.wrapping_mul(n)),
            Kind::Send | Kind::Recv => false,
        }
    }

    /// Checks the buffers against the communicator (the enum values, root and peer were checked
    /// when the Op was made).
    fn check(&self, comm: &Communicator) -> Result<(), Failure> {
        let (p, me) = (comm.size(), comm.rank());
        let n = bytes_of(self.count, 1, self.dtype)?;
        let all = bytes_of(self.count, p, self.dtype)?;
        let (s, r) = (self.send, self.recv as *const u8);
        let root = me == self.peer;
        let (slen, rlen) = match self.kind {
            Kind::AllReduce => (n, n),
            Kind::AllToAll => (all, all),
            Kind::Broadcast => (if root { n } else { 0 }, n),
            Kind::Reduce => (n, if root { n } else { 0 }),
            Kind::AllGather => (n, all),
            Kind::ReduceScatter => (all, n),
            Kind::Send => (n, 0),
            Kind::Recv => (0, n),
        };
        need(s, slen, "sendbuff")?;
        need(r, rlen, "recvbuff")?;
        if !self.in_place(me) && overlap(s, slen, r, rlen) {
            return Err(Failure::invalid(
                "sendbuff and recvbuff overlap, but not in NCCL's in-place arrangement",
            ));
        }
        Ok(())
    }

    /// Runs the call on `comm`, blocking until it is done.
    ///
    /// # Safety
    /// The buffers are valid as [`Op::check`] requires and nothing else touches them meanwhile.
    pub(crate) unsafe fn run(&self, comm: &Communicator) -> oxccl_collectives::Result<()> {
        let (p, me, dt) = (comm.size(), comm.rank(), self.dtype);
        let n = self.count * dt.size();
        let (s, r) = (self.send, self.recv);
        let in_place = self.in_place(me);
        // The caller's buffers, checked non-NULL for their lengths by Op::check; aliasing slices
        // are never made: in-place forms go through copies.
        // SAFETY: as just said.
        let src = |len: usize| unsafe { slice(s, len) };
        // SAFETY: as above.
        let dst = |len: usize| unsafe { slice_mut(r, len) };
        match self.kind {
            Kind::AllReduce if in_place => comm.all_reduce_in_place_bytes(dst(n), dt, self.red),
            Kind::AllReduce => comm.all_reduce_bytes(src(n), dst(n), dt, self.red),
            Kind::Broadcast => {
                let buf = dst(n);
                if me == self.peer && !in_place {
                    buf.copy_from_slice(src(n));
                }
                comm.broadcast_bytes(buf, dt, self.peer)
            }
            Kind::Reduce if in_place && me == self.peer => {
                let out = dst(n);
                let input = out.to_vec();
                comm.reduce_bytes(&input, out, dt, self.red, self.peer)
            }
            Kind::Reduce => {
                let out: &mut [u8] = if me == self.peer { dst(n) } else { &mut [] };
                comm.reduce_bytes(src(n), out, dt, self.red, self.peer)
            }
            Kind::AllGather if in_place => {
                let out = dst(n * p);
                let input = out[me * n..(me + 1) * n].to_vec();
                comm.all_gather_bytes(&input, out, dt)
            }
            Kind::AllGather => comm.all_gather_bytes(src(n), dst(n * p), dt),
            Kind::ReduceScatter if in_place => {
                let mut out = vec![0u8; n];
                comm.reduce_scatter_bytes(src(n * p), &mut out, dt, self.red)?;
                dst(n).copy_from_slice(&out);
                Ok(())
            }
            Kind::ReduceScatter => comm.reduce_scatter_bytes(src(n * p), dst(n), dt, self.red),
            Kind::AllToAll if in_place => {
                let out = dst(n * p);
                let input = out.to_vec();
                comm.all_to_all_bytes(&input, out, dt)
            }
            Kind::AllToAll => comm.all_to_all_bytes(src(n * p), dst(n * p), dt),
            Kind::Send => comm.send_bytes(src(n), dt, self.peer),
            Kind::Recv => comm.recv_bytes(dst(n), dt, self.peer),
        }
    }
}

/// # Safety
/// `p` is valid for reads of `len` bytes when `len > 0`.
pub(crate) unsafe fn slice<'a>(p: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// # Safety
/// `p` is valid for writes of `len` bytes when `len > 0`, and not aliased meanwhile.
pub(crate) unsafe fn slice_mut<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

/// The common path of every call: the stream must be NULL, the handle live, the Op sound; then
/// it runs now or joins the thread's group.
#[allow(clippy::too_many_arguments)]
fn call(
    function: &'static str,
    comm: oxcclComm_t,
    stream: *mut c_void,
    kind: Kind,
    (send, recv): (*const c_void, *mut c_void),
    count: usize,
    datatype: oxcclDataType_t,
    op: Option<oxcclRedOp_t>,
    peer: Option<(c_int, &'static str)>,
) -> oxcclResult_t {
    entry(function, comm, || {
        let state = lookup(comm)?;
        if !stream.is_null() {
            return Err(Failure::invalid(
                "stream must be NULL (oxccl works on host memory; calls return when done)",
            ));
        }
        let dtype = dtype_of(datatype)?;
        let red = op.map(redop_of).transpose()?.unwrap_or(ReduceOp::Sum);
        let peer = match peer {
            Some((v, what)) => rank_of(v, state.comm.size(), what)?,
            None => 0,
        };
        let op = Op {
            kind,
            send: send.cast(),
            recv: recv.cast(),
            count,
            dtype,
            red,
            peer,
        };
        op.check(&state.comm)?;
        submit(comm, state, op)
    })
}

/// Reduces `count` elements of every rank's `sendbuff` into every rank's `recvbuff`
/// (`sendbuff == recvbuff`: in place).
///
/// # Safety
/// `sendbuff` is readable and `recvbuff` writable for `count` elements until the call (or its
/// group) returns.
#[no_mangle]
pub unsafe extern "C" fn oxcclAllReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    call(
        "oxcclAllReduce",
        comm,
        stream,
        Kind::AllReduce,
        bufs,
        count,
        datatype,
        Some(op),
        None,
    )
}

/// Copies `count` elements of `root`'s `sendbuff` into every rank's `recvbuff` (`sendbuff` is
/// read on the root only; `sendbuff == recvbuff`: in place).
///
/// # Safety
/// As [`oxcclAllReduce`] (`sendbuff` on the root only).
#[no_mangle]
pub unsafe extern "C" fn oxcclBroadcast(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    root: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    let root = Some((root, "root"));
    call(
        "oxcclBroadcast",
        comm,
        stream,
        Kind::Broadcast,
        bufs,
        count,
        datatype,
        None,
        root,
    )
}

/// Reduces `count` elements of every rank's `sendbuff` into `root`'s `recvbuff` (`recvbuff` is
/// written on the root only and may be NULL elsewhere; `sendbuff == recvbuff`: in place).
///
/// # Safety
/// As [`oxcclAllReduce`] (`recvbuff` on the root only).
#[no_mangle]
pub unsafe extern "C" fn oxcclReduce(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    root: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    let root = Some((root, "root"));
    call(
        "oxcclReduce",
        comm,
        stream,
        Kind::Reduce,
        bufs,
        count,
        datatype,
        Some(op),
        root,
    )
}

/// Gathers `sendcount` elements from every rank into `recvbuff` (`nranks * sendcount`
/// elements, rank order; `sendbuff == recvbuff + rank * sendcount`: in place).
///
/// # Safety
/// `sendbuff` readable for `sendcount` elements, `recvbuff` writable for `nranks * sendcount`.
#[no_mangle]
pub unsafe extern "C" fn oxcclAllGather(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    sendcount: usize,
    datatype: oxcclDataType_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    call(
        "oxcclAllGather",
        comm,
        stream,
        Kind::AllGather,
        bufs,
        sendcount,
        datatype,
        None,
        None,
    )
}

/// Reduces every rank's `sendbuff` (`nranks * recvcount` elements) and leaves block `rank` of
/// the result in `recvbuff` (`recvbuff == sendbuff + rank * recvcount`: in place).
///
/// # Safety
/// `sendbuff` readable for `nranks * recvcount` elements, `recvbuff` writable for `recvcount`.
#[no_mangle]
pub unsafe extern "C" fn oxcclReduceScatter(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: oxcclDataType_t,
    op: oxcclRedOp_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    let kind = Kind::ReduceScatter;
    call(
        "oxcclReduceScatter",
        comm,
        stream,
        kind,
        bufs,
        recvcount,
        datatype,
        Some(op),
        None,
    )
}

/// Sends block `j` (`count` elements, the count per peer) of `sendbuff` to rank `j`, and
/// receives rank `j`'s block for this rank into block `j` of `recvbuff`.
///
/// # Safety
/// Both buffers valid for `nranks * count` elements.
#[no_mangle]
pub unsafe extern "C" fn oxcclAlltoAll(
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, recvbuff);
    call(
        "oxcclAlltoAll",
        comm,
        stream,
        Kind::AllToAll,
        bufs,
        count,
        datatype,
        None,
        None,
    )
}

/// Sends `count` elements to `peer`, matched in order by the peer's `oxcclRecv`. Outside a
/// group it returns once the data is on its way (a message larger than the link's buffer waits
/// for the receiver); inside one, at `oxcclGroupEnd`.
///
/// # Safety
/// `sendbuff` readable for `count` elements.
#[no_mangle]
pub unsafe extern "C" fn oxcclSend(
    sendbuff: *const c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (sendbuff, std::ptr::null_mut());
    let peer = Some((peer, "peer"));
    call(
        "oxcclSend",
        comm,
        stream,
        Kind::Send,
        bufs,
        count,
        datatype,
        None,
        peer,
    )
}

/// Receives `count` elements from `peer`.
///
/// # Safety
/// `recvbuff` writable for `count` elements.
#[no_mangle]
pub unsafe extern "C" fn oxcclRecv(
    recvbuff: *mut c_void,
    count: usize,
    datatype: oxcclDataType_t,
    peer: c_int,
    comm: oxcclComm_t,
    stream: *mut c_void,
) -> oxcclResult_t {
    let bufs = (std::ptr::null(), recvbuff);
    let peer = Some((peer, "peer"));
    call(
        "oxcclRecv",
        comm,
        stream,
        Kind::Recv,
        bufs,
        count,
        datatype,
        None,
        peer,
    )
}
