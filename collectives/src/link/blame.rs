//! Who failed first: a notice board shared by a communicator's ranks, so that every survivor's
//! error names the rank where a failure began and the operation it was in, not the neighbour
//! that passed the abort on (NCCL's RAS and abort flag do this job there).
//!
//! The protocol, run by [`Board::settle`] when a call fails, before the links are aborted:
//! - A rank that found the failure itself (a mismatch, its own timeout or abort, a bad argument)
//!   publishes a notice naming itself (or, for a peer that died or stopped, that peer), then
//!   aborts its links: whoever sees those aborts finds the notice already there.
//! - A rank whose link broke or whose peer went silent cannot tell a dead peer from one that
//!   aborted because of a third rank: it waits up to [`GRACE`] for a notice and, when one comes,
//!   fails with [`Error::Remote`] naming its origin. When none comes, it was the first to see
//!   the failure: it publishes a notice blaming that peer (a killed process leaves none).
//!
//! A rank stopped mid-call (SIGSTOP, a debugger, a swapped-out process) breaks no link: its
//! peers time out, and so do the peers of those peers, at about the same moment, each naming
//! the rank it waited on. So a rank that has waited half its timeout writes on the board whom
//! it waits for ([`Board::say_waiting`]); a rank that times out follows those words from the
//! rank it waited on to the first rank that wrote nothing, the one nobody heard from, and
//! blames that rank ([`Board::silent_end`]).
//!
//! The board is rank 0's store for ranks that are processes (key [`KEY`]; rank 0's store
//! outlives its communicator until every rank read the notice, or a few seconds). Should the
//! store be unreachable, rank 0 is gone: a rank whose link to rank 0 is broken blames rank 0.
//! Thread ranks share a board in memory.

use super::Link;
use crate::bootstrap::store::StoreClient;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The store key of the notice: `origin\nop\ncause`.
pub(crate) const KEY: &str = "abort";
/// The prefix of the keys by which ranks say they have read (or written) the notice.
pub(crate) const SEEN_PREFIX: &str = "abort-seen/";
/// The prefix (after the board's key) of the keys by which ranks say whom they wait on.
const WAITING: &str = "-waiting/";
/// How long a rank whose link broke waits for another rank's notice before it blames the peer
/// of that link: a rank that found a failure publishes before it aborts its links, so this
/// only has to cover a killed process (whose links close with no notice) and a loaded machine.
pub(crate) const GRACE: Duration = Duration::from_millis(300);
/// How long the store may take to answer the board before it counts as silent.
const STORE_ANSWER: Duration = Duration::from_secs(1);
/// How long a silent store is taken as gone before the board tries it again (a store that
/// was only slow once is back in use after this).
const SILENT_FOR: Duration = Duration::from_secs(10);
/// The most [`Board::settle`] spends on the store, all its requests together: each request
/// used to get its own [`STORE_ANSWER`], so a store that answered every one slowly (rank 0
/// starved on a loaded host) added seconds to a failing rank's timeout, one per request.
const SETTLE_MAX: Duration = Duration::from_millis(1300);

/// A failure as the first rank to notice it described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    pub origin: usize,
    pub op: String,
    pub cause: String,
}

impl Notice {
    fn encode(&self) -> Vec<u8> {
        format!("{}\n{}\n{}", self.origin, self.op, self.cause).into_bytes()
    }

    fn decode(v: &[u8]) -> Option<Notice> {
        let text = String::from_utf8_lossy(v);
        let mut it = text.splitn(3, '\n');
        let origin = it.next()?.parse().ok()?;
        Some(Notice {
            origin,
            op: it.next()?.to_string(),
            cause: it.next().unwrap_or("").to_string(),
        })
    }
}

enum Place {
    /// No board (a communicator of one rank): errors stay as each rank saw them.
    Nowhere,
    /// Thread ranks of this process: one notice per board key (a communicator and its children).
    Memory(Arc<Mutex<HashMap<String, Notice>>>),
    /// Rank 0's store.
    Store {
        addr: String,
        secret: Vec<u8>,
        client: Option<StoreClient>,
    },
}

pub(crate) struct Board {
    place: Place,
    /// Where the notice sits: [`KEY`] for a communicator made from a store or as thread ranks,
    /// `KEY/...` for one made by `split` (its rank numbers are its own).
    key: String,
    /// When the store last failed to answer (within [`STORE_ANSWER`]): for [`SILENT_FOR`]
    /// after that, the board does not wait on it again.
    silent_since: Option<Instant>,
    /// While [`Board::settle`] runs: when it must be done with the store.
    settle_until: Option<Instant>,
    /// While [`Board::say_waiting`] runs: when the wait that says it times out (the saying
    /// must not hold the wait past its deadline).
    say_until: Option<Instant>,
    /// A request of this settle found its time spent: the store is slow, not gone.
    out_of_time: bool,
    /// The store answered a request of this settle.
    answered: bool,
}

impl Board {
    pub fn nowhere() -> Self {
        Board {
            place: Place::Nowhere,
            key: KEY.to_string(),
            silent_since: None,
            settle_until: None,
            say_until: None,
            out_of_time: false,
            answered: false,
        }
    }

    /// One board shared by `n` thread ranks.
    pub fn in_memory(n: usize) -> Vec<Board> {
        let shared = Arc::new(Mutex::new(HashMap::new()));
        (0..n)
            .map(|_| Board {
                place: Place::Memory(shared.clone()),
                key: KEY.to_string(),
                silent_since: None,
                settle_until: None,
                say_until: None,
                out_of_time: false,
                answered: false,
            })
            .collect()
    }

    /// The store at `addr`, which this rank joined with `secret`.
    pub fn store(addr: &str, secret: &[u8]) -> Self {
        Board {
            place: Place::Store {
                addr: addr.to_string(),
                secret: secret.to_vec(),
                client: None,
            },
            key: KEY.to_string(),
            silent_since: None,
            settle_until: None,
            say_until: None,
            out_of_time: false,
            answered: false,
        }
    }

    /// The board of a child communicator (`split`, `dup`): the same place under its own key,
    /// `tag` being the same on every member of the child and different from any other child's.
    pub fn child(&self, tag: &str) -> Self {
        let place = match &self.place {
            Place::Nowhere => Place::Nowhere,
            Place::Memory(m) => Place::Memory(m.clone()),
            Place::Store { addr, secret, .. } => Place::Store {
                addr: addr.clone(),
                secret: secret.clone(),
                client: None,
            },
        };
        Board {
            place,
            key: format!("{}/{tag}", self.key),
            silent_since: None,
            settle_until: None,
            say_until: None,
            out_of_time: false,
            answered: false,
        }
    }

    /// Whether rank 0 of this board's communicator serves the store (not so for a child).
    fn store_is_rank_zeros(&self) -> bool {
        self.key == KEY
    }

    /// The notice, if any; `Err` when the board cannot be reached (rank 0's store is gone).
    fn read(&mut self) -> Result<Option<Notice>, ()> {
        match &mut self.place {
            Place::Nowhere => Ok(None),
            Place::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&self.key)
                .cloned()),
            Place::Store { .. } => {
                let key = self.key.clone();
                let v = self.with_store(|c| c.get(&key))?;
                Ok(v.as_deref().and_then(Notice::decode))
            }
        }
    }

    /// Publishes `n` unless a notice is there already; returns the notice that stands.
    fn publish(&mut self, n: Notice) -> Result<Notice, ()> {
        match &mut self.place {
            Place::Nowhere => Ok(n),
            Place::Memory(m) => Ok(m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(self.key.clone())
                .or_insert(n)
                .clone()),
            Place::Store { .. } => {
                // Two ranks may both find the board empty and both write: each wrote about a
                // failure it saw itself, so either notice is true; the later one stands.
                if let Some(there) = self.read()? {
                    return Ok(there);
                }
                let key = self.key.clone();
                self.with_store(|c| c.set(&key, &n.encode()))?;
                Ok(n)
            }
        }
    }

    /// Tells rank 0's store that this rank has the notice (it may close once every rank has).
    fn mark_seen(&mut self, rank: usize) {
        // Rank 0's store waits for these before it closes; a child's ranks are numbered apart.
        if let (Place::Store { .. }, true) = (&self.place, self.store_is_rank_zeros()) {
            let _ = self.with_store(|c| c.set(&format!("{SEEN_PREFIX}{rank}"), b"1"));
        }
    }

    fn with_store<T>(
        &mut self,
        f: impl FnOnce(&mut StoreClient) -> crate::error::Result<T>,
    ) -> Result<T, ()> {
        let Place::Store {
            addr,
            secret,
            client,
        } = &mut self.place
        else {
            return Err(());
        };
        // A store that did not answer just now (rank 0 stopped or gone) is not waited on
        // again: each wait would cost another STORE_ANSWER. A settle trusts only a silence it
        // saw itself: one seen earlier, by a `say_waiting` at half the timeout, may have been
        // a live store slow to answer on a loaded host (then it holds the notice we need).
        let settle_since = self.settle_until.map(|u| u - SETTLE_MAX);
        if self
            .silent_since
            .is_some_and(|t| t.elapsed() < SILENT_FOR && settle_since.is_none_or(|s| t >= s))
        {
            return Err(());
        }
        // Each request gets what is left of the settle's time, or of the wait that says whom
        // it waits on (at most STORE_ANSWER), not what the connection left.
        let within = match self.settle_until.or(self.say_until) {
            Some(until) => until.saturating_duration_since(Instant::now()),
            None => STORE_ANSWER,
        }
        .min(STORE_ANSWER);
        // A request cut short by the settle's time says nothing about the store.
        let cut_short = within < STORE_ANSWER;
        if within.is_zero() {
            self.out_of_time = true;
            return Err(());
        }
        let (silent_since, out_of_time) = (&mut self.silent_since, &mut self.out_of_time);
        let asked = Instant::now();
        let mut failed = |why: String| {
            tracing::debug!(
                took = ?asked.elapsed(),
                "the failure board at {addr} is unreachable: {why}"
            );
            if cut_short {
                *out_of_time = true;
            } else {
                *silent_since = Some(Instant::now());
            }
        };
        if client.is_none() {
            match StoreClient::connect_once(addr, secret, within) {
                Ok(c) => {
                    *client = Some(c);
                    self.answered = true;
                }
                Err(()) => {
                    failed("no answer to a connection".into());
                    return Err(());
                }
            }
        }
        let c = client.as_mut().ok_or(())?;
        if c.set_answer_timeout(within).is_err() {
            failed("cannot set a timeout".into());
            *client = None;
            return Err(());
        }
        match f(c) {
            Ok(v) => {
                self.answered = true;
                Ok(v)
            }
            Err(e) => {
                failed(e.to_string());
                *client = None;
                Err(())
            }
        }
    }

    /// Says (`Some(peer)`) or unsays (`None`) that rank `me` has waited long on `peer`, within
    /// `within` (what is left of the wait before it times out, for a saying).
    pub fn say_waiting(&mut self, me: usize, on: Option<usize>, within: Option<Duration>) {
        self.say_until = within.map(|w| Instant::now() + w);
        self.say_waiting_now(me, on);
        self.say_until = None;
    }

    fn say_waiting_now(&mut self, me: usize, on: Option<usize>) {
        let key = format!("{}{WAITING}{me}", self.key);
        match &mut self.place {
            Place::Nowhere => {}
            Place::Memory(m) => {
                let mut m = m.lock().unwrap_or_else(|p| p.into_inner());
                match on {
                    Some(peer) => m.insert(
                        key,
                        Notice {
                            origin: peer,
                            op: String::new(),
                            cause: String::new(),
                        },
                    ),
                    None => m.remove(&key),
                };
            }
            Place::Store { .. } => {
                let v = on.map_or(String::new(), |p| p.to_string());
                let _ = self.with_store(|c| c.set(&key, v.as_bytes()));
            }
        }
    }

    /// Whom `rank` said it waits on, if it did.
    fn waiting_of(&mut self, rank: usize) -> Option<usize> {
        let key = format!("{}{WAITING}{rank}", self.key);
        match &mut self.place {
            Place::Nowhere => None,
            Place::Memory(m) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .map(|n| n.origin),
            Place::Store { .. } => self
                .with_store(|c| c.get(&key))
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8_lossy(&v).parse().ok()),
        }
    }

    /// The rank nobody heard from, for rank `me` that timed out waiting on `peer`: `peer`
    /// itself, unless it said it waits on another rank, and so on along the chain.
    pub fn silent_end(&mut self, me: usize, peer: usize) -> usize {
        let mut seen = vec![me, peer];
        let mut at = peer;
        while let Some(next) = self.waiting_of(at) {
            if seen.contains(&next) {
                // Live ranks that wait on each other: no silent one to blame beyond `at`.
                break;
            }
            seen.push(next);
            at = next;
        }
        at
    }

    /// What error `e`, which this rank (`me`, running `op`) just hit, should become: see the
    /// module documentation. Called before the links are aborted; done with the store within
    /// [`SETTLE_MAX`].
    pub fn settle(
        &mut self,
        me: usize,
        op: &'static str,
        e: Error,
        links: &mut [Option<Link>],
    ) -> Error {
        if matches!(self.place, Place::Nowhere) {
            return e;
        }
        let start = Instant::now();
        self.settle_until = Some(start + SETTLE_MAX);
        self.out_of_time = false;
        self.answered = false;
        let e = self.settle_within(me, op, e, links);
        self.settle_until = None;
        tracing::debug!(took = ?start.elapsed(), error = %e, "failure board settled");
        e
    }

    fn settle_within(
        &mut self,
        me: usize,
        op: &'static str,
        e: Error,
        links: &mut [Option<Link>],
    ) -> Error {
        // A silent peer may only be waiting for a rank that went silent first.
        let e = match e {
            Error::Timeout {
                op,
                peer,
                waiting,
                after,
            } => match self.silent_end(me, peer) {
                end if end == peer => Error::Timeout {
                    op,
                    peer,
                    waiting,
                    after,
                },
                end => Error::Timeout {
                    op,
                    peer: end,
                    waiting: "it went silent: the ranks we wait on wait for it",
                    after,
                },
            },
            e => e,
        };
        let suspect = match &e {
            Error::Remote { .. } => return e,
            // A broken link or a silent peer: maybe the peer's own failure, maybe a third
            // rank's passed on.
            Error::PeerFailed { peer, .. } | Error::Timeout { peer, .. } => Some(*peer),
            _ => None,
        };
        let Some(peer) = suspect else {
            // This rank's own finding: say so first, then the links go.
            let n = Notice {
                origin: me,
                op: op.to_string(),
                cause: cause_of(me, &e),
            };
            if self.publish(n).is_ok() {
                self.mark_seen(me);
            }
            return e;
        };
        let until = Instant::now() + GRACE;
        loop {
            match self.read() {
                Ok(Some(n)) => {
                    self.mark_seen(me);
                    // A peer that went silent, blamed by the others too: this rank's own
                    // timeout says the same, with its own wait.
                    if n.origin == peer && matches!(e, Error::Timeout { .. }) {
                        return e;
                    }
                    return relay(op, n, e);
                }
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => break,
                // A store that answers, slowly: no sign that rank 0 is gone.
                Err(()) if self.out_of_time && self.answered => return e,
                Err(()) if self.store_is_rank_zeros() => return blame_rank_zero(me, op, e, links),
                Err(()) => return e,
            }
        }
        // Nobody announced a failure: this rank saw it first.
        let n = Notice {
            origin: peer,
            op: op.to_string(),
            cause: cause_of(me, &e),
        };
        match self.publish(n) {
            Ok(stands) => {
                self.mark_seen(me);
                if stands.origin == peer {
                    e
                } else {
                    relay(op, stands, e)
                }
            }
            Err(()) if self.out_of_time && self.answered => e,
            Err(()) if self.store_is_rank_zeros() => blame_rank_zero(me, op, e, links),
            Err(()) => e,
        }
    }
}

/// The error of a rank that learnt of the failure from `n`.
fn relay(op: &'static str, n: Notice, seen: Error) -> Error {
    Error::Remote {
        op,
        origin: n.origin,
        origin_op: n.op,
        cause: n.cause,
        seen: Box::new(seen),
    }
}

/// The store is unreachable: rank 0 serves it for as long as its communicator lives (and at
/// exit until every rank has read a notice), so rank 0 is gone, and a call that broke while
/// rank 0 was gone broke because of it. Its link may still look whole for a moment (a closed
/// TCP connection is seen once its proxy reads the end, and bytes still unread hide it).
fn blame_rank_zero(me: usize, op: &'static str, e: Error, links: &mut [Option<Link>]) -> Error {
    if me == 0 || e.failed_rank() == Some(0) {
        return e;
    }
    let broken = links
        .first_mut()
        .and_then(Option::as_mut)
        .is_some_and(|l| l.check_alive().is_err() || l.peek().is_err());
    let cause = if broken {
        format!("its links are broken and the store it served is gone (noticed by rank {me})")
    } else {
        format!(
            "the store it served does not answer: its process exited or stopped (noticed by rank {me})"
        )
    };
    relay(
        op,
        Notice {
            origin: 0,
            // Its own words are gone with it; ranks make their calls in the same order.
            op: op.to_string(),
            cause,
        },
        e,
    )
}

/// A failure described for the other ranks (in words that do not depend on who reads them).
fn cause_of(me: usize, e: &Error) -> String {
    match e {
        Error::Mismatch {
            peer, mine, theirs, ..
        } => format!("mismatched calls: rank {me} called {mine}, rank {peer} called {theirs}"),
        Error::PeerFailed { source, .. } => format!("{source} (noticed by rank {me})"),
        Error::Timeout { after, waiting, .. } => format!(
            "rank {me} waited {after:?} {waiting} without progress (the rank stopped or hangs)"
        ),
        Error::Aborted { reason, .. } => format!("rank {me} aborted: {reason}"),
        other => format!("rank {me}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::store::StoreServer;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A relay to `to` that holds every piece it passes on for `delay`: a store that answers,
    /// slowly (rank 0 starved on a loaded host).
    fn slow_relay(to: std::net::SocketAddr, delay: Duration) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for client in l.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(to) else {
                    return;
                };
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 4096];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            std::thread::sleep(delay);
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        addr
    }

    #[test]
    fn a_silence_seen_before_the_settle_does_not_hide_a_live_stores_notice() {
        let store = StoreServer::serve("127.0.0.1:0", b"s").unwrap();
        let addr = store.addr().to_string();
        // Rank 0 found rank 3 stopped and said so.
        let mut rank0 = Board::store(&addr, b"s");
        let n = Notice {
            origin: 3,
            op: "barrier".into(),
            cause: "rank 0 waited 3s for data from it".into(),
        };
        assert_eq!(rank0.publish(n.clone()), Ok(n));
        // Rank 1's `say_waiting` at half its timeout found the store slow (a loaded host).
        let mut rank1 = Board::store(&addr, b"s");
        rank1.silent_since = Some(Instant::now());
        let e = rank1.settle(1, "barrier", timed_out_on_rank_0("barrier"), &mut []);
        assert!(matches!(e, Error::Remote { origin: 3, .. }), "{e}");
    }

    #[test]
    fn a_slow_store_holds_a_failing_rank_for_settle_max_in_all() {
        let store = StoreServer::serve("127.0.0.1:0", b"s").unwrap();
        // Every request takes ~0.8 s (two passes through the relay): under STORE_ANSWER, so
        // none counts as silent; a settle makes five or more of them.
        let addr = slow_relay(store.addr(), Duration::from_millis(400));
        let mut board = Board::store(&addr, b"s");
        let start = Instant::now();
        let e = board.settle(1, "all_reduce", timed_out_on_rank_0("all_reduce"), &mut []);
        let took = start.elapsed();
        assert!(took < SETTLE_MAX + Duration::from_millis(500), "{took:?}");
        // Its own view: the peer it waited on, not "rank 0's store is gone".
        assert!(matches!(e, Error::Timeout { peer: 0, .. }), "{e}");
    }

    /// What a wait on rank 0 that timed out fails with, before the settle.
    fn timed_out_on_rank_0(op: &'static str) -> Error {
        Error::Timeout {
            op,
            peer: 0,
            waiting: "for data from it",
            after: Duration::from_secs(3),
        }
    }

    /// A store whose host is stopped: its socket listens (the kernel completes connections)
    /// and nothing ever answers.
    fn stopped_store() -> (TcpListener, String) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (l, addr)
    }

    #[test]
    fn saying_whom_a_wait_is_for_keeps_to_what_is_left_of_the_wait() {
        let (_l, addr) = stopped_store();
        let mut board = Board::store(&addr, b"s");
        let start = Instant::now();
        board.say_waiting(1, Some(0), Some(Duration::from_millis(200)));
        let took = start.elapsed();
        // Not STORE_ANSWER (1 s), nor the connect's floor on top: the wait's own deadline.
        assert!(took < Duration::from_millis(900), "{took:?}");
        // Nothing left: no word to the store at all.
        let start = Instant::now();
        board.say_waiting(1, Some(0), Some(Duration::ZERO));
        assert!(start.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn a_stopped_stores_host_holds_a_settle_for_settle_max_at_most() {
        let (_l, addr) = stopped_store();
        let mut board = Board::store(&addr, b"s");
        // A silence seen by the wait's own saying, before the settle: asked again once.
        board.say_waiting(1, Some(0), Some(Duration::from_secs(1)));
        let start = Instant::now();
        let e = board.settle(1, "barrier", timed_out_on_rank_0("barrier"), &mut []);
        let took = start.elapsed();
        assert!(took < SETTLE_MAX + Duration::from_millis(400), "{took:?}");
        assert!(matches!(e, Error::Timeout { peer: 0, .. }), "{e}");
    }

    #[test]
    fn notices_round_trip_and_the_first_stands() {
        let n = Notice {
            origin: 3,
            op: "broadcast".into(),
            cause: "a\nb".into(),
        };
        assert_eq!(Notice::decode(&n.encode()), Some(n.clone()));
        assert_eq!(Notice::decode(b"x\ny\nz"), None);
        let mut boards = Board::in_memory(2);
        assert_eq!(boards[0].read(), Ok(None));
        assert_eq!(boards[0].publish(n.clone()), Ok(n.clone()));
        let later = Notice {
            origin: 1,
            ..n.clone()
        };
        assert_eq!(boards[1].publish(later), Ok(n.clone()));
        assert_eq!(boards[1].read(), Ok(Some(n)));
    }
}
