//! Shared-memory files are private to their user and gone once the ends are.

use oxccl_transport::shm::{Shm, ShmConfig};
use oxccl_transport::{Listener as _, Transport as _};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

#[test]
fn listener_directories_and_ring_files_are_private_and_removed() {
    let root = std::env::temp_dir().join(format!("oxccl-shm-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    // A permissive umask must not matter.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0) };
    let shm = Shm::with_config(ShmConfig {
        dir: root.clone(),
        ring_bytes: 4096,
        ..ShmConfig::default()
    })
    .unwrap();
    let listener = shm.listen().unwrap();
    let dirs = entries(&root);
    assert_eq!(dirs.len(), 1);
    assert_eq!(mode(&dirs[0]), 0o700, "{}", dirs[0].display());
    let pending = shm.connect(&listener.address()).unwrap();
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old) };
    let files = entries(&dirs[0]);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600, "{}", files[0].display());
    // Given up before acceptance: the file goes; the listener's directory goes with it.
    drop(pending);
    assert!(entries(&dirs[0]).is_empty());
    drop(listener);
    assert!(entries(&root).is_empty());
    std::fs::remove_dir_all(root).unwrap();
}
