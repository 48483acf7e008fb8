//! The Chandy-Lamport protocol for one node, as a state machine with no I/O.

use crate::{ChannelRecord, LocalSnapshot, NodeId, Process, SnapshotId};
use std::collections::{BTreeMap, VecDeque};
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
    /// A marker names this node as the initiator of a snapshot it never started: its
    /// sequence number is not one this engine issued (it is at or past
    /// [`next_seq`](SnapshotEngine::next_seq), or below the engine's
    /// [`epoch`](SnapshotEngine::epoch)). A peer forged or corrupted the id, or the
    /// marker is a leftover of this node's life before a restart. Recording it would
    /// start a snapshot nobody collects, and could clash with the one this node starts
    /// later under the same id.
    #[error(
        "node {} never started snapshot {id}, yet node {from} sent a marker of it",
        .id.initiator
    )]
    ForgedSnapshot {
        /// The snapshot the marker claims; its initiator is this node.
        id: SnapshotId,
        /// The channel's sender.
        from: NodeId,
    },
    /// This node already records as many snapshots as its
    /// [limit](SnapshotEngine::max_in_flight) allows, so it cannot start another:
    /// neither one of its own ([`initiate`](SnapshotEngine::initiate), `id` is `None`:
    /// no sequence number is used up) nor one of a peer's whose first marker arrived
    /// (`id` is that snapshot). In the second case that snapshot cannot complete here,
    /// so it cannot complete at all: the application should abort it.
    #[error("node {node} already records {limit} snapshot(s), its limit; {}", refused(.id))]
    TooManyInFlight {
        /// This node.
        node: NodeId,
        /// The most snapshots this node records at once.
        limit: usize,
        /// The snapshot refused: `None` for a new one of this node's own, the
        /// marker's snapshot for a marker.
        id: Option<SnapshotId>,
    },
    /// This node has issued every sequence number it can: the last one is
    /// `u64::MAX - 1`. Only an [epoch](SnapshotEngine::with_epoch) close to `u64::MAX`
    /// gets here.
    #[error("node {node} has no snapshot sequence numbers left")]
    SequenceExhausted {
        /// This node.
        node: NodeId,
    },
}

/// The end of [`EngineError::TooManyInFlight`]'s message.
fn refused(id: &Option<SnapshotId>) -> String {
    match id {
        None => "no new snapshot can start".to_string(),
        Some(id) => format!("snapshot {id} is refused and cannot complete"),
    }
}

/// How many aborted snapshots an engine remembers, to ignore their late markers.
pub const ABORTED_REMEMBERED: usize = 1024;

/// What a node knew of a snapshot when it [aborted](SnapshotEngine::abort) it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Aborted {
    /// It had recorded its state and was waiting for the marker of these incoming
    /// channels.
    Waiting(Vec<NodeId>),
    /// Its part was complete (or it had aborted the snapshot already).
    Finished,
    /// No marker of it had reached this node.
    NotReached,
}

/// The actions an input to the engine of process `P` asks for.
type Actions<P> = Vec<Action<<P as Process>::State, <P as Process>::Record>>;

/// The snapshots of one initiator that this node has finished, kept compactly as runs
/// of consecutive sequence numbers: `runs` maps the first of each run to its last (both
/// included). Runs are disjoint and never adjacent, so the same set of snapshots has
/// exactly one representation (and engines that finished the same snapshots compare
/// equal).
///
/// Memory grows with the gaps between the sequence numbers seen, not with their count
/// or size: an initiator that starts at a far epoch (after a restart) costs one more
/// run, not one entry per snapshot, and snapshots finished out of order cost one run
/// each only until the gaps between them fill up.
#[derive(Default, Clone, PartialEq, Eq)]
struct Finished {
    runs: BTreeMap<u64, u64>,
}

impl Finished {
    fn contains(&self, seq: u64) -> bool {
        self.runs
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &last)| seq <= last)
    }

    fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        // The run just below, if it ends right before `seq` (it ends below `seq`,
        // which it does not contain, so `last + 1` cannot overflow).
        let first = match self.runs.range(..seq).next_back() {
            Some((&first, &last)) if last + 1 == seq => first,
            _ => seq,
        };
        // The run just above, if it starts right after `seq`.
        let last = seq
            .checked_add(1)
            .and_then(|next| self.runs.remove(&next))
            .unwrap_or(seq);
        self.runs.insert(first, last);
    }
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.runs.iter().map(|(&first, &last)| first..=last))
            .finish()
    }
}

/// A node's channels in one direction, by peer, each with a count of the application
/// messages that went through it.
///
/// Peers are kept sorted in a vector, so that a channel has an index (its place in
/// the order of peers) that snapshots in flight use for their own per-channel state:
/// a message or a marker costs one look-up of its channel's index, not a look-up per
/// snapshot in a map. Channels change only while no snapshot is in flight, so the
/// indices a recording holds stay valid.
#[derive(Default, Clone, PartialEq, Eq)]
struct Channels {
    /// The peers, ascending.
    peers: Vec<NodeId>,
    /// The count of each channel, by index.
    counts: Vec<u64>,
    /// Each peer's index + 1, by peer id (0: no channel), while every peer's id is
    /// below [`Self::SLOTS`]; empty otherwise, and peers are searched for.
    slots: Vec<u32>,
    /// Every peer with a count of 0: what a local snapshot's map of counts is cloned
    /// from (a clone copies the tree as it is, where building one sorts first).
    shape: BTreeMap<NodeId, u64>,
}

impl Channels {
    /// Peer ids below this are found by a direct look-up (a table of 4 bytes each).
    const SLOTS: u32 = 4096;

    /// The index of the channel of `peer`, if there is one.
    #[inline]
    fn index(&self, peer: NodeId) -> Option<usize> {
        if !self.slots.is_empty() {
            let slot = *self.slots.get(peer.0 as usize)?;
            return (slot as usize).checked_sub(1);
        }
        self.peers.binary_search(&peer).ok()
    }

    /// Adds the channel of `peer`, with a count of 0, unless it is there.
    fn add(&mut self, peer: NodeId) {
        let Err(at) = self.peers.binary_search(&peer) else {
            return;
        };
        self.peers.insert(at, peer);
        self.counts.insert(at, 0);
        self.shape.insert(peer, 0);
        self.slots.clear();
        if let Some(&NodeId(last)) = self.peers.last()
            && last < Self::SLOTS
        {
            self.slots.resize(last as usize + 1, 0);
            for (at, &NodeId(id)) in self.peers.iter().enumerate() {
                // At most `SLOTS` peers, so the index fits.
                self.slots[id as usize] = at as u32 + 1;
            }
        }
    }

    fn len(&self) -> usize {
        self.peers.len()
    }

    /// The counts now, as a map by peer.
    fn counts(&self) -> BTreeMap<NodeId, u64> {
        let mut map = self.shape.clone();
        for (value, &count) in map.values_mut().zip(&self.counts) {
            *value = count;
        }
        map
    }
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.peers.iter().zip(&self.counts))
            .finish()
    }
}

/// One incoming channel of a snapshot in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recorded<R> {
    /// Whether it is still being recorded: its marker has not arrived yet.
    open: bool,
    /// What it has brought since this node recorded (final once it is closed).
    record: ChannelRecord<R>,
}

/// A snapshot this node has recorded its state for but whose incoming channels are
/// not all closed yet. Per-channel state is by channel index (see [`Channels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recording<S, R> {
    /// The process's state when this node recorded.
    state: S,
    /// The count of each outgoing channel when this node recorded.
    sent: BTreeMap<NodeId, u64>,
    /// The count of each incoming channel when this node recorded.
    received: BTreeMap<NodeId, u64>,
    /// Each incoming channel, by index.
    channels: Vec<Recorded<R>>,
    /// How many are still open.
    open_count: usize,
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
/// and carries out every returned action before the next input. Several snapshots may
/// be in flight at once, started by any node; the topology may be any directed graph
/// (a snapshot completes everywhere when the graph is strongly connected).
///
/// # Rules that keep it safe
///
/// - **Bounded snapshots in flight.** A node records at most
///   [`max_in_flight`](Self::max_in_flight) snapshots at once (its own and its
///   peers', together), [`DEFAULT_MAX_IN_FLIGHT`](Self::DEFAULT_MAX_IN_FLIGHT) (64)
///   unless set with [`with_max_in_flight`](Self::with_max_in_flight), like Flink's
///   max-concurrent-checkpoints. Every snapshot in flight holds a copy of the
///   process's state and a record per incoming channel, so the bound is what bounds
///   the engine's memory. Beyond it, [`initiate`](Self::initiate) and a marker that
///   would start a new recording are refused with [`EngineError::TooManyInFlight`].
/// - **Sequence numbers start at an epoch.** The snapshots this node initiates are
///   numbered `epoch`, `epoch + 1`, ... ([`with_epoch`](Self::with_epoch); `0` for
///   [`new`](Self::new)). A restarted node passes an epoch past every sequence number
///   it issued before (for example the restored snapshot's seq + 1, or a persisted
///   [`next_seq`](Self::next_seq)), so its new snapshots never collide with its
///   earlier ones, which its peers remember as finished.
/// - **Only this node starts its own snapshots.** A marker that names this node as
///   the initiator of a snapshot it did not start (a sequence number below its epoch
///   or not issued yet) is refused with [`EngineError::ForgedSnapshot`].
/// - **Every refused input leaves no trace**: the engine's state is unchanged after
///   any [`EngineError`].
///
/// Each node remembers which snapshots it has finished, per initiator, so that a late
/// or repeated marker of one cannot start it again
/// ([`EngineError::DuplicateMarker`]). That memory is kept as runs of consecutive
/// sequence numbers: it grows with the gaps between the sequence numbers an initiator
/// used (one per restart at a new epoch), not with how many snapshots it took.
///
/// The engine is [`Clone`] and, when the process's state and record types are,
/// [`PartialEq`] and [`Eq`]: equal engines (same node, channels, counts, snapshots in
/// flight and finished, limit and sequence numbers) behave identically on every input
/// from then on, so a model checker can hold, copy and compare them.
pub struct SnapshotEngine<P: Process> {
    me: NodeId,
    /// Application messages taken from each incoming channel, by sender.
    received: Channels,
    /// Application messages put on each outgoing channel, by receiver.
    sent: Channels,
    recording: BTreeMap<SnapshotId, Recording<P::State, P::Record>>,
    finished: BTreeMap<NodeId, Finished>,
    /// The snapshots aborted here, most recent last (also in `finished`): a late
    /// marker of one is ignored. At most [`ABORTED_REMEMBERED`] are kept.
    aborted: VecDeque<SnapshotId>,
    /// The first sequence number this engine issued, or will issue.
    epoch: u64,
    /// The sequence number the next [`initiate`](Self::initiate) issues: this engine
    /// has issued exactly `epoch..next_seq`.
    next_seq: u64,
    /// The most snapshots recorded at once.
    max_in_flight: usize,
}

impl<P: Process> std::fmt::Debug for SnapshotEngine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotEngine")
            .field("node", &self.me)
            .field("received", &self.received)
            .field("sent", &self.sent)
            .field("in_flight", &self.recording.keys().collect::<Vec<_>>())
            .field("max_in_flight", &self.max_in_flight)
            .field("epoch", &self.epoch)
            .field("next_seq", &self.next_seq)
            .field("finished", &self.finished)
            .field("aborted", &self.aborted)
            .finish_non_exhaustive()
    }
}

impl<P: Process> Clone for SnapshotEngine<P>
where
    P::State: Clone,
    P::Record: Clone,
{
    fn clone(&self) -> Self {
        SnapshotEngine {
            me: self.me,
            received: self.received.clone(),
            sent: self.sent.clone(),
            recording: self.recording.clone(),
            finished: self.finished.clone(),
            aborted: self.aborted.clone(),
            epoch: self.epoch,
            next_seq: self.next_seq,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl<P: Process> PartialEq for SnapshotEngine<P>
where
    P::State: PartialEq,
    P::Record: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let SnapshotEngine {
            me,
            received,
            sent,
            recording,
            finished,
            aborted,
            epoch,
            next_seq,
            max_in_flight,
        } = self;
        *me == other.me
            && *received == other.received
            && *sent == other.sent
            && *recording == other.recording
            && *finished == other.finished
            && *aborted == other.aborted
            && *epoch == other.epoch
            && *next_seq == other.next_seq
            && *max_in_flight == other.max_in_flight
    }
}

impl<P: Process> Eq for SnapshotEngine<P>
where
    P::State: Eq,
    P::Record: Eq,
{
}

impl<P: Process> SnapshotEngine<P> {
    /// How many snapshots a node records at once unless told otherwise
    /// ([`with_max_in_flight`](Self::with_max_in_flight)): 64, plenty for snapshots
    /// taken every few seconds that take a few round trips each, and a bound on the
    /// states and channel records held.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

    /// An engine for node `me`, with no channels yet, whose snapshots are numbered from
    /// 0 and that records at most
    /// [`DEFAULT_MAX_IN_FLIGHT`](Self::DEFAULT_MAX_IN_FLIGHT) of them at once.
    pub fn new(me: NodeId) -> Self {
        Self::with_epoch(me, 0)
    }

    /// An engine for node `me`, like [`new`](Self::new), whose snapshots are numbered
    /// from `epoch`: the sequence numbers issued by this node start at `epoch`.
    ///
    /// A restarted node passes a value past every sequence number it issued before
    /// (for example the restored snapshot's seq + 1, or a persisted
    /// [`next_seq`](Self::next_seq)): its peers remember the snapshots they finished
    /// and would refuse a marker of a reused id as a duplicate. Markers that name this
    /// node as initiator with a sequence number below `epoch` are refused
    /// ([`EngineError::ForgedSnapshot`]).
    pub fn with_epoch(me: NodeId, epoch: u64) -> Self {
        SnapshotEngine {
            me,
            received: Channels::default(),
            sent: Channels::default(),
            recording: BTreeMap::new(),
            finished: BTreeMap::new(),
            aborted: VecDeque::new(),
            epoch,
            next_seq: epoch,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// This engine, recording at most `limit` snapshots at once (its own and its
    /// peers', together) instead of
    /// [`DEFAULT_MAX_IN_FLIGHT`](Self::DEFAULT_MAX_IN_FLIGHT). Meant to be chained
    /// on a constructor: `SnapshotEngine::with_epoch(me, epoch).with_max_in_flight(4)`.
    ///
    /// A `limit` of 0 refuses every snapshot. Snapshots already in flight beyond a
    /// lower `limit` carry on; only new ones are refused.
    #[must_use]
    pub fn with_max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit;
        self
    }

    /// The most snapshots this node records at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// The first sequence number of this node's snapshots: the one
    /// [`with_epoch`](Self::with_epoch) was given, 0 for [`new`](Self::new).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number the next [`initiate`](Self::initiate) issues. A node that
    /// persists it can restart past every snapshot it took, by passing it to
    /// [`with_epoch`](Self::with_epoch).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
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
        self.received.add(from);
        Ok(())
    }

    /// Adds the outgoing channel `self -> to`. Adding a channel twice is harmless.
    pub fn add_outgoing(&mut self, to: NodeId) -> Result<(), EngineError> {
        self.check_topology_change(to)?;
        self.sent.add(to);
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
        self.sent.index(to).is_some()
    }

    /// The incoming channels, by sender.
    pub fn incoming(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.received.peers.iter().copied()
    }

    /// The outgoing channels, by receiver.
    pub fn outgoing(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sent.peers.iter().copied()
    }

    /// How many application messages this node has put on the channel `self -> to`,
    /// if it has that channel.
    pub fn sent_on(&self, to: NodeId) -> Option<u64> {
        self.sent.index(to).map(|at| self.sent.counts[at])
    }

    /// How many application messages this node has taken from the channel
    /// `from -> self`, if it has that channel.
    pub fn received_on(&self, from: NodeId) -> Option<u64> {
        self.received.index(from).map(|at| self.received.counts[at])
    }

    /// The snapshots this node has recorded its state for and still records channels
    /// of.
    ///
    /// A snapshot is in flight here only while some incoming channel has yet to bring
    /// its marker. A node whose only incoming channel brings the first marker (a
    /// node of a one-way ring, say) records and completes in the same step, so its
    /// snapshots are never seen in flight; an initiator with one incoming channel
    /// stays in flight until the marker has gone round.
    pub fn in_flight(&self) -> impl Iterator<Item = SnapshotId> + '_ {
        self.recording.keys().copied()
    }

    /// Starts a new snapshot at this node: records the process's state now, starts
    /// recording every incoming channel, and asks for a marker on every outgoing one.
    ///
    /// Its id is this node and the next sequence number (the first is the
    /// [epoch](Self::epoch)). Refused, with no sequence number used up, when this node
    /// already records [`max_in_flight`](Self::max_in_flight) snapshots
    /// ([`EngineError::TooManyInFlight`], with no `id`; retry once one completes) or
    /// has no sequence number left ([`EngineError::SequenceExhausted`]).
    pub fn initiate(&mut self, process: &P) -> Result<(SnapshotId, Actions<P>), EngineError> {
        self.check_room(None)?;
        if self.next_seq == u64::MAX {
            return Err(EngineError::SequenceExhausted { node: self.me });
        }
        let id = SnapshotId {
            initiator: self.me,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        Ok((id, self.record(id, None, process)))
    }

    /// A marker of snapshot `id` was taken from the channel `from -> self`.
    ///
    /// The first marker of a snapshot records the process's state, records the
    /// channel it came on as empty, starts recording every other incoming channel and
    /// asks for a marker on every outgoing one. A later marker closes the recording of
    /// its channel. When every incoming channel is closed the local snapshot is
    /// complete.
    ///
    /// Refused, in this order of checks: on a channel this node does not have
    /// ([`EngineError::UnknownChannel`]); naming this node as the initiator of a
    /// snapshot it never started ([`EngineError::ForgedSnapshot`]); of a snapshot
    /// finished here, or on a channel already closed for it
    /// ([`EngineError::DuplicateMarker`]); the first marker of a snapshot while this
    /// node already records [`max_in_flight`](Self::max_in_flight) of them
    /// ([`EngineError::TooManyInFlight`]: that snapshot cannot complete, and the
    /// application should abort it).
    pub fn on_marker(
        &mut self,
        from: NodeId,
        id: SnapshotId,
        process: &P,
    ) -> Result<Actions<P>, EngineError> {
        let channel = self.check_incoming(from)?;
        if id.initiator == self.me && !(self.epoch..self.next_seq).contains(&id.seq) {
            return Err(EngineError::ForgedSnapshot { id, from });
        }
        let duplicate = EngineError::DuplicateMarker {
            id,
            from,
            to: self.me,
        };
        // A snapshot in flight here is neither aborted nor finished: those are
        // looked for only when the marker does not close a channel of one.
        let Some(recording) = self.recording.get_mut(&id) else {
            if self.aborted.contains(&id) {
                // Late: the snapshot was given up on here. Nothing to do.
                return Ok(Vec::new());
            }
            if self.has_finished(id) {
                return Err(duplicate);
            }
            self.check_room(Some(id))?;
            return Ok(self.record(id, Some(channel), process));
        };
        match recording.channels.get_mut(channel) {
            Some(recorded) if recorded.open => {
                // Its record is final, and kept until the snapshot completes.
                recorded.open = false;
                recording.open_count -= 1;
            }
            _ => return Err(duplicate),
        }
        if recording.open_count > 0 {
            return Ok(Vec::new());
        }
        Ok(self.complete(id).into_iter().collect())
    }

    /// Gives up on snapshot `id` at this node (its coordinator aborted it): drops its
    /// recording, if this node had one, and remembers the snapshot as finished, so
    /// that it never starts here, and a marker of it that comes later is ignored (for
    /// the last [`ABORTED_REMEMBERED`] aborted snapshots; an older one's marker is
    /// refused as a [`DuplicateMarker`](EngineError::DuplicateMarker)).
    ///
    /// Returns what this node knew of it: the incoming channels whose marker had not
    /// come yet, if it was recording it. Aborting a snapshot that had completed here,
    /// or twice, changes nothing more.
    pub fn abort(&mut self, id: SnapshotId) -> Aborted {
        let before = match self.recording.remove(&id) {
            Some(recording) => Aborted::Waiting(
                self.received
                    .peers
                    .iter()
                    .zip(&recording.channels)
                    .filter(|&(_, recorded)| recorded.open)
                    .map(|(&from, _)| from)
                    .collect(),
            ),
            None if self.has_finished(id) => Aborted::Finished,
            None => Aborted::NotReached,
        };
        self.finished
            .entry(id.initiator)
            .or_default()
            .insert(id.seq);
        if !self.aborted.contains(&id) {
            if self.aborted.len() == ABORTED_REMEMBERED {
                self.aborted.pop_front();
            }
            self.aborted.push_back(id);
        }
        before
    }

    fn has_finished(&self, id: SnapshotId) -> bool {
        self.finished
            .get(&id.initiator)
            .is_some_and(|f| f.contains(id.seq))
    }

    /// An application message was taken from the channel `from -> self`: it is counted,
    /// and written into the record of that channel for every snapshot recording it.
    #[inline]
    pub fn on_message(
        &mut self,
        from: NodeId,
        message: &P::Message,
        process: &P,
    ) -> Result<(), EngineError> {
        let at = self.check_incoming(from)?;
        self.received.counts[at] += 1;
        // With no snapshot recording, a message is only counted: that case stays
        // small enough to be inlined into the node's receiving loop.
        if !self.recording.is_empty() {
            self.record_message(at, from, message, process);
        }
        Ok(())
    }

    /// Writes `message`, taken from the incoming channel `at` (from `from`), into
    /// that channel's record for every snapshot recording it.
    #[inline(never)]
    fn record_message(&mut self, at: usize, from: NodeId, message: &P::Message, process: &P) {
        for recording in self.recording.values_mut() {
            // Every recording has a record per incoming channel: `record` creates
            // them, and channels cannot be added while recording.
            if let Some(recorded) = recording.channels.get_mut(at)
                && recorded.open
            {
                process.record(&mut recorded.record.record, from, message);
                recorded.record.messages += 1;
            }
        }
    }

    /// The outgoing channel `self -> to`, for [`count_sent`](Self::count_sent): a
    /// sender that checks the channel before it hands the message over, and counts it
    /// once it has gone, looks it up once.
    pub(crate) fn outgoing_channel(&self, to: NodeId) -> Result<usize, EngineError> {
        self.sent.index(to).ok_or(EngineError::UnknownChannel {
            node: self.me,
            from: self.me,
            to,
        })
    }

    /// An application message was put on `channel`, from
    /// [`outgoing_channel`](Self::outgoing_channel) with nothing done to the engine
    /// since (a channel added in between would move the others).
    pub(crate) fn count_sent(&mut self, channel: usize) {
        if let Some(count) = self.sent.counts.get_mut(channel) {
            *count += 1;
        }
    }

    /// An application message was put on the channel `self -> to`.
    pub fn on_send(&mut self, to: NodeId) -> Result<(), EngineError> {
        let at = self.sent.index(to).ok_or(EngineError::UnknownChannel {
            node: self.me,
            from: self.me,
            to,
        })?;
        self.sent.counts[at] += 1;
        Ok(())
    }

    /// Refuses to start snapshot `id` (`None`: a new one of this node's) when this node
    /// already records as many as it may.
    fn check_room(&self, id: Option<SnapshotId>) -> Result<(), EngineError> {
        if self.recording.len() < self.max_in_flight {
            Ok(())
        } else {
            Err(EngineError::TooManyInFlight {
                node: self.me,
                limit: self.max_in_flight,
                id,
            })
        }
    }

    /// The index of the incoming channel `from -> self`.
    #[inline]
    fn check_incoming(&self, from: NodeId) -> Result<usize, EngineError> {
        self.received
            .index(from)
            .ok_or(EngineError::UnknownChannel {
                node: self.me,
                from,
                to: self.me,
            })
    }

    /// Records this node's part of snapshot `id`; `closed` is the index of the
    /// channel whose marker started it, recorded as empty.
    fn record(&mut self, id: SnapshotId, closed: Option<usize>, process: &P) -> Actions<P> {
        let channels: Vec<Recorded<P::Record>> = (0..self.received.len())
            .map(|at| Recorded {
                open: Some(at) != closed,
                record: ChannelRecord::default(),
            })
            .collect();
        let recording = Recording {
            state: process.capture(),
            sent: self.sent.counts(),
            received: self.received.counts(),
            open_count: channels.iter().filter(|c| c.open).count(),
            channels,
        };
        let complete = recording.open_count == 0;
        self.recording.insert(id, recording);
        let mut actions = Vec::with_capacity(self.sent.len() + 2);
        actions.push(Action::Recorded { id });
        actions.extend(
            self.sent
                .peers
                .iter()
                .map(|&to| Action::SendMarker { to, id }),
        );
        if complete {
            actions.extend(self.complete(id));
        }
        actions
    }

    /// Completes snapshot `id`, whose channels are all closed: its local snapshot.
    fn complete(&mut self, id: SnapshotId) -> Option<Action<P::State, P::Record>> {
        let recording = self.recording.remove(&id)?;
        self.finished
            .entry(id.initiator)
            .or_default()
            .insert(id.seq);
        let Recording {
            state,
            sent,
            received,
            channels,
            ..
        } = recording;
        Some(Action::Complete(LocalSnapshot {
            id,
            node: self.me,
            state,
            channels: self
                .received
                .peers
                .iter()
                .copied()
                .zip(channels.into_iter().map(|recorded| recorded.record))
                .collect(),
            sent,
            received,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::Finished;

    fn runs(finished: &Finished) -> Vec<(u64, u64)> {
        finished.runs.iter().map(|(&a, &b)| (a, b)).collect()
    }

    #[test]
    fn a_far_first_sequence_number_costs_one_run() {
        let mut finished = Finished::default();
        for seq in 1_000_000..1_010_000 {
            finished.insert(seq);
        }
        assert_eq!(runs(&finished), [(1_000_000, 1_009_999)]);
        assert!(!finished.contains(0));
        assert!(!finished.contains(999_999));
        assert!(finished.contains(1_000_000));
        assert!(finished.contains(1_009_999));
        assert!(!finished.contains(1_010_000));
    }

    #[test]
    fn a_restart_at_a_new_epoch_adds_one_run() {
        let mut finished = Finished::default();
        for seq in (0..3).chain(1000..1100) {
            finished.insert(seq);
        }
        assert_eq!(runs(&finished), [(0, 2), (1000, 1099)]);
    }

    #[test]
    fn runs_merge_as_gaps_fill_in_any_order() {
        let mut finished = Finished::default();
        for seq in [5, 1, 3, 9, 7] {
            finished.insert(seq);
        }
        assert_eq!(runs(&finished), [(1, 1), (3, 3), (5, 5), (7, 7), (9, 9)]);
        for seq in [8, 2, 6, 4, 4, 0] {
            finished.insert(seq);
        }
        assert_eq!(runs(&finished), [(0, 9)]);
        assert!((0..10).all(|seq| finished.contains(seq)));
        assert!(!finished.contains(10));
    }

    #[test]
    fn the_last_sequence_numbers_do_not_overflow() {
        let mut finished = Finished::default();
        finished.insert(u64::MAX);
        finished.insert(u64::MAX - 2);
        assert_eq!(
            runs(&finished),
            [(u64::MAX - 2, u64::MAX - 2), (u64::MAX, u64::MAX)]
        );
        finished.insert(u64::MAX - 1);
        assert_eq!(runs(&finished), [(u64::MAX - 2, u64::MAX)]);
        assert!(finished.contains(u64::MAX));
    }

    #[test]
    fn equal_sets_are_equal_whatever_the_order_of_insertion() {
        let (mut a, mut b) = (Finished::default(), Finished::default());
        for seq in [4, 0, 2, 1, 3, 10] {
            a.insert(seq);
        }
        for seq in [10, 0, 1, 2, 3, 4] {
            b.insert(seq);
        }
        assert_eq!(a, b);
    }
}
