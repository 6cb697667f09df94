//! The stream face of `shm`: the connection's own two rings, read and written as plain byte
//! streams (the layout of `crate::stream::ring`), so a collective reduces straight out of the
//! shared memory.

use super::conn::{ShmConnection, NAME};
use crate::error::Result;
use crate::stream::{ring, RingStream, SingleCopy, StreamConfig};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl ShmConnection {
    /// This connection's rings as a stream; the message face is done with them. Both ends
    /// convert with no message in flight (what each wrote was read), so the streams start
    /// where the records ended.
    /// The sender chooses its path per large message and its stores as `config` says.
    pub(super) fn stream(mut self, config: &StreamConfig) -> Result<RingStream> {
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
        // Both ends agreed on the threshold at connect; whether the peer can read us is its
        // probe's verdict, published when it set up its end (until then: through the ring).
        let map = self.map.clone();
        let peer_side = 1 - self.side;
        let single = SingleCopy::new(
            self.map.agreed_single_copy_min(),
            config.single_copy_choice,
            Arc::new(move || map.cma_ok(peer_side).load(Ordering::Acquire) == 1),
            Some(self.peer_pid),
        );
        Ok(
            RingStream::new(ends, NAME, self.peer.clone(), Some(self.peer_pid))
                .with_single_copy(single)
                .with_ring_nt(config.ring_nt),
        )
    }
}
