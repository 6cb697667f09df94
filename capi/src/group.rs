//! `oxcclGroupStart` / `oxcclGroupEnd`: calls posted in between run when the outermost
//! `oxcclGroupEnd` is reached, which returns when all of them are done.
//!
//! The group is per thread, as NCCL's. At the end, communicator creations posted in it
//! (`oxcclCommInitRank`, `oxcclCommSplit`) run first, all at once on threads of their own (one
//! thread may create every rank of a job, NCCL's single-process pattern; *comm is written when
//! `oxcclGroupEnd` returns), the splits of one parent in posting order. Then each
//! communicator's calls run on a thread of their own (one thread may drive several ranks of a
//! job, as NCCL's single-process multi-device pattern does) as one group of the communicator
//! ([`oxccl_collectives::Group`], the Rust API's `ncclGroupStart/End`): every send and receive
//! is posted at once and they all progress together while the collectives run in the order
//! they were posted (every rank posts the same collectives in the same order, so they match).
//! So any matched pattern of sends and receives completes whatever its size (both directions
//! of a pair, a ring, everyone to everyone), because each receive is queued before any send
//! waits for it. The result is the same whenever a program does not read a buffer in one call
//! of a group that another call of the group writes, which NCCL does not order either. Sends
//! and receives to and from the rank itself are matched in posting order and copied.

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
    unsafe { op.run(&state.comm) }.map_err(Failure::from)
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

/// One communicator's share of a group: copies between the rank and itself, then everything
/// else as one group of the communicator.
fn run_comm(comm: &Communicator, ops: &[Op]) -> Result<(), Failure> {
    let me = comm.rank();
    let to_me = |kind: Kind| ops.iter().filter(move |o| o.kind == kind && o.peer == me);
    let (sends, recvs): (Vec<&Op>, Vec<&Op>) =
        (to_me(Kind::Send).collect(), to_me(Kind::Recv).collect());
    if sends.len() != recvs.len() {
        return Err(Failure::usage(format!(
            "{} sends to the rank itself but {} receives from it in this group",
            sends.len(),
            recvs.len()
        )));
    }
    for (s, r) in sends.iter().zip(&recvs) {
        let (sn, rn) = (s.count * s.dtype.size(), r.count * r.dtype.size());
        if sn != rn {
            return Err(Failure::usage(format!(
                "a send of {sn} bytes to the rank itself met a receive of {rn} bytes"
            )));
        }
    }
    let group = comm.group();
    for op in ops {
        let n = op.count * op.dtype.size();
        match op.kind {
            Kind::Send | Kind::Recv if op.peer == me => {}
            // SAFETY: the C caller keeps the buffer valid until oxcclGroupEnd returns, which is
            // after the group (and every job it posted) ended.
            Kind::Send => group.send_bytes(unsafe { slice(op.send, n) }, op.dtype, op.peer)?,
            // SAFETY: as above; the caller does not touch the buffer meanwhile.
            Kind::Recv => group.recv_bytes(unsafe { slice_mut(op.recv, n) }, op.dtype, op.peer)?,
            // SAFETY: as above: the collective runs inside `end`.
            _ => group.call(move |c| unsafe { op.run(c) }),
        }
    }
    for (s, r) in sends.iter().zip(&recvs) {
        let n = s.count * s.dtype.size();
        // SAFETY: the caller's buffers, checked for these lengths; distinct calls' buffers do
        // not overlap unless the program races on them (NCCL's contract too), so copy via a
        // temporary to stay sound even then.
        let data = unsafe { slice(s.send, n) }.to_vec();
        // SAFETY: as above.
        unsafe { slice_mut(r.recv, n) }.copy_from_slice(&data);
    }
    group.end().map_err(Failure::from)
}
