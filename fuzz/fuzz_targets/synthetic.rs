//! hwloc synthetic strings (`pack:2 core:4 pu:2`, `OXCCL_TOPO_FILE`, `oxccl-topo --input`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = oxccl_topo::sources::synthetic::parse(s);
    }
});
