//! The example transport of `transport/README.md` passes the conformance suite.

#[path = "../examples/mailbox.rs"]
mod mailbox;

#[test]
fn the_example_transport_passes_the_conformance_suite() {
    oxccl_transport::conformance::run_all(|| mailbox::Mailbox);
}
