//! Which algorithm and how many pipeline chunks a call uses: the tuner's cost model over this
//! communicator's links, or `OXCCL_ALGO` / [`crate::Options::algorithm`] where it applies.

use super::Group;
use crate::algorithms::Algorithm;
use crate::error::{Error, Result};
use crate::schedule::Collective;
use crate::tuner::{self, CostParams};

/// The algorithm and pipeline depth for an uneven `collective` whose ranks' parts hold
/// `parts` bytes (see [`tuner::choose_parts`]).
pub(crate) fn choose_parts(
    inner: &dyn Group,
    op: &'static str,
    collective: Collective,
    parts: &[usize],
) -> Result<(Algorithm, usize)> {
    let forced = forced(inner, op)?.map(Ok);
    let params = CostParams {
        tiers: crate::map::tiers(inner.topology(), inner.options()),
        max_message_bytes: Some(inner.options().chunk_bytes),
    };
    let (algo, k) = tuner::choose_parts(forced, collective, inner.size(), parts, &params);
    Ok((algo, k.clamp(1, 256)))
}

/// `OXCCL_ALGO` ([`crate::Options::algorithm`]) made concrete for this communicator, if set.
fn forced(inner: &dyn Group, op: &'static str) -> Result<Option<Algorithm>> {
    let Some(name) = &inner.options().algorithm else {
        return Ok(None);
    };
    let bad = |detail: String| Error::Algorithm {
        op,
        algo: name.clone(),
        detail,
    };
    let algo: Algorithm = name
        .parse()
        .map_err(|e: crate::algorithms::AlgorithmError| bad(e.to_string()))?;
    tuner::resolve_forced(algo, inner.size(), inner.topology().hier())
        .map(Some)
        .map_err(bad)
}

/// The algorithm and pipeline depth for `collective` moving `bytes` (the whole buffer).
pub(crate) fn choose(
    inner: &dyn Group,
    op: &'static str,
    collective: Collective,
    bytes: usize,
) -> Result<(Algorithm, usize)> {
    let dims = inner.topology().hier_dims();
    let forced = forced(inner, op)?.map(Ok);
    let params = CostParams {
        tiers: crate::map::tiers(inner.topology(), inner.options()),
        max_message_bytes: Some(inner.options().chunk_bytes),
    };
    let (algo, k) = tuner::choose_with(
        forced,
        collective,
        inner.size(),
        bytes,
        &params,
        dims.as_deref(),
    );
    Ok((algo, k.clamp(1, 256)))
}
