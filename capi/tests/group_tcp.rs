//! Groups over TCP links (`OXCCL_TRANSPORT=tcp`) with a small link buffer
//! (`OXCCL_RING_BYTES=65536`), so that messages span hundreds of chunks: one test, which sets
//! the variables before any communicator reads them.

mod common;

use common::groups::*;

#[test]
fn groups_over_tcp_with_small_buffers() {
    // Set before any thread of this binary reads the environment (the only test here).
    std::env::set_var("OXCCL_TRANSPORT", "tcp");
    std::env::set_var("OXCCL_RING_BYTES", "65536");
    for n in 2..=4 {
        ring_exchange(n, (1 << 20) + 3);
        pairwise_with_a_collective(n, 30_000);
    }
    one_thread_drives_all_ranks(3, 1 << 20);
}
