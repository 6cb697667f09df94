//! `oxcclGetUniqueId`: fresh secrets, and the port held from the id's making until rank 0's
//! store has it, so no other socket of the host can take it in between.

// Every unsafe block here calls a C entry point with valid pointers.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::ok;
use oxccl::*;
use std::net::SocketAddr;

fn make() -> oxcclUniqueId {
    let mut id = oxcclUniqueId { internal: [0; 128] };
    ok(unsafe { oxcclGetUniqueId(&mut id) }, std::ptr::null_mut());
    id
}

/// The store address written in the id (the layout of capi/src/id.rs).
fn address(id: &oxcclUniqueId) -> SocketAddr {
    let raw = id.internal.map(|c| c as u8);
    let len = usize::from(raw[5]);
    std::str::from_utf8(&raw[38..38 + len])
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether a plain bind (no SO_REUSEADDR, as the kernel's choice of ports for other sockets
/// respects) can take `addr`.
fn free(addr: SocketAddr) -> bool {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    s.bind(&addr.into()).is_ok()
}

#[test]
fn ids_differ_and_hold_their_port_until_rank_0_serves() {
    let (a, b) = (make(), make());
    assert_ne!(a.internal[6..38], b.internal[6..38], "secrets differ");
    assert_ne!(address(&a), address(&b), "ports differ");
    let addr = address(&a);
    assert!(!free(addr), "the port is held once the id exists");
    let comms: Vec<common::Comm> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let mut comm: oxcclComm_t = std::ptr::null_mut();
                ok(unsafe { oxcclCommInitRank(&mut comm, 2, a, r) }, comm);
                common::Comm(comm as usize)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(!free(addr), "rank 0's store serves there now");
    for c in comms {
        ok(oxcclCommDestroy(c.raw()), c.raw());
    }
    assert!(
        free(addr),
        "destroying rank 0 frees the port (the id's hold ended with its init)"
    );
}
