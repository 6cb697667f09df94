//! The conformance suite over the in-process loopback transport.

use oxccl_transport::{conformance, loopback::Loopback};

#[test]
fn loopback_passes_the_conformance_suite() {
    conformance::run_all(Loopback::new);
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1 GiB in a debug build is slow; run with --release"
)]
fn loopback_one_gib_message() {
    let o = conformance::Options::default();
    conformance::large_message(&Loopback::new, &o, 1 << 30);
}

#[test]
fn dyn_wrapper_passes_the_conformance_suite() {
    use oxccl_transport::dynamic::DynTransport;
    conformance::run_all(|| Box::new(Loopback::new()) as Box<dyn DynTransport>);
}
