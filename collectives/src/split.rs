//! Making communicators out of a communicator: [`Communicator::split`] (MPI's `MPI_Comm_split`,
//! NCCL's `ncclCommSplit`) and [`Communicator::dup`].
//!
//! For now a child communicator is bootstrapped from scratch, through a new store: the ranks
//! exchange their (color, key) over the parent with an all-gather, the child's rank 0 (the member
//! with the smallest key, ties by parent rank) picks a rendezvous and a fresh random secret, a
//! second all-gather tells every member where its group meets, and the members join with
//! [`Communicator::init_with`] and the parent's options. Only the parent's public operations are
//! used; building the child on the parent's existing links (no new store, no new connections)
//! is left to the communicator-features work.
//!
//! The rendezvous: when the parent spans one host, a file in the temporary directory that the
//! child's rank 0 writes once it has bound an ephemeral port on 127.0.0.1 (race-free); across
//! hosts, `ip:port` on the interface `OXCCL_SOCKET_IFNAME` picks (as the TCP fabric does), with a
//! port the kernel handed out just before (another process could take it in between: then the
//! child's rank 0 gets [`Error::AddrInUse`] and the split fails cleanly on every member).

use crate::bootstrap::{Bootstrap, StoreAddr};
use crate::comm::{random_hex, Communicator};
use crate::error::{Error, Result};
use oxccl_kernels::DataType;
use std::net::{SocketAddr, TcpListener};

/// Bytes each rank contributes to the rendezvous all-gather: the child rank 0's announcement.
const SLOT: usize = 1024;
const KIND_FILE: u8 = 1;
const KIND_TCP: u8 = 2;
/// Hex characters of a child's secret (16 random bytes).
const SECRET_HEX: usize = 32;

impl Communicator {
    /// Splits the ranks into disjoint communicators, one per `color`: every rank of this
    /// communicator must call it (it is a collective). In each child, ranks are ordered by `key`,
    /// ties by their rank here. A rank that passes `None` (NCCL's `NCCL_SPLIT_NOCOLOR`) takes part
    /// in the exchange but joins no child and gets `Ok(None)`.
    ///
    /// The child has this communicator's [`crate::Options`]; it is bootstrapped through a new
    /// store (see the module documentation), and is independent of the parent afterwards (either
    /// can be dropped first).
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Communicator>> {
        const OP: &str = "split";
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

        let mut slot = [0u8; SLOT];
        let leads = my_color >= 0 && members.first() == Some(&me);
        if leads {
            self.announce(&mut slot)?;
        }
        let mut slots = vec![0u8; SLOT * size];
        self.all_gather_bytes(&slot, &mut slots, DataType::U8)?;
        if my_color < 0 {
            return Ok(None);
        }
        let leader = members[0];
        let (store, secret) =
            parse_slot(&slots[SLOT * leader..SLOT * (leader + 1)]).ok_or_else(|| {
                Error::Protocol {
                    op: OP,
                    peer: leader,
                    detail: "unreadable rendezvous announcement".into(),
                }
            })?;
        let rank = members
            .iter()
            .position(|&q| q == me)
            .expect("a rank is a member of its own color");
        let b = Bootstrap {
            launcher: "split",
            ..Bootstrap::new(rank, members.len(), store, secret)
        };
        tracing::debug!(
            parent_rank = me,
            color = my_color,
            rank,
            size = members.len(),
            "joining a split communicator"
        );
        Communicator::init_with(b, self.options().clone()).map(Some)
    }

    /// A new communicator over the same ranks, in the same order (a collective, like
    /// [`Communicator::split`]): calls on it do not interleave with calls on this one.
    pub fn dup(&self) -> Result<Communicator> {
        self.split(Some(0), self.rank() as i64)?
            .ok_or_else(|| Error::invalid("dup", "every rank passed a color, yet none joined"))
    }

    /// Fills the child rank 0's announcement: where its group meets, and the group's secret.
    fn announce(&self, slot: &mut [u8; SLOT]) -> Result<()> {
        let (kind, text) = if self.topology().hosts() == 1 {
            let path = std::env::temp_dir().join(format!("oxccl-split-{}.store", random_hex(8)));
            (KIND_FILE, path.to_string_lossy().into_owned())
        } else {
            let ifname = std::env::var("OXCCL_SOCKET_IFNAME").ok();
            let ip = oxccl_transport::tcp::iface::choose(ifname.as_deref())
                .map_err(|e| Error::net("choosing the split's store interface", e))?
                .addr;
            // The kernel's choice of a free port, released for the child's rank 0 to bind.
            let port = TcpListener::bind(SocketAddr::new(ip, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| Error::io(format!("finding a free port on {ip}"), e))?
                .port();
            (KIND_TCP, SocketAddr::new(ip, port).to_string())
        };
        let text = text.as_bytes();
        if 3 + SECRET_HEX + text.len() > SLOT {
            return Err(Error::invalid(
                "split",
                format!(
                    "the rendezvous {:?} is longer than {} bytes (set TMPDIR to a shorter path)",
                    String::from_utf8_lossy(text),
                    SLOT - 3 - SECRET_HEX
                ),
            ));
        }
        slot[0] = kind;
        slot[1..3].copy_from_slice(&(text.len() as u16).to_le_bytes());
        slot[3..3 + SECRET_HEX].copy_from_slice(random_hex(SECRET_HEX / 2).as_bytes());
        slot[3 + SECRET_HEX..3 + SECRET_HEX + text.len()].copy_from_slice(text);
        Ok(())
    }
}

fn parse_slot(slot: &[u8]) -> Option<(StoreAddr, Vec<u8>)> {
    let len = usize::from(u16::from_le_bytes([slot[1], slot[2]]));
    let text = slot.get(3 + SECRET_HEX..3 + SECRET_HEX + len)?;
    let text = String::from_utf8(text.to_vec()).ok()?;
    let secret = slot[3..3 + SECRET_HEX].to_vec();
    match slot[0] {
        KIND_FILE => Some((StoreAddr::File(text.into()), secret)),
        KIND_TCP => Some((StoreAddr::Tcp(text), secret)),
        _ => None,
    }
}
