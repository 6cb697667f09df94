//! The 32 bytes that open every call's stream to each peer: what this rank is calling, so that
//! ranks that disagree (another operation, count, dtype, op or root, or a skipped call) get an
//! error instead of corrupt data.

use crate::error::Error;
use oxccl_kernels::{DataType, ReduceOp};

const MAGIC: u32 = 0x4f58_4331; // "OXC1"
/// A receipt's magic (`exec/receipt.rs`): its first byte on the wire differs from [`MAGIC`]'s,
/// so one byte at a message boundary tells a receipt from a message.
const RECEIPT_MAGIC: u32 = 0x4f58_4352; // "RCXO" on the wire
pub(crate) const RECEIPT_FIRST_BYTE: u8 = RECEIPT_MAGIC.to_le_bytes()[0];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub kind: u8,
    pub dtype: u8,
    pub op: u8,
    /// How many calls this rank made with this peer before, in this direction.
    pub seq: u64,
    pub count: u64,
    /// Root, peer, or the PreMulSum scalar's bits: whatever else must agree.
    pub extra: u64,
}

/// What a header's `kind` byte says (an index of [`KIND_NAMES`]).
pub(crate) const KIND_ALL_REDUCE: u8 = 1;
pub(crate) const KIND_REDUCE_SCATTER: u8 = 2;
pub(crate) const KIND_ALL_GATHER: u8 = 3;
pub(crate) const KIND_BROADCAST: u8 = 4;
pub(crate) const KIND_REDUCE: u8 = 5;
pub(crate) const KIND_ALL_TO_ALL: u8 = 6;
pub(crate) const KIND_BARRIER: u8 = 7;
pub(crate) const KIND_P2P: u8 = 8;
pub(crate) const KIND_SMALL_ALL_REDUCE: u8 = 9;
// The collectives of `exec/vcalls.rs`.
pub(crate) const KIND_GATHER: u8 = 10;
pub(crate) const KIND_SCATTER: u8 = 11;
pub(crate) const KIND_ALL_GATHER_V: u8 = 12;
pub(crate) const KIND_REDUCE_SCATTER_V: u8 = 13;
pub(crate) const KIND_ALL_TO_ALL_V: u8 = 14;

pub(crate) fn dtype_code(d: DataType) -> u8 {
    DataType::ALL
        .iter()
        .position(|&x| x == d)
        .map_or(0, |i| i as u8 + 1)
}

pub(crate) fn op_code(op: ReduceOp) -> (u8, u64) {
    match op {
        ReduceOp::Sum => (1, 0),
        ReduceOp::Prod => (2, 0),
        ReduceOp::Min => (3, 0),
        ReduceOp::Max => (4, 0),
        ReduceOp::Avg => (5, 0),
        ReduceOp::PreMulSum(s) => (6, s.to_bits()),
    }
}

const OP_NAMES: [&str; 6] = ["sum", "prod", "min", "max", "avg", "premulsum"];

/// The name a user knows the type by (`float32`, as numpy and torch say, not C's `float`).
fn dtype_name(d: DataType) -> &'static str {
    match d {
        DataType::F32 => "float32",
        DataType::F64 => "float64",
        DataType::F16 => "float16",
        other => other.name(),
    }
}

pub(crate) const KIND_NAMES: [&str; 15] = [
    "?",
    "all_reduce",
    "reduce_scatter",
    "all_gather",
    "broadcast",
    "reduce",
    "all_to_all",
    "barrier",
    "send/recv",
    "all_reduce(small)",
    "gather",
    "scatter",
    "all_gather_v",
    "reduce_scatter_v",
    "all_to_all_v",
];

impl Header {
    pub const LEN: usize = 32;

    pub fn to_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = self.kind;
        b[5] = self.dtype;
        b[6] = self.op;
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..32].copy_from_slice(&self.extra.to_le_bytes());
        b
    }

    /// The same description as a receipt (`exec/receipt.rs`).
    pub fn to_receipt_bytes(self) -> [u8; 32] {
        let mut b = self.to_bytes();
        b[0..4].copy_from_slice(&RECEIPT_MAGIC.to_le_bytes());
        b
    }

    /// Parses a receipt; `None` for a bad magic.
    pub fn receipt_from_bytes(b: &[u8; 32]) -> Option<Self> {
        if u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) != RECEIPT_MAGIC {
            return None;
        }
        let mut m = *b;
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        Some(Header::from_bytes(&m))
    }

    /// Parses; a bad magic gives kind 0, which matches nothing.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) != MAGIC {
            return Header::default();
        }
        Header {
            kind: b[4],
            dtype: b[5],
            op: b[6],
            seq: u64_at(8),
            count: u64_at(16),
            extra: u64_at(24),
        }
    }

    /// What the call was, in the words of the API: `broadcast(count 100, float32, root 1)`.
    pub(crate) fn describe(&self) -> String {
        if self.kind == 0 {
            return "something unreadable (not an oxccl stream, or out of step)".into();
        }
        let kind = KIND_NAMES.get(self.kind as usize).copied().unwrap_or("?");
        let mut parts = vec![format!("count {}", self.count)];
        if self.dtype != 0 {
            parts.push(match DataType::ALL.get(self.dtype as usize - 1) {
                Some(d) => dtype_name(*d).to_string(),
                None => format!("unknown dtype {}", self.dtype),
            });
        }
        if self.op != 0 {
            parts.push(match self.op {
                1..=6 => OP_NAMES[self.op as usize - 1].to_string(),
                op => format!("unknown op {op}"),
            });
        }
        // PreMulSum's scalar is folded into `extra` (with the root, where there is one).
        match self.kind {
            KIND_BROADCAST | KIND_REDUCE if self.op != 6 => {
                parts.push(format!("root {}", self.extra))
            }
            _ if self.op == 6 || self.extra == 0 => {}
            _ => parts.push(format!("extra {:#x}", self.extra)),
        }
        format!("{kind}({}) as call #{}", parts.join(", "), self.seq)
    }

    /// Compares what the peer sent with what this rank expects.
    pub fn check(&self, got: &Header, op: &'static str, peer: usize) -> Result<(), Error> {
        if self == got {
            return Ok(());
        }
        Err(Error::Mismatch {
            op,
            peer,
            mine: self.describe(),
            theirs: got.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers and receipts are read from peers: any 32 bytes parse without a panic, describe
    /// themselves in bounded text, and what parses encodes back to the same bytes (random
    /// bytes, plus random valid-magic ones so the fields behind the magic are exercised).
    #[test]
    fn any_32_bytes_parse_and_describe() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x4f58_4331);
        for i in 0..200_000 {
            let mut b = [0u8; 32];
            rng.fill(&mut b[..]);
            // A small field range hits the named kinds, dtypes and ops too.
            if i % 2 == 0 {
                b[4..7].iter_mut().for_each(|x| *x %= 17);
            }
            match i % 3 {
                0 => b[0..4].copy_from_slice(&MAGIC.to_le_bytes()),
                1 => b[0..4].copy_from_slice(&RECEIPT_MAGIC.to_le_bytes()),
                _ => {}
            }
            let h = Header::from_bytes(&b);
            assert!(h.describe().len() < 200);
            if h != Header::default() {
                let mut back = h.to_bytes();
                back[7] = b[7]; // the one byte no field holds
                assert_eq!(back, b);
            }
            if let Some(r) = Header::receipt_from_bytes(&b) {
                assert!(r.describe().len() < 200);
                let mut back = r.to_receipt_bytes();
                back[7] = b[7];
                assert_eq!(back, b);
            }
            if Header::from_bytes(&b) != Header::default() {
                assert!(Header::receipt_from_bytes(&b).is_none());
            }
        }
    }

    #[test]
    fn headers_describe_calls_in_words() {
        let h = Header {
            kind: KIND_REDUCE,
            dtype: dtype_code(DataType::F32),
            op: op_code(ReduceOp::Sum).0,
            seq: 4,
            count: 100,
            extra: 1,
        };
        assert_eq!(
            h.describe(),
            "reduce(count 100, float32, sum, root 1) as call #4"
        );
        let (op, scalar) = op_code(ReduceOp::PreMulSum(0.5));
        let h = Header {
            kind: KIND_ALL_REDUCE,
            dtype: dtype_code(DataType::BF16),
            op,
            seq: 0,
            count: 8,
            extra: scalar,
        };
        assert_eq!(
            h.describe(),
            "all_reduce(count 8, bfloat16, premulsum) as call #0"
        );
        let h = Header {
            kind: KIND_BARRIER,
            ..Header::default()
        };
        assert_eq!(h.describe(), "barrier(count 0) as call #0");
        for d in DataType::ALL {
            let h = Header {
                kind: KIND_P2P,
                dtype: dtype_code(d),
                ..Header::default()
            };
            assert!(!h.describe().contains('#') || h.describe().ends_with("call #0"));
        }
    }
}
