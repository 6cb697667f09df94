//! `oxccl-bench simulate --cluster` files: TOML into a cluster description, then the model
//! of its network (what `bench/src/simulate/cluster.rs` does with a file).
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxccl_collectives::sim::{ClusterSpec, Network};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = toml::from_str::<ClusterSpec>(text) {
        let _ = Network::new(&spec);
    }
});
