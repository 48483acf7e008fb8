//! A peer that goes away, or breaks the framing, is reported once, after its last
//! frame, and never silently; once every peer has gone, receiving says so.

mod common;

use common::{
    PATIENCE, address, capture_warnings, config, departed, endpoint, frame, is_gone, node, pair_up,
    recv, warnings,
};
use snapshot_core::{Endpoint, Transport, TransportError};
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport};

/// Three endpoints, each connected to the two others.
fn triangle() -> [TcpTransport<u32>; 3] {
    let mut ts = [node(1), node(2), Endpoint::Role(0)].map(endpoint::<u32>);
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

#[test]
fn a_departed_peer_is_reported_once_after_its_frames_and_the_others_go_on() {
    let [mut a, mut b, mut c] = triangle();
    for n in 1..=3 {
        a.send(Endpoint::Role(0), n).unwrap();
    }
    drop(a); // flushes, then closes
    for n in 1..=3 {
        assert_eq!(frame(&mut c), (node(1), n));
    }
    assert!(departed(recv(&mut c), node(1)));

    b.send(Endpoint::Role(0), 10).unwrap();
    b.flush().unwrap();
    assert_eq!(frame(&mut c), (node(2), 10), "the others go on");
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
    assert!(c.flush().is_ok(), "a flush reports no departure");
    // Connecting again does nothing: gone stays gone.
    c.connect(node(1), "127.0.0.1:1").unwrap();
    assert!(is_gone(c.send(node(1), 6), node(1)));
}

/// The peer closes the connection this endpoint writes on before this endpoint has
/// read what the peer sent it: the writer notices first, but the departure still
/// comes after the last frame.
#[test]
fn a_departure_noticed_by_the_writer_waits_for_the_frames_still_to_be_read() {
    const FRAMES: u32 = 5_000;
    let mut a = endpoint::<u32>(node(1));
    let mut b = endpoint::<u32>(node(2));
    pair_up(&mut a, &mut b);
    // a writes to b first, so that its writer has a connection to watch.
    a.send(node(2), 0).unwrap();
    a.flush().unwrap();
    for n in 0..FRAMES {
        b.send(node(1), n).unwrap();
    }
    drop(b); // flushes, then closes both its connections
    // Time for a's writer to see its connection closed, while a reads nothing.
    std::thread::sleep(Duration::from_millis(200));
    for n in 0..FRAMES {
        assert_eq!(
            frame(&mut a),
            (node(2), n),
            "frame {n} before the departure"
        );
    }
    assert!(departed(recv(&mut a), node(2)));
    assert!(matches!(recv(&mut a), Err(TransportError::Closed)));
}

/// A peer that only reads departs as soon as the connection to it breaks: no frame of
/// its own can come after.
#[test]
fn a_peer_that_never_wrote_departs_when_the_connection_to_it_breaks() {
    let mut a = endpoint::<u32>(node(1));
    let b = endpoint::<u32>(node(2));
    a.connect(node(2), &address(&b)).unwrap();
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    assert!(departed(recv(&mut a), node(2)));
    assert!(is_gone(a.send(node(2), 3), node(2)), "sends fail at once");
    assert!(a.flush().is_ok(), "a flush reports no departure");
    assert!(
        matches!(recv(&mut a), Err(TransportError::Closed)),
        "every peer has gone"
    );
    assert!(
        matches!(a.recv_timeout(Duration::ZERO), Err(TransportError::Closed)),
        "and it stays so"
    );
    // Gone stays gone: an endpoint claiming to be it is refused.
    let mut again = endpoint::<u32>(node(2));
    assert!(matches!(
        again.connect(node(1), &address(&a)),
        Err(TransportError::Protocol(_))
    ));
}

/// Writes that race the news of a departure: they may succeed (their frames are lost
/// with the peer) or fail with `Disconnected`; flushes never fail; the departure is
/// reported once.
#[test]
fn writing_to_a_peer_as_it_goes_never_fails_a_flush_and_it_departs_once() {
    let mut a = endpoint::<u32>(node(1));
    let b = endpoint::<u32>(node(2));
    a.connect(node(2), &address(&b)).unwrap();
    drop(b);
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    loop {
        let sent = a.send(node(2), n);
        if sent.is_err() {
            assert!(is_gone(sent, node(2)), "only a departure fails a send");
            break;
        }
        a.flush().unwrap();
        assert!(
            Instant::now() < deadline,
            "sends to a peer that left never fail"
        );
        n += 1;
    }
    assert!(departed(recv(&mut a), node(2)));
    assert!(matches!(
        a.recv_timeout(Duration::from_millis(50)),
        Err(TransportError::Closed)
    ));
}

#[test]
fn before_any_peer_recv_waits_and_a_new_peer_reopens_a_closed_endpoint() {
    let mut a = endpoint::<u32>(node(1));
    assert_eq!(
        a.recv_timeout(Duration::from_millis(50)).unwrap(),
        None,
        "no peer yet: nothing to report, and nothing closed"
    );
    let mut b = endpoint::<u32>(node(2));
    pair_up(&mut a, &mut b);
    drop(b);
    assert!(departed(recv(&mut a), node(2)));
    assert!(matches!(recv(&mut a), Err(TransportError::Closed)));
    // A new peer: a waits for it again.
    let mut c = endpoint::<u32>(node(3));
    pair_up(&mut a, &mut c);
    c.send(node(1), 7).unwrap();
    c.flush().unwrap();
    assert_eq!(frame(&mut a), (node(3), 7));
    assert_eq!(a.recv_timeout(Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn a_peer_sending_a_frame_that_does_not_decode_is_dropped_and_logged() {
    capture_warnings();
    // The same cluster, but the sender's frames are u32 and the receiver's bool:
    // 300 is no bool.
    let mut receiver = endpoint::<bool>(Endpoint::Role(0));
    let mut sender = endpoint::<u32>(node(7));
    sender
        .connect(Endpoint::Role(0), &address(&receiver))
        .unwrap();
    sender.send(Endpoint::Role(0), 1).unwrap();
    sender.send(Endpoint::Role(0), 300).unwrap();
    sender.flush().unwrap();
    assert_eq!(
        frame(&mut receiver),
        (node(7), true),
        "the good frame first"
    );
    assert!(departed(recv(&mut receiver), node(7)));
    assert!(
        warnings("peer=node 7")
            .iter()
            .any(|line| line.contains("does not decode")),
        "{:?}",
        warnings("node 7")
    );
    let cause = receiver.departure_cause(node(7)).unwrap_or_default();
    assert!(
        cause.starts_with("it sent a frame that does not decode: postcard: "),
        "the departure says why: {cause:?}"
    );
}

#[test]
fn a_peer_sending_a_frame_over_the_bound_is_dropped_and_logged() {
    capture_warnings();
    let small = TcpConfig {
        max_frame: 1000,
        ..config()
    };
    let mut receiver = TcpTransport::<Vec<u8>>::new(Endpoint::Role(0), small).unwrap();
    let mut sender = endpoint::<Vec<u8>>(node(8));
    sender
        .connect(Endpoint::Role(0), &address(&receiver))
        .unwrap();
    sender.send(Endpoint::Role(0), vec![1; 10]).unwrap();
    sender.send(Endpoint::Role(0), vec![2; 5000]).unwrap();
    sender.flush().unwrap();
    assert_eq!(frame(&mut receiver), (node(8), vec![1; 10]));
    assert!(departed(recv(&mut receiver), node(8)));
    assert!(
        warnings("peer=node 8")
            .iter()
            .any(|line| line.contains("over the 1000-byte bound")),
        "{:?}",
        warnings("node 8")
    );
    // The receiver closed the connection: the sender, which has none from the
    // receiver, hears of it at once, and sends to it fail.
    assert!(departed(recv(&mut sender), Endpoint::Role(0)));
    assert!(is_gone(
        sender.send(Endpoint::Role(0), vec![3]),
        Endpoint::Role(0)
    ));
}
