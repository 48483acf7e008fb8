//! Names: of nodes, of snapshots, and of the endpoints a transport connects.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The identity of a process taking part in snapshots.
///
/// Node ids are plain integers so that they order numerically (node 8 before node 15)
/// and are cheap to put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u32> for NodeId {
    fn from(id: u32) -> Self {
        NodeId(id)
    }
}

/// The identity of one snapshot.
///
/// It names the node that initiated the snapshot and that node's own counter, so any
/// node can start snapshots without coordinating with the others and ids never clash.
/// Every marker carries the id of the snapshot it belongs to, which is what lets
/// several snapshots be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotId {
    /// The node that initiated the snapshot.
    pub initiator: NodeId,
    /// The initiator's sequence number for it, counting from the initiator's epoch: 0,
    /// or past every sequence number it used before a restart (see
    /// [`SnapshotEngine::with_epoch`](crate::SnapshotEngine::with_epoch)).
    pub seq: u64,
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.initiator, self.seq)
    }
}

/// An address on a [`Transport`](crate::Transport): a node, or an endpoint of the
/// application's own around the nodes.
///
/// Which roles an application has (a coordinator, an observer, a command shell, ...)
/// is its own business: it numbers them, and names them in constants of its own:
///
/// ```
/// use snapshot_core::Endpoint;
///
/// const COORDINATOR: Endpoint = Endpoint::Role(0);
/// assert_eq!(COORDINATOR.to_string(), "role 0");
/// ```
///
/// Keeping the roles apart from node ids means no node id is ever reserved for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    /// A node of the snapshot protocol.
    Node(NodeId),
    /// An endpoint of the application's, by the number it gives it.
    Role(u16),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Node(id) => write!(f, "node {id}"),
            Endpoint::Role(role) => write!(f, "role {role}"),
        }
    }
}

impl From<NodeId> for Endpoint {
    fn from(id: NodeId) -> Self {
        Endpoint::Node(id)
    }
}
