//! The TCP transport's frame header, hello and ack: what a peer (or a stranger) sends first;
//! and a stream chunk's header (a connection turned stream), checked against the chunk index
//! and limit taken from the input. A decoded value must encode back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxccl_transport::tcp::wire::{self, Frame, Hello, ACK_LEN, FRAME_LEN, HELLO_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let limit = u64::from_le_bytes(data[..8].try_into().unwrap());
    let rest = &data[8..];
    if let Some(b) = rest.get(..FRAME_LEN) {
        let b: &[u8; FRAME_LEN] = b.try_into().unwrap();
        if let Ok(f) = Frame::decode(b, limit) {
            assert_eq!(Frame::decode(&f.encode(), limit), Ok(f));
        }
        let max = (limit % (1 << 20)) as usize;
        if let Ok(len) = wire::decode_stream_chunk(b, limit >> 44, max) {
            assert!(len >= 1 && len <= max);
            let f = Frame {
                kind: wire::KIND_STREAM,
                tag: limit >> 44,
                len: len as u64,
            };
            assert_eq!(
                wire::decode_stream_chunk(&f.encode(), limit >> 44, max),
                Ok(len)
            );
        }
    }
    if let Some(b) = rest.get(..HELLO_LEN) {
        let b: &[u8; HELLO_LEN] = b.try_into().unwrap();
        if let Ok(h) = Hello::decode(b) {
            assert_eq!(Hello::decode(&h.encode()), Ok(h));
        }
    }
    if let Some(b) = rest.get(..ACK_LEN) {
        let b: &[u8; ACK_LEN] = b.try_into().unwrap();
        if let Ok(m) = wire::decode_ack(b) {
            assert_eq!(wire::decode_ack(&wire::encode_ack(m)), Ok(m));
        }
    }
});
