//! A peer that goes away, or breaks the framing, is reported once and never silently.

mod common;

use common::{address, capture_warnings, config, endpoint, node, recv, warnings};
use snapshot_core::{Endpoint, Transport, TransportError};
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport};

/// Three endpoints, each connected to the two others.
fn triangle() -> [TcpTransport<u32>; 3] {
    let mut ts = [node(1), node(2), Endpoint::Observer].map(endpoint::<u32>);
    let all: Vec<(Endpoint, String)> = ts.iter().map(|t| (t.local(), address(t))).collect();
    for t in &mut ts {
        for (peer, at) in &all {
            if *peer != t.local() {
                t.connect(*peer, at).unwrap();
            }
        }
    }
    ts
}

fn is_gone<T: std::fmt::Debug>(result: Result<T, TransportError>, who: Endpoint) -> bool {
    matches!(result, Err(TransportError::Disconnected(p)) if p == who)
}

#[test]
fn a_departed_peer_is_reported_once_after_its_frames_and_the_others_go_on() {
    let [mut a, mut b, mut c] = triangle();
    for n in 1..=3 {
        a.send(Endpoint::Observer, n).unwrap();
    }
    drop(a); // flushes, then closes
    for n in 1..=3 {
        assert_eq!(recv(&mut c).unwrap(), (node(1), n));
    }
    assert!(is_gone(recv(&mut c), node(1)));

    b.send(Endpoint::Observer, 10).unwrap();
    b.flush().unwrap();
    assert_eq!(recv(&mut c).unwrap(), (node(2), 10), "the others go on");
    assert_eq!(
        c.recv_timeout(Duration::from_millis(50)).unwrap(),
        None,
        "the departure is reported once"
    );
    assert!(
        is_gone(c.send(node(1), 4), node(1)),
        "after the report, sends to it fail at once"
    );
    assert!(is_gone(c.send(node(1), 5), node(1)), "and keep failing");
    // Connecting again does nothing: gone stays gone.
    c.connect(node(1), "127.0.0.1:1").unwrap();
    assert!(is_gone(c.send(node(1), 6), node(1)));
}

#[test]
fn writing_to_a_departed_peer_is_disconnected_and_reported_once() {
    let mut a = endpoint::<u32>(node(1));
    let b = endpoint::<u32>(node(2));
    a.connect(node(2), &address(&b)).unwrap();
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    // The connection's end reaches a asynchronously: it shows in the writes that
    // follow (at once, or after the first write has drawn a reset).
    let deadline = Instant::now() + common::PATIENCE;
    let reported = loop {
        let result = a.send(node(2), 2).and_then(|()| a.flush());
        if result.is_err() || Instant::now() > deadline {
            break result;
        }
    };
    assert!(is_gone(reported, node(2)));
    assert!(is_gone(a.send(node(2), 3), node(2)), "sends fail at once");
    assert!(a.flush().is_ok(), "the failed write is reported once");
}

#[test]
fn a_peer_sending_a_frame_that_does_not_decode_is_dropped_and_logged() {
    capture_warnings();
    // The same cluster, but the sender's frames are u32 and the receiver's bool:
    // 300 is no bool.
    let mut receiver = endpoint::<bool>(Endpoint::Observer);
    let mut sender = endpoint::<u32>(node(7));
    sender
        .connect(Endpoint::Observer, &address(&receiver))
        .unwrap();
    sender.send(Endpoint::Observer, 1).unwrap();
    sender.send(Endpoint::Observer, 300).unwrap();
    sender.flush().unwrap();
    assert_eq!(
        recv(&mut receiver).unwrap(),
        (node(7), true),
        "the good frame first"
    );
    assert!(is_gone(recv(&mut receiver), node(7)));
    assert!(
        warnings("peer=node 7")
            .iter()
            .any(|line| line.contains("bad frame")),
        "{:?}",
        warnings("node 7")
    );
}

#[test]
fn a_peer_sending_a_frame_over_the_bound_is_dropped_and_logged() {
    capture_warnings();
    let small = TcpConfig {
        max_frame: 1000,
        ..config()
    };
    let mut receiver = TcpTransport::<Vec<u8>>::new(Endpoint::Observer, small).unwrap();
    let mut sender = endpoint::<Vec<u8>>(node(8));
    sender
        .connect(Endpoint::Observer, &address(&receiver))
        .unwrap();
    sender.send(Endpoint::Observer, vec![1; 10]).unwrap();
    sender.send(Endpoint::Observer, vec![2; 5000]).unwrap();
    sender.flush().unwrap();
    assert_eq!(recv(&mut receiver).unwrap(), (node(8), vec![1; 10]));
    assert!(is_gone(recv(&mut receiver), node(8)));
    assert!(
        warnings("peer=node 8")
            .iter()
            .any(|line| line.contains("over the 1000-byte bound")),
        "{:?}",
        warnings("node 8")
    );
    // The sender hears of it when it writes again.
    let deadline = Instant::now() + common::PATIENCE;
    let reported = loop {
        let result = sender
            .send(Endpoint::Observer, vec![3])
            .and_then(|()| sender.flush());
        if result.is_err() || Instant::now() > deadline {
            break result;
        }
    };
    assert!(is_gone(reported, Endpoint::Observer));
}
