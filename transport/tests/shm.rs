//! The conformance suite over shared memory (two ends in one process; `shm_process.rs` runs
//! two processes).

use oxccl_transport::conformance;
use oxccl_transport::shm::{Shm, ShmConfig};

fn shm() -> Shm {
    Shm::from_env().expect("OXCCL_SHM_* configuration")
}

#[test]
fn shm_passes_the_conformance_suite() {
    conformance::run_all(shm);
}

#[test]
fn shm_with_a_tiny_ring_passes_the_conformance_suite() {
    // 4 KiB rings and no single-copy path: every message above a few KiB streams through the
    // ring and wraps many times.
    let mut cfg = ShmConfig::default();
    (cfg.ring_bytes, cfg.cma_min) = (4096, 0);
    conformance::run_all(|| Shm::with_config(cfg.clone()).expect("config"));
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1 GiB in a debug build is slow; run with --release"
)]
fn shm_one_gib_message() {
    let o = conformance::Options::default();
    conformance::large_message(&shm, &o, 1 << 30);
}

#[test]
fn shm_with_single_copy_rendezvous_passes_the_conformance_suite() {
    // Messages from 64 KiB on are read by the receiver straight out of the sender's memory.
    let cfg = ShmConfig {
        cma_min: 64 << 10,
        ..ShmConfig::default()
    };
    conformance::run_all(|| Shm::with_config(cfg.clone()).expect("config"));
}
