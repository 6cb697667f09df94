//! Which algorithm and how many pipeline chunks a call uses.

use crate::algorithms::Algorithm;
use crate::comm::Inner;
use crate::error::{Error, Result};
use crate::schedule::Collective;

/// The algorithm for `collective` moving `bytes` (the whole vector), honouring `OXCCL_ALGO`
/// where the forced algorithm implements the collective.
pub(crate) fn choose(
    inner: &Inner,
    op: &'static str,
    collective: Collective,
    bytes: usize,
) -> Result<Algorithm> {
    if let Some(name) = &inner.options.algorithm {
        let algo: Algorithm = name
            .parse()
            .map_err(|e: crate::algorithms::AlgorithmError| Error::Algorithm {
                op,
                algo: name.clone(),
                detail: e.to_string(),
            })?;
        let algo = match algo {
            Algorithm::Hierarchical(d) if d.is_empty() => match inner.topology.hier_dims() {
                Some(d) => Algorithm::Hierarchical(d),
                None => {
                    return Err(Error::Algorithm {
                        op,
                        algo: name.clone(),
                        detail: "`hier` needs several hosts with the same number of consecutive ranks; give the dims (hier:AxB)".into(),
                    })
                }
            },
            a => a,
        };
        if algo.supports(collective) {
            return Ok(algo);
        }
        tracing::debug!(%algo, ?collective, "forced algorithm does not implement this collective; choosing");
    }
    let p = inner.size;
    let algo = match collective {
        Collective::AllReduce => {
            if let Some(d) = inner.topology.hier_dims() {
                Algorithm::Hierarchical(d)
            } else if p > 4 && bytes < (p << 16) {
                Algorithm::Rhd
            } else {
                Algorithm::Ring
            }
        }
        Collective::Broadcast { .. } | Collective::Reduce { .. } => {
            if bytes < (1 << 20) && p > 2 {
                Algorithm::Tree
            } else {
                Algorithm::Ring
            }
        }
        Collective::ReduceScatter | Collective::AllGather => {
            if let Some(d) = inner.topology.hier_dims() {
                Algorithm::Hierarchical(d)
            } else {
                Algorithm::Ring
            }
        }
    };
    tracing::debug!(%algo, ?collective, bytes, ranks = p, "algorithm chosen");
    Ok(algo)
}

/// Chunks per segment so that one message is about `chunk_bytes`.
pub(crate) fn pipeline(inner: &Inner, algo: &Algorithm, bytes: usize) -> usize {
    if matches!(algo, Algorithm::Rhd) {
        return 1;
    }
    let per_msg = match algo {
        Algorithm::Ring | Algorithm::Hierarchical(_) => inner.size,
        _ => 1,
    };
    bytes
        .div_ceil(per_msg.max(1) * inner.options.chunk_bytes.max(1))
        .clamp(1, 64)
}
