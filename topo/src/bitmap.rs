//! Bitmaps of OS indexes, and the two typed sets built on them: [`CpuSet`] (PUs) and
//! [`NodeSet`] (NUMA nodes). They are distinct types so a node index can never be used
//! where a CPU index is expected.
//!
//! Text forms, as hwloc writes them:
//! - list: `0-3,8,10-11` (what `nvidia-smi`, `taskset -c` and sysfs `cpulist` use);
//! - mask: `0x0000ffff,0xffffffff` (32-bit hex words, most significant first; an empty word
//!   between commas is zero, and a leading `0xf...f` means "every higher bit is set").

use std::fmt;

/// A growable set of non-negative integers, with an optional "all higher bits set" tail.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Bitmap {
    words: Vec<u64>,
    /// Every index at or above `64 * words.len()` is set (hwloc's infinite sets).
    infinite: bool,
}

/// Why a bitmap string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapParseError {
    /// Byte offset of the bad part in the input.
    pub offset: usize,
    /// What was wrong.
    pub msg: String,
}

impl fmt::Display for BitmapParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.msg)
    }
}

impl std::error::Error for BitmapParseError {}

/// Largest index accepted from text: bounds memory use on hostile input.
const MAX_INDEX: u64 = 1 << 24;

impl Bitmap {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding the one index `i`.
    pub fn single(i: u32) -> Self {
        let mut b = Self::new();
        b.set(i);
        b
    }

    /// Adds `i`.
    pub fn set(&mut self, i: u32) {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            if self.infinite {
                return;
            }
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (i % 64);
    }

    /// Adds every index of `lo..=hi`.
    pub fn set_range(&mut self, lo: u32, hi: u32) {
        for i in lo..=hi {
            self.set(i);
        }
    }

    /// Removes `i`.
    pub fn unset(&mut self, i: u32) {
        let w = (i / 64) as usize;
        if w >= self.words.len() {
            if !self.infinite {
                return;
            }
            self.words.resize(w + 1, u64::MAX);
        }
        self.words[w] &= !(1 << (i % 64));
    }

    /// Whether `i` is in the set.
    pub fn is_set(&self, i: u32) -> bool {
        let w = (i / 64) as usize;
        match self.words.get(w) {
            Some(x) => x & (1 << (i % 64)) != 0,
            None => self.infinite,
        }
    }

    /// Whether the set is infinite (hwloc's `0xf...f` prefix).
    pub fn is_infinite(&self) -> bool {
        self.infinite
    }

    /// Number of indexes set; `None` for an infinite set.
    pub fn weight(&self) -> Option<usize> {
        if self.infinite {
            return None;
        }
        Some(self.words.iter().map(|w| w.count_ones() as usize).sum())
    }

    /// Whether no index is set.
    pub fn is_empty(&self) -> bool {
        !self.infinite && self.words.iter().all(|w| *w == 0)
    }

    /// Indexes in increasing order (the finite part only).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| wi as u32 * 64 + b)
        })
    }

    /// Smallest index set.
    pub fn first(&self) -> Option<u32> {
        self.iter().next().or(if self.infinite {
            Some(self.words.len() as u32 * 64)
        } else {
            None
        })
    }

    /// Union in place.
    pub fn or_assign(&mut self, other: &Bitmap) {
        if other.words.len() > self.words.len() {
            let fill = if self.infinite { u64::MAX } else { 0 };
            self.words.resize(other.words.len(), fill);
        }
        for (i, w) in self.words.iter_mut().enumerate() {
            *w |= other
                .words
                .get(i)
                .copied()
                .unwrap_or(if other.infinite { u64::MAX } else { 0 });
        }
        self.infinite |= other.infinite;
    }

    /// Whether the two sets share an index.
    pub fn intersects(&self, other: &Bitmap) -> bool {
        if self.infinite && other.infinite {
            return true;
        }
        let n = self.words.len().max(other.words.len());
        (0..n).any(|i| self.word(i) & other.word(i) != 0)
    }

    /// Whether every index of `self` is in `other`.
    pub fn is_subset(&self, other: &Bitmap) -> bool {
        if self.infinite && !other.infinite {
            return false;
        }
        let n = self.words.len().max(other.words.len());
        (0..n).all(|i| self.word(i) & !other.word(i) == 0)
    }

    fn word(&self, i: usize) -> u64 {
        self.words
            .get(i)
            .copied()
            .unwrap_or(if self.infinite { u64::MAX } else { 0 })
    }

    fn trim(&mut self) {
        let fill = if self.infinite { u64::MAX } else { 0 };
        while self.words.last() == Some(&fill) {
            self.words.pop();
        }
    }

    /// Reads the list form (`0-3,8`; `5-` means 5 and every higher index; empty is empty).
    pub fn parse_list(s: &str) -> Result<Self, BitmapParseError> {
        let mut b = Bitmap::new();
        let mut offset = 0;
        for part in s.split(',') {
            let t = part.trim();
            let err = |msg: &str| BitmapParseError {
                offset,
                msg: format!("{msg} in {t:?}"),
            };
            if !t.is_empty() {
                let num = |x: &str| -> Result<u32, BitmapParseError> {
                    let v: u64 = x.trim().parse().map_err(|_| err("not a number"))?;
                    if v > MAX_INDEX {
                        return Err(err("index too large"));
                    }
                    Ok(v as u32)
                };
                match t.split_once('-') {
                    Some((lo, "")) => {
                        let lo = num(lo)?;
                        b.set_range(lo, (lo / 64 + 1) * 64 - 1);
                        b.words.truncate((lo / 64 + 1) as usize);
                        b.infinite = true;
                    }
                    Some((lo, hi)) => {
                        let (lo, hi) = (num(lo)?, num(hi)?);
                        if hi < lo {
                            return Err(err("range end below start"));
                        }
                        b.set_range(lo, hi);
                    }
                    None => b.set(num(t)?),
                }
            }
            offset += part.len() + 1;
        }
        b.trim();
        Ok(b)
    }

    /// Writes the list form.
    pub fn to_list_string(&self) -> String {
        let mut out = String::new();
        let mut it = self.iter().peekable();
        while let Some(lo) = it.next() {
            let mut hi = lo;
            while it.peek() == Some(&(hi + 1)) {
                hi = it.next().unwrap_or(hi);
            }
            if !out.is_empty() {
                out.push(',');
            }
            let tail_open = self.infinite && hi + 1 == self.words.len() as u32 * 64;
            if tail_open {
                out.push_str(&format!("{lo}-"));
            } else if lo == hi {
                out.push_str(&lo.to_string());
            } else {
                out.push_str(&format!("{lo}-{hi}"));
            }
        }
        if self.infinite && !out.ends_with('-') {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{}-", self.words.len() * 64));
        }
        out
    }

    /// Reads hwloc's mask form (`0x00ff,,0xf0`, `0xf...f,0x1`); the `0x` prefixes are
    /// optional, so NCCL's `affinity="0000ffff,ffffffff"` reads too.
    pub fn parse_mask(s: &str) -> Result<Self, BitmapParseError> {
        let s = s.trim();
        let mut parts: Vec<&str> = s.split(',').collect();
        let mut b = Bitmap::new();
        if parts
            .first()
            .is_some_and(|p| p.eq_ignore_ascii_case("0xf...f"))
        {
            b.infinite = true;
            parts.remove(0);
        }
        let n = parts.len();
        if n as u64 * 32 > MAX_INDEX {
            return Err(BitmapParseError {
                offset: 0,
                msg: "mask too long".into(),
            });
        }
        let mut offset = if b.infinite { 8 } else { 0 };
        for (k, part) in parts.iter().enumerate() {
            let hex = part.trim();
            let hex = hex
                .strip_prefix("0x")
                .or_else(|| hex.strip_prefix("0X"))
                .unwrap_or(hex);
            let v = if hex.is_empty() {
                0
            } else {
                u64::from_str_radix(hex, 16).map_err(|_| BitmapParseError {
                    offset,
                    msg: format!("not a hex word: {part:?}"),
                })?
            };
            if v > u64::from(u32::MAX) && n > 1 {
                return Err(BitmapParseError {
                    offset,
                    msg: format!("word wider than 32 bits: {part:?}"),
                });
            }
            if v != 0 {
                // Place the word directly: bit-by-bit setting is slow on wide masks.
                let base = (n - 1 - k) * 32;
                let (w, shift) = (base / 64, base % 64);
                if b.words.len() < w + 2 {
                    b.words.resize(w + 2, 0);
                }
                b.words[w] |= v << shift;
                if shift > 0 {
                    b.words[w + 1] |= v >> (64 - shift);
                }
            }
            offset += part.len() + 1;
        }
        if b.infinite {
            // The infinite tail starts right above the written words.
            let top = n * 32;
            let words = top.div_ceil(64);
            b.words.resize(words, 0);
            if top % 64 != 0 {
                if let Some(last) = b.words.last_mut() {
                    *last |= u64::MAX << (top % 64);
                }
            }
        }
        b.trim();
        Ok(b)
    }

    /// Writes hwloc's mask form: 32-bit words `0x%08x`, most significant first.
    pub fn to_mask_string(&self) -> String {
        let mut words32: Vec<u32> = Vec::new();
        for w in &self.words {
            words32.push(*w as u32);
            words32.push((*w >> 32) as u32);
        }
        while words32.len() > 1 && words32.last() == Some(&if self.infinite { u32::MAX } else { 0 })
        {
            words32.pop();
        }
        if words32.is_empty() {
            if self.infinite {
                return "0xf...f".into();
            }
            words32.push(0);
        }
        let mut parts: Vec<String> = Vec::new();
        if self.infinite {
            parts.push("0xf...f".into());
            if words32.iter().all(|w| *w == u32::MAX) {
                return parts.join(",");
            }
        }
        parts.extend(words32.iter().rev().map(|w| format!("0x{w:08x}")));
        parts.join(",")
    }

    /// Writes NCCL's affinity form: 32-bit words `%08x` without prefix, at least `min_words`.
    pub fn to_nccl_mask(&self, min_words: usize) -> String {
        let mut words32: Vec<u32> = Vec::new();
        for w in &self.words {
            words32.push(*w as u32);
            words32.push((*w >> 32) as u32);
        }
        while words32.len() > min_words.max(1) && words32.last() == Some(&0) {
            words32.pop();
        }
        while words32.len() < min_words.max(1) {
            words32.push(0);
        }
        words32
            .iter()
            .rev()
            .map(|w| format!("{w:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Debug for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.to_list_string())
    }
}

impl fmt::Display for Bitmap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list_string())
    }
}

macro_rules! typed_set {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Default, PartialEq, Eq, Hash)]
        pub struct $name(Bitmap);

        impl $name {
            /// The empty set.
            pub fn new() -> Self { Self(Bitmap::new()) }
            /// Wraps an untyped bitmap.
            pub fn from_bitmap(b: Bitmap) -> Self { Self(b) }
            /// The untyped bitmap.
            pub fn bitmap(&self) -> &Bitmap { &self.0 }
            /// A set of one index.
            pub fn single(i: u32) -> Self { Self(Bitmap::single(i)) }
            /// Adds `i`.
            pub fn set(&mut self, i: u32) { self.0.set(i) }
            /// Adds `lo..=hi`.
            pub fn set_range(&mut self, lo: u32, hi: u32) { self.0.set_range(lo, hi) }
            /// Whether `i` is in the set.
            pub fn is_set(&self, i: u32) -> bool { self.0.is_set(i) }
            /// Number of members (`None` if infinite).
            pub fn weight(&self) -> Option<usize> { self.0.weight() }
            /// Whether empty.
            pub fn is_empty(&self) -> bool { self.0.is_empty() }
            /// Members in increasing order.
            pub fn iter(&self) -> impl Iterator<Item = u32> + '_ { self.0.iter() }
            /// Smallest member.
            pub fn first(&self) -> Option<u32> { self.0.first() }
            /// Union in place.
            pub fn or_assign(&mut self, o: &Self) { self.0.or_assign(&o.0) }
            /// Whether the sets share a member.
            pub fn intersects(&self, o: &Self) -> bool { self.0.intersects(&o.0) }
            /// Whether `self` is inside `o`.
            pub fn is_subset(&self, o: &Self) -> bool { self.0.is_subset(&o.0) }
            /// Reads the list form (`0-3,8`).
            pub fn parse_list(s: &str) -> Result<Self, BitmapParseError> { Bitmap::parse_list(s).map(Self) }
            /// Reads hwloc's mask form (`0x0000ffff,0xffffffff`).
            pub fn parse_mask(s: &str) -> Result<Self, BitmapParseError> { Bitmap::parse_mask(s).map(Self) }
            /// Writes the list form.
            pub fn to_list_string(&self) -> String { self.0.to_list_string() }
            /// Writes hwloc's mask form.
            pub fn to_mask_string(&self) -> String { self.0.to_mask_string() }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.to_list_string())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0.to_list_string())
            }
        }

        impl std::str::FromStr for $name {
            type Err = BitmapParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> { Self::parse_list(s) }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0.to_list_string())
            }
        }
    };
}

typed_set!(
    /// A set of PUs (logical processors) by OS index.
    CpuSet
);
typed_set!(
    /// A set of NUMA nodes by OS index.
    NodeSet
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_round_trip() {
        for s in ["", "0", "0-3,8,10-11", "5,7,9", "0-127"] {
            assert_eq!(Bitmap::parse_list(s).unwrap().to_list_string(), s);
        }
    }

    #[test]
    fn mask_forms() {
        let b = Bitmap::parse_mask("0x3ffff000,,0x03ffff00").unwrap();
        assert!(b.is_set(8) && b.is_set(25) && !b.is_set(26) && b.is_set(64 + 12));
        assert_eq!(
            Bitmap::parse_mask("0x0000ffff,0xffffffff")
                .unwrap()
                .to_list_string(),
            "0-47"
        );
        assert_eq!(
            Bitmap::parse_list("0-47").unwrap().to_mask_string(),
            "0x0000ffff,0xffffffff"
        );
        assert_eq!(Bitmap::new().to_mask_string(), "0x00000000");
        let inf = Bitmap::parse_mask("0xf...f").unwrap();
        assert!(inf.is_infinite() && inf.is_set(1000));
        assert_eq!(inf.to_mask_string(), "0xf...f");
        let nccl = Bitmap::parse_mask("00000000,0000ffff,ff000000").unwrap();
        assert_eq!(nccl.to_list_string(), "24-47");
        assert_eq!(nccl.to_nccl_mask(3), "00000000,0000ffff,ff000000");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(Bitmap::parse_list("3-1").is_err());
        assert!(Bitmap::parse_list("x").is_err());
        assert!(Bitmap::parse_list("99999999999").is_err());
        assert!(Bitmap::parse_mask("0xzz").is_err());
    }

    #[test]
    fn set_ops() {
        let a = Bitmap::parse_list("0-3").unwrap();
        let b = Bitmap::parse_list("2-5").unwrap();
        assert!(a.intersects(&b));
        assert!(!a.is_subset(&b));
        let mut c = a.clone();
        c.or_assign(&b);
        assert_eq!(c.to_list_string(), "0-5");
        assert_eq!(c.weight(), Some(6));
    }
}
