//! The guarantees every transport documents: FIFO per ordered pair, no loss, no
//! duplication, and a peer that has gone is reported.

use snapshot_core::{Endpoint, NodeId, Transport, TransportError};
use std::thread;
use std::time::Duration;
use transport_mem::MemNetwork;

const PER_SENDER: u64 = 20_000;

#[test]
fn frames_from_each_sender_arrive_in_order_and_exactly_once() {
    let network = MemNetwork::<(u32, u64)>::new();
    let mut receiver = network.endpoint(Endpoint::Observer).unwrap();
    let senders: Vec<_> = (0..4u32)
        .map(|i| {
            let mut t = network.endpoint(Endpoint::Node(NodeId(i))).unwrap();
            thread::spawn(move || {
                for seq in 0..PER_SENDER {
                    t.send(Endpoint::Observer, (i, seq)).unwrap();
                }
                t.flush().unwrap();
                // Keep the endpoint alive until the receiver is done with it.
                t
            })
        })
        .collect();
    let mut next = [0u64; 4];
    for _ in 0..4 * PER_SENDER {
        let (from, (i, seq)) = receiver.recv().unwrap();
        assert_eq!(from, Endpoint::Node(NodeId(i)));
        assert_eq!(seq, next[i as usize], "frame from node {i} out of order");
        next[i as usize] += 1;
    }
    assert_eq!(next, [PER_SENDER; 4]);
    assert!(
        receiver
            .recv_timeout(std::time::Duration::ZERO)
            .unwrap()
            .is_none(),
        "no frame may arrive twice"
    );
    for s in senders {
        drop(s.join().unwrap());
    }
}

#[test]
fn unknown_and_departed_peers_are_errors() {
    let network = MemNetwork::<u8>::new();
    let mut a = network.endpoint(Endpoint::Master).unwrap();
    assert!(matches!(
        a.send(Endpoint::Observer, 1),
        Err(TransportError::UnknownEndpoint(Endpoint::Observer))
    ));
    let b = network.endpoint(Endpoint::Observer).unwrap();
    a.send(Endpoint::Observer, 1).unwrap();
    drop(b);
    assert!(matches!(
        a.send(Endpoint::Observer, 2),
        Err(TransportError::Disconnected(Endpoint::Observer))
    ));
    assert!(
        network.endpoint(Endpoint::Master).is_err(),
        "an endpoint joins once"
    );
}

#[test]
fn deferred_node_frames_keep_their_order_and_are_found_on_the_next_wake_up() {
    let network = MemNetwork::<u64>::with_deferred_node_frames();
    let mut master = network.endpoint(Endpoint::Master).unwrap();
    let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    // `b` sleeps until the master speaks; the frames from `a` do not wake it.
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 1001 {
            got.push(b.recv().unwrap());
        }
        got
    });
    for seq in 0..1000 {
        a.send(Endpoint::Node(NodeId(2)), seq).unwrap();
    }
    master.send(Endpoint::Node(NodeId(2)), u64::MAX).unwrap();
    let got = receiver.join().unwrap();
    let from_a: Vec<u64> = got
        .iter()
        .filter(|(from, _)| *from == Endpoint::Node(NodeId(1)))
        .map(|&(_, seq)| seq)
        .collect();
    assert_eq!(from_a, (0..1000).collect::<Vec<_>>());
    assert!(got.contains(&(Endpoint::Master, u64::MAX)));
    // Frames from a node to a non-node endpoint are never deferred.
    a.send(Endpoint::Master, 7).unwrap();
    assert_eq!(
        master
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap(),
        Some((Endpoint::Node(NodeId(1)), 7))
    );
}

#[test]
fn a_spinning_endpoint_still_receives_and_times_out() {
    let network = MemNetwork::<u8>::new();
    let mut master = network.endpoint(Endpoint::Master).unwrap();
    master.set_spin(std::time::Duration::from_micros(200));
    let mut node = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    assert_eq!(
        master
            .recv_timeout(std::time::Duration::from_millis(1))
            .unwrap(),
        None
    );
    node.send(Endpoint::Master, 9).unwrap();
    assert_eq!(master.recv().unwrap(), (Endpoint::Node(NodeId(1)), 9));
}

/// A batching network: frames wait for a flush (or a full batch, or the sender's next
/// `recv`), then arrive in order, across batch boundaries, and exactly once; a batch
/// for a peer that has gone fails its flush.
#[test]
fn batches_leave_on_flush_and_keep_their_order() {
    let network = MemNetwork::<u64>::with_batching();
    let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    a.send(b.local(), 0).unwrap();
    assert_eq!(
        b.recv_timeout(Duration::ZERO).unwrap(),
        None,
        "a frame waits for its batch to be handed over"
    );
    a.flush().unwrap();
    assert_eq!(b.recv().unwrap(), (a.local(), 0));

    // Several full batches and a partial one, handed over by a's own recv_timeout.
    let total = 3 * transport_mem::BATCH as u64 + 7;
    for n in 1..=total {
        a.send(b.local(), n).unwrap();
    }
    assert_eq!(a.recv_timeout(Duration::ZERO).unwrap(), None);
    for n in 1..=total {
        assert_eq!(b.recv().unwrap(), (a.local(), n));
    }
    assert_eq!(b.recv_timeout(Duration::ZERO).unwrap(), None);

    // Dropping an endpoint hands over what it still holds.
    a.send(b.local(), 99).unwrap();
    let a_id = a.local();
    drop(a);
    assert_eq!(b.recv().unwrap(), (a_id, 99));

    let mut c = network.endpoint(Endpoint::Node(NodeId(3))).unwrap();
    c.send(b.local(), 1).unwrap();
    drop(b);
    c.send(Endpoint::Node(NodeId(2)), 2).unwrap();
    assert!(matches!(
        c.flush(),
        Err(TransportError::Disconnected(Endpoint::Node(NodeId(2))))
    ));
    c.flush().unwrap();
}
