//! `oxcclGetUniqueId`: fresh secrets, and the port held from the id's making until rank 0's
//! store has it, so no other socket of the host can take it in between.

// Every unsafe block here calls a C entry point with valid pointers.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use common::ok;
use oxccl::*;
use std::net::SocketAddr;

/// Held by each test for its whole run: one of them sets `OXCCL_COMM_ID`, which the library
/// reads (with the other `OXCCL_*` variables) on every thread.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
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

#[test]
fn comm_id_variable_names_the_store() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let want: SocketAddr = format!("127.0.0.1:{free_port}").parse().unwrap();
    std::env::set_var("OXCCL_COMM_ID", want.to_string());
    let id = make();
    std::env::remove_var("OXCCL_COMM_ID");
    assert_eq!(address(&id), want);
    let threads: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let mut comm: oxcclComm_t = std::ptr::null_mut();
                ok(unsafe { oxcclCommInitRank(&mut comm, 2, id, r) }, comm);
                let (mut rank, x) = (-1, [r as f64; 3]);
                ok(unsafe { oxcclCommUserRank(comm, &mut rank) }, comm);
                assert_eq!(rank, r);
                let mut y = [0f64; 3];
                let (f64_, sum) = (
                    oxcclDataType::oxcclFloat64 as i32,
                    oxcclRedOp::oxcclSum as i32,
                );
                let null = std::ptr::null_mut();
                ok(
                    unsafe {
                        oxcclAllReduce(
                            x.as_ptr().cast(),
                            y.as_mut_ptr().cast(),
                            3,
                            f64_,
                            sum,
                            comm,
                            null,
                        )
                    },
                    comm,
                );
                assert_eq!(y, [1.0; 3]);
                ok(oxcclCommDestroy(comm), comm);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
