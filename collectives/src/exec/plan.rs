//! What one rank needs to run a schedule: its program, the peers it talks to, and where the
//! epilogue (the division of Avg, the scale of PreMulSum) goes.
//!
//! The epilogue must be applied exactly once to each fully reduced block, by the rank that
//! completes the reduction, before it is forwarded. Which receive completes a block is a
//! property of the whole schedule, so it is found once per schedule by replaying all ranks'
//! programs symbolically (contribution counts travel with the messages, per-pair FIFO as on
//! the wire) and cached with the plan.

use crate::schedule::{Collective, Op, Schedule};
use std::collections::VecDeque;

pub(crate) struct Plan {
    pub schedule: Schedule,
    pub rank: usize,
    /// Peers this rank's program sends to or receives from, ascending.
    pub peers: Vec<usize>,
    /// Per op of this rank's program (flat index): its reduction completes its blocks.
    pub final_op: Vec<bool>,
    /// Per block: this rank must apply the epilogue at the end (no receive completed it here
    /// or upstream, e.g. one rank, or a schedule whose reductions mix partial and full blocks).
    pub epilogue_after: Vec<bool>,
}

#[derive(Clone, Copy, Default)]
struct State {
    count: u32,
    epi: bool,
}

impl Plan {
    pub fn new(schedule: Schedule, rank: usize) -> Result<Self, String> {
        let p = schedule.ranks;
        let b = schedule.blocks;
        if schedule.programs.len() != p || rank >= p {
            return Err(format!(
                "schedule has {} programs for {p} ranks",
                schedule.programs.len()
            ));
        }
        let prog = &schedule.programs[rank];
        let mut peers: Vec<usize> = prog
            .ops()
            .iter()
            .flat_map(|o| [o.send_to(), o.recv_from()])
            .flatten()
            .map(|r| r as usize)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        if peers.iter().any(|&q| q >= p || q == rank) {
            return Err(format!("rank {rank}'s program names an invalid peer"));
        }
        for o in prog.ops() {
            let end = match *o {
                Op::Copy { from, to } => from.end().max(to.end()),
                other => other.blocks().end(),
            };
            if end as usize > b {
                return Err(format!("rank {rank}'s program names block {end} of {b}"));
            }
        }
        let reduces = matches!(
            schedule.collective,
            Collective::AllReduce | Collective::ReduceScatter | Collective::Reduce { .. }
        );
        let (final_op, epilogue_after) = if reduces {
            annotate(&schedule, rank)?
        } else {
            (vec![false; prog.ops().len()], vec![false; b])
        };
        Ok(Self {
            schedule,
            rank,
            peers,
            final_op,
            epilogue_after,
        })
    }
}

/// Replays every rank's program; returns (final_op, epilogue_after) for `me`.
fn annotate(s: &Schedule, me: usize) -> Result<(Vec<bool>, Vec<bool>), String> {
    let p = s.ranks;
    let b = s.blocks;
    let full = p as u32;
    let mut state = vec![
        vec![
            State {
                count: 1,
                epi: false
            };
            b
        ];
        p
    ];
    let mut queues: Vec<VecDeque<Vec<State>>> = vec![VecDeque::new(); p * p];
    let mut step = vec![0usize; p];
    let mut posted = vec![false; p];
    let mut mixed = false;
    let mut final_flat: Vec<Vec<bool>> = s
        .programs
        .iter()
        .map(|pr| vec![false; pr.ops().len()])
        .collect();
    let mut step_base: Vec<usize> = vec![0; p];
    loop {
        let mut progress = false;
        let mut all_done = true;
        for r in 0..p {
            let prog = &s.programs[r];
            if step[r] >= prog.len() {
                continue;
            }
            all_done = false;
            let ops = prog.step(step[r]);
            if !posted[r] {
                for o in ops {
                    if let Op::Send { to, blocks } = *o {
                        let msg = state[r][blocks.range()].to_vec();
                        queues[r * p + to as usize].push_back(msg);
                    }
                }
                posted[r] = true;
                progress = true;
            }
            // The step completes when every receive has its message at the front, counting
            // several receives from one peer in order.
            let mut need = vec![0usize; p];
            let ready = ops.iter().all(|o| match o.recv_from() {
                Some(f) => {
                    let f = f as usize;
                    need[f] += 1;
                    queues[f * p + r].len() >= need[f]
                }
                None => true,
            });
            if !ready {
                continue;
            }
            for (i, o) in ops.iter().enumerate() {
                let flat = step_base[r] + i;
                match *o {
                    Op::Send { .. } => {}
                    Op::Copy { from, to } => {
                        let src: Vec<State> = state[r][from.range()].to_vec();
                        state[r][to.range()].copy_from_slice(&src);
                    }
                    other => {
                        let f = other.recv_from().expect("a receive") as usize;
                        let msg = queues[f * p + r].pop_front().expect("checked ready");
                        let blocks = other.blocks();
                        if msg.len() != blocks.len as usize {
                            return Err(format!(
                                "rank {r} receives {} blocks from {f}, which sent {}",
                                blocks.len,
                                msg.len()
                            ));
                        }
                        if other.reduces() {
                            let mut finals = 0;
                            for (k, m) in blocks.range().zip(&msg) {
                                let st = &mut state[r][k];
                                st.count += m.count;
                                if st.epi || m.epi {
                                    return Err(format!(
                                        "rank {r} reduces into an already finished block {k}"
                                    ));
                                }
                                finals += usize::from(st.count == full);
                            }
                            if finals == blocks.len as usize && finals > 0 {
                                final_flat[r][flat] = true;
                                for k in blocks.range() {
                                    state[r][k].epi = true;
                                }
                            } else if finals > 0 {
                                mixed = true;
                            }
                        } else {
                            state[r][blocks.range()].copy_from_slice(&msg);
                        }
                        if let Some(to) = other.send_to() {
                            let fwd = state[r][blocks.range()].to_vec();
                            queues[r * p + to as usize].push_back(fwd);
                        }
                    }
                }
            }
            step_base[r] += ops.len();
            step[r] += 1;
            posted[r] = false;
            progress = true;
        }
        if all_done {
            break;
        }
        if !progress {
            return Err("the schedule deadlocks (a receive no rank sends)".into());
        }
    }
    let ops = s.programs[me].ops().len();
    if mixed {
        // Some reductions complete only part of their blocks: apply the epilogue at the end.
        return Ok((vec![false; ops], vec![true; b]));
    }
    let after = state[me]
        .iter()
        .map(|st| st.count == full && !st.epi)
        .collect();
    Ok((std::mem::take(&mut final_flat[me]), after))
}
