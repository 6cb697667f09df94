//! # oxccl-topo: hwloc's view of a machine, in Rust
//!
//! Packages, dies, groups, NUMA nodes, caches, cores and PUs; the PCI tree with GPUs, NICs
//! and NVSwitches; NVLink and xGMI links; NUMA and NVLink distance matrices; path classes as
//! `nvidia-smi topo -m` prints them. Discovered from Linux sysfs, read from hwloc XML, NCCL
//! topology XML, `nvidia-smi topo -m` text or an hwloc synthetic string, and written back
//! as hwloc XML (which `lstopo` reads), NCCL XML, JSON or an lstopo-like tree. No C library
//! is linked: a container or VM without hwloc gets the same view.
//!
//! ## Model
//!
//! A [`Topology`] is an arena of [`Object`]s addressed by [`ObjId`], rooted at a Machine.
//! Like hwloc 2, the CPU tree (Package, Die, Group, caches, Core, PU) is kept apart from
//! the memory children (NUMA nodes, attached to the highest object below the Machine with
//! the same CPUs) and from the I/O children (host bridges, PCI bridges, PCI devices, OS
//! devices such as `mlx5_0`, `eth0`, `cuda0`). Each object has an `os_index` (what the OS
//! calls it) and a `logical_index` (its rank among objects of its type in depth-first
//! order). CPU sets and NUMA node sets are distinct types, [`CpuSet`] and [`NodeSet`].
//! [`Distances`] record what they measure (hwloc kind bits: latency or bandwidth, from the
//! OS or the user). [`Link`]s carry what the PCI tree does not show: NVLink with its
//! bonded-link count and bandwidth, xGMI.
//!
//! ## Sources ([`sources`])
//!
//! - [`sources::sysfs::discover`]: Linux `/sys` and `/proc` under any root, so captured
//!   trees (`hwloc-gather-topology`) work as well as `/`. Missing files give a `tracing`
//!   warning and a smaller topology, never a panic.
//! - [`sources::hwloc_xml`]: hwloc XML v2 and v1 import; [`sources::hwloc_xml_export`]
//!   writes v2.
//! - [`sources::nccl_xml`]: `NCCL_TOPO_FILE` import and export; an NCCL graph file is
//!   refused with [`TopoError::NcclGraphFile`].
//! - [`sources::synthetic`]: `pack:2 numa:2 core:8 pu:2`, with `l3:4(size=32MiB)`,
//!   `[numa(memory=128GiB)]` and `group:N`, giving the same structure as hwloc.
//! - [`sources::nvidia_smi`]: a `nvidia-smi topo -m` matrix (a [`PathMatrix`], no tree).
//! - [`sources::load`] detects the format of a file, or takes a synthetic string.
//!
//! ## Queries
//!
//! [`Topology::path_class`] (NV#, PIX, PXB, PHB, NODE, SYS), [`Topology::path_bandwidth`]
//! (the bottleneck link, GB/s), [`Topology::nearest_nic`], [`Topology::local_cpuset`],
//! [`Topology::matrix`], and a [`Cluster`] of nodes plus network tiers whose
//! [`Cluster::dimensions`] are those of a hierarchical all-reduce (GPUs per node x nodes per
//! switch x switches). NV# counts bonded NVLinks: from NCCL `nvlink count`, or from hwloc's
//! `NVLinkBandwidth` at 25 GB/s per NVLink 2.0+ link (20 GB/s for NVLink 1.0).
//!
//! ## Errors
//!
//! Every fallible call returns [`TopoError`]. Parse errors name the file (or `<synthetic>`)
//! and a 1-based line and column; no input makes this crate panic or loop (tested with
//! random and truncated input).
//!
//! ## Environment
//!
//! - `OXCCL_TOPO_KEEP_GPU_NUMA=1`: keep the NUMA nodes holding NVIDIA GPU memory (POWER9,
//!   Grace), hidden by default as hwloc does.
//! - `OXCCL_TOPO_FSROOT` (CLI only): the root to discover instead of `/`.
//! - `OXCCL_DEBUG`, `OXCCL_DEBUG_SUBSYS`, `OXCCL_DEBUG_FILE` (CLI only): logging as in
//!   `oxccl-collectives` (`TOPO` is this crate's subsystem), default `warn`.
//!
//! ## Example
//!
//! ```
//! use oxccl_topo::{sources::synthetic, ObjType};
//!
//! let t = synthetic::parse("pack:2 [numa(memory=64GiB)] l3:2(size=16MiB) core:4 pu:2")?;
//! let c = t.counts();
//! assert_eq!((c.packages, c.numa_nodes, c.cores, c.pus), (2, 2, 16, 32));
//! assert_eq!(c.caches["L3Cache"], 4);
//! let pkg1 = t.objects_of_type(ObjType::Package)[1];
//! assert_eq!(t.obj(pkg1).cpuset.to_list_string(), "16-31");
//! // What we export, hwloc (and we) read back.
//! let xml = oxccl_topo::sources::hwloc_xml_export::to_string(&t);
//! let back = oxccl_topo::sources::hwloc_xml::parse("t.xml", xml.as_bytes())?;
//! assert_eq!(back.counts(), c);
//! # Ok::<(), oxccl_topo::TopoError>(())
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
