//! A simulated network, to test a [`Process`] (and the snapshots of it) with the real
//! [`Node`] driver, one delivery at a time, seeded and deterministic.
//!
//! A [`Sim`] holds one [`Node`] per node of a [`Topology`], and a FIFO queue per
//! ordered pair of endpoints. It is each node's [`Transport`]: what a node sends is
//! queued on the channel to its receiver, and nothing arrives until the simulation is
//! told to deliver it. Delivering hands the frame to the node's own free-running code
//! ([`Node::poll_event`]), so the engine, the counting, the replies of the process
//! and the markers are the real ones; only the wire is simulated.
//!
//! - **Deterministic.** Every choice the simulation makes comes from its own
//!   generator (SplitMix64) seeded by [`Sim::new`]: the same seed and the same calls
//!   give the same run, delivery for delivery.
//! - **FIFO per channel**, on any directed topology ([`Sim::new`] from a
//!   [`Topology`], [`Sim::link`] for more channels); [`Sim::deliver_nth`] and
//!   [`Sim::inject`] break the contract on purpose, as fault injection.
//! - **Schedules**: [`deliver`](Sim::deliver) the head of a chosen channel,
//!   [`step`](Sim::step) to deliver one chosen by the [`Order`] (at random by
//!   default, or adversarially), [`run`](Sim::run) and
//!   [`run_until_quiet`](Sim::run_until_quiet) for bounded runs,
//!   [`poll`](Sim::poll) to let one node take in everything that has arrived for it,
//!   as a free-running node does. [`hold`](Sim::hold) delays a channel until
//!   [`release`](Sim::release).
//! - **Faults**: [`cut_off`](Sim::cut_off) a node (its channels drop everything),
//!   [`kill`](Sim::kill) it (what it sent is still delivered, then its peers see it
//!   depart, as a transport reports it).
//! - **Snapshots**: started at a node ([`initiate`](Sim::initiate)) or through a
//!   [`Coordinator`] endpoint ([`add_coordinator`](Sim::add_coordinator),
//!   [`request_snapshot`](Sim::request_snapshot)); the global snapshots, assembled
//!   by a [`Collector`] or by the coordinator, are kept in the order they complete
//!   ([`completed`](Sim::completed)).
//!
//! Nothing a caller passes in makes it panic: every refusal is a [`SimError`].
//!
//! # Example
//!
//! Tokens go round a ring of four processes, each passed on a few times before it is
//! kept; a snapshot taken while they travel accounts for every one of them.
//!
//! ```
//! use snapshot_core::sim::Sim;
//! use snapshot_core::topology::Topology;
//! use snapshot_core::{NodeId, Outbox, Process};
//!
//! /// Passes the tokens it gets on to the next process until their hops run out.
//! struct Passer {
//!     next: NodeId,
//!     held: u64,
//! }
//!
//! impl Process for Passer {
//!     type Message = (u64, u32); // tokens, hops left
//!     type State = u64; // tokens held
//!     type Record = u64; // tokens caught in transit
//!
//!     fn handle(
//!         &mut self,
//!         _from: NodeId,
//!         (tokens, hops): (u64, u32),
//!         outbox: &mut Outbox<(u64, u32)>,
//!     ) {
//!         match hops {
//!             0 => self.held += tokens,
//!             _ => outbox.send(self.next, (tokens, hops - 1)),
//!         }
//!     }
//!     fn capture(&self) -> u64 {
//!         self.held
//!     }
//!     fn record(&self, in_transit: &mut u64, _from: NodeId, &(tokens, _): &(u64, u32)) {
//!         *in_transit += tokens;
//!     }
//! }
//!
//! let next = |id: NodeId| NodeId(id.0 % 4 + 1);
//! let ring = Topology::ring((1..=4).map(NodeId));
//! let mut sim = Sim::<Passer>::new(7, &ring, |id| Passer { next: next(id), held: 10 })?;
//!
//! // Each process sends 5 of its 10 tokens on a trip of 6 hops.
//! for id in (1..=4).map(NodeId) {
//!     sim.process_mut(id)?.held -= 5;
//!     sim.send(id, next(id), (5, 6))?;
//! }
//! sim.run(10)?; // some deliveries, in a seeded random order
//! let id = sim.initiate(NodeId(1))?;
//! sim.run_until_quiet(1_000)?;
//!
//! let snapshot = &sim.completed()[0];
//! assert_eq!(snapshot.id(), id);
//! snapshot.check_cut()?;
//! let held: u64 = snapshot.nodes().map(|local| local.state).sum();
//! let in_transit: u64 = snapshot.channels().iter().map(|(_, _, ch)| ch.record).sum();
//! assert_eq!(held + in_transit, 40, "every token is accounted for");
//! // And once everything has arrived, every token is held.
//! assert_eq!(sim.nodes().map(|node| node.process().held).sum::<u64>(), 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::topology::Topology;
use crate::{
    AbortedSnapshot, Collector, Coordination, Coordinator, CoordinatorError, CoordinatorEvent,
    Endpoint, Envelope, Event, Frame, GlobalSnapshot, Incoming, LocalSnapshot, Node, NodeError,
    NodeFrame, NodeId, Process, SnapshotError, SnapshotId, Transport, TransportError,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why the simulation refused a call, or what failed in it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SimError {
    /// The node is not in the simulation.
    #[error("node {0} is not in the simulation")]
    UnknownNode(NodeId),
    /// A node made for [`Sim::with_nodes`] has another id than the one asked for.
    #[error("the node made for node {expected} is node {found}")]
    WrongNode {
        /// The id asked for.
        expected: NodeId,
        /// The node's id.
        found: NodeId,
    },
    /// The node has been [killed](Sim::kill).
    #[error("node {0} has been killed")]
    Dead(NodeId),
    /// An endpoint cannot have a channel to itself.
    #[error("{0} cannot have a channel to itself")]
    SelfChannel(Endpoint),
    /// The channel has no frame at that position (position 0: it is empty).
    #[error("channel ({from} -> {to}) has no frame at position {index}")]
    NoFrame {
        /// The channel's sender.
        from: Endpoint,
        /// The channel's receiver.
        to: Endpoint,
        /// The position asked for, from the head.
        index: usize,
    },
    /// The channel is [held](Sim::hold): release it first.
    #[error("channel ({from} -> {to}) is held")]
    Held {
        /// The channel's sender.
        from: Endpoint,
        /// The channel's receiver.
        to: Endpoint,
    },
    /// The endpoint is neither a node nor the coordinator: the simulation does not
    /// deliver to it. Its frames wait in their channels; [`Sim::take`] takes them.
    #[error("{0} is not driven by the simulation (take its frames with `take`)")]
    NotDriven(Endpoint),
    /// The endpoint is one of the nodes.
    #[error("{0} is a node of the simulation")]
    EndpointTaken(Endpoint),
    /// The simulation has no coordinator (see [`Sim::add_coordinator`]).
    #[error("the simulation has no coordinator")]
    NoCoordinator,
    /// The simulation already has a coordinator, at that endpoint.
    #[error("the simulation already has a coordinator, at {0}")]
    CoordinatorExists(Endpoint),
    /// The change needs no snapshot to be in flight, and some are.
    #[error("{0} snapshot(s) are in flight")]
    SnapshotsInFlight(usize),
    /// [`Sim::run_until_quiet`] delivered as many frames as it was allowed, and some
    /// can still be delivered.
    #[error("not quiet after {0} deliveries")]
    NotQuiet(usize),
    /// A node refused an input or its step failed (the engine refused a marker, a
    /// frame broke the protocol, a send to a departed peer, ...).
    #[error("node {node}")]
    Node {
        /// The node.
        node: NodeId,
        /// What went wrong.
        #[source]
        source: NodeError,
    },
    /// A frame [injected](Sim::inject) from an endpoint was refused, as its
    /// transport would refuse it (sent to a peer known to have departed, say).
    #[error("a send from {from}")]
    Transport {
        /// The sending endpoint.
        from: Endpoint,
        /// What the transport said.
        #[source]
        source: TransportError,
    },
    /// The coordinator refused a call or a frame.
    #[error("the coordinator")]
    Coordinator(#[source] CoordinatorError),
    /// A local snapshot does not fit the others of its snapshot (reported twice, say).
    #[error("collecting snapshots")]
    Snapshot(#[source] SnapshotError),
}

/// Which deliverable channel [`Sim::step`] (and [`Sim::poll`]) takes the head of.
///
/// Whatever the order, every channel stays FIFO: an order only chooses *which*
/// channel goes next. Held channels, empty ones, and channels to endpoints the
/// simulation does not drive are never chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Order {
    /// Any deliverable channel, with the same chance, drawn from the seeded
    /// generator.
    #[default]
    Random,
    /// The frame that was sent first, whatever its channel: as if every endpoint had
    /// one inbox, in the order frames arrived. No randomness.
    Arrival,
    /// Adversarial: markers as late as possible. A channel whose head is not a marker
    /// (an application message, most often) is always chosen before one whose head is
    /// a marker; among them, at random. Every marker is overtaken, on the other
    /// channels, by every message that can be delivered before it, so that channel
    /// records catch as much as they can, snapshots stay in flight as long as
    /// possible, and overlap. (With traffic that never dies down, a marker may wait
    /// forever: bound the run.)
    MarkersLast,
    /// Adversarial: the channel sent to most recently first (depth first). A marker
    /// just sent is delivered at once, ahead of the older traffic on the other
    /// channels, so that snapshots race through the nodes while messages sent long
    /// before are still in transit.
    NewestFirst,
}

/// What a delivery took from a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// An application message.
    Message,
    /// A marker of this snapshot.
    Marker(SnapshotId),
    /// A coordinator's request to start a snapshot.
    Initiate,
    /// A node's word to its coordinator that it started this snapshot.
    Started(SnapshotId),
    /// A node's part of a snapshot, for its coordinator.
    Report {
        /// The node.
        node: NodeId,
        /// The snapshot.
        id: SnapshotId,
    },
    /// A coordinator's word that a snapshot is given up on.
    Abort(SnapshotId),
    /// A node's word to its coordinator that it gave up on this snapshot.
    Aborted(SnapshotId),
    /// A control frame of the application's.
    Control,
    /// The news that the sender has gone ([`Incoming::Departed`]).
    Departed,
}

/// What an endpoint handed to its application in a delivery, that the simulation
/// does not handle itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<C> {
    /// A control frame.
    Control {
        /// Who sent it.
        from: Endpoint,
        /// What it says.
        control: C,
    },
    /// A peer has gone.
    Departed(Endpoint),
    /// The coordinator aborted a snapshot that missed its deadline (see
    /// [`Sim::advance`]).
    Aborted(AbortedSnapshot),
    /// The coordinator heard that `node`, asked to, started snapshot `id`.
    Started {
        /// The initiator.
        node: NodeId,
        /// The snapshot.
        id: SnapshotId,
    },
}

/// One frame delivered, and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery<C> {
    /// The channel's sender.
    pub from: Endpoint,
    /// The channel's receiver.
    pub to: Endpoint,
    /// What was delivered.
    pub kind: Kind,
    /// The snapshot the receiver recorded its state for in this delivery.
    pub started: Option<SnapshotId>,
    /// The snapshot whose part the receiver completed in this delivery (its part went
    /// to the simulation's collector, or to the coordinator).
    pub completed: Option<SnapshotId>,
    /// The snapshot that became whole in this delivery (see [`Sim::completed`]).
    pub assembled: Option<SnapshotId>,
    /// What the receiver handed to its application, if anything.
    pub notice: Option<Notice<C>>,
}

/// SplitMix64 (Steele, Lea and Flood): small, fast, and good enough for schedules.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0), without modulo bias worth the name.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// What waits on a channel.
enum Item<F> {
    Frame(F),
    /// The sender has gone; always the last item of its channel.
    Departed,
}

/// A FIFO channel between two endpoints.
struct Channel<F> {
    /// Each item with the sequence number of its sending.
    items: VecDeque<(u64, Item<F>)>,
    held: bool,
    /// The sequence number of the last item queued.
    last: u64,
}

impl<F> Default for Channel<F> {
    fn default() -> Self {
        Channel {
            items: VecDeque::new(),
            held: false,
            last: 0,
        }
    }
}

impl<F> Channel<F> {
    /// Whether the head is a marker.
    fn marker_first(&self) -> bool
    where
        F: Head,
    {
        matches!(self.items.front(), Some((_, Item::Frame(frame))) if frame.is_marker())
    }

    fn frames(&self) -> usize {
        self.items
            .iter()
            .filter(|(_, item)| matches!(item, Item::Frame(_)))
            .count()
    }
}

/// The wire: channels, and what each endpoint is.
struct Net<F> {
    nodes: BTreeSet<NodeId>,
    coordinator: Option<Endpoint>,
    dead: BTreeSet<NodeId>,
    cut: BTreeSet<NodeId>,
    /// `(endpoint, peer)`: the endpoint has been told that the peer departed.
    knows: BTreeSet<(Endpoint, Endpoint)>,
    channels: BTreeMap<(Endpoint, Endpoint), Channel<F>>,
    seq: u64,
    dropped: u64,
    rng: Rng,
    order: Order,
}

impl<F> Net<F> {
    fn is_node(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Node(id) if self.nodes.contains(&id))
    }

    /// A live node, or the coordinator.
    fn driven(&self, endpoint: Endpoint) -> bool {
        match endpoint {
            Endpoint::Node(id) if self.nodes.contains(&id) => !self.dead.contains(&id),
            other => self.coordinator == Some(other),
        }
    }

    fn is_cut(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Node(id) if self.cut.contains(&id))
    }

    /// Refuses a node endpoint that is not in the simulation.
    fn known(&self, endpoint: Endpoint) -> Result<(), SimError> {
        match endpoint {
            Endpoint::Node(id) if !self.nodes.contains(&id) => Err(SimError::UnknownNode(id)),
            _ => Ok(()),
        }
    }

    fn pair(&self, from: Endpoint, to: Endpoint) -> Result<(), SimError> {
        self.known(from)?;
        self.known(to)?;
        if from == to {
            return Err(SimError::SelfChannel(from));
        }
        Ok(())
    }

    fn enqueue(&mut self, from: Endpoint, to: Endpoint, item: Item<F>) {
        self.seq += 1;
        let seq = self.seq;
        let channel = self.channels.entry((from, to)).or_default();
        channel.items.push_back((seq, item));
        channel.last = seq;
    }

    /// What a transport does with a frame sent from `from` to `to`.
    fn send(&mut self, from: Endpoint, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if from == to {
            return Err(TransportError::UnknownEndpoint(to));
        }
        if let Endpoint::Node(id) = to {
            if !self.nodes.contains(&id) {
                return Err(TransportError::UnknownEndpoint(to));
            }
            if self.dead.contains(&id) {
                // Lost with the peer, until the sender has been told it has gone.
                if self.knows.contains(&(from, to)) {
                    return Err(TransportError::Disconnected(to));
                }
                self.dropped += 1;
                return Ok(());
            }
        }
        if self.is_cut(from) || self.is_cut(to) {
            self.dropped += 1;
            return Ok(());
        }
        self.enqueue(from, to, Item::Frame(frame));
        Ok(())
    }

    /// The channels a step may take the head of, to `to` only if given.
    fn ready(
        &self,
        to: Option<Endpoint>,
    ) -> impl Iterator<Item = (&(Endpoint, Endpoint), &Channel<F>)> {
        self.channels
            .iter()
            .filter(move |&(&(_, receiver), channel)| {
                !channel.items.is_empty()
                    && !channel.held
                    && to.is_none_or(|to| to == receiver)
                    && self.driven(receiver)
            })
    }

    /// The channel the order chooses among the ready ones.
    fn pick(&mut self, to: Option<Endpoint>) -> Option<(Endpoint, Endpoint)>
    where
        F: Head,
    {
        match self.order {
            Order::Random => {
                let count = self.ready(to).count();
                let at = self.rng.below(count);
                self.ready(to).nth(at).map(|(&pair, _)| pair)
            }
            Order::Arrival => self
                .ready(to)
                .min_by_key(|(_, channel)| channel.items.front().map(|(seq, _)| *seq))
                .map(|(&pair, _)| pair),
            Order::NewestFirst => self
                .ready(to)
                .max_by_key(|(_, channel)| channel.last)
                .map(|(&pair, _)| pair),
            Order::MarkersLast => {
                let others = self.ready(to).filter(|(_, c)| !c.marker_first()).count();
                if others > 0 {
                    let at = self.rng.below(others);
                    self.ready(to).filter(|(_, c)| !c.marker_first()).nth(at)
                } else {
                    let count = self.ready(to).count();
                    let at = self.rng.below(count);
                    self.ready(to).nth(at)
                }
                .map(|(&pair, _)| pair)
            }
        }
    }

    /// Takes the `index`th frame of a channel (the head, a departure included, for
    /// 0).
    fn take(&mut self, from: Endpoint, to: Endpoint, index: usize) -> Option<Item<F>> {
        let channel = self.channels.get_mut(&(from, to))?;
        let position = if index == 0 {
            0
        } else {
            channel
                .items
                .iter()
                .enumerate()
                .filter(|(_, (_, item))| matches!(item, Item::Frame(_)))
                .nth(index)?
                .0
        };
        channel.items.remove(position).map(|(_, item)| item)
    }

    /// Drops every frame of the channels that `filter` picks, and the news of
    /// departures on them unless `keep_departures`.
    fn drop_frames(&mut self, filter: impl Fn(Endpoint, Endpoint) -> bool, keep_departures: bool) {
        for (&(from, to), channel) in self.channels.iter_mut() {
            if filter(from, to) {
                let frames = channel.frames();
                channel
                    .items
                    .retain(|(_, item)| keep_departures && matches!(item, Item::Departed));
                self.dropped += frames as u64;
            }
        }
    }
}

/// What the orders need to know of a frame.
trait Head {
    fn is_marker(&self) -> bool;
}

impl<M, S, R, C> Head for Frame<M, S, R, C> {
    fn is_marker(&self) -> bool {
        matches!(self, Frame::Peer(Envelope::Marker(_)))
    }
}

impl Kind {
    fn of<M, S, R, C>(item: &Item<Frame<M, S, R, C>>) -> Kind {
        match item {
            Item::Departed => Kind::Departed,
            Item::Frame(Frame::Peer(Envelope::App(_))) => Kind::Message,
            Item::Frame(Frame::Peer(Envelope::Marker(id))) => Kind::Marker(*id),
            Item::Frame(Frame::Snapshot(Coordination::Initiate)) => Kind::Initiate,
            Item::Frame(Frame::Snapshot(Coordination::Started(id))) => Kind::Started(*id),
            Item::Frame(Frame::Snapshot(Coordination::Report(local))) => Kind::Report {
                node: local.node,
                id: local.id,
            },
            Item::Frame(Frame::Snapshot(Coordination::Abort(id))) => Kind::Abort(*id),
            Item::Frame(Frame::Snapshot(Coordination::Aborted(id, _))) => Kind::Aborted(*id),
            Item::Frame(Frame::Control(_)) => Kind::Control,
        }
    }
}

/// One endpoint's view of the wire: its [`Transport`].
struct Port<'a, M, S, R, C> {
    me: Endpoint,
    net: &'a mut Net<Frame<M, S, R, C>>,
    /// The one item to hand out, for a delivery of a chosen frame.
    pending: Option<Incoming<Frame<M, S, R, C>>>,
    /// Whether to hand out, once `pending` is gone, what is ready on any channel to
    /// this endpoint (a poll), or nothing (a delivery).
    any: bool,
    /// The snapshot whose part this endpoint sent to a coordinator, if it did.
    reported: Option<SnapshotId>,
}

impl<'a, M, S, R, C> Port<'a, M, S, R, C> {
    fn new(me: Endpoint, net: &'a mut Net<Frame<M, S, R, C>>) -> Self {
        Port {
            me,
            net,
            pending: None,
            any: false,
            reported: None,
        }
    }
}

impl<M: Send, S: Send, R: Send, C: Send> Transport<Frame<M, S, R, C>> for Port<'_, M, S, R, C> {
    fn local(&self) -> Endpoint {
        self.me
    }

    fn address(&self) -> String {
        format!("sim:{}", self.me)
    }

    fn connect(&mut self, _peer: Endpoint, _address: &str) -> Result<(), TransportError> {
        Ok(())
    }

    fn send(&mut self, to: Endpoint, frame: Frame<M, S, R, C>) -> Result<(), TransportError> {
        let report = match &frame {
            Frame::Snapshot(Coordination::Report(local)) => Some(local.id),
            _ => None,
        };
        self.net.send(self.me, to, frame)?;
        self.reported = report.or(self.reported);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Nothing waits in a simulation: with nothing to take, this is
    /// [`TransportError::Closed`].
    fn recv(&mut self) -> Result<Incoming<Frame<M, S, R, C>>, TransportError> {
        self.recv_timeout(Duration::ZERO)?
            .ok_or(TransportError::Closed)
    }

    /// Never waits: what would arrive while it waited is sent by endpoints that only
    /// run when the simulation runs them.
    fn recv_timeout(
        &mut self,
        _timeout: Duration,
    ) -> Result<Option<Incoming<Frame<M, S, R, C>>>, TransportError> {
        let incoming = match self.pending.take() {
            Some(incoming) => incoming,
            None if self.any => {
                let Some((from, to)) = self.net.pick(Some(self.me)) else {
                    return Ok(None);
                };
                match self.net.take(from, to, 0) {
                    Some(Item::Frame(frame)) => Incoming::Frame(from, frame),
                    Some(Item::Departed) => Incoming::Departed(from),
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        if let Incoming::Departed(peer) = incoming {
            self.net.knows.insert((self.me, peer));
        }
        Ok(Some(incoming))
    }
}

/// Where completed parts of snapshots go.
enum Sink<S, R> {
    Collector(Collector<S, R>),
    Coordinator(Coordinator<S, R>),
}

/// What one turn of an endpoint did.
struct Turn<C> {
    started: Option<SnapshotId>,
    completed: Option<SnapshotId>,
    assembled: Option<SnapshotId>,
    notice: Option<Notice<C>>,
    /// Whether the node stopped to hand out a completed part (to the collector).
    handed_out: bool,
}

impl<C> Turn<C> {
    fn new() -> Self {
        Turn {
            started: None,
            completed: None,
            assembled: None,
            notice: None,
            handed_out: false,
        }
    }
}

/// A simulated network of [`Node`]s running processes `P`, with control traffic `C`:
/// see [the module](self).
///
/// As the frames of any [`Transport`], the process's messages, states and records, and
/// the control traffic, must be `Send`. One `Sim` is one thread's: it runs an endpoint
/// only when called.
pub struct Sim<P: Process, C = ()> {
    net: Net<NodeFrame<P, C>>,
    nodes: BTreeMap<NodeId, Node<P>>,
    topology: Topology,
    sink: Sink<P::State, P::Record>,
    completed: Vec<GlobalSnapshot<P::State, P::Record>>,
    /// The simulation's clock, for the coordinator's deadlines: it moves only when
    /// [`advance`](Sim::advance)d.
    now: Instant,
}

impl<P: Process, C> fmt::Debug for Sim<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let channels: BTreeMap<_, _> = self
            .net
            .channels
            .iter()
            .filter(|(_, channel)| !channel.items.is_empty() || channel.held)
            .map(|(&(from, to), channel)| {
                (
                    format!("{from} -> {to}"),
                    (channel.items.len(), channel.held),
                )
            })
            .collect();
        f.debug_struct("Sim")
            .field("nodes", &self.nodes)
            .field("coordinator", &self.net.coordinator)
            .field("dead", &self.net.dead)
            .field("cut_off", &self.net.cut)
            .field("order", &self.net.order)
            .field("channels (items, held)", &channels)
            .field("completed", &self.completed.len())
            .finish_non_exhaustive()
    }
}

impl<P, C> Sim<P, C>
where
    P: Process,
    P::Message: Send,
    P::State: Send,
    P::Record: Send,
    C: Send,
{
    /// A simulation seeded with `seed`, with a node for every node of `topology`
    /// running `process(id)`, and its channels. Completed parts of snapshots go to a
    /// [`Collector`] of all the nodes, until a coordinator is
    /// [added](Self::add_coordinator).
    ///
    /// The topology is taken as it is: snapshots complete only on a strongly
    /// connected one ([`Topology::check`]).
    pub fn new(
        seed: u64,
        topology: &Topology,
        mut process: impl FnMut(NodeId) -> P,
    ) -> Result<Self, SimError> {
        Self::with_nodes(seed, topology, |id| Node::new(id, process(id)))
    }

    /// Like [`new`](Self::new), with the nodes made by `node(id)`: for an engine of
    /// its own (a limit, an epoch), or a node that already has channels (the
    /// topology's are added). Each must have the id it is made for
    /// ([`SimError::WrongNode`]).
    pub fn with_nodes(
        seed: u64,
        topology: &Topology,
        mut node: impl FnMut(NodeId) -> Node<P>,
    ) -> Result<Self, SimError> {
        let mut nodes = BTreeMap::new();
        for id in topology.nodes() {
            let mut node = node(id);
            if node.id() != id {
                return Err(SimError::WrongNode {
                    expected: id,
                    found: node.id(),
                });
            }
            topology.join(&mut node).map_err(|e| SimError::Node {
                node: id,
                source: e.into(),
            })?;
            nodes.insert(id, node);
        }
        let channels = topology
            .links()
            .map(|(from, to)| {
                (
                    (Endpoint::Node(from), Endpoint::Node(to)),
                    Channel::default(),
                )
            })
            .collect();
        Ok(Sim {
            net: Net {
                nodes: nodes.keys().copied().collect(),
                coordinator: None,
                dead: BTreeSet::new(),
                cut: BTreeSet::new(),
                knows: BTreeSet::new(),
                channels,
                seq: 0,
                dropped: 0,
                rng: Rng(seed),
                order: Order::Random,
            },
            sink: Sink::Collector(Collector::new(nodes.keys().copied())),
            nodes,
            topology: topology.clone(),
            completed: Vec::new(),
            now: Instant::now(),
        })
    }

    /// Sets the order in which [`step`](Self::step) and [`poll`](Self::poll) choose
    /// channels.
    pub fn set_order(&mut self, order: Order) {
        self.net.order = order;
    }

    /// The order in which channels are chosen.
    pub fn order(&self) -> Order {
        self.net.order
    }

    /// A number in `0..n` (0 if `n` is 0) from the simulation's generator, so that a
    /// test's own random choices follow the same seed.
    pub fn random_below(&mut self, n: usize) -> usize {
        self.net.rng.below(n)
    }

    /// Adds the channel `from -> to`, at both nodes. Channels may change only while no
    /// snapshot is in flight at either.
    pub fn link(&mut self, from: NodeId, to: NodeId) -> Result<(), SimError> {
        self.net.pair(Endpoint::Node(from), Endpoint::Node(to))?;
        let refused = |node| {
            move |e: crate::EngineError| SimError::Node {
                node,
                source: e.into(),
            }
        };
        for id in [from, to] {
            let in_flight = self.node(id)?.engine().in_flight().count();
            if in_flight > 0 {
                return Err(SimError::Node {
                    node: id,
                    source: crate::EngineError::SnapshotInFlight {
                        node: id,
                        in_flight,
                    }
                    .into(),
                });
            }
        }
        self.node_mut(from)?
            .add_outgoing(to)
            .map_err(refused(from))?;
        self.node_mut(to)?.add_incoming(from).map_err(refused(to))?;
        self.topology.link(from, to);
        self.net
            .channels
            .entry((Endpoint::Node(from), Endpoint::Node(to)))
            .or_default();
        Ok(())
    }

    /// Adds a [`Coordinator`] of every node, at `endpoint`: every node
    /// [reports](Node::report_to) its parts of snapshots to it, and
    /// [`request_snapshot`](Self::request_snapshot) asks a node to start one through
    /// it. The coordinator's frames travel on FIFO channels like any other, and the
    /// simulation delivers them to it like to a node.
    ///
    /// Refused while a snapshot is in flight.
    pub fn add_coordinator(&mut self, endpoint: Endpoint) -> Result<(), SimError> {
        if let Some(existing) = self.net.coordinator {
            return Err(SimError::CoordinatorExists(existing));
        }
        if self.net.is_node(endpoint) {
            return Err(SimError::EndpointTaken(endpoint));
        }
        let in_flight = self.in_flight();
        if in_flight > 0 {
            return Err(SimError::SnapshotsInFlight(in_flight));
        }
        for (&id, node) in self.nodes.iter_mut() {
            node.report_to(endpoint);
            for pair in [
                (endpoint, Endpoint::Node(id)),
                (Endpoint::Node(id), endpoint),
            ] {
                self.net.channels.entry(pair).or_default();
            }
        }
        self.net.coordinator = Some(endpoint);
        self.sink = Sink::Coordinator(Coordinator::new(self.nodes.keys().copied()));
        Ok(())
    }

    /// The coordinator's endpoint, if there is one.
    pub fn coordinator(&self) -> Option<Endpoint> {
        self.net.coordinator
    }

    /// The snapshots in flight: started at some node and not assembled (at the
    /// coordinator, also those asked for and not started yet).
    pub fn in_flight(&self) -> usize {
        let started: BTreeSet<SnapshotId> = self
            .nodes
            .values()
            .flat_map(|node| node.engine().in_flight())
            .chain(self.incomplete().into_iter().map(|(id, _)| id))
            .collect();
        match &self.sink {
            Sink::Collector(_) => started.len(),
            Sink::Coordinator(coordinator) => started.len().max(coordinator.in_flight()),
        }
    }

    // -----------------------------------------------------------------------------
    // Looking inside.
    // -----------------------------------------------------------------------------

    /// The topology: the nodes, and the channels between them.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every node, in id order (the killed ones too, as they were when they died).
    pub fn nodes(&self) -> impl Iterator<Item = &Node<P>> {
        self.nodes.values()
    }

    /// Node `id`.
    pub fn node(&self, id: NodeId) -> Result<&Node<P>, SimError> {
        self.nodes.get(&id).ok_or(SimError::UnknownNode(id))
    }

    fn node_mut(&mut self, id: NodeId) -> Result<&mut Node<P>, SimError> {
        self.nodes.get_mut(&id).ok_or(SimError::UnknownNode(id))
    }

    /// The process of node `id`.
    pub fn process(&self, id: NodeId) -> Result<&P, SimError> {
        self.node(id).map(Node::process)
    }

    /// The process of node `id`, for a local event (a deposit, a withdrawal, the
    /// balance taken out for a transfer). Messages go through [`send`](Self::send).
    pub fn process_mut(&mut self, id: NodeId) -> Result<&mut P, SimError> {
        self.node_mut(id).map(Node::process_mut)
    }

    /// The frames waiting on the channel `from -> to`, head first (none for a channel
    /// that does not exist).
    pub fn frames(
        &self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
    ) -> impl Iterator<Item = &NodeFrame<P, C>> {
        self.net
            .channels
            .get(&(from.into(), to.into()))
            .into_iter()
            .flat_map(|channel| channel.items.iter())
            .filter_map(|(_, item)| match item {
                Item::Frame(frame) => Some(frame),
                Item::Departed => None,
            })
    }

    /// How many frames wait on the channel `from -> to`.
    pub fn len(&self, from: impl Into<Endpoint>, to: impl Into<Endpoint>) -> usize {
        self.net
            .channels
            .get(&(from.into(), to.into()))
            .map_or(0, Channel::frames)
    }

    /// Every channel with something waiting on it (frames, or the news of its
    /// sender's departure), with its number of frames.
    pub fn channels(&self) -> impl Iterator<Item = (Endpoint, Endpoint, usize)> + '_ {
        self.net
            .channels
            .iter()
            .filter(|(_, channel)| !channel.items.is_empty())
            .map(|(&(from, to), channel)| (from, to, channel.frames()))
    }

    /// How many frames are in transit, on every channel.
    pub fn in_transit(&self) -> usize {
        self.net.channels.values().map(Channel::frames).sum()
    }

    /// The channels a [`step`](Self::step) may take the head of: not empty, not held,
    /// to a live node or the coordinator. In order of sender, then receiver.
    pub fn ready(&self) -> Vec<(Endpoint, Endpoint)> {
        self.net.ready(None).map(|(&pair, _)| pair).collect()
    }

    /// Whether nothing can be delivered (held channels, and channels to endpoints the
    /// simulation does not drive, may still have frames).
    pub fn is_quiet(&self) -> bool {
        self.net.ready(None).next().is_none()
    }

    /// How many frames cuts and deaths have dropped.
    pub fn dropped(&self) -> u64 {
        self.net.dropped
    }

    /// The global snapshots assembled so far, in the order they became whole.
    pub fn completed(&self) -> &[GlobalSnapshot<P::State, P::Record>] {
        &self.completed
    }

    /// Takes the global snapshots assembled so far.
    pub fn take_completed(&mut self) -> Vec<GlobalSnapshot<P::State, P::Record>> {
        std::mem::take(&mut self.completed)
    }

    /// The snapshots some of whose parts are in, and not all, with the nodes whose
    /// parts are missing.
    pub fn incomplete(&self) -> Vec<(SnapshotId, Vec<NodeId>)> {
        match &self.sink {
            Sink::Collector(collector) => collector.missing().collect(),
            Sink::Coordinator(coordinator) => coordinator.missing(),
        }
    }

    // -----------------------------------------------------------------------------
    // What the application does.
    // -----------------------------------------------------------------------------

    /// Node `from` sends the application message `message` to node `to`, through its
    /// [`Node`]: counted, and queued on the channel `from -> to`. The process's own
    /// bookkeeping (taking out what it sends) is [`process_mut`](Self::process_mut).
    pub fn send(&mut self, from: NodeId, to: NodeId, message: P::Message) -> Result<(), SimError> {
        self.alive(from)?;
        let node = self
            .nodes
            .get_mut(&from)
            .ok_or(SimError::UnknownNode(from))?;
        node.send(
            &mut Port::new(Endpoint::Node(from), &mut self.net),
            to,
            message,
        )
        .map_err(|source| SimError::Node { node: from, source })
    }

    /// Starts a snapshot at node `node`, directly, and returns its id. (Through the
    /// coordinator: [`request_snapshot`](Self::request_snapshot).)
    pub fn initiate(&mut self, node: NodeId) -> Result<SnapshotId, SimError> {
        self.alive(node)?;
        let driver = self
            .nodes
            .get_mut(&node)
            .ok_or(SimError::UnknownNode(node))?;
        let (id, outcome) = driver
            .initiate(&mut Port::new(Endpoint::Node(node), &mut self.net))
            .map_err(|source| SimError::Node { node, source })?;
        if let Some(local) = outcome.completed {
            self.collect(local)?;
        }
        Ok(id)
    }

    /// Has the coordinator ask node `node` to start a snapshot: a request on the
    /// channel from the coordinator to the node, delivered like any frame. The node
    /// says which snapshot it started ([`Notice::Started`], when that reaches the
    /// coordinator).
    pub fn request_snapshot(&mut self, node: NodeId) -> Result<(), SimError> {
        let endpoint = self.net.coordinator.ok_or(SimError::NoCoordinator)?;
        let Sink::Coordinator(coordinator) = &mut self.sink else {
            return Err(SimError::NoCoordinator);
        };
        coordinator
            .initiate_at(&mut Port::new(endpoint, &mut self.net), node, self.now)
            .map_err(SimError::Coordinator)
    }

    /// Moves the simulation's clock on by `by`, and lets the coordinator (if there is
    /// one) keep its deadlines: a snapshot whose last part has not come within the
    /// coordinator's timeout of its request is aborted, and the abort goes to every
    /// node on its channels like any frame. Returns a completed abort, if one is due
    /// (the coordinator reports it once every node that had not finished has
    /// answered, or once its timeout has passed again).
    pub fn advance(&mut self, by: Duration) -> Result<Option<AbortedSnapshot>, SimError> {
        self.now += by;
        let endpoint = self.net.coordinator.ok_or(SimError::NoCoordinator)?;
        let Sink::Coordinator(coordinator) = &mut self.sink else {
            return Err(SimError::NoCoordinator);
        };
        match coordinator
            .expire::<P::Message, C, _>(&mut Port::new(endpoint, &mut self.net), self.now)
            .map_err(SimError::Coordinator)?
        {
            Some(CoordinatorEvent::Aborted(aborted)) => Ok(Some(aborted)),
            _ => Ok(None),
        }
    }

    /// Replaces the coordinator's timeout (see [`Coordinator::with_timeout`]).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), SimError> {
        let Sink::Coordinator(coordinator) = &mut self.sink else {
            return Err(SimError::NoCoordinator);
        };
        coordinator.set_timeout(timeout);
        Ok(())
    }

    /// Sends the control frame `control` from `from` (any endpoint: a test harness, a
    /// command shell, a node's application) to `to`.
    pub fn send_control(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
        control: C,
    ) -> Result<(), SimError> {
        self.inject(from, to, Frame::Control(control))
    }

    /// **Fault injection**: puts `frame` on the channel `from -> to` as if `from` had
    /// sent it, with no [`Node`] counting it: a marker or a message out of nowhere,
    /// node-to-node traffic from an endpoint that is not a node, a coordinator's
    /// request from anywhere.
    pub fn inject(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
        frame: NodeFrame<P, C>,
    ) -> Result<(), SimError> {
        let (from, to) = (from.into(), to.into());
        self.net.pair(from, to)?;
        if let Endpoint::Node(id) = from {
            self.alive(id)?;
        }
        self.net
            .send(from, to, frame)
            .map_err(|source| SimError::Transport { from, source })
    }

    // -----------------------------------------------------------------------------
    // Delivering.
    // -----------------------------------------------------------------------------

    /// Delivers the head of the channel `from -> to` to `to` (a node, or the
    /// coordinator).
    pub fn deliver(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
    ) -> Result<Delivery<C>, SimError> {
        self.deliver_at(from.into(), to.into(), 0)
    }

    /// **Fault injection: breaks FIFO.** Delivers the `index`th frame of the channel
    /// `from -> to` (0 is the head), ahead of the ones in front of it. The
    /// Chandy-Lamport algorithm needs FIFO channels: this is how to show what goes
    /// wrong without them.
    pub fn deliver_nth(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
        index: usize,
    ) -> Result<Delivery<C>, SimError> {
        self.deliver_at(from.into(), to.into(), index)
    }

    fn deliver_at(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        index: usize,
    ) -> Result<Delivery<C>, SimError> {
        self.net.pair(from, to)?;
        if let Endpoint::Node(id) = to {
            self.alive(id)?;
        } else if self.net.coordinator != Some(to) {
            return Err(SimError::NotDriven(to));
        }
        if self
            .net
            .channels
            .get(&(from, to))
            .is_some_and(|channel| channel.held)
        {
            return Err(SimError::Held { from, to });
        }
        let item = self
            .net
            .take(from, to, index)
            .ok_or(SimError::NoFrame { from, to, index })?;
        self.hand_over(from, to, item)
    }

    /// Delivers the head of one channel, chosen by the [`Order`] among the
    /// [ready](Self::ready) ones; `None` if there is none.
    pub fn step(&mut self) -> Result<Option<Delivery<C>>, SimError> {
        let Some((from, to)) = self.net.pick(None) else {
            return Ok(None);
        };
        match self.net.take(from, to, 0) {
            Some(item) => self.hand_over(from, to, item).map(Some),
            None => Ok(None),
        }
    }

    /// Takes up to `steps` [steps](Self::step), fewer if the simulation becomes
    /// quiet; returns what each delivered.
    pub fn run(&mut self, steps: usize) -> Result<Vec<Delivery<C>>, SimError> {
        let mut deliveries = Vec::new();
        while deliveries.len() < steps {
            match self.step()? {
                Some(delivery) => deliveries.push(delivery),
                None => break,
            }
        }
        Ok(deliveries)
    }

    /// Steps until nothing can be delivered, at most `max_steps` times
    /// ([`SimError::NotQuiet`] if that was not enough); returns what each step
    /// delivered. Held channels keep their frames.
    pub fn run_until_quiet(&mut self, max_steps: usize) -> Result<Vec<Delivery<C>>, SimError> {
        let deliveries = self.run(max_steps)?;
        if self.is_quiet() {
            Ok(deliveries)
        } else {
            Err(SimError::NotQuiet(deliveries.len()))
        }
    }

    /// Lets node `node` take in what has arrived for it, as a free-running node does:
    /// one call of [`Node::poll_event`] with `timeout`, over every ready channel to it
    /// (chosen by the [`Order`], each FIFO). It stops when something needs the
    /// application (returned), when nothing is left (it never waits: nothing arrives
    /// while a node polls), or after a burst ([`Node::POLL_BURST`], with a zero
    /// timeout). A part of a snapshot that completes goes to the collector on the
    /// way, without stopping.
    pub fn poll(&mut self, node: NodeId, timeout: Duration) -> Result<Option<Notice<C>>, SimError> {
        self.alive(node)?;
        loop {
            let turn = self.turn(node, None, timeout)?;
            if !turn.handed_out {
                return Ok(turn.notice);
            }
        }
    }

    /// Takes the head of the channel `from -> to` without delivering it: a frame for
    /// an endpoint the simulation does not drive (the test plays it), or a frame lost
    /// on the way (**fault injection**). Works on held channels too.
    pub fn take(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
    ) -> Result<Option<Incoming<NodeFrame<P, C>>>, SimError> {
        let (from, to) = (from.into(), to.into());
        self.net.pair(from, to)?;
        Ok(self.net.take(from, to, 0).map(|item| match item {
            Item::Frame(frame) => Incoming::Frame(from, frame),
            Item::Departed => {
                self.net.knows.insert((to, from));
                Incoming::Departed(from)
            }
        }))
    }

    // -----------------------------------------------------------------------------
    // Faults.
    // -----------------------------------------------------------------------------

    /// Holds the channel `from -> to`: [`step`](Self::step), [`run`](Self::run) and
    /// [`poll`](Self::poll) leave it alone and [`deliver`](Self::deliver) refuses it,
    /// while frames keep joining it, until [`release`](Self::release).
    ///
    /// ```
    /// # use snapshot_core::sim::Sim;
    /// # use snapshot_core::topology::Topology;
    /// # use snapshot_core::{NodeId, Outbox, Process};
    /// # struct Count(u64);
    /// # impl Process for Count {
    /// #     type Message = u64;
    /// #     type State = u64;
    /// #     type Record = u64;
    /// #     fn handle(&mut self, _: NodeId, n: u64, _: &mut Outbox<u64>) { self.0 += n }
    /// #     fn capture(&self) -> u64 { self.0 }
    /// #     fn record(&self, r: &mut u64, _: NodeId, n: &u64) { *r += n }
    /// # }
    /// let (a, b) = (NodeId(1), NodeId(2));
    /// let mut sim = Sim::<Count>::new(1, &Topology::complete([a, b]), |_| Count(0))?;
    /// sim.hold(a, b)?;
    /// sim.send(a, b, 5)?;
    /// sim.send(b, a, 7)?;
    /// sim.run_until_quiet(100)?;
    /// assert_eq!((sim.process(a)?.0, sim.process(b)?.0), (7, 0), "5 is held");
    /// sim.release(a, b)?;
    /// sim.run_until_quiet(100)?;
    /// assert_eq!(sim.process(b)?.0, 5);
    /// # Ok::<(), snapshot_core::sim::SimError>(())
    /// ```
    pub fn hold(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
    ) -> Result<(), SimError> {
        self.set_held(from.into(), to.into(), true)
    }

    /// Releases a [held](Self::hold) channel.
    pub fn release(
        &mut self,
        from: impl Into<Endpoint>,
        to: impl Into<Endpoint>,
    ) -> Result<(), SimError> {
        self.set_held(from.into(), to.into(), false)
    }

    /// Whether the channel `from -> to` is held.
    pub fn is_held(&self, from: impl Into<Endpoint>, to: impl Into<Endpoint>) -> bool {
        self.net
            .channels
            .get(&(from.into(), to.into()))
            .is_some_and(|channel| channel.held)
    }

    fn set_held(&mut self, from: Endpoint, to: Endpoint, held: bool) -> Result<(), SimError> {
        self.net.pair(from, to)?;
        self.net.channels.entry((from, to)).or_default().held = held;
        Ok(())
    }

    /// Cuts node `node` off: every frame on its channels, both ways, is dropped, and
    /// so is every frame sent on them until it is [reconnected](Self::reconnect). The
    /// node and its peers go on as if nothing happened (the node counts what it sends;
    /// nobody is told), as behind a partition. News of a departure still gets
    /// through.
    pub fn cut_off(&mut self, node: NodeId) -> Result<(), SimError> {
        self.net.known(Endpoint::Node(node))?;
        self.net.cut.insert(node);
        let me = Endpoint::Node(node);
        self.net
            .drop_frames(|from, to| from == me || to == me, true);
        Ok(())
    }

    /// Ends a [cut](Self::cut_off): frames sent from now on travel again. The ones
    /// dropped are lost.
    pub fn reconnect(&mut self, node: NodeId) -> Result<(), SimError> {
        self.net.known(Endpoint::Node(node))?;
        self.net.cut.remove(&node);
        Ok(())
    }

    /// Whether node `node` is cut off.
    pub fn is_cut_off(&self, node: NodeId) -> bool {
        self.net.cut.contains(&node)
    }

    /// Kills node `node`, as a process that ends: it takes no more calls or
    /// deliveries; what it sent is still delivered, then each of its peers (every
    /// endpoint it has a channel with, either way, and the coordinator) is told that
    /// it departed ([`Kind::Departed`], [`Notice::Departed`]). What was on its way to
    /// it is lost, and so is what is sent to it, until the sender has been told; from
    /// then on a send to it fails ([`TransportError::Disconnected`]), as a transport
    /// reports it.
    pub fn kill(&mut self, node: NodeId) -> Result<(), SimError> {
        self.alive(node)?;
        let me = Endpoint::Node(node);
        self.net.dead.insert(node);
        self.net.drop_frames(|_, to| to == me, false);
        let peers: BTreeSet<Endpoint> = self
            .net
            .channels
            .keys()
            .filter_map(|&(from, to)| match (from == me, to == me) {
                (true, _) => Some(to),
                (_, true) => Some(from),
                _ => None,
            })
            .chain(self.net.coordinator)
            .collect();
        for peer in peers {
            let gone = matches!(peer, Endpoint::Node(id) if self.net.dead.contains(&id));
            if !gone {
                self.net.enqueue(me, peer, Item::Departed);
            }
        }
        Ok(())
    }

    /// Whether node `node` has been killed.
    pub fn is_dead(&self, node: NodeId) -> bool {
        self.net.dead.contains(&node)
    }

    // -----------------------------------------------------------------------------
    // Inside.
    // -----------------------------------------------------------------------------

    /// Refuses a node that is not in the simulation, or is dead.
    fn alive(&self, node: NodeId) -> Result<(), SimError> {
        if !self.nodes.contains_key(&node) {
            return Err(SimError::UnknownNode(node));
        }
        if self.net.dead.contains(&node) {
            return Err(SimError::Dead(node));
        }
        Ok(())
    }

    /// Hands `item`, taken from the channel `from -> to`, to `to`.
    fn hand_over(
        &mut self,
        from: Endpoint,
        to: Endpoint,
        item: Item<NodeFrame<P, C>>,
    ) -> Result<Delivery<C>, SimError> {
        let kind = Kind::of(&item);
        let incoming = match item {
            Item::Frame(frame) => Incoming::Frame(from, frame),
            Item::Departed => Incoming::Departed(from),
        };
        let turn = match to {
            Endpoint::Node(id) if self.nodes.contains_key(&id) => {
                self.turn(id, Some(incoming), Duration::ZERO)?
            }
            _ if self.net.coordinator == Some(to) => self.coordinator_turn(incoming)?,
            _ => return Err(SimError::NotDriven(to)),
        };
        Ok(Delivery {
            from,
            to,
            kind,
            started: turn.started,
            completed: turn.completed,
            assembled: turn.assembled,
            notice: turn.notice,
        })
    }

    /// One call of `poll_event` at node `id`: on `pending` only, or on whatever is
    /// ready for it.
    fn turn(
        &mut self,
        id: NodeId,
        pending: Option<Incoming<NodeFrame<P, C>>>,
        timeout: Duration,
    ) -> Result<Turn<C>, SimError> {
        let node = self.nodes.get_mut(&id).ok_or(SimError::UnknownNode(id))?;
        let before: BTreeSet<SnapshotId> = node.engine().in_flight().collect();
        let mut port = Port::new(Endpoint::Node(id), &mut self.net);
        port.any = pending.is_none();
        port.pending = pending;
        let polled = node.poll_event(&mut port, timeout);
        let reported = port.reported;
        let event = polled.map_err(|source| SimError::Node { node: id, source })?;
        let mut turn = Turn {
            completed: reported,
            ..Turn::new()
        };
        let mut local = None;
        match event {
            Some(Event::Completed(part)) => {
                turn.completed = Some(part.id);
                turn.handed_out = true;
                local = Some(part);
            }
            Some(Event::Control { from, control }) => {
                turn.notice = Some(Notice::Control { from, control })
            }
            Some(Event::Departed(peer)) => turn.notice = Some(Notice::Departed(peer)),
            Some(Event::Aborted(_)) | None => {}
        }
        turn.started = node
            .engine()
            .in_flight()
            .chain(turn.completed)
            .find(|id| !before.contains(id));
        if let Some(local) = local {
            turn.assembled = self.collect(local)?;
        }
        Ok(turn)
    }

    /// Collects a completed part that a node handed out: into the collector, or the
    /// coordinator's (a node with a coordinator sends its parts there itself).
    fn collect(
        &mut self,
        local: LocalSnapshot<P::State, P::Record>,
    ) -> Result<Option<SnapshotId>, SimError> {
        let global = match &mut self.sink {
            Sink::Collector(collector) => collector.add(local).map_err(SimError::Snapshot)?,
            Sink::Coordinator(coordinator) => {
                let from = Endpoint::Node(local.node);
                let report = Frame::Snapshot(Coordination::Report(Box::new(local)));
                match coordinator
                    .handle_at::<P::Message, C>(Incoming::Frame(from, report), self.now)
                    .map_err(SimError::Coordinator)?
                {
                    Some(CoordinatorEvent::Completed(taken)) => Some(taken.snapshot),
                    _ => None,
                }
            }
        };
        Ok(global.map(|global| {
            let id = global.id();
            self.completed.push(global);
            id
        }))
    }

    /// Hands `incoming` to the coordinator.
    fn coordinator_turn(
        &mut self,
        incoming: Incoming<NodeFrame<P, C>>,
    ) -> Result<Turn<C>, SimError> {
        let mut turn = Turn::new();
        let (Some(endpoint), Sink::Coordinator(coordinator)) =
            (self.net.coordinator, &mut self.sink)
        else {
            return Err(SimError::NoCoordinator);
        };
        if let Incoming::Departed(peer) = incoming {
            self.net.knows.insert((endpoint, peer));
        }
        match coordinator
            .handle_at(incoming, self.now)
            .map_err(SimError::Coordinator)?
        {
            Some(CoordinatorEvent::Started { node, id }) => {
                turn.notice = Some(Notice::Started { node, id })
            }
            Some(CoordinatorEvent::Completed(taken)) => {
                turn.assembled = Some(taken.snapshot.id());
                self.completed.push(taken.snapshot);
            }
            Some(CoordinatorEvent::Aborted(aborted)) => {
                turn.notice = Some(Notice::Aborted(aborted))
            }
            Some(CoordinatorEvent::Control { from, control }) => {
                turn.notice = Some(Notice::Control { from, control })
            }
            Some(CoordinatorEvent::Departed(peer)) => turn.notice = Some(Notice::Departed(peer)),
            None => {}
        }
        Ok(turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outbox;

    /// The endpoint of a coordinator, in one place (the `Endpoint` roles may change).
    const COORDINATOR: Endpoint = Endpoint::Role(0);
    /// The endpoint of a test harness that sends control frames.
    const CONTROL: Endpoint = Endpoint::Role(1);

    /// Tokens, each passed on a number of hops before it is kept; every token taken is
    /// logged with its sender, in order.
    struct Hops {
        peers: Vec<NodeId>,
        held: u64,
        log: Vec<(NodeId, u64)>,
    }

    impl Process for Hops {
        /// A token's tag and the hops it has left.
        type Message = (u64, u32);
        /// Tokens held.
        type State = u64;
        /// Tags of the tokens caught in transit.
        type Record = Vec<u64>;

        fn handle(&mut self, from: NodeId, (tag, hops): (u64, u32), out: &mut Outbox<(u64, u32)>) {
            self.log.push((from, tag));
            if hops == 0 || self.peers.is_empty() {
                self.held += 1;
            } else {
                let to = self.peers[(tag as usize + hops as usize) % self.peers.len()];
                out.send(to, (tag, hops - 1));
            }
        }
        fn capture(&self) -> u64 {
            self.held
        }
        fn record(&self, in_transit: &mut Vec<u64>, _from: NodeId, &(tag, _): &(u64, u32)) {
            in_transit.push(tag);
        }
    }

    /// Tokens each node holds at first.
    const HELD: u64 = 100;

    /// Node `from` passes a token of its own to `to`.
    fn give(sim: &mut Sim<Hops, &'static str>, from: NodeId, to: NodeId, token: (u64, u32)) {
        sim.process_mut(from).unwrap().held -= 1;
        sim.send(from, to, token).unwrap();
    }

    fn ids(n: u32) -> Vec<NodeId> {
        (1..=n).map(NodeId).collect()
    }

    fn hops_sim(seed: u64, topology: &Topology) -> Sim<Hops, &'static str> {
        Sim::new(seed, topology, |id| Hops {
            peers: topology.outgoing(id).collect(),
            held: HELD,
            log: Vec::new(),
        })
        .expect("a fresh simulation")
    }

    /// Every snapshot is a consistent cut that accounts for every token.
    fn check_all(sim: &Sim<Hops, &'static str>) {
        let tokens = HELD * sim.nodes().count() as u64;
        for global in sim.completed() {
            global.check_cut().expect("a consistent cut");
            let held: u64 = global.nodes().map(|l| l.state).sum();
            let in_transit: u64 = global
                .channels()
                .iter()
                .map(|(_, _, ch)| ch.record.len() as u64)
                .sum();
            assert_eq!(held + in_transit, tokens, "snapshot {}", global.id());
        }
    }

    /// A busy run: tokens sent from every node, snapshots started here and there.
    fn busy_run(sim: &mut Sim<Hops, &'static str>) -> Vec<Delivery<&'static str>> {
        let nodes: Vec<NodeId> = sim.topology().nodes().collect();
        let mut trace = Vec::new();
        let mut tag = 0;
        for round in 0..6 {
            for &from in &nodes {
                let to = sim.topology().outgoing(from).next().expect("a peer");
                give(sim, from, to, (tag, 5));
                tag += 1;
            }
            if round % 2 == 0 {
                sim.initiate(nodes[round % nodes.len()])
                    .expect("a live node");
            }
            trace.extend(sim.run(7).expect("a run"));
        }
        trace.extend(sim.run_until_quiet(10_000).expect("quiet in the end"));
        trace
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let topology = Topology::complete(ids(4));
        let run = |seed, order| {
            let mut sim = hops_sim(seed, &topology);
            sim.set_order(order);
            let trace = busy_run(&mut sim);
            check_all(&sim);
            assert_eq!(sim.completed().len(), 3);
            let logs: Vec<_> = sim.nodes().map(|n| n.process().log.clone()).collect();
            (trace, sim.take_completed(), logs)
        };
        for order in [
            Order::Random,
            Order::Arrival,
            Order::MarkersLast,
            Order::NewestFirst,
        ] {
            let first = run(42, order);
            assert_eq!(first, run(42, order), "{order:?}");
        }
        // The seed matters (for the orders that draw).
        let reference = run(42, Order::Random).0;
        assert!(
            (43..48).any(|seed| run(seed, Order::Random).0 != reference),
            "another seed, another schedule"
        );
    }

    #[test]
    fn every_channel_is_fifo_whatever_the_order() {
        let topology = Topology::complete(ids(3));
        for order in [
            Order::Random,
            Order::Arrival,
            Order::MarkersLast,
            Order::NewestFirst,
        ] {
            let mut sim = hops_sim(7, &topology);
            sim.set_order(order);
            // Tags rise on every channel, with snapshots in between.
            let mut tag = 0;
            for round in 0..20 {
                for (from, to) in topology.links().collect::<Vec<_>>() {
                    give(&mut sim, from, to, (tag, 0));
                    tag += 1;
                }
                if round % 5 == 0 {
                    sim.initiate(NodeId(round % 3 + 1)).unwrap();
                }
                sim.run(4).unwrap();
            }
            sim.run_until_quiet(10_000).unwrap();
            for node in sim.nodes() {
                for from in topology.incoming(node.id()) {
                    let tags: Vec<u64> = node
                        .process()
                        .log
                        .iter()
                        .filter(|(sender, _)| *sender == from)
                        .map(|&(_, tag)| tag)
                        .collect();
                    assert_eq!(tags.len(), 20);
                    assert!(tags.is_sorted(), "{order:?}: {from} -> {}", node.id());
                }
            }
            assert_eq!(sim.completed().len(), 4, "{order:?}");
            check_all(&sim);
        }
    }

    #[test]
    fn markers_last_delivers_every_message_it_can_before_a_marker() {
        let topology = Topology::complete(ids(3));
        let mut sim = hops_sim(3, &topology);
        sim.set_order(Order::MarkersLast);
        for (from, to) in topology.links().collect::<Vec<_>>() {
            for tag in 0..4 {
                give(&mut sim, from, to, (tag, 0));
            }
        }
        let id = sim.initiate(NodeId(2)).unwrap();
        let trace = sim.run_until_quiet(1_000).unwrap();
        let first_marker = trace
            .iter()
            .position(|d| matches!(d.kind, Kind::Marker(_)))
            .unwrap();
        assert_eq!(first_marker, 24, "all 24 messages first");
        assert!(
            trace[first_marker..]
                .iter()
                .all(|d| d.kind == Kind::Marker(id))
        );
        // So the channels into the initiator caught everything.
        let global = &sim.completed()[0];
        for from in [NodeId(1), NodeId(3)] {
            assert_eq!(global.node(NodeId(2)).unwrap().channels[&from].messages, 4);
        }
        check_all(&sim);
    }

    #[test]
    fn a_held_channel_waits_for_its_release() {
        let topology = Topology::complete(ids(3));
        let mut sim = hops_sim(9, &topology);
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        sim.hold(a, b).unwrap();
        assert!(sim.is_held(a, b));
        for tag in 0..3 {
            give(&mut sim, a, b, (tag, 0));
            give(&mut sim, c, b, (10 + tag, 0));
        }
        let id = sim.initiate(a).unwrap();
        sim.run_until_quiet(100).unwrap();
        assert!(sim.is_quiet());
        assert_eq!(
            sim.len(a, b),
            4,
            "the messages wait, the marker behind them"
        );
        assert!(matches!(
            sim.frames(a, b).last(),
            Some(Frame::Peer(Envelope::Marker(m))) if *m == id
        ));
        assert!(matches!(sim.deliver(a, b), Err(SimError::Held { .. })));
        assert_eq!(sim.poll(b, Duration::ZERO).unwrap(), None);
        assert_eq!(sim.len(a, b), 4, "a poll leaves it too");
        assert!(sim.completed().is_empty(), "b waits for a's marker");
        let taken: Vec<u64> = sim.process(b).unwrap().log.iter().map(|e| e.1).collect();
        assert_eq!(taken, [10, 11, 12]);

        sim.release(a, b).unwrap();
        let first = sim.deliver(a, b).unwrap();
        assert_eq!((first.kind, first.started), (Kind::Message, None));
        sim.run_until_quiet(100).unwrap();
        let taken: Vec<u64> = sim.process(b).unwrap().log.iter().map(|e| e.1).collect();
        assert_eq!(taken, [10, 11, 12, 0, 1, 2]);
        // b recorded when c's marker came, so a's three messages were caught.
        let global = &sim.completed()[0];
        assert_eq!(global.node(b).unwrap().channels[&a].record, [0, 1, 2]);
        check_all(&sim);
    }

    #[test]
    fn a_killed_node_departs_after_what_it_sent() {
        let topology = Topology::complete(ids(3));
        let mut sim = hops_sim(5, &topology);
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        sim.send(a, b, (1, 0)).unwrap();
        sim.send(a, b, (2, 0)).unwrap();
        sim.send(b, a, (3, 0)).unwrap();
        sim.kill(a).unwrap();
        assert!(sim.is_dead(a));
        assert_eq!(sim.len(b, a), 0, "what was on its way to it is lost");
        assert_eq!(sim.dropped(), 1);
        assert!(matches!(sim.send(a, b, (9, 0)), Err(SimError::Dead(_))));
        assert!(matches!(sim.initiate(a), Err(SimError::Dead(_))));
        assert!(matches!(sim.kill(a), Err(SimError::Dead(_))));

        // b: both messages, then the departure.
        assert_eq!(sim.deliver(a, b).unwrap().kind, Kind::Message);
        // Before b is told, what it sends to a is lost without a word.
        sim.send(b, a, (4, 0)).unwrap();
        assert_eq!(sim.dropped(), 2);
        assert_eq!(sim.deliver(a, b).unwrap().kind, Kind::Message);
        let departed = sim.deliver(a, b).unwrap();
        assert_eq!(departed.kind, Kind::Departed);
        assert_eq!(departed.notice, Some(Notice::Departed(Endpoint::Node(a))));
        assert!(matches!(
            sim.deliver(a, b),
            Err(SimError::NoFrame { index: 0, .. })
        ));
        // Once told, a send to it fails, as a transport's would.
        assert!(matches!(
            sim.send(b, a, (5, 0)),
            Err(SimError::Node {
                source: NodeError::Transport(TransportError::Disconnected(_)),
                ..
            })
        ));
        // c hears of it too.
        let trace = sim.run_until_quiet(10).unwrap();
        assert_eq!(trace.len(), 1);
        assert_eq!(
            (trace[0].from, trace[0].to),
            (Endpoint::Node(a), Endpoint::Node(c))
        );
        assert_eq!(trace[0].notice, Some(Notice::Departed(Endpoint::Node(a))));
        assert!(matches!(
            sim.deliver(b, a),
            Err(SimError::Dead(node)) if node == a
        ));
    }

    #[test]
    fn a_cut_off_node_loses_everything_until_reconnected() {
        let topology = Topology::complete(ids(2));
        let mut sim = hops_sim(1, &topology);
        let (a, b) = (NodeId(1), NodeId(2));
        sim.send(a, b, (1, 0)).unwrap();
        sim.send(b, a, (2, 0)).unwrap();
        sim.cut_off(a).unwrap();
        assert!(sim.is_cut_off(a));
        assert_eq!(sim.in_transit(), 0);
        sim.send(a, b, (3, 0)).unwrap();
        sim.send(b, a, (4, 0)).unwrap();
        assert_eq!((sim.in_transit(), sim.dropped()), (0, 4));
        // The nodes counted what they sent: a snapshot now would not add up.
        sim.reconnect(a).unwrap();
        sim.send(a, b, (5, 0)).unwrap();
        sim.run_until_quiet(10).unwrap();
        assert_eq!(sim.process(b).unwrap().log, [(a, 5)]);
        assert_eq!(sim.process(a).unwrap().log, []);
    }

    #[test]
    fn a_coordinator_starts_and_assembles_snapshots() {
        let topology = Topology::ring(ids(4));
        let mut sim = hops_sim(11, &topology);
        sim.add_coordinator(COORDINATOR).unwrap();
        assert_eq!(sim.coordinator(), Some(COORDINATOR));
        for from in ids(4) {
            let to = topology.outgoing(from).next().unwrap();
            give(&mut sim, from, to, (u64::from(from.0), 3));
        }
        sim.request_snapshot(NodeId(3)).unwrap();
        sim.request_snapshot(NodeId(1)).unwrap();
        assert_eq!(sim.in_flight(), 2);
        let trace = sim.run_until_quiet(1_000).unwrap();
        let started: Vec<_> = trace
            .iter()
            .filter_map(|d| match &d.notice {
                Some(Notice::Started { node, id }) => Some((*node, *id)),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 2);
        let reports = trace
            .iter()
            .filter(|d| matches!(d.kind, Kind::Report { .. }))
            .count();
        assert_eq!(reports, 8, "four parts of each, to the coordinator");
        assert_eq!(sim.completed().len(), 2);
        assert_eq!(sim.in_flight(), 0);
        let mut assembled: Vec<_> = sim.completed().iter().map(|g| g.id()).collect();
        assembled.sort();
        let mut ids: Vec<_> = started.iter().map(|&(_, id)| id).collect();
        ids.sort();
        assert_eq!(assembled, ids);
        check_all(&sim);

        assert!(matches!(
            sim.add_coordinator(CONTROL),
            Err(SimError::CoordinatorExists(COORDINATOR))
        ));
        assert!(matches!(
            sim.request_snapshot(NodeId(9)),
            Err(SimError::Coordinator(CoordinatorError::UnknownNode(_)))
        ));
    }

    #[test]
    fn control_frames_reach_the_application_and_frames_to_others_wait() {
        let topology = Topology::complete(ids(2));
        let mut sim = hops_sim(1, &topology);
        sim.send_control(CONTROL, NodeId(1), "hello").unwrap();
        let delivery = sim.deliver(CONTROL, NodeId(1)).unwrap();
        assert_eq!(delivery.kind, Kind::Control);
        assert_eq!(
            delivery.notice,
            Some(Notice::Control {
                from: CONTROL,
                control: "hello"
            })
        );
        // A request from an endpoint the simulation does not drive: the node answers
        // there, and the test takes the answer.
        sim.inject(CONTROL, NodeId(2), Frame::Snapshot(Coordination::Initiate))
            .unwrap();
        let delivery = sim.deliver(CONTROL, NodeId(2)).unwrap();
        let id = delivery.started.unwrap();
        assert!(matches!(
            sim.deliver(NodeId(2), CONTROL),
            Err(SimError::NotDriven(_))
        ));
        assert!(matches!(
            sim.take(NodeId(2), CONTROL).unwrap(),
            Some(Incoming::Frame(_, Frame::Snapshot(Coordination::Started(s)))) if s == id
        ));
        sim.run_until_quiet(10).unwrap();
        assert!(matches!(
            sim.take(NodeId(2), CONTROL).unwrap(),
            Some(Incoming::Frame(_, Frame::Snapshot(Coordination::Report(_))))
        ));
        assert!(sim.completed().is_empty(), "node 2 reported elsewhere");
    }

    #[test]
    fn refusals_are_errors() {
        let topology = Topology::ring(ids(3));
        let mut sim = hops_sim(1, &topology);
        let (a, b, stranger) = (NodeId(1), NodeId(2), NodeId(9));
        assert!(matches!(
            sim.send(stranger, a, (0, 0)),
            Err(SimError::UnknownNode(_))
        ));
        assert!(matches!(sim.node(stranger), Err(SimError::UnknownNode(_))));
        assert!(matches!(sim.kill(stranger), Err(SimError::UnknownNode(_))));
        assert!(matches!(
            sim.cut_off(stranger),
            Err(SimError::UnknownNode(_))
        ));
        assert!(matches!(
            sim.deliver(a, stranger),
            Err(SimError::UnknownNode(_))
        ));
        assert!(matches!(sim.hold(a, a), Err(SimError::SelfChannel(_))));
        // No channel 2 -> 1 on this ring.
        assert!(matches!(
            sim.send(b, a, (0, 0)),
            Err(SimError::Node {
                source: NodeError::Engine(crate::EngineError::UnknownChannel { .. }),
                ..
            })
        ));
        assert!(matches!(
            sim.deliver(a, b),
            Err(SimError::NoFrame { index: 0, .. })
        ));
        sim.send(a, b, (0, 0)).unwrap();
        assert!(matches!(
            sim.deliver_nth(a, b, 1),
            Err(SimError::NoFrame { index: 1, .. })
        ));
        assert!(matches!(
            sim.request_snapshot(a),
            Err(SimError::NoCoordinator)
        ));
        assert!(matches!(
            sim.add_coordinator(Endpoint::Node(a)),
            Err(SimError::EndpointTaken(_))
        ));
        sim.initiate(a).unwrap();
        assert!(matches!(
            sim.add_coordinator(COORDINATOR),
            Err(SimError::SnapshotsInFlight(1))
        ));
        assert!(matches!(sim.link(b, a), Err(SimError::Node { .. })));
        assert!(matches!(sim.run_until_quiet(1), Err(SimError::NotQuiet(1))));
        sim.run_until_quiet(100).unwrap();
        sim.link(b, a).unwrap();
        sim.send(b, a, (1, 0)).unwrap();
        // Node-to-node traffic from a non-node is the node's protocol error.
        sim.inject(CONTROL, a, Frame::Peer(Envelope::App((0, 0))))
            .unwrap();
        assert!(matches!(
            sim.deliver(CONTROL, a),
            Err(SimError::Node {
                source: NodeError::Transport(TransportError::Protocol(_)),
                ..
            })
        ));
    }

    #[test]
    fn ready_made_nodes_must_have_the_ids_they_are_made_for() {
        let topology = Topology::ring(ids(2));
        let node = |id: NodeId| {
            Node::new(
                id,
                Hops {
                    peers: topology.outgoing(id).collect(),
                    held: HELD,
                    log: Vec::new(),
                },
            )
        };
        let sim = Sim::<Hops>::with_nodes(1, &topology, node).unwrap();
        assert_eq!(sim.nodes().map(Node::id).collect::<Vec<_>>(), ids(2));
        let wrong = Sim::<Hops>::with_nodes(1, &topology, |_| node(NodeId(7)));
        let Err(SimError::WrongNode { expected, found }) = wrong else {
            panic!("a node with another id is refused");
        };
        assert_eq!((expected, found), (NodeId(1), NodeId(7)));
    }

    #[test]
    fn deliver_nth_lets_a_marker_overtake_and_the_cut_shows_it() {
        let topology = Topology::complete(ids(2));
        let mut sim = hops_sim(1, &topology);
        let (a, b) = (NodeId(1), NodeId(2));
        sim.send(a, b, (1, 0)).unwrap();
        sim.initiate(a).unwrap();
        let overtaking = sim.deliver_nth(a, b, 1).unwrap();
        assert!(matches!(overtaking.kind, Kind::Marker(_)));
        sim.run_until_quiet(10).unwrap();
        // The message was sent before a recorded and taken after b recorded, yet
        // nobody recorded it in transit.
        assert!(sim.completed()[0].check_cut().is_err());
    }
}
