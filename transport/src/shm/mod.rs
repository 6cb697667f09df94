//! `shm`: shared memory between ranks on one node (processes or threads).
//!
//! A connection is one file in a listener's directory under `OXCCL_SHM_DIR` (default
//! `/dev/shm`), mapped by both ends with `memmap2` and unlinked as soon as both have it
//! mapped, so nothing is left behind even if a rank crashes later. It holds two
//! single-producer single-consumer byte rings (one per direction, `OXCCL_RING_BYTES`
//! each, default 1 MiB) with cache-line-separated head and tail counters (`ring.rs` has the
//! layout). Sends copy into the ring, receives copy out of it — or, with `irecv_view`, hand
//! out slices of the ring itself that are given back to the sender when dropped (zero-copy).
//!
//! Setup is a file handshake: `connect` creates and initialises the file under a temporary
//! name and renames it into the listener's directory; `poll_accept` finds it, checks its header,
//! maps it, unlinks it and marks it accepted; the dialer's pending connection sees the mark.
//! The address carries the boot id, so a connect from another machine is an error, not a hang.
//!
//! Peer death: `close` or drop sets a flag in the file; a process that dies without either is
//! noticed through `/proc/<pid>` within about 100 ms of a receive waiting on it.

pub(crate) mod cma;
mod conn;
mod requests;
mod ring;
mod stream;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use conn::ShmConnection;
use conn::NAME;
pub use requests::{ShmRecv, ShmSend, ShmView};
use ring::{Mapping, STATE_ACCEPTED};

use crate::api::{Address, Listener, PendingConnection, Setup, Transport};
use crate::error::{Error, Result};
use crate::region::HostRegion;

/// Default ring size per direction: the stream face's, one size for every ring
/// (`OXCCL_RING_BYTES`).
pub const DEFAULT_RING_BYTES: usize = crate::stream::DEFAULT_RING_BYTES;
/// Default size from which messages go by single-copy rendezvous: off (0). On the machine
/// this was tuned on (a 2-vCPU KVM guest), `process_vm_readv` moved 3-4 GB/s while the ring's
/// two pipelined copies moved 6-11 GB/s (`bench/results/transport.md`); turn it on with
/// `OXCCL_SHM_CMA_MIN` where page pinning is cheap.
pub const DEFAULT_CMA_MIN: usize = 0;

/// Configuration of the shared-memory transport.
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// Directory for connection files (`OXCCL_SHM_DIR`; default `/dev/shm`, else the temp dir).
    pub dir: PathBuf,
    /// Bytes per ring and direction, a power of two from 4 KiB to 1 GiB
    /// (`OXCCL_RING_BYTES`, default [`DEFAULT_RING_BYTES`]).
    pub ring_bytes: usize,
    /// Messages of at least this many bytes are copied once, by the receiver, straight out of
    /// the sender's memory (`process_vm_readv`) instead of twice through the ring, when the
    /// two processes allow it (`OXCCL_SHM_CMA_MIN`, bytes; default 0: off).
    pub cma_min: usize,
    /// Stream-face messages of at least this many bytes are copied once, by the receiver,
    /// straight out of the sender's memory (`OXCCL_SINGLE_COPY_MIN`, bytes; 0: off; default
    /// [`crate::stream::DEFAULT_SINGLE_COPY_MIN`]). The two ends agree at connect on the larger of their
    /// values (off if either is off).
    pub single_copy_min: usize,
}

impl Default for ShmConfig {
    fn default() -> Self {
        let dev_shm = Path::new("/dev/shm");
        ShmConfig {
            dir: if dev_shm.is_dir() {
                dev_shm.to_path_buf()
            } else {
                std::env::temp_dir()
            },
            ring_bytes: DEFAULT_RING_BYTES,
            cma_min: DEFAULT_CMA_MIN,
            single_copy_min: crate::stream::DEFAULT_SINGLE_COPY_MIN,
        }
    }
}

impl ShmConfig {
    /// Defaults overridden by `OXCCL_SHM_DIR`, `OXCCL_RING_BYTES`, `OXCCL_SHM_CMA_MIN` and
    /// `OXCCL_SINGLE_COPY_MIN`.
    pub fn from_env() -> Result<Self> {
        let mut c = ShmConfig::default();
        if let Ok(d) = std::env::var("OXCCL_SHM_DIR") {
            c.dir = PathBuf::from(d);
        }
        c.ring_bytes = crate::stream::ring_bytes_from_env()?;
        if let Ok(v) = std::env::var("OXCCL_SHM_RING_BYTES") {
            // One ring size for every ring now; a value that would be ignored is an error.
            return Err(Error::Config {
                var: "OXCCL_SHM_RING_BYTES",
                value: v,
                reason: "replaced by OXCCL_RING_BYTES (one size for every ring)".into(),
            });
        }
        if let Ok(v) = std::env::var("OXCCL_SHM_CMA_MIN") {
            c.cma_min = v.trim().parse().map_err(|_| Error::Config {
                var: "OXCCL_SHM_CMA_MIN",
                value: v.clone(),
                reason: "expected a number of bytes (0: off)".into(),
            })?;
        }
        c.single_copy_min = crate::stream::single_copy_min_from_env()?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        crate::stream::check_ring_bytes(self.ring_bytes)
    }
}

/// The shared-memory transport.
#[derive(Debug, Clone)]
pub struct Shm {
    config: ShmConfig,
}

impl Shm {
    /// With [`ShmConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Ok(Shm {
            config: ShmConfig::from_env()?,
        })
    }

    /// With an explicit configuration.
    pub fn with_config(config: ShmConfig) -> Result<Self> {
        config.validate()?;
        Ok(Shm { config })
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{t:08x}", std::process::id())
}

/// Where a shared-memory listener is: its host's boot id and its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmAddress {
    boot_id: String,
    dir: PathBuf,
}

impl std::fmt::Display for ShmAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shm:{}", self.dir.display())
    }
}

const ADDR_MAGIC: &[u8; 4] = b"oxsm";

impl Address for ShmAddress {
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = ADDR_MAGIC.to_vec();
        v.push(self.boot_id.len() as u8);
        v.extend_from_slice(self.boot_id.as_bytes());
        v.extend_from_slice(self.dir.as_os_str().as_bytes());
        v
    }
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| Error::BadAddress {
            transport: NAME,
            reason: reason.to_string(),
        };
        let rest = bytes
            .strip_prefix(&ADDR_MAGIC[..])
            .ok_or_else(|| bad("missing \"oxsm\" prefix"))?;
        let (&n, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if rest.len() < n as usize {
            return Err(bad("truncated boot id"));
        }
        let boot_id =
            std::str::from_utf8(&rest[..n as usize]).map_err(|_| bad("boot id is not UTF-8"))?;
        let dir = &rest[n as usize..];
        if dir.first() != Some(&b'/') || dir.contains(&0) {
            return Err(bad("directory must be an absolute path without NUL"));
        }
        Ok(ShmAddress {
            boot_id: boot_id.to_string(),
            dir: PathBuf::from(OsString::from_vec(dir.to_vec())),
        })
    }
}

/// A listening directory; removed (with any unaccepted files) on drop.
pub struct ShmListener {
    addr: ShmAddress,
    cma_min: usize,
    single_copy_min: usize,
}

impl Drop for ShmListener {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.addr.dir);
    }
}

fn open_mapping(path: &Path) -> std::result::Result<(Mapping, u64), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let flen = file.metadata().map_err(|e| format!("stat: {e}"))?.len();
    let mut header = [0u8; 24];
    std::io::Read::read_exact(&mut &file, &mut header)
        .map_err(|e| format!("reading the header: {e}"))?;
    let rb = Mapping::header_ring_bytes(&header).ok_or("wrong magic")?;
    if !rb.is_power_of_two() || rb > 1 << 30 || ring::file_len(rb as usize) as u64 != flen {
        return Err(format!("ring size {rb} does not fit a {flen}-byte file"));
    }
    let map =
        Mapping::map(&file, rb as usize, &path.display().to_string()).map_err(|e| e.to_string())?;
    map.validate()?;
    Ok((map, rb))
}

impl Listener for ShmListener {
    type Address = ShmAddress;
    type Pending = ShmPending;

    fn address(&self) -> ShmAddress {
        self.addr.clone()
    }

    fn poll_accept(&mut self) -> Result<Option<ShmPending>> {
        let entries = fs::read_dir(&self.addr.dir)
            .map_err(|e| Error::io(NAME, format!("listing {}", self.addr.dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(b"conn-") {
                continue;
            }
            let path = entry.path();
            let opened = open_mapping(&path);
            // Whatever happens, the file leaves the directory: both ends keep their mapping.
            let _ = fs::remove_file(&path);
            match opened {
                Ok((map, _)) => {
                    map.pid(1).store(std::process::id(), Ordering::Relaxed);
                    map.single_copy_min(1)
                        .store(self.single_copy_min as u64, Ordering::Relaxed);
                    map.probe_addr(1)
                        .store(std::ptr::addr_of!(cma::PROBE) as u64, Ordering::Relaxed);
                    map.state().store(STATE_ACCEPTED, Ordering::Release);
                    let peer = format!(
                        "{}/{} (pid {})",
                        self.addr,
                        name.to_string_lossy(),
                        map.pid(0).load(Ordering::Relaxed)
                    );
                    let conn = ShmConnection::new(Arc::new(map), 1, peer, self.cma_min);
                    return Ok(Some(ShmPending(PendingState::Accepted(Box::new(conn)))));
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), %why, "shm: ignoring a bad connection file")
                }
            }
        }
        Ok(None)
    }
}

/// A shared-memory connection in setup.
pub struct ShmPending(PendingState);

enum PendingState {
    Dialing(Dial),
    Accepted(Box<ShmConnection>),
}

struct Dial {
    map: Option<Arc<Mapping>>,
    path: PathBuf,
    addr: ShmAddress,
    cma_min: usize,
}

impl Drop for Dial {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            // Given up before acceptance: withdraw the file and tell a late acceptor.
            map.closed(0).store(1, Ordering::Release);
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl PendingConnection for ShmPending {
    type Connection = ShmConnection;
    fn poll(self) -> Result<Setup<ShmConnection, Self>> {
        match self.0 {
            PendingState::Accepted(c) => Ok(Setup::Connected(*c)),
            PendingState::Dialing(mut d) => {
                let accepted = d
                    .map
                    .as_ref()
                    .is_some_and(|m| m.state().load(Ordering::Acquire) == STATE_ACCEPTED);
                if accepted {
                    let map = d.map.take().ok_or_else(|| Error::Usage {
                        transport: NAME,
                        reason: "pending connection polled after failure".into(),
                    })?;
                    let peer = format!("{} (pid {})", d.addr, map.pid(1).load(Ordering::Relaxed));
                    return Ok(Setup::Connected(ShmConnection::new(
                        map, 0, peer, d.cma_min,
                    )));
                }
                if !d.addr.dir.is_dir() {
                    return Err(Error::ConnectFailed {
                        transport: NAME,
                        addr: d.addr.to_string(),
                        reason: "the listener went away before accepting".into(),
                    });
                }
                Ok(Setup::Pending(ShmPending(PendingState::Dialing(d))))
            }
        }
    }
}

impl Transport for Shm {
    type Address = ShmAddress;
    type Listener = ShmListener;
    type Pending = ShmPending;
    type Connection = ShmConnection;
    type Region = HostRegion;

    fn name(&self) -> &'static str {
        NAME
    }

    fn listen(&self) -> Result<ShmListener> {
        let dir = self.config.dir.join(unique("oxccl-shm-"));
        // Private to this user: the rings carry the job's data.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AddrInUse {
                    transport: NAME,
                    addr: dir.display().to_string(),
                    source: e,
                },
                _ => Error::io(NAME, format!("creating {}", dir.display()), e),
            })?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io(NAME, format!("resolving {}", dir.display()), e))?;
        Ok(ShmListener {
            addr: ShmAddress {
                boot_id: boot_id(),
                dir,
            },
            cma_min: self.config.cma_min,
            single_copy_min: self.config.single_copy_min,
        })
    }

    fn connect(&self, addr: &ShmAddress) -> Result<ShmPending> {
        let fail = |reason: String| Error::ConnectFailed {
            transport: NAME,
            addr: addr.to_string(),
            reason,
        };
        let mine = boot_id();
        if !addr.boot_id.is_empty() && !mine.is_empty() && addr.boot_id != mine {
            return Err(fail(format!(
                "the listener is on another machine (boot id {})",
                addr.boot_id
            )));
        }
        if !addr.dir.is_dir() {
            return Err(fail("no listener there (directory missing)".into()));
        }
        let name = unique("");
        let tmp = addr.dir.join(format!(".tmp-{name}"));
        let path = addr.dir.join(format!("conn-{name}"));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail(format!("creating {}: {e}", tmp.display())))?;
        let built = (|| {
            file.set_len(ring::file_len(self.config.ring_bytes) as u64)
                .map_err(|e| Error::io(NAME, format!("sizing {}", tmp.display()), e))?;
            let map = Mapping::map(&file, self.config.ring_bytes, &tmp.display().to_string())?;
            map.init(std::process::id());
            map.single_copy_min(0)
                .store(self.config.single_copy_min as u64, Ordering::Relaxed);
            fs::rename(&tmp, &path)
                .map_err(|e| Error::io(NAME, format!("publishing {}", path.display()), e))?;
            Ok(map)
        })();
        match built {
            Ok(map) => Ok(ShmPending(PendingState::Dialing(Dial {
                map: Some(Arc::new(map)),
                path,
                addr: addr.clone(),
                cma_min: self.config.cma_min,
            }))),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn register(&self, len: usize) -> Result<HostRegion> {
        HostRegion::new(len)
    }
}

/// Whether process `pid` of this host still runs: not a zombie, and not exiting. A killed
/// process closes its sockets (often how a peer learns of its death) before it turns into a
/// zombie; by then its main thread has the kernel's `PF_EXITING` flag (`stat` field 9), so a
/// peer that looks right after the close already sees it gone.
pub fn process_alive(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name (which may hold spaces and parentheses): state is the
    // first, flags the seventh.
    let mut fields = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace())
        .into_iter()
        .flatten();
    let state = fields.next();
    let flags = fields.nth(5).and_then(|f| f.parse::<u64>().ok());
    state.is_some_and(|s| s != "Z" && s != "X") && flags.is_some_and(|f| f & PF_EXITING == 0)
}
