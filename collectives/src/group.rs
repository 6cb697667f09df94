//! Operations that run together: groups ([`Group`], NCCL's `ncclGroupStart/End`) and
//! non-blocking operations on borrowed buffers ([`Scope`], [`Request`]).
//!
//! ## How sends and receives progress together
//! The engine keeps, per peer, a FIFO queue of send jobs and one of receive jobs, and every
//! wait moves every queued job of every peer forward (`exec/engine.rs`). A send or receive
//! that is *posted* (by a group, by [`Scope::send`] / [`Scope::recv`], or by
//! [`Communicator::start_send`] / [`Communicator::start_recv`]) queues its jobs under an
//! operation id and returns; the jobs then move whenever anyone drives the engine: a later
//! call, or a wait for that operation, which drives the engine in slices and steps aside when
//! a call wants the state. Any matched pattern of sends and receives therefore completes
//! whatever its size (both directions of a pair, a ring, everyone to everyone): no send waits
//! for its receiver's turn, because the receiver's job is already queued. Each stream keeps
//! its bytes in call order, so a collective that runs while sends and receives are queued
//! goes behind them on each stream (the small-message all-reduce then takes the queues too,
//! with the same bytes on the wire).
//!
//! ## Groups
//! A [`Group`] collects sends, receives and collectives without running anything; [`Group::end`]
//! takes one turn on the communicator, posts every send and receive, runs the collectives in
//! the order they were added (the queued sends and receives move while they run), and waits for
//! the sends and receives. Every rank adds its collectives in the same order; sends and
//! receives match per pair of ranks in the order they were added, as with blocking calls. A
//! group holds borrows of its buffers and posts nothing before `end`, so dropping it instead
//! is harmless.
//!
//! ## Non-blocking operations on borrowed buffers
//! [`Communicator::scope`] works like [`std::thread::scope`]: inside it, operations start now
//! and hand back a [`Request`] that holds the borrows of their buffers until it is waited for;
//! the scope does not end before every operation started in it is done, so no buffer can go
//! away under a running operation (even if a request is leaked). Sends and receives are posted
//! to the engine; collectives take their place in line at once and run on a thread of the
//! scope. Every operation has its form here: one line in the list at the end of this file
//! (`each_collective!`), which generates the group's and the scope's methods alike.

use crate::comm::{Communicator, HeldTurn};
use crate::error::{Error, Result};
use crate::exec::calls;
use crate::ops::{check_dtype, reserved_call};
use crate::ops_v::Parts;
use oxccl_kernels::{DataType, Element, ReduceOp};
use std::cell::RefCell;
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;

/// A send or receive of a group, checked when added.
enum P2p<'a> {
    Send(&'a [u8], DataType, usize),
    Recv(&'a mut [u8], DataType, usize),
}

type Call<'a> = Box<dyn FnOnce(&Communicator) -> Result<()> + 'a>;

/// Operations to run together on one communicator (see the module documentation): made by
/// [`Communicator::group`], run by [`Group::end`].
#[must_use = "a group runs nothing until `end` is called"]
pub struct Group<'a> {
    comm: &'a Communicator,
    p2p: RefCell<Vec<P2p<'a>>>,
    calls: RefCell<Vec<Call<'a>>>,
}

impl Communicator {
    /// Starts a group (NCCL's `ncclGroupStart`); [`Group::end`] runs it.
    pub fn group(&self) -> Group<'_> {
        Group {
            comm: self,
            p2p: RefCell::new(Vec::new()),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// Runs `f` with a [`Scope`] in which operations on borrowed buffers start without
    /// waiting (see the module documentation). Returns once every operation started in it is
    /// done; errors of requests that were not waited for are logged.
    pub fn scope<'env, R>(&'env self, f: impl for<'scope> FnOnce(&Scope<'scope, 'env>) -> R) -> R {
        std::thread::scope(|threads| {
            let scope = Scope {
                comm: self,
                threads,
                posted: Mutex::new(Vec::new()),
            };
            // On every way out (a panic too) the posted operations finish before the borrows
            // of their buffers end.
            let _finish = FinishPosted(&scope);
            f(&scope)
        })
    }
}

impl<'a> Group<'a> {
    /// Adds a send of `data` to `peer`.
    pub fn send_bytes(&self, data: &'a [u8], dtype: DataType, peer: usize) -> Result<()> {
        check_dtype("send", data.len(), dtype)?;
        self.comm.check_p2p("send", peer)?;
        self.p2p.borrow_mut().push(P2p::Send(data, dtype, peer));
        Ok(())
    }

    /// Adds a receive of exactly `buf.len()` bytes from `peer`.
    pub fn recv_bytes(&self, buf: &'a mut [u8], dtype: DataType, peer: usize) -> Result<()> {
        check_dtype("recv", buf.len(), dtype)?;
        self.comm.check_p2p("recv", peer)?;
        self.p2p.borrow_mut().push(P2p::Recv(buf, dtype, peer));
        Ok(())
    }

    pub fn send<T: Element>(&self, data: &'a [T], peer: usize) -> Result<()> {
        self.send_bytes(bytemuck::cast_slice(data), T::DTYPE, peer)
    }

    pub fn recv<T: Element>(&self, buf: &'a mut [T], peer: usize) -> Result<()> {
        self.recv_bytes(bytemuck::cast_slice_mut(buf), T::DTYPE, peer)
    }

    /// Adds any call on the communicator (it runs inside the group's turn, in order with the
    /// group's other collectives): how an operation without its own group form joins a group.
    pub fn call(&self, f: impl FnOnce(&Communicator) -> Result<()> + 'a) {
        self.calls.borrow_mut().push(Box::new(f));
    }

    /// Runs the group (NCCL's `ncclGroupEnd`): posts the sends and receives, runs the
    /// collectives in order while they move, and returns when everything is done. The first
    /// error is returned (a collective's invalid argument after the rest of the group ran).
    pub fn end(self) -> Result<()> {
        let comm = self.comm;
        let mut p2p = self.p2p.into_inner();
        let calls = self.calls.into_inner();
        comm.with_turn(|| {
            let id = comm.locked("group", |st| {
                for p in p2p.iter_mut() {
                    // The group borrows the buffers for 'a, which outlives this call; the wait
                    // below (or the abandon on a panic) ends the jobs before `end` returns.
                    match p {
                        // SAFETY: as above; the send only reads.
                        P2p::Send(data, dtype, peer) => unsafe {
                            calls::post_send(st, data.as_ptr(), data.len(), *dtype, *peer)
                        },
                        // SAFETY: as above; the receive writes through the exclusive borrow.
                        P2p::Recv(buf, dtype, peer) => unsafe {
                            calls::post_recv(st, buf.as_mut_ptr(), buf.len(), *dtype, *peer)
                        },
                    }
                }
                Ok(st.engine.current_op())
            })?;
            let abandon = AbandonOnUnwind { comm, id };
            let mut first = None;
            {
                let _held = HeldTurn::enter(comm);
                for call in calls {
                    if let Err(e) = call(comm) {
                        let fatal = !matches!(e, Error::Invalid { .. });
                        first.get_or_insert(e);
                        if fatal {
                            break;
                        }
                    }
                }
            }
            let waited = comm.wait_op(id);
            std::mem::forget(abandon);
            match first {
                Some(e) => Err(e),
                None => waited,
            }
        })
    }
}

/// Fails the engine when a panic unwinds past a wait while jobs still point at the buffers.
struct AbandonOnUnwind<'c> {
    comm: &'c Communicator,
    id: u64,
}

impl Drop for AbandonOnUnwind<'_> {
    fn drop(&mut self) {
        self.comm
            .abandon_op(self.id, "a panic unwound past a group's wait");
    }
}

/// Operations started inside [`Communicator::scope`].
pub struct Scope<'scope, 'env: 'scope> {
    comm: &'env Communicator,
    threads: &'scope std::thread::Scope<'scope, 'env>,
    /// The sends and receives posted in this scope, all waited for when it ends.
    posted: Mutex<Vec<u64>>,
}

/// An operation started in a [`Scope`]; it holds the borrows of its buffers until
/// [`Request::wait`] (or the end of the scope).
#[must_use = "wait for the request to learn its result"]
pub struct Request<'scope, T> {
    kind: RequestKind<'scope, T>,
}

enum RequestKind<'scope, T> {
    Thread(ScopedJoinHandle<'scope, Result<T>>),
    Posted(&'scope Communicator, u64, T),
}

impl<T> Request<'_, T> {
    /// Whether the operation has finished (then [`Request::wait`] does not block).
    pub fn is_done(&self) -> bool {
        match &self.kind {
            RequestKind::Thread(h) => h.is_finished(),
            RequestKind::Posted(comm, id, _) => comm.op_finished(*id).unwrap_or(false),
        }
    }

    /// Waits for the operation; its result.
    pub fn wait(self) -> Result<T> {
        match self.kind {
            RequestKind::Thread(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Aborted {
                    op: "wait",
                    reason: "the call's thread panicked".into(),
                })
            }),
            RequestKind::Posted(comm, id, value) => comm.wait_op(id).map(|()| value),
        }
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Starts any call on the communicator: it takes its place in line now and runs on a
    /// thread of the scope. Every collective's form below is this, one line each.
    pub fn start<R: Send + 'scope>(
        &self,
        f: impl FnOnce(&Communicator) -> Result<R> + Send + 'scope,
    ) -> Request<'scope, R> {
        let ticket = self.comm.ticket();
        let comm = self.comm;
        let handle = self.threads.spawn(move || reserved_call(comm, ticket, f));
        Request {
            kind: RequestKind::Thread(handle),
        }
    }

    /// Posts a send of `data` to `peer` (it progresses with every other queued send and
    /// receive; see the module documentation).
    pub fn send_bytes(
        &self,
        data: &'scope [u8],
        dtype: DataType,
        peer: usize,
    ) -> Result<Request<'scope, ()>> {
        check_dtype("send", data.len(), dtype)?;
        self.comm.check_p2p("send", peer)?;
        // SAFETY: `data` is borrowed for 'scope, and the scope ends only after the operation is
        // done (FinishPosted).
        self.post("send", |st| unsafe {
            calls::post_send(st, data.as_ptr(), data.len(), dtype, peer)
        })
    }

    /// Posts a receive of exactly `buf.len()` bytes from `peer`.
    pub fn recv_bytes(
        &self,
        buf: &'scope mut [u8],
        dtype: DataType,
        peer: usize,
    ) -> Result<Request<'scope, ()>> {
        check_dtype("recv", buf.len(), dtype)?;
        self.comm.check_p2p("recv", peer)?;
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        // SAFETY: `buf` is borrowed exclusively for 'scope, and the scope ends only after the
        // operation is done (FinishPosted).
        self.post("recv", |st| unsafe {
            calls::post_recv(st, ptr, len, dtype, peer)
        })
    }

    pub fn send<T: Element>(&self, data: &'scope [T], peer: usize) -> Result<Request<'scope, ()>> {
        self.send_bytes(bytemuck::cast_slice(data), T::DTYPE, peer)
    }

    pub fn recv<T: Element>(
        &self,
        buf: &'scope mut [T],
        peer: usize,
    ) -> Result<Request<'scope, ()>> {
        self.recv_bytes(bytemuck::cast_slice_mut(buf), T::DTYPE, peer)
    }

    fn post(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut crate::exec::State),
    ) -> Result<Request<'scope, ()>> {
        let id = self.comm.run(op, |st| {
            f(st);
            Ok(st.engine.current_op())
        })?;
        self.posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(Request {
            kind: RequestKind::Posted(self.comm, id, ()),
        })
    }
}

/// Finishes a scope's posted operations when it ends: waits for them, or, when a panic
/// unwinds, fails the communicator so that no job outlives the buffers it points at.
struct FinishPosted<'a, 'scope, 'env>(&'a Scope<'scope, 'env>);

impl Drop for FinishPosted<'_, '_, '_> {
    fn drop(&mut self) {
        let scope = self.0;
        let ids = std::mem::take(&mut *scope.posted.lock().unwrap_or_else(|p| p.into_inner()));
        for id in ids {
            if scope.comm.op_finished(id) == Some(true) {
                continue;
            }
            if std::thread::panicking() {
                scope.comm.abandon_op(id, "a panic unwound out of a scope");
            } else if let Err(e) = scope.comm.wait_op(id) {
                tracing::warn!(error = %e, "a send or receive of a scope failed unwaited");
            }
        }
    }
}

/// The collectives' forms in groups and scopes, from one list (`each_collective!`).
macro_rules! forms {
    ($l:lifetime, $ret:ty, $via:ident; $(
        $name:ident $(<$t:ident>)? ( $($arg:ident : $ty:ty),* );
    )*) => { $(
        #[doc = concat!("[`Communicator::", stringify!($name), "`], run with the others.")]
        pub fn $name $(<$t: Element>)? (&self, $($arg: $ty),*) -> $ret {
            self.$via(move |c| c.$name($($arg),*))
        }
    )* };
}

/// Every collective, once: adding an operation here gives it its group and scope forms.
macro_rules! each_collective {
    ($l:lifetime, $ret:ty, $via:ident) => {
        forms! { $l, $ret, $via;
            all_reduce_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType, op: ReduceOp);
            all_reduce_in_place_bytes(buf: &$l mut [u8], dtype: DataType, op: ReduceOp);
            reduce_scatter_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType, op: ReduceOp);
            all_gather_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType);
            broadcast_bytes(buf: &$l mut [u8], dtype: DataType, root: usize);
            reduce_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType, op: ReduceOp, root: usize);
            all_to_all_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType);
            barrier();
            all_reduce<T>(input: &$l [T], output: &$l mut [T], op: ReduceOp);
            all_reduce_in_place<T>(buf: &$l mut [T], op: ReduceOp);
            reduce_scatter<T>(input: &$l [T], output: &$l mut [T], op: ReduceOp);
            all_gather<T>(input: &$l [T], output: &$l mut [T]);
            broadcast<T>(buf: &$l mut [T], root: usize);
            reduce<T>(input: &$l [T], output: &$l mut [T], op: ReduceOp, root: usize);
            all_to_all<T>(input: &$l [T], output: &$l mut [T]);
            gather_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType, root: usize);
            gather_v_bytes(input: &$l [u8], output: &$l mut [u8], parts: Parts<$l>, dtype: DataType, root: usize);
            scatter_bytes(input: &$l [u8], output: &$l mut [u8], dtype: DataType, root: usize);
            scatter_v_bytes(input: &$l [u8], parts: Parts<$l>, output: &$l mut [u8], dtype: DataType, root: usize);
            all_gather_v_bytes(input: &$l [u8], output: &$l mut [u8], parts: Parts<$l>, dtype: DataType);
            reduce_scatter_v_bytes(input: &$l [u8], output: &$l mut [u8], counts: &$l [usize], dtype: DataType, op: ReduceOp);
            all_to_all_v_bytes(input: &$l [u8], send: Parts<$l>, output: &$l mut [u8], recv: Parts<$l>, dtype: DataType);
            gather<T>(input: &$l [T], output: &$l mut [T], root: usize);
            gather_v<T>(input: &$l [T], output: &$l mut [T], parts: Parts<$l>, root: usize);
            scatter<T>(input: &$l [T], output: &$l mut [T], root: usize);
            scatter_v<T>(input: &$l [T], parts: Parts<$l>, output: &$l mut [T], root: usize);
            all_gather_v<T>(input: &$l [T], output: &$l mut [T], parts: Parts<$l>);
            reduce_scatter_v<T>(input: &$l [T], output: &$l mut [T], counts: &$l [usize], op: ReduceOp);
            all_to_all_v<T>(input: &$l [T], send: Parts<$l>, output: &$l mut [T], recv: Parts<$l>);
        }
    };
}

impl<'a> Group<'a> {
    each_collective!('a, (), call);
}

impl<'scope, 'env> Scope<'scope, 'env> {
    each_collective!('scope, Request<'scope, ()>, start);
}
