//! RDMA over ibverbs: reliable-connected queue pairs, registered memory, RDMA WRITE WITH
//! IMMEDIATE and credit-based flow control.
//!
//! The protocol is written once against a small verbs interface ([`verbs`]), so it runs here
//! against an in-process model of RC semantics ([`sim`]) and, with the `rdma` cargo feature, on a
//! real NIC through rdma-core.

mod connection;
pub mod protocol;
#[cfg(feature = "rdma")]
pub mod sideway_verbs;
pub mod sim;
mod transport;
pub mod verbs;
pub mod wire;

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
