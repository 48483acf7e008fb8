//! Local snapshots, as each node records them, and the global snapshot assembled from
//! them.

use crate::{NodeId, SnapshotId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What a node recorded of one incoming channel during a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord<R> {
    /// The application's record of the messages caught in transit
    /// (see [`Process::record`](crate::Process::record)).
    pub record: R,
    /// How many application messages were caught in transit.
    pub messages: u64,
}

impl<R: Default> Default for ChannelRecord<R> {
    fn default() -> Self {
        ChannelRecord {
            record: R::default(),
            messages: 0,
        }
    }
}

/// One node's part of a snapshot: its own state, the state of its incoming channels,
/// and the message counts that let the global snapshot prove the cut consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSnapshot<S, R> {
    /// The snapshot this is part of.
    pub id: SnapshotId,
    /// The node that recorded it.
    pub node: NodeId,
    /// The process's state when the node recorded.
    pub state: S,
    /// Every incoming channel, by sender: the messages caught in transit on it.
    pub channels: BTreeMap<NodeId, ChannelRecord<R>>,
    /// Every outgoing channel, by receiver: how many application messages the node had
    /// sent on it when it recorded.
    pub sent: BTreeMap<NodeId, u64>,
    /// Every incoming channel, by sender: how many application messages the node had
    /// taken from it when it recorded.
    pub received: BTreeMap<NodeId, u64>,
}

/// Why local snapshots do not make a global snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// A local snapshot belongs to another snapshot.
    #[error("local snapshot of node {node} belongs to snapshot {found}, not {expected}")]
    WrongSnapshot {
        /// The node that sent it.
        node: NodeId,
        /// The snapshot being assembled.
        expected: SnapshotId,
        /// The snapshot it belongs to.
        found: SnapshotId,
    },
    /// Two local snapshots came from the same node.
    #[error("node {0} reported twice")]
    Duplicate(NodeId),
    /// A local snapshot came from a node the collector does not expect.
    #[error("node {0} is not one of the nodes this collector expects")]
    UnexpectedNode(NodeId),
    /// A channel names a node that has no local snapshot.
    #[error("channel ({from} -> {to}) names a node with no local snapshot")]
    MissingNode {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// One end of a channel knows it and the other does not.
    #[error("channel ({from} -> {to}) is known to only one of its ends")]
    UnmatchedChannel {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// The cut is not consistent: the counts on a channel do not add up.
    #[error(
        "channel ({from} -> {to}): {sent} sent before the cut, but {received} received before it and {recorded} recorded in transit"
    )]
    InconsistentCut {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// Messages the sender had sent when it recorded.
        sent: u64,
        /// Messages the receiver had taken when it recorded.
        received: u64,
        /// Messages the receiver recorded as in transit.
        recorded: u64,
    },
}

/// A snapshot of the whole system: one local snapshot per node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalSnapshot<S, R> {
    id: SnapshotId,
    nodes: BTreeMap<NodeId, LocalSnapshot<S, R>>,
}

impl<S, R> GlobalSnapshot<S, R> {
    /// Starts assembling snapshot `id`, with no local snapshot yet.
    pub fn new(id: SnapshotId) -> Self {
        GlobalSnapshot {
            id,
            nodes: BTreeMap::new(),
        }
    }

    /// Assembles a global snapshot from local snapshots that all belong to `id`.
    pub fn from_locals(
        id: SnapshotId,
        locals: impl IntoIterator<Item = LocalSnapshot<S, R>>,
    ) -> Result<Self, SnapshotError> {
        let mut global = GlobalSnapshot::new(id);
        for local in locals {
            global.insert(local)?;
        }
        Ok(global)
    }

    /// Adds one node's local snapshot.
    pub fn insert(&mut self, local: LocalSnapshot<S, R>) -> Result<(), SnapshotError> {
        if local.id != self.id {
            return Err(SnapshotError::WrongSnapshot {
                node: local.node,
                expected: self.id,
                found: local.id,
            });
        }
        if self.nodes.contains_key(&local.node) {
            return Err(SnapshotError::Duplicate(local.node));
        }
        self.nodes.insert(local.node, local);
        Ok(())
    }

    /// The snapshot's id.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// The local snapshots, in ascending node id order.
    pub fn nodes(&self) -> impl Iterator<Item = &LocalSnapshot<S, R>> {
        self.nodes.values()
    }

    /// The local snapshot of `node`, if it has reported.
    pub fn node(&self, node: NodeId) -> Option<&LocalSnapshot<S, R>> {
        self.nodes.get(&node)
    }

    /// Every recorded channel as `(from, to, record)`, ordered by sender and then by
    /// receiver.
    pub fn channels(&self) -> Vec<(NodeId, NodeId, &ChannelRecord<R>)> {
        let mut channels: Vec<_> = self
            .nodes
            .values()
            .flat_map(|local| {
                local
                    .channels
                    .iter()
                    .map(move |(&from, record)| (from, local.node, record))
            })
            .collect();
        channels.sort_by_key(|&(from, to, _)| (from, to));
        channels
    }

    /// Checks that the snapshot is a consistent cut of the run.
    ///
    /// For every channel `i -> j`: the messages `i` had sent when it recorded equal the
    /// messages `j` had taken when it recorded plus the messages `j` recorded in
    /// transit. No message is counted twice (received and in transit) and none is lost
    /// (sent but nowhere), whatever the application's messages are.
    pub fn check_cut(&self) -> Result<(), SnapshotError> {
        for sender in self.nodes.values() {
            for (&to, &sent) in &sender.sent {
                let receiver = self.nodes.get(&to).ok_or(SnapshotError::MissingNode {
                    from: sender.node,
                    to,
                })?;
                let unmatched = SnapshotError::UnmatchedChannel {
                    from: sender.node,
                    to,
                };
                let received = *receiver
                    .received
                    .get(&sender.node)
                    .ok_or(unmatched.clone())?;
                let recorded = receiver
                    .channels
                    .get(&sender.node)
                    .ok_or(unmatched)?
                    .messages;
                if received.checked_add(recorded) != Some(sent) {
                    return Err(SnapshotError::InconsistentCut {
                        from: sender.node,
                        to,
                        sent,
                        received,
                        recorded,
                    });
                }
            }
        }
        for receiver in self.nodes.values() {
            for &from in receiver.channels.keys() {
                let known_to_sender = self
                    .nodes
                    .get(&from)
                    .ok_or(SnapshotError::MissingNode {
                        from,
                        to: receiver.node,
                    })?
                    .sent
                    .contains_key(&receiver.node);
                if !known_to_sender {
                    return Err(SnapshotError::UnmatchedChannel {
                        from,
                        to: receiver.node,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Assembles [`GlobalSnapshot`]s from local snapshots as they come, for a collector
/// that knows which nodes take part: any number of snapshots may be in flight at
/// once, and their local parts may come in any order. A part from a node it does not
/// expect is refused ([`SnapshotError::UnexpectedNode`]).
///
/// ```
/// use snapshot_core::{Collector, LocalSnapshot, NodeId, SnapshotId};
///
/// let first = SnapshotId { initiator: NodeId(1), seq: 0 };
/// let second = SnapshotId { initiator: NodeId(2), seq: 0 };
/// let local = |node, id| LocalSnapshot::<u64, u64> {
///     id,
///     node: NodeId(node),
///     state: 10,
///     channels: Default::default(),
///     sent: Default::default(),
///     received: Default::default(),
/// };
/// let mut collector = Collector::new([NodeId(1), NodeId(2)]);
/// assert!(collector.add(local(1, first))?.is_none());
/// assert!(collector.add(local(1, second))?.is_none());
/// let done = collector.add(local(2, second))?.expect("both nodes of the second");
/// assert_eq!(done.id(), second);
/// assert_eq!(collector.in_progress(), 1);
/// # Ok::<(), snapshot_core::SnapshotError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Collector<S, R> {
    nodes: BTreeSet<NodeId>,
    assembling: BTreeMap<SnapshotId, GlobalSnapshot<S, R>>,
}

impl<S, R> Collector<S, R> {
    /// A collector for snapshots that `nodes` take part in: every one of them, and no
    /// other.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Collector {
            nodes: nodes.into_iter().collect(),
            assembling: BTreeMap::new(),
        }
    }

    /// The nodes whose parts make a snapshot whole.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().copied()
    }

    /// The snapshots with some parts in, but not all, and the nodes whose parts are
    /// still missing from each.
    pub fn missing(&self) -> impl Iterator<Item = (SnapshotId, Vec<NodeId>)> + '_ {
        self.assembling.iter().map(|(&id, global)| {
            let missing = self
                .nodes
                .iter()
                .copied()
                .filter(|node| !global.nodes.contains_key(node))
                .collect();
            (id, missing)
        })
    }

    /// Adds one node's part of a snapshot; returns the snapshot once every node's part
    /// is in, and forgets it. A node that reports the same snapshot twice is refused
    /// ([`SnapshotError::Duplicate`]), and nothing changes.
    pub fn add(
        &mut self,
        local: LocalSnapshot<S, R>,
    ) -> Result<Option<GlobalSnapshot<S, R>>, SnapshotError> {
        let id = local.id;
        if !self.nodes.contains(&local.node) {
            return Err(SnapshotError::UnexpectedNode(local.node));
        }
        let global = self
            .assembling
            .entry(id)
            .or_insert_with(|| GlobalSnapshot::new(id));
        global.insert(local)?;
        if global.nodes.len() < self.nodes.len() {
            return Ok(None);
        }
        Ok(self.assembling.remove(&id))
    }

    /// How many snapshots have some parts in, but not all.
    pub fn in_progress(&self) -> usize {
        self.assembling.len()
    }

    /// Gives up on snapshot `id`, returning the parts that came (a node has gone,
    /// say).
    pub fn abandon(&mut self, id: SnapshotId) -> Option<GlobalSnapshot<S, R>> {
        self.assembling.remove(&id)
    }
}
