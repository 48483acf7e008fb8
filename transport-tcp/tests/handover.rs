//! Connections accepted while the application sleeps in `recv`: the worker thread
//! hands them to the sleeping thread, which must wake up and read them.

mod common;

use common::{PATIENCE, address, endpoint, node};
use snapshot_core::{Endpoint, Incoming, Transport};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

#[test]
fn a_receiver_asleep_in_recv_is_woken_by_peers_that_connect_after_it_fell_asleep() {
    const PEERS: u32 = 3;
    let mut receiver = endpoint::<(u32, u64)>(Endpoint::Role(0));
    let to = address(&receiver);
    let (asleep, falls_asleep) = mpsc::channel();
    let receiving = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..PEERS {
            asleep.send(()).unwrap();
            let start = Instant::now();
            // Nothing is connected yet: the poll has only the worker's waker to wake
            // it. Without the wake-up this returns `None` after PATIENCE.
            let item = receiver.recv_timeout(PATIENCE).unwrap();
            got.push((item, start.elapsed()));
        }
        (receiver, got)
    });
    let mut senders = Vec::new();
    for id in 1..=PEERS {
        falls_asleep.recv().unwrap();
        let mut sender = endpoint::<(u32, u64)>(node(id));
        sender.connect(Endpoint::Role(0), &to).unwrap();
        // Sent at once: the frame may reach the socket before the receiving thread
        // has taken the connection over, and must not be lost for that.
        sender
            .send(Endpoint::Role(0), (id, u64::from(id) * 10))
            .unwrap();
        sender.flush().unwrap();
        senders.push(sender);
    }
    let (receiver, got) = receiving.join().unwrap();
    for (n, (item, waited)) in got.into_iter().enumerate() {
        let id = n as u32 + 1;
        assert_eq!(
            item,
            Some(Incoming::Frame(node(id), (id, u64::from(id) * 10))),
            "the frame of peer {id}, which connected while the receiver slept"
        );
        assert!(waited < PATIENCE, "woken by the frame, not by the timeout");
    }
    drop((receiver, senders));
}
