//! Gather, scatter and the uneven collectives (`*_v`, MPI's `Gatherv`, `Scatterv`,
//! `Allgatherv`, `Reduce_scatter`, `Alltoallv`), typed and on bytes.
//!
//! Uneven collectives take each rank's part as [`Parts`]: a count per rank and, optionally, a
//! displacement per rank (where the part starts in the buffer, in elements). Every rank passes
//! the same counts (for all-to-all-v: what it sends to and receives from each rank). Counts
//! and displacements are checked before anything is sent: a part past the end of its buffer,
//! two parts that overlap, or a buffer whose size does not match the counts is
//! [`Error::Invalid`] on the rank that got it wrong, and the communicator stays usable.

use crate::comm::Communicator;
use crate::error::{Error, Result};
use crate::exec::vcalls;
use oxccl_kernels::{DataType, Element, ReduceOp};

/// Where each rank's part of a buffer lies, in elements: counts, and displacements or packed.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    counts: &'a [usize],
    displs: Option<&'a [usize]>,
}

impl<'a> Parts<'a> {
    /// Part `q` is `counts[q]` elements, right after part `q - 1` (part 0 at the start).
    pub fn packed(counts: &'a [usize]) -> Self {
        Self {
            counts,
            displs: None,
        }
    }

    /// Part `q` is `counts[q]` elements from element `displs[q]` on; parts may come in any
    /// order and leave gaps, but must not overlap.
    pub fn with_displs(counts: &'a [usize], displs: &'a [usize]) -> Self {
        Self {
            counts,
            displs: Some(displs),
        }
    }

    pub fn counts(&self) -> &'a [usize] {
        self.counts
    }

    /// `(start, count)` of every part, checked against `ranks` and a buffer of `elems`
    /// elements: with displacements every part must lie inside it, packed parts must fill it
    /// exactly.
    fn resolve(
        &self,
        op: &'static str,
        what: &str,
        ranks: usize,
        elems: usize,
    ) -> Result<Vec<(usize, usize)>> {
        let bad = |m: String| Err(Error::invalid(op, format!("{what}: {m}")));
        if self.counts.len() != ranks {
            return bad(format!(
                "{} counts for a {ranks}-rank communicator",
                self.counts.len()
            ));
        }
        let Some(displs) = self.displs else {
            let total = self
                .counts
                .iter()
                .try_fold(0usize, |a, &c| a.checked_add(c));
            if total != Some(elems) {
                let sum = total.map_or("more than usize::MAX".into(), |t| t.to_string());
                return bad(format!(
                    "the counts add up to {sum} elements, the buffer holds {elems}"
                ));
            }
            return Ok(vcalls::packed(self.counts.iter().copied()));
        };
        if displs.len() != ranks {
            return bad(format!(
                "{} displacements for a {ranks}-rank communicator",
                displs.len()
            ));
        }
        let parts: Vec<(usize, usize)> = displs.iter().copied().zip(self.counts.to_vec()).collect();
        for (q, &(d, c)) in parts.iter().enumerate() {
            if d.checked_add(c).is_none_or(|end| end > elems) {
                return bad(format!(
                    "rank {q}'s part ({c} elements at {d}) ends past the buffer's {elems} elements"
                ));
            }
        }
        let mut order: Vec<usize> = (0..ranks).filter(|&q| parts[q].1 > 0).collect();
        order.sort_by_key(|&q| parts[q].0);
        for w in order.windows(2) {
            let (a, b) = (parts[w[0]], parts[w[1]]);
            if a.0 + a.1 > b.0 {
                return bad(format!(
                    "the parts of ranks {} ({} at {}) and {} ({} at {}) overlap",
                    w[0], a.1, a.0, w[1], b.1, b.0
                ));
            }
        }
        Ok(parts)
    }
}

fn elems(op: &'static str, what: &str, bytes: usize, dtype: DataType) -> Result<usize> {
    if bytes % dtype.size() != 0 {
        return Err(Error::invalid(
            op,
            format!("{what} has {bytes} bytes, not a whole number of {dtype} elements"),
        ));
    }
    Ok(bytes / dtype.size())
}

/// The sum of `counts`, which must fit a `usize`.
fn total(op: &'static str, counts: &[usize]) -> Result<usize> {
    counts
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .ok_or_else(|| Error::invalid(op, "the counts add up to more than usize::MAX"))
}

fn check_root(op: &'static str, root: usize, size: usize) -> Result<()> {
    if root >= size {
        return Err(Error::invalid(
            op,
            format!("root {root} is not a rank of this {size}-rank communicator"),
        ));
    }
    Ok(())
}

/// Where each rank's part lies in root's buffer (`root_bytes` long), as root resolves it; other
/// ranks know only the counts, so they resolve them packed (gather and scatter alike).
fn root_parts(
    op: &'static str,
    what: &str,
    parts: Parts<'_>,
    is_root: bool,
    root_bytes: usize,
    dtype: DataType,
    p: usize,
) -> Result<Vec<(usize, usize)>> {
    if is_root {
        let len = elems(op, what, root_bytes, dtype)?;
        parts.resolve(op, what, p, len)
    } else {
        let total = total(op, parts.counts)?;
        Parts::packed(parts.counts).resolve(op, "counts", p, total)
    }
}

fn check_count(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(
            op,
            format!("{what} has {got} elements, the counts give this rank {want}"),
        ));
    }
    Ok(())
}

impl Communicator {
    // ----- bytes ---------------------------------------------------------------------------

    /// Root's `output` (`size * input.len()` bytes) receives every rank's `input`, in rank
    /// order; other ranks' `output` is not touched (it may be empty there).
    pub fn gather_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        dtype: DataType,
        root: usize,
    ) -> Result<()> {
        let n = elems("gather", "input", input.len(), dtype)?;
        let counts = vec![n; self.size()];
        self.gather_v_bytes(input, output, Parts::packed(&counts), dtype, root)
    }

    /// Root's `output` receives rank `q`'s `input` (`parts.counts()[q]` elements) where
    /// `parts` says; only root's displacements are used.
    pub fn gather_v_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        parts: Parts<'_>,
        dtype: DataType,
        root: usize,
    ) -> Result<()> {
        const OP: &str = "gather";
        let (p, me) = (self.size(), self.rank());
        check_root(OP, root, p)?;
        let n = elems(OP, "input", input.len(), dtype)?;
        let at_root = root_parts(
            OP,
            "root's output",
            parts,
            me == root,
            output.len(),
            dtype,
            p,
        )?;
        check_count(OP, "input", n, at_root[me].1)?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows, checked to hold every part they are used for.
            unsafe {
                vcalls::gather(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    &at_root,
                    dtype,
                    root,
                )
            }
        })
    }

    /// Rank `q`'s `output` receives part `q` of root's `input` (`size * output.len()` bytes,
    /// in rank order); other ranks' `input` is not read (it may be empty there).
    pub fn scatter_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        dtype: DataType,
        root: usize,
    ) -> Result<()> {
        let n = elems("scatter", "output", output.len(), dtype)?;
        let counts = vec![n; self.size()];
        self.scatter_v_bytes(input, Parts::packed(&counts), output, dtype, root)
    }

    /// Rank `q`'s `output` (`parts.counts()[q]` elements) receives its part of root's `input`,
    /// where `parts` says; only root's displacements are used.
    pub fn scatter_v_bytes(
        &self,
        input: &[u8],
        parts: Parts<'_>,
        output: &mut [u8],
        dtype: DataType,
        root: usize,
    ) -> Result<()> {
        const OP: &str = "scatter";
        let (p, me) = (self.size(), self.rank());
        check_root(OP, root, p)?;
        let n = elems(OP, "output", output.len(), dtype)?;
        let at_root = root_parts(OP, "root's input", parts, me == root, input.len(), dtype, p)?;
        check_count(OP, "output", n, at_root[me].1)?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows, checked to hold every part they are used for.
            unsafe {
                vcalls::scatter(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    &at_root,
                    dtype,
                    root,
                )
            }
        })
    }

    /// Every rank's `output` receives rank `q`'s `input` (`parts.counts()[q]` elements) where
    /// `parts` says.
    pub fn all_gather_v_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        parts: Parts<'_>,
        dtype: DataType,
    ) -> Result<()> {
        const OP: &str = "all_gather_v";
        let n = elems(OP, "input", input.len(), dtype)?;
        let out = elems(OP, "output", output.len(), dtype)?;
        let at = parts.resolve(OP, "output", self.size(), out)?;
        check_count(OP, "input", n, at[self.rank()].1)?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows, checked to hold every part.
            unsafe {
                vcalls::all_gather_v(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    &at,
                    dtype,
                )
            }
        })
    }

    /// `input` holds every rank's part packed in rank order (`counts[q]` elements each); this
    /// rank's `output` (`counts[rank]` elements) receives `op` over every rank's part `rank`.
    pub fn reduce_scatter_v_bytes(
        &self,
        input: &[u8],
        output: &mut [u8],
        counts: &[usize],
        dtype: DataType,
        op: ReduceOp,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_v";
        crate::ops::check_op(OP, dtype, op)?;
        let n = elems(OP, "output", output.len(), dtype)?;
        let inp = elems(OP, "input", input.len(), dtype)?;
        let at = Parts::packed(counts).resolve(OP, "input", self.size(), inp)?;
        check_count(OP, "output", n, at[self.rank()].1)?;
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows of the checked sizes.
            unsafe {
                vcalls::reduce_scatter_v(
                    &*self.inner,
                    st,
                    input.as_ptr(),
                    output.as_mut_ptr(),
                    counts,
                    dtype,
                    op,
                )
            }
        })
    }

    /// `input`'s part `q` of `send` goes to rank `q`, which stores it as its part `rank` of
    /// `recv` in `output`. `send.counts()[q]` here must equal `recv.counts()[rank]` at `q`.
    pub fn all_to_all_v_bytes(
        &self,
        input: &[u8],
        send: Parts<'_>,
        output: &mut [u8],
        recv: Parts<'_>,
        dtype: DataType,
    ) -> Result<()> {
        const OP: &str = "all_to_all_v";
        let (p, me) = (self.size(), self.rank());
        let inp = elems(OP, "input", input.len(), dtype)?;
        let out = elems(OP, "output", output.len(), dtype)?;
        let sp = send.resolve(OP, "input", p, inp)?;
        let rp = recv.resolve(OP, "output", p, out)?;
        if sp[me].1 != rp[me].1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "rank {me} sends itself {} elements but expects {}",
                    sp[me].1, rp[me].1
                ),
            ));
        }
        self.run(OP, |st| {
            // SAFETY: live, disjoint borrows, checked to hold every part.
            unsafe {
                vcalls::all_to_all_v(
                    &*self.inner,
                    st,
                    (input.as_ptr(), inp),
                    (output.as_mut_ptr(), out),
                    &sp,
                    &rp,
                    dtype,
                )
            }
        })
    }

    /// The algorithm an uneven call of `collective` would use now, for parts of `part_bytes`
    /// bytes per rank (all-to-all-v: pass none; its choice depends on the rank count only).
    pub fn algorithm_for_parts(
        &self,
        collective: crate::schedule::Collective,
        part_bytes: &[usize],
    ) -> Result<String> {
        let parts = if collective == crate::schedule::Collective::AllToAll {
            &[][..]
        } else {
            part_bytes
        };
        crate::exec::select::choose_parts(&*self.inner, "algorithm_for_parts", collective, parts)
            .map(|(a, k)| {
                if k > 1 {
                    format!("{a}/{k}")
                } else {
                    a.to_string()
                }
            })
    }

    // ----- typed ---------------------------------------------------------------------------

    pub fn gather<T: Element>(&self, input: &[T], output: &mut [T], root: usize) -> Result<()> {
        self.gather_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            root,
        )
    }

    pub fn gather_v<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        parts: Parts<'_>,
        root: usize,
    ) -> Result<()> {
        self.gather_v_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            parts,
            T::DTYPE,
            root,
        )
    }

    pub fn scatter<T: Element>(&self, input: &[T], output: &mut [T], root: usize) -> Result<()> {
        self.scatter_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            root,
        )
    }

    pub fn scatter_v<T: Element>(
        &self,
        input: &[T],
        parts: Parts<'_>,
        output: &mut [T],
        root: usize,
    ) -> Result<()> {
        self.scatter_v_bytes(
            bytemuck::cast_slice(input),
            parts,
            bytemuck::cast_slice_mut(output),
            T::DTYPE,
            root,
        )
    }

    pub fn all_gather_v<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        parts: Parts<'_>,
    ) -> Result<()> {
        self.all_gather_v_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            parts,
            T::DTYPE,
        )
    }

    pub fn reduce_scatter_v<T: Element>(
        &self,
        input: &[T],
        output: &mut [T],
        counts: &[usize],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_v_bytes(
            bytemuck::cast_slice(input),
            bytemuck::cast_slice_mut(output),
            counts,
            T::DTYPE,
            op,
        )
    }

    pub fn all_to_all_v<T: Element>(
        &self,
        input: &[T],
        send: Parts<'_>,
        output: &mut [T],
        recv: Parts<'_>,
    ) -> Result<()> {
        self.all_to_all_v_bytes(
            bytemuck::cast_slice(input),
            send,
            bytemuck::cast_slice_mut(output),
            recv,
            T::DTYPE,
        )
    }
}
