//! In what order a node sends a snapshot's markers, and when it flushes them.
//!
//! A node running free (`next_event`, `next_event_async`) that records its state on a
//! marker sends the marker back to the peer it came from last, once the markers to the
//! others are flushed: that peer has recorded its state already, the others have not,
//! and transports flush the peer heard from last first. A node driven by its
//! application (`deliver`) keeps the engine's order and leaves flushing to the
//! transport, as the application may have a reply waiting to go first.

use snapshot_core::{
    AsyncTransport, Endpoint, Envelope, Event, Frame, Incoming, Node, NodeFrame, NodeId, Outbox,
    Process, SnapshotId, Transport, TransportError,
};
use std::collections::VecDeque;
use std::time::Duration;

/// A process with nothing to do: only the markers move.
struct Idle;

impl Process for Idle {
    type Message = u64;
    type State = u64;
    type Record = u64;

    fn handle(&mut self, _from: NodeId, _message: u64, _outbox: &mut Outbox<u64>) {}
    fn capture(&self) -> u64 {
        0
    }
    fn record(&self, in_transit: &mut u64, _from: NodeId, message: &u64) {
        *in_transit += message;
    }
}

type Wire = NodeFrame<Idle, ()>;

/// What the node did with its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Marker(NodeId),
    Flush,
}

/// A transport that hands out `incoming`, then fails as closed, and writes down the
/// markers sent and the flushes in their order.
struct Script {
    incoming: VecDeque<Incoming<Wire>>,
    calls: Vec<Call>,
}

impl Script {
    fn new(incoming: impl IntoIterator<Item = Incoming<Wire>>) -> Self {
        Script {
            incoming: incoming.into_iter().collect(),
            calls: Vec::new(),
        }
    }

    fn next(&mut self) -> Result<Incoming<Wire>, TransportError> {
        self.incoming.pop_front().ok_or(TransportError::Closed)
    }
}

impl Transport<Wire> for Script {
    fn local(&self) -> Endpoint {
        Endpoint::Node(ME)
    }
    fn address(&self) -> String {
        String::new()
    }
    fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        if let (Endpoint::Node(to), Frame::Peer(Envelope::Marker(_))) = (to, frame) {
            self.calls.push(Call::Marker(to));
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.calls.push(Call::Flush);
        Ok(())
    }
    fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        self.next()
    }
    fn recv_timeout(&mut self, _: Duration) -> Result<Option<Incoming<Wire>>, TransportError> {
        self.next().map(Some)
    }
}

#[async_trait::async_trait]
impl AsyncTransport<Wire> for Script {
    fn local(&self) -> Endpoint {
        Transport::local(self)
    }
    fn address(&self) -> String {
        String::new()
    }
    async fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    async fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        Transport::send(self, to, frame)
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        Transport::flush(self)
    }
    async fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        self.next()
    }
    async fn recv_timeout(
        &mut self,
        _: Duration,
    ) -> Result<Option<Incoming<Wire>>, TransportError> {
        self.next().map(Some)
    }
}

/// The node under test, on a ring of three: linked both ways to `BEFORE` and `AFTER`.
const ME: NodeId = NodeId(2);
const BEFORE: NodeId = NodeId(1);
const AFTER: NodeId = NodeId(3);

fn node() -> Node<Idle> {
    let mut node = Node::new(ME, Idle);
    for peer in [BEFORE, AFTER] {
        node.add_peer(peer).expect("a new peer");
    }
    node
}

/// The first marker of a snapshot started by `BEFORE`, arriving from it; then
/// `AFTER` goes, which hands the free-running node back to the test.
fn a_marker_from_before() -> [Incoming<Wire>; 2] {
    let id = SnapshotId {
        initiator: BEFORE,
        seq: 0,
    };
    [
        Incoming::Frame(Endpoint::Node(BEFORE), Frame::Peer(Envelope::Marker(id))),
        Incoming::Departed(Endpoint::Node(AFTER)),
    ]
}

/// What a node running free must do on that marker.
fn spreading() -> Vec<Call> {
    vec![Call::Marker(AFTER), Call::Flush, Call::Marker(BEFORE)]
}

#[test]
fn running_free_a_node_flushes_the_markers_on_before_the_one_back() {
    let mut node = node();
    let mut transport = Script::new(a_marker_from_before());
    let event = node.next_event(&mut transport).expect("an event");
    assert!(matches!(event, Event::Departed(Endpoint::Node(AFTER))));
    assert_eq!(transport.calls, spreading());
}

#[test]
fn running_free_async_a_node_flushes_the_markers_on_before_the_one_back() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut node = node();
    let mut transport = Script::new(a_marker_from_before());
    let event = runtime
        .block_on(node.next_event_async(&mut transport))
        .expect("an event");
    assert!(matches!(event, Event::Departed(Endpoint::Node(AFTER))));
    assert_eq!(transport.calls, spreading());
}

#[test]
fn delivered_by_the_application_markers_keep_the_engines_order_unflushed() {
    let mut node = node();
    let mut transport = Script::new([]);
    let id = SnapshotId {
        initiator: BEFORE,
        seq: 0,
    };
    let outcome = node
        .deliver(&mut transport, BEFORE, Envelope::Marker(id))
        .expect("delivered");
    assert_eq!(outcome.markers, [BEFORE, AFTER]);
    assert_eq!(transport.calls, [Call::Marker(BEFORE), Call::Marker(AFTER)]);
}

#[test]
fn a_node_that_starts_a_snapshot_has_no_marker_to_hold_back() {
    let mut node = node();
    let mut transport = Script::new([]);
    let (_, outcome) = node.initiate(&mut transport).expect("started");
    assert_eq!(outcome.markers, [BEFORE, AFTER]);
    assert_eq!(transport.calls, [Call::Marker(BEFORE), Call::Marker(AFTER)]);
}
