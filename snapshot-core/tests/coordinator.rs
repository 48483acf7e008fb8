//! The coordinator and the node driver together, over transport-mem, all in one
//! thread: each node handles what has arrived when its turn comes.

use snapshot_core::topology::Topology;
use snapshot_core::{
    Collector, Coordinator, CoordinatorError, CoordinatorEvent, Endpoint, LocalSnapshot, Node,
    NodeFrame, NodeId, Outbox, Process, SnapshotEngine, SnapshotError, SnapshotId, Transport,
};
use std::time::Duration;
use transport_mem::{MemNetwork, MemTransport};

/// The coordinator's endpoint.
const COORDINATOR: Endpoint = Endpoint::Role(0);

/// Counts what it is given; what is in transit is summed.
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

type Wire = NodeFrame<Counter>;

/// Nodes on `topology`, each holding 10, and a coordinator of all of them.
struct Cluster {
    nodes: Vec<(Node<Counter>, MemTransport<Wire>)>,
    control: MemTransport<Wire>,
    coordinator: Coordinator<u64, u64>,
}

impl Cluster {
    fn new(topology: &Topology) -> Self {
        let network = MemNetwork::new();
        let control = network.endpoint(COORDINATOR).unwrap();
        let mut all: Vec<MemTransport<Wire>> = topology
            .nodes()
            .map(|id| network.endpoint(Endpoint::Node(id)).unwrap())
            .collect();
        all.push(control);
        for i in 0..all.len() {
            for j in 0..all.len() {
                if i != j {
                    let (peer, address) = (all[j].local(), all[j].address());
                    all[i].connect(peer, &address).unwrap();
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
            coordinator: Coordinator::new(topology.nodes()),
        }
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
}

#[test]
fn the_coordinator_starts_snapshots_and_assembles_them() {
    let mut cluster = Cluster::new(&Topology::ring([1, 2, 3].map(NodeId)));
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
    let mut cluster = Cluster::new(&line);
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
    let mut cluster = Cluster::new(&Topology::complete([1, 2].map(NodeId)));
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
    let mut cluster = Cluster::new(&Topology::complete([1, 2].map(NodeId)));
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
