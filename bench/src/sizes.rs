//! Sizes and counts from the command line (`-b`, `-e`, `-f`): parsed without wrapping, swept
//! with guaranteed progress, and bounded before anything is allocated; and how long each size
//! is timed by default.

/// Seconds of timed iterations per size (and per placement, in or out of place), over all
/// trials, where `-n 0` (the default of the collective sweeps and of `sendrecv`) lets the
/// iteration count follow from one call's time: the default `-T` of Open MPI's sides in
/// `../shared/peers/mpi_allreduce.c` and `bench/scripts/mpi_sendrecv.c`, so that both sides of a
/// comparison time trials of the same length. With a fixed count, a small or medium size was
/// timed for a millisecond or two, and whatever else ran then counted in full: the launcher
/// forwarding the previous size's line of output, probably (2-rank all-reduce, 20 iterations:
/// 1 MiB took 57-1295 us from run to run, against 63-119 us in 5 trials of 0.1 s;
/// bench/RESULTS.md, session 12). At 0.1 s a 4-rank 8 MiB `sendrecv` trial on a loaded machine
/// was 2 iterations against Open MPI's 5: the skew of the ranks leaving the barrier before each
/// trial, and any preemption, weighed 2.5x more.
pub const TARGET_SECS: f64 = 0.25;

/// Timed loops per size by default, the median reported: as Open MPI's sides.
pub const TRIALS: usize = 5;

/// Iterations per trial for `-n 0`: [`TARGET_SECS`] over `trials` trials of calls that take
/// `one` seconds each (the slowest rank's), within `lo..=hi`.
pub fn timed_iterations(one: f64, trials: usize, lo: usize, hi: usize) -> usize {
    ((TARGET_SECS / trials.max(1) as f64 / one.max(1e-9)) as usize).clamp(lo, hi)
}

/// The largest buffer size `-b`/`-e` accept: 16 GiB, above any one rank's buffer on the
/// machines this runs on; larger requests are refused before allocating, not aborted on.
pub const MAX_BYTES: usize = 16 << 30;

/// A size's number and the power of two of its suffix: `8`, `64K`, `256M`, `1G`, `2T`
/// (powers of 1024, as nccl-tests; either case).
fn number_and_shift(s: &str) -> Result<(u64, u32), String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("size {t:?}: unknown suffix `{c}` (K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n = num
        .parse()
        .map_err(|_| format!("{t:?} is not a size (e.g. 8, 64K, 256M)"))?;
    Ok((n, shift))
}

/// A count of bytes that need not fit in memory (the simulator's sizes), as
/// `number_and_shift` reads it. Errors on overflow.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (n, shift) = number_and_shift(s)?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {:?} overflows", s.trim()))
}

/// A buffer this process allocates: `8`, `64K`, `256M`, `1G`. Errors above [`MAX_BYTES`],
/// overflowing numbers included.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (n, shift) = number_and_shift(s)?;
    n.checked_mul(1u64 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b <= MAX_BYTES)
        .ok_or_else(|| {
            format!(
                "{:?} is above the largest size, {} GiB",
                s.trim(),
                MAX_BYTES >> 30
            )
        })
}

/// The sizes of a sweep from `min` to `max` bytes, multiplying by `factor` (nccl-tests' `-f`),
/// or adding `step` bytes when `factor` is 1 (`-f 1 -i STEP`), each rounded down to a multiple
/// of `unit` (sizes that round to 0 or repeat are skipped). A start of 0 steps to 1, so the
/// sweep always advances and ends.
pub fn sweep(
    min: usize,
    max: usize,
    factor: usize,
    step: usize,
    unit: usize,
) -> Result<Vec<usize>, String> {
    if factor == 0 || (factor == 1 && step == 0) {
        return Err(format!(
            "-f {factor} -i {step}: the sweep must grow (-f 2 or more, or -f 1 with -i above 0)"
        ));
    }
    if min > max {
        return Err(format!("-b {min} is above -e {max}"));
    }
    if max > MAX_BYTES {
        return Err(format!("-e {max} is above the largest size, {MAX_BYTES}"));
    }
    let unit = unit.max(1);
    let mut sizes = Vec::new();
    let mut s = min;
    while s <= max {
        let rounded = s / unit * unit;
        if rounded > 0 && sizes.last() != Some(&rounded) {
            sizes.push(rounded);
        }
        let next = if factor > 1 {
            s.max(1).checked_mul(factor)
        } else {
            s.checked_add(step)
        };
        match next {
            Some(next) => s = next,
            None => break,
        }
    }
    if sizes.is_empty() {
        return Err(format!(
            "nothing to run: no size from -b {min} to -e {max} holds a whole element of {unit} bytes"
        ));
    }
    Ok(sizes)
}

/// A zeroed buffer of `bytes`, or an error when the memory is not there (instead of aborting).
pub fn zeroed(bytes: usize) -> Result<Vec<u8>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(bytes)
        .map_err(|e| format!("allocating a {bytes}-byte buffer: {e}"))?;
    v.resize(bytes, 0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_without_wrapping() {
        assert_eq!(parse_size("8"), Ok(8));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("16G"), Ok(16 << 30));
        for bad in [
            "17179869184G",
            "99999999999999999G",
            "18446744073709551615",
            "17G",
            "x",
            "-1",
            "",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains("size"), "{bad}: {e}");
        }
        // The simulator's sizes: no memory bound, a T suffix, still no wrapping.
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes("8m"), Ok(8 << 20));
        for bad in ["1X", "K", "99999999999T"] {
            let e = parse_bytes(bad).expect_err(bad);
            assert!(e.contains("size"), "{bad}: {e}");
        }
    }

    #[test]
    fn sweeps_always_end() {
        assert_eq!(sweep(0, 16, 2, 0, 4), Ok(vec![4, 8, 16]));
        assert_eq!(sweep(8, 64, 2, 0, 4), Ok(vec![8, 16, 32, 64]));
        assert_eq!(sweep(3, 3, 2, 0, 1), Ok(vec![3]));
        assert_eq!(sweep(0, 12, 1, 4, 4), Ok(vec![4, 8, 12]));
        assert!(sweep(0, 0, 2, 0, 4).unwrap_err().contains("nothing to run"));
        assert!(sweep(1, 3, 2, 0, 4).unwrap_err().contains("nothing to run"));
        assert!(sweep(8, 4, 2, 0, 4).is_err());
        assert!(sweep(8, 64, 1, 0, 4).is_err());
        assert!(sweep(8, 64, 0, 4, 4).is_err());
        assert!(sweep(8, usize::MAX, 2, 0, 4).is_err());
        // A huge factor or step ends after one size instead of wrapping.
        assert_eq!(sweep(8, MAX_BYTES, usize::MAX, 0, 4), Ok(vec![8]));
        assert_eq!(sweep(8, MAX_BYTES, 1, usize::MAX, 4), Ok(vec![8]));
        assert_eq!(sweep(MAX_BYTES, MAX_BYTES, 2, 0, 4), Ok(vec![MAX_BYTES]));
    }

    #[test]
    fn impossible_buffers_are_errors() {
        assert!(zeroed(usize::MAX / 2).is_err());
        assert_eq!(zeroed(3).unwrap(), vec![0u8; 3]);
    }
}
