//! A driver that joins a [`Process`], its [`SnapshotEngine`] and a [`Transport`].

use crate::{
    Action, Coordination, Endpoint, EngineError, Envelope, Frame, Incoming, LocalSnapshot, NodeId,
    Outbox, Process, SnapshotEngine, SnapshotId, Transport, TransportError,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use thiserror::Error;

#[cfg(feature = "async")]
mod asynchronous;

/// Why a [`Node`] could not carry out a step.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The protocol engine refused the input.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// What one step of a [`Node`] did to snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<S, R> {
    /// The snapshot this node recorded its state for in this step (markers went out
    /// on every outgoing channel).
    pub started: Option<SnapshotId>,
    /// The nodes this step sent a marker to, in the order it sent them: a marker is
    /// on its way on each of these channels. A peer that has departed gets none and
    /// is not listed.
    pub markers: Vec<NodeId>,
    /// This node's part of a snapshot, if this step completed it.
    pub completed: Option<LocalSnapshot<S, R>>,
}

impl<S, R> Default for Outcome<S, R> {
    fn default() -> Self {
        Outcome {
            started: None,
            markers: Vec::new(),
            completed: None,
        }
    }
}

/// What a free-running node hands to its application (see [`Node::next_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<S, R, C> {
    /// A control frame, from any endpoint.
    Control {
        /// Who sent it.
        from: Endpoint,
        /// What it says.
        control: C,
    },
    /// This node's part of a snapshot is complete. A node with a
    /// [coordinator](Node::report_to) sends it there instead.
    Completed(LocalSnapshot<S, R>),
    /// A peer has gone (see [`Incoming::Departed`]). A node whose peer departs can
    /// finish no snapshot that needs a marker from it.
    Departed(Endpoint),
    /// The coordinator aborted this snapshot: the node has dropped what it recorded
    /// of it, and will ignore its late markers.
    Aborted(SnapshotId),
}

/// The frames a node's transport carries, for a process `P` and control traffic `C`.
pub type NodeFrame<P, C = ()> =
    Frame<<P as Process>::Message, <P as Process>::State, <P as Process>::Record, C>;

/// What a free-running node of process `P` with control traffic `C` hands to its
/// application.
pub type NodeEvent<P, C = ()> = Event<<P as Process>::State, <P as Process>::Record, C>;

/// The local snapshots a node's process produces.
pub type NodeSnapshot<P> = LocalSnapshot<<P as Process>::State, <P as Process>::Record>;

/// One node: the application process, its snapshot engine, and the node-to-node
/// messages that have arrived but are not handled yet.
///
/// The node does the bookkeeping that is easy to get wrong by hand: every application
/// message it sends is counted by the engine before it leaves, every message it handles
/// is recorded by the engine, and markers go out exactly when the engine says.
///
/// Two ways of delivering node-to-node traffic are supported:
///
/// - as it arrives: let [`next_event`](Self::next_event) receive and handle it
///   (or [`poll_event`](Self::poll_event), for a node with work of its own between
///   events), or pass each [`Envelope`] to [`deliver`](Self::deliver) yourself;
/// - on command (to simulate delay and reordering, as a test harness or the bank
///   does): [`hold`](Self::hold) it, and later [`take_held`](Self::take_held) and
///   [`deliver`](Self::deliver) the head of a chosen channel.
///
/// With the `async` feature, the methods that use a transport have twins over an
/// `AsyncTransport` (`send_async`, `initiate_async`, `deliver_async`,
/// `next_event_async`), so that an application on an asynchronous runtime runs its
/// nodes as tasks, without a thread each. They do the same steps, in the same order.
pub struct Node<P: Process> {
    process: P,
    engine: SnapshotEngine<P>,
    held: BTreeMap<NodeId, VecDeque<Envelope<P::Message>>>,
    outbox: Outbox<P::Message>,
    /// Where this node's parts of snapshots go, if a coordinator collects them.
    coordinator: Option<Endpoint>,
}

impl<P: Process> std::fmt::Debug for Node<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: BTreeMap<_, _> = self.held.iter().map(|(from, q)| (from, q.len())).collect();
        f.debug_struct("Node")
            .field("engine", &self.engine)
            .field("held", &held)
            .finish_non_exhaustive()
    }
}

impl<P: Process> Node<P> {
    /// How many frames [`poll_event`](Self::poll_event) handles at most once it has
    /// seen its timeout pass.
    pub const POLL_BURST: usize = 256;

    /// How many frames [`poll_event`](Self::poll_event) handles in a row, while
    /// frames keep coming, between two looks at the clock.
    pub const CLOCK_EVERY: usize = 32;

    /// A node running `process` on `engine`: for an engine made with other limits or
    /// an epoch (see [`SnapshotEngine::with_epoch`], for a node that restarts).
    pub fn with_engine(engine: SnapshotEngine<P>, process: P) -> Self {
        let mut node = Node::new(engine.node(), process);
        node.engine = engine;
        node
    }

    /// Node `id` running `process`, with no channels yet.
    pub fn new(id: NodeId, process: P) -> Self {
        Node {
            process,
            engine: SnapshotEngine::new(id),
            held: BTreeMap::new(),
            outbox: Outbox::default(),
            coordinator: None,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.engine.node()
    }

    /// The application process.
    pub fn process(&self) -> &P {
        &self.process
    }

    /// The application process, for changes that are local events (such as a
    /// withdrawal commanded from outside). Messages must be sent with
    /// [`send`](Self::send), never around the node.
    pub fn process_mut(&mut self) -> &mut P {
        &mut self.process
    }

    /// The snapshot engine, to inspect its channels and snapshots in flight.
    pub fn engine(&self) -> &SnapshotEngine<P> {
        &self.engine
    }

    /// Sends this node's parts of snapshots to `coordinator` (a
    /// [`Coordinator`](crate::Coordinator)'s endpoint) as they complete, rather than
    /// handing them to the application as [`Event::Completed`]. A node asked to
    /// initiate by a coordinator reports to it from then on, if it had no coordinator.
    pub fn report_to(&mut self, coordinator: Endpoint) {
        self.coordinator = Some(coordinator);
    }

    /// Where this node's parts of snapshots go, if a coordinator collects them.
    pub fn coordinator(&self) -> Option<Endpoint> {
        self.coordinator
    }

    /// Adds both channels between this node and `peer`: `self -> peer` and
    /// `peer -> self`. For a one-way link, use [`add_incoming`](Self::add_incoming)
    /// and [`add_outgoing`](Self::add_outgoing), or [`crate::topology`].
    ///
    /// A snapshot completes only if the markers reach every node and every node
    /// receives a marker on each of its incoming channels: the graph of channels must
    /// be strongly connected, and each end of a channel must know it (an outgoing
    /// channel here is an incoming one at the peer).
    pub fn add_peer(&mut self, peer: NodeId) -> Result<(), EngineError> {
        self.engine.add_incoming(peer)?;
        self.engine.add_outgoing(peer)
    }

    /// Adds the incoming channel `from -> self`: this node takes messages, and a
    /// marker, from `from`. The node `from` adds the same channel as its outgoing one.
    pub fn add_incoming(&mut self, from: NodeId) -> Result<(), EngineError> {
        self.engine.add_incoming(from)
    }

    /// Adds the outgoing channel `self -> to`: this node sends messages, and a marker,
    /// to `to`. The node `to` adds the same channel as its incoming one.
    pub fn add_outgoing(&mut self, to: NodeId) -> Result<(), EngineError> {
        self.engine.add_outgoing(to)
    }

    /// Sends the application message `message` on the channel `self -> to`.
    pub fn send<C, T>(
        &mut self,
        transport: &mut T,
        to: NodeId,
        message: P::Message,
    ) -> Result<(), NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        // A channel this node does not have is refused before the transport is given
        // the message, which is counted only once the transport has accepted it: a
        // message the transport refuses is not counted as sent.
        let channel = self.engine.outgoing_channel(to)?;
        transport.send(Endpoint::Node(to), Frame::Peer(Envelope::App(message)))?;
        self.engine.count_sent(channel);
        Ok(())
    }

    /// Starts a new snapshot at this node. Returns its id, and what the step did: the
    /// channels a marker went out on, and this node's part of the snapshot if that is
    /// already complete (a node with no incoming channel) and it has no
    /// [coordinator](Self::report_to) to send it to.
    pub fn initiate<C, T>(
        &mut self,
        transport: &mut T,
    ) -> Result<(SnapshotId, NodeOutcome<P>), NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        let (id, step) = self.start_snapshot()?;
        let outcome = self.carry_out(transport, step, None)?;
        Ok((id, outcome))
    }

    /// Keeps `envelope`, arrived on the channel `from -> self`, until it is taken with
    /// [`take_held`](Self::take_held).
    pub fn hold(&mut self, from: NodeId, envelope: Envelope<P::Message>) {
        self.held.entry(from).or_default().push_back(envelope);
    }

    /// Takes the oldest held envelope of the channel `from -> self`.
    pub fn take_held(&mut self, from: NodeId) -> Option<Envelope<P::Message>> {
        let queue = self.held.get_mut(&from)?;
        let envelope = queue.pop_front();
        if queue.is_empty() {
            self.held.remove(&from);
        }
        envelope
    }

    /// How many envelopes are held for the channel `from -> self`.
    pub fn held(&self, from: NodeId) -> usize {
        self.held.get(&from).map_or(0, VecDeque::len)
    }

    /// Handles `envelope`, taken from the channel `from -> self`: an application
    /// message goes through the engine (counted, recorded) to the process, whose
    /// replies are sent; a marker goes to the engine, whose markers are sent.
    pub fn deliver<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        envelope: Envelope<P::Message>,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        match envelope {
            Envelope::App(message) => self
                .deliver_message(transport, from, message)
                .map(|()| Outcome::default()),
            Envelope::Marker(id) => self.deliver_marker(transport, from, id, false),
        }
    }

    /// An application message from `from`: counted and recorded by the engine,
    /// handled by the process, whose replies are sent.
    #[inline]
    fn deliver_message<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        message: P::Message,
    ) -> Result<(), NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        self.take_message(from, message)?;
        if self.outbox.is_empty() {
            return Ok(());
        }
        self.send_outbox(transport)
    }

    /// Sends the replies the process left in the outbox, in order.
    #[inline(never)]
    fn send_outbox<C, T>(&mut self, transport: &mut T) -> Result<(), NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        let mut outbox = std::mem::take(&mut self.outbox);
        let sent = outbox
            .drain()
            .try_for_each(|(to, reply)| self.send(transport, to, reply));
        self.outbox = outbox;
        sent
    }

    /// A marker from `from`: to the engine, whose markers are sent. With `spread`,
    /// the marker back to `from` goes last, after the others are flushed (see
    /// [`marker_back`]).
    fn deliver_marker<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        id: SnapshotId,
        spread: bool,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        let step = self.take_marker(from, id)?;
        self.carry_out(transport, step, spread.then_some(from))
    }

    /// Runs the node free: receives frames and handles node-to-node traffic as it
    /// arrives, until something needs the application: a control frame, the
    /// completion of this node's part of a snapshot, or a peer's departure.
    ///
    /// A marker that has the node record its state sends the snapshot on to the
    /// other peers first, flushed, and then the marker back to the peer it came from,
    /// which has recorded its state already: each hop of a snapshot's wave then waits
    /// for one write, not two (so does [`poll_event`](Self::poll_event)).
    ///
    /// A node-to-node frame from an endpoint that is not a node is refused as a
    /// protocol error, and so is anything the engine refuses.
    pub fn next_event<C, T>(&mut self, transport: &mut T) -> Result<NodeEvent<P, C>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        loop {
            let received = transport.recv()?;
            if let Some(event) = self.on_frame(transport, received)? {
                return Ok(event);
            }
        }
    }

    /// Like [`next_event`](Self::next_event), for a node that has work of its own
    /// between events (sending as fast as it can, say): handles what arrives for up
    /// to `timeout`, and returns `Ok(None)` if nothing needed the application by then.
    ///
    /// With a zero timeout it handles what has already arrived and returns. So that a
    /// stream that never pauses cannot keep it, it handles at most
    /// [`POLL_BURST`](Self::POLL_BURST) frames once it has seen `timeout` pass; it
    /// looks at the clock when nothing is left to take and every
    /// [`CLOCK_EVERY`](Self::CLOCK_EVERY) frames, not for every frame. Frames are
    /// taken with [`recv_timeout`](Transport::recv_timeout)`(Duration::ZERO)` while
    /// there are some, and waited for with the time left only when there are none.
    ///
    /// ```
    /// use snapshot_core::{Endpoint, Event, Frame, Node, NodeId, Outbox, Process, Transport};
    /// use std::collections::VecDeque;
    /// use std::time::Duration;
    ///
    /// /// Counts what it is given.
    /// struct Counter(u64);
    /// impl Process for Counter {
    ///     type Message = u64;
    ///     type State = u64;
    ///     type Record = u64;
    ///     fn handle(&mut self, _: NodeId, n: u64, _: &mut Outbox<u64>) {
    ///         self.0 += n;
    ///     }
    ///     fn capture(&self) -> u64 {
    ///         self.0
    ///     }
    ///     fn record(&self, in_transit: &mut u64, _: NodeId, n: &u64) {
    ///         *in_transit += n;
    ///     }
    /// }
    ///
    /// /// Frames that have already arrived, and nowhere to send to.
    /// struct Arrived(VecDeque<(Endpoint, Frame<u64, u64, u64, &'static str>)>);
    /// # use snapshot_core::{Incoming, TransportError};
    /// # impl Transport<Frame<u64, u64, u64, &'static str>> for Arrived {
    /// #     fn local(&self) -> Endpoint { Endpoint::Node(NodeId(2)) }
    /// #     fn address(&self) -> String { String::new() }
    /// #     fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> { Ok(()) }
    /// #     fn send(&mut self, to: Endpoint, _: Frame<u64, u64, u64, &'static str>)
    /// #         -> Result<(), TransportError> {
    /// #         Err(TransportError::UnknownEndpoint(to))
    /// #     }
    /// #     fn flush(&mut self) -> Result<(), TransportError> { Ok(()) }
    /// #     fn recv(&mut self) -> Result<Incoming<Frame<u64, u64, u64, &'static str>>, TransportError> {
    /// #         self.recv_timeout(Duration::ZERO)?.ok_or(TransportError::Closed)
    /// #     }
    /// #     fn recv_timeout(&mut self, _: Duration)
    /// #         -> Result<Option<Incoming<Frame<u64, u64, u64, &'static str>>>, TransportError> {
    /// #         Ok(self.0.pop_front().map(|(from, frame)| Incoming::Frame(from, frame)))
    /// #     }
    /// # }
    ///
    /// let mut node = Node::new(NodeId(2), Counter(0));
    /// node.add_peer(NodeId(1))?;
    /// let peer = Endpoint::Node(NodeId(1));
    /// let mut transport = Arrived(VecDeque::from([
    ///     (peer, Frame::Peer(snapshot_core::Envelope::App(5))),
    ///     (Endpoint::Role(1), Frame::Control("report")),
    ///     (peer, Frame::Peer(snapshot_core::Envelope::App(7))),
    /// ]));
    /// // The transfer before the control frame is handled on the way to it...
    /// let event = node.poll_event(&mut transport, Duration::ZERO)?;
    /// assert_eq!(event, Some(Event::Control { from: Endpoint::Role(1), control: "report" }));
    /// assert_eq!(node.process().0, 5);
    /// // ...and the next poll handles the rest; nothing else needs the application.
    /// assert_eq!(node.poll_event(&mut transport, Duration::ZERO)?, None);
    /// assert_eq!(node.process().0, 12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll_event<C, T>(
        &mut self,
        transport: &mut T,
        timeout: Duration,
    ) -> Result<Option<NodeEvent<P, C>>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        // A timeout too long to represent is no timeout.
        let deadline = Instant::now().checked_add(timeout);
        // Frames handled since the deadline was seen to pass, once it has been.
        let mut late = timeout.is_zero().then_some(0);
        // Frames handled since the clock was last read.
        let mut unclocked = 0;
        loop {
            // What has already arrived is taken without a look at the clock.
            let received = match transport.recv_timeout(Duration::ZERO)? {
                Some(received) => received,
                None => {
                    let left = deadline.map_or(Duration::MAX, |d| {
                        d.saturating_duration_since(Instant::now())
                    });
                    if left.is_zero() {
                        return Ok(None);
                    }
                    unclocked = 0;
                    match transport.recv_timeout(left)? {
                        Some(received) => received,
                        None => return Ok(None),
                    }
                }
            };
            // Most frames are application messages from nodes: handled here, without
            // going through `on_frame` and its event.
            match received {
                Incoming::Frame(Endpoint::Node(from), Frame::Peer(Envelope::App(message))) => {
                    self.deliver_message(transport, from, message)?;
                }
                received => {
                    if let Some(event) = self.on_frame(transport, received)? {
                        return Ok(Some(event));
                    }
                }
            }
            match late.as_mut() {
                Some(late) => {
                    *late += 1;
                    if *late >= Self::POLL_BURST {
                        return Ok(None);
                    }
                }
                None => {
                    unclocked += 1;
                    if unclocked == Self::CLOCK_EVERY {
                        unclocked = 0;
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            late = Some(0);
                        }
                    }
                }
            }
        }
    }

    /// Handles one received frame; returns what needs the application, if anything.
    fn on_frame<C, T>(
        &mut self,
        transport: &mut T,
        incoming: Incoming<NodeFrame<P, C>>,
    ) -> Result<Option<NodeEvent<P, C>>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        // Most frames are application messages from nodes: handled without sorting.
        let incoming = match incoming {
            Incoming::Frame(Endpoint::Node(from), Frame::Peer(Envelope::App(message))) => {
                self.deliver_message(transport, from, message)?;
                return Ok(None);
            }
            incoming => incoming,
        };
        match Self::sort(incoming)? {
            Arrival::Message(from, message) => {
                self.deliver_message(transport, from, message)?;
                Ok(None)
            }
            Arrival::Marker(from, id) => Ok(self
                .deliver_marker(transport, from, id, true)?
                .completed
                .map(Event::Completed)),
            Arrival::Initiate(from) => {
                let step = self.initiated_by(from)?;
                Ok(self
                    .carry_out(transport, step, None)?
                    .completed
                    .map(Event::Completed))
            }
            Arrival::Abort(from, id) => {
                let (to, frame) = self.abort(from, id);
                transport.send(to, frame)?;
                Ok(Some(Event::Aborted(id)))
            }
            Arrival::Event(event) => Ok(Some(event)),
        }
    }

    /// Sends the frames of `step`, in order (markers, then what goes to the
    /// coordinator); returns its outcome. The marker back to `back`, if any, goes
    /// last, once the others are flushed.
    fn carry_out<C, T>(
        &self,
        transport: &mut T,
        step: Step<P>,
        back: Option<NodeId>,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        let (mut frames, mut outcome) = self.frames(step);
        let last = back.and_then(|from| marker_back(&mut frames, from));
        let flush_first = last.is_some() && !frames.is_empty();
        for (to, frame) in frames {
            send_step_frame(transport, to, frame, &mut outcome.markers)?;
        }
        if let Some((to, frame)) = last {
            if flush_first {
                transport.flush()?;
            }
            send_step_frame(transport, to, frame, &mut outcome.markers)?;
        }
        Ok(outcome)
    }
}

// The steps both drivers share, the sync one above and the async one (feature
// `async`): everything but the calls to the transport.

/// What the engine's answer to one input has the driver do: send these markers, in
/// order, tell the coordinator that the snapshot it asked for has started, and report
/// this outcome.
struct Step<P: Process> {
    markers: Vec<(NodeId, SnapshotId)>,
    started_for: Option<Endpoint>,
    outcome: Outcome<P::State, P::Record>,
}

impl<P: Process> Step<P> {
    fn new(actions: Vec<Action<P::State, P::Record>>) -> Self {
        let mut step = Step {
            markers: Vec::new(),
            started_for: None,
            outcome: Outcome::default(),
        };
        for action in actions {
            match action {
                Action::Recorded { id } => step.outcome.started = Some(id),
                Action::SendMarker { to, id } => step.markers.push((to, id)),
                Action::Complete(local) => step.outcome.completed = Some(local),
            }
        }
        step
    }
}

/// A frame to send, and where.
type Addressed<P, C> = (Endpoint, NodeFrame<P, C>);

/// A frame and where it goes, for any frame type.
type Sent<M, S, R, C> = (Endpoint, Frame<M, S, R, C>);

/// Sends one frame of a step; a marker sent is added to `markers`. A peer that has
/// gone needs no marker; the others still do.
fn send_step_frame<M, S, R, C, T>(
    transport: &mut T,
    to: Endpoint,
    frame: Frame<M, S, R, C>,
    markers: &mut Vec<NodeId>,
) -> Result<(), NodeError>
where
    T: Transport<Frame<M, S, R, C>> + ?Sized,
{
    let marker = marker_to(to, &frame);
    match transport.send(to, frame) {
        Err(TransportError::Disconnected(_)) => Ok(()),
        sent => {
            sent?;
            markers.extend(marker);
            Ok(())
        }
    }
}

/// Takes the marker to `from` out of `frames`, for a node running free to send it
/// after the others, flushed: `from` has recorded its state already, while the
/// peers the other markers go to may not have. Sent first, as a transport flushes
/// the peer heard from last first (for request and reply), it would cost each hop of
/// a snapshot's wave a write before the one that carries the wave on.
fn marker_back<M, S, R, C>(
    frames: &mut Vec<Sent<M, S, R, C>>,
    from: NodeId,
) -> Option<Sent<M, S, R, C>> {
    let at = frames
        .iter()
        .position(|(to, frame)| marker_to(*to, frame) == Some(from))?;
    Some(frames.remove(at))
}

/// The node a frame carries a marker to, if it is a marker.
fn marker_to<M, S, R, C>(to: Endpoint, frame: &Frame<M, S, R, C>) -> Option<NodeId> {
    match (to, frame) {
        (Endpoint::Node(to), Frame::Peer(Envelope::Marker(_))) => Some(to),
        _ => None,
    }
}

/// What a step of a node of process `P` did to snapshots.
type NodeOutcome<P> = Outcome<<P as Process>::State, <P as Process>::Record>;

/// A received frame or departure, by what the node does with it.
enum Arrival<P: Process, C> {
    /// An application message on the channel from that node.
    Message(NodeId, P::Message),
    /// A marker on the channel from that node.
    Marker(NodeId, SnapshotId),
    /// A coordinator asks for a snapshot.
    Initiate(Endpoint),
    /// A coordinator gives up on a snapshot.
    Abort(Endpoint, SnapshotId),
    /// What needs the application.
    Event(NodeEvent<P, C>),
}

impl<P: Process> Node<P> {
    /// Records this node's state for a new snapshot: its id, and the markers to send.
    fn start_snapshot(&mut self) -> Result<(SnapshotId, Step<P>), NodeError> {
        let (id, actions) = self.engine.initiate(&self.process)?;
        Ok((id, Step::new(actions)))
    }

    /// An application message from `from`, through the engine (counted, recorded) to
    /// the process. Its replies wait in the outbox, to be sent.
    fn take_message(&mut self, from: NodeId, message: P::Message) -> Result<(), NodeError> {
        self.engine.on_message(from, &message, &self.process)?;
        self.process.handle(from, message, &mut self.outbox);
        Ok(())
    }

    /// A coordinator at `from` gives up on snapshot `id`: so does the engine, and the
    /// coordinator hears what this node knew of it.
    fn abort<C>(&mut self, from: Endpoint, id: SnapshotId) -> Addressed<P, C> {
        let what = self.engine.abort(id);
        (from, Frame::Snapshot(Coordination::Aborted(id, what)))
    }

    /// A coordinator at `from` asks for a snapshot: it is started, and the
    /// coordinator hears of it (and collects this node's parts, unless it has a
    /// coordinator already).
    fn initiated_by(&mut self, from: Endpoint) -> Result<Step<P>, NodeError> {
        self.coordinator.get_or_insert(from);
        let (_, mut step) = self.start_snapshot()?;
        step.started_for = Some(from);
        Ok(step)
    }

    /// The frames `step` sends, in order, and what is left for the application: a
    /// completed part goes to the coordinator, if there is one.
    fn frames<C>(&self, step: Step<P>) -> (Vec<Addressed<P, C>>, NodeOutcome<P>) {
        let Step {
            markers,
            started_for,
            mut outcome,
        } = step;
        let mut frames: Vec<_> = markers
            .into_iter()
            .map(|(to, id)| (Endpoint::Node(to), Frame::Peer(Envelope::Marker(id))))
            .collect();
        if let (Some(to), Some(id)) = (started_for, outcome.started) {
            frames.push((to, Frame::Snapshot(Coordination::Started(id))));
        }
        if let Some(coordinator) = self.coordinator
            && let Some(local) = outcome.completed.take()
        {
            frames.push((
                coordinator,
                Frame::Snapshot(Coordination::Report(Box::new(local))),
            ));
        }
        (frames, outcome)
    }

    /// A marker from `from`, through the engine.
    fn take_marker(&mut self, from: NodeId, id: SnapshotId) -> Result<Step<P>, NodeError> {
        let actions = self.engine.on_marker(from, id, &self.process)?;
        Ok(Step::new(actions))
    }

    /// Sorts what a free-running node received. A node-to-node frame from an
    /// endpoint that is not a node is a protocol error.
    fn sort<C>(incoming: Incoming<NodeFrame<P, C>>) -> Result<Arrival<P, C>, NodeError> {
        let (from, frame) = match incoming {
            Incoming::Frame(from, frame) => (from, frame),
            Incoming::Departed(peer) => return Ok(Arrival::Event(Event::Departed(peer))),
        };
        match (from, frame) {
            (Endpoint::Node(from), Frame::Peer(Envelope::App(message))) => {
                Ok(Arrival::Message(from, message))
            }
            (Endpoint::Node(from), Frame::Peer(Envelope::Marker(id))) => {
                Ok(Arrival::Marker(from, id))
            }
            (from, Frame::Control(control)) => Ok(Arrival::Event(Event::Control { from, control })),
            (from, Frame::Snapshot(Coordination::Initiate)) => Ok(Arrival::Initiate(from)),
            (from, Frame::Snapshot(Coordination::Abort(id))) => Ok(Arrival::Abort(from, id)),
            (from, Frame::Snapshot(_)) => Err(TransportError::Protocol(format!(
                "{from} sent a node what only coordinators take"
            ))
            .into()),
            (from, Frame::Peer(_)) => Err(TransportError::Protocol(format!(
                "{from} sent node-to-node traffic but is not a node"
            ))
            .into()),
        }
    }
}
