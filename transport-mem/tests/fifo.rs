//! The guarantees every transport documents: FIFO per ordered pair, no loss, no
//! duplication, and a peer that has gone is reported.

use snapshot_core::{Endpoint, NodeId, Transport, TransportError};
use std::thread;
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
