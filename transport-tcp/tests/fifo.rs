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

/// `connect_all` opens every connection it can, all at once, and fails with the
/// error of the first peer in its list that it could not reach: here node 3, whose
/// address nobody listens on. Node 2, named twice, and node 4 are connected; node 3
/// is not.
#[test]
fn connect_all_reports_the_first_peer_it_could_not_reach_and_connects_the_others() {
    let mut a = endpoint::<u32>(node(1));
    let mut b = endpoint::<u32>(node(2));
    let mut d = endpoint::<u32>(node(4));
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let (b_at, d_at) = (address(&b), address(&d));
    let error = a
        .connect_all(&[
            (node(2), &b_at),
            (node(3), &nobody),
            (node(4), &d_at),
            (node(2), &b_at),
            (node(5), "not an address"),
        ])
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("node 3") && message.contains(&nobody),
        "the error names the first peer that failed: {message}"
    );
    assert!(matches!(
        a.send(node(3), 0),
        Err(TransportError::UnknownEndpoint(_))
    ));
    b.connect(node(1), &address(&a)).unwrap();
    d.connect(node(1), &address(&a)).unwrap();
    for n in 0..3 {
        a.send(node(2), n).unwrap();
        a.send(node(4), n + 10).unwrap();
    }
    a.flush().unwrap();
    for n in 0..3 {
        assert_eq!(frame(&mut b), (node(1), n));
        assert_eq!(frame(&mut d), (node(1), n + 10));
    }
}
