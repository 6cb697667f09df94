//! # oxccl-topo: hwloc's view of a machine, in Rust
//!
//! Packages, NUMA nodes, caches, cores and PUs; the PCI tree with GPUs and NICs; NVLink and
//! NVSwitch links; path classes as `nvidia-smi topo -m` prints them. Discovered from Linux
//! sysfs, imported from hwloc XML or NCCL topology XML, or built from a synthetic string.
//!
//! ```
//! let t = oxccl_topo::sources::synthetic::parse("pack:2 numa:2 core:8 pu:2").unwrap();
//! let c = t.counts();
//! assert_eq!((c.packages, c.numa_nodes, c.cores, c.pus), (2, 4, 32, 64));
//! ```

pub mod bitmap;
pub mod cluster;
pub mod error;
pub mod matrix;
pub mod object;
pub mod query;
pub mod render;
pub mod sources;
pub mod topology;

pub use bitmap::{Bitmap, CpuSet, NodeSet};
pub use cluster::{Cluster, NetworkTier};
pub use error::TopoError;
pub use matrix::PathMatrix;
pub use object::{ObjAttr, ObjId, ObjType, Object, OsDevType, PciAddr, PciInfo};
pub use query::PathClass;
pub use topology::{Counts, Distances, Link, LinkKind, Topology};
