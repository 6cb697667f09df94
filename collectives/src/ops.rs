//! The operations, typed (`T: Element`) and on bytes with a run-time [`DataType`], blocking
//! and non-blocking on owned buffers ([`Pending`]); the non-blocking forms on borrowed buffers
//! and groups are in `group.rs`.

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::exec::calls;
use oxccl_kernels::{DataType, Element, ReduceOp};
use std::thread::JoinHandle;

/// A call started by one of the `start_*` methods, on owned buffers. It runs in order with
/// the communicator's other calls; [`Pending::wait`] returns its buffers. A send or receive is
/// posted to the engine and progresses with every other queued one (see `group.rs`);
/// dropping its `Pending` waits for it, because the engine writes into or reads from the
/// buffer the `Pending` owns.
#[must_use = "a started call must be waited for (its buffers come back from wait)"]
pub struct Pending<T> {
    kind: PendingKind<T>,
}

enum PendingKind<T> {
    Thread(JoinHandle<Result<T>>),
    Posted(Communicator, u64, T),
    Taken,
}

impl<T> Pending<T> {
    /// Whether the call has finished (then [`Pending::wait`] does not block).
    pub fn is_done(&self) -> bool {
        match &self.kind {
            PendingKind::Thread(h) => h.is_finished(),
            PendingKind::Posted(c, id, _) => c.op_finished(*id).unwrap_or(false),
            PendingKind::Taken => true,
        }
    }

    /// Blocks until the call finishes; its result.
    pub fn wait(mut self) -> Result<T> {
        match std::mem::replace(&mut self.kind, PendingKind::Taken) {
            PendingKind::Thread(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Aborted {
                    op: "wait",
                    reason: "the call's thread panicked".into(),
                })
            }),
            PendingKind::Posted(c, id, buf) => c.wait_op(id).map(|()| buf),
            PendingKind::Taken => Err(Error::invalid("wait", "already waited for")),
        }
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        if let PendingKind::Posted(c, id, _) = &self.kind {
            if let Err(e) = c.wait_op(*id) {
                tracing::warn!(error = %e, "a send or receive failed unwaited");
            }
        }
    }
}

/// Runs `f` with `ticket` (taken when the call started) as the turn of its first call.
pub(crate) fn reserved_call<R>(
    comm: &Communicator,
    ticket: u64,
    f: impl FnOnce(&Communicator) -> Result<R>,
) -> Result<R> {
    crate::comm::RESERVED.with(|r| r.set(Some(ticket)));
    let out = f(comm);
    if crate::comm::RESERVED.with(|r| r.take()).is_some() {
        // `f` failed before making its call: give the turn back so later calls run.
        comm.skip_turn(ticket);
    }
    out
}

fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(
            op,
            format!("{what} has {got} bytes, expected {want}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_dtype(op: &'static str, bytes: usize, dtype: DataType) -> Result<()> {
    if bytes % dtype.size() != 0 {
        return Err(Error::invalid(
            op,
            format!("{bytes} bytes is not a whole number of {dtype} elements"),
        ));
    }
    Ok(())
}

/// Integer reductions can only scale by whole numbers (the kernels' contract); catching it
/// here keeps a bad argument from aborting the communicator mid-call.
pub(crate) fn check_op(op: &'static str, dtype: DataType, red: ReduceOp) -> Result<()> {
    if let ReduceOp::PreMulSum(s) = red {
        if !s.is_finite() || (!dtype.is_float() && s.fract() != 0.0) {
            return Err(Error::invalid(
                op,
                format!("PreMulSum({s}) cannot scale {dtype} elements"),
            ));
        }
    }
    Ok(())
}

fn check_peer(op: &'static str, peer: usize, size: usize, what: &str) -> Result<()> {
    if peer >= size {
        return Err(Error::invalid(
            op,
            format!("{what} {peer} is not a rank of this {size}-rank communicator"),
        ));
    }
    Ok(())
}

impl Communicator {
    // ----- bytes ---------------------------------------------------------------------------

    /// `output = op(input of every rank)`, element-wise, on `dtype` elements.
    pub fn all_reduce_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
    ) -> Result<()> {
        const OP: &str = "all_reduce";
        check_dtype(OP, input.len(), dtype)?;
        check_op(OP, dtype, op)?;
        check_len(OP, "output", output.len(), input.len())?;
        self.run(OP, |st| {
            // SAFETY: input and output are live borrows for the whole call (disjoint: & and &mut).
            unsafe {
                calls::all_reduce(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    input.len(),
                    dtype,
                    op,
                )
            }
        })
    }

    /// All-reduce in place.
    pub fn all_reduce_in_place_bytes(
        &self,
        buf: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
    ) -> Result<()> {
        const OP: &str = "all_reduce";
        check_dtype(OP, buf.len(), dtype)?;
        check_op(OP, dtype, op)?;
        self.run(OP, |st| {
            let p = buf.as_mut_ptr();
            // SAFETY: buf is a live exclusive borrow; input == output is the in-place case.
            unsafe { calls::all_reduce(&*self.inner, st, p, p, buf.len(), dtype, op) }
        })
    }

    /// `input` holds `size` parts of `output.len()` bytes; this rank's `output` receives the
    /// reduction of part `rank` over all ranks.
    pub fn reduce_scatter_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter";
        check_dtype(OP, output.len(), dtype)?;
        check_op(OP, dtype, op)?;
        check_len(OP, "input", input.len(), output.len() * self.size())?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows of the checked sizes.
            unsafe {
                calls::reduce_scatter(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    output.len(),
                    dtype,
                    op,
                )
            }
        })
    }

    /// `output` (`size * input.len()` bytes) receives every rank's `input`, in rank order.
    pub fn all_gather_bytes(&self, input: &[u8], output: &mut [u8], dtype: DataType) -> Result<()> {
        const OP: &str = "all_gather";
        check_dtype(OP, input.len(), dtype)?;
        check_len(OP, "output", output.len(), input.len() * self.size())?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows of the checked sizes.
            unsafe {
                calls::all_gather(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    input.len(),
                    dtype,
                )
            }
        })
    }

    /// `buf` of every rank becomes root's `buf`.
    pub fn broadcast_bytes(&self, buf: &mut [u8], dtype: DataType, root: usize) -> Result<()> {
        const OP: &str = "broadcast";
        check_dtype(OP, buf.len(), dtype)?;
        check_peer(OP, root, self.size(), "root")?;
        self.run(OP, |st| {
            // SAFETY: a live exclusive borrow.
            unsafe { calls::broadcast(&*self.inner, st, buf.as_mut_ptr(), buf.len(), dtype, root) }
        })
    }

    /// Root's `output` receives `op` over every rank's `input`; other ranks' `output` is not
    /// touched (it may be empty there).
    pub fn reduce_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        dtype: DataType,
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        const OP: &str = "reduce";
        check_dtype(OP, input.len(), dtype)?;
        check_op(OP, dtype, op)?;
        check_peer(OP, root, self.size(), "root")?;
        if self.rank() == root {
            check_len(OP, "root's output", output.len(), input.len())?;
        }
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows; output is only used at root, where it was checked.
            unsafe {
                calls::reduce(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    input.len(),
                    dtype,
                    op,
                    root,
                )
            }
        })
    }

    /// Part `q` of `input` goes to rank `q`, which stores it as part `rank` of its `output`
    /// (`size` equal parts each).
    pub fn all_to_all_bytes(&self, input: &[u8], output: &mut [u8], dtype: DataType) -> Result<()> {
        const OP: &str = "all_to_all";
        let p = self.size();
        check_len(OP, "output", output.len(), input.len())?;
        if input.len() % p != 0 {
            return Err(Error::invalid(
                OP,
                format!("{} bytes do not split into {p} equal parts", input.len()),
            ));
        }
        check_dtype(OP, input.len() / p, dtype)?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows of the checked sizes.
            unsafe {
                calls::all_to_all(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    input.len() / p,
                    dtype,
                )
            }
        })
    }

    /// Sends `data` to `peer`, matched in order by the peer's [`Communicator::recv_bytes`].
    pub fn send_bytes(&self, data: &[u8], dtype: DataType, peer: usize) -> Result<()> {
        const OP: &str = "send";
        check_dtype(OP, data.len(), dtype)?;
        self.check_p2p(OP, peer)?;
        // SAFETY: a live borrow for the whole call.
        self.run(OP, |st| unsafe {
            calls::send(st, data.as_ptr(), data.len(), dtype, peer)
        })
    }

    /// Receives exactly `buf.len()` bytes from `peer`.
    pub fn recv_bytes(&self, buf: &mut [u8], dtype: DataType, peer: usize) -> Result<()> {
        const OP: &str = "recv";
        check_dtype(OP, buf.len(), dtype)?;
        self.check_p2p(OP, peer)?;
        // SAFETY: a live exclusive borrow for the whole call.
        self.run(OP, |st| unsafe {
            calls::recv(st, buf.as_mut_ptr(), buf.len(), dtype, peer)
        })
    }

    pub(crate) fn check_p2p(&self, op: &'static str, peer: usize) -> Result<()> {
        check_peer(op, peer, self.size(), "peer")?;
        if peer == self.rank() {
            return Err(Error::invalid(
                op,
                "a rank cannot send to or receive from itself",
            ));
        }
        Ok(())
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&self) -> Result<()> {
        self.run("barrier", |st| calls::barrier(&*self.inner, st))
    }

    // ----- typed ---------------------------------------------------------------------------

    pub fn all_reduce<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.all_reduce_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            op,
        )
    }

    pub fn all_reduce_in_place<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.all_reduce_in_place_bytes(bytemuck::cast_slice_mut(buf), T::DTYPE, op)
    }

    pub fn reduce_scatter<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            op,
        )
    }

    pub fn all_gather<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        self.all_gather_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
        )
    }

    pub fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<()> {
        self.broadcast_bytes(bytemuck::cast_slice_mut(buf), T::DTYPE, root)
    }

    pub fn reduce<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.reduce_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            op,
            root,
        )
    }

    pub fn all_to_all<T: Element>(&self, input: &[T], output: &mut [T]) -> Result<()> {
        if input.len() % self.size() != 0 {
            return Err(Error::invalid(
                "all_to_all",
                format!(
                    "{} elements do not split into {} equal parts",
                    input.len(),
                    self.size()
                ),
            ));
        }
        self.all_to_all_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
        )
    }

    pub fn send<T: Element>(&self, data: &[T], peer: usize) -> Result<()> {
        self.send_bytes(bytemuck::cast_slice(data), T::DTYPE, peer)
    }

    pub fn recv<T: Element>(&self, buf: &mut [T], peer: usize) -> Result<()> {
        self.recv_bytes(bytemuck::cast_slice_mut(buf), T::DTYPE, peer)
    }

    // ----- non-blocking --------------------------------------------------------------------

    /// Starts any call on owned buffers: it takes its place in line now and runs on its own
    /// thread when its turn comes (the ticket goes to the first call `f` makes), e.g.
    /// `comm.start(move |c| c.all_gather_bytes(&input, &mut out, dtype).map(|()| out))`.
    /// The `start_*` methods below are this, one line each.
    pub fn start<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Communicator) -> Result<R> + Send + 'static,
    ) -> Pending<R> {
        let ticket = self.ticket();
        let me = self.clone();
        let handle = std::thread::spawn(move || reserved_call(&me, ticket, f));
        Pending {
            kind: PendingKind::Thread(handle),
        }
    }

    /// Posts an owned buffer's send or receive (see [`Pending`]).
    fn post<T: Send>(
        &self,
        op: &'static str,
        buf: T,
        f: impl FnOnce(&mut crate::exec::State),
    ) -> Result<Pending<T>> {
        let id = self.run(op, |st| {
            f(st);
            Ok(st.engine.current_op())
        })?;
        Ok(Pending {
            kind: PendingKind::Posted(self.clone(), id, buf),
        })
    }

    /// Non-blocking in-place all-reduce of an owned buffer, returned by [`Pending::wait`].
    pub fn start_all_reduce<T: Element>(&self, mut buf: Vec<T>, op: ReduceOp) -> Pending<Vec<T>> {
        self.start(move |c| c.all_reduce_in_place(&mut buf, op).map(|()| buf))
    }

    /// Non-blocking reduce-scatter; the result holds `input.len() / size` elements.
    pub fn start_reduce_scatter<T: Element>(&self, input: Vec<T>, op: ReduceOp) -> Pending<Vec<T>> {
        self.start(move |c| {
            let mut out = vec![T::zeroed(); input.len() / c.size()];
            c.reduce_scatter(&input, &mut out, op).map(|()| out)
        })
    }

    /// Non-blocking all-gather; the result holds `size * input.len()` elements.
    pub fn start_all_gather<T: Element>(&self, input: Vec<T>) -> Pending<Vec<T>> {
        self.start(move |c| {
            let mut out = vec![T::zeroed(); input.len() * c.size()];
            c.all_gather(&input, &mut out).map(|()| out)
        })
    }

    /// Non-blocking broadcast of an owned buffer from `root`.
    pub fn start_broadcast<T: Element>(&self, mut buf: Vec<T>, root: usize) -> Pending<Vec<T>> {
        self.start(move |c| c.broadcast(&mut buf, root).map(|()| buf))
    }

    /// Non-blocking reduce: `Some(reduction)` at root, `None` on the other ranks.
    pub fn start_reduce<T: Element>(
        &self,
        input: Vec<T>,
        op: ReduceOp,
        root: usize,
    ) -> Pending<Option<Vec<T>>> {
        self.start(move |c| {
            let at_root = c.rank() == root;
            let mut out = vec![T::zeroed(); if at_root { input.len() } else { 0 }];
            c.reduce(&input, &mut out, op, root)
                .map(|()| at_root.then_some(out))
        })
    }

    /// Non-blocking all-to-all.
    pub fn start_all_to_all<T: Element>(&self, input: Vec<T>) -> Pending<Vec<T>> {
        self.start(move |c| {
            let mut out = vec![T::zeroed(); input.len()];
            c.all_to_all(&input, &mut out).map(|()| out)
        })
    }

    /// Non-blocking send (MPI's `Isend`): posted now, progressing with every other queued
    /// send and receive; the buffer comes back once it has been handed to the link.
    pub fn start_send<T: Element>(&self, data: Vec<T>, peer: usize) -> Result<Pending<Vec<T>>> {
        const OP: &str = "send";
        self.check_p2p(OP, peer)?;
        let (ptr, len) = (data.as_ptr().cast::<u8>(), std::mem::size_of_val(&data[..]));
        // SAFETY: the heap buffer of `data` stays where it is while the Pending owns it, and
        // the Pending waits for the operation before it gives it back or drops it.
        self.post(OP, data, |st| unsafe {
            calls::post_send(st, ptr, len, T::DTYPE, peer)
        })
    }

    /// Non-blocking receive into an owned buffer (MPI's `Irecv`), posted now.
    pub fn start_recv<T: Element>(&self, mut buf: Vec<T>, peer: usize) -> Result<Pending<Vec<T>>> {
        const OP: &str = "recv";
        self.check_p2p(OP, peer)?;
        let (ptr, len) = (
            buf.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(&buf[..]),
        );
        // SAFETY: as in `start_send`; nothing reads the buffer until the Pending gives it back.
        self.post(OP, buf, |st| unsafe {
            calls::post_recv(st, ptr, len, T::DTYPE, peer)
        })
    }

    /// [`Communicator::start_send`] on memory the caller pins itself (a binding's buffers:
    /// Python's buffer protocol, C), with its run-time [`DataType`].
    ///
    /// # Safety
    /// `data` is readable for `len` bytes and unchanged until the returned `Pending` has been
    /// waited for or dropped (which waits); leaking it leaves the engine reading the memory.
    pub unsafe fn start_send_raw(
        &self,
        data: *const u8,
        len: usize,
        dtype: DataType,
        peer: usize,
    ) -> Result<Pending<()>> {
        const OP: &str = "send";
        check_dtype(OP, len, dtype)?;
        self.check_p2p(OP, peer)?;
        // SAFETY: the caller's contract: the memory outlives the Pending's wait.
        self.post(OP, (), |st| unsafe {
            calls::post_send(st, data, len, dtype, peer)
        })
    }

    /// [`Communicator::start_recv`] into memory the caller pins itself.
    ///
    /// # Safety
    /// `buf` is writable for `len` bytes, and nobody reads or writes it until the returned
    /// `Pending` has been waited for or dropped (which waits); leaking it leaves the engine
    /// writing the memory.
    pub unsafe fn start_recv_raw(
        &self,
        buf: *mut u8,
        len: usize,
        dtype: DataType,
        peer: usize,
    ) -> Result<Pending<()>> {
        const OP: &str = "recv";
        check_dtype(OP, len, dtype)?;
        self.check_p2p(OP, peer)?;
        // SAFETY: the caller's contract: the memory is the engine's until the Pending's wait.
        self.post(OP, (), |st| unsafe {
            calls::post_recv(st, buf, len, dtype, peer)
        })
    }

    /// Non-blocking barrier.
    pub fn start_barrier(&self) -> Pending<()> {
        self.start(|c| c.barrier())
    }
}

impl Communicator {
    /// The algorithm a call of `collective` moving `bytes` (the whole buffer) would use now:
    /// an algorithm name (`ring`, `hier:4x2`, ...) or `direct` for the small-message all-reduce.
    pub fn algorithm_for(
        &self,
        collective: crate::schedule::Collective,
        bytes: usize,
    ) -> Result<String> {
        let inner = &self.inner;
        if collective == crate::schedule::Collective::AllReduce
            && inner.size > 1
            && bytes <= inner.options.small_bytes
            && inner.options.algorithm.is_none()
        {
            return Ok("direct".into());
        }
        crate::exec::select::choose(&**inner, "algorithm_for", collective, bytes).map(
            |(a, k, lanes)| {
                let mut name = a.to_string();
                if k > 1 {
                    name += &format!("/{k}");
                }
                if lanes > 1 {
                    name += &format!(" x{lanes} lanes");
                }
                name
            },
        )
    }
}
