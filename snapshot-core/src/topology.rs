//! Which channels link which nodes: a directed graph, and whether snapshots can
//! complete on it.
//!
//! A channel has a direction. A snapshot completes at a node once a marker has come
//! on each of its incoming channels, so it completes everywhere only if markers,
//! which travel along channels, reach every node from every initiator: the graph must
//! be **strongly connected** (every node reaches every other along channels). On a
//! one-way ring it is; on a line `1 -> 2 -> 3` it is not (node 3 reaches nobody, and a
//! snapshot it starts never completes at 1 or 2).

use crate::{EngineError, Node, NodeId, Process};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Why snapshots cannot complete on a topology.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// It has no node.
    #[error("the topology has no node")]
    Empty,
    /// Some node cannot be reached from another, so a snapshot started there never
    /// completes at it.
    #[error(
        "node {to} cannot be reached from node {from}: a snapshot started at {from} would never complete at {to}"
    )]
    NotStronglyConnected {
        /// A node from which `to` cannot be reached.
        from: NodeId,
        /// The node it cannot reach.
        to: NodeId,
    },
}

/// A directed graph of nodes and channels.
///
/// ```
/// use snapshot_core::NodeId;
/// use snapshot_core::topology::Topology;
///
/// let ids = [1, 2, 3].map(NodeId);
/// let ring = Topology::ring(ids);
/// assert_eq!(ring.outgoing(NodeId(3)).collect::<Vec<_>>(), [NodeId(1)]);
/// assert_eq!(ring.incoming(NodeId(3)).collect::<Vec<_>>(), [NodeId(2)]);
/// ring.check()?;
///
/// let mut line = Topology::default();
/// line.link(NodeId(1), NodeId(2));
/// line.link(NodeId(2), NodeId(3));
/// assert!(line.check().is_err(), "nothing comes back from 3");
/// # Ok::<(), snapshot_core::topology::TopologyError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every node, with its outgoing channels.
    out: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Topology {
    /// Every node of `ids` with both channels to every other.
    pub fn complete(ids: impl IntoIterator<Item = NodeId>) -> Self {
        let ids: Vec<NodeId> = ids.into_iter().collect();
        let mut topology = Topology::default();
        for &a in &ids {
            topology.add_node(a);
            for &b in &ids {
                if a != b {
                    topology.link(a, b);
                }
            }
        }
        topology
    }

    /// The nodes of `ids` in a one-way ring, in the order given: each has one channel,
    /// to the next, and the last to the first.
    pub fn ring(ids: impl IntoIterator<Item = NodeId>) -> Self {
        let ids: Vec<NodeId> = ids.into_iter().collect();
        let mut topology = Topology::default();
        for (at, &id) in ids.iter().enumerate() {
            topology.add_node(id);
            let next = ids[(at + 1) % ids.len()];
            if next != id {
                topology.link(id, next);
            }
        }
        topology
    }

    /// Adds `node`, with no channel yet.
    pub fn add_node(&mut self, node: NodeId) {
        self.out.entry(node).or_default();
    }

    /// Adds the one channel `from -> to` (and both nodes). A node cannot have a
    /// channel to itself: such a link is ignored.
    pub fn link(&mut self, from: NodeId, to: NodeId) {
        self.add_node(to);
        let out = self.out.entry(from).or_default();
        if from != to {
            out.insert(to);
        }
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.out.keys().copied()
    }

    /// Every channel, as `(from, to)`, in order.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.out
            .iter()
            .flat_map(|(&from, to)| to.iter().map(move |&to| (from, to)))
    }

    /// The nodes `node` has a channel to.
    pub fn outgoing(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.out.get(&node).into_iter().flatten().copied()
    }

    /// The nodes that have a channel to `node`.
    pub fn incoming(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.out
            .iter()
            .filter(move |(_, to)| to.contains(&node))
            .map(|(&from, _)| from)
    }

    /// Checks that snapshots can complete: the graph is strongly connected. The error
    /// names a pair of nodes that shows it is not.
    pub fn check(&self) -> Result<(), TopologyError> {
        let Some(&first) = self.out.keys().next() else {
            return Err(TopologyError::Empty);
        };
        // Everyone reachable from the first, and the first reachable from everyone.
        let forward = self.reach(first, |node| self.outgoing(node).collect());
        if let Some(&to) = self.out.keys().find(|n| !forward.contains(n)) {
            return Err(TopologyError::NotStronglyConnected { from: first, to });
        }
        let backward = self.reach(first, |node| self.incoming(node).collect());
        if let Some(&from) = self.out.keys().find(|n| !backward.contains(n)) {
            return Err(TopologyError::NotStronglyConnected { from, to: first });
        }
        Ok(())
    }

    fn reach(&self, start: NodeId, next: impl Fn(NodeId) -> Vec<NodeId>) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::from([start]);
        let mut todo = vec![start];
        while let Some(node) = todo.pop() {
            for n in next(node) {
                if seen.insert(n) {
                    todo.push(n);
                }
            }
        }
        seen
    }

    /// Gives `node` its channels in this topology: an incoming channel from each node
    /// that links to it, an outgoing one to each it links to.
    pub fn join<P: Process>(&self, node: &mut Node<P>) -> Result<(), EngineError> {
        let me = node.id();
        for from in self.incoming(me) {
            node.add_incoming(from)?;
        }
        for to in self.outgoing(me) {
            node.add_outgoing(to)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_graphs_and_rings_are_strongly_connected_and_lines_are_not() {
        let ids = || (1..=5).map(NodeId);
        Topology::complete(ids()).check().unwrap();
        Topology::ring(ids()).check().unwrap();
        Topology::ring([NodeId(7)]).check().unwrap();
        let mut line = Topology::default();
        line.link(NodeId(1), NodeId(2));
        assert_eq!(
            line.check(),
            Err(TopologyError::NotStronglyConnected {
                from: NodeId(2),
                to: NodeId(1)
            })
        );
        let mut apart = Topology::ring([NodeId(1), NodeId(2)]);
        apart.add_node(NodeId(3));
        assert_eq!(
            apart.check(),
            Err(TopologyError::NotStronglyConnected {
                from: NodeId(1),
                to: NodeId(3)
            })
        );
        assert_eq!(Topology::default().check(), Err(TopologyError::Empty));
    }

    #[test]
    fn a_ring_links_each_node_to_the_next_only() {
        let ring = Topology::ring([3, 1, 2].map(NodeId));
        assert_eq!(
            ring.links().collect::<Vec<_>>(),
            [
                (NodeId(1), NodeId(2)),
                (NodeId(2), NodeId(3)),
                (NodeId(3), NodeId(1))
            ]
        );
    }
}
