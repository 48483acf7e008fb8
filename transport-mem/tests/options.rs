//! What only the in-memory transport has: deferred node frames, spinning, batching,
//! and its capacity. The contract every transport keeps is checked by
//! `tests/conformance.rs`.

use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::thread;
use std::time::Duration;
use transport_mem::{MAX_CAPACITY, MemNetwork, MemOptions, MemTransport};

/// Connects every pair of `endpoints` both ways, as the contract asks.
fn connect_all<F: Send>(endpoints: &mut [&mut MemTransport<F>]) {
    for i in 0..endpoints.len() {
        for j in 0..endpoints.len() {
            if i != j {
                let (peer, address) = (endpoints[j].local(), endpoints[j].address());
                endpoints[i].connect(peer, &address).unwrap();
            }
        }
    }
}

#[test]
fn deferred_node_frames_keep_their_order_and_are_found_on_the_next_wake_up() {
    let network = MemNetwork::<u64>::with_deferred_node_frames();
    let mut master = network.endpoint(Endpoint::Role(1)).unwrap();
    let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    connect_all(&mut [&mut master, &mut a, &mut b]);
    // `b` sleeps until the master speaks; the frames from `a` do not wake it.
    let receiver = thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 1001 {
            got.push(b.recv().unwrap());
        }
        (b, got)
    });
    for seq in 0..1000 {
        a.send(Endpoint::Node(NodeId(2)), seq).unwrap();
    }
    master.send(Endpoint::Node(NodeId(2)), u64::MAX).unwrap();
    let (b, got) = receiver.join().unwrap();
    let from_a: Vec<u64> = got
        .iter()
        .filter_map(|incoming| match incoming {
            Incoming::Frame(Endpoint::Node(NodeId(1)), seq) => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(from_a, (0..1000).collect::<Vec<_>>());
    assert!(got.contains(&Incoming::Frame(Endpoint::Role(1), u64::MAX)));
    // Frames from a node to a non-node endpoint are never deferred.
    a.send(Endpoint::Role(1), 7).unwrap();
    assert_eq!(
        master.recv_timeout(Duration::from_secs(5)).unwrap(),
        Some(Incoming::Frame(Endpoint::Node(NodeId(1)), 7))
    );
    drop(b);
}

#[test]
fn a_spinning_endpoint_still_receives_and_times_out() {
    let network = MemNetwork::<u8>::new();
    let mut master = network.endpoint(Endpoint::Role(1)).unwrap();
    master.set_spin(Duration::from_micros(200));
    let mut node = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    connect_all(&mut [&mut master, &mut node]);
    assert_eq!(master.recv_timeout(Duration::from_millis(1)).unwrap(), None);
    node.send(Endpoint::Role(1), 9).unwrap();
    assert_eq!(
        master.recv().unwrap(),
        Incoming::Frame(Endpoint::Node(NodeId(1)), 9)
    );
}

/// A batching network: frames wait for a flush (or a full batch, or the sender's next
/// `recv`), then arrive in order, across batch boundaries, and exactly once; a batch
/// for a peer that has gone is dropped by the flush, whose departure `recv` reports.
#[test]
fn batches_leave_on_flush_and_keep_their_order() {
    let network = MemNetwork::<u64>::with_batching();
    let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    let mut c = network.endpoint(Endpoint::Node(NodeId(3))).unwrap();
    connect_all(&mut [&mut a, &mut b, &mut c]);
    a.send(b.local(), 0).unwrap();
    assert_eq!(
        b.recv_timeout(Duration::ZERO).unwrap(),
        None,
        "a frame waits for its batch to be handed over"
    );
    a.flush().unwrap();
    assert_eq!(b.recv().unwrap(), Incoming::Frame(a.local(), 0));

    // Several full batches and a partial one, handed over by a's own recv_timeout.
    let total = 3 * transport_mem::BATCH as u64 + 7;
    for n in 1..=total {
        a.send(b.local(), n).unwrap();
    }
    assert_eq!(a.recv_timeout(Duration::ZERO).unwrap(), None);
    for n in 1..=total {
        assert_eq!(b.recv().unwrap(), Incoming::Frame(a.local(), n));
    }
    assert_eq!(b.recv_timeout(Duration::ZERO).unwrap(), None);

    // Dropping an endpoint hands over what it still holds, then departs.
    a.send(b.local(), 99).unwrap();
    let a_id = a.local();
    drop(a);
    assert_eq!(b.recv().unwrap(), Incoming::Frame(a_id, 99));
    assert_eq!(b.recv().unwrap(), Incoming::Departed(a_id));

    c.send(b.local(), 1).unwrap();
    let b_id = b.local();
    drop(b);
    c.send(b_id, 2).unwrap();
    c.flush().unwrap();
    assert_eq!(c.recv().unwrap(), Incoming::Departed(b_id));
    assert!(matches!(
        c.send(b_id, 3),
        Err(TransportError::Disconnected(peer)) if peer == b_id
    ));
}

/// A receiver that does not receive holds up its sender once its channel is full;
/// the sender's frames all arrive, in order, once it receives.
#[test]
fn a_full_channel_holds_the_sender_up_until_the_receiver_takes_its_frames() {
    let network = MemNetwork::<u64>::with_options(MemOptions::default().capacity(4));
    let mut sender = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut receiver = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    connect_all(&mut [&mut sender, &mut receiver]);
    let to = receiver.local();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let sending = thread::spawn(move || {
        for n in 0..10 {
            sender.send(to, n).unwrap();
            sent_tx.send(n).unwrap();
        }
        sender
    });
    // The first four fit; the fifth waits for room.
    for n in 0..4 {
        assert_eq!(sent_rx.recv().unwrap(), n);
    }
    assert!(
        sent_rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "a fifth frame does not fit in a channel of four"
    );
    for n in 0..10 {
        assert_eq!(
            receiver.recv().unwrap(),
            Incoming::Frame(Endpoint::Node(NodeId(1)), n)
        );
    }
    drop(sending.join().unwrap());
    assert!(matches!(
        network.endpoint(receiver.local()),
        Err(TransportError::AlreadyJoined(Endpoint::Node(NodeId(2))))
    ));
    assert!(
        network.endpoint(Endpoint::Node(NodeId(1))).is_ok(),
        "a dropped endpoint's place is free again"
    );
}

#[test]
fn a_capacity_outside_its_bounds_is_a_configuration_error() {
    for capacity in [0, MAX_CAPACITY + 1, usize::MAX] {
        let network = MemNetwork::<u32>::with_options(MemOptions::default().capacity(capacity));
        let refused = network.endpoint(Endpoint::Node(NodeId(1)));
        assert!(
            matches!(&refused, Err(TransportError::Config(why)) if why.contains("capacity")),
            "{capacity}: {:?}",
            refused.map(|_| ())
        );
    }
    let network = MemNetwork::<u32>::with_options(MemOptions::default().capacity(MAX_CAPACITY));
    assert!(network.endpoint(Endpoint::Node(NodeId(1))).is_ok());
}

#[test]
fn a_batch_that_does_not_fit_when_its_sender_goes_arrives_before_the_departure() {
    let network = MemNetwork::<u32>::with_options(MemOptions::default().batching().capacity(1));
    let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    connect_all(&mut [&mut a, &mut b]);
    a.send(b.local(), 0).unwrap();
    a.flush().unwrap();
    // B's channel holds that batch: the next one stays gathered when A goes.
    for n in 1..=5 {
        a.send(b.local(), n).unwrap();
    }
    drop(a);
    let from_a = |n| Incoming::Frame(Endpoint::Node(NodeId(1)), n);
    for n in 0..=5 {
        assert_eq!(b.recv().unwrap(), from_a(n));
    }
    assert_eq!(
        b.recv().unwrap(),
        Incoming::Departed(Endpoint::Node(NodeId(1)))
    );
    assert!(matches!(b.recv(), Err(TransportError::Closed)));
}

#[test]
fn an_endpoint_that_goes_before_connecting_back_is_reported_gone() {
    let network = MemNetwork::<u32>::new();
    let a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
    let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
    b.connect(a.local(), &a.address()).unwrap();
    // A never connects to B, nor sends to it.
    drop(a);
    assert_eq!(
        b.recv_timeout(Duration::from_secs(10)).unwrap(),
        Some(Incoming::Departed(Endpoint::Node(NodeId(1))))
    );
    // An endpoint that never knew A is not told.
    let mut c = network.endpoint(Endpoint::Node(NodeId(3))).unwrap();
    let d = network.endpoint(Endpoint::Node(NodeId(4))).unwrap();
    drop(d);
    assert_eq!(c.recv_timeout(Duration::ZERO).unwrap(), None);
}
