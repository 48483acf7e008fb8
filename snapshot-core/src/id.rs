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
    /// The initiator's sequence number for it, counting from 0.
    pub seq: u64,
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.initiator, self.seq)
    }
}

/// An address on a [`Transport`](crate::Transport): a node, or one of the two roles
/// around the nodes.
///
/// Keeping the roles apart from node ids means no node id is ever reserved for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    /// A node of the snapshot protocol.
    Node(NodeId),
    /// The role that collects local snapshots into global ones.
    Observer,
    /// The role that drives the nodes (for example, a test harness or a command shell).
    Master,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Node(id) => write!(f, "node {id}"),
            Endpoint::Observer => f.write_str("observer"),
            Endpoint::Master => f.write_str("master"),
        }
    }
}

impl From<NodeId> for Endpoint {
    fn from(id: NodeId) -> Self {
        Endpoint::Node(id)
    }
}
