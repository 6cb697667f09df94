//! What `tcp` puts on the wire: a hello per socket, an acknowledgement, and framed messages.
//!
//! Every frame starts with a [`FRAME_LEN`]-byte header: magic `"oxtf"`, version, kind, two
//! reserved bytes, tag (u64), length (u64), all little-endian. A message of at least
//! `stripe_min` bytes on a connection with several sockets is cut into one part per socket:
//! socket 0 carries a `KIND_MESSAGE` header with the whole length followed by part 0, and
//! socket k a `KIND_PART` header with part k's length followed by its bytes. Smaller messages
//! travel whole on socket 0. Every header is checked; a wrong magic, version or kind, a length
//! above the limit the receiver announced, or a connection that ends inside a header is a
//! [`crate::Error::BadFrame`] that closes the connection. Nothing is allocated from a length
//! before it passed the check.
//!
//! A connection turned stream ([`crate::Connection::into_stream`]) carries `KIND_STREAM`
//! chunks instead: chunk `j` on socket `j % nsocks`, its header's tag `j` and length 1 to
//! the receiver's chunk limit (checked by [`decode_stream_chunk`]), then its bytes.

/// Header bytes of every frame.
pub const FRAME_LEN: usize = 24;
/// Frame magic.
pub const FRAME_MAGIC: [u8; 4] = *b"oxtf";
/// Protocol version.
pub const VERSION: u8 = 1;
/// A whole message, or part 0 of a striped one (length = whole message).
pub const KIND_MESSAGE: u8 = 1;
/// Part k > 0 of a striped message (length = the part).
pub const KIND_PART: u8 = 2;
/// A chunk of a connection turned stream (tag = the chunk's index, length = its bytes).
pub const KIND_STREAM: u8 = 3;

/// Hello bytes a dialing socket sends first.
pub const HELLO_LEN: usize = 40;
/// Hello magic.
pub const HELLO_MAGIC: [u8; 4] = *b"oxth";
/// Acknowledgement bytes the acceptor sends on socket 0 once every socket arrived.
pub const ACK_LEN: usize = 16;
/// Acknowledgement magic.
pub const ACK_MAGIC: [u8; 4] = *b"oxta";

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// `KIND_MESSAGE`, `KIND_PART` or `KIND_STREAM`.
    pub kind: u8,
    /// Message tag.
    pub tag: u64,
    /// Length (of the message, or of the part).
    pub len: u64,
}

impl Frame {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut b = [0u8; FRAME_LEN];
        b[..4].copy_from_slice(&FRAME_MAGIC);
        b[4] = VERSION;
        b[5] = self.kind;
        b[8..16].copy_from_slice(&self.tag.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes and checks a header; `limit` is the largest acceptable length.
    pub fn decode(b: &[u8; FRAME_LEN], limit: u64) -> Result<Frame, String> {
        if b[..4] != FRAME_MAGIC {
            return Err(format!("wrong magic {:02x?} (expected \"oxtf\")", &b[..4]));
        }
        if b[4] != VERSION {
            return Err(format!(
                "protocol version {} (this build speaks {VERSION})",
                b[4]
            ));
        }
        let kind = b[5];
        if !matches!(kind, KIND_MESSAGE | KIND_PART | KIND_STREAM) {
            return Err(format!("unknown frame kind {kind}"));
        }
        let tag = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        if len > limit {
            return Err(format!("length {len} is over the limit of {limit} bytes"));
        }
        Ok(Frame { kind, tag, len })
    }
}

/// Checks the header of stream chunk `index`: its kind, its index, and a length from 1 to
/// `max`; the length.
pub fn decode_stream_chunk(b: &[u8; FRAME_LEN], index: u64, max: usize) -> Result<usize, String> {
    let f = Frame::decode(b, max as u64)?;
    if f.kind != KIND_STREAM {
        return Err(format!(
            "frame of kind {} where stream chunk {index} was due",
            f.kind
        ));
    }
    if f.tag != index {
        return Err(format!(
            "stream chunk {} where chunk {index} was due",
            f.tag
        ));
    }
    if f.len == 0 {
        return Err(format!("empty stream chunk {index}"));
    }
    Ok(f.len as usize)
}

/// The hello of one dialing socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The listener's nonce (from its address): proves the dialer meant this listener.
    pub nonce: u64,
    /// Random id shared by the sockets of one connection.
    pub conn_id: u64,
    /// This socket's index.
    pub index: u16,
    /// How many sockets the connection has.
    pub nsocks: u16,
    /// Largest message the dialer accepts.
    pub max_message: u64,
}

impl Hello {
    /// Encodes the hello.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&HELLO_MAGIC);
        b[4] = VERSION;
        b[6..8].copy_from_slice(&self.index.to_le_bytes());
        b[8..10].copy_from_slice(&self.nsocks.to_le_bytes());
        b[16..24].copy_from_slice(&self.nonce.to_le_bytes());
        b[24..32].copy_from_slice(&self.conn_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_message.to_le_bytes());
        b
    }

    /// Decodes and checks a hello.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, String> {
        if b[..4] != HELLO_MAGIC {
            return Err(format!("wrong hello magic {:02x?}", &b[..4]));
        }
        if b[4] != VERSION {
            return Err(format!(
                "hello version {} (this build speaks {VERSION})",
                b[4]
            ));
        }
        let h = Hello {
            index: u16::from_le_bytes([b[6], b[7]]),
            nsocks: u16::from_le_bytes([b[8], b[9]]),
            nonce: u64::from_le_bytes(b[16..24].try_into().unwrap_or_default()),
            conn_id: u64::from_le_bytes(b[24..32].try_into().unwrap_or_default()),
            max_message: u64::from_le_bytes(b[32..40].try_into().unwrap_or_default()),
        };
        if h.nsocks == 0 || h.nsocks > super::MAX_SOCKS as u16 || h.index >= h.nsocks {
            return Err(format!(
                "socket {} of {} is out of range",
                h.index, h.nsocks
            ));
        }
        Ok(h)
    }
}

/// Encodes the acknowledgement carrying the acceptor's message limit.
pub fn encode_ack(max_message: u64) -> [u8; ACK_LEN] {
    let mut b = [0u8; ACK_LEN];
    b[..4].copy_from_slice(&ACK_MAGIC);
    b[4] = VERSION;
    b[8..16].copy_from_slice(&max_message.to_le_bytes());
    b
}

/// Decodes the acknowledgement: the acceptor's message limit.
pub fn decode_ack(b: &[u8; ACK_LEN]) -> Result<u64, String> {
    if b[..4] != ACK_MAGIC || b[4] != VERSION {
        return Err(format!("bad acknowledgement {:02x?}", &b[..5]));
    }
    Ok(u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()))
}

/// Splits a message of `len` bytes over `nsocks` sockets: (offset, length) per part, parts
/// a multiple of 4 KiB except the last (page-friendly copies).
pub fn stripe(len: usize, nsocks: usize, stripe_min: usize) -> Vec<(usize, usize)> {
    if nsocks <= 1 || len < stripe_min {
        return vec![(0, len)];
    }
    let per = len.div_ceil(nsocks).div_ceil(4096) * 4096;
    let mut parts = Vec::with_capacity(nsocks);
    let mut off = 0;
    for _ in 0..nsocks {
        let n = per.min(len - off);
        parts.push((off, n));
        off += n;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let f = Frame {
            kind: KIND_MESSAGE,
            tag: 7,
            len: 1000,
        };
        assert_eq!(Frame::decode(&f.encode(), 1000), Ok(f));
        assert!(Frame::decode(&f.encode(), 999)
            .unwrap_err()
            .contains("over the limit"));
        let mut b = f.encode();
        b[0] = b'X';
        assert!(Frame::decode(&b, 1 << 20).unwrap_err().contains("magic"));
        let mut b = f.encode();
        b[4] = 9;
        assert!(Frame::decode(&b, 1 << 20).unwrap_err().contains("version"));
    }

    #[test]
    fn stripes_cover_the_message_once() {
        for (len, n) in [
            (0usize, 4usize),
            (100, 4),
            (1 << 20, 3),
            ((1 << 20) + 5, 4),
            (12_289, 2),
        ] {
            let parts = stripe(len, n, 4096);
            assert_eq!(parts.iter().map(|p| p.1).sum::<usize>(), len);
            let mut off = 0;
            for (o, l) in &parts {
                assert_eq!(*o, off);
                off += l;
            }
            assert_eq!(parts.len(), if n <= 1 || len < 4096 { 1 } else { n });
        }
    }

    #[test]
    fn stream_chunks_are_checked() {
        let f = Frame {
            kind: KIND_STREAM,
            tag: 5,
            len: 100,
        };
        assert_eq!(decode_stream_chunk(&f.encode(), 5, 100), Ok(100));
        assert!(decode_stream_chunk(&f.encode(), 6, 100)
            .unwrap_err()
            .contains("chunk 5 where chunk 6"));
        assert!(decode_stream_chunk(&f.encode(), 5, 99)
            .unwrap_err()
            .contains("over the limit"));
        let empty = Frame { len: 0, ..f };
        assert!(decode_stream_chunk(&empty.encode(), 5, 100)
            .unwrap_err()
            .contains("empty"));
        let msg = Frame {
            kind: KIND_MESSAGE,
            ..f
        };
        assert!(decode_stream_chunk(&msg.encode(), 5, 100)
            .unwrap_err()
            .contains("kind 1"));
    }

    #[test]
    fn hello_checks_its_ranges() {
        let h = Hello {
            nonce: 1,
            conn_id: 2,
            index: 1,
            nsocks: 2,
            max_message: 3,
        };
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let bad = Hello { index: 2, ..h };
        assert!(Hello::decode(&bad.encode()).is_err());
        assert_eq!(decode_ack(&encode_ack(55)), Ok(55));
    }
}
