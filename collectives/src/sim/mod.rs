//! # The cluster simulator
//!
//! Runs the very [`Schedule`](crate::schedule::Schedule) the executor runs, on a model of a
//! cluster, and predicts how long it takes, per rank and in total, and how busy each link is.
//! Nothing here needs the cluster: a 256-GPU machine from 2017 or a 4096-GPU pod is a small
//! description file.
//!
//! - [`ClusterSpec`] is the file format (TOML or JSON through serde, unknown fields rejected),
//!   validated so every error names its field; see `spec.rs` for the fields and units.
//!   (`oxccl-bench simulate --topology` derives one from `oxccl-topo`'s `Cluster` view.)
//! - [`Network`] is the model: nodes of devices joined by links (NVLink, NVSwitch, PCIe, CPU
//!   buses), NICs, and a two-level leaf/spine network with oversubscription, optionally
//!   rail-optimised. Each link direction has a bandwidth; each route a latency (alpha); each device
//!   a reduction rate (gamma). Rank `r` runs on node `r / devices_per_node`, device
//!   `r % devices_per_node`.
//! - `host` is the optional host model of a node whose ranks are CPU processes (`[node.host]`
//!   in the file): the ranks share `cores`, pay a scheduling delay per message when they
//!   outnumber them, and their copies and reductions share one memory system whose rate
//!   depends on whether the collective's working set fits the cache. `oxccl-bench simulate
//!   --calibrate` fits it to this machine. Nodes without it (GPU nodes) are unaffected.
//! - [`simulate`] executes a schedule with a discrete-event engine (see `engine.rs` for the exact
//!   semantics and the link-sharing model: first come first served by arrival at each link
//!   direction, work-conserving, which conserves capacity exactly and approximates max-min fair
//!   sharing).
//!
//! ## Contracts and errors
//! Invalid descriptions ([`SimError::InvalidSpec`]), schedules with more ranks than the cluster
//! has devices ([`SimError::TooManyRanks`]), malformed schedules ([`SimError::BadSchedule`]),
//! and schedules that would hang the executor ([`SimError::Deadlock`], [`SimError::Unmatched`])
//! are errors, never panics. The model is a prediction: it ignores protocol overheads beyond
//! alpha, congestion control, and packet-level interleaving.
//!
//! ## Example
//! ```
//! use oxccl_collectives::schedule::{Blocks, Collective, Op, Program, Schedule};
//! use oxccl_collectives::sim::{simulate, ClusterSpec, LinkSpec, Network, NodeSpec};
//!
//! // One node, two devices joined by a 10 GB/s link with 2 us latency.
//! let spec = ClusterSpec {
//!     name: "pair".into(),
//!     description: String::new(),
//!     nodes: 1,
//!     node: NodeSpec {
//!         devices: 2,
//!         switches: vec![],
//!         links: vec![LinkSpec {
//!             between: ["dev0".into(), "dev1".into()],
//!             bandwidth_gb_s: 10.0,
//!             latency_us: 2.0,
//!             kind: "link".into(),
//!         }],
//!         nics: vec![],
//!         reduce_gb_s: 100.0,
//!         copy_gb_s: None,
//!         host: None,
//!     },
//!     network: None,
//! };
//! let net = Network::new(&spec)?;
//! // Rank 0 sends the whole buffer to rank 1.
//! let mut p0 = Program::new();
//! p0.push_step([Op::Send { to: 1, blocks: Blocks::one(0) }]);
//! let mut p1 = Program::new();
//! p1.push_step([Op::Recv { from: 0, blocks: Blocks::one(0) }]);
//! let schedule = Schedule {
//!     algorithm: "copy".into(),
//!     collective: Collective::Broadcast { root: 0 },
//!     ranks: 2,
//!     blocks: 1,
//!     owned: vec![],
//!     programs: vec![p0, p1],
//! };
//! let report = simulate(&net, &schedule, 10_000_000, 4)?;
//! // 10 MB at 10 GB/s is 1 ms, plus 2 us of latency.
//! assert!((report.time - 1.002e-3).abs() < 1e-9);
//! # Ok::<(), oxccl_collectives::sim::SimError>(())
//! ```

mod engine;
mod host;
mod link_queue;
mod network;
mod spec;

pub use engine::{bus_factor, simulate, simulate_with_progress, SimReport, TierUse};
pub use network::Network;
pub use spec::{
    ClusterSpec, HostSpec, LinkSpec, MemorySpec, NetworkSpec, NicSpec, NodeSpec, StackSpec,
};

/// What can go wrong building a model or simulating a schedule.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A cluster description value is impossible; `field` is its path in the file.
    #[error("invalid cluster description: `{field}`: {reason}")]
    InvalidSpec { field: String, reason: String },
    #[error("schedule has {ranks} ranks but cluster `{cluster}` has only {devices} devices")]
    TooManyRanks {
        ranks: usize,
        devices: usize,
        cluster: String,
    },
    #[error("malformed schedule at rank {rank}, step {step}: {reason}")]
    BadSchedule {
        rank: usize,
        step: usize,
        reason: String,
    },
    /// No event is left but a rank has not finished: the executor would hang here.
    #[error(
        "schedule deadlocks: rank {rank} waits forever in step {step} (simulated time {time} s)"
    )]
    Deadlock { rank: usize, step: usize, time: f64 },
    /// Messages sent that no receive ever matched.
    #[error("schedule leaves {count} message(s) from rank {from} to rank {to} unreceived")]
    Unmatched {
        from: usize,
        to: usize,
        count: usize,
    },
}
