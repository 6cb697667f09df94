//! The RDMA wire: a slot header checked against its completion's immediate and byte count,
//! and the connection record exchanged at setup.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxccl_transport::rdma::wire::{ConnInfo, SlotHeader, SLOT_HEADER};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 + SLOT_HEADER {
        let imm = u32::from_le_bytes(data[..4].try_into().unwrap());
        let byte_len = u32::from_le_bytes(data[4..8].try_into().unwrap());
        let h: &[u8; SLOT_HEADER] = data[8..8 + SLOT_HEADER].try_into().unwrap();
        if let Ok((hdr, payload)) = SlotHeader::decode(h, imm, byte_len) {
            assert_eq!(payload + SLOT_HEADER, byte_len as usize);
            assert_eq!(SlotHeader::decode(&hdr.encode(), imm, byte_len), Ok((hdr, payload)));
        }
    }
    if let Ok(info) = ConnInfo::from_bytes(data) {
        assert_eq!(ConnInfo::from_bytes(&info.to_bytes()), Ok(info));
    }
});
