//! The conformance suite over the RDMA protocol on the software verbs model (no NIC needed).

use oxccl_transport::conformance;
use oxccl_transport::rdma::sim::SimVerbs;
use oxccl_transport::rdma::ProtoConfig;
use oxccl_transport::rdma::{RdmaConfig, RdmaTransport};

#[test]
fn rdma_over_the_software_model_passes_the_conformance_suite() {
    let fabric = SimVerbs::new();
    conformance::run_all(|| RdmaTransport::new(fabric.clone(), RdmaConfig::default()));
}

/// Four 4 KiB slots: every large message waits for credits many times over. (Fewer than four
/// cannot pass: the suite sends three messages before the receiver runs, and RDMA, unlike a
/// socket, has no buffer beyond the receiver's slots.)
#[test]
fn rdma_with_a_four_slot_ring_passes_the_conformance_suite() {
    let fabric = SimVerbs::new();
    let proto = ProtoConfig {
        slots: 4,
        slot_size: 4096,
        ..ProtoConfig::default()
    };
    let config = RdmaConfig {
        proto,
        ..RdmaConfig::default()
    };
    let opts = conformance::Options {
        large_bytes: 4 << 20,
        ..Default::default()
    };
    conformance::run_all_with(|| RdmaTransport::new(fabric.clone(), config.clone()), &opts);
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1 GiB in a debug build is slow; run with --release"
)]
fn rdma_one_gib_message_over_the_software_model() {
    let fabric = SimVerbs::new();
    let o = conformance::Options::default();
    let make = || RdmaTransport::new(fabric.clone(), RdmaConfig::default());
    conformance::large_message(&make, &o, 1 << 30);
}

/// Chosen at run time through the object-safe wrapper, as a communicator would.
#[test]
fn rdma_behind_the_dyn_wrapper_carries_messages() {
    use oxccl_transport::dynamic::DynTransport;
    let fabric = SimVerbs::new();
    let make = || {
        Box::new(RdmaTransport::new(fabric.clone(), RdmaConfig::default())) as Box<dyn DynTransport>
    };
    let o = conformance::Options::default();
    conformance::ping_pong(&make, &o);
    conformance::peer_close_mid_message(&make, &o);
}
