//! Restoring a whole system from a snapshot: every process rebuilt from the state it
//! recorded, and every message caught in transit put back on its channel.
//!
//! # The lifecycle, after a snapshot completes
//!
//! 1. **Save.** A [`GlobalSnapshot`] is serializable with serde whenever the process's
//!    state and record are: write it anywhere (`postcard`, JSON, ...).
//! 2. **Stop.** Restoring rebuilds the *whole* system: every node of the snapshot, and
//!    every channel between them. The system that took the snapshot is gone by then
//!    (stopped, crashed), with its network: nothing it still had in flight may reach
//!    the restored one. Restoring one node into a system that kept running is not a
//!    state the system was ever in, and is not what this module does.
//! 3. **Restore.** Load the snapshot and, for each of its nodes,
//!    [`Node::restore`] it: the process is rebuilt from its recorded state
//!    ([`Restore`]), the node gets the snapshot's channels and a new engine whose
//!    sequence numbers start past the snapshot's, and it learns which messages it
//!    must put back on its outgoing channels. Connect its transport, tell it where
//!    to [report](Restored::report_to), and [`resume`](Restored::resume) it: it puts
//!    those messages back, before anything else, and hands over the [`Node`], ready to
//!    run.
//! 4. **Run on**, as any node runs: `next_event`, `poll_event`, a coordinator asking
//!    for the next snapshot.
//!
//! ```
//! use snapshot_core::restore::Restore;
//! use snapshot_core::sim::Sim;
//! use snapshot_core::topology::Topology;
//! use snapshot_core::{Node, NodeId, Outbox, Process};
//!
//! /// Keeps the tokens it gets; what is in transit is kept message by message.
//! struct Tokens(u64);
//!
//! impl Process for Tokens {
//!     type Message = u64;
//!     type State = u64;
//!     type Record = Vec<u64>; // the messages themselves: they can be replayed
//!
//!     fn handle(&mut self, _from: NodeId, tokens: u64, _outbox: &mut Outbox<u64>) {
//!         self.0 += tokens;
//!     }
//!     fn capture(&self) -> u64 {
//!         self.0
//!     }
//!     fn record(&self, in_transit: &mut Vec<u64>, _from: NodeId, tokens: &u64) {
//!         in_transit.push(*tokens);
//!     }
//! }
//!
//! impl Restore for Tokens {
//!     fn restore(_node: NodeId, tokens: &u64) -> Self {
//!         Tokens(*tokens)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Node 1 sends 4 of its 10 tokens to node 2; a snapshot catches them in transit.
//! let (a, b) = (NodeId(1), NodeId(2));
//! let mut sim = Sim::<Tokens>::new(1, &Topology::complete([a, b]), |_| Tokens(10))?;
//! sim.process_mut(a)?.0 -= 4;
//! sim.send(a, b, 4)?;
//! sim.initiate(b)?; // node 2 records before the 4 tokens reach it
//! sim.run_until_quiet(100)?;
//! let saved = postcard::to_allocvec(&sim.completed()[0])?;
//! drop(sim); // the system stops
//!
//! // Restored: node 2 holds 10 again, and the 4 tokens are on their way to it.
//! let snapshot = postcard::from_bytes(&saved)?;
//! let restored = Node::<Tokens>::restore(&snapshot, a)?;
//! assert_eq!(restored.replay(), [(b, 4)], "node 1 puts them back on 1 -> 2");
//! let mut sim = Sim::<Tokens>::restore(2, &snapshot)?; // every node, on a simulation
//! assert_eq!((sim.process(a)?.0, sim.process(b)?.0), (6, 10));
//! sim.run_until_quiet(100)?;
//! assert_eq!((sim.process(a)?.0, sim.process(b)?.0), (6, 14));
//! # Ok(())
//! # }
//! ```
//!
//! `examples/restore.rs` is the whole round trip over `transport-mem`, a thread per
//! node: `cargo run -p snapshot-core --example restore --all-features`.
//!
//! # Which records can be replayed
//!
//! A channel's record is whatever [`Process::record`] makes of the messages caught on
//! it. Only a record that keeps those messages, in the order they came, can put them
//! back: such a record implements [`Replay`] (`Vec<M>` and `VecDeque<M>` do). A record
//! that folds them (a sum, a count) cannot, and restoring a snapshot of it does not
//! compile:
//!
//! ```compile_fail,E0277
//! # use snapshot_core::restore::Restore;
//! # use snapshot_core::{GlobalSnapshot, Node, NodeId, Outbox, Process};
//! struct Summed(u64);
//! impl Process for Summed {
//!     type Message = u64;
//!     type State = u64;
//!     type Record = u64; // a sum of the messages: they are gone
//!     fn handle(&mut self, _: NodeId, n: u64, _: &mut Outbox<u64>) { self.0 += n }
//!     fn capture(&self) -> u64 { self.0 }
//!     fn record(&self, sum: &mut u64, _: NodeId, n: &u64) { *sum += n }
//! }
//! impl Restore for Summed {
//!     fn restore(_: NodeId, n: &u64) -> Self { Summed(*n) }
//! }
//! fn restore(snapshot: &GlobalSnapshot<u64, u64>) {
//!     // error: a record of type `u64` cannot put messages of type `u64` back
//!     let _ = Node::<Summed>::restore(snapshot, NodeId(1));
//! }
//! ```
//!
//! An application that prints a folded view (the sum of the money in transit) keeps
//! the messages in a record type of its own, implements [`Replay`] for it, and prints
//! the fold from it.
//!
//! # Who puts the messages back, and why each channel stays FIFO
//!
//! The messages recorded on the channel `j -> i` were sent by `j` and not yet taken by
//! `i`. They are recorded at `i`, but it is the **sender** `j` that puts them back: its
//! [`Restored::resume`] sends them again on `j -> i`, through its transport, in the
//! order they were recorded, before it hands over the node, so before `j` sends
//! anything else on that channel: no application message, no marker, no reply. The
//! transport keeps `j -> i` FIFO, as every transport must; the record holds them in
//! the order `i` took them, which was the order `j` sent them. So `i` takes them
//! first, in their order, then whatever `j` sends after the restore: the channel is
//! the one the snapshot recorded, with the new traffic behind it.
//!
//! The sender replays, not the receiver, because then the messages really are on the
//! channel again: whatever transport runs the system (in memory, pipes, TCP, the
//! simulation of `sim`, an asynchronous one with `resume_async`) carries them like any
//! message, and a snapshot taken after the restore finds them there and records them
//! as in transit, with nothing special in the driver or the engine. (Had the receiver
//! replayed them from a queue of its own, every driver would have to take that queue
//! before the transport's frames, and the network would never see them.)
//!
//! # Counting after a restore
//!
//! A restored node's engine is new: its counts of messages sent and received on each
//! channel (a [`LocalSnapshot`]'s `sent` and `received`) start at zero, and count
//! from the restore on. The messages a node puts back are counted as sent by it (they
//! are sent again), and as received by their receiver when it takes them, like any
//! message. So the counts of every channel add up, and every snapshot taken after a
//! restore passes [`check_cut`](GlobalSnapshot::check_cut), whatever the schedule.
//!
//! # Sequence numbers
//!
//! Every restored node's engine starts its sequence numbers past the restored
//! snapshot's ([`epoch`] is its seq + 1; see [`SnapshotEngine::with_epoch`]): the
//! snapshots taken after a restore never take the id of the restored one or of any
//! that its initiator took before it, and every one of them has a greater sequence
//! number than the snapshot it comes from. A node that took snapshots of its own
//! after the restored one, and persisted its
//! [`next_seq`](SnapshotEngine::next_seq), passes an engine that starts there to
//! [`Node::restore_with`].
//!
//! # The check
//!
//! A snapshot taken right after a restore, before any new traffic, equals the one
//! restored from, state for state and channel for channel ([`compare`]): every process
//! records the state it was restored to, and every channel records the messages put
//! back on it, no more (nothing else was sent) and no fewer (none was taken before its
//! receiver recorded). The ids differ, and so do the counts taken alone, since they
//! start again at the restore: on a channel `j -> i` whose record holds `r` messages,
//! the restored snapshot said `sent = s`, `received = s - r`, and the one after it says
//! `sent = r`, `received = 0`. What the counts say of the channel is the same: `r`
//! messages in transit, `sent - received`, which is also the record's own count. That
//! is what [`compare`] compares, with the states and the records.
//!
//! "None was taken before its receiver recorded" depends on the schedule: a node that
//! takes a message put back on one of its channels before the snapshot's marker
//! reaches it on another records a state that has it, as Chandy-Lamport allows (a cut
//! just as consistent, and not the same one). Taken at the restored snapshot's
//! initiator, the new snapshot can record every node before any put-back message is
//! taken (the restored one did: each node recorded on a marker from a channel whose
//! record is empty, so on which nothing is put back), and a network that delivers
//! markers first does so. The tests show it on the simulation and, over
//! `transport-mem` with a thread per node, on a one-way ring as it runs and on a
//! complete graph with each node holding back its put-back channels until it has
//! recorded.

use crate::topology::Topology;
use crate::{
    Endpoint, EngineError, GlobalSnapshot, LocalSnapshot, Node, NodeError, NodeFrame, NodeId,
    Process, SnapshotEngine, SnapshotError, SnapshotId, Transport,
};
use std::collections::{BTreeSet, VecDeque};
use thiserror::Error;

/// A process that can be rebuilt from the state a snapshot recorded of it
/// ([`Process::capture`]), by [`Node::restore`].
///
/// `restore(node, &process.capture())` must behave as `process` from then on: what
/// the process does with messages depends only on what its state keeps, and on
/// `node`, which is given for what a process knows of where it runs (its neighbours,
/// say) without recording it. A process that needs more to be rebuilt (a
/// configuration of the application's) is rebuilt by hand and given to
/// [`Node::restore_with`].
pub trait Restore: Process {
    /// The process of node `node`, in the recorded `state`.
    fn restore(node: NodeId, state: &Self::State) -> Self;
}

/// A channel record that keeps the messages it caught, so that they can be put back
/// on their channel when a snapshot is restored.
///
/// [`messages`](Self::messages) yields exactly the messages that
/// [`Process::record`] added, in the order it added them: as many as the channel's
/// [`messages`](crate::ChannelRecord::messages) count ([`Node::restore`] refuses a
/// record that yields another number, [`RestoreError::Replay`]).
///
/// A record that folds its messages into less than themselves (a sum, a count)
/// cannot implement it, so a snapshot of it cannot be restored. A record can keep
/// the messages and offer a fold besides:
///
/// ```
/// use snapshot_core::restore::Replay;
///
/// /// Money in transit: the transfers themselves, shown as their sum.
/// #[derive(Debug, Default)]
/// struct InTransit(Vec<u64>);
///
/// impl Replay<u64> for InTransit {
///     fn messages(&self) -> impl Iterator<Item = u64> {
///         self.0.iter().copied()
///     }
/// }
///
/// impl std::fmt::Display for InTransit {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "{}", self.0.iter().sum::<u64>())
///     }
/// }
///
/// let caught = InTransit(vec![5, 7]);
/// assert_eq!(caught.to_string(), "12");
/// assert_eq!(caught.messages().collect::<Vec<_>>(), [5, 7]);
/// ```
#[diagnostic::on_unimplemented(
    message = "a record of type `{Self}` cannot put messages of type `{M}` back on their channel",
    label = "this record does not keep the messages it caught",
    note = "a snapshot can be restored only if each channel's record keeps its messages, in order: `Vec<{M}>`, or a type that implements `Replay<{M}>`; a record that folds them (a sum, a count) cannot be replayed"
)]
pub trait Replay<M> {
    /// The messages recorded, in the order they were recorded.
    fn messages(&self) -> impl Iterator<Item = M>;
}

impl<M: Clone> Replay<M> for Vec<M> {
    fn messages(&self) -> impl Iterator<Item = M> {
        self.iter().cloned()
    }
}

impl<M: Clone> Replay<M> for VecDeque<M> {
    fn messages(&self) -> impl Iterator<Item = M> {
        self.iter().cloned()
    }
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The node has no part in the snapshot.
    #[error("node {node} has no part in snapshot {id}")]
    UnknownNode {
        /// The node asked for.
        node: NodeId,
        /// The snapshot.
        id: SnapshotId,
    },
    /// The snapshot is not a consistent cut (or misses a node's part): restoring it
    /// would make a state the system was never in.
    #[error("snapshot {id} cannot be restored")]
    Inconsistent {
        /// The snapshot.
        id: SnapshotId,
        /// What [`GlobalSnapshot::check_cut`] found.
        #[source]
        source: SnapshotError,
    },
    /// A channel's record yields another number of messages than the channel
    /// recorded (see [`Replay`]).
    #[error(
        "channel ({from} -> {to}) recorded {recorded} message(s) in transit, but its record replays {replayed}"
    )]
    Replay {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The channel's count of messages recorded.
        recorded: u64,
        /// How many its record yields.
        replayed: u64,
    },
    /// The engine given to [`Node::restore_with`] would issue the restored
    /// snapshot's sequence number, or one before it.
    #[error("node {node}'s engine starts at sequence number {epoch}, not past snapshot {id}")]
    EpochNotPast {
        /// The node.
        node: NodeId,
        /// The engine's epoch.
        epoch: u64,
        /// The snapshot.
        id: SnapshotId,
    },
    /// The snapshot has the last sequence number an engine gives (`u64::MAX - 1`), or
    /// one past it: a node restored from it could start no snapshot.
    #[error("snapshot {0} has the last sequence number: no engine can start past it")]
    SequenceExhausted(SnapshotId),
    /// The engine given to [`Node::restore_with`] is not a new one: it has channels,
    /// or snapshots in flight.
    #[error("node {0}'s engine is not new: it has channels or snapshots in flight")]
    EngineInUse(NodeId),
    /// The engine refused the snapshot's channels (a channel from a node to itself).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The simulation refused the restored nodes or their messages.
    #[cfg(feature = "sim")]
    #[error(transparent)]
    Sim(#[from] crate::sim::SimError),
}

/// The first sequence number of every node restored from `snapshot`: one past the
/// snapshot's. Refused when no snapshot could be started from there: an engine
/// never gives `u64::MAX` ([`EngineError::SequenceExhausted`]).
pub fn epoch<S, R>(snapshot: &GlobalSnapshot<S, R>) -> Result<u64, RestoreError> {
    let id = snapshot.id();
    id.seq
        .checked_add(1)
        .filter(|&epoch| epoch < u64::MAX)
        .ok_or(RestoreError::SequenceExhausted(id))
}

/// The nodes of `snapshot` and the channels between them: the topology a restored
/// system runs on.
pub fn topology<S, R>(snapshot: &GlobalSnapshot<S, R>) -> Topology {
    let mut topology = Topology::default();
    for local in snapshot.nodes() {
        topology.add_node(local.node);
        for &to in local.sent.keys() {
            topology.link(local.node, to);
        }
        for &from in local.channels.keys() {
            topology.link(from, local.node);
        }
    }
    topology
}

/// One node restored from a snapshot, not yet running: its [`Node`], and the messages
/// it puts back on its outgoing channels when it [resumes](Self::resume).
///
/// Made by [`Node::restore`] or [`Node::restore_with`].
#[must_use = "a restored node puts back what was in transit only when it resumes"]
pub struct Restored<P: Process> {
    node: Node<P>,
    replay: Vec<(NodeId, P::Message)>,
}

impl<P: Process> std::fmt::Debug for Restored<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restored")
            .field("node", &self.node)
            .field("replay", &self.replay.len())
            .finish()
    }
}

impl<P: Process> Restored<P> {
    /// The node, as it will run once resumed.
    pub fn node(&self) -> &Node<P> {
        &self.node
    }

    /// The messages this node puts back, in the order it sends them: for each
    /// outgoing channel, by receiver, what the receiver recorded in transit on it.
    pub fn replay(&self) -> &[(NodeId, P::Message)] {
        &self.replay
    }

    /// Sends this node's parts of snapshots to `coordinator` (see
    /// [`Node::report_to`]).
    pub fn report_to(&mut self, coordinator: Endpoint) {
        self.node.report_to(coordinator);
    }

    /// Puts back the messages of [`replay`](Self::replay) on their channels, through
    /// `transport` (counted as sent, as any message), and hands over the node, ready
    /// to run. Call it once the transport is connected, before the node does
    /// anything else.
    ///
    /// On a transport whose sends wait while the receiver's queue is full (a bounded
    /// `transport-mem`, say), resume each node where it runs (its thread or task): a
    /// node that puts back more than a queue holds waits for its receiver to take
    /// them.
    pub fn resume<C, T>(self, transport: &mut T) -> Result<Node<P>, NodeError>
    where
        T: Transport<NodeFrame<P, C>> + ?Sized,
    {
        let Restored { mut node, replay } = self;
        for (to, message) in replay {
            node.send(transport, to, message)?;
        }
        transport.flush()?;
        Ok(node)
    }

    /// [`resume`](Self::resume), over an asynchronous transport.
    #[cfg(feature = "async")]
    pub async fn resume_async<C, T>(self, transport: &mut T) -> Result<Node<P>, NodeError>
    where
        T: crate::AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        let Restored { mut node, replay } = self;
        for (to, message) in replay {
            node.send_async(transport, to, message).await?;
        }
        transport.flush().await?;
        Ok(node)
    }

    /// The node and the messages it must put back, for a driver that sends them
    /// itself, with [`Node::send`] (so that they are counted), before anything else
    /// (as `Sim::restore` does, with the `sim` feature).
    pub fn into_parts(self) -> (Node<P>, Vec<(NodeId, P::Message)>) {
        (self.node, self.replay)
    }
}

impl<P: Process> Node<P> {
    /// Node `id` restored from `snapshot`: its process rebuilt from its recorded state
    /// ([`Restore`]), its channels as the snapshot has them, an engine whose
    /// sequence numbers start past the snapshot's ([`epoch`]), and the messages it
    /// puts back on its outgoing channels when it [resumes](Restored::resume).
    /// See [the module](crate::restore) for the whole procedure.
    ///
    /// Refused if the snapshot is not a consistent cut, has no part of `id`, or has a
    /// record that does not replay as many messages as it caught.
    pub fn restore(
        snapshot: &GlobalSnapshot<P::State, P::Record>,
        id: NodeId,
    ) -> Result<Restored<P>, RestoreError>
    where
        P: Restore,
        P::Record: Replay<P::Message>,
    {
        let local = part(snapshot, id)?;
        let process = P::restore(id, &local.state);
        Self::restore_with(
            snapshot,
            SnapshotEngine::with_epoch(id, epoch(snapshot)?),
            process,
        )
    }

    /// Like [`restore`](Self::restore), with the process and the engine made by the
    /// caller: a process rebuilt from its state with more than [`Restore`] gives, or
    /// an engine with limits of its own or a later epoch (a persisted
    /// [`next_seq`](SnapshotEngine::next_seq)). The node is `engine`'s.
    ///
    /// The engine must be new (no channels, nothing in flight:
    /// [`RestoreError::EngineInUse`]) and start past the snapshot's sequence number
    /// ([`RestoreError::EpochNotPast`]); it gets the snapshot's channels.
    pub fn restore_with(
        snapshot: &GlobalSnapshot<P::State, P::Record>,
        engine: SnapshotEngine<P>,
        process: P,
    ) -> Result<Restored<P>, RestoreError>
    where
        P::Record: Replay<P::Message>,
    {
        let id = engine.node();
        let local = part(snapshot, id)?;
        snapshot
            .check_cut()
            .map_err(|source| RestoreError::Inconsistent {
                id: snapshot.id(),
                source,
            })?;
        if engine.epoch() <= snapshot.id().seq {
            return Err(RestoreError::EpochNotPast {
                node: id,
                epoch: engine.epoch(),
                id: snapshot.id(),
            });
        }
        let in_use = engine.incoming().next().is_some()
            || engine.outgoing().next().is_some()
            || engine.in_flight().next().is_some();
        if in_use {
            return Err(RestoreError::EngineInUse(id));
        }
        let mut node = Node::with_engine(engine, process);
        for &from in local.channels.keys() {
            node.add_incoming(from)?;
        }
        let mut replay = Vec::new();
        for &to in local.sent.keys() {
            node.add_outgoing(to)?;
            // A consistent cut has the receiver, and its record of this channel.
            let Some(channel) = snapshot.node(to).and_then(|r| r.channels.get(&id)) else {
                return Err(RestoreError::Inconsistent {
                    id: snapshot.id(),
                    source: SnapshotError::UnmatchedChannel { from: id, to },
                });
            };
            let before = replay.len();
            replay.extend(channel.record.messages().map(|message| (to, message)));
            let replayed = (replay.len() - before) as u64;
            if replayed != channel.messages {
                return Err(RestoreError::Replay {
                    from: id,
                    to,
                    recorded: channel.messages,
                    replayed,
                });
            }
        }
        Ok(Restored { node, replay })
    }
}

/// The part of node `id` in `snapshot`.
fn part<S, R>(
    snapshot: &GlobalSnapshot<S, R>,
    id: NodeId,
) -> Result<&LocalSnapshot<S, R>, RestoreError> {
    snapshot.node(id).ok_or(RestoreError::UnknownNode {
        node: id,
        id: snapshot.id(),
    })
}

#[cfg(feature = "sim")]
impl<P: Process, C> crate::sim::Sim<P, C> {
    /// A simulation seeded with `seed` of the system `snapshot` recorded: every node
    /// [restored](Node::restore), on the snapshot's [`topology`], and every message it
    /// recorded in transit back on its channel, sent again by its sender (in node
    /// order), and not delivered yet.
    pub fn restore(
        seed: u64,
        snapshot: &GlobalSnapshot<P::State, P::Record>,
    ) -> Result<Self, RestoreError>
    where
        P: Restore,
        P::Record: Replay<P::Message> + Send,
        P::Message: Send,
        P::State: Send,
        C: Send,
    {
        let topology = topology(snapshot);
        let mut nodes = std::collections::BTreeMap::new();
        let mut replays = Vec::new();
        for id in topology.nodes() {
            let (node, replay) = Node::<P>::restore(snapshot, id)?.into_parts();
            nodes.insert(id, node);
            replays.push((id, replay));
        }
        let mut sim = Self::with_nodes(seed, &topology, |id| {
            nodes
                .remove(&id)
                .expect("the topology's nodes are the snapshot's, each restored once")
        })?;
        for (from, replay) in replays {
            for (to, message) in replay {
                sim.send(from, to, message)?;
            }
        }
        Ok(sim)
    }
}

/// How a snapshot taken after a restore differs from the snapshot restored from (see
/// [`compare`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Difference {
    /// The snapshots are of different nodes.
    #[error("the snapshots are of different nodes: {restored:?} and {taken:?}")]
    Nodes {
        /// The nodes of the snapshot restored from.
        restored: Vec<NodeId>,
        /// The nodes of the snapshot taken after.
        taken: Vec<NodeId>,
    },
    /// The node has other channels, in or out.
    #[error("node {0} has other channels")]
    Channels(NodeId),
    /// The node recorded another state.
    #[error("node {0} recorded another state")]
    State(NodeId),
    /// The channel recorded another record.
    #[error("channel ({from} -> {to}) recorded another record")]
    Record {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// The channel recorded another number of messages in transit, by its own count
    /// or by its ends' counts (sent less received).
    #[error(
        "channel ({from} -> {to}): {restored:?} message(s) in transit (recorded, sent less received), then {taken:?}"
    )]
    InTransit {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// In the snapshot restored from: the channel's count, and its sender's count
        /// less its receiver's (`None` if that is below zero).
        restored: (u64, Option<u64>),
        /// The same, in the snapshot taken after.
        taken: (u64, Option<u64>),
    },
}

/// Checks that `taken`, a snapshot taken right after restoring `restored`, recorded
/// the same global state: the same nodes and channels, every node the same state,
/// every channel the same record and the same number of messages in transit, both as
/// the channel counted them and as its two ends' counts say (sent less received).
/// The ids, and the counts taken alone, are not compared: they start again at a
/// restore (see [the module](crate::restore#the-check)).
///
/// Returns the first difference, in node order.
pub fn compare<S: PartialEq, R: PartialEq>(
    restored: &GlobalSnapshot<S, R>,
    taken: &GlobalSnapshot<S, R>,
) -> Result<(), Difference> {
    let ids = |g: &GlobalSnapshot<S, R>| g.nodes().map(|local| local.node).collect::<Vec<_>>();
    if ids(restored) != ids(taken) {
        return Err(Difference::Nodes {
            restored: ids(restored),
            taken: ids(taken),
        });
    }
    for (before, after) in restored.nodes().zip(taken.nodes()) {
        let node = before.node;
        let keys = |local: &LocalSnapshot<S, R>| {
            (
                local.channels.keys().copied().collect::<BTreeSet<_>>(),
                local.sent.keys().copied().collect::<BTreeSet<_>>(),
            )
        };
        if keys(before) != keys(after) {
            return Err(Difference::Channels(node));
        }
        if before.state != after.state {
            return Err(Difference::State(node));
        }
        for (from, channel) in &before.channels {
            let Some(then) = after.channels.get(from) else {
                return Err(Difference::Channels(node));
            };
            if channel.record != then.record {
                return Err(Difference::Record {
                    from: *from,
                    to: node,
                });
            }
            let restored = (channel.messages, in_transit(restored, *from, node));
            let taken = (then.messages, in_transit(taken, *from, node));
            if restored != taken {
                return Err(Difference::InTransit {
                    from: *from,
                    to: node,
                    restored,
                    taken,
                });
            }
        }
    }
    Ok(())
}

/// Messages in transit on `from -> to` by its ends' counts: sent less received.
fn in_transit<S, R>(snapshot: &GlobalSnapshot<S, R>, from: NodeId, to: NodeId) -> Option<u64> {
    let sent = snapshot.node(from)?.sent.get(&to)?;
    let received = snapshot.node(to)?.received.get(&from)?;
    sent.checked_sub(*received)
}
