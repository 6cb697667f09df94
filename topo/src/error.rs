//! The crate's error type.

use std::path::Path;

/// Everything that can go wrong reading or querying a topology.
#[derive(Debug, thiserror::Error)]
pub enum TopoError {
    /// Input text could not be understood; `line` and `column` are 1-based.
    #[error("{file}:{line}:{column}: {msg}")]
    Parse {
        /// File name, or `<synthetic>` / `<input>` for strings.
        file: String,
        /// Line (1-based).
        line: usize,
        /// Column in bytes (1-based).
        column: usize,
        /// What is wrong.
        msg: String,
    },
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An NCCL graph file (root `<graphs>`) was given where a topology was expected.
    #[error("{file}: this is an NCCL graph file (root <graphs>, NCCL_GRAPH_FILE format), not a topology; give an NCCL topology file (root <system>, NCCL_TOPO_FILE format)")]
    NcclGraphFile {
        /// The file.
        file: String,
    },
    /// A query named something the topology does not hold.
    #[error("not found: {0}")]
    NotFound(String),
    /// A request that cannot be satisfied (bad cluster shape, unsupported export ...).
    #[error("{0}")]
    Invalid(String),
}

impl TopoError {
    /// A parse error at a byte offset of `data`: the line and column are computed here.
    pub fn at_offset(file: &str, data: &[u8], offset: usize, msg: impl Into<String>) -> Self {
        let (line, column) = line_col(data, offset);
        TopoError::Parse {
            file: file.to_string(),
            line,
            column,
            msg: msg.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TopoError::Io {
            file: path.display().to_string(),
            source,
        }
    }
}

/// 1-based line and column of byte `offset` in `data` (clamped to the end).
pub fn line_col(data: &[u8], offset: usize) -> (usize, usize) {
    let offset = offset.min(data.len());
    let before = &data[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0)
        + 1;
    (line, col)
}

/// Result alias.
pub type Result<T, E = TopoError> = std::result::Result<T, E>;
