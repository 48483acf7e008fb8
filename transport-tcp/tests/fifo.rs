//! FIFO per ordered pair, no loss, no duplication, under load.

mod common;

use common::{address, endpoint, frame, node, pair_up, recv};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::collections::HashMap;
use std::thread;
use transport_tcp::{TcpConfig, TcpTransport};

const FRAMES: u64 = 100_000;

#[test]
fn several_senders_to_one_receiver_keep_their_order_and_lose_nothing() {
    let mut receiver = endpoint::<(u32, u64)>(Endpoint::Observer);
    let to = address(&receiver);
    let senders: Vec<_> = (1..=4)
        .map(|id| {
            let mut t = endpoint::<(u32, u64)>(node(id));
            t.connect(Endpoint::Observer, &to).unwrap();
            thread::spawn(move || {
                for seq in 0..FRAMES {
                    t.send(Endpoint::Observer, (id, seq)).unwrap();
                    if seq % 10_000 == 0 {
                        t.flush().unwrap(); // flushes between batches too
                    }
                }
                t.flush().unwrap();
                t // dropped by the test, after the receiver has everything
            })
        })
        .collect();

    let mut next: HashMap<u32, u64> = (1..=4).map(|id| (id, 0)).collect();
    for _ in 0..4 * FRAMES {
        let (from, (id, seq)) = frame(&mut receiver);
        assert_eq!(from, node(id), "frames are attributed to their sender");
        let expected = next.get_mut(&id).unwrap();
        assert_eq!(
            seq, *expected,
            "from {from}: out of order, lost or duplicated"
        );
        *expected += 1;
    }
    assert!(next.values().all(|&n| n == FRAMES));
    let senders: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    drop(senders);
    let mut gone = Vec::new();
    for _ in 0..4 {
        match recv(&mut receiver) {
            Ok(Incoming::Departed(peer)) => gone.push(peer),
            other => panic!("expected a departure, got {other:?}"),
        }
    }
    gone.sort();
    assert_eq!(gone, (1..=4).map(node).collect::<Vec<_>>());
    assert!(
        matches!(recv(&mut receiver), Err(TransportError::Closed)),
        "every peer has gone"
    );
}

/// Each side sends everything before it receives anything: the readers must drain
/// the connections meanwhile, or both would block on full sockets.
#[test]
fn heavy_traffic_both_ways_at_once_does_not_deadlock() {
    const BOTH_WAYS: u64 = 50_000;
    let mut a = endpoint::<(u64, Vec<u8>)>(node(1));
    let mut b = endpoint::<(u64, Vec<u8>)>(node(2));
    pair_up(&mut a, &mut b);
    let run = |mut t: TcpTransport<(u64, Vec<u8>)>, peer| {
        thread::spawn(move || {
            // 50 000 frames of 200 bytes: 10 MB, far more than the sockets hold.
            for seq in 0..BOTH_WAYS {
                t.send(peer, (seq, vec![seq as u8; 200])).unwrap();
            }
            t.flush().unwrap();
            for seq in 0..BOTH_WAYS {
                let (from, (got, payload)) = frame(&mut t);
                assert_eq!((from, got), (peer, seq));
                assert_eq!(payload, vec![seq as u8; 200]);
            }
            t
        })
    };
    let a = run(a, node(2));
    let b = run(b, node(1));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    drop((a, b));
}

/// Frames from a few bytes to megabytes, across batch boundaries, arrive whole and in
/// order; a frame over the bound is refused at the sender and the connection lives on.
#[test]
fn frames_of_every_size_arrive_whole_and_an_oversized_one_is_refused() {
    let config = TcpConfig {
        max_frame: 4 << 20,
        ..common::config()
    };
    let mut a = TcpTransport::<Vec<u8>>::new(node(1), config.clone()).unwrap();
    let mut b = TcpTransport::<Vec<u8>>::new(node(2), config).unwrap();
    a.connect(node(2), &address(&b)).unwrap();
    let sizes: Vec<usize> = [
        0,
        1,
        100,
        65_000,
        65_536,
        70_000,
        1 << 20,
        3 << 20,
        7,
        200_000,
    ]
    .into_iter()
    .cycle()
    .take(40)
    .collect();
    // Megabytes are more than the sockets hold: the receiver takes them as they come.
    let receiver = std::thread::spawn({
        let sizes = sizes.clone();
        move || {
            for (i, &size) in sizes.iter().enumerate() {
                let (from, got) = frame(&mut b);
                assert_eq!(from, node(1));
                assert_eq!(got, vec![i as u8; size], "frame {i}");
            }
        }
    });
    for (i, &size) in sizes.iter().enumerate() {
        a.send(node(2), vec![i as u8; size]).unwrap();
        if i == 20 {
            assert!(matches!(
                a.send(node(2), vec![0; 5 << 20]),
                Err(TransportError::FrameTooLarge { limit, .. }) if limit == 4 << 20
            ));
        }
    }
    a.flush().unwrap();
    receiver.join().unwrap();
}

#[test]
fn an_endpoint_can_talk_to_itself_and_connecting_twice_does_nothing() {
    let mut a = endpoint::<u32>(node(1));
    let b = endpoint::<u32>(node(2));
    a.connect(node(1), &address(&a)).unwrap();
    a.connect(node(2), &address(&b)).unwrap();
    a.connect(node(2), &address(&b)).unwrap();
    a.connect(node(2), "not even an address").unwrap();
    for n in 0..3 {
        a.send(node(1), n).unwrap();
    }
    for n in 0..3 {
        assert_eq!(frame(&mut a), (node(1), n));
    }
}

#[test]
fn sending_to_a_peer_never_connected_is_an_unknown_endpoint() {
    let mut a = endpoint::<u32>(node(1));
    assert!(matches!(
        a.send(node(9), 1),
        Err(TransportError::UnknownEndpoint(p)) if p == node(9)
    ));
}
