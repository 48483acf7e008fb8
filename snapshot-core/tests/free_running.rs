//! The `Node` driver run free (`next_event`): node-to-node traffic is handled as it
//! arrives, replies from the process go out counted, and a snapshot taken while
//! messages bounce around still accounts for every one of them.

use snapshot_core::{
    Endpoint, Event, Frame, GlobalSnapshot, Incoming, Node, NodeId, Outbox, Process, Transport,
    TransportError,
};
use std::collections::VecDeque;
use std::time::Duration;

/// Every message is a ball; a node keeps every other ball it gets and throws the rest
/// back, so the number of balls is conserved and traffic flows by itself.
struct Juggler {
    kept: u64,
    caught: u64,
}

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

type Wire = Frame<u64, &'static str>;

/// Two endpoints' queues in one thread: what `a` sends lands in `b`'s inbox.
#[derive(Default)]
struct Pair {
    inbox: [VecDeque<(Endpoint, Wire)>; 2],
}

struct Side<'a> {
    me: usize,
    pair: &'a mut Pair,
}

fn endpoint(index: usize) -> Endpoint {
    Endpoint::Node(NodeId(index as u32 + 1))
}

impl Transport<Wire> for Side<'_> {
    fn local(&self) -> Endpoint {
        endpoint(self.me)
    }
    fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        let index = match to {
            Endpoint::Node(NodeId(id)) if id == 1 || id == 2 => id as usize - 1,
            other => return Err(TransportError::UnknownEndpoint(other)),
        };
        self.pair.inbox[index].push_back((endpoint(self.me), frame));
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
        self.pair.inbox[self.me]
            .pop_front()
            .map(|(from, frame)| Incoming::Frame(from, frame))
            .ok_or(TransportError::Closed)
    }
    fn recv_timeout(&mut self, _: Duration) -> Result<Option<Incoming<Wire>>, TransportError> {
        Ok(self.pair.inbox[self.me]
            .pop_front()
            .map(|(from, frame)| Incoming::Frame(from, frame)))
    }
}

#[test]
fn a_free_running_pair_conserves_balls_through_a_snapshot() {
    let mut pair = Pair::default();
    let mut nodes = [
        Node::new(NodeId(1), Juggler { kept: 0, caught: 0 }),
        Node::new(NodeId(2), Juggler { kept: 0, caught: 0 }),
    ];
    nodes[0].add_peer(NodeId(2)).unwrap();
    nodes[1].add_peer(NodeId(1)).unwrap();
    // Ten balls of 1..=10 thrown by node 1 (it holds them until then: 55 in all).
    for balls in 1..=10 {
        let mut side = Side {
            me: 0,
            pair: &mut pair,
        };
        nodes[0].send(&mut side, NodeId(2), balls).unwrap();
    }
    let (id, done) = nodes[0]
        .initiate::<&str, _>(&mut Side {
            me: 0,
            pair: &mut pair,
        })
        .unwrap();
    assert!(done.is_none(), "node 1 still waits for node 2's marker");
    pair.inbox[1].push_back((Endpoint::Master, Frame::Control("hello")));

    let mut completed = Vec::new();
    let mut controls = Vec::new();
    // Alternate the nodes until both queues are empty.
    while pair.inbox.iter().any(|q| !q.is_empty()) {
        for (me, node) in nodes.iter_mut().enumerate() {
            if pair.inbox[me].is_empty() {
                continue;
            }
            let mut side = Side {
                me,
                pair: &mut pair,
            };
            match node.next_event(&mut side) {
                Ok(Event::Completed(local)) => completed.push(local),
                Ok(Event::Control { from, control }) => controls.push((me, from, control)),
                Ok(Event::Departed(peer)) => panic!("{peer} departed: nobody leaves the pair"),
                Err(snapshot_core::NodeError::Transport(TransportError::Closed)) => {}
                Err(other) => panic!("{other}"),
            }
        }
    }
    assert_eq!(controls, vec![(1, Endpoint::Master, "hello")]);
    assert_eq!(completed.len(), 2, "both parts of the snapshot complete");
    let global = GlobalSnapshot::from_locals(id, completed).unwrap();
    global.check_cut().unwrap();
    let kept: u64 = global.nodes().map(|l| l.state).sum();
    let in_transit: u64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
    assert_eq!(kept + in_transit, 55);
    // And the run itself ended with every ball kept somewhere.
    let now: u64 = nodes.iter().map(|n| n.process().kept).sum();
    assert_eq!(now, 55);
}

#[test]
fn node_traffic_from_a_non_node_is_refused() {
    let mut pair = Pair::default();
    let mut node = Node::new(NodeId(1), Juggler { kept: 0, caught: 0 });
    pair.inbox[0].push_back((
        Endpoint::Master,
        Frame::Peer(snapshot_core::Envelope::App(1)),
    ));
    let result = node.next_event::<&str, _>(&mut Side {
        me: 0,
        pair: &mut pair,
    });
    assert!(matches!(
        result,
        Err(snapshot_core::NodeError::Transport(
            TransportError::Protocol(_)
        ))
    ));
}

/// `poll_event` hands control frames and completed snapshots to the application like
/// `next_event`, returns `None` once nothing is left, and, past its timeout, handles a
/// bounded burst so that a sender that never pauses cannot keep it.
#[test]
fn poll_event_handles_what_has_arrived_and_no_more_than_a_burst() {
    let mut pair = Pair::default();
    let mut node = Node::new(NodeId(2), Juggler { kept: 0, caught: 0 });
    node.add_peer(NodeId(1)).unwrap();
    let mut side = |pair: &mut Pair| -> Option<Event<&'static str, u64, u64>> {
        node.poll_event(&mut Side { me: 1, pair }, Duration::ZERO)
            .unwrap()
    };
    assert_eq!(side(&mut pair), None, "nothing has arrived");

    let app = |balls| {
        (
            endpoint(0),
            Frame::Peer(snapshot_core::Envelope::App(balls)),
        )
    };
    pair.inbox[1].push_back(app(1));
    pair.inbox[1].push_back((Endpoint::Master, Frame::Control("stop")));
    pair.inbox[1].push_back(app(2));
    assert_eq!(
        side(&mut pair),
        Some(Event::Control {
            from: Endpoint::Master,
            control: "stop"
        }),
        "the ball before it is handled, the one after it waits"
    );
    assert_eq!(pair.inbox[1].len(), 1);
    assert_eq!(side(&mut pair), None);
    assert!(pair.inbox[1].is_empty());

    let burst = Node::<Juggler>::POLL_BURST;
    for balls in 0..burst as u64 + 10 {
        pair.inbox[1].push_back(app(balls));
    }
    assert_eq!(side(&mut pair), None);
    assert_eq!(
        pair.inbox[1].len(),
        10,
        "a burst is handled, the rest waits"
    );
    assert_eq!(side(&mut pair), None);
    assert!(pair.inbox[1].is_empty());
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
    let mut collector = Collector::new(3);
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
