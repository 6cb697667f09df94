//! The GPU/NIC path matrix that `nvidia-smi topo -m` prints.

use crate::query::PathClass;
use serde::Serialize;
use std::fmt::Write;

/// A GPU/NIC matrix: computed from a topology, or read from `nvidia-smi topo -m` output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathMatrix {
    /// Column/row labels of the GPUs (`GPU0` ...).
    pub gpu_labels: Vec<String>,
    /// Labels of the NICs as printed (`NIC0`, or `mlx5_0` in older outputs).
    pub nic_labels: Vec<String>,
    /// Device names of the NICs (`mlx5_0`), from the NIC legend or the topology.
    pub nic_names: Vec<String>,
    /// Square matrix over GPUs then NICs.
    pub cells: Vec<Vec<PathClass>>,
    /// Per GPU: its CPU affinity as a list (`0-47,96-143`), when known.
    pub cpu_affinity: Vec<Option<String>>,
    /// Per GPU: its NUMA affinity, when known.
    pub numa_affinity: Vec<Option<String>>,
    /// Per GPU: the "GPU NUMA ID" column of newer drivers, when printed.
    pub gpu_numa_id: Option<Vec<String>>,
}

impl PathMatrix {
    /// Number of GPUs.
    pub fn n_gpus(&self) -> usize {
        self.gpu_labels.len()
    }

    /// Number of NICs.
    pub fn n_nics(&self) -> usize {
        self.nic_labels.len()
    }

    /// The sub-matrix `rows x cols` as strings; `gpu_rows`/`gpu_cols` choose GPU or NIC.
    pub fn block(&self, gpu_rows: bool, gpu_cols: bool) -> Vec<Vec<String>> {
        let g = self.n_gpus();
        let rows = if gpu_rows { 0..g } else { g..g + self.n_nics() };
        let cols = if gpu_cols { 0..g } else { g..g + self.n_nics() };
        rows.map(|i| cols.clone().map(|j| self.cells[i][j].to_string()).collect())
            .collect()
    }

    /// `nvidia-smi topo -m`-style text: tab-separated matrix, affinities, legend.
    pub fn render(&self) -> String {
        let labels: Vec<&String> = self.gpu_labels.iter().chain(&self.nic_labels).collect();
        let has_cpu = self.cpu_affinity.iter().any(Option::is_some);
        let has_numa = self.numa_affinity.iter().any(Option::is_some);
        let mut out = String::new();
        out.push('\t');
        for l in &labels {
            let _ = write!(out, "{l}\t");
        }
        if has_cpu {
            out.push_str("CPU Affinity\t");
        }
        if has_numa {
            out.push_str("NUMA Affinity\t");
        }
        if self.gpu_numa_id.is_some() {
            out.push_str("GPU NUMA ID");
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
        for (i, l) in labels.iter().enumerate() {
            let mut line = l.to_string();
            for c in &self.cells[i] {
                let s = c.to_string();
                let _ = write!(line, "\t{}", if s == "X" { " X " } else { &s });
            }
            if i < self.n_gpus() {
                if has_cpu {
                    let _ = write!(
                        line,
                        "\t{}",
                        self.cpu_affinity[i].as_deref().unwrap_or("N/A")
                    );
                }
                if has_numa {
                    let _ = write!(
                        line,
                        "\t{}",
                        self.numa_affinity[i].as_deref().unwrap_or("N/A")
                    );
                }
                if let Some(ids) = &self.gpu_numa_id {
                    let _ = write!(
                        line,
                        "\t{}",
                        ids.get(i).map(String::as_str).unwrap_or("N/A")
                    );
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("\nLegend:\n\n");
        out.push_str("  X    = Self\n");
        out.push_str("  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)\n");
        out.push_str("  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node\n");
        out.push_str("  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n");
        out.push_str("  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)\n");
        out.push_str("  PIX  = Connection traversing at most a single PCIe bridge\n");
        out.push_str("  NV#  = Connection traversing a bonded set of # NVLinks\n");
        if self.cells.iter().flatten().any(|c| *c == PathClass::Soc) {
            out.push_str("  SOC  = Path traverses a socket-level link (e.g. QPI)\n");
        }
        let legend: Vec<(&String, &String)> = self
            .nic_labels
            .iter()
            .zip(&self.nic_names)
            .filter(|(l, n)| l != n)
            .collect();
        if !legend.is_empty() {
            out.push_str("\nNIC Legend:\n\n");
            for (l, n) in legend {
                let _ = writeln!(out, "  {l}: {n}");
            }
        }
        out
    }
}
