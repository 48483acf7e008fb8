//! The order in which the bank sets up its endpoints, with threads standing in for
//! processes: the master connects to a node before it starts it; the node connects to
//! the master and the observer, then says hello; nodes connect to each other, and the
//! observer to the node, before any frame goes their way.

mod common;

use common::{address, assert_empty, recv, recv_frame};
use serde::{Deserialize, Serialize};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::path::PathBuf;
use std::thread;
use transport_pipe::PipeTransport;

const NODES: u32 = 4;
const INITIAL: u64 = 1_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    /// node -> master, once it is connected to the master and the observer.
    Hello,
    /// master -> node: connect to this node.
    Connect(u32),
    /// master -> observer: this node has joined.
    Joined(u32),
    /// -> master: done connecting.
    Connected,
    /// master -> node: send money.
    Transfer { to: u32, amount: u64 },
    /// node -> node.
    Money(u64),
    /// node -> master: the money has been sent.
    Sent,
    /// master -> node: report your balance once this many transfers have arrived.
    Report { transfers: u64 },
    /// node -> observer.
    Balance(u64),
    /// observer -> master.
    Total(u64),
    /// master -> everyone.
    Stop,
}

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

fn run_node(dir: PathBuf, id: u32) {
    let run = address(&dir);
    let mut t = PipeTransport::<Msg>::new(&dir, node(id)).unwrap();
    t.connect(Endpoint::Role(1), &run).unwrap();
    t.connect(Endpoint::Role(0), &run).unwrap();
    t.send(Endpoint::Role(1), Msg::Hello).unwrap();
    let mut balance = INITIAL;
    let mut arrived = 0;
    let mut report_at = None;
    loop {
        match recv(&mut t) {
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Connect(k))) => {
                t.connect(node(k), &run).unwrap();
                t.send(Endpoint::Role(1), Msg::Connected).unwrap();
            }
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Transfer { to, amount })) => {
                balance -= amount;
                t.send(node(to), Msg::Money(amount)).unwrap();
                t.send(Endpoint::Role(1), Msg::Sent).unwrap();
            }
            Ok(Incoming::Frame(Endpoint::Node(_), Msg::Money(amount))) => {
                balance += amount;
                arrived += 1;
            }
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Report { transfers })) => {
                report_at = Some(transfers)
            }
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Stop)) => return,
            // The others may stop before we are told to.
            Ok(Incoming::Departed(Endpoint::Node(_) | Endpoint::Role(0))) => {}
            other => panic!("node {id}: unexpected {other:?}"),
        }
        if report_at == Some(arrived) {
            report_at = None;
            t.send(Endpoint::Role(0), Msg::Balance(balance)).unwrap();
        }
    }
}

fn run_observer(dir: PathBuf) {
    let run = address(&dir);
    let mut t = PipeTransport::<Msg>::new(&dir, Endpoint::Role(0)).unwrap();
    t.connect(Endpoint::Role(1), &run).unwrap();
    let (mut total, mut reports) = (0, 0);
    loop {
        match recv(&mut t) {
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Joined(n))) => {
                t.connect(node(n), &run).unwrap();
                t.send(Endpoint::Role(1), Msg::Connected).unwrap();
            }
            Ok(Incoming::Frame(Endpoint::Node(_), Msg::Balance(b))) => {
                total += b;
                reports += 1;
                if reports == NODES {
                    t.send(Endpoint::Role(1), Msg::Total(total)).unwrap();
                }
            }
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Stop)) => return,
            Ok(Incoming::Departed(Endpoint::Node(_))) => {}
            other => panic!("observer: unexpected {other:?}"),
        }
    }
}

fn expect(t: &mut PipeTransport<Msg>, from: Endpoint, msg: Msg) {
    assert_eq!(recv(t).unwrap(), Incoming::Frame(from, msg));
}

#[test]
fn the_bank_set_up_order_works() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let mut master = PipeTransport::<Msg>::new(dir.path(), Endpoint::Role(1)).unwrap();
    let mut threads = Vec::new();

    master.connect(Endpoint::Role(0), &run).unwrap();
    let path = dir.path().to_owned();
    threads.push(thread::spawn(move || run_observer(path)));

    for n in 1..=NODES {
        master.connect(node(n), &run).unwrap();
        let path = dir.path().to_owned();
        threads.push(thread::spawn(move || run_node(path, n)));
        expect(&mut master, node(n), Msg::Hello);
        master.send(Endpoint::Role(0), Msg::Joined(n)).unwrap();
        expect(&mut master, Endpoint::Role(0), Msg::Connected);
        for k in 1..n {
            master.send(node(k), Msg::Connect(n)).unwrap();
            master.send(node(n), Msg::Connect(k)).unwrap();
        }
        for _ in 1..n {
            for _ in 0..2 {
                let (from, msg) = recv_frame(&mut master);
                assert!(matches!(from, Endpoint::Node(_)));
                assert_eq!(msg, Msg::Connected);
            }
        }
    }

    let mut transfers = [0u64; NODES as usize + 1];
    for i in 1..=NODES {
        for j in (1..=NODES).filter(|&j| j != i) {
            let amount = u64::from(i * 10 + j);
            master
                .send(node(i), Msg::Transfer { to: j, amount })
                .unwrap();
            expect(&mut master, node(i), Msg::Sent);
            transfers[j as usize] += 1;
        }
    }
    for j in 1..=NODES {
        let transfers = transfers[j as usize];
        master.send(node(j), Msg::Report { transfers }).unwrap();
    }
    expect(
        &mut master,
        Endpoint::Role(0),
        Msg::Total(INITIAL * u64::from(NODES)),
    );

    for n in 1..=NODES {
        master.send(node(n), Msg::Stop).unwrap();
    }
    master.send(Endpoint::Role(0), Msg::Stop).unwrap();
    master.flush().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    // Every endpoint but the master has gone, each reported once.
    let mut gone = Vec::new();
    loop {
        match recv(&mut master) {
            Ok(Incoming::Departed(p)) => gone.push(p),
            Err(TransportError::Closed) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    gone.sort();
    let mut all: Vec<Endpoint> = (1..=NODES).map(node).collect();
    all.push(Endpoint::Role(0));
    assert_eq!(gone, all);
    drop(master);
    assert_empty(dir.path());
}
