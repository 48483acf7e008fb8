//! A peer that goes away is reported by receiving, once, after its frames, and never
//! silently; sends to it then fail.

mod common;

use common::{address, assert_empty, recv};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::time::Duration;
use transport_pipe::PipeTransport;

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// Three endpoints, each connected to the two others.
fn triangle(dir: &std::path::Path) -> [PipeTransport<u32>; 3] {
    let run = address(dir);
    let mut ts =
        [node(1), node(2), Endpoint::Role(0)].map(|e| PipeTransport::<u32>::new(dir, e).unwrap());
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
    assert_eq!(recv(&mut a).unwrap(), Incoming::Frame(Endpoint::Role(0), 0));

    for n in 1..=3 {
        a.send(Endpoint::Role(0), n).unwrap();
    }
    drop(a); // flushes, then closes
    for n in 1..=3 {
        assert_eq!(recv(&mut c).unwrap(), Incoming::Frame(node(1), n));
    }
    assert_eq!(recv(&mut c).unwrap(), Incoming::Departed(node(1)));

    b.send(Endpoint::Role(0), 10).unwrap();
    b.flush().unwrap();
    assert_eq!(
        recv(&mut c).unwrap(),
        Incoming::Frame(node(2), 10),
        "the others go on"
    );
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
fn writing_to_a_departed_peer_drops_the_frames_and_recv_reports_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, b, mut c] = triangle(dir.path());
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    // The write is what tells a; the flush does not report it, and drops the frame.
    a.send(node(2), 2).unwrap();
    a.flush().unwrap();
    assert!(
        matches!(a.send(node(2), 3), Err(TransportError::Disconnected(p)) if p == node(2)),
        "once the transport knows, sends to the peer fail at once"
    );
    a.flush().unwrap();
    assert_eq!(
        recv(&mut a).unwrap(),
        Incoming::Departed(node(2)),
        "receiving reports the departure the write found"
    );
    assert_eq!(
        a.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "once; and c is still there"
    );

    // b never wrote to c, yet c hears of its departure (b said goodbye), and sending
    // to it then fails at once.
    assert_eq!(recv(&mut c).unwrap(), Incoming::Departed(node(2)));
    assert!(matches!(c.send(node(2), 1), Err(TransportError::Disconnected(p)) if p == node(2)));
    drop(c);

    // a never opened a write end to c: its first send notices that c has gone
    // (without waiting out the open timeout).
    assert!(matches!(
        a.send(Endpoint::Role(0), 5),
        Err(TransportError::Disconnected(Endpoint::Role(0)))
    ));
    assert_eq!(
        recv(&mut a).unwrap(),
        Incoming::Departed(Endpoint::Role(0)),
        "the departure the send found is still reported by receiving"
    );
    assert!(
        matches!(a.recv(), Err(TransportError::Closed)),
        "both departures were reported; with every peer gone nothing can arrive"
    );
    assert!(
        matches!(
            a.recv_timeout(Duration::from_millis(20)),
            Err(TransportError::Closed)
        ),
        "recv_timeout says so too, without waiting for its timeout"
    );
    drop(a);
    assert_empty(dir.path());
}

#[test]
fn recv_reports_a_departure_its_flush_finds_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, b, c] = triangle(dir.path());
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    drop(b);
    a.send(node(2), 2).unwrap();
    assert_eq!(a.recv().unwrap(), Incoming::Departed(node(2)));
    // c is still there: nothing to receive, no second report.
    assert_eq!(a.recv_timeout(Duration::from_millis(20)).unwrap(), None);
    assert!(matches!(a.send(node(2), 3), Err(TransportError::Disconnected(p)) if p == node(2)));
    drop((a, c));
    assert_empty(dir.path());
}

#[test]
fn connecting_again_to_a_departed_peer_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let [mut a, b, c] = triangle(dir.path());
    drop(b);
    assert_eq!(recv(&mut a).unwrap(), Incoming::Departed(node(2)));
    a.connect(node(2), &run).unwrap();
    assert!(matches!(a.send(node(2), 1), Err(TransportError::Disconnected(p)) if p == node(2)));
    assert_eq!(
        a.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "no second report"
    );
    drop((a, c));
    assert_empty(dir.path());
}

/// Before any peer, receiving waits; once every peer has departed and each departure
/// has been returned, it is `Closed`; a new peer opens it again.
#[test]
fn closed_only_once_every_peer_departed_and_a_new_peer_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut a = PipeTransport::<u32>::new(dir.path(), node(1)).unwrap();
    for timeout in [Duration::ZERO, Duration::from_millis(20)] {
        assert_eq!(
            a.recv_timeout(timeout).unwrap(),
            None,
            "no peer yet: wait, as for any frame"
        );
    }

    let mut b = PipeTransport::<u32>::new(dir.path(), node(2)).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    b.send(node(1), 7).unwrap();
    drop(b);
    assert_eq!(recv(&mut a).unwrap(), Incoming::Frame(node(2), 7));
    assert_eq!(recv(&mut a).unwrap(), Incoming::Departed(node(2)));
    assert!(matches!(a.recv(), Err(TransportError::Closed)));
    assert!(
        matches!(a.recv(), Err(TransportError::Closed)),
        "and stays closed"
    );

    let mut c = PipeTransport::<u32>::new(dir.path(), Endpoint::Role(0)).unwrap();
    a.connect(Endpoint::Role(0), &run).unwrap();
    assert_eq!(
        a.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "a new peer: wait for it again"
    );
    c.connect(node(1), &run).unwrap();
    c.send(node(1), 8).unwrap();
    c.flush().unwrap();
    assert_eq!(recv(&mut a).unwrap(), Incoming::Frame(Endpoint::Role(0), 8));
    drop(c);
    assert_eq!(recv(&mut a).unwrap(), Incoming::Departed(Endpoint::Role(0)));
    assert!(matches!(a.recv(), Err(TransportError::Closed)));
    drop(a);
    assert_empty(dir.path());
}

#[test]
fn sends_that_alternate_between_peers_each_keep_their_order_and_see_departures() {
    let dir = tempfile::tempdir().unwrap();
    let [mut a, mut b, mut c] = triangle(dir.path());
    // Runs of sends to one peer, then to the other, then back.
    for n in 0..6 {
        let to = if n % 3 == 2 {
            Endpoint::Role(0)
        } else {
            node(2)
        };
        a.send(to, n).unwrap();
    }
    a.flush().unwrap();
    for n in [0, 1, 3, 4] {
        assert_eq!(recv(&mut b).unwrap(), Incoming::Frame(node(1), n));
    }
    for n in [2, 5] {
        assert_eq!(recv(&mut c).unwrap(), Incoming::Frame(node(1), n));
    }
    // The peer sent to last goes: the write finds it, and the next send to it fails
    // at once, while sends to the other go on.
    drop(c);
    a.send(Endpoint::Role(0), 6).unwrap();
    a.flush().unwrap();
    assert!(matches!(
        a.send(Endpoint::Role(0), 7),
        Err(TransportError::Disconnected(Endpoint::Role(0)))
    ));
    a.send(node(2), 8).unwrap();
    a.flush().unwrap();
    assert_eq!(recv(&mut b).unwrap(), Incoming::Frame(node(1), 8));
    assert!(matches!(
        a.send(Endpoint::Role(0), 9),
        Err(TransportError::Disconnected(Endpoint::Role(0)))
    ));
    assert_eq!(recv(&mut a).unwrap(), Incoming::Departed(Endpoint::Role(0)));
    drop((a, b));
    assert_empty(dir.path());
}
