//! What travels between two RDMA peers: the connection info exchanged at setup, and the header
//! at the start of every slot written with RDMA WRITE WITH IMMEDIATE.
//!
//! Both are input from a peer and are checked field by field on the way in.

use super::verbs::QpEndpoint;

/// Bytes at the start of every slot.
pub const SLOT_HEADER: usize = 32;
/// Bytes at the start of a receive arena reserved for the credit counter the peer writes.
pub const CREDIT_AREA: usize = 64;
/// Smallest and largest slot sizes accepted from a peer.
pub const MIN_SLOT: usize = 256;
/// Largest slot: the payload length must fit the immediate's 28 bits.
pub const MAX_SLOT: usize = 1 << 28;
/// Most slots a peer may advertise.
pub const MAX_SLOTS: u32 = 4096;

const MAGIC: u32 = u32::from_le_bytes(*b"OXIB");
const VERSION: u8 = 1;

/// Kind of a slot's content (also in the top 4 bits of the immediate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First chunk of a message: carries tag and total length.
    First = 1,
    /// Later chunk: carries the offset in the message.
    Cont = 2,
    /// The peer closes: nothing follows.
    Close = 3,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::First),
            2 => Some(Kind::Cont),
            3 => Some(Kind::Close),
            _ => None,
        }
    }
}

/// The header of one slot. For `First`, `a` is the tag and `b` the message length; for `Cont`,
/// `a` is the offset of this chunk in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHeader {
    /// What the slot holds.
    pub kind: Kind,
    /// The sender's message number (0, 1, 2, ... per connection).
    pub msg: u64,
    /// Tag (`First`) or offset (`Cont`).
    pub a: u64,
    /// Message length (`First`).
    pub b: u64,
}

impl SlotHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SLOT_HEADER] {
        let mut h = [0u8; SLOT_HEADER];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4] = VERSION;
        h[5] = self.kind as u8;
        h[8..16].copy_from_slice(&self.msg.to_le_bytes());
        h[16..24].copy_from_slice(&self.a.to_le_bytes());
        h[24..32].copy_from_slice(&self.b.to_le_bytes());
        h
    }

    /// Decodes and checks a header against the immediate and byte count of its completion.
    pub fn decode(
        h: &[u8; SLOT_HEADER],
        imm: u32,
        byte_len: u32,
    ) -> Result<(SlotHeader, usize), String> {
        let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        if magic != MAGIC {
            return Err(format!("wrong magic {magic:#010x}"));
        }
        if h[4] != VERSION {
            return Err(format!(
                "unsupported version {} (this side speaks {VERSION})",
                h[4]
            ));
        }
        let kind = Kind::from_u8(h[5]).ok_or_else(|| format!("unknown slot kind {}", h[5]))?;
        let (imm_kind, imm_len) = split_imm(imm);
        if imm_kind != kind as u8 {
            return Err(format!(
                "immediate says kind {imm_kind}, header says {kind:?}"
            ));
        }
        let payload = (byte_len as usize)
            .checked_sub(SLOT_HEADER)
            .ok_or_else(|| format!("write of {byte_len} bytes is shorter than a slot header"))?;
        if payload != imm_len as usize {
            return Err(format!(
                "immediate says {imm_len} payload bytes, the write carried {payload}"
            ));
        }
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8-byte range"));
        Ok((
            SlotHeader {
                kind,
                msg: u64_at(8),
                a: u64_at(16),
                b: u64_at(24),
            },
            payload,
        ))
    }
}

/// The immediate of a slot write: kind in the top 4 bits, payload length below.
pub fn imm(kind: Kind, payload: usize) -> u32 {
    debug_assert!(payload < MAX_SLOT);
    ((kind as u32) << 28) | payload as u32
}

fn split_imm(imm: u32) -> (u8, u32) {
    ((imm >> 28) as u8, imm & 0x0fff_ffff)
}

/// Everything a peer needs to reach this side: its queue pair and its receive arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The queue pair's address.
    pub qp: QpEndpoint,
    /// Virtual address of the receive arena (credit area, then the slots).
    pub arena_addr: u64,
    /// Its remote key.
    pub arena_rkey: u32,
    /// Number of slots.
    pub slots: u32,
    /// Bytes per slot, header included.
    pub slot_size: u32,
}

impl ConnInfo {
    /// Encoded size.
    pub const LEN: usize = 8 + QpEndpoint::LEN + 8 + 4 + 4 + 4;

    /// Fixed-size little-endian encoding.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[VERSION, 0, 0, 0]);
        b.extend_from_slice(&self.qp.to_bytes());
        b.extend_from_slice(&self.arena_addr.to_le_bytes());
        b.extend_from_slice(&self.arena_rkey.to_le_bytes());
        b.extend_from_slice(&self.slots.to_le_bytes());
        b.extend_from_slice(&self.slot_size.to_le_bytes());
        b
    }

    /// Decodes and checks [`ConnInfo::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<ConnInfo, String> {
        if b.len() != Self::LEN {
            return Err(format!(
                "connection info is {} bytes, expected {}",
                b.len(),
                Self::LEN
            ));
        }
        if b[0..4] != MAGIC.to_le_bytes() {
            return Err("connection info has the wrong magic (not an oxccl RDMA peer?)".into());
        }
        if b[4] != VERSION {
            return Err(format!(
                "peer speaks protocol version {}, this side {VERSION}",
                b[4]
            ));
        }
        let qp = QpEndpoint::from_bytes(&b[8..8 + QpEndpoint::LEN]).map_err(|e| e.to_string())?;
        let r = &b[8 + QpEndpoint::LEN..];
        let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4-byte range"));
        let info = ConnInfo {
            qp,
            arena_addr: u64::from_le_bytes(r[0..8].try_into().expect("8-byte range")),
            arena_rkey: u32_at(8),
            slots: u32_at(12),
            slot_size: u32_at(16),
        };
        if info.slots == 0 || info.slots > MAX_SLOTS {
            return Err(format!(
                "peer advertises {} slots (allowed 1..={MAX_SLOTS})",
                info.slots
            ));
        }
        let size = info.slot_size as usize;
        if !(MIN_SLOT..=MAX_SLOT).contains(&size) {
            return Err(format!(
                "peer advertises {size}-byte slots (allowed {MIN_SLOT}..={MAX_SLOT})"
            ));
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let h = SlotHeader {
            kind: Kind::First,
            msg: 3,
            a: 77,
            b: 1 << 40,
        };
        let e = h.encode();
        let i = imm(Kind::First, 100);
        assert_eq!(SlotHeader::decode(&e, i, 132).unwrap(), (h, 100));
        assert!(
            SlotHeader::decode(&e, i, 131).is_err(),
            "length disagrees with immediate"
        );
        assert!(
            SlotHeader::decode(&e, imm(Kind::Cont, 100), 132).is_err(),
            "kind disagrees"
        );
        assert!(
            SlotHeader::decode(&e, i, 10).is_err(),
            "shorter than a header"
        );
        let mut bad = e;
        bad[0] ^= 1;
        assert!(SlotHeader::decode(&bad, i, 132)
            .unwrap_err()
            .contains("magic"));
        let mut bad = e;
        bad[5] = 9;
        assert!(SlotHeader::decode(&bad, i, 132).is_err());
    }

    #[test]
    fn conn_info_round_trip_and_checks() {
        let qp = QpEndpoint {
            qp_num: 5,
            lid: 1,
            gid: [2; 16],
            psn: 9,
        };
        let c = ConnInfo {
            qp,
            arena_addr: 0x1000,
            arena_rkey: 44,
            slots: 8,
            slot_size: 4096,
        };
        let b = c.to_bytes();
        assert_eq!(b.len(), ConnInfo::LEN);
        assert_eq!(ConnInfo::from_bytes(&b).unwrap(), c);
        assert!(ConnInfo::from_bytes(&b[1..]).is_err());
        let bad = ConnInfo { slots: 0, ..c }.to_bytes();
        assert!(ConnInfo::from_bytes(&bad).is_err());
        let bad = ConnInfo { slot_size: 16, ..c }.to_bytes();
        assert!(ConnInfo::from_bytes(&bad).is_err());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(ConnInfo::from_bytes(&bad).unwrap_err().contains("magic"));
    }
}
