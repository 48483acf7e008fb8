//! The guarantees every transport documents: FIFO per ordered pair, no loss, no
//! duplication; and the FIFOs' life on disk.

mod common;

use common::{PATIENCE, address, assert_empty, listing, recv, recv_frame};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::thread;
use std::time::{Duration, Instant};
use transport_pipe::{DEFAULT_OPEN_TIMEOUT, PipeOptions, PipeTransport};

const SENDERS: u32 = 3;
const PER_SENDER: u64 = 100_000;

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

#[test]
fn frames_from_each_sender_arrive_in_order_and_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut receiver = PipeTransport::<(u32, u64)>::new(dir.path(), Endpoint::Observer).unwrap();
    for i in 0..SENDERS {
        receiver.connect(node(i), &run).unwrap();
    }
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let mut t = PipeTransport::new(dir.path(), node(i)).unwrap();
            t.connect(Endpoint::Observer, &run).unwrap();
            thread::spawn(move || {
                for seq in 0..PER_SENDER {
                    t.send(Endpoint::Observer, (i, seq)).unwrap();
                    // Flush now and then so that the senders' batches interleave.
                    if seq % 1000 == 999 {
                        t.flush().unwrap();
                    }
                }
                // Dropping flushes the rest and closes the pipe.
            })
        })
        .collect();
    let mut next = [0u64; SENDERS as usize];
    let mut gone = [false; SENDERS as usize];
    while gone.iter().any(|g| !g) {
        match recv(&mut receiver) {
            Ok(Incoming::Frame(from, (i, seq))) => {
                assert_eq!(from, node(i));
                assert!(
                    !gone[i as usize],
                    "a frame from node {i} after it was reported gone"
                );
                assert_eq!(seq, next[i as usize], "frame from node {i} out of order");
                next[i as usize] += 1;
            }
            Ok(Incoming::Departed(Endpoint::Node(NodeId(i)))) => {
                assert!(!gone[i as usize], "node {i} reported gone twice");
                assert_eq!(
                    next[i as usize], PER_SENDER,
                    "node {i} gone before all its frames"
                );
                gone[i as usize] = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        matches!(receiver.recv(), Err(TransportError::Closed)),
        "no frame may arrive twice, and with every peer gone nothing more can come"
    );
    for s in senders {
        s.join().unwrap();
    }
    drop(receiver);
    assert_empty(dir.path());
}

/// Both ends send far more than a pipe holds before either receives: each waits for
/// its full pipe while reading what the other sends, so neither blocks for good.
#[test]
fn bulk_both_ways_at_once_does_not_deadlock() {
    const FRAMES: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut a = PipeTransport::<(u64, Vec<u8>)>::new(dir.path(), node(1)).unwrap();
    let mut b = PipeTransport::<(u64, Vec<u8>)>::new(dir.path(), node(2)).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    let exchange = |mut t: PipeTransport<(u64, Vec<u8>)>, peer: Endpoint| {
        thread::spawn(move || {
            let payload = vec![u8::from(t.local() == node(1)); 100];
            for seq in 0..FRAMES {
                t.send(peer, (seq, payload.clone())).unwrap();
            }
            t.flush().unwrap();
            let expected = vec![u8::from(peer == node(1)); 100];
            for seq in 0..FRAMES {
                let (from, (got, body)) = recv_frame(&mut t);
                assert_eq!((from, got), (peer, seq));
                assert_eq!(body, expected);
            }
            t
        })
    };
    let a = exchange(a, node(2));
    let b = exchange(b, node(1));
    let a = a.join().unwrap();
    let b = b.join().unwrap();
    drop((a, b));
    assert_empty(dir.path());
}

/// Three endpoints in a ring each send the next more than its pipe holds, in frames
/// bigger than a pipe, before any of them receives; with the kernel's smallest
/// default pipes too. Each waits for its pipe while reading what the previous one
/// sends.
#[test]
fn a_ring_of_bulk_senders_does_not_deadlock() {
    const FRAMES: u64 = 4;
    const SIZE: usize = 3 * 1024 * 1024 / 2;
    for options in [
        PipeOptions::default(),
        PipeOptions::default().with_pipe_size(0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = address(dir.path());
        let ring = [node(1), node(2), node(3)];
        let ts: Vec<_> = (0..3)
            .map(|i| {
                let mut t = PipeTransport::<(u64, Vec<u8>)>::with_options(
                    dir.path(),
                    ring[i],
                    options.clone(),
                )
                .unwrap();
                // The previous one sends to it, and it sends to the next.
                t.connect(ring[(i + 2) % 3], &run).unwrap();
                t.connect(ring[(i + 1) % 3], &run).unwrap();
                t
            })
            .collect();
        let threads: Vec<_> = ts
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                let (next, previous) = (ring[(i + 1) % 3], ring[(i + 2) % 3]);
                thread::spawn(move || {
                    for seq in 0..FRAMES {
                        t.send(next, (seq, vec![i as u8; SIZE])).unwrap();
                    }
                    t.flush().unwrap();
                    let expected = vec![((i + 2) % 3) as u8; SIZE];
                    for seq in 0..FRAMES {
                        let (from, (got, body)) = recv_frame(&mut t);
                        assert_eq!((from, got), (previous, seq));
                        assert!(body == expected, "frame {seq} from {previous} damaged");
                    }
                    t
                })
            })
            .collect();
        let ts: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        drop(ts);
        assert_empty(dir.path());
    }
}

/// Sends and receives interleaved on both sides, as a protocol does.
#[test]
fn ping_pong_keeps_order_both_ways() {
    const ROUNDS: u64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut a = PipeTransport::<u64>::new(dir.path(), Endpoint::Master).unwrap();
    let mut b = PipeTransport::<u64>::new(dir.path(), node(7)).unwrap();
    a.connect(node(7), &run).unwrap();
    b.connect(Endpoint::Master, &run).unwrap();
    let echo = thread::spawn(move || {
        for _ in 0..ROUNDS {
            let (from, n) = recv_frame(&mut b);
            assert_eq!(from, Endpoint::Master);
            b.send(from, n + 1).unwrap();
        }
        // The last reply is not followed by a recv that would flush it.
        b.flush().unwrap();
        b
    });
    for round in 0..ROUNDS {
        a.send(node(7), round * 2).unwrap();
        // recv flushes the request first.
        assert_eq!(
            recv(&mut a).unwrap(),
            Incoming::Frame(node(7), round * 2 + 1)
        );
    }
    let b = echo.join().unwrap();
    drop((a, b));
    assert_empty(dir.path());
}

#[test]
fn fifos_are_unlinked_once_both_ends_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut master = PipeTransport::<String>::new(dir.path(), Endpoint::Master).unwrap();
    assert_empty(dir.path());
    master.connect(node(5), &run).unwrap();
    assert_eq!(listing(dir.path()), ["node-5-to-master"]);
    let mut node5 = PipeTransport::<String>::new(dir.path(), node(5)).unwrap();
    node5.connect(Endpoint::Master, &run).unwrap();
    assert_eq!(
        listing(dir.path()),
        ["master-to-node-5", "node-5-to-master"]
    );

    node5.send(Endpoint::Master, "hello".into()).unwrap();
    node5.flush().unwrap();
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node(5), "hello".into())
    );
    assert_eq!(listing(dir.path()), ["master-to-node-5"]);

    master.send(node(5), "welcome".into()).unwrap();
    assert_eq!(
        listing(dir.path()),
        Vec::<String>::new(),
        "open on the first send"
    );
    master.flush().unwrap();
    assert_eq!(
        recv(&mut node5).unwrap(),
        Incoming::Frame(Endpoint::Master, "welcome".into())
    );
    drop((master, node5));
    assert_empty(dir.path());
}

#[test]
fn connect_is_idempotent_and_checks_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut a = PipeTransport::<u32>::new(dir.path(), node(1)).unwrap();
    let b = PipeTransport::<u32>::new(dir.path(), node(2)).unwrap();
    assert_eq!(a.address(), run);
    // The medium can be picked at run time.
    let mut b: Box<dyn Transport<u32>> = Box::new(b);
    assert!(matches!(
        a.connect(node(2), &address(other.path())),
        Err(TransportError::Protocol(_))
    ));
    // The same directory, spelt differently, is accepted.
    a.connect(node(2), &format!("{run}/")).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    for n in 0..3 {
        b.send(node(1), n).unwrap();
    }
    b.flush().unwrap();
    for n in 0..3 {
        assert_eq!(recv(&mut a).unwrap(), Incoming::Frame(node(2), n));
    }
    assert_eq!(
        a.recv_timeout(Duration::from_millis(10)).unwrap(),
        None,
        "each frame once"
    );
    drop((a, b));
    assert_empty(dir.path());
    assert_empty(other.path());
}

/// The first send to a peer that has not connected yet waits for it.
#[test]
fn a_send_before_the_peer_connects_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut early = PipeTransport::<u32>::new(dir.path(), node(1)).unwrap();
    early.connect(Endpoint::Observer, &run).unwrap();
    let sender = thread::spawn(move || {
        early.send(Endpoint::Observer, 42).unwrap();
        early.flush().unwrap();
        early
    });
    let mut late = PipeTransport::<u32>::new(dir.path(), Endpoint::Observer).unwrap();
    late.connect(node(1), &run).unwrap();
    assert_eq!(recv(&mut late).unwrap(), Incoming::Frame(node(1), 42));
    let early = sender.join().unwrap();
    drop((early, late));
    assert_empty(dir.path());
}

/// A send to an endpoint this one never connected to fails at once; before any
/// connect, receiving waits (there is nothing to read yet), it is not `Closed`.
#[test]
fn a_send_to_an_endpoint_never_connected_to_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut lonely = PipeTransport::<u32>::new(dir.path(), Endpoint::Master).unwrap();
    let start = Instant::now();
    assert!(matches!(
        lonely.send(node(3), 1),
        Err(TransportError::UnknownEndpoint(Endpoint::Node(NodeId(3))))
    ));
    assert!(
        start.elapsed() < DEFAULT_OPEN_TIMEOUT,
        "no waiting for a peer that was never connected to"
    );
    assert_empty(dir.path());
    for timeout in [Duration::ZERO, Duration::from_millis(20)] {
        assert_eq!(
            lonely.recv_timeout(timeout).unwrap(),
            None,
            "no peer yet: receiving waits"
        );
    }
    drop(lonely);
    assert_empty(dir.path());
}

/// The first send to a peer that is connected to but never connects back gives up
/// after the open timeout.
#[test]
fn a_send_to_a_peer_that_never_connects_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(100);
    let options = PipeOptions::default().with_open_timeout(timeout);
    let mut lonely =
        PipeTransport::<u32>::with_options(dir.path(), Endpoint::Master, options).unwrap();
    lonely.connect(node(3), &address(dir.path())).unwrap();
    let start = Instant::now();
    assert!(matches!(
        lonely.send(node(3), 1),
        Err(TransportError::UnknownEndpoint(Endpoint::Node(NodeId(3))))
    ));
    assert!(start.elapsed() >= timeout, "the send waited for the peer");
    assert_eq!(
        lonely.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "the peer has not gone, it never came: nothing arrives, and it is not closed"
    );
    drop(lonely);
    assert_empty(dir.path());
}

#[test]
fn frames_over_the_bound_are_refused_at_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let options = PipeOptions::default().with_max_frame(64);
    let mut a =
        PipeTransport::<Vec<u8>>::with_options(dir.path(), node(1), options.clone()).unwrap();
    let mut b = PipeTransport::<Vec<u8>>::with_options(dir.path(), node(2), options).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    assert!(matches!(
        a.send(node(2), vec![0; 100]),
        Err(TransportError::FrameTooLarge { limit: 64, .. })
    ));
    a.send(node(2), vec![1; 10]).unwrap();
    a.flush().unwrap();
    assert_eq!(recv(&mut b).unwrap(), Incoming::Frame(node(1), vec![1; 10]));
    assert_eq!(
        b.recv_timeout(Duration::from_millis(10)).unwrap(),
        None,
        "the refused frame never left"
    );
    drop((a, b));
    assert_empty(dir.path());
}

#[test]
fn drop_releases_readers_waiting_for_peers_that_never_come() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut t = PipeTransport::<u32>::new(dir.path(), Endpoint::Observer).unwrap();
    for i in 0..5 {
        t.connect(node(i), &run).unwrap();
    }
    t.connect(Endpoint::Master, &run).unwrap();
    assert_eq!(listing(dir.path()).len(), 6);
    assert_eq!(t.recv_timeout(Duration::from_millis(10)).unwrap(), None);
    // Returns (the test would hang otherwise): nobody is waited for.
    let (done_tx, done) = std::sync::mpsc::channel();
    let dropped = thread::spawn(move || {
        drop(t);
        let _ = done_tx.send(());
    });
    done.recv_timeout(PATIENCE).expect("drop hangs");
    dropped.join().unwrap();
    assert_empty(dir.path());
}
