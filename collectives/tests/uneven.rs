//! Gather, scatter and the uneven collectives on thread ranks: 1..=9 and 13 ranks, every dtype,
//! sizes 0, 1 and primes, even and uneven counts (zero for some ranks), parts packed and at
//! displacements in reverse rank order with gaps. Every element of every output is checked:
//! moved data bit for bit (random bytes), reductions on small integers (every dtype; exact,
//! but for a float average's one rounding: one unit in the last place), and on random floats
//! within a stated tolerance. Gaps between parts must stay untouched.
//! Then each algorithm forced in turn (pipelined, with tiny chunks), and bad counts.

mod common;

use common::{data, decode, expected, on_ranks};
use oxccl_collectives::{DataType, Error, LocalTransport, Options, Parts, ReduceOp};

const SIZES: [usize; 6] = [0, 1, 2, 7, 13, 131];
const GAP: u8 = 0xA5;

fn rank_counts() -> impl Iterator<Item = usize> {
    (1..=9).chain([13])
}

/// Random bytes, reproducible from (seed, rank, index).
fn bytes(seed: u64, rank: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let mut x = seed
                ^ (rank as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (i as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            x ^= x >> 31;
            x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
            (x >> 29) as u8
        })
        .collect()
}

/// Counts per rank for base size `s`: even, or uneven with every third rank at zero.
fn counts(s: usize, p: usize, uneven: bool) -> Vec<usize> {
    (0..p)
        .map(|q| match (uneven, q % 3) {
            (false, _) => s,
            (true, 1) => 0,
            (true, _) => s + (q * s) / 2 + q % 2,
        })
        .collect()
}

/// Displacements in reverse rank order with a one-element gap after each part; the buffer
/// length they need.
fn scattered(counts: &[usize]) -> (Vec<usize>, usize) {
    let mut d = vec![0; counts.len()];
    let mut at = 1;
    for q in (0..counts.len()).rev() {
        d[q] = at;
        at += counts[q] + 1;
    }
    (d, at)
}

fn packed_displs(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |at, &c| {
            *at += c;
            Some(*at - c)
        })
        .collect()
}

/// Checks `out` (elements of `es` bytes): part `q` at `displs[q]` equals `want(q)`, and every
/// byte outside the parts is still `GAP`.
fn check_parts(
    what: &str,
    out: &[u8],
    es: usize,
    counts: &[usize],
    displs: &[usize],
    want: impl Fn(usize) -> Vec<u8>,
) {
    let mut covered = vec![false; out.len()];
    for q in 0..counts.len() {
        let r = displs[q] * es..(displs[q] + counts[q]) * es;
        assert_eq!(out[r.clone()], want(q)[..], "{what}: part of rank {q}");
        covered[r].fill(true);
    }
    for (i, (&b, c)) in out.iter().zip(covered).enumerate() {
        assert!(
            c || b == GAP,
            "{what}: byte {i} outside every part was written"
        );
    }
}

/// Every moving collective once, at `s` and (un)even counts, packed or scattered, on `comm`.
fn moving_round(
    comm: &oxccl_collectives::Communicator,
    dtype: DataType,
    s: usize,
    uneven: bool,
    seed: u64,
) {
    let (p, me) = (comm.size(), comm.rank());
    let es = dtype.size();
    let c = counts(s, p, uneven);
    let (sd, slen) = scattered(&c);
    let tag = format!("p={p} rank={me} {dtype} s={s} uneven={uneven}");
    let mine = bytes(seed, me, c[me] * es);
    let root = (seed as usize) % p;

    // gather_v at displacements; plain gather at even counts.
    let mut out = vec![GAP; if me == root { slen * es } else { 0 }];
    comm.gather_v_bytes(&mine, &mut out, Parts::with_displs(&c, &sd), dtype, root)
        .unwrap_or_else(|e| panic!("gather_v {tag}: {e}"));
    if me == root {
        check_parts(&format!("gather_v {tag}"), &out, es, &c, &sd, |q| {
            bytes(seed, q, c[q] * es)
        });
    }
    if !uneven {
        let mut out = vec![GAP; if me == root { p * s * es } else { 0 }];
        comm.gather_bytes(&mine, &mut out, dtype, root).unwrap();
        if me == root {
            let want: Vec<u8> = (0..p).flat_map(|q| bytes(seed, q, s * es)).collect();
            assert_eq!(out, want, "gather {tag}");
        }
    }

    // scatter_v from displacements; plain scatter at even counts.
    let src = bytes(seed ^ 1, root, slen * es);
    let input = if me == root { src.clone() } else { Vec::new() };
    let mut got = vec![GAP; c[me] * es];
    comm.scatter_v_bytes(&input, Parts::with_displs(&c, &sd), &mut got, dtype, root)
        .unwrap_or_else(|e| panic!("scatter_v {tag}: {e}"));
    assert_eq!(
        got,
        src[sd[me] * es..(sd[me] + c[me]) * es],
        "scatter_v {tag}"
    );
    if !uneven {
        let src = bytes(seed ^ 2, root, p * s * es);
        let input = if me == root { src.clone() } else { Vec::new() };
        let mut got = vec![GAP; s * es];
        comm.scatter_bytes(&input, &mut got, dtype, root).unwrap();
        assert_eq!(got, src[me * s * es..(me + 1) * s * es], "scatter {tag}");
    }

    // all_gather_v, packed and scattered.
    let mut out = vec![GAP; c.iter().sum::<usize>() * es];
    comm.all_gather_v_bytes(&mine, &mut out, Parts::packed(&c), dtype)
        .unwrap_or_else(|e| panic!("all_gather_v {tag}: {e}"));
    let want: Vec<u8> = (0..p).flat_map(|q| bytes(seed, q, c[q] * es)).collect();
    assert_eq!(out, want, "all_gather_v packed {tag}");
    if !uneven {
        // The even all-gather runs the same schedules (direct too, when forced).
        let mut even = vec![GAP; p * s * es];
        comm.all_gather_bytes(&mine, &mut even, dtype).unwrap();
        assert_eq!(even, want, "all_gather {tag}");
    }
    let mut out = vec![GAP; slen * es];
    comm.all_gather_v_bytes(&mine, &mut out, Parts::with_displs(&c, &sd), dtype)
        .unwrap();
    check_parts(&format!("all_gather_v {tag}"), &out, es, &c, &sd, |q| {
        bytes(seed, q, c[q] * es)
    });

    // all_to_all_v: rank r sends a(r, q) elements to q, from scattered displacements, and
    // receives packed.
    let a = |r: usize, q: usize| -> usize {
        if uneven && (r + 2 * q) % 4 == 3 {
            0
        } else if uneven {
            s + (r * 3 + q * 5) % (s + 2)
        } else {
            s
        }
    };
    let sc: Vec<usize> = (0..p).map(|q| a(me, q)).collect();
    let (sdv, sl) = scattered(&sc);
    let rc: Vec<usize> = (0..p).map(|q| a(q, me)).collect();
    let rd = packed_displs(&rc);
    // What rank r sends q: the bytes of rank r's input at its displacement for q.
    let input_of = |r: usize| {
        bytes(
            seed ^ 3,
            r,
            scattered(&(0..p).map(|q| a(r, q)).collect::<Vec<_>>()).1 * es,
        )
    };
    let input = input_of(me);
    let mut out = vec![GAP; rc.iter().sum::<usize>() * es];
    comm.all_to_all_v_bytes(
        &input[..sl * es],
        Parts::with_displs(&sc, &sdv),
        &mut out,
        Parts::packed(&rc),
        dtype,
    )
    .unwrap_or_else(|e| panic!("all_to_all_v {tag}: {e}"));
    check_parts(&format!("all_to_all_v {tag}"), &out, es, &rc, &rd, |q| {
        let theirs: Vec<usize> = (0..p).map(|d| a(q, d)).collect();
        let (d, _) = scattered(&theirs);
        input_of(q)[d[me] * es..(d[me] + theirs[me]) * es].to_vec()
    });
}

/// reduce_scatter_v with exact small-integer data (every op's result is exact in `dtype`).
fn reduce_round(
    comm: &oxccl_collectives::Communicator,
    dtype: DataType,
    s: usize,
    uneven: bool,
    op: ReduceOp,
    seed: u64,
) {
    let (p, me) = (comm.size(), comm.rank());
    let es = dtype.size();
    let c = counts(s, p, uneven);
    let total: usize = c.iter().sum();
    let input = data(dtype, op, seed, me, total);
    let mut out = vec![GAP; c[me] * es];
    comm.reduce_scatter_v_bytes(&input, &mut out, &c, dtype, op)
        .unwrap_or_else(|e| panic!("reduce_scatter_v p={p} {dtype} {op:?} s={s}: {e}"));
    let lo: usize = c[..me].iter().sum();
    for (j, chunk) in out.chunks_exact(es).enumerate() {
        let want = expected(dtype, op, seed, p, lo + j);
        let got = decode(dtype, chunk);
        // Sums, maxima and integer results are exact; a float average divides once, so it
        // may round differently from the f64 reference by one unit in the last place.
        let ulp = match dtype {
            DataType::F16 => 2f64.powi(-10),
            DataType::BF16 => 2f64.powi(-7),
            DataType::F32 => 2f64.powi(-23),
            DataType::F64 => 2f64.powi(-52),
            _ => 0.0,
        };
        assert!(
            (got - want).abs() <= ulp * want.abs(),
            "reduce_scatter_v p={p} rank {me} {dtype} {op:?} s={s} element {j}: {got} vs {want}"
        );
    }
}

#[test]
fn every_collective_every_dtype_every_rank_count() {
    for p in rank_counts() {
        on_ranks(p, LocalTransport::Memory, Options::default(), move |comm| {
            for (di, &dtype) in DataType::ALL.iter().enumerate() {
                // Every size for a 1- and a 4-byte type; 0, 1 and a prime for the others (the
                // byte paths do not depend on the type beyond its size).
                let full = matches!(dtype, DataType::U8 | DataType::F32);
                for (si, &s) in SIZES.iter().enumerate() {
                    if !full && ![0, 1, 131].contains(&s) {
                        continue;
                    }
                    let seed = (p * 1000 + di * 10 + si) as u64;
                    for uneven in [false, true] {
                        moving_round(&comm, dtype, s, uneven, seed);
                    }
                    reduce_round(&comm, dtype, s, true, ReduceOp::Sum, seed);
                }
                reduce_round(&comm, dtype, 13, true, ReduceOp::Max, di as u64);
                reduce_round(&comm, dtype, 7, false, ReduceOp::Avg, di as u64);
            }
        });
    }
}

/// Random floats in [-1, 1): f32 results within 1e-5 of the f64 sum in absolute terms (each
/// of up to 13 terms rounds once at 2^-24 relative; the algorithms add in different orders),
/// f64 within 1e-12.
#[test]
fn random_floats_reduce_within_tolerance() {
    for p in [2, 5, 13] {
        on_ranks(p, LocalTransport::Memory, Options::default(), move |comm| {
            let me = comm.rank();
            let c = counts(997, p, true);
            let total: usize = c.iter().sum();
            let val = |r: usize, i: usize| {
                bytes(7, r * 1_000_003 + i, 2)
                    .iter()
                    .fold(0u32, |a, &b| a << 8 | b as u32) as f64
                    / 32768.0
                    - 1.0
            };
            let lo: usize = c[..me].iter().sum();
            let want: Vec<f64> = (0..c[me])
                .map(|j| (0..p).map(|r| val(r, lo + j)).sum())
                .collect();
            let x32: Vec<f32> = (0..total).map(|i| val(me, i) as f32).collect();
            let mut o32 = vec![0f32; c[me]];
            comm.reduce_scatter_v(&x32, &mut o32, &c, ReduceOp::Sum)
                .unwrap();
            for (j, (&g, &w)) in o32.iter().zip(&want).enumerate() {
                assert!(
                    (g as f64 - w).abs() <= 1e-5,
                    "f32 p={p} rank {me} element {j}: {g} vs {w}"
                );
            }
            let x64: Vec<f64> = (0..total).map(|i| val(me, i)).collect();
            let mut o64 = vec![0f64; c[me]];
            comm.reduce_scatter_v(&x64, &mut o64, &c, ReduceOp::Sum)
                .unwrap();
            for (j, (&g, &w)) in o64.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-12,
                    "f64 p={p} rank {me} element {j}: {g} vs {w}"
                );
            }
        });
    }
}

/// Each algorithm that implements these collectives, forced, with chunks small enough that
/// the ring pipelines; on shared-memory files too.
#[test]
fn every_algorithm_when_forced() {
    for algo in ["ring", "rhd", "tree", "direct"] {
        for p in [3, 6, 8] {
            let options = Options {
                algorithm: Some(algo.into()),
                chunk_bytes: 64,
                ..Options::default()
            };
            on_ranks(p, LocalTransport::Memory, options, move |comm| {
                for (si, &s) in [0usize, 1, 13, 131].iter().enumerate() {
                    let seed = (p * 100 + si) as u64;
                    moving_round(&comm, DataType::F32, s, true, seed);
                    moving_round(&comm, DataType::U8, s, false, seed);
                    reduce_round(&comm, DataType::I32, s, true, ReduceOp::Sum, seed);
                }
            });
        }
    }
    let options = Options::default();
    on_ranks(4, LocalTransport::Shm, options, |comm| {
        moving_round(&comm, DataType::F64, 4099, true, 9);
        reduce_round(&comm, DataType::F32, 4099, true, ReduceOp::Sum, 9);
    });
}

fn invalid(r: oxccl_collectives::Result<()>, what: &str) {
    match r {
        Err(Error::Invalid { .. }) => {}
        other => panic!("{what}: expected an invalid-argument error, got {other:?}"),
    }
}

#[test]
fn bad_counts_and_displacements_are_errors_that_leave_the_communicator_usable() {
    on_ranks(3, LocalTransport::Memory, Options::default(), |comm| {
        let me = comm.rank();
        let mut out = vec![0f32; 12];
        let mine = vec![me as f32; 2];
        // Too few counts, a sum that does not match, a part past the end, overlapping parts.
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::packed(&[2, 2])),
            "two counts",
        );
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::packed(&[2, 2, 2])),
            "sum 6 vs 12",
        );
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::with_displs(&[2, 2, 2], &[0, 4, 11])),
            "past the end",
        );
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::with_displs(&[2, 2, 2], &[0, 1, 6])),
            "overlap",
        );
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::with_displs(&[2, 2, 2], &[0, 2])),
            "two displacements",
        );
        invalid(
            comm.all_gather_v(&mine, &mut out, Parts::with_displs(&[3, 3, 3], &[0, 3, 6])),
            "input 2 vs count 3",
        );
        invalid(
            comm.all_gather_v(
                &mine,
                &mut out,
                Parts::with_displs(&[2, usize::MAX, 2], &[0, 2, 6]),
            ),
            "overflow",
        );
        invalid(comm.gather(&mine, &mut out, 3), "root 3");
        invalid(
            comm.scatter_v(&out, Parts::packed(&[2, 2]), &mut [0f32; 2], 0),
            "scatter counts",
        );
        invalid(
            comm.reduce_scatter_v(&out, &mut [0f32; 2], &[2, 2, 2], ReduceOp::Sum),
            "12 vs 6",
        );
        invalid(
            comm.all_to_all_v(
                &out[..6],
                Parts::packed(&[2, 2, 2]),
                &mut out.clone(),
                Parts::packed(&[3, 3, 3, 3]),
            ),
            "four recv counts",
        );
        invalid(
            comm.all_to_all_v(
                &out[..6],
                Parts::packed(&[2, 2, 2]),
                &mut [0f32; 9],
                Parts::packed(&[3, 3, 3]),
            ),
            "self 2 vs 3",
        );
        invalid(
            comm.reduce_scatter_v(
                &[1u8, 2, 3],
                &mut [0u8],
                &[1, 1, 1],
                ReduceOp::PreMulSum(0.5),
            ),
            "premulsum 0.5 on u8",
        );
        // Still usable: a good call on every rank.
        comm.all_gather_v(&mine, &mut out, Parts::with_displs(&[2, 2, 2], &[8, 0, 4]))
            .unwrap();
        // Rank 1's part at 0, rank 2's at 4, rank 0's at 8; the gaps keep what they held.
        assert_eq!(
            &out[..10],
            &[1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]
        );
    });
}

/// A rank's own part of an all-to-all is copied with streaming stores where the host's ranks
/// together move more than the cache holds (`exec/calls.rs`, `copy_own_part`). Claiming a huge
/// host here sends every own part of 4 KiB or more that way, at odd lengths and offsets.
#[test]
fn own_parts_are_exact_with_streaming_stores() {
    let options = Options {
        host_ranks: Some(1 << 30),
        ..Options::default()
    };
    on_ranks(3, LocalTransport::Memory, options, |comm| {
        let (p, me) = (comm.size(), comm.rank());
        for (si, &s) in [4099usize, 70_001].iter().enumerate() {
            moving_round(&comm, DataType::U8, s, true, si as u64);
            moving_round(&comm, DataType::F32, s, false, si as u64 + 7);
            let input = bytes(si as u64, me, p * s);
            let mut out = vec![GAP; p * s];
            comm.all_to_all_bytes(&input, &mut out, DataType::U8)
                .unwrap();
            for q in 0..p {
                let from = bytes(si as u64, q, p * s);
                assert_eq!(
                    out[q * s..(q + 1) * s],
                    from[me * s..(me + 1) * s],
                    "all_to_all s={s} rank {me}: part from {q}"
                );
            }
        }
    });
}
