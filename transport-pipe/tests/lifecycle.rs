//! A snapshot's life over named pipes: the coordinator's statistics, an abort when
//! a node has stopped, and a restore whose first snapshot is the one restored from.
//! Every endpoint is in this one thread; each node handles what has come in turn.

use snapshot_core::topology::Topology;
use snapshot_core::{
    Coordinator, CoordinatorEvent, Endpoint, GlobalSnapshot, Node, NodeFrame, NodeId, Outbox,
    Process, Restore, Transport, Unfinished, restore,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use transport_pipe::PipeTransport;

const COORDINATOR: Endpoint = Endpoint::Role(0);

/// Counts what it is given; what is in transit is kept whole.
#[derive(Debug, Clone, PartialEq)]
struct Counter(u64);

impl Process for Counter {
    type Message = u64;
    type State = u64;
    type Record = Vec<u64>;
    fn handle(&mut self, _: NodeId, n: u64, _: &mut Outbox<u64>) {
        self.0 += n;
    }
    fn capture(&self) -> u64 {
        self.0
    }
    fn record(&self, in_transit: &mut Vec<u64>, _: NodeId, n: &u64) {
        in_transit.push(*n);
    }
}

impl Restore for Counter {
    fn restore(_: NodeId, state: &u64) -> Self {
        Counter(*state)
    }
}

type Pipe = PipeTransport<NodeFrame<Counter>>;

fn ids() -> [NodeId; 3] {
    [1, 2, 3].map(NodeId)
}

/// The coordinator's endpoint and one per node, all connected both ways.
fn endpoints(dir: &Path) -> (Pipe, Vec<Pipe>) {
    let mut all: Vec<Pipe> = ids()
        .into_iter()
        .map(Endpoint::Node)
        .chain([COORDINATOR])
        .map(|e| PipeTransport::new(dir, e).unwrap())
        .collect();
    let address = all[0].address();
    let locals: Vec<Endpoint> = all.iter().map(Transport::local).collect();
    for t in &mut all {
        for &peer in &locals {
            if peer != t.local() {
                t.connect(peer, &address).unwrap();
            }
        }
    }
    let control = all.pop().unwrap();
    (control, all)
}

/// Every node but `stopped` handles what has come, until the coordinator has
/// something to say.
fn until_event(
    nodes: &mut [(Node<Counter>, Pipe)],
    control: &mut Pipe,
    coordinator: &mut Coordinator<u64, Vec<u64>>,
    stopped: Option<NodeId>,
) -> CoordinatorEvent<u64, Vec<u64>> {
    loop {
        for (node, t) in nodes.iter_mut() {
            if Some(node.id()) != stopped {
                node.poll_event(t, Duration::ZERO).unwrap();
            }
        }
        if let Some(event) = coordinator
            .next_event(control, Duration::from_millis(1))
            .unwrap()
        {
            return event;
        }
    }
}

/// Lets `node` handle what comes until it has recorded its state for a snapshot.
fn until_recorded(node: &mut Node<Counter>, t: &mut Pipe) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.engine().in_flight().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never recorded",
            node.id()
        );
        node.poll_event(t, Duration::ZERO).unwrap();
    }
}

fn completed(
    nodes: &mut [(Node<Counter>, Pipe)],
    control: &mut Pipe,
    coordinator: &mut Coordinator<u64, Vec<u64>>,
) -> snapshot_core::TakenSnapshot<u64, Vec<u64>> {
    loop {
        match until_event(nodes, control, coordinator, None) {
            CoordinatorEvent::Completed(taken) => return taken,
            CoordinatorEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn over_pipes_a_snapshot_completes_aborts_and_restores() {
    let dir = tempfile::tempdir().unwrap();
    let (mut control, transports) = endpoints(dir.path());
    let topology = Topology::complete(ids());
    let mut nodes: Vec<(Node<Counter>, Pipe)> = ids()
        .into_iter()
        .zip(transports)
        .map(|(id, t)| {
            let mut node = Node::new(id, Counter(10));
            topology.join(&mut node).unwrap();
            node.report_to(COORDINATOR);
            (node, t)
        })
        .collect();
    let mut coordinator = Coordinator::new(ids())
        .with_timeout(Duration::from_millis(500))
        .with_record_size(|record: &Vec<u64>| 8 * record.len() as u64);

    // Statistics: node 2 records before it takes two transfers from node 1.
    coordinator.initiate(&mut control, NodeId(2)).unwrap();
    {
        let (node, t) = &mut nodes[1];
        until_recorded(node, t);
    }
    for n in [4, 5] {
        let (node, t) = &mut nodes[0];
        node.process_mut().0 -= n;
        node.send(t, NodeId(2), n).unwrap();
    }
    let taken = completed(&mut nodes, &mut control, &mut coordinator);
    taken.snapshot.check_cut().unwrap();
    assert_eq!(taken.stats.messages_in_transit, 2);
    assert_eq!(taken.stats.bytes_in_transit, Some(16));
    let held: u64 = taken.snapshot.nodes().map(|l| l.state).sum();
    assert_eq!(held, 21, "9 in transit");

    // Abort: node 3 has stopped.
    coordinator.initiate(&mut control, NodeId(1)).unwrap();
    let aborted = loop {
        match until_event(&mut nodes, &mut control, &mut coordinator, Some(NodeId(3))) {
            CoordinatorEvent::Aborted(aborted) => break aborted,
            CoordinatorEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        aborted.unfinished,
        BTreeMap::from([
            (NodeId(1), Unfinished::Waiting(vec![NodeId(3)])),
            (NodeId(2), Unfinished::Waiting(vec![NodeId(3)])),
            (NodeId(3), Unfinished::Silent),
        ])
    );
    // Node 3 comes back; the next snapshot completes.
    coordinator.initiate(&mut control, NodeId(3)).unwrap();
    let next = completed(&mut nodes, &mut control, &mut coordinator);
    next.snapshot.check_cut().unwrap();

    // Restore the first snapshot on new endpoints, and take one at once at its
    // initiator: it is the one restored from.
    drop((nodes, control));
    let saved: GlobalSnapshot<u64, Vec<u64>> =
        postcard::from_bytes(&postcard::to_allocvec(&taken.snapshot).unwrap()).unwrap();
    let restored_dir = tempfile::tempdir().unwrap();
    let (mut control, transports) = endpoints(restored_dir.path());
    let initiator = saved.id().initiator;
    let mut restored: Vec<_> = ids()
        .into_iter()
        .zip(transports)
        .map(|(id, t)| {
            let mut restored = Node::<Counter>::restore(&saved, id).unwrap();
            restored.report_to(COORDINATOR);
            (restored, t)
        })
        .collect();
    // The initiator records before anything is put back on its channels (node 1's
    // transfers to it are): so the cut is the one restored from.
    let at = restored
        .iter()
        .position(|(r, _)| r.node().id() == initiator)
        .unwrap();
    let (first, mut first_t) = restored.remove(at);
    let mut first = first.resume(&mut first_t).unwrap();
    let mut coordinator = Coordinator::new(ids());
    coordinator.initiate(&mut control, initiator).unwrap();
    first
        .poll_event(&mut first_t, Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        first.engine().in_flight().count(),
        1,
        "the initiator has recorded"
    );
    let mut nodes: Vec<(Node<Counter>, Pipe)> = restored
        .into_iter()
        .map(|(r, mut t)| (r.resume(&mut t).unwrap(), t))
        .collect();
    nodes.push((first, first_t));
    let again = completed(&mut nodes, &mut control, &mut coordinator);
    again.snapshot.check_cut().unwrap();
    restore::compare(&saved, &again.snapshot).unwrap();
}
