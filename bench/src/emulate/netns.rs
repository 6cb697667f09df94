//! The emulated cluster's network: network namespaces as hosts, rack and spine namespaces
//! holding Linux bridges as switches, veth pairs as cables, and `tc` token buckets (`tbf`) on
//! both ends of each cable as the link rate.
//!
//! Every name carries this process's id (`oxe<pid>...`), so two runs never meet, and a run that
//! was killed with SIGKILL is cleaned up by the next one (its pid no longer exists). [`Cluster`]
//! deletes everything it made when dropped: on success, on an error, on a panic (unwinding),
//! and after Ctrl-C (the handler only sets a flag; the waits check it and return an error).
//! Deleting a namespace destroys the veth ends and qdiscs inside it.

use anyhow::{bail, Context};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM while a cluster exists.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether Ctrl-C (or SIGTERM) arrived; every wait of the emulation checks it.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The MTU of every emulated link: jumbo frames keep the packet rate (and so the kernel's CPU
/// time on this loaded 2-core machine) six times lower than 1500 would.
pub const MTU: u32 = 9000;
/// Wire bytes per frame as `tbf` counts them (IP packet plus the 14-byte Ethernet header).
const FRAME: u32 = MTU + 14;
/// TCP payload per full frame: the MTU less IPv4 (20) and TCP with timestamps (32) headers.
const PAYLOAD: u32 = MTU - 52;

/// Shape of the emulated cluster.
#[derive(Clone, Debug)]
pub struct Shape {
    pub hosts: usize,
    pub hosts_per_rack: usize,
    /// Host link rate in bits per second (each direction).
    pub host_bits: u64,
    /// Rack uplink rate in bits per second (each direction).
    pub uplink_bits: u64,
}

impl Shape {
    pub fn racks(&self) -> usize {
        self.hosts.div_ceil(self.hosts_per_rack)
    }

    /// TCP payload bytes per second a link of `bits` carries when busy.
    pub fn payload_rate(bits: u64) -> f64 {
        bits as f64 / 8.0 * f64::from(PAYLOAD) / f64::from(FRAME)
    }
}

/// An emulated cluster that exists until dropped.
pub struct Cluster {
    pub shape: Shape,
    prefix: String,
    /// Namespaces made so far, deleted in reverse order.
    made: Vec<String>,
}

/// Runs `ip` with `args`; its stderr becomes the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

fn run(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running {prog}"))?;
    if !out.status.success() {
        bail!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces of earlier runs whose process is gone (killed before it could clean up).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("oxe") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = pid
            .parse::<u32>()
            .map(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(true);
        if !pid.is_empty() && !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Why network namespaces cannot be made here (not root, no `ip`, no `tbf`), or None.
pub fn unavailable() -> Option<String> {
    let name = format!("oxe{}probe", std::process::id());
    if let Err(e) = ip(&["netns", "add", &name]) {
        return Some(format!("{e:#}"));
    }
    let r = (|| -> anyhow::Result<()> {
        ip(&[
            "-n", &name, "link", "add", "p0", "type", "veth", "peer", "name", "p1",
        ])?;
        shape(&name, "p0", 1_000_000_000)
    })();
    let _ = ip(&["netns", "del", &name]);
    r.err().map(|e| format!("{e:#}"))
}

impl Cluster {
    /// Host `h`'s address (every host is on one /24, whichever rack it is in).
    pub fn host_ip(&self, h: usize) -> String {
        format!("10.77.0.{}", h + 1)
    }

    /// Host `h`'s namespace name.
    pub fn host_ns(&self, h: usize) -> String {
        format!("{}h{h}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        ip(&["-n", name, "link", "set", "dev", "lo", "up"])
    }

    /// A bridge `br0` in `ns`.
    fn add_bridge(ns: &str) -> anyhow::Result<()> {
        ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            ns,
            "link",
            "set",
            "dev",
            "br0",
            "mtu",
            &MTU.to_string(),
        ])?;
        ip(&["-n", ns, "link", "set", "dev", "br0", "up"])
    }

    /// A cable: veth `a_dev` in `a` and `b_dev` in `b`, both up with the jumbo MTU and shaped
    /// to `bits` per second leaving either end. `bridged` ends join their namespace's `br0`.
    fn cable(a: (&str, &str, bool), b: (&str, &str, bool), bits: u64) -> anyhow::Result<()> {
        let tmp_a = format!("t{}a", std::process::id());
        let tmp_b = format!("t{}b", std::process::id());
        // Made in the caller's namespace under unique names, then moved and renamed, so that
        // two ends may have the same name (every host's is eth0).
        ip(&[
            "link", "add", &tmp_a, "netns", a.0, "type", "veth", "peer", "name", &tmp_b, "netns",
            b.0,
        ])?;
        for ((ns, dev, bridged), tmp) in [(a, &tmp_a), (b, &tmp_b)] {
            ip(&["-n", ns, "link", "set", "dev", tmp, "name", dev])?;
            ip(&["-n", ns, "link", "set", "dev", dev, "mtu", &MTU.to_string()])?;
            if bridged {
                ip(&["-n", ns, "link", "set", "dev", dev, "master", "br0"])?;
            }
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
            shape(ns, dev, bits)?;
        }
        Ok(())
    }

    /// Builds the namespaces, bridges, cables and shaping of `shape`. Errors (no permission,
    /// no `ip`, no `tbf`) come back after whatever was made has been removed.
    pub fn build(shape: Shape) -> anyhow::Result<Cluster> {
        if shape.hosts == 0 || shape.hosts_per_rack == 0 || shape.hosts > 250 {
            bail!("hosts must be 1 to 250 and hosts per rack at least 1");
        }
        if shape.host_bits < 1_000_000 || shape.uplink_bits < 1_000_000 {
            bail!("link rates must be at least 1 Mbit/s");
        }
        remove_stale();
        install_signal_handlers();
        let mut c = Cluster {
            prefix: format!("oxe{}", std::process::id()),
            shape,
            made: Vec::new(),
        };
        let racks = c.shape.racks();
        let spine = format!("{}s", c.prefix);
        if racks > 1 {
            c.add_ns(&spine)?;
            Cluster::add_bridge(&spine)?;
        }
        for k in 0..racks {
            let rack = format!("{}r{k}", c.prefix);
            c.add_ns(&rack)?;
            Cluster::add_bridge(&rack)?;
            if racks > 1 {
                let down = format!("r{k}");
                Cluster::cable(
                    (&rack, "uplink", true),
                    (&spine, &down, true),
                    c.shape.uplink_bits,
                )?;
            }
        }
        for h in 0..c.shape.hosts {
            let ns = c.host_ns(h);
            c.add_ns(&ns)?;
            let rack = format!("{}r{}", c.prefix, h / c.shape.hosts_per_rack);
            let port = format!("h{h}");
            Cluster::cable(
                (&ns, "eth0", false),
                (&rack, &port, true),
                c.shape.host_bits,
            )?;
            let cidr = format!("{}/24", c.host_ip(h));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        }
        Ok(c)
    }

    /// An open handle on host `h`'s network namespace, for `setns`.
    pub fn host_fd(&self, h: usize) -> anyhow::Result<OwnedFd> {
        let path = format!("/run/netns/{}", self.host_ns(h));
        let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(OwnedFd::from(f))
    }

    /// Runs `f` on a new thread that lives in host `h`'s network namespace (a thread's
    /// namespace is its own: the rest of this process stays where it is).
    pub fn in_host<T: Send + 'static>(
        &self,
        h: usize,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<T>>> {
        let fd = self.host_fd(h)?;
        Ok(std::thread::spawn(move || {
            enter(&fd)?;
            f()
        }))
    }
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub fn enter(fd: &OwnedFd) -> anyhow::Result<()> {
    // SAFETY: setns on an open namespace file descriptor; it changes only this thread's
    // network namespace and touches no memory.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns into a host's namespace");
    }
    Ok(())
}

/// A token bucket of `bits` per second on `dev`'s egress. The bucket holds two frames: a
/// burst after an idle moment saves a message at most two frames' time (145 us at 1 Gbit/s),
/// and a release timer that fires up to one frame's time late (this machine is loaded) costs
/// no rate; with room for one frame only, every late timer was lost rate (0.8x measured). The queue is deep (16 MiB): on a host's own end it plays the NIC's
/// transmit queue, which TCP's small-queue limit keeps short without drops (a shallow `tbf`
/// queue drops what the sockets hand it, and TCP then waits for retransmission timers); on a
/// switch's end it is a deep-buffered switch port.
fn shape(ns: &str, dev: &str, bits: u64) -> anyhow::Result<()> {
    let burst = (2 * FRAME + 200).to_string();
    let rate = format!("{bits}bit");
    run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
            "limit", "16777216",
        ],
    )
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

impl Cluster {
    /// Packets every `tbf` of the cluster dropped so far (a full queue), summed.
    pub fn drops(&self) -> u64 {
        self.made
            .iter()
            .filter_map(|ns| {
                Command::new("tc")
                    .args(["-n", ns, "-s", "qdisc", "show"])
                    .output()
                    .ok()
            })
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let words: Vec<&str> = text.split_whitespace().collect();
                words
                    .windows(2)
                    .filter(|w| w[0] == "dropped")
                    .filter_map(|w| w[1].trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("# could not remove network namespace {ns}: {e:#}");
            }
        }
    }
}
