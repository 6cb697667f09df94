//! `oxcclUniqueId`: where the job's rank 0 serves its rendezvous store, and the job's secret.
//!
//! Layout of the 128 bytes: `b"OXID"`, a format version byte (1), the address length, 32 hex
//! characters of secret (16 random bytes), the store address as `ip:port` text, zeros.
//!
//! The address: `OXCCL_COMM_ID=host:port` when set (as `NCCL_COMM_ID`), else the interface that
//! `OXCCL_SOCKET_IFNAME` picks (NCCL's syntax; by default the first one up that is neither
//! loopback nor docker, loopback when there is no other) and a port the kernel chooses. As
//! NCCL's `ncclGetUniqueId` does, the port is held from the moment the id is made: the socket is
//! bound (without listening, so connecting ranks are refused and retry rather than wait on it)
//! with `SO_REUSEADDR`, which lets rank 0's store bind the same port, and nothing else can take
//! it in between. The hold ends when rank 0's `oxcclCommInitRank` with this id returns. So rank 0
//! must run on the host whose process made the id (NCCL has the same rule for the process that
//! serves its bootstrap root).

use crate::handle::{entry, Failure};
use crate::{oxcclResult_t, oxcclUniqueId, OXCCL_UNIQUE_ID_BYTES};
use oxccl_collectives::StoreAddr;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Mutex;

const MAGIC: &[u8; 4] = b"OXID";
const FORMAT: u8 = 1;
const SECRET_HEX: usize = 32;
const ADDR_AT: usize = 6 + SECRET_HEX;

/// Ports held for ids this process made, by store address.
static HELD: Mutex<Vec<(String, Socket)>> = Mutex::new(Vec::new());

/// What an id says.
pub(crate) struct JobId {
    pub store: String,
    pub secret: Vec<u8>,
}

impl JobId {
    pub fn store_addr(&self) -> StoreAddr {
        StoreAddr::Tcp(self.store.clone())
    }
}

/// Makes a new unique id: a fresh random secret, and the address where rank 0 will serve the
/// job's store: `OXCCL_COMM_ID=host:port` when set, else the interface `OXCCL_SOCKET_IFNAME`
/// picks and a port held from now until rank 0's `oxcclCommInitRank` with this id returns. Call
/// it in rank 0's process and give the id to every rank (MPI_Bcast, a file, ...).
///
/// # Safety
/// `uniqueId` is NULL (an error) or points to writable memory for one `oxcclUniqueId`.
#[no_mangle]
pub unsafe extern "C" fn oxcclGetUniqueId(uniqueId: *mut oxcclUniqueId) -> oxcclResult_t {
    entry("oxcclGetUniqueId", std::ptr::null_mut(), || {
        if uniqueId.is_null() {
            return Err(Failure::invalid("uniqueId is NULL"));
        }
        let id = make()?;
        // SAFETY: non-NULL, and the caller promises it points to an oxcclUniqueId.
        unsafe { uniqueId.write(id) };
        Ok(())
    })
}

fn make() -> Result<oxcclUniqueId, Failure> {
    let store = match std::env::var("OXCCL_COMM_ID") {
        Ok(addr) if !addr.is_empty() => addr,
        _ => hold_port()?,
    };
    if store.len() > OXCCL_UNIQUE_ID_BYTES - ADDR_AT {
        return Err(Failure::invalid(format!(
            "the store address {store:?} is longer than {} bytes",
            OXCCL_UNIQUE_ID_BYTES - ADDR_AT
        )));
    }
    use rand::RngCore;
    let mut secret = [0u8; SECRET_HEX / 2];
    rand::thread_rng().fill_bytes(&mut secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut raw = [0u8; OXCCL_UNIQUE_ID_BYTES];
    raw[..4].copy_from_slice(MAGIC);
    raw[4] = FORMAT;
    raw[5] = store.len() as u8;
    raw[6..ADDR_AT].copy_from_slice(hex.as_bytes());
    raw[ADDR_AT..ADDR_AT + store.len()].copy_from_slice(store.as_bytes());
    Ok(oxcclUniqueId {
        internal: raw.map(|b| b as std::ffi::c_char),
    })
}

/// Binds a port on the chosen interface and keeps it (see the module documentation).
fn hold_port() -> Result<String, Failure> {
    let system = |what: String| {
        move |e: std::io::Error| {
            Failure::new(oxcclResult_t::oxcclSystemError, format!("{what}: {e}"))
        }
    };
    let ifname = std::env::var("OXCCL_SOCKET_IFNAME").ok();
    let ip = oxccl_transport::tcp::iface::choose(ifname.as_deref())
        .map_err(|e| {
            Failure::new(
                oxcclResult_t::oxcclSystemError,
                format!("choosing the store's interface: {e}"),
            )
        })?
        .addr;
    let at = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(at), Type::STREAM, None)
        .map_err(system(format!("a socket for {ip}")))?;
    socket
        .set_reuse_address(true)
        .map_err(system("SO_REUSEADDR".into()))?;
    socket
        .bind(&at.into())
        .map_err(system(format!("binding a port on {ip}")))?;
    let bound = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| {
            Failure::new(
                oxcclResult_t::oxcclSystemError,
                "the held port has no address",
            )
        })?;
    let addr = bound.to_string();
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((addr.clone(), socket));
    Ok(addr)
}

/// Ends the hold on `store`'s port, if this process holds it (after rank 0's store is up).
pub(crate) fn release(store: &str) {
    HELD.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|(a, _)| a != store);
}

/// Reads an id; `oxcclInvalidArgument` for anything `oxcclGetUniqueId` did not make.
pub(crate) fn parse(id: &oxcclUniqueId) -> Result<JobId, Failure> {
    let raw = id.internal.map(|c| c as u8);
    let bad =
        |why: &str| Failure::invalid(format!("uniqueId is not one oxcclGetUniqueId made: {why}"));
    if &raw[..4] != MAGIC || raw[4] != FORMAT {
        return Err(bad("wrong magic or format"));
    }
    let len = usize::from(raw[5]);
    let store = raw
        .get(ADDR_AT..ADDR_AT + len)
        .and_then(|s| std::str::from_utf8(s).ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("no store address"))?;
    let secret = &raw[6..ADDR_AT];
    if !secret.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad("malformed secret"));
    }
    Ok(JobId {
        store: store.to_string(),
        secret: secret.to_vec(),
    })
}
