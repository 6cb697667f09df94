//! A link to one peer: the transport's stream face ([`oxccl_transport::stream`]), one per
//! peer, in order: what the executor moves chunks over.
//!
//! Each link is non-blocking in both directions: `write` takes what fits, `peek` shows what has
//! arrived (a view straight into the shared-memory ring where there is one), `consume`
//! releases it. A failure (the peer aborted, the connection broke, the peer process is gone)
//! is the transport's typed [`oxccl_transport::Error`]; the executor wraps it with the
//! operation and the peer ([`crate::Error::PeerFailed`], which keeps it as its `source`).

pub(crate) mod blame;
pub(crate) mod connect;

use oxccl_transport::{Mailbox, Stream};

/// How a link moves bytes (reported by [`crate::Communicator::transport_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A ring pair in this process's memory (ranks that are threads).
    Memory,
    /// The ring pair of a shared-memory connection (processes on one host).
    Shm,
    /// `oxccl-transport`'s TCP fabric, through its stream proxy.
    Tcp,
    /// `oxccl-transport`'s RDMA fabric (a NIC, or the software verbs model), through its
    /// stream proxy.
    Rdma,
    /// Another `oxccl-transport` fabric, by name, through its stream proxy.
    Fabric(&'static str),
}

impl LinkKind {
    /// Whether the link's bytes move through a proxy thread of the transport (every fabric but
    /// the rings in memory and shared memory): a thread that wants a core besides the ranks'.
    pub(crate) fn has_proxy(self) -> bool {
        !matches!(self, LinkKind::Memory | LinkKind::Shm)
    }
}

/// The result of a link operation: the transport's own error on failure.
pub(crate) type LinkResult<T> = Result<T, oxccl_transport::Error>;

pub(crate) struct Link {
    stream: Box<dyn Stream>,
}

impl Link {
    pub fn new(stream: Box<dyn Stream>) -> Self {
        Link { stream }
    }

    pub fn kind(&self) -> LinkKind {
        match self.stream.fabric() {
            "loopback" => LinkKind::Memory,
            "shm" => LinkKind::Shm,
            "tcp" => LinkKind::Tcp,
            "rdma" => LinkKind::Rdma,
            other => LinkKind::Fabric(other),
        }
    }

    #[inline]
    pub fn write(&mut self, data: &[u8]) -> LinkResult<usize> {
        self.stream.write(data)
    }

    #[inline]
    pub fn peek(&mut self) -> LinkResult<&[u8]> {
        self.stream.peek()
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.stream.consume(n);
    }

    /// The mailbox for whole tiny messages, where the link has one (rings on this host).
    #[inline]
    pub fn mailbox(&mut self) -> Option<Mailbox<'_>> {
        self.stream.mailbox()
    }

    /// Starts an orderly close: a proxied link sends what is left (dropping the link then
    /// waits for it).
    pub fn close(&mut self) {
        self.stream.close();
    }

    /// Tells the peer this rank gives up: it sees an error at its next wait on this link.
    pub fn abort(&mut self) {
        self.stream.abort();
    }

    /// The stream itself, for its single-copy path ([`Stream::offer`], [`Stream::pull`]).
    #[inline]
    pub fn stream(&mut self) -> &mut dyn Stream {
        &mut *self.stream
    }

    /// The doorbell this rank can sleep on while it waits for the peer, where the link has
    /// one (rings on this host).
    pub fn doorbell(&self) -> Option<oxccl_transport::stream::Doorbell> {
        self.stream.doorbell()
    }

    /// Slow checks run while waiting: is the peer still there?
    pub fn check_alive(&mut self) -> LinkResult<()> {
        self.stream.check_alive()
    }
}

#[cfg(test)]
mod tests {
    use crate::options::{LocalTransport, Options};
    use crate::Communicator;

    /// The idle policy a rank of `comm` got, and the one its host's `threads` waiting threads
    /// on its ranks' cores call for.
    fn policies(comm: &Communicator, threads: usize) -> [crate::options::IdlePolicy; 2] {
        let topo = &comm.inner.topology;
        let cores = topo.cores_on(topo.host_of[comm.rank()]);
        let state = comm.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let want = comm.options().idle_policy(threads, cores);
        [state.engine.idle_policy, want]
    }

    #[test]
    fn a_rank_waits_as_its_ranks_and_their_proxies_call_for() {
        // Two ranks over TCP run two executors and a proxy each (four threads: oversubscribed
        // on 2 cores, where the ranks alone are not); over memory rings, two threads.
        for (transport, threads) in [(LocalTransport::Tcp, 4), (LocalTransport::Memory, 2)] {
            let comms = Communicator::local_with(2, transport, Options::default()).unwrap();
            for c in &comms {
                let [got, want] = policies(c, threads);
                assert_eq!(got, want, "{transport:?}");
            }
        }
        // The count changes the policy where it crosses the cores.
        let o = Options::default();
        assert_ne!(o.idle_policy(4, 2).spin, o.idle_policy(2, 2).spin);
    }
}
