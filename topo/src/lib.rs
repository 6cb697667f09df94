//! # oxccl-topo: hwloc's view of a machine, in Rust
//!
//! Packages, NUMA nodes, caches, cores and PUs; the PCI tree with GPUs and NICs; NVLink and
//! NVSwitch links; path classes as `nvidia-smi topo -m` prints them. Discovered from Linux
//! sysfs, imported from hwloc XML or NCCL topology XML, or built from a synthetic string.
//!
//! (Being built: see the workspace issue.)
