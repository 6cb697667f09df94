//! Non-blocking calls: one worker thread per communicator runs them in the order they were
//! made, and a [`Work`] lets Python wait for each. Non-blocking sends and receives are not
//! run by the worker but posted to the communicator's engine ([`Communicator::start_send_raw`]),
//! where they progress together with every other queued send and receive; their `Work` holds
//! the posted operation and completes when it does.

use crate::{Failure, Kind};
use oxccl_collectives::Pending;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where a call's result lands. `result` is set when the call returns (its buffers are free
/// from then on); `done` once the callbacks registered on it have run too.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<(), Failure>>,
    callbacks: Vec<PyObject>,
    done: bool,
    times: Timeline,
}

/// When a queued call reached each point, in seconds since the Unix epoch (the clock Python's
/// `time.time()` reads, the same in every process of a host), `None` until it has: what
/// `Work.timeline()` reports, to tell a call's time on the worker from the time its
/// completion takes to reach Python. Four clock reads per call (~100 ns in all).
#[derive(Default, Clone, Copy)]
pub(crate) struct Timeline {
    /// The worker began running the call.
    started: Option<f64>,
    /// The call returned (the data is done).
    returned: Option<f64>,
    /// The worker held the GIL to run the call's first done-callback.
    callback: Option<f64>,
}

fn now() -> Option<f64> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// The argument a done-callback gets: `None`, or the exception the call failed with.
fn callback_arg(py: Python<'_>, r: &Result<(), Failure>) -> PyObject {
    match r {
        Ok(()) => py.None(),
        Err(f) => PyErr::from(f.clone()).into_value(py).into_any(),
    }
}

fn run_callback(py: Python<'_>, cb: &PyObject, r: &Result<(), Failure>) {
    if let Err(e) = cb.call1(py, (callback_arg(py, r),)) {
        // Nobody can catch it on this thread: show it as Python shows an unraisable error.
        e.write_unraisable(py, Some(cb.bind(py)));
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the worker began running the call.
    pub fn start(&self) {
        self.lock().times.started = now();
    }

    /// Records the call's result, then runs the callbacks (with the GIL) until none is left.
    pub fn finish(&self, r: Result<(), Failure>) {
        {
            let mut g = self.lock();
            g.result = Some(r.clone());
            g.times.returned = now();
        }
        self.cv.notify_all();
        loop {
            let cbs = {
                let mut g = self.lock();
                if g.callbacks.is_empty() {
                    g.done = true;
                    break;
                }
                std::mem::take(&mut g.callbacks)
            };
            Python::with_gil(|py| {
                let mut g = self.lock();
                if g.times.callback.is_none() {
                    g.times.callback = now();
                }
                drop(g);
                for cb in &cbs {
                    run_callback(py, cb, &r);
                }
                drop(cbs);
            });
        }
        self.cv.notify_all();
    }

    fn is_done(&self) -> bool {
        self.lock().done
    }

    /// The result once done (`returned`: once the call returned), or `None` when `timeout`
    /// passed first.
    fn wait_for(&self, timeout: Option<Duration>, returned: bool) -> Option<Result<(), Failure>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut g = self.lock();
        loop {
            if g.done || (returned && g.result.is_some()) {
                return g.result.clone();
            }
            g = match deadline {
                None => self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.checked_duration_since(Instant::now())?;
                    self.cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub fn wait(&self, timeout: Option<Duration>) -> Option<Result<(), Failure>> {
        self.wait_for(timeout, false)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The communicator's worker thread, started by the first non-blocking call. Blocking calls
/// run on the caller's thread while nothing is queued, and join the queue otherwise, so that
/// every call runs in the order it was made.
#[derive(Default)]
pub(crate) struct Queue {
    tx: Mutex<Option<Sender<Job>>>,
    outstanding: Arc<AtomicUsize>,
}

impl Queue {
    pub fn is_idle(&self) -> bool {
        self.outstanding.load(Ordering::Acquire) == 0
    }

    pub fn push(&self, job: Job) -> PyResult<()> {
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.is_none() {
            let (s, r) = channel::<Job>();
            let outstanding = self.outstanding.clone();
            std::thread::Builder::new()
                .name("oxccl-py-worker".into())
                .spawn(move || {
                    for job in r {
                        job();
                        outstanding.fetch_sub(1, Ordering::AcqRel);
                    }
                })
                .map_err(|e| {
                    crate::OxcclError::new_err(format!("starting the worker thread: {e}"))
                })?;
            *tx = Some(s);
        }
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        let sent = tx.as_ref().map(|s| s.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
            return Err(crate::OxcclError::new_err("the worker thread is gone"));
        }
        Ok(())
    }
}

/// What keeps a call's memory alive until it has finished: an exported buffer, or the
/// Python object that owns a raw region.
pub(crate) enum Held {
    Buffer(#[allow(dead_code)] PyBuffer<u8>),
    Owner(#[allow(dead_code)] PyObject),
}

/// A call started with `async_op=True`. Holds the call's buffers until it has finished
/// (dropping an unfinished `Work` waits for the call, so its memory is never freed under it).
#[pyclass(module = "oxccl._oxccl", frozen)]
pub struct Work {
    pub(crate) slot: Arc<Slot>,
    pub(crate) op: &'static str,
    pub(crate) bufs: Mutex<Vec<Held>>,
    /// A posted send or receive not yet waited for: whoever waits first drives it to the end
    /// (the caller of `wait`, or a thread of its own when a timeout or a callback needs one)
    /// and then finishes `slot`.
    pub(crate) posted: Mutex<Option<Pending<()>>>,
}

impl Work {
    pub(crate) fn new(slot: Arc<Slot>, op: &'static str, bufs: Vec<Held>) -> Self {
        Work {
            slot,
            op,
            bufs: Mutex::new(bufs),
            posted: Mutex::new(None),
        }
    }

    /// A posted send or receive's work.
    pub(crate) fn posted(op: &'static str, bufs: Vec<Held>, pending: Pending<()>) -> Self {
        let w = Work::new(Arc::default(), op, bufs);
        *w.posted.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
        w
    }

    fn take_posted(&self) -> Option<Pending<()>> {
        self.posted.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Drives a posted operation to its end on this thread (GIL released), then finishes the
    /// slot (whose callbacks take the GIL).
    fn finish_posted_here(&self, py: Python<'_>) {
        if let Some(pending) = self.take_posted() {
            let r = py.allow_threads(move || pending.wait());
            self.slot.finish(r.map_err(Failure::from));
        }
    }

    /// Hands a posted operation to a thread of its own that finishes the slot when it is done.
    fn finish_posted_elsewhere(&self) -> PyResult<()> {
        let Some(pending) = self.take_posted() else {
            return Ok(());
        };
        let slot = self.slot.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Pending<()>>();
        let spawned = std::thread::Builder::new()
            .name("oxccl-py-p2p".into())
            .spawn(move || {
                if let Ok(pending) = rx.recv() {
                    slot.finish(pending.wait().map_err(Failure::from));
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(pending);
                Ok(())
            }
            Err(e) => {
                // Keep the operation where `wait` or the drop finds it.
                *self.posted.lock().unwrap_or_else(|p| p.into_inner()) = Some(pending);
                Err(crate::OxcclError::new_err(format!(
                    "starting a thread to complete a {}: {e}",
                    self.op
                )))
            }
        }
    }
}

#[pymethods]
impl Work {
    /// Blocks (GIL released) until the call finishes; raises its error, or
    /// `OxcclTimeoutError` when `timeout` seconds pass first (the call itself goes on).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = match timeout {
            Some(s) if !s.is_finite() || s < 0.0 => {
                return Err(crate::invalid("wait", format!("timeout {s} is not >= 0")))
            }
            Some(s) => Some(Duration::from_secs_f64(s)),
            None => None,
        };
        if t.is_none() {
            self.finish_posted_here(py);
        } else {
            self.finish_posted_elsewhere()?;
        }
        let slot = self.slot.clone();
        match py.allow_threads(move || slot.wait(t)) {
            Some(r) => {
                self.bufs.lock().unwrap_or_else(|p| p.into_inner()).clear();
                r.map_err(PyErr::from)
            }
            None => Err(Failure {
                kind: Kind::Timeout,
                message: format!(
                    "{}: Work.wait timed out after {:?} (the call is still running)",
                    self.op,
                    t.unwrap_or_default()
                ),
            }
            .into()),
        }
    }

    /// Whether the call has finished (successfully or not).
    fn is_completed(&self, py: Python<'_>) -> bool {
        let posted_done = self
            .posted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(Pending::is_done);
        if posted_done {
            self.finish_posted_here(py);
        }
        self.slot.is_done()
    }

    /// Calls `callback(None)` once the call has succeeded, or `callback(exception)` once it
    /// has failed: on the worker thread, or right here when it is already done.
    fn add_done_callback(&self, py: Python<'_>, callback: PyObject) -> PyResult<()> {
        let mut g = self.slot.lock();
        if g.done {
            let r = g.result.clone().unwrap_or(Ok(()));
            drop(g);
            run_callback(py, &callback, &r);
            return Ok(());
        }
        g.callbacks.push(callback);
        drop(g);
        // Nobody may ever wait: something must drive a posted operation to its callback.
        self.finish_posted_elsewhere()
    }

    /// `(started, returned, callback)`: when the worker began running the call, when the
    /// call returned, and when the worker held the GIL for the first done-callback, in
    /// `time.time()` seconds; each `None` until reached (and always for posted sends and
    /// receives, which the worker does not run). A diagnostic of where a call's time goes.
    fn timeline(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let t = self.slot.lock().times;
        (t.started, t.returned, t.callback)
    }

    /// The call's error message, once it has failed; `None` while running or after success.
    fn exception(&self) -> Option<String> {
        match self.slot.wait(Some(Duration::ZERO)) {
            Some(Err(f)) => Some(f.message),
            _ => None,
        }
    }

    #[getter]
    fn op(&self) -> &'static str {
        self.op
    }

    fn __repr__(&self) -> String {
        let state = if self.slot.is_done() {
            "done"
        } else {
            "running"
        };
        format!("<oxccl Work {} {state}>", self.op)
    }
}

impl Drop for Work {
    /// The buffers must outlive the call: wait for it to return (not for its callbacks,
    /// which may be what drops this `Work`, on the worker thread).
    fn drop(&mut self) {
        if let Some(pending) = self.take_posted() {
            let r = Python::with_gil(|py| py.allow_threads(move || pending.wait()));
            self.slot.finish(r.map_err(Failure::from));
        }
        if self.slot.lock().result.is_none() {
            let slot = self.slot.clone();
            Python::with_gil(|py| py.allow_threads(move || slot.wait_for(None, true)));
        }
    }
}
