//! The data of a checked call: a value per (rank, element) that every data type holds exactly,
//! the reference result of each collective, and the calls themselves, out of place and in place.

use super::Which;
use oxccl_collectives::{Communicator, DataType, Parts, ReduceOp};

/// A value unique-ish per (rank, index), exactly representable in every type and small enough
/// that sums over many ranks stay exact.
pub fn value(which: Which, op: ReduceOp, rank: usize, i: usize) -> f64 {
    if which.reduces() && op == ReduceOp::Prod {
        return 1.0 + ((rank + i) % 2) as f64;
    }
    ((rank * 131 + i * 7) % 13) as f64
}

fn encode(dtype: DataType, v: f64, out: &mut [u8]) {
    match dtype {
        DataType::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
        DataType::F64 => out.copy_from_slice(&v.to_le_bytes()),
        DataType::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        DataType::BF16 => out.copy_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
        DataType::I8 => out.copy_from_slice(&(v as i8).to_le_bytes()),
        DataType::U8 => out.copy_from_slice(&(v as u8).to_le_bytes()),
        DataType::I32 => out.copy_from_slice(&(v as i32).to_le_bytes()),
        DataType::U32 => out.copy_from_slice(&(v as u32).to_le_bytes()),
        DataType::I64 => out.copy_from_slice(&(v as i64).to_le_bytes()),
        DataType::U64 => out.copy_from_slice(&(v as u64).to_le_bytes()),
    }
}

fn decode(dtype: DataType, b: &[u8]) -> f64 {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[..N]);
        a
    }
    match dtype {
        DataType::F32 => f32::from_le_bytes(arr(b)) as f64,
        DataType::F64 => f64::from_le_bytes(arr(b)),
        DataType::F16 => half::f16::from_le_bytes(arr(b)).to_f64(),
        DataType::BF16 => half::bf16::from_le_bytes(arr(b)).to_f64(),
        DataType::I8 => i8::from_le_bytes(arr(b)) as f64,
        DataType::U8 => u8::from_le_bytes(arr(b)) as f64,
        DataType::I32 => i32::from_le_bytes(arr(b)) as f64,
        DataType::U32 => u32::from_le_bytes(arr(b)) as f64,
        DataType::I64 => i64::from_le_bytes(arr(b)) as f64,
        DataType::U64 => u64::from_le_bytes(arr(b)) as f64,
    }
}

pub fn fill(dtype: DataType, buf: &mut [u8], f: impl Fn(usize) -> f64) {
    let es = dtype.size();
    for (i, chunk) in buf.chunks_exact_mut(es).enumerate() {
        encode(dtype, f(i), chunk);
    }
}

/// An integer result as the integer type holds it: two's-complement wrap-around, as the
/// kernels' integer arithmetic (sums of many ranks, or `mulsum`'s scaling, can overflow int8).
fn wrap(dtype: DataType, v: f64) -> f64 {
    let n = v as i128;
    match dtype {
        DataType::I8 => n as i8 as f64,
        DataType::U8 => n as u8 as f64,
        DataType::I32 => n as i32 as f64,
        DataType::U32 => n as u32 as f64,
        DataType::I64 => n as i64 as f64,
        DataType::U64 => n as u64 as f64,
        _ => v,
    }
}

/// The reduction of every rank's value at index `i`, as the kernels compute it.
fn expected(which: Which, op: ReduceOp, dtype: DataType, p: usize, i: usize) -> f64 {
    let vals = (0..p).map(|r| value(which, op, r, i));
    let sum = wrap(dtype, vals.clone().sum());
    match op {
        ReduceOp::Sum => sum,
        ReduceOp::Prod => wrap(dtype, vals.product()),
        ReduceOp::Min => vals.fold(f64::INFINITY, f64::min),
        ReduceOp::Max => vals.fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Avg if dtype.is_float() => sum / p as f64,
        ReduceOp::Avg => (sum as i64 / p as i64) as f64,
        ReduceOp::PreMulSum(s) if dtype.is_float() => sum * s,
        ReduceOp::PreMulSum(s) => wrap(dtype, sum * s),
    }
}

/// Relative tolerance per type: the values are small integers, so only the half types' last
/// bits and the scaled forms can differ from the exact reference.
fn close(dtype: DataType, got: f64, want: f64) -> bool {
    let tol = match dtype {
        DataType::F16 => 1e-3,
        DataType::BF16 => 8e-3,
        DataType::F32 => 1e-6,
        DataType::F64 => 1e-12,
        _ => 0.0,
    };
    (got - want).abs() <= tol * want.abs().max(1.0)
}

/// The buffers of one size: `send` and `recv` as nccl-tests allocates them (the in-place form
/// works in `recv` alone), `scratch` for the copies the safe API needs in place.
pub struct Bufs {
    pub send: Vec<u8>,
    pub recv: Vec<u8>,
    scratch: Vec<u8>,
}

impl Bufs {
    /// Buffers of one call moving `size` bytes in all among `p` ranks, or an error when the
    /// memory is not there (instead of an abort).
    pub fn new(which: Which, size: usize, p: usize) -> anyhow::Result<Self> {
        let (send, recv) = match which {
            Which::AllReduce | Which::Broadcast | Which::Reduce | Which::AllToAll => (size, size),
            Which::ReduceScatter | Which::Scatter => (size, size / p),
            Which::AllGather | Which::Gather => (size / p, size),
            // A rank receives at most 3 times what it sends (weights 1..=3 of at least p).
            Which::AllToAllV => (size, 3 * size),
        };
        // In place, these work in a buffer of the full size.
        let recv = match which {
            Which::ReduceScatter | Which::AllGather | Which::Gather | Which::Scatter => size,
            _ => recv,
        };
        let zeroed = |n| crate::sizes::zeroed(n).map_err(anyhow::Error::msg);
        Ok(Self {
            send: zeroed(send)?,
            recv: zeroed(recv)?,
            scratch: zeroed(send.max(recv))?,
        })
    }
}

/// Element counts of the all-to-all-v sweep: what rank `r` sends each rank of `p` out of
/// its `n` elements, in proportion to the weights `1 + (r + q) % 3` (the rest stays unsent).
/// `bench/scripts/mpi_alltoallv.c` computes the same counts for its side.
pub fn a2av_counts(r: usize, p: usize, n: usize) -> Vec<usize> {
    let w = |q: usize| 1 + (r + q) % 3;
    let total: usize = (0..p).map(w).sum();
    (0..p).map(|q| n * w(q) / total).collect()
}

/// Displacements of `counts` packed from 0.
fn packed(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |at, &c| {
            *at += c;
            Some(*at - c)
        })
        .collect()
}

/// The all-to-all-v counts and displacements of rank `me` (elements): what it sends each rank
/// and where, what it receives from each and where.
fn a2av_parts(me: usize, p: usize, n: usize) -> [Vec<usize>; 4] {
    let send = a2av_counts(me, p, n);
    let recv: Vec<usize> = (0..p).map(|q| a2av_counts(q, p, n)[me]).collect();
    let (sd, rd) = (packed(&send), packed(&recv));
    [send, sd, recv, rd]
}

/// What one call does.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub which: Which,
    pub in_place: bool,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub root: usize,
}

/// One collective call. In place means nccl-tests' layout: the data starts in `recv` (at block
/// `rank` for all-gather) and the result ends there (at block `rank` for reduce-scatter). The
/// library has a true in-place form for all-reduce and broadcast; for the others its safe API
/// cannot alias input and output, so this times the one copy a caller makes.
pub fn call(comm: &Communicator, c: &Call, b: &mut Bufs) -> oxccl_collectives::Result<()> {
    let Call {
        which,
        in_place,
        dtype,
        op,
        root,
    } = *c;
    let (p, me) = (comm.size(), comm.rank());
    match (which, in_place) {
        (Which::AllReduce, false) => comm.all_reduce_bytes(&b.send, &mut b.recv, dtype, op),
        (Which::AllReduce, true) => comm.all_reduce_in_place_bytes(&mut b.recv, dtype, op),
        (Which::Broadcast, false) => {
            if me == root {
                b.recv.copy_from_slice(&b.send);
            }
            comm.broadcast_bytes(&mut b.recv, dtype, root)
        }
        (Which::Broadcast, true) => comm.broadcast_bytes(&mut b.recv, dtype, root),
        (Which::Reduce, false) => comm.reduce_bytes(&b.send, &mut b.recv, dtype, op, root),
        (Which::Reduce, true) => {
            let n = b.recv.len();
            b.scratch[..n].copy_from_slice(&b.recv);
            comm.reduce_bytes(&b.scratch[..n], &mut b.recv, dtype, op, root)
        }
        (Which::ReduceScatter, false) => {
            let n = b.recv.len() / p;
            comm.reduce_scatter_bytes(&b.send, &mut b.recv[..n], dtype, op)
        }
        (Which::ReduceScatter, true) => {
            let n = b.recv.len() / p;
            comm.reduce_scatter_bytes(&b.recv, &mut b.scratch[..n], dtype, op)?;
            b.recv[me * n..(me + 1) * n].copy_from_slice(&b.scratch[..n]);
            Ok(())
        }
        (Which::AllGather, false) => comm.all_gather_bytes(&b.send, &mut b.recv, dtype),
        (Which::AllGather, true) => {
            let n = b.recv.len() / p;
            b.scratch[..n].copy_from_slice(&b.recv[me * n..(me + 1) * n]);
            comm.all_gather_bytes(&b.scratch[..n], &mut b.recv, dtype)
        }
        (Which::AllToAll, false) => comm.all_to_all_bytes(&b.send, &mut b.recv, dtype),
        (Which::AllToAll, true) => {
            let n = b.recv.len();
            b.scratch[..n].copy_from_slice(&b.recv);
            comm.all_to_all_bytes(&b.scratch[..n], &mut b.recv, dtype)
        }
        (Which::Gather, false) => comm.gather_bytes(&b.send, &mut b.recv, dtype, root),
        (Which::Gather, true) => {
            let n = b.recv.len() / p;
            b.scratch[..n].copy_from_slice(&b.recv[me * n..(me + 1) * n]);
            comm.gather_bytes(&b.scratch[..n], &mut b.recv, dtype, root)
        }
        (Which::Scatter, false) => {
            let n = b.recv.len() / p;
            comm.scatter_bytes(&b.send, &mut b.recv[..n], dtype, root)
        }
        (Which::Scatter, true) => {
            let n = b.recv.len() / p;
            comm.scatter_bytes(&b.recv, &mut b.scratch[..n], dtype, root)?;
            b.recv[me * n..(me + 1) * n].copy_from_slice(&b.scratch[..n]);
            Ok(())
        }
        (Which::AllToAllV, in_place) => {
            let es = dtype.size();
            let [sc, sd, rc, rd] = a2av_parts(me, p, b.send.len() / es);
            let send = Parts::with_displs(&sc, &sd);
            let recv = Parts::with_displs(&rc, &rd);
            let out = rc.iter().sum::<usize>() * es;
            if in_place {
                let n = b.send.len();
                b.scratch[..n].copy_from_slice(&b.recv[..n]);
                comm.all_to_all_v_bytes(&b.scratch[..n], send, &mut b.recv[..out], recv, dtype)
            } else {
                comm.all_to_all_v_bytes(&b.send, send, &mut b.recv[..out], recv, dtype)
            }
        }
    }
}

/// Fills the inputs, runs one call and counts the wrong elements of this rank's result.
pub fn check(comm: &Communicator, c: &Call, b: &mut Bufs) -> anyhow::Result<u64> {
    let Call {
        which,
        in_place,
        dtype,
        op,
        root,
    } = *c;
    let (p, me, es) = (comm.size(), comm.rank(), dtype.size());
    let mine = |i: usize| value(which, op, me, i);
    fill(dtype, &mut b.recv, |_| 0.0);
    fill(dtype, &mut b.send, mine);
    if in_place {
        match which {
            Which::AllGather | Which::Gather => {
                let n = b.recv.len() / p;
                fill(dtype, &mut b.recv[me * n..(me + 1) * n], mine);
            }
            _ => fill(dtype, &mut b.recv, mine),
        }
    }
    call(comm, c, b)?;
    let out: &[u8] = match (which, in_place) {
        (Which::ReduceScatter, true) => {
            let n = b.recv.len() / p;
            &b.recv[me * n..(me + 1) * n]
        }
        (Which::ReduceScatter, false) | (Which::Scatter, false) => &b.recv[..b.recv.len() / p],
        (Which::Scatter, true) => {
            let n = b.recv.len() / p;
            &b.recv[me * n..(me + 1) * n]
        }
        (Which::Reduce | Which::Gather, _) if me != root => return Ok(0),
        (Which::AllToAllV, _) => {
            let [_, _, rc, rd] = a2av_parts(me, p, b.send.len() / es);
            // Part q came from q's send buffer at q's displacement for me.
            let mut wrong = 0;
            for q in 0..p {
                let at = a2av_parts(q, p, b.send.len() / es)[1][me];
                for j in 0..rc[q] {
                    let i = rd[q] + j;
                    let got = decode(dtype, &b.recv[i * es..(i + 1) * es]);
                    if !close(dtype, got, value(which, op, q, at + j)) {
                        wrong += 1;
                    }
                }
            }
            return Ok(wrong);
        }
        _ => &b.recv,
    };
    let n_out = out.len() / es;
    let block = (b.recv.len() / es / p).max(1);
    let mut wrong = 0;
    for i in 0..n_out {
        let want = match which {
            Which::AllReduce | Which::Reduce => expected(which, op, dtype, p, i),
            Which::ReduceScatter => expected(which, op, dtype, p, me * n_out + i),
            Which::AllGather | Which::Gather => value(which, op, i / block, i % block),
            Which::Scatter => value(which, op, root, me * n_out + i),
            Which::AllToAllV => unreachable!("checked above"),
            Which::Broadcast => value(which, op, root, i),
            Which::AllToAll => value(which, op, i / block, me * block + i % block),
        };
        if !close(dtype, decode(dtype, &out[i * es..(i + 1) * es]), want) {
            wrong += 1;
        }
    }
    Ok(wrong)
}
