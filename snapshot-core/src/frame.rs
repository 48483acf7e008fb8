//! What travels between endpoints.

use crate::{Aborted, LocalSnapshot, SnapshotId};
use serde::{Deserialize, Serialize};

/// What travels on a node-to-node channel: an application message or a marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Envelope<M> {
    /// An application message.
    App(M),
    /// The marker of a snapshot.
    Marker(SnapshotId),
}

/// Everything a [`Transport`](crate::Transport) carries for a snapshot-taking
/// application whose messages are `M`, whose local snapshots are
/// [`LocalSnapshot<S, R>`], and whose own control traffic (commands, replies) is `C`.
///
/// The type parameters come in the same order everywhere in this crate: the
/// process's message, state and record, then the application's control traffic.
/// [`NodeFrame`](crate::NodeFrame) names the frame of a [`Process`](crate::Process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame<M, S, R, C = ()> {
    /// Node-to-node traffic, handled by the snapshot protocol.
    Peer(Envelope<M>),
    /// Between a [`Coordinator`](crate::Coordinator) and the nodes, handled by the
    /// [`Node`](crate::Node) driver and the coordinator.
    Snapshot(Coordination<S, R>),
    /// Anything else, for the application.
    Control(C),
}

/// What a [`Coordinator`](crate::Coordinator) and the [`Node`](crate::Node)s it
/// coordinates say to each other. Neither the application nor its control traffic
/// takes part: the driver answers by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coordination<S, R> {
    /// Coordinator to node: start a snapshot.
    Initiate,
    /// Node to coordinator: the snapshot it was asked for has started, with this id.
    Started(SnapshotId),
    /// Node to coordinator: its part of a snapshot (boxed, so that every frame does
    /// not take the size of a snapshot).
    Report(Box<LocalSnapshot<S, R>>),
    /// Coordinator to node: give up on this snapshot (it missed its deadline).
    Abort(SnapshotId),
    /// Node to coordinator: it has given up on this snapshot, and what it knew of it.
    Aborted(SnapshotId, Aborted),
}
