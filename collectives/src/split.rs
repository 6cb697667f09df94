//! Making communicators out of a communicator: [`Communicator::split`] (MPI's `MPI_Comm_split`,
//! NCCL's `ncclCommSplit`) and [`Communicator::dup`].
//!
//! ## A child is built on its parent, not bootstrapped again
//! No store, no rendezvous file, no launcher environment: the parent's links carry everything
//! the members need to meet. Two all-gathers over the parent: the first tells every rank each
//! rank's (color, key), so every member knows its child's members, ranks and the child's map
//! (its ranks' part of the parent's [`Topology`], from which the child tunes itself); the
//! second carries, from every member, the addresses of fresh listeners of exactly the fabrics
//! its parent links to its fellow members use, and the child's session (from the child's rank
//! 0, to refuse strangers). The members then connect pairwise (the higher child rank connects,
//! as at bootstrap) and the listeners close.
//!
//! Why a fresh connection of the same fabric per pair instead of sharing the parent's stream:
//! a link is one ordered byte stream per direction that the executor writes into and reduces
//! straight out of (the shared-memory ring itself). Two communicators used at the same time
//! from different threads on one stream would need a lock on every write and a demultiplexer
//! (a thread, or a shared lock on every read) that copies each frame out of the ring into the
//! right communicator's queue: a lock and a copy on the hot path, and the end of the zero-copy
//! receive. With its own ring pair (shm, loopback) or its own proxied connection (TCP, RDMA)
//! per pair, a child runs exactly as fast as its parent, and the parent and any number of
//! children run on different threads with nothing shared but the process. The parent's links
//! are what made this cheap: the addresses travel over them (no store, nothing in the
//! environment), and the fabric of each pair is the one the parent already chose for it.
//!
//! Thread ranks (from [`Communicator::local_with`]) connect their children over the same local
//! transport, except the RDMA model, whose simulated fabric is private to the parent's links:
//! those children use in-memory rings.

use crate::comm::{random_hex, Communicator, Origin};
use crate::error::{Error, Result};
use crate::link::connect::{self, Endpoint};
use crate::link::LinkKind;
use crate::map::Topology;
use crate::options::LocalTransport;
use oxccl_kernels::DataType;
use oxccl_transport::dynamic::DynAddress;
use oxccl_transport::stream::proxy_spin;
use oxccl_transport::tcp::{Tcp, TcpConfig};
use oxccl_transport::{Address as _, Listener as _};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Bytes each rank contributes to the address all-gather.
const SLOT: usize = 1024;
/// The first byte of a member's slot: its listeners are open (else it failed, or opted out).
const READY: u8 = 1;
const FAILED: u8 = 2;
/// Hex characters of a child's session (8 random bytes).
const SESSION_HEX: usize = 16;

/// The fabrics a child's link can use; a member's slot lists a listener address per fabric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildFabric {
    Loopback,
    Shm,
    LocalTcp,
    Net,
}

const FABRICS: [ChildFabric; 4] = [
    ChildFabric::Loopback,
    ChildFabric::Shm,
    ChildFabric::LocalTcp,
    ChildFabric::Net,
];

impl ChildFabric {
    /// The fabric a child's link uses where the parent's link has `kind`.
    fn for_link(kind: LinkKind, origin: Origin) -> Self {
        match (origin.local, kind) {
            (_, LinkKind::Memory) => ChildFabric::Loopback,
            (_, LinkKind::Shm) => ChildFabric::Shm,
            (Some(LocalTransport::Tcp), _) => ChildFabric::LocalTcp,
            (Some(_), _) => ChildFabric::Loopback,
            (None, _) => ChildFabric::Net,
        }
    }

    fn index(self) -> usize {
        FABRICS.iter().position(|&f| f == self).expect("listed")
    }
}

impl Communicator {
    /// Splits the ranks into disjoint communicators, one per `color`: every rank of this
    /// communicator must call it (it is a collective). In each child, ranks are ordered by `key`,
    /// ties by their rank here. A rank that passes `None` (NCCL's `NCCL_SPLIT_NOCOLOR`) takes part
    /// in the exchange but joins no child and gets `Ok(None)`.
    ///
    /// The child has this communicator's [`crate::Options`] and its members' part of the map;
    /// it is made over this communicator's links (see the module documentation), and is
    /// independent of the parent afterwards: either can be used from any thread while the other
    /// runs, and either can be dropped first.
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Communicator>> {
        const OP: &str = "split";
        // Counted on every rank, joining or not, so each child's name agrees across its ranks.
        let nth = self.inner.splits.fetch_add(1, Ordering::Relaxed);
        let size = self.size();
        let me = self.rank();
        let mut mine = [0u8; 16];
        mine[..8].copy_from_slice(&color.map_or(-1i64, i64::from).to_le_bytes());
        mine[8..].copy_from_slice(&key.to_le_bytes());
        let mut all = vec![0u8; 16 * size];
        self.all_gather_bytes(&mine, &mut all, DataType::U8)?;
        let field = |q: usize, at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&all[16 * q + at..16 * q + at + 8]);
            i64::from_le_bytes(b)
        };
        let my_color = field(me, 0);
        let mut members: Vec<usize> = (0..size).filter(|&q| field(q, 0) == my_color).collect();
        members.sort_by_key(|&q| (field(q, 8), q));
        let joins = my_color >= 0;
        let crank = members.iter().position(|&q| q == me).unwrap_or(0);
        let deadline = Instant::now() + self.options().timeout.min(Duration::from_secs(600));

        // Listeners for the fabrics this member's links to its fellow members use. A failure
        // here is announced in the slot, so that the other members fail at once too.
        let fabric_to = |q: usize| {
            let kind = self.transport_to(q).unwrap_or(LinkKind::Memory);
            ChildFabric::for_link(kind, self.inner.origin)
        };
        let mut endpoints: Vec<Option<Endpoint>> = FABRICS.iter().map(|_| None).collect();
        let mut slot = vec![0u8; SLOT];
        let mut failed = None;
        if joins {
            match self.listen_for(&members, &fabric_to, &mut endpoints) {
                Ok(()) => fill_slot(&mut slot, &endpoints).unwrap_or_else(|e| {
                    failed = Some(e);
                }),
                Err(e) => failed = Some(e),
            }
            slot[0] = if failed.is_some() { FAILED } else { READY };
        }
        let mut slots = vec![0u8; SLOT * size];
        self.all_gather_bytes(&slot, &mut slots, DataType::U8)?;
        if !joins {
            return Ok(None);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let slot_of = |q: usize| &slots[SLOT * q..SLOT * (q + 1)];
        if let Some(&q) = members.iter().find(|&&q| slot_of(q)[0] != READY) {
            return Err(Error::Protocol {
                op: OP,
                peer: q,
                detail: "it could not open listeners for the new communicator".into(),
            });
        }
        let parsed: Vec<(String, Vec<String>)> = members
            .iter()
            .map(|&q| {
                parse_slot(slot_of(q)).ok_or_else(|| Error::Protocol {
                    op: OP,
                    peer: q,
                    detail: "unreadable address announcement".into(),
                })
            })
            .collect::<Result<_>>()?;
        let session = format!("split-{}", parsed[0].0);
        let csize = members.len();
        let map = Topology::new(
            members
                .iter()
                .map(|&q| self.topology().ranks[q].clone())
                .collect(),
        );
        crate::comm::check_forced_algorithm(self.options(), csize, &map)?;
        tracing::debug!(
            parent_rank = me,
            color = my_color,
            rank = crank,
            size = csize,
            "connecting a split communicator over the parent's links"
        );
        let mut used: Vec<Endpoint> = Vec::new();
        let mut position = [usize::MAX; FABRICS.len()];
        for (i, e) in endpoints.into_iter().enumerate() {
            if let Some(e) = e {
                position[i] = used.len();
                used.push(e);
            }
        }
        let fabric_of = |c: usize| position[fabric_to(members[c]).index()];
        let address_of = |c: usize, _endpoint: usize| {
            let fabric = fabric_to(members[c]).index();
            let text = parsed[c].1.get(fabric).map_or("", String::as_str);
            DynAddress::from_text(text).map_err(|e| {
                Error::net(
                    format!(
                        "rank {} published no usable address for {:?}",
                        members[c], FABRICS[fabric]
                    ),
                    e,
                )
            })
        };
        let links = connect::connect_all(
            (crank, csize),
            &session,
            &mut used,
            &fabric_of,
            &address_of,
            deadline,
            // A member that dies while the child connects: its parent link says so at once,
            // instead of the child's connect deadline.
            &mut || {
                let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
                for &q in members.iter().filter(|&&q| q != me) {
                    if let Some(Err(e)) = state.engine.links[q].as_mut().map(|l| l.check_alive()) {
                        return Err(Error::PeerFailed {
                            op: OP,
                            peer: q,
                            source: e,
                        });
                    }
                }
                Ok(())
            },
        )?;
        drop(used);
        let (blame, idle, host_ranks, crowded) = {
            let state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let blame = state.engine.blame.child(&format!("{nth}.{my_color}"));
            let e = &state.engine;
            (blame, e.idle_policy, e.host_ranks, e.crowded())
        };
        let child = Communicator::build(
            crank,
            map,
            links,
            self.options().clone(),
            self.inner.origin,
            None,
            blame,
        );
        // The child shares the cores with all of the parent's ranks on this host, not only
        // with its own members: it waits as the parent does. (Counting only its members, two
        // 2-rank children of a 4-rank job on 2 cores spun, each taking the core its peer
        // needed: 0.3 GB/s against 8 at 64 KiB in some runs; bench/RESULTS.md, session 9.)
        // For the same reason its calls share the cache with the parent's ranks
        // (`calls::copy_own_part`), and its links pull large messages where the parent's do
        // (`Engine::set_crowded`). (Its per-call choice of stores, `exec/stores.rs`, follows
        // from the options it was built with, as the parent's did, with a record of its own
        // calls.)
        {
            let mut state = child.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            state.engine.idle_policy = idle;
            state.engine.host_ranks = host_ranks;
            state.engine.set_crowded(crowded);
        }
        Ok(Some(child))
    }

    /// A new communicator over the same ranks, in the same order (a collective, like
    /// [`Communicator::split`]): calls on it do not interleave with calls on this one.
    pub fn dup(&self) -> Result<Communicator> {
        self.split(Some(0), self.rank() as i64)?
            .ok_or_else(|| Error::invalid("dup", "every rank passed a color, yet none joined"))
    }

    /// Opens a listener of each fabric that a link to one of `members` uses.
    fn listen_for(
        &self,
        members: &[usize],
        fabric_to: &dyn Fn(usize) -> ChildFabric,
        endpoints: &mut [Option<Endpoint>],
    ) -> Result<()> {
        let me = self.rank();
        let options = self.options();
        let map = self.topology();
        let local = members.iter().filter(|&&q| map.same_host(q, me)).count();
        let net_peers = members
            .iter()
            .filter(|&&q| q != me && fabric_to(q) == ChildFabric::Net)
            .count();
        for &q in members.iter().filter(|&&q| q != me) {
            let f = fabric_to(q);
            if endpoints[f.index()].is_some() {
                continue;
            }
            let (transport, spin): (Box<dyn oxccl_transport::dynamic::DynTransport>, _) = match f {
                ChildFabric::Loopback => (
                    Box::new(oxccl_transport::loopback::Loopback::new()),
                    Duration::ZERO,
                ),
                ChildFabric::Shm => (Box::new(connect::shm_fabric(options)?), Duration::ZERO),
                ChildFabric::LocalTcp => (
                    Box::new(
                        Tcp::with_config(TcpConfig::loopback())
                            .map_err(|e| Error::net("tcp fabric", e))?,
                    ),
                    proxy_spin(members.len() * members.len()),
                ),
                ChildFabric::Net => (
                    connect::net_fabric(options.net, self.inner.origin.net_ip)?,
                    proxy_spin(local * (1 + net_peers)),
                ),
            };
            endpoints[f.index()] = Some(Endpoint::new(transport, options, spin)?);
        }
        Ok(())
    }
}

/// A member's announcement after the status byte: a 2-byte length, then `session\naddr addr addr addr` (one address per fabric of
/// [`FABRICS`], `-` where it has no listener). Every member writes a session; the child's rank
/// 0's is the one used.
fn fill_slot(slot: &mut [u8], endpoints: &[Option<Endpoint>]) -> Result<()> {
    let addrs: Vec<String> = endpoints
        .iter()
        .map(|e| {
            e.as_ref()
                .map_or("-".into(), |e| e.listener.address().to_text())
        })
        .collect();
    let text = format!("{}\n{}", random_hex(SESSION_HEX / 2), addrs.join(" "));
    let text = text.as_bytes();
    if 3 + text.len() > SLOT {
        return Err(Error::invalid(
            "split",
            format!("listener addresses longer than {} bytes", SLOT - 3),
        ));
    }
    slot[3..3 + text.len()].copy_from_slice(text);
    slot[1..3].copy_from_slice(&(text.len() as u16).to_le_bytes());
    Ok(())
}

fn parse_slot(slot: &[u8]) -> Option<(String, Vec<String>)> {
    let len = usize::from(u16::from_le_bytes([slot[1], slot[2]]));
    let text = std::str::from_utf8(slot.get(3..3 + len)?).ok()?;
    let (session, addrs) = text.split_once('\n')?;
    Some((
        session.to_string(),
        addrs.split(' ').map(str::to_string).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use crate::Communicator;

    /// What a communicator's engine took from its host: idle policy, host ranks, crowded.
    fn host_settings(c: &Communicator) -> (crate::options::IdlePolicy, usize, bool) {
        let state = c.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let e = &state.engine;
        (e.idle_policy, e.host_ranks, e.crowded())
    }

    #[test]
    fn a_split_child_waits_as_its_parent_does() {
        // Two 2-rank children of 4 ranks share the parent's cores: on a 2-core machine the
        // parent is oversubscribed and so are they, though each counts only 2 members (and
        // they share the cache with 4 ranks, and pull large messages as the parent does).
        let pairs: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = Communicator::local(4)
                .unwrap()
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let child = c.split(Some(c.rank() as u32 % 2), 0).unwrap().unwrap();
                        let dup = child.dup().unwrap();
                        (
                            host_settings(&c),
                            host_settings(&child),
                            host_settings(&dup),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for (parent, child, dup) in pairs {
            assert_eq!((parent.1, parent.2), (4, cores < 4));
            assert_eq!(child, parent);
            assert_eq!(dup, parent);
        }
    }
}
