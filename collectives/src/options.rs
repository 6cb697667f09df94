//! Communicator settings, from `OXCCL_*` environment variables or set in code.

use crate::error::{Error, Result};
use std::time::Duration;

/// Which link to use between two ranks of one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// Shared memory between ranks of one host, TCP across hosts.
    Auto,
    /// Shared memory only (an error when two ranks are on different hosts).
    Shm,
    /// The network fabric ([`NetChoice`]) between every pair, even on one host.
    Tcp,
}

/// Which `oxccl-transport` fabric links ranks on different hosts (`OXCCL_NET`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetChoice {
    /// TCP sockets (the default; works everywhere).
    Tcp,
    /// ibverbs RDMA on the NIC `OXCCL_IB_DEVICE` (needs the cargo feature `rdma`).
    Rdma,
}

/// Whether each rank pins itself to cores at init (`OXCCL_BIND`, as `mpirun --bind-to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    /// Leave the CPU affinity the launcher gave.
    None,
    /// The `i`-th of a host's `n` ranks on core `i * cores / n` of the cores it may use.
    Core,
    /// The `i`-th of a host's `n` ranks on the CPUs of NUMA node `i * nodes / n`: consecutive
    /// ranks share a node, as the hierarchical all-reduce's NUMA level wants.
    Numa,
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bind::None => "none",
            Bind::Core => "core",
            Bind::Numa => "numa",
        })
    }
}

/// How the ranks of [`crate::Communicator::local`] talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalTransport {
    /// Rings in this process's memory (the default).
    Memory,
    /// Rings in shared-memory files, as between processes.
    Shm,
    /// `oxccl-transport`'s TCP fabric over 127.0.0.1.
    Tcp,
    /// `oxccl-transport`'s RDMA protocol over its in-process software model of RC verbs: the
    /// whole network path of a cluster run (proxy, credits, write-with-immediate), without a NIC.
    RdmaModel,
}

/// Settings of a communicator. [`Options::from_env`] reads:
///
/// | variable | meaning | default |
/// |---|---|---|
/// | `OXCCL_TIMEOUT` | seconds without progress before a call fails (also bounds bootstrap) | 300 |
/// | `OXCCL_ALGO` | force an algorithm: `ring`, `rhd`, `tree`, `dbtree`, `direct`, `hier`, `hier:AxB` (refused when the communicator is made if it cannot work there; ignored, with a warning, for calls it does not fit) | the tuner's choice |
/// | `OXCCL_LANES` | lanes (independent parts of the buffer, each running the whole schedule, in flight together; NCCL's channels) for all-reduce, broadcast and reduce: 1 to 16 | the tuner's choice (more than one only for `hier` with large messages) |
/// | `OXCCL_CHUNK_BYTES` | largest message of a pipelined schedule: the tuner pipelines at least this finely | 1048576 |
/// | `OXCCL_TRANSPORT` | `auto` (shm on a host, the network fabric across), `shm`, or `tcp`/`net` (the network fabric everywhere) | `auto` |
/// | `OXCCL_NET` | network fabric across hosts: `tcp` or `rdma` | `tcp` |
/// | `OXCCL_RING_BYTES` | shared-memory ring size per direction (power of two) | 1048576 |
/// | `OXCCL_SINGLE_COPY_MIN` | sends and receives between ranks of one host of at least this many bytes are copied once, by the receiver, straight out of the sender's memory (`process_vm_readv`; a plain copy between thread ranks) when the sender finds that faster; a collective's messages (never a reduction's) only from the larger of this and [`COLLECTIVE_SINGLE_COPY_MIN`]; `0` turns it off | 8192 |
/// | `OXCCL_SINGLE_COPY_CHOICE` | how the sender of such a message chooses: `auto` (pulled, through the ring, or through the ring with non-temporal stores, whichever the receiver measured fastest for its size lately), `pull` (always pulled), `stream` (always through the ring), `stream-nt` (always through the ring, non-temporal stores) | `auto` |
/// | `OXCCL_SMALL_BYTES` | all-reduce up to this size sends the whole vector to every peer | 16384 |
/// | `OXCCL_SPIN` | idle polls before a waiting rank yields its core | 2000, or 0 (yield at once) when the host's ranks outnumber the cores they may run on |
/// | `OXCCL_YIELD_US` | microseconds a waiting rank yields its core before it sleeps on its links' doorbells | 200 |
/// | `OXCCL_TOPO_FILE` | the host's map: an hwloc XML or NCCL topology XML file (as `NCCL_TOPO_FILE`), or an hwloc synthetic string | discovered from sysfs |
/// | `OXCCL_BIND` | pin each rank at init: `none`, `core`, `numa` ([`Bind`]) | `none` |
/// A collective's messages (all-to-all(-v), gathers, scatters, broadcasts; a reduction's
/// never) may take the single-copy path only from this many bytes, whatever
/// `OXCCL_SINGLE_COPY_MIN` says below it: under it the ring writes of the whole call take the
/// stores chosen for the call (`exec/stores.rs`), which kept 2-rank all-to-all-v at 1.3-2.3x
/// Open MPI's speed at 16-128 KiB where a per-message offer from 8 KiB gave 1.0-1.4x (session
/// 11, `bench/RESULTS.md`). Sends and receives have no call to choose for, so they offer from
/// `OXCCL_SINGLE_COPY_MIN` (8 KiB). A constant, so that the two ends of a message always
/// agree on its framing.
pub const COLLECTIVE_SINGLE_COPY_MIN: usize = 256 << 10;

#[derive(Clone, Debug)]
pub struct Options {
    pub timeout: Duration,
    pub algorithm: Option<String>,
    pub chunk_bytes: usize,
    /// Lanes per schedule (`OXCCL_LANES`); `None`: the tuner picks them.
    pub lanes: Option<usize>,
    pub transport: TransportChoice,
    pub net: NetChoice,
    pub ring_bytes: usize,
    /// Sends and receives between ranks of one host of at least this many bytes (a
    /// collective's messages from [`COLLECTIVE_SINGLE_COPY_MIN`]) may be copied once, straight
    /// out of the sender's memory (0: off; see `oxccl_transport::stream::large`).
    pub single_copy_min: usize,
    /// Pulled or through the ring, per message (`OXCCL_SINGLE_COPY_CHOICE`).
    pub single_copy_choice: oxccl_transport::stream::Choice,
    /// Which ring writes without a header take non-temporal stores (`OXCCL_RING_NT`).
    pub ring_nt: oxccl_transport::stream::RingNt,
    pub small_bytes: usize,
    /// `None`: chosen from the number of local ranks and cores.
    pub spin: Option<u32>,
    /// How long a waiting rank yields before it parks (`OXCCL_YIELD_US`); `None`: chosen from
    /// the number of local ranks and cores.
    pub yield_for: Option<Duration>,
    /// How many ranks of the whole job run on this host, across every communicator
    /// (`OXCCL_LOCAL_RANKS`, else the launcher's `LOCAL_WORLD_SIZE` or
    /// `OMPI_COMM_WORLD_LOCAL_SIZE`); `None`: this communicator's own ranks on the host.
    pub host_ranks: Option<usize>,
    /// The host's map (`OXCCL_TOPO_FILE`): a file or synthetic string; `None` discovers it.
    pub topo_file: Option<String>,
    pub bind: Bind,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            algorithm: None,
            chunk_bytes: 1 << 20,
            lanes: None,
            transport: TransportChoice::Auto,
            net: NetChoice::Tcp,
            ring_bytes: 1 << 20,
            single_copy_min: oxccl_transport::stream::DEFAULT_SINGLE_COPY_MIN,
            single_copy_choice: oxccl_transport::stream::Choice::Auto,
            ring_nt: oxccl_transport::stream::RingNt::default(),
            small_bytes: 16 << 10,
            spin: None,
            yield_for: None,
            host_ranks: None,
            topo_file: None,
            bind: Bind::None,
        }
    }
}

impl Options {
    /// Defaults overridden by the `OXCCL_*` variables that are set.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut o = Options::default();
        let num = |k: &str| -> Result<Option<f64>> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| {
                            Error::Env(format!("{k}={v:?} is not a non-negative number"))
                        })
                })
                .transpose()
        };
        if let Some(t) = num("OXCCL_TIMEOUT")? {
            o.timeout = Duration::from_secs_f64(t.max(0.001));
        }
        if let Some(a) = get("OXCCL_ALGO").filter(|a| !a.trim().is_empty() && a.trim() != "auto") {
            o.algorithm = Some(a.trim().to_string());
        }
        if let Some(c) = num("OXCCL_CHUNK_BYTES")? {
            o.chunk_bytes = (c as usize).max(64);
        }
        if let Some(t) = get("OXCCL_TRANSPORT") {
            o.transport = match t.trim().to_ascii_lowercase().as_str() {
                "auto" | "" => TransportChoice::Auto,
                "shm" => TransportChoice::Shm,
                "tcp" | "net" => TransportChoice::Tcp,
                other => {
                    return Err(Error::Env(format!(
                        "OXCCL_TRANSPORT={other:?}: expected auto, shm, tcp or net"
                    )))
                }
            };
        }
        if let Some(n) = get("OXCCL_NET") {
            o.net = match n.trim().to_ascii_lowercase().as_str() {
                "tcp" | "socket" | "" => NetChoice::Tcp,
                "rdma" | "ib" => NetChoice::Rdma,
                other => {
                    return Err(Error::Env(format!(
                        "OXCCL_NET={other:?}: expected tcp or rdma"
                    )))
                }
            };
        }
        if let Some(r) = num("OXCCL_RING_BYTES")? {
            let r = r as usize;
            if !r.is_power_of_two() || r < 4096 {
                return Err(Error::Env(format!(
                    "OXCCL_RING_BYTES={r}: must be a power of two >= 4096"
                )));
            }
            o.ring_bytes = r;
        }
        if let Some(s) = num("OXCCL_SINGLE_COPY_MIN")? {
            // Below a few KiB the header would cost more than the copy it saves.
            let s = s as usize;
            o.single_copy_min = if s == 0 {
                0
            } else {
                s.max(oxccl_transport::stream::MIN_SINGLE_COPY)
            };
        }
        if let Some(c) = get("OXCCL_SINGLE_COPY_CHOICE") {
            o.single_copy_choice = c.parse().map_err(|e| Error::Env(format!("{e}")))?;
        }
        if let Some(v) = get("OXCCL_RING_NT") {
            o.ring_nt = v.parse().map_err(|e| Error::Env(format!("{e}")))?;
        }
        if let Some(s) = num("OXCCL_SMALL_BYTES")? {
            o.small_bytes = s as usize;
        }
        if let Some(l) = num("OXCCL_LANES")? {
            let max = crate::schedule::MAX_LANES;
            if l < 1.0 || l > max as f64 || l.fract() != 0.0 {
                return Err(Error::Env(format!(
                    "OXCCL_LANES={l}: expected a whole number of lanes from 1 to {max}"
                )));
            }
            o.lanes = Some(l as usize);
        }
        if let Some(s) = num("OXCCL_SPIN")? {
            o.spin = Some(s as u32);
        }
        if let Some(y) = num("OXCCL_YIELD_US")? {
            o.yield_for = Some(Duration::from_secs_f64(y * 1e-6));
        }
        // A communicator of some of a job's ranks (torch's `new_group`, bootstrapped on its own)
        // sees only its members in its map, while the host runs all of the job's ranks: the
        // launchers say how many.
        if let Some(n) = num("OXCCL_LOCAL_RANKS")? {
            if n < 1.0 || n.fract() != 0.0 {
                return Err(Error::Env(format!(
                    "OXCCL_LOCAL_RANKS={n}: expected a whole number of ranks, at least 1"
                )));
            }
            o.host_ranks = Some(n as usize);
        } else {
            // Not ours to reject: a launcher's value that is not a count is ignored.
            o.host_ranks = ["LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"]
                .into_iter()
                .find_map(|var| get(var)?.trim().parse::<usize>().ok().filter(|&n| n > 0));
        }
        o.topo_file = get("OXCCL_TOPO_FILE").filter(|f| !f.trim().is_empty());
        if let Some(b) = get("OXCCL_BIND") {
            o.bind = match b.trim().to_ascii_lowercase().as_str() {
                "none" | "" => Bind::None,
                "core" => Bind::Core,
                "numa" => Bind::Numa,
                other => {
                    return Err(Error::Env(format!(
                        "OXCCL_BIND={other:?}: expected none, core or numa"
                    )))
                }
            };
        }
        Ok(o)
    }

    /// The ranks this host runs, of which `own` are this communicator's (never fewer).
    pub(crate) fn host_ranks(&self, own: usize) -> usize {
        own.max(self.host_ranks.unwrap_or(0))
    }

    /// How a waiting rank spends its idle time on a host where `threads` threads want a core
    /// (its ranks' executors and their network proxies) and can run on `cores` cores together
    /// (the union of the ranks' CPU masks in the map; 0 if unknown).
    pub(crate) fn idle_policy(&self, threads: usize, cores: usize) -> IdlePolicy {
        let oversubscribed = crowded(threads, cores);
        IdlePolicy {
            // A few microseconds of polling covers a peer that is running; past that, the
            // peer is probably descheduled and the core is better given away. With more ranks
            // than cores, the peer a rank waits for is most often waiting for this very core:
            // yield at once (4 ranks on 2 cores, 8 B-2 KiB: 3.6-4.7 us a call with 0, 6-10 us
            // with 50, under SCHED_FIFO on a loaded machine; bench/RESULTS.md, issue 10).
            spin: self.spin.unwrap_or(if oversubscribed { 0 } else { 2_000 }),
            // Parking at once where ranks outnumber cores (as Open MPI's `mpi_yield_when_idle`
            // and Gloo block) was tried for DDP on 4 ranks on 2 cores: it cut the collective's
            // own time under load but not the wait for the slowest rank, and it made every
            // small all-reduce of 4 ranks on this host 10-20x slower (8 B: 94 against 7.6 us,
            // each hand-off a futex wake-up; bench/RESULTS.md, session 6). So one default.
            yield_for: self.yield_for.unwrap_or(DEFAULT_YIELD),
        }
    }
}

/// Whether `threads` threads that want a core outnumber the `cores` of their host (as
/// [`Options::idle_policy`] counts them): the one test behind yielding at once and behind
/// pulling large messages (`exec::engine::Engine::set_crowded`).
pub(crate) fn crowded(threads: usize, cores: usize) -> bool {
    threads > host_cores(cores)
}

/// The cores a host's ranks can run on: the union of their masks in the map (`cores`), or, where
/// the map has none (0), the cores this process may use. Not this process's own mask: a rank
/// bound to one core (by OXCCL_BIND or by its launcher, as mpirun binds 2 ranks) shares it with
/// nobody, and counting its mask of 1 made it yield on every idle poll.
fn host_cores(cores: usize) -> usize {
    match cores {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Default of `OXCCL_YIELD_US`: parking costs the waker a system call and the sleeper a
/// wake-up (tens of microseconds on a virtual machine); yielding costs a core only while
/// nobody else wants it.
const DEFAULT_YIELD: Duration = Duration::from_micros(200);

/// How a waiting rank spends its idle time (`exec/idle.rs`): spin, then yield, then park.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdlePolicy {
    /// Idle polls before yielding the core.
    pub spin: u32,
    /// How long to yield before parking on the links' doorbells.
    pub yield_for: Duration,
}

#[cfg(test)]
mod tests {
    use super::Options;

    fn with(var: &str, value: &str) -> crate::Result<Options> {
        Options::from_vars(|k| (k == var).then(|| value.to_string()))
    }

    #[test]
    fn single_copy_min_is_read_raised_to_its_floor_and_checked() {
        let floor = oxccl_transport::stream::MIN_SINGLE_COPY;
        assert_eq!(
            Options::default().single_copy_min,
            oxccl_transport::stream::DEFAULT_SINGLE_COPY_MIN
        );
        let read = |v: &str| with("OXCCL_SINGLE_COPY_MIN", v).map(|o| o.single_copy_min);
        assert_eq!(read("0").ok(), Some(0), "0 turns the path off");
        assert_eq!(read("1048576").ok(), Some(1 << 20));
        assert_eq!(
            read("100").ok(),
            Some(floor),
            "below the floor: raised to it"
        );
        assert!(
            read("lots").is_err(),
            "a value that is not a number is an error"
        );
    }

    #[test]
    fn the_single_copy_choice_and_the_ring_stores_read_and_default_as_documented() {
        use oxccl_transport::stream::{Choice, RingNt};
        for (text, choice) in [
            ("auto", Choice::Auto),
            ("pull", Choice::Pull),
            ("stream", Choice::Stream),
            ("stream-nt", Choice::StreamNt),
        ] {
            let set = with("OXCCL_SINGLE_COPY_CHOICE", text).unwrap();
            assert_eq!(set.single_copy_choice, choice, "{text}");
        }
        let err = with("OXCCL_SINGLE_COPY_CHOICE", "fastest").unwrap_err();
        assert!(
            err.to_string().contains("OXCCL_SINGLE_COPY_CHOICE"),
            "{err}"
        );
        assert!(with("OXCCL_RING_NT", "always").is_err());
        assert_eq!(with("OXCCL_RING_NT", "off").unwrap().ring_nt, RingNt::Off);
        // The documented defaults hold for options built in code as for those read from an
        // empty environment.
        let (unset, empty) = (Options::default(), Options::from_vars(|_| None).unwrap());
        assert_eq!(empty.ring_nt, RingNt::Call);
        assert_eq!(unset.ring_nt, empty.ring_nt);
        assert_eq!(empty.single_copy_choice, Choice::Auto);
        assert_eq!(unset.single_copy_choice, empty.single_copy_choice);
    }

    #[test]
    fn oversubscribed_hosts_yield_at_once_and_park_after_the_yield_time() {
        use super::IdlePolicy;
        use std::time::Duration;
        let o = Options::default();
        assert_eq!(
            o.idle_policy(2, 2),
            IdlePolicy {
                spin: 2_000,
                yield_for: Duration::from_micros(200)
            }
        );
        assert_eq!(
            o.idle_policy(4, 2),
            IdlePolicy {
                spin: 0,
                yield_for: Duration::from_micros(200)
            }
        );
        let set = with("OXCCL_YIELD_US", "50").expect("a number");
        assert_eq!(set.idle_policy(4, 2).yield_for, Duration::from_micros(50));
        assert_eq!(set.idle_policy(1, 2).yield_for, Duration::from_micros(50));
        assert!(with("OXCCL_YIELD_US", "soon").is_err());
        assert!(with("OXCCL_YIELD_US", "-1").is_err());
    }

    #[test]
    fn a_group_of_some_of_the_hosts_ranks_waits_as_the_whole_host_does() {
        // torch's new_group of 2 of the 4 ranks torchrun started on 2 cores: the group's own
        // map has 2 ranks, the host runs 4.
        assert_eq!(Options::default().idle_policy(2, 2).spin, 2_000);
        for (var, value) in [
            ("OXCCL_LOCAL_RANKS", "4"),
            ("LOCAL_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ] {
            let o = with(var, value).expect("a count");
            assert_eq!(o.host_ranks(2), 4, "{var}");
            assert_eq!(o.idle_policy(o.host_ranks(2), 2).spin, 0, "{var}");
            // Never fewer than the communicator's own ranks on the host.
            assert_eq!(o.host_ranks(8), 8, "{var}");
        }
        let two = with("LOCAL_WORLD_SIZE", "2").expect("a count");
        assert_eq!(two.idle_policy(two.host_ranks(2), 2).spin, 2_000);
        assert!(with("OXCCL_LOCAL_RANKS", "0").is_err());
        assert!(with("OXCCL_LOCAL_RANKS", "2.5").is_err());
        assert_eq!(
            with("LOCAL_WORLD_SIZE", "many")
                .expect("ignored")
                .host_ranks,
            None
        );
        let both = Options::from_vars(|k| match k {
            "OXCCL_LOCAL_RANKS" => Some("3".into()),
            "LOCAL_WORLD_SIZE" => Some("8".into()),
            _ => None,
        });
        assert_eq!(both.expect("counts").host_ranks, Some(3), "OXCCL_ first");
    }
}
