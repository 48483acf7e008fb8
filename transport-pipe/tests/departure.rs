//! A peer that goes away is reported, once, and never silently.

mod common;

use common::{address, assert_empty, recv};
use snapshot_core::{Endpoint, NodeId, Transport, TransportError};
use std::time::Duration;
use transport_pipe::PipeTransport;

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// Three endpoints, each connected to the two others.
fn triangle(dir: &std::path::Path) -> [PipeTransport<u32>; 3] {
    let run = address(dir);
    let mut ts =
        [node(1), node(2), Endpoint::Observer].map(|e| PipeTransport::<u32>::new(dir, e).unwrap());
    let all: Vec<Endpoint> = ts.iter().map(Transport::local).collect();
    for t in &mut ts {
        for &peer in &all {
            if peer != t.local() {
                t.connect(peer, &run).unwrap();
            }
        }
    }
    ts
}

#[test]
fn a_departed_peer_is_reported_once_after_its_frames_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b, mut c] = triangle(dir.path());
    // c has a write end open to a before a leaves.
    c.send(node(1), 0).unwrap();
    c.flush().unwrap();
    assert_eq!(recv(&mut a).unwrap(), (Endpoint::Observer, 0));

    for n in 1..=3 {
        a.send(Endpoint::Observer, n).unwrap();
    }
    drop(a); // flushes, then closes
    for n in 1..=3 {
        assert_eq!(recv(&mut c).unwrap(), (node(1), n));
    }
    assert!(matches!(recv(&mut c), Err(TransportError::Disconnected(p)) if p == node(1)));

    b.send(Endpoint::Observer, 10).unwrap();
    b.flush().unwrap();
    assert_eq!(recv(&mut c).unwrap(), (node(2), 10), "the others go on");
    assert_eq!(
        c.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "the departure is reported once"
    );
    assert!(
        matches!(c.send(node(1), 4), Err(TransportError::Disconnected(p)) if p == node(1)),
        "after the report, sends to it fail at once"
    );
    drop((b, c));
    assert_empty(dir.path());
}

#[test]
fn writing_to_a_departed_peer_is_disconnected_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, b, mut c] = triangle(dir.path());
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    // The write is what tells a.
    a.send(node(2), 2).unwrap();
    assert!(matches!(a.flush(), Err(TransportError::Disconnected(p)) if p == node(2)));
    assert!(matches!(a.send(node(2), 3), Err(TransportError::Disconnected(p)) if p == node(2)));
    assert!(a.flush().is_ok(), "the failed write is reported once");

    // b never wrote to c, yet c hears of its departure (b said goodbye), and sending
    // to it then fails at once.
    assert!(matches!(recv(&mut c), Err(TransportError::Disconnected(p)) if p == node(2)));
    assert!(matches!(c.send(node(2), 1), Err(TransportError::Disconnected(p)) if p == node(2)));
    drop(c);

    // a never opened a write end to c: its first send notices that c has gone
    // (without waiting out the open timeout).
    assert!(matches!(
        a.send(Endpoint::Observer, 5),
        Err(TransportError::Disconnected(Endpoint::Observer))
    ));
    assert!(
        matches!(a.recv(), Err(TransportError::Closed)),
        "both departures were reported already; with every peer gone nothing can arrive"
    );
    drop(a);
    assert_empty(dir.path());
}

#[test]
fn recv_returns_a_failed_flush_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, b, c] = triangle(dir.path());
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    a.send(node(2), 2).unwrap();
    assert!(matches!(a.recv(), Err(TransportError::Disconnected(p)) if p == node(2)));
    // c is still there: nothing to receive, no second report.
    assert_eq!(a.recv_timeout(Duration::from_millis(20)).unwrap(), None);
    drop((a, c));
    assert_empty(dir.path());
}

#[test]
fn connecting_again_to_a_departed_peer_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let [mut a, b, c] = triangle(dir.path());
    drop(b);
    assert!(matches!(recv(&mut a), Err(TransportError::Disconnected(p)) if p == node(2)));
    a.connect(node(2), &run).unwrap();
    assert!(matches!(a.send(node(2), 1), Err(TransportError::Disconnected(p)) if p == node(2)));
    drop((a, c));
    assert_empty(dir.path());
}
