//! `oxccl._oxccl`: the native half of the `oxccl` Python package.
//!
//! It wraps [`oxccl_collectives::Communicator`] for Python: every collective takes byte
//! buffers (`PyBuffer<u8>`, which the Python half makes from any buffer-protocol object or CPU
//! tensor without copying) and a dtype name, runs with the GIL released, and returns either
//! nothing (blocking) or a `oxccl.Work` (non-blocking). Failures are Python exceptions that
//! carry the Rust error's message.

mod comm;
mod work;

use oxccl_collectives::{DataType, Error, ReduceOp};
use pyo3::create_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

create_exception!(
    _oxccl,
    OxcclError,
    PyRuntimeError,
    "An oxccl call failed; the message is the Rust error's."
);
create_exception!(
    _oxccl,
    OxcclTimeoutError,
    OxcclError,
    "A peer made no progress for OXCCL_TIMEOUT seconds (or a wait's own timeout passed)."
);
create_exception!(
    _oxccl,
    OxcclInvalidError,
    OxcclError,
    "Bad arguments (sizes, dtypes, ranks), refused before anything was sent."
);
create_exception!(
    _oxccl,
    OxcclPeerError,
    OxcclError,
    "A peer failed or the communicator was aborted; it cannot be used any more."
);

/// The kind of a failure, kept apart from its message so that a finished call's error can be
/// raised again by every `wait()` (the Rust error is not `Clone`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Timeout,
    Invalid,
    Peer,
    Other,
}

#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Timeout { .. } | Error::BootstrapTimeout { .. } => Kind::Timeout,
            Error::Invalid { .. } | Error::Mismatch { .. } => Kind::Invalid,
            Error::PeerFailed { .. } | Error::Remote { .. } | Error::Aborted { .. } => Kind::Peer,
            _ => Kind::Other,
        };
        Failure {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> Self {
        match f.kind {
            Kind::Timeout => OxcclTimeoutError::new_err(f.message),
            Kind::Invalid => OxcclInvalidError::new_err(f.message),
            Kind::Peer => OxcclPeerError::new_err(f.message),
            Kind::Other => OxcclError::new_err(f.message),
        }
    }
}

pub(crate) fn py_err(e: Error) -> PyErr {
    Failure::from(e).into()
}

pub(crate) fn invalid(op: &str, detail: impl std::fmt::Display) -> PyErr {
    OxcclInvalidError::new_err(format!("{op}: invalid argument: {detail}"))
}

pub(crate) fn parse_dtype(name: &str) -> PyResult<DataType> {
    name.parse::<DataType>()
        .map_err(|e| invalid("dtype", e.to_string()))
}

/// `op` is `sum prod min max avg premulsum`; `scale` is PreMulSum's factor.
pub(crate) fn parse_op(name: &str, scale: f64) -> PyResult<ReduceOp> {
    match name.trim().to_ascii_lowercase().as_str() {
        "premulsum" | "premul_sum" => Ok(ReduceOp::PreMulSum(scale)),
        "product" => Ok(ReduceOp::Prod),
        other => other
            .parse::<ReduceOp>()
            .map_err(|e| invalid("op", e.to_string())),
    }
}

/// This machine as `oxccl-topo` sees it, as the JSON its `--of json` prints.
#[pyfunction]
fn topology_json(py: Python<'_>) -> PyResult<String> {
    py.allow_threads(|| {
        oxccl_topo::Topology::discover()
            .map(|t| oxccl_topo::render::json(&t))
            .map_err(|e| OxcclError::new_err(format!("topology: {e}")))
    })
}

/// The data type names the collectives accept, with their element sizes.
#[pyfunction]
fn dtypes() -> Vec<(&'static str, usize)> {
    DataType::ALL.iter().map(|d| (d.name(), d.size())).collect()
}

#[pymodule]
fn _oxccl(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<comm::PyCommunicator>()?;
    m.add_class::<work::Work>()?;
    m.add_function(wrap_pyfunction!(topology_json, m)?)?;
    m.add_function(wrap_pyfunction!(dtypes, m)?)?;
    m.add("OxcclError", py.get_type::<OxcclError>())?;
    m.add("OxcclTimeoutError", py.get_type::<OxcclTimeoutError>())?;
    m.add("OxcclInvalidError", py.get_type::<OxcclInvalidError>())?;
    m.add("OxcclPeerError", py.get_type::<OxcclPeerError>())?;
    Ok(())
}
