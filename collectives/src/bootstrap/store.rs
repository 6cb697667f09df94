//! The rendezvous store: rank 0 serves a small key-value store over TCP that the ranks use to
//! exchange endpoint addresses (as Gloo's `TCPStore` and torch's `c10d::TCPStore`).
//!
//! Every connection starts with the job's shared secret, which the server compares in constant
//! time and refuses when it differs. This keeps strangers out of a job: another job that happens
//! to use the same port, a stale rank of an earlier run, or a port scanner. The secret travels in
//! clear text, so it does not protect against someone who can read the network between the
//! ranks (run the store on a trusted network, as with every MPI launcher).
//!
//! Wire format, all integers little-endian: hello `b"OXST" u32 len secret` answered by one byte
//! (1 accepted, 0 refused); then requests `u8 cmd, u32 klen, key, u32 vlen, value` where cmd is
//! 1 (set; answer: one byte 1) or 2 (get; answer: one byte found, and when found `u32 vlen, value`).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"OXST";
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 16 << 20;
const CMD_SET: u8 = 1;
const CMD_GET: u8 = 2;

/// The store's server side, run by rank 0. Stops (and closes its port) when dropped.
pub struct StoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StoreServer {
    /// Binds `addr` and serves the store from a background thread.
    pub fn serve(addr: &str, secret: &[u8]) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            if e.kind() == ErrorKind::AddrInUse {
                Error::AddrInUse {
                    addr: addr.to_string(),
                }
            } else {
                Error::io(format!("binding the store on {addr}"), e)
            }
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("store address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("store listener", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let map: Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>> = Arc::default();
        let secret = secret.to_vec();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("oxccl-store".into())
            .spawn(move || accept_loop(listener, secret, map, stop2))
            .map_err(|e| Error::io("spawning the store thread", e))?;
        tracing::debug!(%local, "store serving");
        Ok(Self {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Map = Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>;

fn accept_loop(listener: TcpListener, secret: Vec<u8>, map: Map, stop: Arc<AtomicBool>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let (secret, map, stop) = (secret.clone(), map.clone(), stop.clone());
                conns.push(std::thread::spawn(move || {
                    if let Err(e) = serve_conn(stream, &secret, &map, &stop) {
                        tracing::debug!(%peer, error = %e, "store connection ended");
                    }
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => {
                tracing::warn!(error = %e, "store accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Reads exactly `buf.len()` bytes, waking every 100 ms to see whether the server is stopping.
fn read_full(s: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        if stop.load(Ordering::Relaxed) {
            return Err(ErrorKind::Interrupted.into());
        }
        match s.read(&mut buf[done..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_u32(s: &mut TcpStream, stop: &AtomicBool) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    read_full(s, &mut b, stop)?;
    Ok(u32::from_le_bytes(b))
}

fn read_bytes(s: &mut TcpStream, max: usize, stop: &AtomicBool) -> std::io::Result<Vec<u8>> {
    let len = read_u32(s, stop)? as usize;
    if len > max {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("length {len} exceeds {max}"),
        ));
    }
    let mut v = vec![0u8; len];
    read_full(s, &mut v, stop)?;
    Ok(v)
}

/// Compares without an early exit, so the time taken does not tell how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn serve_conn(
    mut s: TcpStream,
    secret: &[u8],
    map: &Map,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    s.set_nodelay(true)?;
    let mut magic = [0u8; 4];
    read_full(&mut s, &mut magic, stop)?;
    let offered = read_bytes(&mut s, 4096, stop)?;
    if &magic != MAGIC || !constant_time_eq(&offered, secret) {
        tracing::warn!(peer = ?s.peer_addr().ok(), "store refused a connection: wrong secret");
        s.write_all(&[0])?;
        return Ok(());
    }
    s.write_all(&[1])?;
    loop {
        let mut cmd = [0u8; 1];
        read_full(&mut s, &mut cmd, stop)?;
        let key = read_bytes(&mut s, MAX_KEY, stop)?;
        let value = read_bytes(&mut s, MAX_VALUE, stop)?;
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        match cmd[0] {
            CMD_SET => {
                map.insert(key, value);
                drop(map);
                s.write_all(&[1])?;
            }
            CMD_GET => {
                let reply = match map.get(&key) {
                    Some(v) => {
                        let mut r = Vec::with_capacity(5 + v.len());
                        r.push(1);
                        r.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        r.extend_from_slice(v);
                        r
                    }
                    None => vec![0],
                };
                drop(map);
                s.write_all(&reply)?;
            }
            other => {
                return Err(std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("unknown store command {other}"),
                ))
            }
        }
    }
}

/// A connection to the store.
pub struct StoreClient {
    stream: TcpStream,
    addr: String,
}

impl StoreClient {
    /// Connects to `addr`, retrying until `deadline` (rank 0 may not be serving yet), and
    /// authenticates with `secret`.
    pub fn connect(addr: &str, secret: &[u8], deadline: Instant) -> Result<Self> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(5);
        let stream = loop {
            let target: Option<SocketAddr> = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
            let attempt = match target {
                Some(t) => TcpStream::connect_timeout(&t, Duration::from_secs(2)),
                None => Err(std::io::Error::new(
                    ErrorKind::NotFound,
                    format!("cannot resolve {addr}"),
                )),
            };
            match attempt {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::BootstrapTimeout {
                        what: format!("connecting to the store at {addr} (last error: {e})"),
                        after: start.elapsed(),
                    })
                }
                Err(_) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        };
        let io = |e| Error::io(format!("talking to the store at {addr}"), e);
        stream.set_nodelay(true).map_err(io)?;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_read_timeout(Some(left)).map_err(io)?;
        let mut client = Self {
            stream,
            addr: addr.to_string(),
        };
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&(secret.len() as u32).to_le_bytes());
        hello.extend_from_slice(secret);
        client.stream.write_all(&hello).map_err(io)?;
        let mut ok = [0u8; 1];
        match client.stream.read_exact(&mut ok) {
            Ok(()) if ok[0] == 1 => Ok(client),
            Ok(()) => Err(Error::Refused {
                addr: addr.to_string(),
            }),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(Error::Refused {
                addr: addr.to_string(),
            }),
            Err(e) => Err(io(e)),
        }
    }

    /// The local address of this connection: the address at which rank 0's host reaches us.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.stream.local_addr().ok().map(|a| a.ip())
    }

    fn request(&mut self, cmd: u8, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>> {
        let addr = self.addr.clone();
        let io = |e| Error::io(format!("talking to the store at {addr}"), e);
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(Error::Env(format!("store entry {key} too large")));
        }
        let mut msg = Vec::with_capacity(9 + key.len() + value.len());
        msg.push(cmd);
        msg.extend_from_slice(&(key.len() as u32).to_le_bytes());
        msg.extend_from_slice(key.as_bytes());
        msg.extend_from_slice(&(value.len() as u32).to_le_bytes());
        msg.extend_from_slice(value);
        self.stream.write_all(&msg).map_err(io)?;
        let mut found = [0u8; 1];
        self.stream.read_exact(&mut found).map_err(io)?;
        if cmd == CMD_SET || found[0] == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(io)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_VALUE {
            return Err(Error::Env(format!(
                "store sent an oversized value for {key}"
            )));
        }
        let mut v = vec![0u8; len];
        self.stream.read_exact(&mut v).map_err(io)?;
        Ok(Some(v))
    }

    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.request(CMD_SET, key, value).map(|_| ())
    }

    /// The value of `key`, or `None` when nobody has set it yet.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.request(CMD_GET, key, &[])
    }

    /// Waits until `key` is set and returns its value; fails when `deadline` passes first.
    pub fn wait(&mut self, key: &str, deadline: Instant) -> Result<Vec<u8>> {
        let start = Instant::now();
        let mut backoff = Duration::from_micros(200);
        loop {
            if let Some(v) = self.get(key)? {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(Error::BootstrapTimeout {
                    what: format!("waiting for store key {key:?} (did every rank start?)"),
                    after: start.elapsed(),
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_wait_and_refusal() {
        let server = StoreServer::serve("127.0.0.1:0", b"s3cret").unwrap();
        let addr = server.addr().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut a = StoreClient::connect(&addr, b"s3cret", deadline).unwrap();
        let mut b = StoreClient::connect(&addr, b"s3cret", deadline).unwrap();
        assert_eq!(a.get("k").unwrap(), None);
        a.set("k", b"v1").unwrap();
        assert_eq!(b.wait("k", deadline).unwrap(), b"v1");
        let short = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            b.wait("missing", short),
            Err(Error::BootstrapTimeout { .. })
        ));
        let refused = StoreClient::connect(&addr, b"wrong", deadline).err();
        assert!(
            matches!(refused, Some(Error::Refused { .. })),
            "{refused:?}"
        );
    }

    #[test]
    fn port_in_use_is_a_clear_error() {
        let server = StoreServer::serve("127.0.0.1:0", b"x").unwrap();
        let again = StoreServer::serve(&server.addr().to_string(), b"x");
        assert!(matches!(again, Err(Error::AddrInUse { .. })));
    }
}
