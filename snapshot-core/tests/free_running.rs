//! The `Node` driver run free: node-to-node traffic is handled as it arrives, replies
//! from the process go out counted, and a snapshot taken while messages bounce around
//! still accounts for every one of them. The nodes run on the simulated network of
//! `snapshot_core::sim` (feature `sim`), which hands each node what has arrived for it
//! through [`Node::poll_event`](snapshot_core::Node::poll_event).

use snapshot_core::NodeId;
#[cfg(feature = "sim")]
use snapshot_core::sim::{Notice, Order, Sim, SimError};
#[cfg(feature = "sim")]
use snapshot_core::topology::Topology;
#[cfg(feature = "sim")]
use snapshot_core::{Endpoint, Envelope, Frame, Node, NodeError, Outbox, Process};
#[cfg(feature = "sim")]
use std::time::Duration;

/// The endpoint that sends the nodes control frames (a harness, a shell).
#[cfg(feature = "sim")]
const CONTROL: Endpoint = Endpoint::Role(1);

/// The simulation's seed.
#[cfg(feature = "sim")]
const SEED: u64 = 0xba11;

/// Every message is a ball; a node keeps every other ball it gets and throws the rest
/// back, so the number of balls is conserved and traffic flows by itself.
#[cfg(feature = "sim")]
struct Juggler {
    kept: u64,
    caught: u64,
}

#[cfg(feature = "sim")]
impl Process for Juggler {
    type Message = u64;
    type State = u64;
    type Record = u64;

    fn handle(&mut self, from: NodeId, balls: u64, outbox: &mut Outbox<u64>) {
        self.caught += 1;
        if self.caught.is_multiple_of(2) {
            self.kept += balls;
        } else {
            outbox.send(from, balls);
        }
    }
    fn capture(&self) -> u64 {
        self.kept
    }
    fn record(&self, in_transit: &mut u64, _from: NodeId, balls: &u64) {
        *in_transit += balls;
    }
}

#[cfg(feature = "sim")]
fn jugglers(topology: &Topology) -> Sim<Juggler, &'static str> {
    Sim::new(SEED, topology, |_| Juggler { kept: 0, caught: 0 }).expect("a new simulation")
}

#[cfg(feature = "sim")]
#[test]
fn a_free_running_pair_conserves_balls_through_a_snapshot() {
    let (a, b) = (NodeId(1), NodeId(2));
    let mut sim = jugglers(&Topology::complete([a, b]));
    // Ten balls of 1..=10 thrown by node 1 (it holds them until then: 55 in all).
    for balls in 1..=10 {
        sim.send(a, b, balls).unwrap();
    }
    let id = sim.initiate(a).unwrap();
    assert!(
        sim.incomplete().is_empty() && sim.completed().is_empty(),
        "node 1 still waits for node 2's marker"
    );
    sim.send_control(CONTROL, b, "hello").unwrap();

    let mut controls = Vec::new();
    // Alternate the nodes, each taking in what has arrived for it, until nothing is
    // left anywhere.
    let mut turns = 0;
    while !sim.is_quiet() {
        for node in [a, b] {
            match sim.poll(node, Duration::ZERO).unwrap() {
                Some(Notice::Control { from, control }) => controls.push((node, from, control)),
                Some(Notice::Departed(peer)) => panic!("{peer} departed: nobody leaves the pair"),
                Some(other) => panic!("no coordinator here: {other:?}"),
                None => {}
            }
        }
        turns += 1;
        assert!(turns < 1_000, "the balls come to rest");
    }
    assert_eq!(controls, vec![(b, CONTROL, "hello")]);
    let [global] = <[_; 1]>::try_from(sim.take_completed()).expect("one snapshot");
    assert_eq!(global.id(), id);
    assert_eq!(
        global.nodes().count(),
        2,
        "both parts of the snapshot complete"
    );
    global.check_cut().unwrap();
    let kept: u64 = global.nodes().map(|l| l.state).sum();
    let in_transit: u64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
    assert_eq!(kept + in_transit, 55);
    // And the run itself ended with every ball kept somewhere.
    let now: u64 = sim.nodes().map(|n| n.process().kept).sum();
    assert_eq!(now, 55);
}

#[cfg(feature = "sim")]
#[test]
fn node_traffic_from_a_non_node_is_refused() {
    let mut alone = Topology::default();
    alone.add_node(NodeId(1));
    let mut sim = jugglers(&alone);
    // Fault injection: no node sends that.
    sim.inject(CONTROL, NodeId(1), Frame::Peer(Envelope::App(1)))
        .unwrap();
    let result = sim.poll(NodeId(1), Duration::ZERO);
    assert!(matches!(
        result,
        Err(SimError::Node {
            source: NodeError::Transport(snapshot_core::TransportError::Protocol(_)),
            ..
        })
    ));
}

/// `poll_event` hands control frames to the application like `next_event`, returns
/// `None` once nothing is left, and, past its timeout, handles a bounded burst so that
/// a sender that never pauses cannot keep it.
#[cfg(feature = "sim")]
#[test]
fn poll_event_handles_what_has_arrived_and_no_more_than_a_burst() {
    let (a, b) = (NodeId(1), NodeId(2));
    let mut sim = jugglers(&Topology::complete([a, b]));
    // Frames arrive at node 2 in the order they were sent, whatever their channel.
    sim.set_order(Order::Arrival);
    assert_eq!(
        sim.poll(b, Duration::ZERO).unwrap(),
        None,
        "nothing has arrived"
    );

    sim.send(a, b, 1).unwrap();
    sim.send_control(CONTROL, b, "stop").unwrap();
    sim.send(a, b, 2).unwrap();
    assert_eq!(
        sim.poll(b, Duration::ZERO).unwrap(),
        Some(Notice::Control {
            from: CONTROL,
            control: "stop"
        }),
        "the ball before it is handled, the one after it waits"
    );
    assert_eq!(sim.len(a, b), 1);
    assert_eq!(sim.process(b).unwrap().caught, 1);
    assert_eq!(sim.poll(b, Duration::ZERO).unwrap(), None);
    assert_eq!(sim.len(a, b), 0);

    let burst = Node::<Juggler>::POLL_BURST;
    for balls in 0..burst as u64 + 10 {
        sim.send(a, b, balls).unwrap();
    }
    assert_eq!(sim.poll(b, Duration::ZERO).unwrap(), None);
    assert_eq!(sim.len(a, b), 10, "a burst is handled, the rest waits");
    assert_eq!(sim.poll(b, Duration::ZERO).unwrap(), None);
    assert_eq!(sim.len(a, b), 0);
}

/// A collector assembles interleaved snapshots as their parts come, hands each out
/// once, and refuses a part reported twice.
#[test]
fn a_collector_assembles_snapshots_in_flight_together() {
    use snapshot_core::{Collector, LocalSnapshot, SnapshotError, SnapshotId};
    let id = |initiator, seq| SnapshotId {
        initiator: NodeId(initiator),
        seq,
    };
    let local = |node, id| LocalSnapshot::<u64, u64> {
        id,
        node: NodeId(node),
        state: u64::from(node),
        channels: Default::default(),
        sent: Default::default(),
        received: Default::default(),
    };
    let (a, b) = (id(1, 0), id(3, 0));
    let mut collector = Collector::new([1, 2, 3].map(NodeId));
    assert_eq!(collector.add(local(1, a)), Ok(None));
    assert_eq!(collector.add(local(2, b)), Ok(None));
    assert_eq!(
        collector.add(local(1, a)),
        Err(SnapshotError::Duplicate(NodeId(1)))
    );
    assert_eq!(collector.add(local(3, a)), Ok(None));
    assert_eq!(collector.in_progress(), 2);
    let done = collector.add(local(2, a)).unwrap().expect("a is complete");
    assert_eq!(done.id(), a);
    assert_eq!(done.nodes().map(|l| l.state).sum::<u64>(), 6);
    assert_eq!(collector.in_progress(), 1);
    let partial = collector.abandon(b).expect("b is in progress");
    assert_eq!(partial.nodes().count(), 1);
    assert_eq!(collector.in_progress(), 0);
}
