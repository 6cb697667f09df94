//! `nvidia-smi topo -m` text, through format detection as `oxccl-topo --input` reads a file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = oxccl_topo::sources::nvidia_smi::parse("fuzz.txt", text);
    }
    let _ = oxccl_topo::sources::load_bytes("fuzz", data);
});
