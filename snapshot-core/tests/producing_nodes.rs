//! Nodes that produce traffic of their own between events: `poll_event` and a
//! `Collector`, on seeded random schedules.
//!
//! Four nodes, each linked both ways to every other, move money to random peers in
//! bursts and handle what has arrived with `poll_event` (a zero timeout, or a long one
//! that nothing makes them wait for), while a driver asks random nodes to start
//! snapshots, so that several are in flight at once. Each node's completed part goes
//! to one `Collector`; every snapshot it assembles must be a consistent cut that
//! accounts for all the money. All endpoints live in one thread, and every choice
//! comes from a seeded generator, so each run is the same.
//!
//! A second test feeds `poll_event` a stream that never pauses, and checks that a
//! positive timeout still brings it back.

use snapshot_core::{
    Collector, Endpoint, Envelope, Event, Frame, GlobalSnapshot, Incoming, Node, NodeId, Outbox,
    Process, Transport, TransportError,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const NODES: usize = 4;
const INITIAL: i64 = 1_000;

/// SplitMix64: a small seeded generator, enough for schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A bank branch: money leaves with `send` and arrives with `handle`.
struct Branch {
    balance: i64,
}

impl Process for Branch {
    type Message = i64;
    type State = i64;
    type Record = i64;

    fn handle(&mut self, _from: NodeId, amount: i64, _outbox: &mut Outbox<i64>) {
        self.balance += amount;
    }
    fn capture(&self) -> i64 {
        self.balance
    }
    fn record(&self, in_transit: &mut i64, _from: NodeId, amount: &i64) {
        *in_transit += amount;
    }
}

/// The driver's word to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Control {
    Initiate,
}

type Wire = Frame<i64, Control>;

/// Every endpoint's inbox, in one thread.
#[derive(Default)]
struct Network {
    inbox: Vec<VecDeque<(Endpoint, Wire)>>,
}

/// One node's view of the network.
struct Port<'a> {
    me: usize,
    network: &'a mut Network,
}

fn endpoint(index: usize) -> Endpoint {
    Endpoint::Node(NodeId(index as u32 + 1))
}

impl Transport<Wire> for Port<'_> {
    fn local(&self) -> Endpoint {
        endpoint(self.me)
    }
    fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        let index = match to {
            Endpoint::Node(NodeId(id)) if (1..=NODES as u32).contains(&id) => id as usize - 1,
            other => return Err(TransportError::UnknownEndpoint(other)),
        };
        self.network.inbox[index].push_back((endpoint(self.me), frame));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn address(&self) -> String {
        String::new()
    }
    fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        self.network.inbox[self.me]
            .pop_front()
            .map(|(from, frame)| Incoming::Frame(from, frame))
            .ok_or(TransportError::Closed)
    }
    fn recv_timeout(&mut self, _: Duration) -> Result<Option<Incoming<Wire>>, TransportError> {
        // Nothing else can arrive while this thread waits: no wait is needed.
        Ok(self.network.inbox[self.me]
            .pop_front()
            .map(|(from, frame)| Incoming::Frame(from, frame)))
    }
}

/// Checks a snapshot: a consistent cut, and all the money in it.
fn check(global: &GlobalSnapshot<i64, i64>) {
    global.check_cut().expect("a consistent cut");
    let held: i64 = global.nodes().map(|l| l.state).sum();
    let in_transit: i64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
    assert_eq!(
        held + in_transit,
        INITIAL * NODES as i64,
        "snapshot {} accounts for all the money",
        global.id()
    );
}

/// What one seeded run saw.
struct Run {
    initiated: usize,
    assembled: usize,
    most_in_flight: usize,
}

fn run(seed: u64, steps: usize) -> Run {
    let mut rng = Rng(seed);
    let mut network = Network {
        inbox: (0..NODES).map(|_| VecDeque::new()).collect(),
    };
    let mut nodes: Vec<Node<Branch>> = (0..NODES)
        .map(|me| {
            let mut node = Node::new(NodeId(me as u32 + 1), Branch { balance: INITIAL });
            for peer in (0..NODES).filter(|&p| p != me) {
                node.add_peer(NodeId(peer as u32 + 1)).unwrap();
            }
            node
        })
        .collect();
    let mut collector = Collector::new(NODES);
    let (mut initiated, mut assembled, mut most_in_flight) = (0, 0, 0);

    // Hands a node's event to the application: the driver's word, or a part for the
    // collector.
    let mut on_event = |node: &mut Node<Branch>,
                        port: &mut Port<'_>,
                        event: Event<Control, i64, i64>,
                        collector: &mut Collector<i64, i64>| {
        let local = match event {
            Event::Control {
                control: Control::Initiate,
                ..
            } => node.initiate(port).unwrap().1,
            Event::Completed(local) => Some(local),
            Event::Departed(peer) => panic!("{peer} departed: nobody leaves this network"),
        };
        if let Some(global) = local.and_then(|local| collector.add(local).unwrap()) {
            check(&global);
            assembled += 1;
        }
    };

    for _ in 0..steps {
        let me = rng.below(NODES);
        match rng.below(10) {
            // A burst of transfers to random peers.
            0..=3 => {
                let node = &mut nodes[me];
                let mut port = Port {
                    me,
                    network: &mut network,
                };
                for _ in 0..1 + rng.below(8) {
                    let peer = (me + 1 + rng.below(NODES - 1)) % NODES;
                    let amount = 1 + rng.below(5) as i64;
                    node.process_mut().balance -= amount;
                    node.send(&mut port, NodeId(peer as u32 + 1), amount)
                        .unwrap();
                }
            }
            // The driver asks for a snapshot.
            4 => {
                network.inbox[me].push_back((Endpoint::Master, Frame::Control(Control::Initiate)));
                initiated += 1;
            }
            // A look at what has arrived: at once, or with a timeout that nothing
            // makes it wait for.
            _ => {
                let timeout = if rng.below(2) == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(3600)
                };
                let node = &mut nodes[me];
                let mut port = Port {
                    me,
                    network: &mut network,
                };
                if let Some(event) = node.poll_event(&mut port, timeout).unwrap() {
                    on_event(node, &mut port, event, &mut collector);
                }
            }
        }
        most_in_flight = most_in_flight.max(collector.in_progress());
    }

    // Drains every inbox: every snapshot completes.
    while let Some(me) = (0..NODES).find(|&me| !network.inbox[me].is_empty()) {
        let node = &mut nodes[me];
        let mut port = Port {
            me,
            network: &mut network,
        };
        while let Some(event) = node.poll_event(&mut port, Duration::ZERO).unwrap() {
            on_event(node, &mut port, event, &mut collector);
        }
    }
    assert_eq!(collector.in_progress(), 0, "no snapshot is left half done");
    let money: i64 = nodes.iter().map(|n| n.process().balance).sum();
    assert_eq!(money, INITIAL * NODES as i64, "all the money has arrived");
    for node in &nodes {
        assert_eq!(node.engine().in_flight().count(), 0);
    }
    Run {
        initiated,
        assembled,
        most_in_flight,
    }
}

#[test]
fn producing_nodes_assemble_every_snapshot_consistent() {
    let mut most_in_flight = 0;
    for seed in 0..20 {
        let run = run(0x5eed_0000 + seed, 2_000);
        assert!(run.initiated > 0, "seed {seed}: snapshots were asked for");
        assert_eq!(
            run.assembled, run.initiated,
            "seed {seed}: every snapshot asked for is assembled"
        );
        most_in_flight = most_in_flight.max(run.most_in_flight);
    }
    assert!(
        most_in_flight >= 2,
        "several snapshots were in flight at once (at most {most_in_flight})"
    );
}

/// A peer that never stops sending, one transfer after another.
struct Firehose {
    sent: u64,
}

impl Transport<Wire> for Firehose {
    fn local(&self) -> Endpoint {
        endpoint(1)
    }
    fn send(&mut self, to: Endpoint, _: Wire) -> Result<(), TransportError> {
        Err(TransportError::UnknownEndpoint(to))
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn address(&self) -> String {
        String::new()
    }
    fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        self.sent += 1;
        Ok(Incoming::Frame(endpoint(0), Frame::Peer(Envelope::App(1))))
    }
    fn recv_timeout(&mut self, _: Duration) -> Result<Option<Incoming<Wire>>, TransportError> {
        self.recv().map(Some)
    }
}

#[test]
fn a_stream_that_never_pauses_cannot_keep_a_timed_poll() {
    let mut node = Node::new(NodeId(2), Branch { balance: 0 });
    node.add_peer(NodeId(1)).unwrap();
    let mut firehose = Firehose { sent: 0 };
    let timeout = Duration::from_millis(5);
    let start = Instant::now();
    assert_eq!(node.poll_event(&mut firehose, timeout).unwrap(), None);
    assert!(
        start.elapsed() >= timeout,
        "it handled frames until the timeout"
    );
    assert_eq!(node.process().balance, firehose.sent as i64);

    // A zero timeout: exactly one burst.
    let before = firehose.sent;
    assert_eq!(
        node.poll_event(&mut firehose, Duration::ZERO).unwrap(),
        None
    );
    assert_eq!(
        firehose.sent - before,
        Node::<Branch>::POLL_BURST as u64,
        "a zero timeout handles one burst"
    );
}
