//! What is particular to pipes: the FIFOs' life on disk, the run directory, the wait
//! for a peer to open its end (and its timeout), and the options. The `Transport`
//! contract itself (FIFO per ordered pair, no loss, no duplication, floods both ways
//! and in a ring, the bound on a frame) is checked by `tests/conformance.rs`.

mod common;

use common::{PATIENCE, address, assert_empty, listing, recv};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::thread;
use std::time::{Duration, Instant};
use transport_pipe::{DEFAULT_OPEN_TIMEOUT, PipeOptions, PipeTransport};

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

#[test]
fn fifos_are_unlinked_once_both_ends_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut master = PipeTransport::<String>::new(dir.path(), Endpoint::Role(1)).unwrap();
    assert_empty(dir.path());
    master.connect(node(5), &run).unwrap();
    assert_eq!(listing(dir.path()), ["node-5-to-role-1"]);
    let mut node5 = PipeTransport::<String>::new(dir.path(), node(5)).unwrap();
    node5.connect(Endpoint::Role(1), &run).unwrap();
    assert_eq!(
        listing(dir.path()),
        ["node-5-to-role-1", "role-1-to-node-5"]
    );

    node5.send(Endpoint::Role(1), "hello".into()).unwrap();
    node5.flush().unwrap();
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node(5), "hello".into())
    );
    assert_eq!(listing(dir.path()), ["role-1-to-node-5"]);

    master.send(node(5), "welcome".into()).unwrap();
    assert_eq!(
        listing(dir.path()),
        Vec::<String>::new(),
        "open on the first send"
    );
    master.flush().unwrap();
    assert_eq!(
        recv(&mut node5).unwrap(),
        Incoming::Frame(Endpoint::Role(1), "welcome".into())
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
    early.connect(Endpoint::Role(0), &run).unwrap();
    let sender = thread::spawn(move || {
        early.send(Endpoint::Role(0), 42).unwrap();
        early.flush().unwrap();
        early
    });
    let mut late = PipeTransport::<u32>::new(dir.path(), Endpoint::Role(0)).unwrap();
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
    let mut lonely = PipeTransport::<u32>::new(dir.path(), Endpoint::Role(1)).unwrap();
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
        PipeTransport::<u32>::with_options(dir.path(), Endpoint::Role(1), options).unwrap();
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

/// The bound set with `with_max_frame` is the one sends are held to (the conformance
/// suite checks the default one): a frame of exactly that size goes, one over it is
/// refused, naming it.
#[test]
fn sends_are_held_to_the_max_frame_option() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let options = PipeOptions::default().with_max_frame(64);
    let mut a =
        PipeTransport::<Vec<u8>>::with_options(dir.path(), node(1), options.clone()).unwrap();
    let mut b = PipeTransport::<Vec<u8>>::with_options(dir.path(), node(2), options).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    // Encoded, a byte of length and the bytes.
    assert!(matches!(
        a.send(node(2), vec![0; 64]),
        Err(TransportError::FrameTooLarge { limit: 64, .. })
    ));
    a.send(node(2), vec![1; 63]).unwrap();
    a.flush().unwrap();
    assert_eq!(recv(&mut b).unwrap(), Incoming::Frame(node(1), vec![1; 63]));
    drop((a, b));
    assert_empty(dir.path());
}

#[test]
fn drop_releases_readers_waiting_for_peers_that_never_come() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut t = PipeTransport::<u32>::new(dir.path(), Endpoint::Role(0)).unwrap();
    for i in 0..5 {
        t.connect(node(i), &run).unwrap();
    }
    t.connect(Endpoint::Role(1), &run).unwrap();
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

/// An open timeout past the end of time (`Duration::MAX`, "wait as long as it takes")
/// is taken as such: the first send to a peer that is there goes.
#[test]
fn an_open_timeout_past_the_end_of_time_is_no_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let options = PipeOptions::default().with_open_timeout(Duration::MAX);
    let mut a = PipeTransport::<u32>::with_options(dir.path(), node(1), options.clone()).unwrap();
    let mut b = PipeTransport::<u32>::with_options(dir.path(), node(2), options).unwrap();
    a.connect(node(2), &run).unwrap();
    b.connect(node(1), &run).unwrap();
    a.send(node(2), 7).unwrap();
    a.flush().unwrap();
    assert_eq!(
        b.recv_timeout(Duration::from_secs(10)).unwrap(),
        Some(Incoming::Frame(node(1), 7))
    );
    drop((a, b));
    assert_empty(dir.path());
}
