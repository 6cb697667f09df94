//! Which algorithm and how many pipeline chunks a call uses: the tuner's cost model over this
//! communicator's links, or `OXCCL_ALGO` / [`crate::Options::algorithm`] where it applies.

use super::Group;
use crate::algorithms::Algorithm;
use crate::error::{Error, Result};
use crate::schedule::Collective;
use crate::tuner::{self, CostParams, LinkParams};

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
            if matches!(&algo, Algorithm::Hierarchical(d) if d.is_empty()) && dims.is_none() {
                return Err(Error::Algorithm {
                    op,
                    algo: name.clone(),
                    detail: "`hier` needs several hosts with the same number of consecutive \
                             ranks; give the dims (hier:AxB)"
                        .into(),
                });
            }
            Some(Ok(algo))
        }
    };
    // Tier 0 joins the ranks of a host, tier 1 the hosts.
    let mut tiers = vec![LinkParams::SHM];
    if inner.topology().hosts() > 1 {
        tiers.push(LinkParams::TCP);
    }
    let params = CostParams {
        tiers,
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
