//! RDMA over ibverbs: reliable-connected (RC) queue pairs, registered memory, RDMA WRITE WITH
//! IMMEDIATE and credit-based flow control, behind the crate's [`crate::Transport`] trait.
//!
//! Three layers, bottom up:
//! - [`verbs`]: a small verbs interface (device, protection domain, memory region with
//!   lkey/rkey, a completion queue shared by a queue pair's send and receive sides, the RC state
//!   machine RESET -> INIT -> RTR -> RTS (-> ERR), RDMA WRITE with or without immediate,
//!   zero-length receives, polling), and [`QpEndpoint`](verbs::QpEndpoint) /
//!   `ConnInfo` (`wire.rs`) exchanged as checked bytes. Two implementations:
//!   [`sim::SimVerbs`], an in-process model of RC semantics (always built; what the tests run
//!   on), and `sideway_verbs::SidewayVerbs` (feature `rdma`), rdma-core loaded at run time.
//! - `protocol`: the state machine, written once against the interface. Each side owns a
//!   ring of slots the peer writes into; a message goes out as one write-with-immediate per
//!   slot (header with tag and length, then payload); the receiver copies slots out and returns
//!   credits by RDMA-writing a counter, so a sender never overruns a slot nor an unposted
//!   receive. One extra slot is reserved for CLOSE.
//! - [`RdmaTransport`]: setup through a TCP socket (connection info, then a READY byte once the
//!   queue pair is in RTS), and the request types over the engine.
//!
//! Contracts beyond the crate's: messages are copied through the registered slots (one copy
//! each side; [`crate::Transport::register`] hands out plain memory), and views hand out copies
//! of what arrived since the last call. At most `slots` chunks are ever in flight towards a peer.
//! Errors: no device (including a kernel without RDMA support, ENOSYS) is
//! [`crate::Error::NotAvailable`]; a peer that closes (CLOSE) or dies (its queue pair gone,
//! flushed completions) is [`crate::Error::PeerClosed`]; a slot that fails its checks breaks the
//! connection ([`crate::Error::Broken`], naming the peer).
//!
//! Configuration: `OXCCL_IB_DEVICE` (device name, default the first), `OXCCL_IB_PORT`
//! (default 1), `OXCCL_IB_GID_INDEX` (default 0; RoCE needs the right one), `OXCCL_IB_SLOTS`
//! (default 16), `OXCCL_IB_SLOT_SIZE` (bytes, default 131072), `OXCCL_IB_SETUP_ADDR` (address
//! of the setup socket, default 127.0.0.1).
//!
//! ```
//! use oxccl_transport::rdma::{sim::SimVerbs, RdmaConfig, RdmaTransport};
//! use oxccl_transport::wait;
//!
//! # fn main() -> oxccl_transport::Result<()> {
//! // Two ranks on one simulated fabric; on a NIC: `oxccl_transport::rdma::from_env()?`.
//! let fabric = SimVerbs::new();
//! let a = RdmaTransport::new(fabric.clone(), RdmaConfig::default());
//! let b = RdmaTransport::new(fabric, RdmaConfig::default());
//! let deadline = wait::Deadline::after(std::time::Duration::from_secs(10));
//! let (ca, cb) = wait::connect_pair(&a, &b, deadline)?;
//! wait::send(&ca, 1, b"written with immediate", deadline)?;
//! let mut buf = [0u8; 32];
//! let n = wait::recv(&cb, 1, &mut buf, deadline)?;
//! assert_eq!(&buf[..n], b"written with immediate");
//! # Ok(())
//! # }
//! ```

mod connection;
// The protocol engine and its wire format are internals; tests of them and model studies
// reach them with the `testing` feature.
#[cfg(feature = "testing")]
pub mod protocol;
#[cfg(not(feature = "testing"))]
mod protocol;
#[cfg(feature = "rdma")]
pub mod sideway_verbs;
pub mod sim;
mod transport;
pub mod verbs;
#[cfg(feature = "testing")]
pub mod wire;
#[cfg(not(feature = "testing"))]
mod wire;

pub use protocol::ProtoConfig;

pub use connection::{RdmaConnection, RdmaRecv, RdmaSend, RdmaView};
pub use transport::{RdmaAddress, RdmaConfig, RdmaListener, RdmaPending, RdmaTransport};

/// The transport on a real NIC, configured from `OXCCL_IB_*` (device, port, GID index, ring
/// geometry). Without a device this is [`crate::Error::NotAvailable`] ("no RDMA device"), also
/// where the kernel has no RDMA support at all (ENOSYS).
#[cfg(feature = "rdma")]
pub fn from_env() -> crate::Result<RdmaTransport<sideway_verbs::SidewayVerbs>> {
    use verbs::Verbs as _;
    let config = RdmaConfig::from_env()?;
    let verbs = sideway_verbs::SidewayVerbs::from_env()?;
    verbs
        .open(config.device.as_deref())
        .map_err(|e| crate::Error::NotAvailable {
            transport: "rdma",
            reason: e.to_string(),
        })?;
    Ok(RdmaTransport::new(verbs, config))
}
