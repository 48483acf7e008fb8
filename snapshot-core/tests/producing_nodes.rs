//! Nodes that produce traffic of their own between events: `poll_event` and a
//! `Collector`, on seeded random schedules.
//!
//! Four nodes, each linked both ways to every other, move money to random peers in
//! bursts and handle what has arrived with `poll_event` (a zero timeout, or a long one
//! that nothing makes them wait for), while a driver asks random nodes to start
//! snapshots, so that several are in flight at once. Each node's completed part goes
//! to one `Collector`; every snapshot it assembles must be a consistent cut that
//! accounts for all the money. The nodes run on the simulated network of
//! `snapshot_core::sim` (feature `sim`), whose collector assembles their parts, and
//! every choice (the schedule's, and the network's) comes from its seeded generator,
//! so each run is the same.
//!
//! A second test feeds `poll_event` a stream that never pauses, and checks that a
//! positive timeout still brings it back: a transport of its own, not a network.

#[cfg(feature = "sim")]
use snapshot_core::GlobalSnapshot;
#[cfg(feature = "sim")]
use snapshot_core::sim::{Notice, Sim};
#[cfg(feature = "sim")]
use snapshot_core::topology::Topology;
use snapshot_core::{
    Endpoint, Envelope, Frame, Incoming, Node, NodeId, Outbox, Process, Transport, TransportError,
};
use std::time::{Duration, Instant};

#[cfg(feature = "sim")]
const NODES: usize = 4;
#[cfg(feature = "sim")]
const INITIAL: i64 = 1_000;

/// The endpoint of the driver that asks nodes for snapshots.
#[cfg(feature = "sim")]
const CONTROL: Endpoint = Endpoint::Role(1);

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
#[cfg(feature = "sim")]
#[derive(Debug, Clone, PartialEq, Eq)]
enum Control {
    Initiate,
}

/// Checks a snapshot: a consistent cut, and all the money in it.
#[cfg(feature = "sim")]
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
#[cfg(feature = "sim")]
struct Run {
    initiated: usize,
    assembled: usize,
    most_in_flight: usize,
}

/// The application's answer to what a node hands it: the driver's word.
#[cfg(feature = "sim")]
fn on_notice(sim: &mut Sim<Branch, Control>, me: NodeId, notice: Notice<Control>) {
    match notice {
        Notice::Control {
            control: Control::Initiate,
            ..
        } => {
            sim.initiate(me).unwrap();
        }
        Notice::Departed(peer) => panic!("{peer} departed: nobody leaves this network"),
        other => panic!("no coordinator here: {other:?}"),
    }
}

#[cfg(feature = "sim")]
fn run(seed: u64, steps: usize) -> Run {
    let ids: Vec<NodeId> = (1..=NODES as u32).map(NodeId).collect();
    let mut sim = Sim::new(seed, &Topology::complete(ids.iter().copied()), |_| Branch {
        balance: INITIAL,
    })
    .unwrap();
    let (mut initiated, mut assembled, mut most_in_flight) = (0, 0, 0);
    // The snapshots the collector has assembled since the last look.
    let mut check_assembled = |sim: &mut Sim<Branch, Control>| {
        for global in sim.take_completed() {
            check(&global);
            assembled += 1;
        }
    };

    for _ in 0..steps {
        let me = sim.random_below(NODES);
        match sim.random_below(10) {
            // A burst of transfers to random peers.
            0..=3 => {
                for _ in 0..1 + sim.random_below(8) {
                    let peer = (me + 1 + sim.random_below(NODES - 1)) % NODES;
                    let amount = 1 + sim.random_below(5) as i64;
                    sim.process_mut(ids[me]).unwrap().balance -= amount;
                    sim.send(ids[me], ids[peer], amount).unwrap();
                }
            }
            // The driver asks for a snapshot.
            4 => {
                sim.send_control(CONTROL, ids[me], Control::Initiate)
                    .unwrap();
                initiated += 1;
            }
            // A look at what has arrived: at once, or with a timeout that nothing
            // makes it wait for.
            _ => {
                let timeout = if sim.random_below(2) == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs(3600)
                };
                if let Some(notice) = sim.poll(ids[me], timeout).unwrap() {
                    on_notice(&mut sim, ids[me], notice);
                }
            }
        }
        check_assembled(&mut sim);
        most_in_flight = most_in_flight.max(sim.incomplete().len());
    }

    // Drains every channel: every snapshot completes.
    while let Some(&(_, to)) = sim.ready().first() {
        let Endpoint::Node(me) = to else {
            panic!("only nodes take frames here, not {to}");
        };
        while let Some(notice) = sim.poll(me, Duration::ZERO).unwrap() {
            on_notice(&mut sim, me, notice);
        }
    }
    check_assembled(&mut sim);
    assert!(sim.incomplete().is_empty(), "no snapshot is left half done");
    let money: i64 = sim.nodes().map(|n| n.process().balance).sum();
    assert_eq!(money, INITIAL * NODES as i64, "all the money has arrived");
    for node in sim.nodes() {
        assert_eq!(node.engine().in_flight().count(), 0);
    }
    Run {
        initiated,
        assembled,
        most_in_flight,
    }
}

#[cfg(feature = "sim")]
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

/// What the firehose carries.
type Wire = snapshot_core::NodeFrame<Branch>;

/// A peer that never stops sending, one transfer after another.
struct Firehose {
    sent: u64,
}

impl Transport<Wire> for Firehose {
    fn local(&self) -> Endpoint {
        Endpoint::Node(NodeId(2))
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
        Ok(Incoming::Frame(
            Endpoint::Node(NodeId(1)),
            Frame::Peer(Envelope::App(1)),
        ))
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
