//! Shared-memory links between processes of one host: a file in `/dev/shm` (or the temporary
//! directory where there is none) holding two rings, one per direction, mapped by both.
//!
//! The lower rank creates and sizes the file and announces it through the store; the higher
//! rank maps it and removes the name (the mapping stays valid), so nothing is left behind
//! once both are connected.

use super::ring::{RingMem, RingReader, RingWriter};
use super::{Link, LinkKind};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

pub fn dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

pub fn path(session: &str, low: usize, high: usize) -> PathBuf {
    dir().join(format!("oxccl-{session}-{low}-{high}"))
}

fn map(path: &Path, create: bool, cap: usize) -> std::io::Result<std::sync::Arc<RingMem>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(path)?;
    let size = RingMem::size(2, cap) as u64;
    if create {
        file.set_len(size)?;
    } else if file.metadata()?.len() != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} has the wrong size (ring sizes differ between ranks?)",
                path.display()
            ),
        ));
    }
    // SAFETY: the file is private to this job (a random session name, created exclusively);
    // both processes access its contents only through the ring protocol's atomics and the
    // regions those atomics hand over.
    let m = unsafe { memmap2::MmapMut::map_mut(&file)? };
    Ok(RingMem::map(m))
}

/// The lower rank's side: creates the file. Ring 0 carries low -> high, ring 1 high -> low.
pub fn create(path: &Path, cap: usize, peer_pid: u32) -> std::io::Result<Link> {
    let mem = map(path, true, cap)?;
    Ok(Link::Ring {
        tx: RingWriter::attach(mem.clone(), 0, cap),
        rx: RingReader::attach(mem, 1, cap),
        pid: Some(peer_pid),
        kind: LinkKind::Shm,
    })
}

/// The higher rank's side: maps the file the lower rank created, then removes its name.
pub fn open(path: &Path, cap: usize, peer_pid: u32) -> std::io::Result<Link> {
    let mem = map(path, false, cap)?;
    let _ = std::fs::remove_file(path);
    Ok(Link::Ring {
        tx: RingWriter::attach(mem.clone(), 1, cap),
        rx: RingReader::attach(mem, 0, cap),
        pid: Some(peer_pid),
        kind: LinkKind::Shm,
    })
}

/// Two in-process ends, for ranks that are threads: (low's link, high's link).
pub fn memory_pair(cap: usize) -> (Link, Link) {
    let mem = RingMem::heap(2, cap);
    let low = Link::Ring {
        tx: RingWriter::attach(mem.clone(), 0, cap),
        rx: RingReader::attach(mem.clone(), 1, cap),
        pid: None,
        kind: LinkKind::Memory,
    };
    let high = Link::Ring {
        tx: RingWriter::attach(mem.clone(), 1, cap),
        rx: RingReader::attach(mem, 0, cap),
        pid: None,
        kind: LinkKind::Memory,
    };
    (low, high)
}

/// Two ends over a shm file, for thread ranks that want to exercise the shm path.
pub fn file_pair(
    session: &str,
    low: usize,
    high: usize,
    cap: usize,
) -> std::io::Result<(Link, Link)> {
    let p = path(session, low, high);
    let pid = std::process::id();
    let a = create(&p, cap, pid)?;
    let b = open(&p, cap, pid)?;
    let fix = |l: Link| match l {
        Link::Ring { tx, rx, kind, .. } => Link::Ring {
            tx,
            rx,
            pid: None,
            kind,
        },
        other => other,
    };
    Ok((fix(a), fix(b)))
}
