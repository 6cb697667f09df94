//! `oxcclGroupStart` / `oxcclGroupEnd`: calls posted in between run when the outermost
//! `oxcclGroupEnd` is reached, which returns when all of them are done.
//!
//! The group is per thread, as NCCL's. At the end, communicator creations posted in it
//! (`oxcclCommInitRank`, `oxcclCommSplit`) run first, all at once on threads of their own (one
//! thread may create every rank of a job, NCCL's single-process pattern; *comm is written when
//! `oxcclGroupEnd` returns), the splits of one parent in posting order. Then each communicator's calls run on a thread of
//! their own (one thread may drive several ranks of a job, as NCCL's single-process multi-device
//! pattern does), in this order: first the collectives, in the order they were posted (every
//! rank posts the same collectives in the same order, so they match), then all the sends and
//! receives together, by the schedule below (the result is the same whenever a program does not
//! read a buffer in one call of a group that another call of the group writes, which NCCL does
//! not order either).
//!
//! ## Why sends and receives of any size complete
//! The executor runs one call at a time per communicator, and a send returns once its bytes are
//! in the link's buffer (a ring of `OXCCL_RING_BYTES` per direction), so a rank that sends a
//! message larger than that buffer waits for its receiver; posting every send before every
//! receive would deadlock a ring exchange of large messages. So each message is cut into chunks
//! of at most `B = OXCCL_RING_BYTES / 4` bytes (whole elements: B is a multiple of 1024), which
//! both ends compute alike from the size (NCCL requires equal counts and types on both ends;
//! a difference shows up as an `oxcclInvalidUsage` mismatch). The chunks of the messages to one
//! peer, in posting order, form that direction's chunk sequence. Round `k` of a rank: send chunk
//! `k` of every outgoing sequence that has one, then receive chunk `k` of every incoming sequence
//! that has one. Rounds continue until every sequence is exhausted.
//!
//! No deadlock: order the positions of a rank as (round, phase) with the send phase before the
//! receive phase. Suppose every unfinished rank is blocked, and take a blocked rank A at the
//! smallest position (k, phase).
//! - Blocked receiving chunk k from Z: Z has not sent it, so Z is unfinished, hence blocked, at
//!   a position at most (k, send), which is smaller than (k, receive): so A is in its send phase.
//! - Blocked sending chunk k to B: the link A->B has no room for a chunk of at most B bytes
//!   (plus a 32-byte header), so it still holds bytes of a chunk j < k that B has not received:
//!   B is blocked at a position at most (j, receive) < (k, send), contradicting the choice of A.
//!
//! So some rank always progresses. Sends and receives to and from the rank itself are matched in
//! posting order and copied.

use crate::handle::{entry, record, CommState, Failure};
use crate::ops::{slice, slice_mut, Kind, Op};
use crate::{oxcclComm_t, oxcclResult_t};
use oxccl_collectives::Communicator;
use std::cell::RefCell;
use std::sync::Arc;

/// A communicator creation (`oxcclCommInitRank`, `oxcclCommSplit`) posted to a group.
pub(crate) type Creation = Box<dyn FnOnce() -> Result<(), Failure> + Send>;

#[derive(Default)]
struct Group {
    depth: usize,
    posted: Vec<(usize, Arc<CommState>, Op)>,
    /// With the parent's handle for splits (which run in posting order per parent), and the
    /// function's name for its error.
    creations: Vec<(Option<usize>, &'static str, Creation)>,
}

/// Posts `create` when the thread is inside a group (it runs at the group's end, concurrently
/// with the other creations, so that one thread can create every rank of a job as in NCCL's
/// single-process pattern); outside a group, gives it back to be run now.
pub(crate) fn defer_creation(
    parent: Option<oxcclComm_t>,
    function: &'static str,
    create: Creation,
) -> Option<Creation> {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.depth == 0 {
            return Some(create);
        }
        g.creations
            .push((parent.map(|h| h as usize), function, create));
        None
    })
}

thread_local! {
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// Runs `op` now, or posts it when the thread is inside a group.
pub(crate) fn submit(handle: oxcclComm_t, state: Arc<CommState>, op: Op) -> Result<(), Failure> {
    let posted = GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.depth == 0 {
            return false;
        }
        g.posted.push((handle as usize, state.clone(), op));
        true
    });
    if posted {
        return Ok(());
    }
    if matches!(op.kind, Kind::Send | Kind::Recv) && op.peer == state.comm.rank() {
        return Err(Failure::usage(
            "a send to or receive from the rank itself completes only inside a group (with its match)",
        ));
    }
    // SAFETY: the C caller keeps the buffers valid for the call, which returns when done.
    unsafe { op.run(&state.comm) }
}

/// Starts a group (groups nest; only the outermost end runs the calls).
#[no_mangle]
pub extern "C" fn oxcclGroupStart() -> oxcclResult_t {
    entry("oxcclGroupStart", std::ptr::null_mut(), || {
        GROUP.with(|g| g.borrow_mut().depth += 1);
        Ok(())
    })
}

/// Ends a group: at the outermost end, runs every call posted since the start and returns when
/// all are done (the first error, when some failed; each communicator's own error is in its
/// `oxcclGetLastError`).
#[no_mangle]
pub extern "C" fn oxcclGroupEnd() -> oxcclResult_t {
    entry("oxcclGroupEnd", std::ptr::null_mut(), || {
        let posted = GROUP.with(|g| {
            let mut g = g.borrow_mut();
            match g.depth {
                0 => Err(Failure::usage("no oxcclGroupStart to end")),
                1 => {
                    g.depth = 0;
                    Ok(Some((
                        std::mem::take(&mut g.creations),
                        std::mem::take(&mut g.posted),
                    )))
                }
                _ => {
                    g.depth -= 1;
                    Ok(None)
                }
            }
        })?;
        match posted {
            Some((creations, posted)) => {
                let created = run_creations(creations);
                let ran = run_group(posted);
                created.and(ran)
            }
            None => Ok(()),
        }
    })
}

/// A parent's splits in order (or one init), with the functions' names.
type Lane = (Option<usize>, Vec<(&'static str, Creation)>);

/// Runs the posted creations: those of one parent in order on one thread, each other one on a
/// thread of its own, all at once (every rank of a job must be joining for any to finish).
fn run_creations(creations: Vec<(Option<usize>, &'static str, Creation)>) -> Result<(), Failure> {
    let mut lanes: Vec<Lane> = Vec::new();
    for (parent, function, create) in creations {
        match lanes
            .iter_mut()
            .find(|(p, _)| parent.is_some() && *p == parent)
        {
            Some((_, lane)) => lane.push((function, create)),
            None => lanes.push((parent, vec![(function, create)])),
        }
    }
    let failures: Vec<(Option<usize>, &'static str, Failure)> = std::thread::scope(|s| {
        let threads: Vec<_> = lanes
            .into_iter()
            .map(|(parent, lane)| {
                s.spawn(move || {
                    lane.into_iter()
                        .filter_map(|(function, create)| {
                            create().err().map(|f| (parent, function, f))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| {
                t.join().unwrap_or_else(|_| {
                    vec![(
                        None,
                        "oxcclGroupEnd",
                        Failure::new(
                            oxcclResult_t::oxcclInternalError,
                            "internal error (please report): a group thread panicked",
                        ),
                    )]
                })
            })
            .collect()
    });
    let mut first = None;
    for (parent, function, f) in failures {
        let handle = parent.map_or(std::ptr::null_mut(), |h| h as oxcclComm_t);
        record(function, handle, &f);
        first.get_or_insert(f);
    }
    first.map_or(Ok(()), Err)
}

fn run_group(posted: Vec<(usize, Arc<CommState>, Op)>) -> Result<(), Failure> {
    // Each communicator's calls, in posting order.
    let mut by_comm: Vec<(usize, Arc<CommState>, Vec<Op>)> = Vec::new();
    for (handle, state, op) in posted {
        match by_comm.iter_mut().find(|(h, _, _)| *h == handle) {
            Some((_, _, ops)) => ops.push(op),
            None => by_comm.push((handle, state, vec![op])),
        }
    }
    let handles: Vec<usize> = by_comm.iter().map(|(h, _, _)| *h).collect();
    let results: Vec<Result<(), Failure>> = if by_comm.len() == 1 {
        let (_, state, ops) = &by_comm[0];
        vec![run_comm(&state.comm, ops)]
    } else {
        std::thread::scope(|s| {
            let threads: Vec<_> = by_comm
                .into_iter()
                .map(|(_, state, ops)| s.spawn(move || run_comm(&state.comm, &ops)))
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(Failure::new(
                            oxcclResult_t::oxcclInternalError,
                            "internal error (please report): a group thread panicked",
                        ))
                    })
                })
                .collect()
        })
    };
    let mut first = None;
    for (handle, result) in handles.iter().zip(results) {
        if let Err(f) = result {
            record("oxcclGroupEnd", *handle as oxcclComm_t, &f);
            first.get_or_insert(f);
        }
    }
    first.map_or(Ok(()), Err)
}

/// One communicator's share of a group: collectives in order, then the point-to-point schedule.
fn run_comm(comm: &Communicator, ops: &[Op]) -> Result<(), Failure> {
    for op in ops
        .iter()
        .filter(|o| !matches!(o.kind, Kind::Send | Kind::Recv))
    {
        // SAFETY: the C caller keeps the buffers valid until oxcclGroupEnd returns.
        unsafe { op.run(comm)? };
    }
    let me = comm.rank();
    let p2p = |kind: Kind, peer: usize| {
        ops.iter()
            .filter(move |o| o.kind == kind && o.peer == peer)
            .copied()
    };
    // To and from itself: matched in order, copied.
    let (to_me, from_me): (Vec<Op>, Vec<Op>) =
        (p2p(Kind::Send, me).collect(), p2p(Kind::Recv, me).collect());
    if to_me.len() != from_me.len() {
        return Err(Failure::usage(format!(
            "{} sends to the rank itself but {} receives from it in this group",
            to_me.len(),
            from_me.len()
        )));
    }
    for (s, r) in to_me.iter().zip(&from_me) {
        let (sn, rn) = (s.count * s.dtype.size(), r.count * r.dtype.size());
        if sn != rn {
            return Err(Failure::usage(format!(
                "a send of {sn} bytes to the rank itself met a receive of {rn} bytes"
            )));
        }
        // SAFETY: the caller's buffers, checked for these lengths; distinct calls' buffers do
        // not overlap unless the program races on them (NCCL's contract too), so copy via a
        // temporary to stay sound even then.
        let data = unsafe { slice(s.send, sn) }.to_vec();
        // SAFETY: as above.
        unsafe { slice_mut(r.recv, rn) }.copy_from_slice(&data);
    }
    // The chunk sequences, per peer and direction.
    let limit = (comm.options().ring_bytes / 4).max(1024);
    let chunks = |kind: Kind, peer: usize| -> Vec<Op> {
        let mut out = Vec::new();
        for op in p2p(kind, peer) {
            let es = op.dtype.size();
            let per = (limit / es).max(1);
            let mut at = 0;
            loop {
                let count = per.min(op.count - at);
                let off = at * es;
                out.push(Op {
                    count,
                    send: op.send.wrapping_add(off),
                    recv: op.recv.wrapping_add(off),
                    ..op
                });
                at += count;
                if at >= op.count {
                    break;
                }
            }
        }
        out
    };
    let peers: Vec<usize> = (1..comm.size()).map(|d| (me + d) % comm.size()).collect();
    let sends: Vec<Vec<Op>> = peers.iter().map(|&q| chunks(Kind::Send, q)).collect();
    let recvs: Vec<Vec<Op>> = peers.iter().map(|&q| chunks(Kind::Recv, q)).collect();
    let rounds = sends.iter().chain(&recvs).map(Vec::len).max().unwrap_or(0);
    for k in 0..rounds {
        for op in sends.iter().chain(&recvs).filter_map(|seq| seq.get(k)) {
            // SAFETY: a chunk of a checked call's buffer; the caller keeps it valid until
            // oxcclGroupEnd returns.
            unsafe { op.run(comm)? };
        }
    }
    Ok(())
}
