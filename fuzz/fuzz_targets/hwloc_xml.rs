//! hwloc XML (v1 and v2): any bytes give a topology or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oxccl_topo::sources::hwloc_xml::parse("fuzz.xml", data);
});
