//! The stream face of `shm`: the connection's own two rings, read and written as plain byte
//! streams (the layout of `crate::stream::ring`), so a collective reduces straight out of the
//! shared memory.

use super::conn::{ShmConnection, NAME};
use crate::error::Result;
use crate::stream::{ring, RingStream};

impl ShmConnection {
    /// This connection's rings as a stream; the message face is done with them. Both ends
    /// convert with no message in flight (what each wrote was read), so the streams start
    /// where the records ended.
    pub(super) fn stream(mut self) -> Result<RingStream> {
        self.quiesce()?;
        // SAFETY: the mapping is a whole connection file (`file_len(ring_bytes)` bytes,
        // page-aligned) laid out as `stream::ring` says, kept alive by the Arc the ends hold;
        // this end is side `self.side` and, being consumed here, is the only user of its
        // writing and reading rings from now on.
        let ends = unsafe {
            ring::ends(
                self.map.base(),
                self.map.ring_bytes,
                self.side,
                self.map.clone(),
            )
        };
        self.detached = true;
        Ok(RingStream::new(
            ends,
            NAME,
            self.peer.clone(),
            Some(self.peer_pid),
        ))
    }
}
