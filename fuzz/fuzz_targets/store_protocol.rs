//! The bootstrap store's protocol, as a stranger or a broken rank speaks it: any bytes sent to
//! the store (hello, secret, requests) end that connection at worst, and a rank that knows the
//! secret is still served afterwards. The protocol has no decode function outside the server's
//! connection loop, so this talks to a real server on 127.0.0.1.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxccl_collectives::bootstrap::store::{StoreClient, StoreServer};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The seeds log in with this secret, so the fuzzer reaches the request loop.
const SECRET: &[u8] = b"fuzz-secret";

/// One server, restarted now and then so that what inputs stored does not pile up.
static SERVER: Mutex<Option<(StoreServer, u32)>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = SERVER.lock().unwrap();
    if guard.as_ref().is_none_or(|(_, n)| *n >= 200) {
        *guard = None;
        let s = StoreServer::serve("127.0.0.1:0", SECRET).expect("serving on 127.0.0.1");
        *guard = Some((s, 0));
    }
    let (server, served) = guard.as_mut().unwrap();
    *served += 1;
    let addr = server.addr();

    let mut stranger = TcpStream::connect(addr).expect("connecting");
    let _ = stranger.write_all(data);
    let _ = stranger.shutdown(Shutdown::Write);
    stranger.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = Vec::new();
    let _ = stranger.read_to_end(&mut answer);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rank = StoreClient::connect(&addr.to_string(), SECRET, deadline)
        .expect("a rank with the secret is still served");
    let value = &data[..data.len().min(64)];
    rank.set("fuzz/check", value).expect("set");
    assert_eq!(rank.get("fuzz/check").expect("get").as_deref(), Some(value));
});
