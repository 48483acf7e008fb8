//! A snapshot's life through the coordinator: it completes with its figures, or it
//! misses its deadline and is aborted everywhere, and the next one goes as usual. On
//! the simulated network (with a channel held) and over transport-mem (with a node
//! that stopped). And the coordinator and the node driver together, over
//! transport-mem in one thread, where each node handles what has arrived in turn.

use snapshot_core::sim::{Notice, Sim};
use snapshot_core::topology::Topology;
use snapshot_core::{
    Aborted, AbortedSnapshot, ChannelRecord, Collector, Coordination, Coordinator,
    CoordinatorError, CoordinatorEvent, DEFAULT_TIMEOUT, Endpoint, EngineError, Envelope, Frame,
    Incoming, LocalSnapshot, Node, NodeFrame, NodeId, Outbox, Process, SnapshotEngine,
    SnapshotError, SnapshotId, Transport, Unfinished,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use transport_mem::{MemNetwork, MemTransport};

const COORDINATOR: Endpoint = Endpoint::Role(0);
const TIMEOUT: Duration = Duration::from_secs(2);

/// Counts what it is given; what is in transit is summed.
#[derive(Debug, Clone, PartialEq)]
struct Counter(u64);

impl Process for Counter {
    type Message = u64;
    type State = u64;
    type Record = u64;
    fn handle(&mut self, _: NodeId, n: u64, _: &mut Outbox<u64>) {
        self.0 += n;
    }
    fn capture(&self) -> u64 {
        self.0
    }
    fn record(&self, in_transit: &mut u64, _: NodeId, n: &u64) {
        *in_transit += n;
    }
}

fn ids() -> [NodeId; 3] {
    [1, 2, 3].map(NodeId)
}

/// Three nodes, a channel each way between every two, and a coordinator.
fn sim() -> Sim<Counter> {
    let mut sim = Sim::new(11, &Topology::complete(ids()), |_| Counter(10)).unwrap();
    sim.add_coordinator(COORDINATOR).unwrap();
    sim.set_timeout(TIMEOUT).unwrap();
    sim
}

fn conserved(sim: &Sim<Counter>, total: u64) {
    let snapshot = sim.completed().last().expect("a snapshot");
    snapshot.check_cut().unwrap();
    let held: u64 = snapshot.nodes().map(|l| l.state).sum();
    let in_transit: u64 = snapshot.channels().iter().map(|(_, _, c)| c.record).sum();
    assert_eq!(held + in_transit, total);
}

#[test]
fn a_snapshot_held_up_by_a_channel_is_aborted_everywhere_and_the_next_one_completes() {
    let mut sim = sim();
    sim.process_mut(NodeId(1)).unwrap().0 -= 3;
    sim.send(NodeId(1), NodeId(2), 3).unwrap();
    // The channel 3 -> 2 is held: node 2 never gets 3's marker.
    sim.hold(NodeId(3), NodeId(2)).unwrap();
    sim.request_snapshot(NodeId(1)).unwrap();
    sim.run_until_quiet(1_000).unwrap();
    assert!(
        sim.completed().is_empty(),
        "node 2 waits for the marker from 3"
    );

    // Not yet late.
    assert_eq!(sim.advance(TIMEOUT / 2).unwrap(), None);
    // Late: the abort goes to every node, which answer where they stood.
    assert_eq!(
        sim.advance(TIMEOUT / 2).unwrap(),
        None,
        "the answers are on their way"
    );
    let deliveries = sim.run_until_quiet(1_000).unwrap();
    let aborted: Vec<AbortedSnapshot> = deliveries
        .into_iter()
        .filter_map(|d| match d.notice {
            Some(Notice::Aborted(aborted)) => Some(aborted),
            _ => None,
        })
        .collect();
    let id = SnapshotId {
        initiator: NodeId(1),
        seq: 0,
    };
    assert_eq!(
        aborted,
        [AbortedSnapshot {
            initiator: NodeId(1),
            id: Some(id),
            unfinished: BTreeMap::from([(NodeId(2), Unfinished::Waiting(vec![NodeId(3)]))]),
            timeout: TIMEOUT,
        }]
    );
    assert_eq!(
        aborted[0].to_string(),
        "snapshot 1#0 missed its deadline of 2s: node 2 never had the marker from node 3"
    );
    // Every node dropped its recording.
    for id in ids() {
        assert_eq!(sim.node(id).unwrap().engine().in_flight().count(), 0);
    }
    // The late marker, when it comes, is ignored: not an error, not a new snapshot.
    sim.release(NodeId(3), NodeId(2)).unwrap();
    sim.run_until_quiet(1_000).unwrap();
    assert!(sim.completed().is_empty());
    assert_eq!(sim.node(NodeId(2)).unwrap().engine().in_flight().count(), 0);

    // The next snapshot works as usual.
    sim.request_snapshot(NodeId(2)).unwrap();
    sim.run_until_quiet(1_000).unwrap();
    assert_eq!(sim.completed().len(), 1);
    conserved(&sim, 30);
    assert_eq!(
        sim.advance(TIMEOUT * 3).unwrap(),
        None,
        "nothing left to abort"
    );
}

#[test]
fn the_engine_ignores_late_markers_of_aborted_snapshots_in_bounded_memory() {
    let mut engine = SnapshotEngine::<Counter>::new(NodeId(2));
    engine.add_incoming(NodeId(1)).unwrap();
    engine.add_incoming(NodeId(3)).unwrap();
    let id = |seq| SnapshotId {
        initiator: NodeId(1),
        seq,
    };
    let c = Counter(0);
    engine.on_marker(NodeId(1), id(0), &c).unwrap();
    assert_eq!(engine.abort(id(0)), Aborted::Waiting(vec![NodeId(3)]));
    assert_eq!(engine.on_marker(NodeId(3), id(0), &c), Ok(vec![]));
    // Aborted before any marker came: its markers never start it.
    assert_eq!(engine.abort(id(1)), Aborted::NotReached);
    assert_eq!(engine.on_marker(NodeId(1), id(1), &c), Ok(vec![]));
    assert_eq!(engine.in_flight().count(), 0);
    // Only the last ABORTED_REMEMBERED are remembered; an older one's marker is a
    // duplicate (it never records again).
    for seq in 2..2 + snapshot_core::ABORTED_REMEMBERED as u64 {
        engine.abort(id(seq));
    }
    assert!(matches!(
        engine.on_marker(NodeId(1), id(0), &c),
        Err(EngineError::DuplicateMarker { .. })
    ));
    assert_eq!(engine.on_marker(NodeId(1), id(5), &c), Ok(vec![]));
}

/// Nodes over transport-mem, and a coordinator, driven from this one thread.
struct Cluster {
    nodes: Vec<(Node<Counter>, MemTransport<NodeFrame<Counter>>)>,
    control: MemTransport<NodeFrame<Counter>>,
    coordinator: Coordinator<u64, u64>,
}

impl Cluster {
    /// Nodes on `topology`, each holding 10, all connected both ways, and a
    /// coordinator of them with `timeout`.
    fn new(topology: &Topology, timeout: Duration) -> Self {
        let network = MemNetwork::new();
        let mut all: Vec<_> = topology
            .nodes()
            .map(|id| network.endpoint(Endpoint::Node(id)).unwrap())
            .collect();
        all.push(network.endpoint(COORDINATOR).unwrap());
        let addresses: Vec<_> = all.iter().map(|t| (t.local(), t.address())).collect();
        for t in &mut all {
            for (peer, address) in &addresses {
                if *peer != t.local() {
                    t.connect(*peer, address).unwrap();
                }
            }
        }
        let control = all.pop().unwrap();
        let nodes = topology
            .nodes()
            .zip(all)
            .map(|(id, t)| {
                let mut node = Node::new(id, Counter(10));
                topology.join(&mut node).unwrap();
                node.report_to(COORDINATOR);
                (node, t)
            })
            .collect();
        Cluster {
            nodes,
            control,
            coordinator: Coordinator::new(topology.nodes())
                .with_timeout(timeout)
                .with_record_size(|_| 8),
        }
    }

    /// Nodes on a complete graph of [`ids`].
    fn complete(timeout: Duration) -> Self {
        Self::new(&Topology::complete(ids()), timeout)
    }

    /// Lets every node handle what has arrived, in turn, until none has anything.
    fn settle(&mut self) {
        loop {
            let mut quiet = true;
            for (node, t) in &mut self.nodes {
                // Every message and marker a node handles changes its engine.
                let before = node.engine().clone();
                if let Some(event) = node.poll_event(t, Duration::ZERO).unwrap() {
                    panic!("nothing needs the application here: {event:?}");
                }
                quiet &= *node.engine() == before;
            }
            if quiet {
                return;
            }
        }
    }

    /// What the coordinator has, without waiting.
    fn events(&mut self) -> Vec<CoordinatorEvent<u64, u64>> {
        std::iter::from_fn(|| {
            self.coordinator
                .next_event(&mut self.control, Duration::ZERO)
                .unwrap()
        })
        .collect()
    }

    /// Every node but `stopped` handles what has come, until the coordinator has
    /// something to say.
    fn until_event(&mut self, stopped: Option<NodeId>) -> CoordinatorEvent<u64, u64> {
        loop {
            for (node, t) in &mut self.nodes {
                if Some(node.id()) != stopped {
                    node.poll_event(t, Duration::ZERO).unwrap();
                }
            }
            let event = self
                .coordinator
                .next_event(&mut self.control, Duration::from_millis(1))
                .unwrap();
            if let Some(event) = event {
                return event;
            }
        }
    }
}

#[test]
fn over_a_real_transport_a_stopped_node_makes_the_snapshot_abort_and_is_named() {
    let mut cluster = Cluster::complete(Duration::from_millis(500));
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(1))
        .unwrap();
    // Node 3 has stopped: it takes nothing in.
    let stopped = Some(NodeId(3));
    assert!(matches!(
        cluster.until_event(stopped),
        CoordinatorEvent::Started {
            node: NodeId(1),
            ..
        }
    ));
    let CoordinatorEvent::Aborted(aborted) = cluster.until_event(stopped) else {
        panic!("the snapshot is aborted");
    };
    assert_eq!(
        aborted.unfinished,
        BTreeMap::from([
            (NodeId(1), Unfinished::Waiting(vec![NodeId(3)])),
            (NodeId(2), Unfinished::Waiting(vec![NodeId(3)])),
            (NodeId(3), Unfinished::Silent),
        ])
    );
    assert_eq!(cluster.coordinator.in_flight(), 0);

    // Node 3 comes back: it takes the markers and the abort, and the next snapshot,
    // from it, completes, with its figures.
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(3))
        .unwrap();
    let taken = loop {
        match cluster.until_event(None) {
            CoordinatorEvent::Completed(taken) => break taken,
            CoordinatorEvent::Started { node, .. } => assert_eq!(node, NodeId(3)),
            other => panic!("unexpected {other:?}"),
        }
    };
    taken.snapshot.check_cut().unwrap();
    let held: u64 = taken.snapshot.nodes().map(|l| l.state).sum();
    assert_eq!(held, 30);
    let stats = taken.stats;
    assert_eq!(stats.id.initiator, NodeId(3));
    assert!(stats.start_delay <= stats.duration);
    assert_eq!(stats.messages_in_transit, 0);
    assert_eq!(
        stats.bytes_in_transit,
        Some(6 * 8),
        "six channel records of 8"
    );
    assert!(ids().contains(&stats.last_node));
}

#[test]
fn statistics_count_what_was_caught_in_transit_and_travel_with_the_snapshot() {
    let mut cluster = Cluster::complete(Duration::from_secs(30));
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(2))
        .unwrap();
    // Two transfers from 1 to 2, behind the request in node 2's inbox: node 2 records
    // first, and catches both in transit on the channel from 1.
    for n in [4, 5] {
        let (node, t) = &mut cluster.nodes[0];
        node.process_mut().0 -= n;
        node.send(t, NodeId(2), n).unwrap();
    }
    let taken = loop {
        match cluster.until_event(None) {
            CoordinatorEvent::Completed(taken) => break taken,
            CoordinatorEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    taken.snapshot.check_cut().unwrap();
    let in_transit: u64 = taken
        .snapshot
        .channels()
        .iter()
        .map(|(_, _, c)| c.record)
        .sum();
    let held: u64 = taken.snapshot.nodes().map(|l| l.state).sum();
    assert_eq!((held, in_transit), (21, 9));
    assert_eq!(taken.stats.messages_in_transit, 2);
    assert_eq!(taken.stats.bytes_in_transit, Some(6 * 8));
    // Serializable together, and the same once read back.
    let bytes = postcard::to_allocvec(&taken).unwrap();
    let back: snapshot_core::TakenSnapshot<u64, u64> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, taken);
}

#[test]
fn the_coordinator_starts_snapshots_and_assembles_them() {
    let mut cluster = Cluster::new(&Topology::ring([1, 2, 3].map(NodeId)), DEFAULT_TIMEOUT);
    // Node 1 pays 4 to node 2, which has not taken it when the snapshots start.
    let (node, t) = &mut cluster.nodes[0];
    node.process_mut().0 -= 4;
    node.send(t, NodeId(2), 4).unwrap();
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(1))
        .unwrap();
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(3))
        .unwrap();
    assert_eq!(cluster.coordinator.in_flight(), 2);
    cluster.settle();
    let events = cluster.events();
    let started: Vec<SnapshotId> = events
        .iter()
        .filter_map(|e| match e {
            CoordinatorEvent::Started { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2);
    let completed: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            CoordinatorEvent::Completed(taken) => Some(taken.snapshot),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 2, "both snapshots complete");
    for global in &completed {
        global.check_cut().unwrap();
        let held: u64 = global.nodes().map(|local| local.state).sum();
        let in_transit: u64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
        assert_eq!(held + in_transit, 30, "snapshot {}", global.id());
    }
    assert_eq!(cluster.coordinator.in_flight(), 0);
    // The engine's counts are there to read.
    let (node, _) = &cluster.nodes[0];
    assert_eq!(node.engine().sent_on(NodeId(2)), Some(1));
    assert_eq!(node.engine().received_on(NodeId(3)), Some(0));
    assert_eq!(node.engine().sent_on(NodeId(3)), None, "a one-way ring");
}

#[test]
fn a_snapshot_that_cannot_complete_says_who_is_missing() {
    // 1 -> 2 -> 3, and nothing back: a marker never reaches 1 from 3.
    let mut line = Topology::default();
    line.link(NodeId(1), NodeId(2));
    line.link(NodeId(2), NodeId(3));
    assert!(line.check().is_err());
    let mut cluster = Cluster::new(&line, DEFAULT_TIMEOUT);
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(2))
        .unwrap();
    cluster.settle();
    let events = cluster.events();
    assert!(matches!(events[..], [CoordinatorEvent::Started { .. }]));
    let id = SnapshotId {
        initiator: NodeId(2),
        seq: 0,
    };
    // 1 has no incoming channel: it never hears of the snapshot; 2 waits for it.
    assert_eq!(
        cluster.coordinator.missing(),
        [(id, vec![NodeId(1), NodeId(2)])]
    );
}

#[test]
fn a_coordinator_refuses_nodes_it_does_not_coordinate() {
    let mut cluster = Cluster::new(&Topology::complete([1, 2].map(NodeId)), DEFAULT_TIMEOUT);
    assert!(matches!(
        cluster
            .coordinator
            .initiate(&mut cluster.control, NodeId(9)),
        Err(CoordinatorError::UnknownNode(NodeId(9)))
    ));
    // A collector expects exactly its nodes: a third one is refused, not counted.
    let mut collector = Collector::<u64, u64>::new([1, 2].map(NodeId));
    let local = |node| LocalSnapshot {
        id: SnapshotId {
            initiator: NodeId(1),
            seq: 0,
        },
        node: NodeId(node),
        state: 0,
        channels: Default::default(),
        sent: Default::default(),
        received: Default::default(),
    };
    assert_eq!(collector.add(local(1)), Ok(None));
    assert_eq!(
        collector.add(local(3)),
        Err(SnapshotError::UnexpectedNode(NodeId(3)))
    );
    assert!(collector.add(local(2)).unwrap().is_some());
}

#[test]
fn a_node_restarted_at_an_epoch_numbers_its_snapshots_from_there() {
    let mut cluster = Cluster::new(&Topology::complete([1, 2].map(NodeId)), DEFAULT_TIMEOUT);
    let (node, mut t) = cluster.nodes.remove(0);
    let channels: Vec<NodeId> = node.engine().incoming().collect();
    let engine = SnapshotEngine::with_epoch(NodeId(1), 7);
    let mut restarted = Node::with_engine(engine, Counter(10));
    for peer in channels {
        restarted.add_peer(peer).unwrap();
    }
    let (id, _) = restarted.initiate(&mut t).unwrap();
    assert_eq!(
        id,
        SnapshotId {
            initiator: NodeId(1),
            seq: 7
        }
    );
}

#[test]
fn a_step_says_which_channels_its_markers_went_out_on() {
    let mut cluster = Cluster::complete(DEFAULT_TIMEOUT);
    let (_, t3) = cluster.nodes.pop().unwrap();
    let (mut node2, mut t2) = cluster.nodes.pop().unwrap();
    let (mut node1, mut t1) = cluster.nodes.pop().unwrap();
    let (id, outcome) = node1.initiate(&mut t1).unwrap();
    assert_eq!(outcome.started, Some(id));
    assert_eq!(outcome.markers, [NodeId(2), NodeId(3)]);

    // Node 3 has gone: node 2, recording on node 1's marker, sends it none. (Node 1's
    // real marker, received meanwhile, is passed over: it is delivered by hand.)
    drop(t3);
    while t2.recv().unwrap() != Incoming::Departed(Endpoint::Node(NodeId(3))) {}
    let outcome = node2
        .deliver(&mut t2, NodeId(1), Envelope::Marker(id))
        .unwrap();
    assert_eq!(outcome.started, Some(id));
    assert_eq!(outcome.markers, [NodeId(1)]);

    // A marker that records nothing sends nothing.
    let outcome = node1
        .deliver(&mut t1, NodeId(2), Envelope::Marker(id))
        .unwrap();
    assert_eq!((outcome.started, outcome.markers.len()), (None, 0));
}

/// Node `node`'s part of snapshot `1.0`, claiming `messages` caught on its channel from
/// the other of nodes 1 and 2.
fn part(node: u32, messages: u64) -> LocalSnapshot<u64, u64> {
    let other = NodeId(3 - node);
    LocalSnapshot {
        id: SnapshotId {
            initiator: NodeId(1),
            seq: 0,
        },
        node: NodeId(node),
        state: 0,
        channels: BTreeMap::from([(
            other,
            ChannelRecord {
                record: 0,
                messages,
            },
        )]),
        sent: Default::default(),
        received: Default::default(),
    }
}

fn report(from: u32, local: LocalSnapshot<u64, u64>) -> Incoming<NodeFrame<Counter>> {
    Incoming::Frame(
        Endpoint::Node(NodeId(from)),
        Frame::Snapshot(Coordination::Report(Box::new(local))),
    )
}

#[test]
fn a_node_cannot_file_another_nodes_part_or_start() {
    let mut coordinator = Coordinator::<u64, u64>::new([1, 2].map(NodeId));
    let now = Instant::now();
    let refused = coordinator.handle_at(report(2, part(1, 0)), now);
    assert!(
        matches!(
            refused,
            Err(CoordinatorError::NotItsOwn {
                from: Endpoint::Node(NodeId(2)),
                node: NodeId(1),
                ..
            })
        ),
        "{refused:?}"
    );
    let start = Incoming::Frame(
        Endpoint::Node(NodeId(2)),
        Frame::Snapshot(Coordination::Started(part(1, 0).id)),
    );
    assert!(matches!(
        coordinator.handle_at::<u64, ()>(start, now),
        Err(CoordinatorError::NotItsOwn { .. })
    ));
    // Neither was taken in: each node's own part still completes the snapshot.
    assert!(
        coordinator
            .handle_at(report(1, part(1, 0)), now)
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        coordinator.handle_at(report(2, part(2, 0)), now).unwrap(),
        Some(CoordinatorEvent::Completed(_))
    ));
}

#[test]
fn counts_that_a_node_reports_are_added_up_without_overflowing() {
    let mut coordinator =
        Coordinator::<u64, u64>::new([1, 2].map(NodeId)).with_record_size(|_| u64::MAX);
    let now = Instant::now();
    assert!(
        coordinator
            .handle_at(report(1, part(1, u64::MAX)), now)
            .unwrap()
            .is_none()
    );
    let Some(CoordinatorEvent::Completed(taken)) =
        coordinator.handle_at(report(2, part(2, 1)), now).unwrap()
    else {
        panic!("the snapshot completes");
    };
    assert_eq!(taken.stats.messages_in_transit, u64::MAX);
    assert_eq!(taken.stats.bytes_in_transit, Some(u64::MAX));
}

#[test]
fn a_timeout_past_the_end_of_time_never_falls() {
    let mut cluster = Cluster::new(&Topology::complete([1, 2].map(NodeId)), Duration::MAX);
    cluster
        .coordinator
        .initiate(&mut cluster.control, NodeId(1))
        .unwrap();
    assert_eq!(cluster.coordinator.next_deadline(), None);
    // Taken in, a part of a snapshot not asked for would start a clock too.
    cluster
        .coordinator
        .handle_at(report(2, part(2, 0)), Instant::now())
        .unwrap();
    assert_eq!(cluster.coordinator.next_deadline(), None);
    let later = Instant::now() + Duration::from_secs(3600);
    let expired = cluster
        .coordinator
        .expire::<u64, (), _>(&mut cluster.control, later)
        .unwrap();
    assert!(expired.is_none());
    assert_eq!(cluster.coordinator.in_flight(), 2);
}
