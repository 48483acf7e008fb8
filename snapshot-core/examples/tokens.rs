//! Tokens passed around by threads, and a consistent snapshot of where they all are.
//!
//! Every node is a thread running a [`Node`] with a `Tokens` process, and every thread
//! has an inbox: the [`Transport`] is a dozen lines over `std::sync::mpsc` (one channel
//! per endpoint, so FIFO per ordered pair as the algorithm needs). Each node launches
//! its tokens at start; a token carries how many hops it has left, and a node that
//! takes one either forwards it to a peer of its choosing (a deterministic
//! pseudo-random walk) or, once the hops are used up, keeps it.
//!
//! The main thread plays two roles: the master, which tells one node to start a
//! snapshot while the tokens are moving, and the observer, which collects the local
//! snapshots, assembles them, checks the cut is consistent, and checks that every
//! token is accounted for, held by a node or caught in transit. It then waits until
//! every token has settled, stops the nodes and joins their threads.
//!
//! ```text
//! cargo run -p snapshot-core --example tokens            # complete graph
//! cargo run -p snapshot-core --example tokens -- ring    # directed ring
//! ```
//!
//! Where the tokens are caught depends on how the threads are scheduled; that every
//! one of them is accounted for does not.

use snapshot_core::{
    Endpoint, Frame, GlobalSnapshot, Incoming, LocalSnapshot, Node, NodeError, NodeId, Outbox,
    Process, Transport, TransportError,
};
use std::collections::BTreeMap;
use std::error::Error;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

const NODES: u32 = 5;
const TOKENS_PER_NODE: u64 = 4;
const TOKENS: u64 = NODES as u64 * TOKENS_PER_NODE;
/// At most how many hops a token makes before it settles: each token gets its own
/// number, so some settle early and some late.
const MAX_HOPS: u64 = 400;
/// How long the observer waits for the next report before declaring the run stuck.
/// A safety net against a crashed thread, not a means of synchronisation.
const STALL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------
// The application.
// ---------------------------------------------------------------------------------

/// A node's tokens, and how it picks where to forward the next one.
#[derive(Debug)]
struct Tokens {
    /// Outgoing peers.
    peers: Vec<NodeId>,
    /// Tokens this node holds.
    held: u64,
    /// The state of a small deterministic generator (a linear congruential one).
    dice: u64,
}

impl Tokens {
    fn new(me: NodeId, peers: Vec<NodeId>) -> Self {
        Tokens {
            peers,
            held: TOKENS_PER_NODE,
            dice: u64::from(me.0) + 1,
        }
    }

    fn next_peer(&mut self) -> NodeId {
        self.dice = self
            .dice
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pick = (self.dice >> 33) % self.peers.len() as u64;
        self.peers[pick as usize]
    }
}

impl Process for Tokens {
    /// One token, carrying the hops it has left.
    type Message = u64;
    /// Tokens held.
    type State = u64;
    /// Tokens caught in transit.
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

// ---------------------------------------------------------------------------------
// Control traffic, and a transport over std::sync::mpsc.
// ---------------------------------------------------------------------------------

/// What the main thread and the nodes tell each other.
#[derive(Debug)]
enum Ctl {
    /// Master to node: start a snapshot.
    Initiate,
    /// Master to node: stop.
    Stop,
    /// Node to observer: this node's part of a snapshot.
    Report(LocalSnapshot<u64, u64>),
    /// Node to observer: a token used up its hops here.
    Settled,
}

type F = Frame<u64, Ctl>;

/// One endpoint of a full mesh of mpsc channels.
struct MpscTransport {
    me: Endpoint,
    inbox: Receiver<(Endpoint, F)>,
    routes: BTreeMap<Endpoint, Sender<(Endpoint, F)>>,
}

/// One connected transport per endpoint, in the same order.
fn mesh(endpoints: &[Endpoint]) -> Vec<MpscTransport> {
    let (senders, inboxes): (Vec<_>, Vec<_>) = endpoints.iter().map(|_| mpsc::channel()).unzip();
    endpoints
        .iter()
        .zip(inboxes)
        .map(|(&me, inbox)| MpscTransport {
            me,
            inbox,
            routes: endpoints
                .iter()
                .copied()
                .zip(senders.iter().cloned())
                .filter(|&(to, _)| to != me)
                .collect(),
        })
        .collect()
}

impl Transport<F> for MpscTransport {
    fn local(&self) -> Endpoint {
        self.me
    }

    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let route = self
            .routes
            .get(&to)
            .ok_or(TransportError::UnknownEndpoint(to))?;
        route
            .send((self.me, frame))
            .map_err(|_| TransportError::Disconnected(to))
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(()) // nothing is buffered
    }

    fn address(&self) -> String {
        String::new() // every route is made by `mesh`
    }

    fn connect(&mut self, peer: Endpoint, _: &str) -> Result<(), TransportError> {
        match self.routes.contains_key(&peer) {
            true => Ok(()),
            false => Err(TransportError::UnknownEndpoint(peer)),
        }
    }

    fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        let (from, frame) = self.inbox.recv().map_err(|_| TransportError::Closed)?;
        Ok(Incoming::Frame(from, frame))
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<F>>, TransportError> {
        match self.inbox.recv_timeout(timeout) {
            Ok((from, frame)) => Ok(Some(Incoming::Frame(from, frame))),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Closed),
        }
    }
}

// ---------------------------------------------------------------------------------
// A node's thread.
// ---------------------------------------------------------------------------------

/// Launches the node's tokens, then handles frames as they arrive until told to stop.
/// Returns the node, for the final count.
fn run_node(
    mut node: Node<Tokens>,
    mut transport: MpscTransport,
) -> Result<Node<Tokens>, NodeError> {
    for k in 0..TOKENS_PER_NODE {
        let to = node.process_mut().next_peer();
        node.process_mut().held -= 1;
        let hops = (u64::from(node.id().0) * 37 + k * 101) % MAX_HOPS;
        node.send(&mut transport, to, hops)?;
    }
    let report = |transport: &mut MpscTransport, ctl| {
        transport.send(Endpoint::Observer, Frame::Control(ctl))
    };
    loop {
        let Incoming::Frame(from, frame) = transport.recv()? else {
            // Every endpoint outlives the run: nobody departs.
            continue;
        };
        match (from, frame) {
            (Endpoint::Node(from), Frame::Peer(envelope)) => {
                let held = node.process().held;
                let outcome = node.deliver(&mut transport, from, envelope)?;
                if node.process().held > held {
                    report(&mut transport, Ctl::Settled)?;
                }
                if let Some(local) = outcome.completed {
                    report(&mut transport, Ctl::Report(local))?;
                }
            }
            (Endpoint::Master, Frame::Control(Ctl::Initiate)) => {
                let (id, completed) = node.initiate(&mut transport)?;
                println!("node {} starts snapshot {id}", node.id());
                if let Some(local) = completed {
                    report(&mut transport, Ctl::Report(local))?;
                }
            }
            (Endpoint::Master, Frame::Control(Ctl::Stop)) => {
                // Everything has settled: nothing can be left in the inbox.
                let late = transport.recv_timeout(Duration::ZERO)?;
                assert!(late.is_none(), "node {}: {late:?} after stop", node.id());
                return Ok(node);
            }
            (from, frame) => {
                let reason = format!("unexpected {frame:?} from {from}");
                return Err(TransportError::Protocol(reason).into());
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The main thread: master and observer.
// ---------------------------------------------------------------------------------

fn main() -> Result<(), Box<dyn Error>> {
    let ring = match std::env::args().nth(1).as_deref() {
        None | Some("complete") => false,
        Some("ring") => true,
        Some(other) => return Err(format!("unknown topology {other:?}: ring or complete").into()),
    };
    let ids: Vec<_> = (0..NODES).map(NodeId).collect();
    let peers_of = |me: u32| -> Vec<NodeId> {
        if ring {
            vec![NodeId((me + 1) % NODES)]
        } else {
            ids.iter().copied().filter(|&p| p != NodeId(me)).collect()
        }
    };

    let mut endpoints: Vec<_> = ids.iter().map(|&id| Endpoint::Node(id)).collect();
    endpoints.extend([Endpoint::Master, Endpoint::Observer]);
    let mut transports = mesh(&endpoints);
    let mut observer = transports.pop().expect("observer");
    let mut master = transports.pop().expect("master");

    let mut threads = Vec::new();
    for (&id, transport) in ids.iter().zip(transports) {
        let mut node = Node::new(id, Tokens::new(id, peers_of(id.0)));
        for to in peers_of(id.0) {
            node.add_outgoing(to)?;
        }
        for from in ids.iter().filter(|&&from| peers_of(from.0).contains(&id)) {
            node.add_incoming(*from)?;
        }
        let thread = thread::Builder::new()
            .name(format!("node-{id}"))
            .spawn(move || run_node(node, transport))?;
        threads.push(thread);
    }

    // The tokens are on their way: take a snapshot while they move.
    let initiator = Endpoint::Node(ids[0]);
    master.send(initiator, Frame::Control(Ctl::Initiate))?;

    let mut locals = Vec::new();
    let mut settled = 0;
    while locals.len() < ids.len() || settled < TOKENS {
        let Some(Incoming::Frame(from, frame)) = observer.recv_timeout(STALL)? else {
            return Err(format!("stuck: {} reports, {settled} settled", locals.len()).into());
        };
        match frame {
            Frame::Control(Ctl::Report(local)) => locals.push(local),
            Frame::Control(Ctl::Settled) => settled += 1,
            other => return Err(format!("unexpected {other:?} from {from}").into()),
        }
    }

    let id = locals[0].id;
    let global = GlobalSnapshot::from_locals(id, locals)?;
    global.check_cut()?;
    println!(
        "snapshot {id} ({}):",
        if ring { "ring" } else { "complete graph" }
    );
    for local in global.nodes() {
        println!("  node {}: holds {} token(s)", local.node, local.state);
    }
    let mut in_transit = 0;
    for (from, to, channel) in global.channels() {
        if channel.record > 0 {
            println!("  channel {from} -> {to}: {} in transit", channel.record);
        }
        in_transit += channel.record;
    }
    let held: u64 = global.nodes().map(|local| local.state).sum();
    println!("  {held} held + {in_transit} in transit = {TOKENS} tokens: a consistent cut");
    assert_eq!(held + in_transit, TOKENS, "tokens are conserved");

    // Every token has settled and every marker has arrived: stop the nodes.
    for &id in &ids {
        master.send(Endpoint::Node(id), Frame::Control(Ctl::Stop))?;
    }
    let mut finally_held = 0;
    for thread in threads {
        let node = thread.join().map_err(|_| "a node thread panicked")??;
        assert_eq!(node.engine().in_flight().count(), 0);
        finally_held += node.process().held;
    }
    assert_eq!(finally_held, TOKENS, "every token settled somewhere");
    println!("all {TOKENS} tokens settled; {} threads joined", ids.len());
    Ok(())
}
