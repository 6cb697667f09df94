//! Sources: one module per format or discovery backend, and [`load`], which detects the
//! format of an input.

pub mod hwloc_xml;
pub mod hwloc_xml_export;
pub mod nccl_xml;
pub mod nvidia_smi;
pub mod synthetic;
pub mod sysfs;
pub mod sysfs_io;
pub mod xmlutil;

use crate::error::TopoError;
use crate::matrix::PathMatrix;
use crate::topology::Topology;
use std::path::Path;

/// Input formats [`load`] recognises.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// hwloc XML, v1 or v2 (root `<topology>`).
    HwlocXml,
    /// NCCL topology XML (root `<system>`).
    NcclXml,
    /// NCCL graph XML (root `<graphs>`): recognised only to be refused.
    NcclGraph,
    /// `nvidia-smi topo -m` text.
    NvidiaSmi,
    /// hwloc synthetic string.
    Synthetic,
}

/// What an input held: a whole topology, or only a GPU/NIC matrix (`nvidia-smi`).
#[derive(Clone, Debug)]
pub enum Loaded {
    /// A topology.
    Topology(Box<Topology>),
    /// A path matrix without a topology behind it.
    Matrix(PathMatrix),
}

/// Guesses the format of file contents from the root element or the text.
pub fn detect(data: &[u8]) -> Option<Format> {
    let head = String::from_utf8_lossy(&data[..data.len().min(8192)]);
    let mut rest: &str = &head;
    // Skip the XML declaration, doctype and comments to find the root element.
    while let Some(p) = rest.find('<') {
        let r = &rest[p + 1..];
        if r.starts_with('?') || r.starts_with('!') {
            rest = r;
            continue;
        }
        let name: String = r
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return match name.as_str() {
            "topology" => Some(Format::HwlocXml),
            "system" => Some(Format::NcclXml),
            "graphs" => Some(Format::NcclGraph),
            _ => None,
        };
    }
    if nvidia_smi::looks_like(&head) {
        return Some(Format::NvidiaSmi);
    }
    None
}

/// Reads a file in any supported format.
pub fn load_file(path: &Path) -> Result<Loaded, TopoError> {
    let data = std::fs::read(path).map_err(|e| TopoError::io(path, e))?;
    load_bytes(&path.display().to_string(), &data)
}

/// Reads bytes in any supported format; `name` labels errors.
pub fn load_bytes(name: &str, data: &[u8]) -> Result<Loaded, TopoError> {
    let topo = |t: Topology| Ok(Loaded::Topology(Box::new(t)));
    match detect(data) {
        Some(Format::HwlocXml) => topo(hwloc_xml::parse(name, data)?),
        Some(Format::NcclXml) => topo(nccl_xml::parse(name, data)?),
        Some(Format::NcclGraph) => Err(TopoError::NcclGraphFile { file: name.to_string() }),
        Some(Format::NvidiaSmi) => {
            let text = std::str::from_utf8(data)
                .map_err(|e| TopoError::at_offset(name, data, e.valid_up_to(), "not UTF-8 text"))?;
            Ok(Loaded::Matrix(nvidia_smi::parse(name, text)?))
        }
        _ => Err(TopoError::at_offset(
            name,
            data,
            0,
            "unrecognised format (expected hwloc XML, NCCL topology XML or nvidia-smi topo -m text)",
        )),
    }
}

/// Reads a file that must hold a whole topology (not just a matrix).
pub fn load_topology_file(path: &Path) -> Result<Topology, TopoError> {
    match load_file(path)? {
        Loaded::Topology(t) => Ok(*t),
        Loaded::Matrix(_) => Err(TopoError::Invalid(format!(
            "{}: nvidia-smi output holds only a GPU/NIC matrix, not a topology",
            path.display()
        ))),
    }
}

/// Reads `input`: an existing file, else a synthetic string.
pub fn load(input: &str) -> Result<Loaded, TopoError> {
    let p = Path::new(input);
    if p.exists() || !synthetic::looks_synthetic(input) {
        load_file(p)
    } else {
        Ok(Loaded::Topology(Box::new(synthetic::parse(input)?)))
    }
}
