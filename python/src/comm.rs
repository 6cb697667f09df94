//! `oxccl._oxccl.Communicator`: the Rust communicator's collectives on Python buffers.

use crate::work::{Held, Queue, Slot, Work};
use crate::{invalid, parse_dtype, parse_op, py_err, Failure};
use oxccl_collectives::{Bootstrap, Communicator, Error, LinkKind, Options, Pending, StoreAddr};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

/// A contiguous byte range of a Python buffer. Kept as an address (not a pointer) so a job
/// can carry it to the worker thread; the `PyBuffer` it came from pins the memory and is
/// held until the job has finished (by the calling frame or by the `Work`).
#[derive(Clone, Copy)]
struct Region {
    addr: usize,
    len: usize,
}

impl Region {
    /// The memory of `obj`: a buffer-protocol object, or the raw form `(address, nbytes,
    /// owner)` that oxccl's own Python wrappers make from a contiguous CPU tensor (`owner`
    /// keeps that memory alive; reading a tensor's address is ~40x cheaper than exporting
    /// a buffer through numpy, which matters for small messages).
    fn of(
        obj: &Bound<'_, PyAny>,
        writable: bool,
        op: &str,
        what: &str,
        held: &mut Vec<Held>,
    ) -> PyResult<Region> {
        if let Ok(t) = obj.downcast::<PyTuple>() {
            let (addr, len, owner): (usize, usize, PyObject) = t.extract()?;
            if addr == 0 && len > 0 {
                return Err(invalid(op, format!("{what} has a null address")));
            }
            held.push(Held::Owner(owner));
            return Ok(Region { addr, len });
        }
        let buf = PyBuffer::<u8>::get(obj)?;
        if !buf.is_c_contiguous() {
            return Err(invalid(op, format!("{what} is not contiguous")));
        }
        if writable && buf.readonly() {
            return Err(invalid(op, format!("{what} is read-only")));
        }
        let r = Region {
            addr: buf.buf_ptr() as usize,
            len: buf.len_bytes(),
        };
        held.push(Held::Buffer(buf));
        Ok(r)
    }

    const EMPTY: Region = Region { addr: 0, len: 0 };

    fn overlaps(self, other: Region) -> bool {
        self.len > 0
            && other.len > 0
            && self.addr < other.addr + other.len
            && other.addr < self.addr + self.len
    }

    /// # Safety
    /// The buffer the region came from must be alive and not written by anyone else for `'a`.
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: a live, contiguous buffer of `len` bytes (caller's contract).
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// # Safety
    /// As [`Region::bytes`], and nothing else may read or write it for `'a`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes_mut<'a>(self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: a live, writable, contiguous buffer of `len` bytes not aliased by any other
        // region of this call (callers copy an overlapping input first).
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }

    /// The input to read: the region itself, or a copy of it when it overlaps the output
    /// (the Rust API's input and output are distinct borrows).
    ///
    /// # Safety
    /// As [`Region::bytes`].
    unsafe fn input_apart_from(self, output: Region) -> std::borrow::Cow<'static, [u8]> {
        // SAFETY: the caller's contract.
        let bytes = unsafe { self.bytes() };
        if self.overlaps(output) {
            std::borrow::Cow::Owned(bytes.to_vec())
        } else {
            std::borrow::Cow::Borrowed(bytes)
        }
    }
}

/// A group of ranks that run collectives together (`oxccl.Communicator` wraps it).
#[pyclass(name = "Communicator", module = "oxccl._oxccl", frozen)]
pub struct PyCommunicator {
    comm: Communicator,
    queue: Queue,
}

fn options(timeout: Option<f64>) -> PyResult<Options> {
    let mut o = Options::from_env().map_err(py_err)?;
    if let Some(t) = timeout {
        if !t.is_finite() || t <= 0.0 {
            return Err(invalid("init", format!("timeout {t} is not > 0 seconds")));
        }
        o.timeout = Duration::from_secs_f64(t);
    }
    Ok(o)
}

impl PyCommunicator {
    fn new(comm: Communicator) -> Self {
        Self {
            comm,
            queue: Queue::default(),
        }
    }

    /// Runs `f` now on this thread (blocking, nothing queued) or in the worker's queue, with
    /// the GIL released; `bufs` stay pinned until `f` has finished.
    fn dispatch(
        &self,
        py: Python<'_>,
        op: &'static str,
        bufs: Vec<Held>,
        async_op: bool,
        f: impl FnOnce(&Communicator) -> Result<(), Error> + Send + 'static,
    ) -> PyResult<Option<Py<Work>>> {
        if !async_op && self.queue.is_idle() {
            let comm = &self.comm;
            py.allow_threads(|| f(comm)).map_err(py_err)?;
            drop(bufs);
            return Ok(None);
        }
        let slot = Arc::new(Slot::default());
        let done = slot.clone();
        let comm = self.comm.clone();
        self.queue.push(Box::new(move || {
            done.start();
            let r = catch_unwind(AssertUnwindSafe(|| f(&comm))).unwrap_or_else(|_| {
                Err(Error::Aborted {
                    op,
                    reason: "the call panicked".into(),
                })
            });
            done.finish(r.map_err(Failure::from));
        }))?;
        let work = Work::new(slot, op, bufs);
        if async_op {
            return Ok(Some(Py::new(py, work)?));
        }
        let slot = work.slot.clone();
        let r = py.allow_threads(move || slot.wait(None));
        r.expect("an unbounded wait returns a result")?;
        Ok(None)
    }
}

impl PyCommunicator {
    /// A non-blocking send or receive: posted to the communicator's engine (MPI's
    /// `Isend`/`Irecv`), where it progresses with every other posted one, and a `Work` that
    /// completes when it does. Behind earlier non-blocking calls still queued on the worker,
    /// the worker posts it in its turn (so the streams keep the calls' order) and a thread of
    /// its own waits for it, leaving the worker free for the calls after it.
    fn post(
        &self,
        py: Python<'_>,
        op: &'static str,
        bufs: Vec<Held>,
        post: impl FnOnce(&Communicator) -> Result<Pending<()>, Error> + Send + 'static,
    ) -> PyResult<Option<Py<Work>>> {
        if self.queue.is_idle() {
            let comm = &self.comm;
            let pending = py.allow_threads(|| post(comm)).map_err(py_err)?;
            return Ok(Some(Py::new(py, Work::posted(op, bufs, pending))?));
        }
        let slot = Arc::new(Slot::default());
        let done = slot.clone();
        let comm = self.comm.clone();
        self.queue.push(Box::new(move || match post(&comm) {
            Ok(pending) => {
                let waiter = std::thread::Builder::new()
                    .name("oxccl-py-p2p".into())
                    .spawn({
                        let done = done.clone();
                        move || done.finish(pending.wait().map_err(Failure::from))
                    });
                if let Err(e) = waiter {
                    done.finish(Err(Failure::from(Error::Aborted {
                        op,
                        reason: format!("starting a thread to complete it: {e}"),
                    })));
                }
            }
            Err(e) => done.finish(Err(Failure::from(e))),
        }))?;
        Ok(Some(Py::new(py, Work::new(slot, op, bufs))?))
    }
}

#[pymethods]
impl PyCommunicator {
    /// Joins the job described by the launcher's environment (`OXCCL_*`, mpirun, srun,
    /// torchrun).
    #[staticmethod]
    fn from_env(py: Python<'_>) -> PyResult<Self> {
        py.allow_threads(Communicator::from_env)
            .map(Self::new)
            .map_err(py_err)
    }

    /// Joins a job whose rank 0 serves the store on `store_addr` (`host:port`; rank 0 binds
    /// it); every rank must give the same `secret`. `timeout` (seconds) overrides
    /// `OXCCL_TIMEOUT`.
    #[staticmethod]
    #[pyo3(signature = (rank, size, store_addr, secret, timeout=None))]
    fn init(
        py: Python<'_>,
        rank: usize,
        size: usize,
        store_addr: String,
        secret: Vec<u8>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        if size == 0 || rank >= size {
            return Err(invalid(
                "init",
                format!("rank {rank} is not within size {size}"),
            ));
        }
        let o = options(timeout)?;
        let b = Bootstrap::new(rank, size, StoreAddr::Tcp(store_addr), secret);
        py.allow_threads(move || Communicator::init_with(b, o))
            .map(Self::new)
            .map_err(py_err)
    }

    #[getter]
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    #[getter]
    fn size(&self) -> usize {
        self.comm.size()
    }

    /// Host index of every rank (hosts numbered in order of their lowest rank).
    #[getter]
    fn host_of(&self) -> Vec<usize> {
        self.comm.topology().host_of.clone()
    }

    /// Seconds without progress before a call fails.
    #[getter]
    fn timeout(&self) -> f64 {
        self.comm.options().timeout.as_secs_f64()
    }

    /// How this rank reaches `peer`: `memory`, `shm`, `tcp`, `rdma` or a fabric's name;
    /// `None` for itself.
    fn transport_to(&self, peer: usize) -> Option<String> {
        self.comm.transport_to(peer).map(|k| match k {
            LinkKind::Memory => "memory".to_string(),
            LinkKind::Shm => "shm".to_string(),
            LinkKind::Tcp => "tcp".to_string(),
            LinkKind::Rdma => "rdma".to_string(),
            LinkKind::Fabric(name) => name.to_string(),
        })
    }

    /// Makes every running and later call fail, here and (promptly) at the peers.
    fn abort(&self) {
        self.comm.abort();
    }

    /// `output = op(input of every rank)`; `input` and `output` may be the same buffer.
    #[pyo3(signature = (input, output, dtype, op="sum", scale=1.0, async_op=false))]
    #[allow(clippy::too_many_arguments)]
    fn all_reduce(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        output: &Bound<'_, PyAny>,
        dtype: &str,
        op: &str,
        scale: f64,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "all_reduce";
        let (dt, red) = (parse_dtype(dtype)?, parse_op(op, scale)?);
        let mut held = Vec::new();
        let i = Region::of(input, false, OP, "input", &mut held)?;
        let o = Region::of(output, true, OP, "output", &mut held)?;
        let same = i.addr == o.addr && i.len == o.len;
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: both buffers are pinned until this returns (dispatch's contract).
            unsafe {
                if same {
                    c.all_reduce_in_place_bytes(o.bytes_mut(), dt, red)
                } else {
                    c.all_reduce_bytes(&i.input_apart_from(o), o.bytes_mut(), dt, red)
                }
            }
        })
    }

    /// `input` holds `size` parts as long as `output`; `output` receives the reduction of
    /// part `rank`.
    #[pyo3(signature = (input, output, dtype, op="sum", scale=1.0, async_op=false))]
    #[allow(clippy::too_many_arguments)]
    fn reduce_scatter(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        output: &Bound<'_, PyAny>,
        dtype: &str,
        op: &str,
        scale: f64,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "reduce_scatter";
        let (dt, red) = (parse_dtype(dtype)?, parse_op(op, scale)?);
        let mut held = Vec::new();
        let i = Region::of(input, false, OP, "input", &mut held)?;
        let o = Region::of(output, true, OP, "output", &mut held)?;
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: pinned until this returns; an overlapping input is copied first.
            unsafe { c.reduce_scatter_bytes(&i.input_apart_from(o), o.bytes_mut(), dt, red) }
        })
    }

    /// `output` (`size` times `input`) receives every rank's `input` in rank order.
    #[pyo3(signature = (input, output, dtype, async_op=false))]
    fn all_gather(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        output: &Bound<'_, PyAny>,
        dtype: &str,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "all_gather";
        let dt = parse_dtype(dtype)?;
        let mut held = Vec::new();
        let i = Region::of(input, false, OP, "input", &mut held)?;
        let o = Region::of(output, true, OP, "output", &mut held)?;
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: pinned until this returns; an overlapping input is copied first.
            unsafe { c.all_gather_bytes(&i.input_apart_from(o), o.bytes_mut(), dt) }
        })
    }

    /// Every rank's `buf` becomes `root`'s.
    #[pyo3(signature = (buf, dtype, root, async_op=false))]
    fn broadcast(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dtype: &str,
        root: usize,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "broadcast";
        let dt = parse_dtype(dtype)?;
        let mut held = Vec::new();
        let b = Region::of(buf, true, OP, "buffer", &mut held)?;
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: pinned until this returns.
            unsafe { c.broadcast_bytes(b.bytes_mut(), dt, root) }
        })
    }

    /// `root`'s `output` receives `op` over every rank's `input` (`output` may be `None`, and
    /// is not touched, on the other ranks; it may be `input` itself).
    #[pyo3(signature = (input, output, dtype, root, op="sum", scale=1.0, async_op=false))]
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        output: Option<&Bound<'_, PyAny>>,
        dtype: &str,
        root: usize,
        op: &str,
        scale: f64,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "reduce";
        let (dt, red) = (parse_dtype(dtype)?, parse_op(op, scale)?);
        let mut held = Vec::new();
        let i = Region::of(input, false, OP, "input", &mut held)?;
        let o = match output {
            Some(out) if root == self.comm.rank() => {
                Region::of(out, true, OP, "output", &mut held)?
            }
            _ => Region::EMPTY,
        };
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: pinned until this returns; an overlapping input is copied first.
            unsafe { c.reduce_bytes(&i.input_apart_from(o), o.bytes_mut(), dt, red, root) }
        })
    }

    /// Part `q` of `input` goes to rank `q`, which stores it as part `rank` of `output`
    /// (`size` equal parts each).
    #[pyo3(signature = (input, output, dtype, async_op=false))]
    fn all_to_all(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        output: &Bound<'_, PyAny>,
        dtype: &str,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "all_to_all";
        let dt = parse_dtype(dtype)?;
        let mut held = Vec::new();
        let i = Region::of(input, false, OP, "input", &mut held)?;
        let o = Region::of(output, true, OP, "output", &mut held)?;
        self.dispatch(py, OP, held, async_op, move |c| {
            // SAFETY: pinned until this returns; an overlapping input is copied first.
            unsafe { c.all_to_all_bytes(&i.input_apart_from(o), o.bytes_mut(), dt) }
        })
    }

    /// Sends `buf` to `peer`, matched in order by the peer's `recv`.
    #[pyo3(signature = (buf, dtype, peer, async_op=false))]
    fn send(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dtype: &str,
        peer: usize,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "send";
        let dt = parse_dtype(dtype)?;
        let mut held = Vec::new();
        let b = Region::of(buf, false, OP, "buffer", &mut held)?;
        if async_op {
            // SAFETY: the Work holds the buffer until the posted send is done.
            return self.post(py, OP, held, move |c| unsafe {
                c.start_send_raw(b.addr as *const u8, b.len, dt, peer)
            });
        }
        self.dispatch(py, OP, held, false, move |c| {
            // SAFETY: pinned until this returns.
            unsafe { c.send_bytes(b.bytes(), dt, peer) }
        })
    }

    /// Receives exactly `len(buf)` bytes from `peer`.
    #[pyo3(signature = (buf, dtype, peer, async_op=false))]
    fn recv(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        dtype: &str,
        peer: usize,
        async_op: bool,
    ) -> PyResult<Option<Py<Work>>> {
        const OP: &str = "recv";
        let dt = parse_dtype(dtype)?;
        let mut held = Vec::new();
        let b = Region::of(buf, true, OP, "buffer", &mut held)?;
        if async_op {
            // SAFETY: the Work holds the buffer until the posted receive is done, and Python
            // promises not to touch it before `wait`.
            return self.post(py, OP, held, move |c| unsafe {
                c.start_recv_raw(b.addr as *mut u8, b.len, dt, peer)
            });
        }
        self.dispatch(py, OP, held, false, move |c| {
            // SAFETY: pinned until this returns.
            unsafe { c.recv_bytes(b.bytes_mut(), dt, peer) }
        })
    }

    /// Returns once every rank has entered the barrier.
    #[pyo3(signature = (async_op=false))]
    fn barrier(&self, py: Python<'_>, async_op: bool) -> PyResult<Option<Py<Work>>> {
        self.dispatch(py, "barrier", Vec::new(), async_op, |c| c.barrier())
    }

    fn __repr__(&self) -> String {
        format!(
            "<oxccl Communicator rank {} of {}>",
            self.comm.rank(),
            self.comm.size()
        )
    }
}
