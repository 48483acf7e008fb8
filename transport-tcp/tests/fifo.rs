//! What is particular to TCP: an endpoint that talks to itself, connecting again,
//! and the bound on a frame a configuration sets. The `Transport` contract itself
//! (FIFO per ordered pair, no loss, no duplication, floods both ways and in a ring,
//! the default bound on a frame, sends to an endpoint never connected to) is checked
//! by `tests/conformance.rs`, on the synchronous and the asynchronous transport.

mod common;

use common::{address, endpoint, frame, node, pair_up};
use snapshot_core::{Transport, TransportError};
use transport_tcp::{TcpConfig, TcpTransport};

/// The bound a configuration sets is the one sends are held to (the conformance
/// suite checks the default one): a frame of exactly that size goes, one a byte over
/// it is refused, naming it.
#[test]
fn sends_are_held_to_the_configured_max_frame() {
    let config = TcpConfig {
        max_frame: 1000,
        ..common::config()
    };
    let mut a = TcpTransport::<Vec<u8>>::new(node(1), config.clone()).unwrap();
    let mut b = TcpTransport::<Vec<u8>>::new(node(2), config).unwrap();
    pair_up(&mut a, &mut b);
    // Encoded, two bytes of length and the bytes.
    assert!(matches!(
        a.send(node(2), vec![0; 999]),
        Err(TransportError::FrameTooLarge { limit: 1000, .. })
    ));
    a.send(node(2), vec![1; 998]).unwrap();
    a.flush().unwrap();
    assert_eq!(frame(&mut b), (node(1), vec![1; 998]));
}

#[test]
fn an_endpoint_can_talk_to_itself_and_connecting_twice_does_nothing() {
    let mut a = endpoint::<u32>(node(1));
    let b = endpoint::<u32>(node(2));
    a.connect(node(1), &address(&a)).unwrap();
    a.connect(node(2), &address(&b)).unwrap();
    a.connect(node(2), &address(&b)).unwrap();
    a.connect(node(2), "not even an address").unwrap();
    for n in 0..3 {
        a.send(node(1), n).unwrap();
    }
    for n in 0..3 {
        assert_eq!(frame(&mut a), (node(1), n));
    }
}
