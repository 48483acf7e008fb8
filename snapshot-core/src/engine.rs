//! The Chandy-Lamport protocol for one node, as a state machine with no I/O.

use crate::{ChannelRecord, LocalSnapshot, NodeId, Process, SnapshotId};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What the driver of an engine must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<S, R> {
    /// This node has just recorded its state for snapshot `id`: it is the first action
    /// of every snapshot at every node, followed by the markers.
    Recorded {
        /// The snapshot.
        id: SnapshotId,
    },
    /// Send a marker of snapshot `id` on the outgoing channel to `to`, after every
    /// application message already sent on it and before any later one.
    SendMarker {
        /// The channel's receiver.
        to: NodeId,
        /// The snapshot the marker belongs to.
        id: SnapshotId,
    },
    /// This node's part of a snapshot is complete.
    Complete(LocalSnapshot<S, R>),
}

/// An input the engine refuses. The engine's state is unchanged after any error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The input names a channel this node does not have.
    #[error("node {node} has no channel ({from} -> {to})")]
    UnknownChannel {
        /// This node.
        node: NodeId,
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// A marker arrived on a channel that already delivered the marker of that
    /// snapshot: channels are not FIFO, or a peer repeats itself.
    #[error("second marker of snapshot {id} on channel ({from} -> {to})")]
    DuplicateMarker {
        /// The snapshot.
        id: SnapshotId,
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver (this node).
        to: NodeId,
    },
    /// Channels may change only while no snapshot is in flight at this node.
    #[error("node {node} cannot change its channels while {in_flight} snapshot(s) are in flight")]
    SnapshotInFlight {
        /// This node.
        node: NodeId,
        /// How many snapshots are in flight.
        in_flight: usize,
    },
    /// A node cannot have a channel to itself.
    #[error("node {0} cannot have a channel to itself")]
    SelfChannel(NodeId),
}

/// The actions an input to the engine of process `P` asks for.
type Actions<P> = Vec<Action<<P as Process>::State, <P as Process>::Record>>;

/// The snapshots of one initiator that this node has finished, kept compactly: all
/// sequence numbers below `below`, and those in `above`.
#[derive(Debug, Default, Clone)]
struct Finished {
    below: u64,
    above: BTreeSet<u64>,
}

impl Finished {
    fn contains(&self, seq: u64) -> bool {
        seq < self.below || self.above.contains(&seq)
    }

    fn insert(&mut self, seq: u64) {
        if seq != self.below {
            self.above.insert(seq);
            return;
        }
        self.below += 1;
        while self.above.remove(&self.below) {
            self.below += 1;
        }
    }
}

/// A snapshot this node has recorded its state for but whose incoming channels are
/// not all closed yet.
#[derive(Debug, Clone)]
struct Recording<S, R> {
    local: LocalSnapshot<S, R>,
    /// Incoming channels still being recorded: their marker has not arrived yet.
    open: BTreeSet<NodeId>,
}

/// The Chandy-Lamport protocol engine of one node.
///
/// It is a plain state machine: inputs are method calls, outputs are the
/// [`Action`]s they return, and it performs no I/O, reads no clock and draws no random
/// numbers. The driver feeds it, in the order they happen at this node:
///
/// - [`initiate`](Self::initiate) to start a new snapshot here;
/// - [`on_marker`](Self::on_marker) when a marker is taken from an incoming channel;
/// - [`on_message`](Self::on_message) when an application message is taken from an
///   incoming channel (before or after the process handles it: it does not matter);
/// - [`on_send`](Self::on_send) when an application message is put on an outgoing
///   channel.
///
/// and carries out every returned action before the next input. Any number of
/// snapshots may be in flight at once, started by any node; the topology may be any
/// directed graph (a snapshot completes everywhere when the graph is strongly
/// connected).
pub struct SnapshotEngine<P: Process> {
    me: NodeId,
    /// Application messages taken from each incoming channel, by sender.
    received: BTreeMap<NodeId, u64>,
    /// Application messages put on each outgoing channel, by receiver.
    sent: BTreeMap<NodeId, u64>,
    recording: BTreeMap<SnapshotId, Recording<P::State, P::Record>>,
    finished: BTreeMap<NodeId, Finished>,
    next_seq: u64,
}

impl<P: Process> std::fmt::Debug for SnapshotEngine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotEngine")
            .field("node", &self.me)
            .field("received", &self.received)
            .field("sent", &self.sent)
            .field("in_flight", &self.recording.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<P: Process> SnapshotEngine<P> {
    /// An engine for node `me`, with no channels yet.
    pub fn new(me: NodeId) -> Self {
        SnapshotEngine {
            me,
            received: BTreeMap::new(),
            sent: BTreeMap::new(),
            recording: BTreeMap::new(),
            finished: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// The node this engine belongs to.
    pub fn node(&self) -> NodeId {
        self.me
    }

    /// Adds the incoming channel `from -> self`. Adding a channel twice is harmless.
    ///
    /// Channels may change only while no snapshot is in flight anywhere in the system,
    /// not just at this node: a snapshot that has already passed the other end of a
    /// new channel would wait forever for that channel's marker. This node can only
    /// check its own side ([`EngineError::SnapshotInFlight`]); the application
    /// ensures the rest (the bank refuses `CreateNode` while a snapshot is open).
    pub fn add_incoming(&mut self, from: NodeId) -> Result<(), EngineError> {
        self.check_topology_change(from)?;
        self.received.entry(from).or_insert(0);
        Ok(())
    }

    /// Adds the outgoing channel `self -> to`. Adding a channel twice is harmless.
    pub fn add_outgoing(&mut self, to: NodeId) -> Result<(), EngineError> {
        self.check_topology_change(to)?;
        self.sent.entry(to).or_insert(0);
        Ok(())
    }

    fn check_topology_change(&self, peer: NodeId) -> Result<(), EngineError> {
        if peer == self.me {
            return Err(EngineError::SelfChannel(peer));
        }
        if !self.recording.is_empty() {
            return Err(EngineError::SnapshotInFlight {
                node: self.me,
                in_flight: self.recording.len(),
            });
        }
        Ok(())
    }

    /// Whether the outgoing channel `self -> to` exists.
    pub fn has_outgoing(&self, to: NodeId) -> bool {
        self.sent.contains_key(&to)
    }

    /// The incoming channels, by sender.
    pub fn incoming(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.received.keys().copied()
    }

    /// The outgoing channels, by receiver.
    pub fn outgoing(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sent.keys().copied()
    }

    /// The snapshots this node has recorded its state for and still records channels
    /// of.
    pub fn in_flight(&self) -> impl Iterator<Item = SnapshotId> + '_ {
        self.recording.keys().copied()
    }

    /// Starts a new snapshot at this node: records the process's state now, starts
    /// recording every incoming channel, and asks for a marker on every outgoing one.
    pub fn initiate(&mut self, process: &P) -> (SnapshotId, Actions<P>) {
        let id = SnapshotId {
            initiator: self.me,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        (id, self.record(id, None, process))
    }

    /// A marker of snapshot `id` was taken from the channel `from -> self`.
    ///
    /// The first marker of a snapshot records the process's state, records the
    /// channel it came on as empty, starts recording every other incoming channel and
    /// asks for a marker on every outgoing one. A later marker closes the recording of
    /// its channel. When every incoming channel is closed the local snapshot is
    /// complete.
    pub fn on_marker(
        &mut self,
        from: NodeId,
        id: SnapshotId,
        process: &P,
    ) -> Result<Actions<P>, EngineError> {
        self.check_incoming(from)?;
        let duplicate = EngineError::DuplicateMarker {
            id,
            from,
            to: self.me,
        };
        if self
            .finished
            .get(&id.initiator)
            .is_some_and(|f| f.contains(id.seq))
        {
            return Err(duplicate);
        }
        let Some(recording) = self.recording.get_mut(&id) else {
            return Ok(self.record(id, Some(from), process));
        };
        if !recording.open.remove(&from) {
            return Err(duplicate);
        }
        Ok(self.complete_if_closed(id).into_iter().collect())
    }

    /// An application message was taken from the channel `from -> self`: it is counted,
    /// and written into the record of that channel for every snapshot recording it.
    pub fn on_message(
        &mut self,
        from: NodeId,
        message: &P::Message,
        process: &P,
    ) -> Result<(), EngineError> {
        let count = self
            .received
            .get_mut(&from)
            .ok_or(EngineError::UnknownChannel {
                node: self.me,
                from,
                to: self.me,
            })?;
        *count += 1;
        for recording in self.recording.values_mut() {
            if recording.open.contains(&from) {
                // Every open channel has a record: `record` creates one per incoming
                // channel and channels cannot be added while recording.
                if let Some(channel) = recording.local.channels.get_mut(&from) {
                    process.record(&mut channel.record, from, message);
                    channel.messages += 1;
                }
            }
        }
        Ok(())
    }

    /// An application message was put on the channel `self -> to`.
    pub fn on_send(&mut self, to: NodeId) -> Result<(), EngineError> {
        let count = self.sent.get_mut(&to).ok_or(EngineError::UnknownChannel {
            node: self.me,
            from: self.me,
            to,
        })?;
        *count += 1;
        Ok(())
    }

    fn check_incoming(&self, from: NodeId) -> Result<(), EngineError> {
        if self.received.contains_key(&from) {
            Ok(())
        } else {
            Err(EngineError::UnknownChannel {
                node: self.me,
                from,
                to: self.me,
            })
        }
    }

    /// Records this node's part of snapshot `id`; `closed` is the channel whose marker
    /// started it, recorded as empty.
    fn record(&mut self, id: SnapshotId, closed: Option<NodeId>, process: &P) -> Actions<P> {
        let local = LocalSnapshot {
            id,
            node: self.me,
            state: process.capture(),
            channels: self
                .received
                .keys()
                .map(|&from| (from, ChannelRecord::default()))
                .collect(),
            sent: self.sent.clone(),
            received: self.received.clone(),
        };
        let open = self
            .received
            .keys()
            .copied()
            .filter(|&from| Some(from) != closed)
            .collect();
        self.recording.insert(id, Recording { local, open });
        let mut actions = Vec::with_capacity(self.sent.len() + 2);
        actions.push(Action::Recorded { id });
        actions.extend(self.sent.keys().map(|&to| Action::SendMarker { to, id }));
        actions.extend(self.complete_if_closed(id));
        actions
    }

    fn complete_if_closed(&mut self, id: SnapshotId) -> Option<Action<P::State, P::Record>> {
        if !self.recording.get(&id)?.open.is_empty() {
            return None;
        }
        let recording = self.recording.remove(&id)?;
        self.finished
            .entry(id.initiator)
            .or_default()
            .insert(id.seq);
        Some(Action::Complete(recording.local))
    }
}
