//! Addresses travel as text (bootstrap stores, command lines): `to_text` and `from_text`
//! round-trip, and bad text is an error, never a panic.

use oxccl_transport::dynamic::DynAddress;
use oxccl_transport::loopback::Loopback;
use oxccl_transport::{Address, Error, Listener, Transport};

#[test]
fn text_round_trips_and_bad_text_is_an_error() {
    let fabric = Loopback::new();
    let listener = fabric.listen().expect("listen");
    let addr = DynAddress::new(fabric.name(), &listener.address());
    let text = addr.to_text();
    assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        DynAddress::from_text(&text).expect("parse").to_bytes(),
        addr.to_bytes()
    );
    for bad in ["abc", "zz", "é1", ""] {
        assert!(
            matches!(DynAddress::from_text(bad), Err(Error::BadAddress { .. })),
            "{bad:?} should be refused"
        );
    }
}
