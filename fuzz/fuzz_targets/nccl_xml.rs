//! NCCL topology XML (`NCCL_TOPO_FILE`): a topology or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oxccl_topo::sources::nccl_xml::parse("fuzz.xml", data);
});
