//! The job's shared secret, which the store asks of every connection.
//!
//! First found wins:
//! 1. `OXCCL_SECRET` (the local launcher `oxccl-bench --ranks N` sets a random one per job);
//! 2. `OXCCL_SECRET_FILE`: a file only its owner can read (mode 0600 or stricter);
//! 3. the per-user secret file `$XDG_CONFIG_HOME/oxccl/secret` (`~/.config/oxccl/secret`),
//!    created with 32 random bytes and mode 0600 by the first rank that needs it. Every rank of
//!    a job must see the same file: on one host it always does; across hosts it does when home
//!    directories are shared (the usual cluster setup), otherwise copy the file or set
//!    `OXCCL_SECRET`.
//!
//! The launcher and its job id are mixed in, so a rank of an earlier job of the same user is
//! refused too. Only when none of these can be had (no home directory) is the secret derived from
//! values others can see; that is logged once as a warning.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Where the secret came from, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Env,
    File,
    UserFile,
    /// Derived from the launcher's visible values: keeps other jobs out by accident, not by
    /// intent.
    Derived,
}

/// The secret for a job of `launcher` with `job` id, from the variables `get` reads.
pub fn resolve(
    get: &dyn Fn(&str) -> Option<String>,
    launcher: &str,
    job: &str,
) -> Result<(Vec<u8>, Source)> {
    if let Some(s) = get("OXCCL_SECRET").filter(|s| !s.is_empty()) {
        return Ok((s.into_bytes(), Source::Env));
    }
    let with_job = |mut key: Vec<u8>| {
        key.extend_from_slice(format!(":oxccl-job:{launcher}:{job}").as_bytes());
        key
    };
    if let Some(path) = get("OXCCL_SECRET_FILE").filter(|s| !s.is_empty()) {
        let key = read_private(Path::new(&path))?;
        return Ok((with_job(key), Source::File));
    }
    match user_file(get) {
        Some(path) => {
            let key = read_or_create(&path)?;
            Ok((with_job(key), Source::UserFile))
        }
        None => {
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "no real secret: OXCCL_SECRET is not set and there is no home directory for \
                     the per-user secret file, so the job's secret is derived from values other \
                     users can see; set OXCCL_SECRET (see the README, Failure handling and security)"
                )
            });
            Ok((
                format!("oxccl-job:{launcher}:{job}").into_bytes(),
                Source::Derived,
            ))
        }
    }
}

/// `$XDG_CONFIG_HOME/oxccl/secret`, else `$HOME/.config/oxccl/secret`.
fn user_file(get: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = get("XDG_CONFIG_HOME")
        .filter(|s| s.starts_with('/'))
        .map(PathBuf::from)
        .or_else(|| {
            get("HOME")
                .filter(|s| s.starts_with('/'))
                .map(|h| Path::new(&h).join(".config"))
        })?;
    Some(base.join("oxccl").join("secret"))
}

/// The file's bytes, refused when anyone but its owner can read or write it (as ssh does).
fn read_private(path: &Path) -> Result<Vec<u8>> {
    let io = |e| Error::io(format!("reading the secret file {}", path.display()), e);
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Env(format!(
            "the secret file {} has mode {mode:04o}: others can read it; chmod 600 it",
            path.display()
        )));
    }
    let me = super::euid();
    if meta.uid() != me {
        return Err(Error::Env(format!(
            "the secret file {} belongs to uid {}, not to this user ({me})",
            path.display(),
            meta.uid()
        )));
    }
    let key = std::fs::read(path).map_err(io)?;
    if key.len() < 16 {
        return Err(Error::Env(format!(
            "the secret file {} holds {} bytes; at least 16 are needed",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}

/// Reads the per-user file, creating it first (0600, 32 random bytes as hex) when it does not
/// exist. Ranks starting together race to create it: each writes a private temporary file and
/// hard-links it into place, which fails for all but the first, who then read the winner's.
fn read_or_create(path: &Path) -> Result<Vec<u8>> {
    if path.exists() {
        return read_private(path);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let tmp = dir.join(format!(".secret.{}.{}", std::process::id(), random_hex(8)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(random_hex(32).as_bytes())?;
        f.sync_all()
    };
    let made = write().and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&tmp);
    made.map_err(|e| Error::io(format!("creating the secret file {}", path.display()), e))?;
    tracing::info!(path = %path.display(), "created the per-user secret file");
    read_private(path)
}

fn random_hex(bytes: usize) -> String {
    crate::comm::random_hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "oxccl-secret-test-{name}-{}-{}",
            std::process::id(),
            random_hex(4)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_user_file_is_created_private_and_reused() {
        let home = scratch("home");
        let get = vars(&[("HOME", home.display().to_string())]);
        let (a, src) = resolve(&get, "mpirun", "77").unwrap();
        assert_eq!(src, Source::UserFile);
        let file = home.join(".config/oxccl/secret");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // The same user and job: the same secret; another job: another.
        assert_eq!(resolve(&get, "mpirun", "77").unwrap().0, a);
        assert_ne!(resolve(&get, "mpirun", "78").unwrap().0, a);
        // Someone else's home (another user) gives another secret for the same job.
        let other = scratch("other");
        let get2 = vars(&[("HOME", other.display().to_string())]);
        assert_ne!(resolve(&get2, "mpirun", "77").unwrap().0, a);
        // Nothing of the secret is in the visible values.
        let key = std::fs::read(&file).unwrap();
        assert_eq!(key.len(), 64);
        std::fs::remove_dir_all(home).unwrap();
        std::fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn ranks_racing_to_create_agree() {
        let home = scratch("race");
        let h = home.display().to_string();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let h = h.clone();
                    s.spawn(move || resolve(&vars(&[("HOME", h)]), "torchrun", "j").unwrap().0)
                })
                .collect();
            hs.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn readable_files_are_refused_and_env_wins() {
        let dir = scratch("file");
        let f = dir.join("s");
        std::fs::write(&f, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let get = vars(&[("OXCCL_SECRET_FILE", f.display().to_string())]);
        let e = resolve(&get, "slurm", "1").unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve(&get, "slurm", "1").unwrap().1, Source::File);
        let get = vars(&[
            ("OXCCL_SECRET", "given".into()),
            ("OXCCL_SECRET_FILE", f.display().to_string()),
        ]);
        assert_eq!(
            resolve(&get, "slurm", "1").unwrap(),
            (b"given".to_vec(), Source::Env)
        );
        // No home at all: derived, and said so.
        assert_eq!(
            resolve(&vars(&[]), "slurm", "1").unwrap().1,
            Source::Derived
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
