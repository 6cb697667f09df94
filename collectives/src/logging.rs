//! Logging like `NCCL_DEBUG`, for any program that uses the crates: the first communicator a
//! process creates installs a `tracing` subscriber when `OXCCL_DEBUG` is set and the program
//! has no global subscriber of its own (a program that installs one keeps it: events go there).
//! The CLIs (`oxccl-bench`, `oxccl-topo`) install the same one at start, `warn` by default.
//!
//! Every line starts with `host:pid:tid [rank]`, then `OXCCL LEVEL target: message fields`,
//! like NCCL's `host:pid:tid [dev] NCCL INFO ...`. The rank is the event's `rank` field, else
//! the rank whose call this thread is running, else the process's rank when it has one
//! communicator rank (`-` otherwise).
//!
//! | Variable | Meaning |
//! |---|---|
//! | `OXCCL_DEBUG` | `warn`, `info`, `debug`, `trace` (or NCCL's `version`, `abort`: `warn`), `off`, or a full `tracing` filter (`oxccl_collectives::tuner=debug`) |
//! | `OXCCL_DEBUG_SUBSYS` | comma list of subsystems to show (`INIT,COLL,P2P,SHM,NET,TUNE,TOPO,KERNEL,SIM,BENCH,ALL`), or `^LIST` to hide those; default all |
//! | `OXCCL_DEBUG_FILE` | write here instead of stderr; `%h` is the host name, `%p` the pid (one file per process) |
//!
//! Colour (the level) only when writing to a terminal.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::link::LinkKind;

/// The subsystems of `OXCCL_DEBUG_SUBSYS` and the `tracing` targets (module paths) they cover.
const SUBSYSTEMS: &[(&str, &[&str])] = &[
    (
        "INIT",
        &[
            "oxccl_collectives::comm",
            "oxccl_collectives::bootstrap",
            "oxccl_collectives::logging",
        ],
    ),
    (
        "COLL",
        &[
            "oxccl_collectives::exec",
            "oxccl_collectives::ops",
            "oxccl_collectives::algorithms",
            "oxccl_collectives::schedule",
        ],
    ),
    ("P2P", &["oxccl_collectives::link"]),
    (
        "SHM",
        &["oxccl_transport::shm", "oxccl_collectives::link::shm"],
    ),
    ("NET", &["oxccl_transport", "oxccl_collectives::link::net"]),
    ("TUNE", &["oxccl_collectives::tuner"]),
    ("TUNING", &["oxccl_collectives::tuner"]),
    ("TOPO", &["oxccl_topo"]),
    ("GRAPH", &["oxccl_topo"]),
    ("KERNEL", &["oxccl_kernels"]),
    ("SIM", &["oxccl_collectives::sim", "oxccl_bench::simulate"]),
    ("BENCH", &["oxccl_bench"]),
];

/// Every crate of the project: the level applies to these; other targets stay at `warn`.
const CRATES: &[&str] = &[
    "oxccl_collectives",
    "oxccl_transport",
    "oxccl_kernels",
    "oxccl_topo",
    "oxccl_bench",
    "oxccl_capi",
];

/// The `tracing` filter for `OXCCL_DEBUG` = `debug` and `OXCCL_DEBUG_SUBSYS` = `subsys`, with
/// the names it did not know.
pub fn filter_directives(debug: &str, subsys: Option<&str>) -> (String, Vec<String>) {
    let d = debug.trim().to_ascii_lowercase();
    if d.contains('=') || d.contains(',') {
        // Already a tracing filter: taken as is.
        return (d, Vec::new());
    }
    let level = match d.as_str() {
        "version" | "abort" | "" => "warn",
        "warning" => "warn",
        "none" => "off",
        other => other,
    };
    let mut unknown = Vec::new();
    let (exclude, list) = match subsys.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => match s.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, s),
        },
        None => (false, "ALL"),
    };
    let mut targets: Vec<&str> = Vec::new();
    let mut all = false;
    for name in list.split(',').map(|n| n.trim().to_ascii_uppercase()) {
        if name.is_empty() {
            continue;
        }
        if name == "ALL" {
            all = true;
            continue;
        }
        match SUBSYSTEMS.iter().find(|(n, _)| *n == name) {
            Some((_, t)) => targets.extend_from_slice(t),
            None => unknown.push(name),
        }
    }
    let mut directives = vec!["warn".to_string()];
    match (exclude, all) {
        (false, true) | (true, false) => {
            directives.extend(CRATES.iter().map(|c| format!("{c}={level}")));
            if exclude {
                directives.extend(targets.iter().map(|t| format!("{t}=off")));
            }
        }
        (true, true) => directives = vec!["off".to_string()],
        (false, false) => {
            // Only the named subsystems; the rest of the project keeps its warnings.
            directives.extend(targets.iter().map(|t| format!("{t}={level}")));
        }
    }
    (directives.join(","), unknown)
}

/// `OXCCL_DEBUG_FILE` with `%h` (host), `%p` (pid) and `%%` replaced.
pub fn expand_file_name(pattern: &str, host: &str, pid: u32) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => {
                let _ = write!(out, "{pid}");
            }
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn host_name() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        // The short name, as NCCL prints it.
        h.split('.').next().unwrap_or(&h).to_string()
    })
}

thread_local! {
    /// The rank whose call this thread is running (set for the call's duration).
    static THREAD_RANK: Cell<Option<usize>> = const { Cell::new(None) };
    /// The kernel's id of this thread, as `top -H` and `gdb` show it.
    static TID: u64 = os_thread_id();
}

fn os_thread_id() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or_else(|| {
            // Not Linux: std's thread number, which is at least unique in the process.
            let s = format!("{:?}", std::thread::current().id());
            s.trim_start_matches("ThreadId(")
                .trim_end_matches(')')
                .parse()
                .unwrap_or(0)
        })
}

const NO_RANK: usize = usize::MAX;
const MANY_RANKS: usize = usize::MAX - 1;
/// The rank of this process's communicators when they all have the same (one per process).
static PROCESS_RANK: AtomicUsize = AtomicUsize::new(NO_RANK);

/// Marks this thread as running `rank`'s call until dropped.
pub(crate) struct RankScope(Option<usize>);

impl RankScope {
    pub(crate) fn enter(rank: usize) -> Self {
        Self(THREAD_RANK.with(|r| r.replace(Some(rank))))
    }
}

impl Drop for RankScope {
    fn drop(&mut self) {
        THREAD_RANK.with(|r| r.set(self.0));
    }
}

/// The hook of communicator creation: installs the logging on first use, records the rank,
/// and on rank 0 logs the version and each peer's fabric.
pub(crate) fn communicator_created(rank: usize, kinds: &[Option<LinkKind>]) {
    install_from_env();
    if PROCESS_RANK
        .compare_exchange(NO_RANK, rank, Ordering::AcqRel, Ordering::Acquire)
        .is_err_and(|old| old != rank)
    {
        PROCESS_RANK.store(MANY_RANKS, Ordering::Release);
    }
    if rank != 0 || !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    // Peers grouped by fabric as ranges: `shm 1-7, tcp 8-15` (one line, however many ranks).
    let mut groups: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
    for (q, k) in kinds.iter().enumerate() {
        let Some(k) = k else { continue };
        let name = format!("{k:?}").to_ascii_lowercase();
        let idx = match groups.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                groups.push((name, Vec::new()));
                groups.len() - 1
            }
        };
        let ranges = &mut groups[idx].1;
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == q => *hi = q,
            _ => ranges.push((q, q)),
        }
    }
    let fabric: Vec<String> = groups
        .iter()
        .map(|(name, ranges)| {
            let r: Vec<String> = ranges
                .iter()
                .map(|&(lo, hi)| {
                    if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo}-{hi}")
                    }
                })
                .collect();
            format!("{name} to {}", r.join(","))
        })
        .collect();
    tracing::info!(
        rank,
        ranks = kinds.len(),
        "oxccl version {}; fabric per peer: {}",
        env!("CARGO_PKG_VERSION"),
        if fabric.is_empty() {
            "none (one rank)".to_string()
        } else {
            fabric.join("; ")
        }
    );
}

/// Installs the subscriber if `OXCCL_DEBUG` is set (once per process; a no-op when the program
/// already has a global subscriber). Communicators call it; call it earlier to also see what
/// happens before the first one.
pub fn install_from_env() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(debug) = std::env::var("OXCCL_DEBUG") {
            install(&debug);
        }
    });
}

/// The CLIs' setup: the same subscriber, at `default` when `OXCCL_DEBUG` is not set.
pub fn install_cli(default: &str) {
    let debug = std::env::var("OXCCL_DEBUG").unwrap_or_else(|_| default.to_string());
    install(&debug);
}

fn install(setting: &str) {
    let subsys = std::env::var("OXCCL_DEBUG_SUBSYS").ok();
    let (directives, unknown) = filter_directives(setting, subsys.as_deref());
    let (filter, bad_filter) = match tracing_subscriber::EnvFilter::try_new(&directives) {
        Ok(f) => (f, None),
        Err(e) => (tracing_subscriber::EnvFilter::new("warn"), Some(e)),
    };
    let host = host_name();
    let file = std::env::var("OXCCL_DEBUG_FILE")
        .ok()
        .filter(|p| !p.is_empty())
        .map(|pattern| LazyFile {
            path: expand_file_name(&pattern, host, std::process::id()),
            file: OnceLock::new(),
        });
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let writer = match file {
        Some(f) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(f),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .event_format(Prefix { host })
        .finish();
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        // The program has its own subscriber: our events go there.
        return;
    }
    if let Some(e) = bad_filter {
        tracing::warn!("OXCCL_DEBUG={setting:?} is not a level or a filter ({e}); using warn");
    }
    if !unknown.is_empty() {
        tracing::warn!("OXCCL_DEBUG_SUBSYS: unknown subsystems {unknown:?} ignored");
    }
}

/// `OXCCL_DEBUG_FILE`, created at the first line: a process that logs nothing (a launcher
/// such as `oxccl-bench --ranks`) leaves no empty file beside the ranks' files.
struct LazyFile {
    path: String,
    file: OnceLock<Option<Mutex<std::fs::File>>>,
}

struct LazyFileWriter<'a>(&'a LazyFile);

impl std::io::Write for LazyFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .0
            .file
            .get_or_init(|| match std::fs::File::create(&self.0.path) {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    eprintln!(
                        "oxccl: OXCCL_DEBUG_FILE: cannot create {}: {e}; logging to stderr",
                        self.0.path
                    );
                    None
                }
            });
        match file {
            // One formatted line per write: the lock keeps threads' lines whole.
            Some(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.file.get() {
            Some(Some(f)) => f.lock().unwrap_or_else(|p| p.into_inner()).flush(),
            _ => std::io::stderr().flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LazyFile {
    type Writer = LazyFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LazyFileWriter(self)
    }
}

/// Formats `host:pid:tid [rank] OXCCL LEVEL target: message fields`.
struct Prefix {
    host: &'static str,
}

/// Finds an event's `rank` field.
#[derive(Default)]
struct RankField(Option<u64>);

impl Visit for RankField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rank" {
            self.0 = Some(value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "rank" {
            self.0 = u64::try_from(value).ok();
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S, N> FormatEvent<S, N> for Prefix
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut field = RankField::default();
        event.record(&mut field);
        let rank = field
            .0
            .map(|r| r as usize)
            .or_else(|| THREAD_RANK.with(Cell::get))
            .or_else(|| Some(PROCESS_RANK.load(Ordering::Acquire)).filter(|&r| r < MANY_RANKS));
        let tid = TID.with(|t| *t);
        write!(writer, "{}:{}:{tid} ", self.host, std::process::id())?;
        match rank {
            Some(r) => write!(writer, "[{r}] ")?,
            None => write!(writer, "[-] ")?,
        }
        let meta = event.metadata();
        let level = meta.level();
        if writer.has_ansi_escapes() {
            let colour = match *level {
                tracing::Level::ERROR => "31",
                tracing::Level::WARN => "33",
                tracing::Level::INFO => "32",
                tracing::Level::DEBUG => "34",
                tracing::Level::TRACE => "35",
            };
            write!(writer, "OXCCL \x1b[{colour}m{level}\x1b[0m ")?;
        } else {
            write!(writer, "OXCCL {level} ")?;
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_subsystems_become_filters() {
        let (f, u) = filter_directives("INFO", None);
        assert!(f.starts_with("warn,oxccl_collectives=info,oxccl_transport=info"));
        assert!(u.is_empty());
        assert_eq!(
            filter_directives("version", None).0.split(',').nth(1),
            Some("oxccl_collectives=warn")
        );
        let (f, u) = filter_directives("trace", Some("INIT,tune,BOGUS"));
        assert_eq!(
            f,
            "warn,oxccl_collectives::comm=trace,oxccl_collectives::bootstrap=trace,\
             oxccl_collectives::logging=trace,oxccl_collectives::tuner=trace"
        );
        assert_eq!(u, ["BOGUS"]);
        let (f, _) = filter_directives("info", Some("^NET"));
        assert!(
            f.contains("oxccl_topo=info")
                && f.ends_with("oxccl_transport=off,oxccl_collectives::link::net=off")
        );
        // A full tracing filter passes through.
        assert_eq!(
            filter_directives("oxccl_collectives::tuner=debug", Some("NET")).0,
            "oxccl_collectives::tuner=debug"
        );
        for (d, s) in [
            ("info", None),
            ("debug", Some("ALL")),
            ("warn", Some("^ALL")),
            ("off", None),
        ] {
            assert!(tracing_subscriber::EnvFilter::try_new(filter_directives(d, s).0).is_ok());
        }
    }

    #[test]
    fn file_names_expand() {
        assert_eq!(
            expand_file_name("/tmp/ox.%h.%p", "node1", 42),
            "/tmp/ox.node1.42"
        );
        assert_eq!(expand_file_name("a%%b%x%", "h", 1), "a%b%x%");
    }
}
