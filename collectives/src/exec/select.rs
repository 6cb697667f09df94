//! Which algorithm and how many pipeline chunks a call uses: the tuner's cost model over this
//! communicator's links, or `OXCCL_ALGO` / [`crate::Options::algorithm`] where it applies.

use super::Group;
use crate::algorithms::Algorithm;
use crate::error::{Error, Result};
use crate::schedule::Collective;
use crate::tuner::{self, CostParams};

/// The algorithm and pipeline depth for `collective` moving `bytes` (the whole buffer).
pub(crate) fn choose(
    inner: &dyn Group,
    op: &'static str,
    collective: Collective,
    bytes: usize,
) -> Result<(Algorithm, usize)> {
    let dims = inner.topology().hier_dims();
    let forced = match &inner.options().algorithm {
        None => None,
        Some(name) => {
            let algo: Algorithm =
                name.parse()
                    .map_err(|e: crate::algorithms::AlgorithmError| Error::Algorithm {
                        op,
                        algo: name.clone(),
                        detail: e.to_string(),
                    })?;
            let algo = tuner::resolve_forced(algo, inner.size(), inner.topology().hier()).map_err(
                |detail| Error::Algorithm {
                    op,
                    algo: name.clone(),
                    detail,
                },
            )?;
            Some(Ok(algo))
        }
    };
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
