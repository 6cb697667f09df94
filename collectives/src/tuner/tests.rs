//! The tuner's cost model and choices, against closed forms and the schedules.

use super::*;

const MIB: usize = 1 << 20;

fn model_choice(
    c: Collective,
    p: usize,
    bytes: usize,
    params: &CostParams,
    dims: Option<&[usize]>,
) -> (Algorithm, usize) {
    choose_with(None, c, p, bytes, params, dims)
}

#[test]
fn classic_closed_forms_at_pipeline_one() {
    let link = LinkParams {
        alpha_s: 1.0,
        beta_s_per_byte: 0.01,
        gamma_s_per_byte: 0.001,
    };
    let params = CostParams::flat(link);
    let (p, n) = (8usize, 800usize);
    let ar = Collective::AllReduce;
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.max(1.0);
    // Ring: 2(p-1) alpha + 2 (p-1)/p n beta + (p-1)/p n gamma.
    let ring = 14.0 + 2.0 * 7.0 / 8.0 * 800.0 * 0.01 + 7.0 / 8.0 * 800.0 * 0.001;
    assert!(close(predict(&Algorithm::Ring, ar, p, n, &params), ring));
    // Rhd on a power of two: 2 log p alpha + the same bandwidth and reduction terms.
    let rhd = 6.0 + 2.0 * 7.0 / 8.0 * 800.0 * 0.01 + 7.0 / 8.0 * 800.0 * 0.001;
    assert!(close(predict(&Algorithm::Rhd, ar, p, n, &params), rhd));
    // Binomial tree: 2 log p (alpha + n beta) + log p n gamma.
    let tree = 6.0 * (1.0 + 8.0) + 3.0 * 800.0 * 0.001;
    assert!(close(predict(&Algorithm::Tree, ar, p, n, &params), tree));
    // Chain broadcast with k chunks: (p - 2 + k)(alpha + n/k beta).
    let chain = |k: usize| {
        predict_pipelined(
            &Algorithm::Ring,
            Collective::Broadcast { root: 0 },
            p,
            n,
            &params,
            k,
        )
    };
    assert!(close(chain(4), 10.0 * (1.0 + 2.0)));
    // Hierarchical 2x4 on equal tiers: ring RS over 2, ring AR over 4 on half, AG over 2.
    let hier = predict(&Algorithm::Hierarchical(vec![2, 4]), ar, p, n, &params);
    let rs2 = 1.0 + 0.5 * 800.0 * 0.011;
    let ag2 = 1.0 + 0.5 * 800.0 * 0.01;
    let ar4 = 6.0 + 2.0 * 0.75 * 400.0 * 0.01 + 0.75 * 400.0 * 0.001;
    assert!(close(hier, rs2 + ar4 + ag2));
    assert!(predict(
        &Algorithm::DoubleBinaryTree,
        Collective::AllGather,
        p,
        n,
        &params
    )
    .is_infinite());
}

#[test]
fn small_messages_at_many_ranks_take_a_logarithmic_algorithm() {
    for params in [
        CostParams::flat(LinkParams::TCP),
        CostParams::flat(LinkParams::SHM),
    ] {
        for p in [16, 64, 100, 256] {
            let (a, _) = model_choice(Collective::AllReduce, p, 8, &params, None);
            assert!(
                matches!(
                    a,
                    Algorithm::Tree | Algorithm::Rhd | Algorithm::DoubleBinaryTree
                ),
                "p={p}: {a}"
            );
        }
    }
}

#[test]
fn large_messages_take_the_ring() {
    let params = CostParams::flat(LinkParams::TCP);
    for p in [2, 4, 16, 64] {
        let (a, _) = model_choice(Collective::AllReduce, p, 256 * MIB, &params, None);
        assert_eq!(a, Algorithm::Ring, "p={p}");
    }
}

#[test]
fn broadcast_pipelines_large_messages() {
    let params = CostParams::flat(LinkParams::TCP);
    let (a, k) = model_choice(
        Collective::Broadcast { root: 0 },
        16,
        64 * MIB,
        &params,
        None,
    );
    assert!(k >= 8, "{a} with {k} chunks");
    let (_, k) = model_choice(Collective::Broadcast { root: 0 }, 16, 8, &params, None);
    assert_eq!(k, 1);
}

#[test]
fn a_hierarchy_with_a_slow_outer_tier_takes_hier() {
    let params = CostParams {
        tiers: vec![LinkParams::SHM, LinkParams::TCP],
        max_message_bytes: None,
    };
    let dims = [8, 8];
    let (a, _) = model_choice(Collective::AllReduce, 64, 64 * MIB, &params, Some(&dims));
    assert_eq!(a, Algorithm::Hierarchical(vec![8, 8]));
    // Dims that do not fit the rank count are not offered, nor predicted.
    let huge = Algorithm::Hierarchical(vec![1 << 32, 1 << 32, 16]);
    assert!(predict(&huge, Collective::AllReduce, 16, 1, &params).is_infinite());
    let (a, _) = model_choice(Collective::AllReduce, 60, 64 * MIB, &params, Some(&dims));
    assert!(!matches!(a, Algorithm::Hierarchical(_)));
}

#[test]
fn an_override_is_obeyed_when_it_applies() {
    let params = CostParams::flat(LinkParams::TCP);
    let ar = Collective::AllReduce;
    let big = 256 * MIB;
    let forced = |a: &str| Some(a.parse::<Algorithm>());
    assert_eq!(
        choose_with(forced("tree"), ar, 16, big, &params, None).0,
        Algorithm::Tree
    );
    assert_eq!(
        choose_with(forced("hier"), ar, 16, big, &params, Some(&[4, 4])).0,
        Algorithm::Hierarchical(vec![4, 4])
    );
    // Not applicable or not valid: the model decides.
    assert_eq!(
        choose_with(
            forced("dbtree"),
            Collective::AllGather,
            16,
            big,
            &params,
            None
        )
        .0,
        Algorithm::Ring
    );
    assert_eq!(
        choose_with(forced("hier"), ar, 16, big, &params, None).0,
        Algorithm::Ring
    );
    assert_eq!(
        choose_with(forced("bogus"), ar, 16, big, &params, None).0,
        Algorithm::Ring
    );
}

#[test]
fn bounded_messages_force_pipelining() {
    let params = CostParams::flat(LinkParams::SHM).with_max_message(MIB);
    let ar = Collective::AllReduce;
    let (k, _) = best_pipeline(&Algorithm::Ring, ar, 4, 64 * MIB, &params);
    assert_eq!(k, 16);
    assert!(message_bytes(&Algorithm::Ring, ar, 4, 64 * MIB, k) <= MIB);
    // Small messages need no cutting; huge ones get the deepest pipeline there is.
    assert_eq!(best_pipeline(&Algorithm::Ring, ar, 4, MIB, &params).0, 1);
    assert_eq!(
        best_pipeline(&Algorithm::Tree, ar, 4, 1 << 40, &params).0,
        256
    );
}

#[test]
fn binomial_height_matches_the_tree() {
    for p in 1..=300 {
        let tree = crate::algorithms::binomial_tree(p, 0);
        assert_eq!(binomial_height(p) as usize, tree.height(), "p={p}");
    }
}

#[test]
fn every_prediction_is_finite_where_supported() {
    let params = CostParams::flat(LinkParams::SHM);
    for a in Algorithm::all(Some(&[2, 3])) {
        for c in [
            Collective::AllReduce,
            Collective::ReduceScatter,
            Collective::AllGather,
            Collective::Broadcast { root: 0 },
            Collective::Reduce { root: 0 },
        ] {
            let t = predict(&a, c, 6, 1 << 16, &params);
            assert_eq!(t.is_finite(), a.supports(c), "{a} {c:?}");
            assert!(t >= 0.0);
        }
    }
}
