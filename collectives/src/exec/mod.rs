//! Running calls: the progress engine, schedule execution, and the direct paths (small
//! all-reduce, all-to-all, barrier, send/recv) that need no schedule.

pub(crate) mod calls;
pub(crate) mod engine;
pub(crate) mod header;
pub(crate) mod idle;
pub(crate) mod plan;
mod pull;
pub(crate) mod receipt;
pub(crate) mod run;
pub(crate) mod select;
pub(crate) mod silence;
pub(crate) mod stores;
pub(crate) mod tiny;
pub(crate) mod vcalls;

use crate::options::Options;
use crate::Topology;
use engine::Engine;
use plan::Plan;
use std::collections::HashMap;
use std::sync::Arc;

/// What a call reads of its communicator (the communicator implements it, so nothing here
/// reaches back into `comm`).
pub(crate) trait Group {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    fn options(&self) -> &Options;
    fn topology(&self) -> &Topology;
}

/// The state calls run on, behind the communicator's lock.
pub(crate) struct State {
    pub engine: Engine,
    /// Plans by (algorithm, collective, pipeline depth, lanes).
    pub plans: HashMap<(String, crate::schedule::Collective, usize, usize), Arc<Plan>>,
    /// The plan each (collective, size) got, so the tuner runs once per size.
    pub by_size: HashMap<(crate::schedule::Collective, usize), Arc<Plan>>,
    /// Reused buffer space (reduce-scatter's work buffer, small-message staging).
    pub scratch: Vec<u8>,
    /// This call's header for each peer (stable addresses while jobs point at them).
    pub hdrs: Box<[[u8; 32]]>,
    /// The outgoing message of the small-message path.
    pub small_msg: Vec<u8>,
    /// Every rank but this one, ascending.
    pub others: Vec<usize>,
}
