//! f16 and bf16 conversions to and from f32 in plain integer arithmetic (round to nearest
//! even, NaNs kept quiet), bit-identical to `half`'s. Shared by the portable CPU loops (where
//! `half`'s calls do not inline into vector code) and, through `#[path]`, by the `no_std` CUDA
//! device crate, so the tests here also cover the device conversions.

/// Widens f16 bits to f32 (exact), branch-free like [`f32_to_f16`].
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    // Zero or subnormal: man * 2^-24, exact in f32 (signed conversion vectorises everywhere).
    let sub = (man as i32 as f32 * (1.0 / 16_777_216.0)).to_bits();
    let inf_nan = 0x7f80_0000 | (man << 13);
    let normal = ((exp + 112) << 23) | (man << 13);
    let mag = if exp == 0 {
        sub
    } else if exp == 31 {
        inf_nan
    } else {
        normal
    };
    f32::from_bits(sign | mag)
}

/// Narrows f32 to f16 bits, rounding to nearest even. Every case is computed and one is
/// selected, without branches, so that loops over it vectorise.
#[inline(always)]
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = (x >> 16) & 0x8000;
    let ax = x & 0x7fff_ffff;
    let nan = 0x7e00 | ((ax >> 13) & 0x3ff);
    // Normal: round to nearest even at bit 13, then rebias the exponent (127 -> 15).
    let normal = (ax.wrapping_add(0xfff + ((ax >> 13) & 1))).wrapping_sub(0x3800_0000) >> 13;
    // Subnormal or zero: adding 0.5 lines the f16 subnormal mantissa up with the f32 one,
    // and the addition rounds to nearest even.
    let sub = (f32::from_bits(ax) + 0.5)
        .to_bits()
        .wrapping_sub(0x3f00_0000);
    let mag = if ax > 0x7f80_0000 {
        nan
    } else if ax >= 0x477f_f000 {
        0x7c00 // 65520 and above round to infinity
    } else if ax >= 0x3880_0000 {
        normal
    } else {
        sub
    };
    (sign | mag) as u16
}

/// Widens bf16 bits to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Narrows f32 to bf16 bits, rounding to nearest even.
#[inline(always)]
pub fn f32_to_bf16(f: f32) -> u16 {
    let x = f.to_bits();
    let rounded = x.wrapping_add(0x7fff + ((x >> 16) & 1)) >> 16;
    let quiet_nan = (x >> 16) | 0x40;
    (if x & 0x7fff_ffff > 0x7f80_0000 {
        quiet_nan
    } else {
        rounded
    }) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn widening_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            assert!(
                same(f16_to_f32(h), f16::from_bits(h).to_f32()),
                "f16 {h:#06x}"
            );
            assert!(
                same(bf16_to_f32(h), bf16::from_bits(h).to_f32()),
                "bf16 {h:#06x}"
            );
        }
    }

    #[test]
    fn narrowing_matches_half() {
        // Every f32 with a stride that visits all exponents and many mantissas, plus the
        // neighbours of every f16/bf16 value and of every rounding midpoint.
        let mut xs: Vec<u32> = (0..=u32::MAX).step_by(4093).collect();
        for h in 0..=u16::MAX as u32 {
            let w = f16_to_f32(h as u16).to_bits();
            let b = h << 16;
            for d in [
                0u32, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x7fff, 0x8000, 0x8001,
            ] {
                xs.extend([
                    w.wrapping_add(d),
                    w.wrapping_sub(d),
                    b.wrapping_add(d),
                    b.wrapping_sub(d),
                ]);
            }
        }
        for x in xs {
            let f = f32::from_bits(x);
            let h = f16::from_f32(f).to_bits();
            let got = f32_to_f16(f);
            assert!(
                got == h || (f.is_nan() && got & 0x7c00 == 0x7c00 && got & 0x3ff != 0),
                "f16 of {x:#010x}: {got:#06x} vs {h:#06x}"
            );
            let b = bf16::from_f32(f).to_bits();
            assert_eq!(f32_to_bf16(f), b, "bf16 of {x:#010x}");
        }
    }
}
