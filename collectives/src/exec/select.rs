//! Which algorithm and how many pipeline chunks a call uses: the tuner's cost model over this
//! communicator's links, or `OXCCL_ALGO` / [`crate::Options::algorithm`] where it applies.

use super::Group;
use crate::algorithms::Algorithm;
use crate::error::Result;
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
    let forced = forced(inner, op).map(Ok);
    let params = CostParams {
        tiers: crate::map::tiers(inner.topology(), inner.options()),
        max_message_bytes: Some(inner.options().chunk_bytes),
    };
    let (algo, k) = tuner::choose_parts(forced, collective, inner.size(), parts, &params);
    Ok((algo, k.clamp(1, 256)))
}

/// `OXCCL_ALGO` ([`crate::Options::algorithm`]) made concrete for this communicator, if set.
/// The communicator refused settings that cannot work when it was made; one that still does
/// not fit here (a child communicator of another size, say) is ignored with a warning, and the
/// tuner decides: a setting never aborts a communicator.
fn forced(inner: &dyn Group, op: &'static str) -> Option<Algorithm> {
    let name = inner.options().algorithm.as_ref()?;
    let algo = name
        .parse::<Algorithm>()
        .map_err(|e| e.to_string())
        .and_then(|a| tuner::resolve_forced(a, inner.size(), inner.topology().hier()));
    match algo {
        Ok(a) => Some(a),
        Err(detail) => {
            tracing::warn!(op, algo = %name, "OXCCL_ALGO does not fit this communicator ({detail}); the tuner decides");
            None
        }
    }
}

/// The algorithm, pipeline depth and lanes for `collective` moving `bytes` (the whole
/// buffer); lanes from `OXCCL_LANES` where the collective has them, else [`tuner::lanes`].
pub(crate) fn choose(
    inner: &dyn Group,
    op: &'static str,
    collective: Collective,
    bytes: usize,
) -> Result<(Algorithm, usize, usize)> {
    let dims = inner.topology().hier_dims();
    let forced = forced(inner, op).map(Ok);
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
    let k = k.clamp(1, 256);
    let lanes_apply = matches!(
        collective,
        Collective::AllReduce | Collective::Broadcast { .. } | Collective::Reduce { .. }
    );
    // A lane holds at least one chunk, so there are at most `k` (the schedule has as many).
    let lanes = match inner.options().lanes {
        Some(l) if lanes_apply => l.min(k),
        _ => tuner::lanes(&algo, collective, inner.size(), bytes, k),
    };
    Ok((algo, k, lanes))
}
