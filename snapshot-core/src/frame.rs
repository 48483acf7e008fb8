//! What travels between endpoints.

use crate::SnapshotId;
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
/// application: node-to-node traffic, and the application's own control traffic
/// (commands, acknowledgements, collected snapshots) of type `C`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame<M, C> {
    /// Node-to-node traffic, handled by the snapshot protocol.
    Peer(Envelope<M>),
    /// Anything else, for the application.
    Control(C),
}
