//! `set_spin`: a receiver that polls before it sleeps gets the same frames, in the same
//! order, with the same reports, and never waits past its timeout.

mod common;

use common::{PATIENCE, address, assert_empty, recv, recv_frame};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use transport_pipe::PipeTransport;

/// Longer than any test may take: a receiver still spinning when its frame comes.
const FOREVER: Duration = Duration::from_secs(3600);

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// Frames carry their sender's id and a sequence number.
type Pipe = PipeTransport<(u32, u64)>;

/// A receiver that spins for `spin`, connected to `senders` nodes (1, 2, ...).
fn receiver(dir: &std::path::Path, senders: u32, spin: Duration) -> (Pipe, Vec<Pipe>) {
    let run = address(dir);
    let mut receiver = PipeTransport::new(dir, Endpoint::Role(1)).unwrap();
    receiver.set_spin(spin);
    let mut nodes = Vec::new();
    for i in 1..=senders {
        receiver.connect(node(i), &run).unwrap();
        let mut t = PipeTransport::new(dir, node(i)).unwrap();
        t.connect(Endpoint::Role(1), &run).unwrap();
        nodes.push(t);
    }
    (receiver, nodes)
}

#[test]
fn a_spinning_receiver_gets_every_frame_in_order_then_the_departures() {
    const FRAMES: u64 = 20_000;
    for spin in [Duration::from_micros(50), Duration::from_millis(5), FOREVER] {
        let dir = tempfile::tempdir().unwrap();
        let (mut master, nodes) = receiver(dir.path(), 3, spin);
        let senders: Vec<_> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                let i = i as u32 + 1;
                thread::spawn(move || {
                    for seq in 0..FRAMES {
                        t.send(Endpoint::Role(1), (i, seq)).unwrap();
                        if seq % 100 == 99 {
                            t.flush().unwrap();
                        }
                    }
                    // Dropping flushes the rest and closes the pipe.
                })
            })
            .collect();
        let mut next = [0u64; 3];
        let mut gone = [false; 3];
        while gone.iter().any(|g| !g) {
            match recv(&mut master) {
                Ok(Incoming::Frame(from, (i, seq))) => {
                    assert_eq!(from, node(i));
                    let at = i as usize - 1;
                    assert!(!gone[at], "a frame from node {i} after its departure");
                    assert_eq!(seq, next[at], "spin {spin:?}: node {i} out of order");
                    next[at] += 1;
                }
                Ok(Incoming::Departed(Endpoint::Node(NodeId(i)))) => {
                    let at = i as usize - 1;
                    assert!(!gone[at], "node {i} reported gone twice");
                    assert_eq!(next[at], FRAMES, "node {i} gone before its last frame");
                    gone[at] = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(master.recv(), Err(TransportError::Closed)));
        for s in senders {
            s.join().unwrap();
        }
        drop(master);
        assert_empty(dir.path());
    }
}

/// The receiver is already spinning (for longer than the test may last) when the
/// frame is sent: it takes the frame as soon as it comes, not when the spin ends.
#[test]
fn a_frame_that_arrives_during_the_spin_is_taken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, mut nodes) = receiver(dir.path(), 1, FOREVER);
    let mut sender = nodes.remove(0);
    let (ready_tx, ready) = mpsc::channel();
    let receiving = thread::spawn(move || {
        let mut got = Vec::new();
        for round in 0..100 {
            ready_tx.send(round).unwrap();
            let start = Instant::now();
            got.push(master.recv_timeout(PATIENCE).unwrap());
            assert!(
                start.elapsed() < PATIENCE,
                "round {round} waited for its frame"
            );
        }
        (master, got)
    });
    for round in 0..100u64 {
        // The receiver is in (or about to enter) recv, spinning.
        assert_eq!(ready.recv_timeout(PATIENCE).unwrap(), round);
        sender.send(Endpoint::Role(1), (1, round)).unwrap();
        sender.flush().unwrap();
    }
    let (master, got) = receiving.join().unwrap();
    let expected: Vec<_> = (0..100)
        .map(|r| Some(Incoming::Frame(node(1), (1, r))))
        .collect();
    assert_eq!(got, expected);
    drop((master, sender));
    assert_empty(dir.path());
}

/// A departure while the receiver spins is reported like any other.
#[test]
fn a_departure_during_the_spin_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut master, mut nodes) = receiver(dir.path(), 2, FOREVER);
    let leaving = nodes.remove(0);
    let staying = nodes.remove(0);
    let (ready_tx, ready) = mpsc::channel();
    let receiving = thread::spawn(move || {
        ready_tx.send(()).unwrap();
        assert_eq!(
            recv(&mut master).unwrap(),
            Incoming::Departed(node(1)),
            "the departure is reported"
        );
        assert_eq!(
            master.recv_timeout(Duration::from_millis(20)).unwrap(),
            None,
            "once"
        );
        master
    });
    ready.recv_timeout(PATIENCE).unwrap();
    drop(leaving);
    let master = receiving.join().unwrap();
    drop((master, staying));
    assert_empty(dir.path());
}

/// Spinning never outlasts `recv_timeout`'s timeout, however long the spin.
#[test]
fn the_spin_ends_with_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    for spin in [FOREVER, Duration::MAX] {
        let (mut master, nodes) = receiver(dir.path(), 1, spin);
        for timeout in [Duration::ZERO, Duration::from_millis(20)] {
            let start = Instant::now();
            assert_eq!(master.recv_timeout(timeout).unwrap(), None);
            let waited = start.elapsed();
            assert!(waited >= timeout, "{waited:?} is shorter than {timeout:?}");
            assert!(waited < PATIENCE, "spin {spin:?} outlasted {timeout:?}");
        }
        drop((master, nodes));
        assert_empty(dir.path());
    }
}

/// Request and reply, with the requester spinning, as the bank's master does.
#[test]
fn ping_pong_with_a_spinning_requester() {
    const ROUNDS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut master, mut nodes) = receiver(dir.path(), 1, Duration::from_micros(200));
    let mut echo = nodes.remove(0);
    let echoing = thread::spawn(move || {
        for _ in 0..ROUNDS {
            let (from, (i, n)) = recv_frame(&mut echo);
            echo.send(from, (i, n + 1)).unwrap();
        }
        echo.flush().unwrap();
        echo
    });
    for round in 0..ROUNDS {
        master.send(node(1), (0, round * 2)).unwrap();
        assert_eq!(
            recv(&mut master).unwrap(),
            Incoming::Frame(node(1), (0, round * 2 + 1))
        );
    }
    let echo = echoing.join().unwrap();
    drop((master, echo));
    assert_empty(dir.path());
}
