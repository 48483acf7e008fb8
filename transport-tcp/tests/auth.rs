//! Only peers that know the cluster's key get in; strangers are closed, logged, and
//! delay nobody.

mod common;

use common::{
    PATIENCE, address, capture_warnings, closed_within, config, endpoint, frame, node, still_open,
    wait_for_warning, warnings,
};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport};

fn with_key(key: &[u8]) -> TcpConfig {
    TcpConfig {
        key: key.to_vec(),
        ..config()
    }
}

/// The port of a connection's local end, as the server logs it.
fn remote_tag(stream: &TcpStream) -> String {
    format!("remote={}", stream.local_addr().unwrap())
}

#[test]
fn a_wrong_key_is_refused_both_ways_and_admits_nothing() {
    capture_warnings();
    let mut server = endpoint::<u32>(node(100));
    let mut impostor = TcpTransport::<u32>::new(node(1), with_key(b"not the key")).unwrap();
    let refused = impostor.connect(node(100), &address(&server));
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("key")),
        "the client sees the server fail to prove it knows the key: {refused:?}"
    );
    // The server saw the client give up without proving itself, and said so.
    assert!(
        wait_for_warning(&[
            "local=node 100",
            "closed the connection during the handshake"
        ])
        .is_some()
    );
    assert_eq!(
        server.recv_timeout(Duration::from_millis(50)).unwrap(),
        None
    );

    // Nothing was admitted under node 1's name: the real node 1 gets in afterwards.
    let mut real = endpoint::<u32>(node(1));
    real.connect(node(100), &address(&server)).unwrap();
    real.send(node(100), 7).unwrap();
    real.flush().unwrap();
    assert_eq!(frame(&mut server), (node(1), 7));
    assert!(matches!(
        impostor.send(node(100), 1),
        Err(TransportError::UnknownEndpoint(_))
    ));
}

/// A client that knows a wrong key and does not check the server's answer still has
/// to prove itself: the server refuses it and logs why.
#[test]
fn the_server_checks_the_clients_proof() {
    capture_warnings();
    let server = endpoint::<u32>(Endpoint::Role(0));
    // Speak the handshake by hand with the wrong key: a hello, then any proof.
    let mut stranger = TcpStream::connect(address(&server)).unwrap();
    let hello = postcard::to_allocvec(&(
        *b"snap-tcp",
        1u16,
        "test-cluster",
        node(5),
        Endpoint::Role(0),
        [7u8; 32],
    ))
    .unwrap();
    stranger
        .write_all(&(hello.len() as u32).to_le_bytes())
        .unwrap();
    stranger.write_all(&hello).unwrap();
    let proof = postcard::to_allocvec(&[9u8; 32]).unwrap();
    stranger
        .write_all(&(proof.len() as u32).to_le_bytes())
        .unwrap();
    stranger.write_all(&proof).unwrap();
    assert!(closed_within(&mut stranger, PATIENCE));
    let logged = warnings(&remote_tag(&stranger));
    assert!(
        logged.iter().any(|line| line.contains("failed to prove")),
        "{logged:?}"
    );
}

#[test]
fn another_cluster_or_another_endpoint_is_refused() {
    capture_warnings();
    let server = endpoint::<u32>(Endpoint::Role(0));
    let elsewhere = TcpConfig {
        cluster: "another-cluster".into(),
        ..config()
    };
    let mut outsider = TcpTransport::<u32>::new(node(1), elsewhere).unwrap();
    let refused = outsider.connect(Endpoint::Role(0), &address(&server));
    assert!(
        matches!(refused, Err(TransportError::Protocol(_))),
        "{refused:?}"
    );
    assert!(
        !warnings("cluster \"another-cluster\"").is_empty(),
        "the server logged the wrong cluster before closing"
    );

    // The observer's address given for node 3: the server is not who we meant.
    let mut confused = endpoint::<u32>(node(2));
    let refused = confused.connect(node(3), &address(&server));
    assert!(
        matches!(refused, Err(TransportError::Protocol(_))),
        "{refused:?}"
    );
    assert!(!warnings("a hello for node 3").is_empty());
}

#[test]
fn an_endpoint_connecting_twice_is_refused_the_second_time() {
    let mut server = endpoint::<u32>(Endpoint::Role(0));
    let mut first = endpoint::<u32>(node(1));
    let mut second = endpoint::<u32>(node(1));
    first.connect(Endpoint::Role(0), &address(&server)).unwrap();
    let refused = second.connect(Endpoint::Role(0), &address(&server));
    assert!(
        matches!(refused, Err(TransportError::Protocol(_))),
        "{refused:?}"
    );
    first.send(Endpoint::Role(0), 1).unwrap();
    first.flush().unwrap();
    assert_eq!(frame(&mut server), (node(1), 1));
}

#[test]
fn a_connect_to_a_server_that_never_answers_gives_up_after_the_hello_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = TcpConfig {
        hello_timeout: Duration::from_millis(200),
        ..config()
    };
    let mut client = TcpTransport::<u32>::new(node(1), config).unwrap();
    let start = Instant::now();
    let refused = client.connect(node(2), &silent.local_addr().unwrap().to_string());
    assert!(
        matches!(&refused, Err(TransportError::Io { source, .. }) if source.kind() == std::io::ErrorKind::TimedOut),
        "{refused:?}"
    );
    assert!(start.elapsed() < PATIENCE);
}

/// Four strangers connect before a legitimate peer: one sends random bytes, one a
/// length far over the bound, one half a hello and then nothing, one nothing at all.
/// The peer's frames flow while the last two are still connected, the first two are
/// closed at once, and the last two when the hello timeout expires; every one is
/// logged.
#[test]
fn strangers_are_closed_and_logged_without_delaying_a_legitimate_peer() {
    capture_warnings();
    let hello_timeout = Duration::from_secs(2);
    let config = TcpConfig {
        hello_timeout,
        ..config()
    };
    let mut server = TcpTransport::<u64>::new(Endpoint::Role(0), config.clone()).unwrap();
    let at = address(&server);
    let opened = Instant::now();

    let mut garbage = TcpStream::connect(&at).unwrap();
    // A plausible length, then bytes that are no hello (fixed, so the test is too).
    let mut bytes = vec![40, 0, 0, 0];
    let mut x: u32 = 0x2545_f491;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        bytes.push(x as u8);
    }
    garbage.write_all(&bytes).unwrap();

    let mut oversized = TcpStream::connect(&at).unwrap();
    oversized.write_all(&u32::MAX.to_le_bytes()).unwrap();
    oversized.write_all(b"snap-tcp and then some").unwrap();

    let mut partial = TcpStream::connect(&at).unwrap();
    partial.write_all(&[60, 0, 0, 0]).unwrap();
    partial.write_all(b"snap-").unwrap();

    let mut silent = TcpStream::connect(&at).unwrap();

    // The legitimate peer, meanwhile: round trips of frames both ways.
    let mut peer = TcpTransport::<u64>::new(node(1), config).unwrap();
    peer.connect(Endpoint::Role(0), &at).unwrap();
    server.connect(node(1), &address(&peer)).unwrap();
    for n in 0..200 {
        peer.send(Endpoint::Role(0), n).unwrap();
        peer.flush().unwrap();
        assert_eq!(frame(&mut server), (node(1), n));
        server.send(node(1), n + 1).unwrap();
        server.flush().unwrap();
        assert_eq!(frame(&mut peer), (Endpoint::Role(0), n + 1));
    }
    // Checked before the clock is read: if the clock says the hello timeout has not
    // expired, it had not when they were checked either.
    let slow_ones_open = still_open(&partial) && still_open(&silent);
    let exchanged = opened.elapsed();
    assert!(
        exchanged < hello_timeout,
        "the peer's traffic took {exchanged:?}: it waited for the strangers"
    );
    assert!(
        slow_ones_open,
        "the frames flowed while the slow strangers were still connected"
    );

    assert!(closed_within(&mut garbage, PATIENCE), "random bytes");
    assert!(closed_within(&mut oversized, PATIENCE), "oversized hello");
    assert!(closed_within(&mut partial, PATIENCE), "partial hello");
    assert!(closed_within(&mut silent, PATIENCE), "silent");
    assert!(
        opened.elapsed() >= hello_timeout,
        "the slow strangers had their hello timeout"
    );
    for (stranger, why) in [
        (&garbage, "refused a connection"),
        (&oversized, "over the 1024-byte bound"),
        (&partial, "no handshake in time"),
        (&silent, "no handshake in time"),
    ] {
        let logged = warnings(&remote_tag(stranger));
        assert!(
            logged.iter().any(|line| line.contains(why)),
            "expected a warning with {why:?}, got {logged:?}"
        );
    }

    // Still serving.
    peer.send(Endpoint::Role(0), 1000).unwrap();
    peer.flush().unwrap();
    assert_eq!(frame(&mut server), (node(1), 1000));
}

#[test]
fn an_empty_key_is_refused() {
    let refused = TcpTransport::<u32>::new(node(1), with_key(b""));
    assert!(
        matches!(refused, Err(TransportError::Config(_))),
        "{refused:?}"
    );
}

/// A hello timeout past the end of time (`Duration::MAX`, "wait as long as it takes")
/// is taken as such: connecting to a peer that answers works.
#[test]
fn a_hello_timeout_past_the_end_of_time_is_no_deadline() {
    let config = TcpConfig {
        hello_timeout: Duration::MAX,
        ..config()
    };
    let mut server = TcpTransport::<u32>::new(node(2), config.clone()).unwrap();
    let mut client = TcpTransport::<u32>::new(node(1), config).unwrap();
    client.connect(node(2), &address(&server)).unwrap();
    client.send(node(2), 5).unwrap();
    client.flush().unwrap();
    assert_eq!(
        server.recv_timeout(PATIENCE).unwrap(),
        Some(Incoming::Frame(node(1), 5))
    );
}
