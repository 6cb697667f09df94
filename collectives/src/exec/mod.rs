//! Running calls: the progress engine, schedule execution, and the direct paths (small
//! all-reduce, all-to-all, barrier, send/recv) that need no schedule.

pub(crate) mod calls;
pub(crate) mod engine;
pub(crate) mod header;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod select;
pub(crate) mod tiny;
