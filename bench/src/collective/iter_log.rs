//! `--iter-log`: every timed call's wall time, per rank, for telling a slow phase of the
//! machine from a few outliers in a mean (`bench/RESULTS.md`, "big").

use std::io::Write as _;
use std::time::Instant;

/// `--iter-log`: this rank's file, and the ends of the calls of the last timed loop.
pub(super) struct IterLog {
    out: std::io::BufWriter<std::fs::File>,
    pub(super) ends: Vec<Instant>,
}

impl IterLog {
    pub(super) fn open(prefix: &std::path::Path, rank: usize) -> anyhow::Result<Self> {
        let path = format!("{}.rank{rank}", prefix.display());
        let file = std::fs::File::create(&path)
            .map_err(|e| anyhow::anyhow!("--iter-log: creating {path}: {e}"))?;
        Ok(Self {
            out: std::io::BufWriter::new(file),
            ends: Vec::new(),
        })
    }

    /// Writes the calls of the loop that started at `start` (after it, so the loop does no I/O).
    pub(super) fn write(
        &mut self,
        start: Instant,
        size: usize,
        in_place: bool,
        trial: usize,
    ) -> anyhow::Result<()> {
        let mut last = start;
        for (i, &end) in self.ends.iter().enumerate() {
            let ms = end.duration_since(last).as_secs_f64() * 1e3;
            writeln!(
                self.out,
                "{size} {} {trial} {i} {ms:.6}",
                u8::from(in_place)
            )?;
            last = end;
        }
        self.ends.clear();
        Ok(self.out.flush()?)
    }
}
