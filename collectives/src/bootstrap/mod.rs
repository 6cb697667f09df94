//! Who am I, how many are we, and where do we meet: read from the launcher's environment.
//!
//! Recognised launchers, first match wins:
//!
//! | launcher | rank, size, local rank | store |
//! |---|---|---|
//! | `OXCCL_*` | `OXCCL_RANK`, `OXCCL_SIZE`, `OXCCL_LOCAL_RANK` | `OXCCL_STORE_ADDR` (`host:port`) |
//! | Open MPI `mpirun` | `OMPI_COMM_WORLD_RANK`, `_SIZE`, `_LOCAL_RANK` | a file `/tmp/oxccl-ompi-<jobid>.store` written by rank 0 (one host), or `OXCCL_STORE_ADDR` |
//! | Slurm `srun` | `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` | first host of `SLURM_STEP_NODELIST`, port derived from the job id, or `OXCCL_STORE_ADDR` |
//! | `torchrun` | `RANK`, `WORLD_SIZE`, `LOCAL_RANK` | `MASTER_ADDR:MASTER_PORT` (`MASTER_PORT + 1` under real torchrun, whose agent already serves a store there) |
//!
//! A launcher's variables come as a set: some of a set without the rest (`RANK` and
//! `WORLD_SIZE` without `MASTER_ADDR`, `OXCCL_RANK` without `OXCCL_SIZE`) is an error naming
//! what is missing, never a silent single-rank run.
//!
//! The secret: see [`secret`] (`OXCCL_SECRET`, `OXCCL_SECRET_FILE`, or the per-user secret file).

mod affinity;
pub mod locality;
pub mod secret;

#[cfg(test)]
mod kill_tests;
pub mod store;
pub(crate) mod store_mark;

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The most ranks a job may have: every rank holds a record per peer during bootstrap, so a
/// size that was never meant (`OXCCL_SIZE=99999999999`) must fail before allocating for it.
pub const MAX_RANKS: usize = 1 << 20;

/// Where rank 0 serves the store and the others find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAddr {
    /// A `host:port` every rank can reach; rank 0 binds it.
    Tcp(String),
    /// A rendezvous file on a filesystem all ranks share: rank 0 binds an ephemeral port on
    /// 127.0.0.1 and writes the address there (single host only).
    File(PathBuf),
}

/// Everything a rank needs to join: its place in the job, the store, and the secret.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub rank: usize,
    pub size: usize,
    /// Rank among the ranks of this host, when the launcher says.
    pub local_rank: Option<usize>,
    pub store: StoreAddr,
    pub secret: Vec<u8>,
    /// Which launcher's variables were used (`oxccl`, `mpirun`, `slurm`, `torchrun`).
    pub launcher: &'static str,
}

impl Bootstrap {
    /// A bootstrap given explicitly (for embedding, tests, and custom launchers).
    pub fn new(rank: usize, size: usize, store: StoreAddr, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            rank,
            size,
            local_rank: None,
            store,
            secret: secret.into(),
            launcher: "explicit",
        }
    }

    /// Reads the process environment (see the module documentation for the variables).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`Bootstrap::from_env`], but `None` when no launcher variable is set at all (a
    /// program that may also run alone); a partial launcher environment is still an error.
    pub fn from_env_opt() -> Result<Option<Self>> {
        Self::from_vars_opt(|k| std::env::var(k).ok())
    }

    /// Like [`Bootstrap::from_env`], reading variables through `get` (testable without
    /// touching the process environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_vars_opt(get)?.ok_or_else(|| {
            Error::Env(
                "no launcher found: set OXCCL_RANK, OXCCL_SIZE and OXCCL_STORE_ADDR, or run under mpirun, srun or torchrun"
                    .into(),
            )
        })
    }

    /// [`Bootstrap::from_env_opt`] reading variables through `get`.
    pub fn from_vars_opt(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        // Every variable of a launcher's set, or none of it.
        let whole = |set: &[&str]| -> Result<bool> {
            let missing: Vec<&str> = set.iter().copied().filter(|k| get(k).is_none()).collect();
            match missing.len() {
                0 => Ok(true),
                n if n == set.len() => Ok(false),
                _ => Err(Error::Env(format!(
                    "{} {} set but {} {} not (a partial launcher environment)",
                    set.iter()
                        .filter(|k| !missing.contains(k))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    if set.len() - missing.len() == 1 {
                        "is"
                    } else {
                        "are"
                    },
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" },
                ))),
            }
        };
        whole(&["OXCCL_RANK", "OXCCL_SIZE"])?;
        whole(&["OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"])?;
        // An allocation without a step sets SLURM_NTASKS alone; a task always has both.
        if get("SLURM_PROCID").is_some() {
            whole(&["SLURM_PROCID", "SLURM_NTASKS"])?;
        }
        if whole(&["RANK", "WORLD_SIZE"])? && get("OXCCL_STORE_ADDR").is_none() {
            whole(&["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"])?;
        }
        let num =
            |k: &str| -> Result<Option<usize>> {
                match get(k) {
                    None => Ok(None),
                    Some(v) => v.trim().parse().map(Some).map_err(|_| {
                        Error::Env(format!("{k}={v:?} is not a non-negative integer"))
                    }),
                }
            };
        let store_override = get("OXCCL_STORE_ADDR").map(StoreAddr::Tcp);
        let (launcher, rank, size, local_rank, store, job) =
            if let (Some(r), Some(s)) = (num("OXCCL_RANK")?, num("OXCCL_SIZE")?) {
                let store = store_override.clone().ok_or_else(|| {
                    Error::Env("OXCCL_RANK/OXCCL_SIZE are set but OXCCL_STORE_ADDR is not".into())
                })?;
                ("oxccl", r, s, num("OXCCL_LOCAL_RANK")?, store, None)
            } else if let (Some(r), Some(s)) =
                (num("OMPI_COMM_WORLD_RANK")?, num("OMPI_COMM_WORLD_SIZE")?)
            {
                let job = get("OMPI_MCA_ess_base_jobid")
                    .or_else(|| get("OMPI_MCA_orte_ess_jobid"))
                    .or_else(|| get("PMIX_NAMESPACE"));
                let store =
                    match (store_override.clone(), &job) {
                        (Some(s), _) => s,
                        (None, Some(j)) => StoreAddr::File(rendezvous_file("ompi", j)),
                        (None, None) => return Err(Error::Env(
                            "mpirun gave no job id (OMPI_MCA_ess_base_jobid); set OXCCL_STORE_ADDR"
                                .into(),
                        )),
                    };
                (
                    "mpirun",
                    r,
                    s,
                    num("OMPI_COMM_WORLD_LOCAL_RANK")?,
                    store,
                    job,
                )
            } else if let (Some(r), Some(s)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
                let job = get("SLURM_JOB_ID");
                let store = match (store_override.clone(), &job) {
                    (Some(s), _) => s,
                    (None, Some(j)) => {
                        let nodes = get("SLURM_STEP_NODELIST")
                            .or_else(|| get("SLURM_JOB_NODELIST"))
                            .ok_or_else(|| Error::Env("Slurm gave no node list".into()))?;
                        let step = get("SLURM_STEP_ID").unwrap_or_default();
                        let port = 20000 + (fnv1a(format!("{j}.{step}").as_bytes()) % 20000) as u16;
                        StoreAddr::Tcp(format!("{}:{port}", first_slurm_host(&nodes)))
                    }
                    (None, None) => {
                        return Err(Error::Env(
                            "Slurm gave no SLURM_JOB_ID; set OXCCL_STORE_ADDR".into(),
                        ))
                    }
                };
                ("slurm", r, s, num("SLURM_LOCALID")?, store, job)
            } else if let (Some(r), Some(s)) = (num("RANK")?, num("WORLD_SIZE")?) {
                let store = match store_override.clone() {
                    Some(s) => s,
                    None => {
                        let addr = get("MASTER_ADDR").ok_or_else(|| {
                            Error::Env("RANK/WORLD_SIZE set but MASTER_ADDR is not".into())
                        })?;
                        let port = num("MASTER_PORT")?.ok_or_else(|| {
                            Error::Env("RANK/WORLD_SIZE set but MASTER_PORT is not".into())
                        })?;
                        // Under real torchrun the elastic agent serves its own store on MASTER_PORT.
                        let port = port + usize::from(get("TORCHELASTIC_RUN_ID").is_some());
                        StoreAddr::Tcp(format!("{addr}:{port}"))
                    }
                };
                let job = match &store {
                    StoreAddr::Tcp(a) => Some(format!(
                        "{a}/{}",
                        get("TORCHELASTIC_RUN_ID").unwrap_or_default()
                    )),
                    StoreAddr::File(p) => Some(p.display().to_string()),
                };
                ("torchrun", r, s, num("LOCAL_RANK")?, store, job)
            } else {
                return Ok(None);
            };
        if size == 0 || rank >= size {
            return Err(Error::Env(format!(
                "{launcher}: rank {rank} is not within size {size}"
            )));
        }
        if size > MAX_RANKS {
            return Err(Error::Env(format!(
                "{launcher}: {size} ranks is above the limit of {MAX_RANKS}"
            )));
        }
        let job = job.unwrap_or_else(|| format!("{store:?}"));
        let (secret, source) = secret::resolve(&get, launcher, &job)?;
        tracing::debug!(launcher, ?source, "bootstrap secret");
        Ok(Some(Self {
            rank,
            size,
            local_rank,
            store,
            secret,
            launcher,
        }))
    }
}

fn rendezvous_file(launcher: &str, job: &str) -> PathBuf {
    let safe: String = job
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("oxccl-{launcher}-{safe}.store"))
}

/// `node[03-05,07],other` -> `node03`; `a,b` -> `a`.
fn first_slurm_host(list: &str) -> String {
    let first_end = list
        .char_indices()
        .scan(0i32, |depth, (i, c)| {
            match c {
                '[' => *depth += 1,
                ']' => *depth -= 1,
                _ => {}
            }
            Some((i, c, *depth))
        })
        .find(|&(_, c, d)| c == ',' && d == 0)
        .map_or(list.len(), |(i, _, _)| i);
    let first = &list[..first_end];
    match first.split_once('[') {
        Some((prefix, rest)) => {
            let range = rest.trim_end_matches(']');
            let lo = range.split([',', '-']).next().unwrap_or("");
            format!("{prefix}{lo}")
        }
        None => first.to_string(),
    }
}

/// This process's effective user id: the owner that the job's private files (the secret file,
/// the store's mark) must have.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Bootstrap> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Bootstrap::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn launchers_are_recognised() {
        let b = from(&[
            ("OXCCL_RANK", "1"),
            ("OXCCL_SIZE", "4"),
            ("OXCCL_STORE_ADDR", "h:1"),
            ("OXCCL_SECRET", "s"),
        ])
        .unwrap();
        assert_eq!(
            (b.launcher, b.rank, b.size, b.secret.as_slice()),
            ("oxccl", 1, 4, &b"s"[..])
        );
        assert_eq!(b.store, StoreAddr::Tcp("h:1".into()));

        let b = from(&[
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ("OMPI_MCA_ess_base_jobid", "77"),
        ])
        .unwrap();
        assert_eq!((b.launcher, b.rank, b.local_rank), ("mpirun", 2, Some(0)));
        assert!(matches!(b.store, StoreAddr::File(ref p) if p.to_string_lossy().contains("77")));

        let b = from(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_ID", "9"),
            ("SLURM_STEP_NODELIST", "gpu[07-09],x"),
        ])
        .unwrap();
        assert_eq!((b.launcher, b.rank, b.size), ("slurm", 3, 8));
        assert!(matches!(b.store, StoreAddr::Tcp(ref a) if a.starts_with("gpu07:")));

        let b = from(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(b.store, StoreAddr::Tcp("127.0.0.1:29500".into()));
        let b = from(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "x"),
        ])
        .unwrap();
        assert_eq!(b.store, StoreAddr::Tcp("a:29501".into()));
    }

    #[test]
    fn bad_environments_are_errors() {
        assert!(from(&[]).is_err());
        assert!(from(&[
            ("OXCCL_RANK", "4"),
            ("OXCCL_SIZE", "4"),
            ("OXCCL_STORE_ADDR", "h:1")
        ])
        .is_err());
        assert!(from(&[("OXCCL_RANK", "x"), ("OXCCL_SIZE", "4")]).is_err());
        assert!(from(&[("OXCCL_RANK", "0"), ("OXCCL_SIZE", "4")]).is_err());
        assert!(from(&[("RANK", "0"), ("WORLD_SIZE", "2")]).is_err());
        let e = from(&[
            ("OXCCL_RANK", "0"),
            ("OXCCL_SIZE", "99999999999"),
            ("OXCCL_STORE_ADDR", "h:1"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("above the limit"), "{e}");
    }

    #[test]
    fn partial_launcher_environments_name_what_is_missing() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2")],
                "MASTER_ADDR, MASTER_PORT are not",
            ),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")],
                "MASTER_ADDR is not",
            ),
            (&[("RANK", "0")], "WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "2")], "RANK is not"),
            (&[("OXCCL_RANK", "0")], "OXCCL_SIZE is not"),
            (
                &[("OXCCL_RANK", "0"), ("OXCCL_SIZE", "2")],
                "OXCCL_STORE_ADDR is not",
            ),
            (
                &[("OMPI_COMM_WORLD_SIZE", "2")],
                "OMPI_COMM_WORLD_RANK is not",
            ),
            (&[("SLURM_PROCID", "0")], "SLURM_NTASKS is not"),
        ];
        for (vars, want) in cases {
            let e = from(vars).unwrap_err().to_string();
            assert!(e.contains(want), "{vars:?}: {e}");
        }
        // No launcher variable at all: alone, not an error for from_vars_opt.
        assert!(Bootstrap::from_vars_opt(|_| None).unwrap().is_none());
        // An allocation's SLURM_NTASKS alone is no launcher.
        let m: HashMap<String, String> = [("SLURM_NTASKS".to_string(), "4".to_string())].into();
        assert!(Bootstrap::from_vars_opt(|k| m.get(k).cloned())
            .unwrap()
            .is_none());
        // OXCCL_STORE_ADDR overrides another launcher's store; alone it is no launcher.
        let b = from(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("OXCCL_STORE_ADDR", "h:5"),
            ("OXCCL_SECRET", "s"),
        ])
        .unwrap();
        assert_eq!(b.store, StoreAddr::Tcp("h:5".into()));
    }

    #[test]
    fn slurm_hosts() {
        assert_eq!(first_slurm_host("n[1-3,5]"), "n1");
        assert_eq!(first_slurm_host("a,b"), "a");
        assert_eq!(first_slurm_host("single"), "single");
    }
}
