//! The per-call choice of the ring writes' stores (`OXCCL_RING_NT=call`, the default;
//! `exec/stores.rs`): whichever kind of store each call's ring writes take, every collective
//! gets the same results. The choice's sequence is fixed by the count of calls of a kind and
//! size class (the first 5 alternate, ordinary first, then the faster with a try of the other
//! every 32nd), so repeating each call 4 times runs it with both kinds; on shm with 2 ranks and
//! with 4 (more ranks than this machine's cores: the choice is on there too), and with
//! `OXCCL_RING_NT=on` and `off` (one call each) for comparison. Reductions are checked on every element against
//! the reference (`common::check`: exact integer-valued inputs, float tolerance
//! `common::tolerance`), moved data bit for bit.

mod common;

use common::{all_reduce_sum_checked, on_ranks};
use oxccl_collectives::{DataType, LocalTransport, Options};
use oxccl_transport::stream::RingNt;

const DTYPES: [DataType; 4] = [DataType::F32, DataType::F64, DataType::BF16, DataType::I32];
/// Elements per call: below the choice's floor (64 KiB), at it, and over a ring's size.
const COUNTS: [usize; 3] = [5_000, 70_001, 600_000];
/// Each call repeated, so that both kinds of store are used (`exec/stores.rs`).
const REPEATS: u64 = 4;

fn run(ring_nt: RingNt, repeats: u64, ranks: usize) {
    let options = Options {
        ring_nt,
        ..Options::default()
    };
    on_ranks(ranks, LocalTransport::Shm, options, move |comm| {
        let (me, p) = (comm.rank(), comm.size());
        for dtype in DTYPES {
            for n in COUNTS {
                for round in 0..repeats {
                    let what = format!("{ring_nt:?} all-reduce {dtype:?} x{n} call {round}");
                    all_reduce_sum_checked(&comm, dtype, n, round * 1000 + n as u64, &what);
                }
            }
        }
        // All-gather: another kind of call, its own record; bytes differ per rank and call.
        let n = 300_000;
        for round in 0..repeats as usize {
            let byte =
                |r: usize, i: usize| ((i * 7 + r * 31 + round * 3 + i / 253) % 251) as u8 + 1;
            let mine: Vec<u8> = (0..n).map(|i| byte(me, i)).collect();
            let mut all = vec![0u8; n * p];
            comm.all_gather_bytes(&mine, &mut all, DataType::U8)
                .unwrap();
            for r in 0..p {
                assert!(
                    (0..n).all(|i| all[r * n + i] == byte(r, i)),
                    "{ring_nt:?} all-gather from {r}, call {round}"
                );
            }
        }
    });
}

#[test]
fn collectives_are_right_with_the_stores_chosen_per_call() {
    run(RingNt::Call, REPEATS, 2);
}

#[test]
fn collectives_are_right_with_the_stores_chosen_per_call_on_4_ranks() {
    run(RingNt::Call, REPEATS, 4);
}

#[test]
fn collectives_are_right_with_fixed_stores() {
    run(RingNt::On, 1, 2);
    run(RingNt::Off, 1, 2);
}
