//! RDMA over ibverbs: reliable-connected queue pairs, registered memory, RDMA WRITE WITH
//! IMMEDIATE and credit-based flow control.
//!
//! The protocol is written once against a small verbs interface ([`verbs`]), so it runs here
//! against an in-process model of RC semantics ([`sim`]) and, with the `rdma` cargo feature, on a
//! real NIC through rdma-core.

mod connection;
pub mod protocol;
pub mod sim;
mod transport;
pub mod verbs;
pub mod wire;

pub use connection::{RdmaConnection, RdmaRecv, RdmaSend, RdmaView};
pub use transport::{RdmaAddress, RdmaConfig, RdmaListener, RdmaPending, RdmaTransport};
