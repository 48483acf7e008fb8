//! The async `Node` driver: nodes run as tasks on one tokio runtime, over an async
//! in-memory transport written here, take snapshots while tokens move, and every
//! snapshot is a consistent cut that accounts for every token.

#![cfg(feature = "async")]

use async_trait::async_trait;
use snapshot_core::{
    AsyncTransport, Collector, Endpoint, Envelope, Event, Frame, Incoming, LocalSnapshot, Node,
    NodeError, NodeId, Outbox, Process, TransportError,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

const NODES: u32 = 4;
const TOKENS_PER_NODE: u64 = 5;
const TOKENS: u64 = NODES as u64 * TOKENS_PER_NODE;
/// Hops a token makes before it settles: enough to keep them moving while the
/// snapshots are taken.
const HOPS: u64 = 3_000;
/// A safety net against a stuck run, not a means of synchronisation.
const STALL: Duration = Duration::from_secs(30);

/// Tokens, each carrying the hops it has left; a node forwards a token to the next
/// peer in turn, or keeps it once its hops are used up.
struct Tokens {
    peers: Vec<NodeId>,
    turn: usize,
    held: u64,
}

impl Tokens {
    fn next_peer(&mut self) -> NodeId {
        self.turn = (self.turn + 1) % self.peers.len();
        self.peers[self.turn]
    }
}

impl Process for Tokens {
    type Message = u64;
    type State = u64;
    type Record = u64;

    fn handle(&mut self, _from: NodeId, hops_left: u64, outbox: &mut Outbox<u64>) {
        if hops_left == 0 {
            self.held += 1;
        } else {
            let to = self.next_peer();
            outbox.send(to, hops_left - 1);
        }
    }
    fn capture(&self) -> u64 {
        self.held
    }
    fn record(&self, in_transit: &mut u64, _from: NodeId, _token: &u64) {
        *in_transit += 1;
    }
}

/// What the test's driver and the nodes tell each other.
#[derive(Debug)]
enum Ctl {
    /// Driver to node: start a snapshot.
    Initiate,
    /// Driver to node: how many tokens do you hold?
    Count,
    /// Node to driver: this many.
    Held(u64),
    /// Driver to node: stop.
    Stop,
    /// Node to driver: this node's part of a snapshot.
    Report(LocalSnapshot<u64, u64>),
}

type Wire = snapshot_core::NodeFrame<Tokens, Ctl>;

/// One endpoint of a full mesh of unbounded tokio channels: FIFO per ordered pair,
/// nothing buffered, and nobody departs while the test runs.
struct Mesh {
    me: Endpoint,
    inbox: UnboundedReceiver<(Endpoint, Wire)>,
    everyone: BTreeMap<Endpoint, UnboundedSender<(Endpoint, Wire)>>,
    connected: BTreeMap<Endpoint, UnboundedSender<(Endpoint, Wire)>>,
}

fn mesh(endpoints: &[Endpoint]) -> Vec<Mesh> {
    let (senders, inboxes): (Vec<_>, Vec<_>) =
        endpoints.iter().map(|_| mpsc::unbounded_channel()).unzip();
    let everyone: BTreeMap<_, _> = endpoints.iter().copied().zip(senders).collect();
    endpoints
        .iter()
        .zip(inboxes)
        .map(|(&me, inbox)| Mesh {
            me,
            inbox,
            everyone: everyone.clone(),
            connected: BTreeMap::new(),
        })
        .collect()
}

#[async_trait]
impl AsyncTransport<Wire> for Mesh {
    fn local(&self) -> Endpoint {
        self.me
    }
    fn address(&self) -> String {
        self.me.to_string()
    }
    async fn connect(&mut self, peer: Endpoint, _address: &str) -> Result<(), TransportError> {
        let route = self
            .everyone
            .get(&peer)
            .ok_or(TransportError::UnknownEndpoint(peer))?;
        self.connected.insert(peer, route.clone());
        Ok(())
    }
    async fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        let route = self
            .connected
            .get(&to)
            .ok_or(TransportError::UnknownEndpoint(to))?;
        route
            .send((self.me, frame))
            .map_err(|_| TransportError::Disconnected(to))
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        let (from, frame) = self.inbox.recv().await.ok_or(TransportError::Closed)?;
        Ok(Incoming::Frame(from, frame))
    }
    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Wire>>, TransportError> {
        match tokio::time::timeout(timeout, self.recv()).await {
            Ok(received) => received.map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// A node's task: launches its tokens, then runs free until told to stop.
async fn run_node(mut node: Node<Tokens>, mut transport: Mesh) -> Result<Node<Tokens>, NodeError> {
    for k in 0..TOKENS_PER_NODE {
        let to = node.process_mut().next_peer();
        node.process_mut().held -= 1;
        node.send_async(&mut transport, to, HOPS + k).await?;
    }
    let driver = Endpoint::Role(0);
    loop {
        let reply = match node.next_event_async(&mut transport).await? {
            Event::Control {
                control: Ctl::Initiate,
                ..
            } => match node.initiate_async(&mut transport).await?.1.completed {
                Some(local) => Ctl::Report(local),
                None => continue,
            },
            Event::Control {
                control: Ctl::Count,
                ..
            } => Ctl::Held(node.process().held),
            Event::Control {
                control: Ctl::Stop, ..
            } => return Ok(node),
            Event::Completed(local) => Ctl::Report(local),
            other => panic!("node {}: unexpected {other:?}", node.id()),
        };
        transport.send(driver, Frame::Control(reply)).await?;
    }
}

/// The driver's next control frame.
async fn next_control(driver: &mut Mesh) -> Ctl {
    match tokio::time::timeout(STALL, driver.recv()).await {
        Ok(Ok(Incoming::Frame(_, Frame::Control(ctl)))) => ctl,
        other => panic!("the driver expected a control frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_as_tasks_take_consistent_snapshots_while_tokens_move() {
    let ids: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
    let mut endpoints: Vec<Endpoint> = ids.iter().map(|&id| Endpoint::Node(id)).collect();
    endpoints.push(Endpoint::Role(0));
    let mut transports = mesh(&endpoints);
    // Each side connects to the other before traffic.
    for transport in &mut transports {
        for &peer in &endpoints {
            if peer != transport.me {
                transport.connect(peer, &peer.to_string()).await.unwrap();
            }
        }
    }
    let mut driver = transports.pop().unwrap();

    let mut tasks = Vec::new();
    for (&id, transport) in ids.iter().zip(transports) {
        let peers: Vec<NodeId> = ids.iter().copied().filter(|&p| p != id).collect();
        let mut node = Node::new(
            id,
            Tokens {
                peers: peers.clone(),
                turn: id.0 as usize,
                held: TOKENS_PER_NODE,
            },
        );
        for peer in peers {
            node.add_peer(peer).unwrap();
        }
        tasks.push(tokio::spawn(run_node(node, transport)));
    }

    // Snapshots one after the other, each started by another node, while tokens move.
    let mut collector = Collector::new(ids.iter().copied());
    let mut caught_moving = 0;
    for round in 0..3 {
        let initiator = node(round % NODES + 1);
        driver
            .send(initiator, Frame::Control(Ctl::Initiate))
            .await
            .unwrap();
        let global = loop {
            match next_control(&mut driver).await {
                Ctl::Report(local) => {
                    if let Some(global) = collector.add(local).unwrap() {
                        break global;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        global.check_cut().unwrap();
        let held: u64 = global.nodes().map(|local| local.state).sum();
        let in_transit: u64 = global
            .channels()
            .iter()
            .map(|(_, _, channel)| channel.record)
            .sum();
        assert_eq!(held + in_transit, TOKENS, "snapshot {}", global.id());
        caught_moving += in_transit;
    }
    assert!(
        caught_moving > 0,
        "the snapshots were taken while tokens moved"
    );

    // Wait until every token has settled: held tokens never move again, so once the
    // counts add up, nothing is in transit.
    loop {
        for &id in &ids {
            driver
                .send(Endpoint::Node(id), Frame::Control(Ctl::Count))
                .await
                .unwrap();
        }
        let mut held = 0;
        for _ in &ids {
            match next_control(&mut driver).await {
                Ctl::Held(n) => held += n,
                other => panic!("unexpected {other:?}"),
            }
        }
        if held == TOKENS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for &id in &ids {
        driver
            .send(Endpoint::Node(id), Frame::Control(Ctl::Stop))
            .await
            .unwrap();
    }
    let mut finally_held = 0;
    for task in tasks {
        let node = task.await.unwrap().unwrap();
        assert_eq!(node.engine().in_flight().count(), 0);
        finally_held += node.process().held;
    }
    assert_eq!(finally_held, TOKENS);
}

/// A transport that keeps what it is given, but refuses the first frame for node 9.
#[derive(Default)]
struct Recorder {
    sent: Vec<(Endpoint, Wire)>,
    refused: bool,
}

#[async_trait]
impl AsyncTransport<Wire> for Recorder {
    fn local(&self) -> Endpoint {
        node(1)
    }
    fn address(&self) -> String {
        String::new()
    }
    async fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    async fn send(&mut self, to: Endpoint, frame: Wire) -> Result<(), TransportError> {
        if to == node(9) && !self.refused {
            self.refused = true;
            return Err(TransportError::Disconnected(to));
        }
        self.sent.push((to, frame));
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    async fn recv(&mut self) -> Result<Incoming<Wire>, TransportError> {
        Err(TransportError::Closed)
    }
    async fn recv_timeout(
        &mut self,
        _: Duration,
    ) -> Result<Option<Incoming<Wire>>, TransportError> {
        Ok(None)
    }
}

/// Delivered by hand: a message's replies go out counted, a message the transport
/// refuses is not counted as sent, and a marker is answered with markers on every
/// outgoing channel and completes this node's part.
#[tokio::test]
async fn deliver_async_counts_only_what_the_transport_took_and_answers_markers() {
    let mut node1 = Node::new(
        NodeId(1),
        Tokens {
            peers: vec![NodeId(2)],
            turn: 0,
            held: 3,
        },
    );
    node1.add_peer(NodeId(2)).unwrap();
    node1.add_outgoing(NodeId(9)).unwrap();
    let mut transport = Recorder::default();

    // A token with a hop left is forwarded to node 2; one with none is kept.
    for hops in [1, 0] {
        let outcome = node1
            .deliver_async(&mut transport, NodeId(2), Envelope::App(hops))
            .await
            .unwrap();
        assert_eq!(outcome, Default::default());
    }
    assert!(matches!(
        transport.sent.as_slice(),
        [(to, Frame::Peer(Envelope::App(0)))] if *to == node(2)
    ));
    // Refused by the transport: not counted.
    assert!(matches!(
        node1.send_async(&mut transport, NodeId(9), 5).await,
        Err(NodeError::Transport(TransportError::Disconnected(_)))
    ));
    // No such channel: refused before the transport sees it.
    assert!(matches!(
        node1.send_async(&mut transport, NodeId(3), 5).await,
        Err(NodeError::Engine(_))
    ));
    assert_eq!(transport.sent.len(), 1);

    transport.sent.clear();
    let id = snapshot_core::SnapshotId {
        initiator: NodeId(2),
        seq: 0,
    };
    let outcome = node1
        .deliver_async(&mut transport, NodeId(2), Envelope::Marker(id))
        .await
        .unwrap();
    assert_eq!(outcome.started, Some(id));
    let local = outcome
        .completed
        .expect("node 2 is node 1's only incoming channel");
    assert_eq!(local.state, 4);
    assert_eq!(local.received[&NodeId(2)], 2);
    assert_eq!(local.sent[&NodeId(2)], 1);
    assert_eq!(
        local.sent[&NodeId(9)],
        0,
        "the refused message is not counted"
    );
    let mut markers: Vec<Endpoint> = transport.sent.iter().map(|(to, _)| *to).collect();
    markers.sort();
    assert_eq!(markers, [node(2), node(9)]);
    assert!(
        transport
            .sent
            .iter()
            .all(|(_, frame)| matches!(frame, Frame::Peer(Envelope::Marker(m)) if *m == id))
    );
}
