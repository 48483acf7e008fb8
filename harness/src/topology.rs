//! Which nodes a run has, and which are linked.

use snapshot_core::NodeId;

/// The shape of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Two nodes linked both ways; only node 1 sends transfers.
    OneWay,
    /// Nodes 1..=n on a ring, each linked both ways to its two neighbours (to the
    /// other node only, when n = 2).
    Ring(u32),
}

impl Topology {
    /// The number of nodes.
    pub fn nodes(self) -> u32 {
        match self {
            Topology::OneWay => 2,
            Topology::Ring(n) => n,
        }
    }

    /// The nodes `node` is linked to (both ways), in the order it sends to them;
    /// none for a node that is not in the topology.
    pub fn neighbours(self, node: u32) -> Vec<NodeId> {
        match self {
            _ if node == 0 || node > self.nodes() => Vec::new(),
            Topology::OneWay => vec![NodeId(3 - node)],
            Topology::Ring(n) if n <= 2 => (1..=n).filter(|&p| p != node).map(NodeId).collect(),
            Topology::Ring(n) => {
                let next = node % n + 1;
                let previous = (node + n - 2) % n + 1;
                vec![NodeId(next), NodeId(previous)]
            }
        }
    }

    /// The channels of the run: one each way between every node and each of its
    /// neighbours.
    pub fn graph(self) -> snapshot_core::topology::Topology {
        let mut graph = snapshot_core::topology::Topology::default();
        for node in 1..=self.nodes() {
            graph.add_node(NodeId(node));
            for peer in self.neighbours(node) {
                graph.link(NodeId(node), peer);
            }
        }
        graph
    }

    /// Whether `node` sends transfers when it works.
    pub fn sends(self, node: u32) -> bool {
        !matches!(self, Topology::OneWay if node != 1)
    }
}
