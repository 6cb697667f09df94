//! The stream face of a `tcp` connection: a proxy thread that moves the executor's rings
//! through the connection's sockets itself, without the generic proxy's message layer.
//!
//! The generic proxy ([`crate::stream::ProxyStream::start`]) sends each piece of the stream
//! as two tagged messages and receives it through a view, which reads the socket into a
//! staging buffer and copies that into the executor's ring; it sends one piece at a time, so
//! the sockets of a connection idle while the last bytes of a piece drain. Here:
//!
//! * The stream is cut into chunks of at most `chunk_max` bytes, chunk `j` travelling on
//!   socket `j % nsocks` behind a checked [`wire::KIND_STREAM`] header (`tag` = `j`, `len` =
//!   its length), so both ends know where every chunk goes without a message layer.
//! * Up to `nsocks` chunks are in flight at once, one per socket, written straight from the
//!   executor's outgoing ring and released when the kernel took them in order.
//! * Chunks are read straight from the socket into the executor's incoming ring, in order
//!   (the next chunk's bytes wait in its own socket's kernel buffer meanwhile): the one copy
//!   any receive needs, no staging.
//! * Sending and receiving alternate in one loop that never waits on either, so a rank's
//!   sends progress while it receives and the other way round.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::sync::atomic::Ordering;

use socket2::{SockRef, Socket};

use super::conn::TcpConnection;
use super::wire::{self, Frame, FRAME_LEN, KIND_STREAM};
use super::NAME;
use crate::error::{Error, Result};
use crate::stream::ring::{RingReader, RingWriter};
use crate::stream::{stopped, Idle, ProxyEnds, ProxyStream, Stop, Stream, StreamConfig};
use std::os::fd::AsRawFd;

/// Largest stream chunk, and largest length a stream header may announce: the limit of the
/// protocol, not of this end's ring (the peer's `OXCCL_RING_BYTES` may differ; a chunk is read
/// into the ring piecewise whatever its length).
pub const MAX_CHUNK: usize = 256 << 10;

/// The chunk size for a ring of `ring_bytes` over `nsocks` sockets: every socket can have a
/// chunk in flight while the executor fills the other half of the ring.
fn chunk_max(ring_bytes: usize, nsocks: usize) -> usize {
    (ring_bytes / 2 / nsocks).clamp(4096, MAX_CHUNK)
}

impl TcpConnection {
    /// This connection as a stream (see the module documentation). Fails when a message is
    /// still in flight either way: its bytes would be taken for stream bytes.
    pub(super) fn start_stream(
        mut self,
        fabric: &'static str,
        config: &StreamConfig,
    ) -> Result<Box<dyn Stream>> {
        let leftover = self.idle_leftover()?;
        let socks = std::mem::take(&mut self.socks);
        let peer = self.peer.clone();
        let chunk = chunk_max(config.ring_bytes, socks.len());
        let thread_peer = peer.clone();
        let stream = ProxyStream::spawn(fabric, peer, config, move |ends| {
            let ProxyEnds {
                mut to_net,
                mut from_net,
                closing,
                spin,
                failure,
                wake,
            } = ends;
            let mut pump = Pump {
                socks: &socks,
                peer: &thread_peer,
                tx: Sender {
                    chunks: VecDeque::new(),
                    next: 0,
                    carved: 0,
                    chunk,
                },
                rx: Receiver {
                    next: 0,
                    hdr: [0; FRAME_LEN],
                    fill: 0,
                    left: 0,
                    leftover,
                    leftover_at: 0,
                    eof: vec![false; socks.len()],
                    ring_full: false,
                },
            };
            let mut idle = Idle::new(spin);
            let mut fds = Vec::with_capacity(socks.len() + 1);
            let stop = loop {
                let step = pump
                    .send(&mut to_net)
                    .and_then(|sent| Ok(sent | pump.receive(&mut from_net)?));
                match step {
                    Err(stop) => break Err(stop),
                    Ok(true) => idle.reset(),
                    Ok(false) => {
                        if from_net.aborted() {
                            break Err(Stop::Executor);
                        }
                        if pump.tx.chunks.is_empty() && closing.load(Ordering::Acquire) {
                            // Everything the executor wrote is in the kernel, which delivers
                            // it before the FIN.
                            if to_net.peek().map_or(true, |v| v.is_empty()) {
                                break Ok(());
                            }
                        }
                        pump.wait_fds(&mut fds);
                        let closing = &closing;
                        let space = pump.rx.ring_full;
                        // Its sockets and the eventfd cover every wake-up (`wait_fds`).
                        let quiet =
                            pump.tx.chunks.is_empty() && pump.rx.left == 0 && pump.rx.fill == 0;
                        idle.wait(&wake, space, quiet, &mut fds, || {
                            closing.load(Ordering::SeqCst)
                                || pump.executor_moved(&mut to_net, &mut from_net)
                        });
                    }
                }
            };
            stopped(&failure, &from_net, &thread_peer, stop);
            for s in &socks {
                let _ = SockRef::from(s).shutdown(std::net::Shutdown::Write);
            }
        })?;
        Ok(Box::new(stream))
    }
}

/// One chunk being written: at `start` bytes past the ring's tail, `len` long.
struct TxChunk {
    sock: usize,
    start: usize,
    len: usize,
    hdr: [u8; FRAME_LEN],
    hdr_done: usize,
    done: usize,
}

impl TxChunk {
    fn complete(&self) -> bool {
        self.hdr_done == FRAME_LEN && self.done == self.len
    }
}

struct Sender {
    /// In flight, oldest first; chunk `next - chunks.len() + i` is `chunks[i]`.
    chunks: VecDeque<TxChunk>,
    next: u64,
    /// Bytes past the ring's tail that belong to chunks in flight.
    carved: usize,
    chunk: usize,
}

struct Receiver {
    /// The chunk being read.
    next: u64,
    hdr: [u8; FRAME_LEN],
    fill: usize,
    /// Bytes of chunk `next` still to read (0: its header is due).
    left: usize,
    /// What socket 0 had delivered to the message layer's buffer before the conversion.
    leftover: Vec<u8>,
    leftover_at: usize,
    eof: Vec<bool>,
    /// The executor's ring had no room at the last look: waiting for a socket to become
    /// readable would wake at once and change nothing.
    ring_full: bool,
}

struct Pump<'s> {
    socks: &'s [Socket],
    peer: &'s str,
    tx: Sender,
    rx: Receiver,
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

fn closed(peer: &str, during: String) -> Stop {
    Stop::Peer(Error::PeerClosed {
        transport: NAME,
        peer: peer.to_string(),
        during,
    })
}

fn io_error(peer: &str, what: &str, e: io::Error) -> Stop {
    if gone(&e) {
        return closed(peer, format!(" while {what} its stream"));
    }
    Stop::Peer(Error::io(NAME, format!("{what} the stream of {peer}"), e))
}

impl Pump<'_> {
    /// The sockets an idle proxy waits for: the one the next chunk arrives on (unless the
    /// executor's ring is full: then only the executor can unblock it), and those with a
    /// chunk half-written.
    fn wait_fds(&self, fds: &mut Vec<libc::pollfd>) {
        fds.clear();
        let k = (self.rx.next % self.socks.len() as u64) as usize;
        if !self.rx.eof[k] && !self.rx.ring_full {
            fds.push(libc::pollfd {
                fd: self.socks[k].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in self.tx.chunks.iter().filter(|c| !c.complete()) {
            fds.push(libc::pollfd {
                fd: self.socks[c.sock].as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
    }

    /// Whether the executor gave this proxy something to do since its last pass: bytes to
    /// carve into a chunk (with a socket free to take it), space for a chunk that waits for
    /// the ring, or an end (a closed or aborted ring).
    fn executor_moved(&self, to_net: &mut RingReader, from_net: &mut RingWriter) -> bool {
        let carve = self.tx.chunks.len() < self.socks.len()
            && to_net.peek().map_or(true, |v| v.len() > self.tx.carved);
        let room = self.rx.ring_full && from_net.free_space().map_or(true, |s| !s.is_empty());
        carve || room || from_net.aborted()
    }

    /// Carves new chunks from what the executor wrote and writes what the sockets take;
    /// true if anything moved.
    fn send(&mut self, to_net: &mut RingReader) -> std::result::Result<bool, Stop> {
        let (socks, peer) = (self.socks, self.peer);
        let n = socks.len();
        let mut moved = false;
        loop {
            let view = to_net.peek().map_err(|()| Stop::Executor)?;
            let tx = &mut self.tx;
            while tx.chunks.len() < n && tx.carved < view.len() {
                let len = tx.chunk.min(view.len() - tx.carved);
                tx.chunks.push_back(TxChunk {
                    sock: (tx.next % n as u64) as usize,
                    start: tx.carved,
                    len,
                    hdr: Frame {
                        kind: KIND_STREAM,
                        tag: tx.next,
                        len: len as u64,
                    }
                    .encode(),
                    hdr_done: 0,
                    done: 0,
                });
                tx.next += 1;
                tx.carved += len;
            }
            let mut progressed = false;
            for c in tx.chunks.iter_mut().filter(|c| !c.complete()) {
                let data = &view[c.start + c.done..c.start + c.len];
                let bufs = [IoSlice::new(&c.hdr[c.hdr_done..]), IoSlice::new(data)];
                match socks[c.sock].send_vectored_with_flags(&bufs, libc::MSG_NOSIGNAL) {
                    Ok(mut m) => {
                        let h = m.min(FRAME_LEN - c.hdr_done);
                        c.hdr_done += h;
                        m -= h;
                        c.done += m;
                        progressed = true;
                    }
                    Err(e) if retry(&e) => {}
                    Err(e) => return Err(io_error(peer, "sending", e)),
                }
            }
            let mut released = 0;
            while tx.chunks.front().is_some_and(TxChunk::complete) {
                if let Some(c) = tx.chunks.pop_front() {
                    released += c.len;
                }
            }
            if released > 0 {
                for c in tx.chunks.iter_mut() {
                    c.start -= released;
                }
                tx.carved -= released;
                to_net.consume(released);
            }
            moved |= progressed;
            if !progressed {
                return Ok(moved);
            }
        }
    }

    /// Reads from socket `k` into `dst`: Ok(0) with `dst` non-empty means "nothing now" (or
    /// the socket ended: `eof[k]`).
    fn read(&mut self, k: usize, dst: &mut [u8]) -> std::result::Result<usize, Stop> {
        let rx = &mut self.rx;
        if k == 0 && rx.leftover_at < rx.leftover.len() {
            let m = dst.len().min(rx.leftover.len() - rx.leftover_at);
            dst[..m].copy_from_slice(&rx.leftover[rx.leftover_at..rx.leftover_at + m]);
            rx.leftover_at += m;
            return Ok(m);
        }
        if rx.eof[k] || dst.is_empty() {
            return Ok(0);
        }
        match (&self.socks[k]).read(dst) {
            Ok(0) => {
                rx.eof[k] = true;
                Ok(0)
            }
            Ok(m) => Ok(m),
            Err(e) if retry(&e) => Ok(0),
            Err(e) if gone(&e) => {
                rx.eof[k] = true;
                Ok(0)
            }
            Err(e) => Err(io_error(self.peer, "receiving", e)),
        }
    }

    /// Reads chunks in order into the executor's ring; true if anything moved.
    fn receive(&mut self, from_net: &mut RingWriter) -> std::result::Result<bool, Stop> {
        let n = self.socks.len() as u64;
        let mut moved = false;
        loop {
            let k = (self.rx.next % n) as usize;
            self.rx.ring_full = false;
            if self.rx.left == 0 {
                let mut hdr = self.rx.hdr;
                let from = self.rx.fill;
                let got = self.read(k, &mut hdr[from..])?;
                self.rx.hdr = hdr;
                self.rx.fill += got;
                moved |= got > 0;
                if self.rx.fill < FRAME_LEN {
                    if got == 0 && self.rx.eof[k] {
                        // Between chunks: the peer closed its stream (an error only for a
                        // rank that still waits for data, which the closed ring tells).
                        let during = if self.rx.fill == 0 {
                            String::new()
                        } else {
                            format!(
                                " {} bytes into the header of stream chunk {}",
                                self.rx.fill, self.rx.next
                            )
                        };
                        return Err(closed(self.peer, during));
                    }
                    return Ok(moved);
                }
                self.rx.fill = 0;
                self.rx.left = wire::decode_stream_chunk(&self.rx.hdr, self.rx.next, MAX_CHUNK)
                    .map_err(|why| Stop::Malformed(format!("socket {k}: {why}")))?;
            }
            let space = from_net.free_space().map_err(|()| Stop::Executor)?;
            self.rx.ring_full = space.is_empty();
            if space.is_empty() {
                return Ok(moved);
            }
            let want = self.rx.left.min(space.len());
            // The ring's free space is only borrowed for the read; `commit` publishes it.
            let got = {
                let space = &mut space[..want];
                self.read(k, space)?
            };
            if got == 0 {
                if self.rx.eof[k] {
                    let during = format!(
                        " with {} bytes of stream chunk {} still to come",
                        self.rx.left, self.rx.next
                    );
                    return Err(closed(self.peer, during));
                }
                return Ok(moved);
            }
            from_net.commit(got);
            self.rx.left -= got;
            if self.rx.left == 0 {
                self.rx.next += 1;
            }
            moved = true;
        }
    }
}
