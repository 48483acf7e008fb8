//! The master's count of the messages in each channel, with the non-empty channels
//! ranked in numeric (source, destination) order, so that the random choices of
//! `Receive TO` and `ReceiveAll` cost O(log n) and O(n) instead of a scan of every
//! channel per message.

use snapshot_core::NodeId;

/// Message counts of the channels of a complete graph of nodes.
#[derive(Debug, Clone, Default)]
pub struct ChannelCounts {
    /// The nodes, in ascending order: a node's position is its row and column.
    nodes: Vec<NodeId>,
    /// `counts[row * n + column]`: messages in the channel `nodes[row] -> nodes[column]`.
    counts: Vec<u64>,
    /// A Fenwick tree over the same cells holding 1 for each non-empty channel.
    ranks: Vec<u32>,
    nonempty: usize,
}

impl ChannelCounts {
    /// Adds a node, with empty channels to and from every other node.
    pub fn add_node(&mut self, node: NodeId) {
        let Err(position) = self.nodes.binary_search(&node) else {
            return;
        };
        let old = std::mem::take(self);
        self.nodes = old.nodes.clone();
        self.nodes.insert(position, node);
        let n = self.nodes.len();
        self.counts = vec![0; n * n];
        self.ranks = vec![0; n * n + 1];
        for (row, &from) in old.nodes.iter().enumerate() {
            for (column, &to) in old.nodes.iter().enumerate() {
                let count = old.counts[row * old.nodes.len() + column];
                if count > 0
                    && let Some(cell) = self.cell(from, to)
                {
                    self.counts[cell] = count;
                    self.rank(cell, 1);
                    self.nonempty += 1;
                }
            }
        }
    }

    fn cell(&self, from: NodeId, to: NodeId) -> Option<usize> {
        let row = self.nodes.binary_search(&from).ok()?;
        let column = self.nodes.binary_search(&to).ok()?;
        Some(row * self.nodes.len() + column)
    }

    fn rank(&mut self, cell: usize, delta: i32) {
        let mut i = cell + 1;
        while i < self.ranks.len() {
            self.ranks[i] = self.ranks[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// The messages in the channel `from -> to` (0 for a channel that does not exist).
    pub fn count(&self, from: NodeId, to: NodeId) -> u64 {
        self.cell(from, to).map_or(0, |cell| self.counts[cell])
    }

    /// One more message in the channel `from -> to`. Does nothing if a node is unknown.
    pub fn push(&mut self, from: NodeId, to: NodeId) {
        let Some(cell) = self.cell(from, to) else {
            return;
        };
        self.counts[cell] += 1;
        if self.counts[cell] == 1 {
            self.rank(cell, 1);
            self.nonempty += 1;
        }
    }

    /// One message fewer in the channel `from -> to`, if it has any.
    pub fn pop(&mut self, from: NodeId, to: NodeId) {
        let Some(cell) = self.cell(from, to) else {
            return;
        };
        if self.counts[cell] == 0 {
            return;
        }
        self.counts[cell] -= 1;
        if self.counts[cell] == 0 {
            self.rank(cell, -1);
            self.nonempty -= 1;
        }
    }

    /// How many channels hold a message.
    pub fn nonempty(&self) -> usize {
        self.nonempty
    }

    /// The `k`-th non-empty channel (from 0) in (source, destination) order.
    pub fn nth_nonempty(&self, k: usize) -> Option<(NodeId, NodeId)> {
        if k >= self.nonempty {
            return None;
        }
        let mut remaining = k as u32;
        let mut position = 0;
        let mut step = (self.ranks.len() - 1).next_power_of_two();
        while step > 0 {
            let next = position + step;
            if next < self.ranks.len() && self.ranks[next] <= remaining {
                position = next;
                remaining -= self.ranks[next];
            }
            step /= 2;
        }
        // `position` cells rank at most k: the k-th non-empty cell is the next one.
        let n = self.nodes.len();
        Some((self.nodes[position / n], self.nodes[position % n]))
    }

    /// The sources of the non-empty channels into `to`, in ascending order.
    pub fn nonempty_into(&self, to: NodeId) -> Vec<NodeId> {
        let Ok(column) = self.nodes.binary_search(&to) else {
            return Vec::new();
        };
        let n = self.nodes.len();
        (0..n)
            .filter(|row| self.counts[row * n + column] > 0)
            .map(|row| self.nodes[row])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice::Chooser;
    use std::collections::BTreeMap;

    #[test]
    fn ranks_agree_with_a_sorted_map() {
        let mut chooser = Chooser::new(11);
        let ids = [230u32, 7, 15, 4_294_967_295, 0, 8];
        let mut counts = ChannelCounts::default();
        let mut model: BTreeMap<(NodeId, NodeId), u64> = BTreeMap::new();
        let mut nodes = Vec::new();
        for step in 0..4000 {
            if step % 500 == 0 && nodes.len() < ids.len() {
                let id = NodeId(ids[nodes.len()]);
                nodes.push(id);
                counts.add_node(id);
            }
            if nodes.len() < 2 {
                continue;
            }
            let from = nodes[chooser.pick(nodes.len())];
            let to = nodes[chooser.pick(nodes.len())];
            if from == to {
                continue;
            }
            if chooser.pick(2) == 0 {
                counts.push(from, to);
                *model.entry((from, to)).or_default() += 1;
            } else if let Some(c) = model.get_mut(&(from, to)) {
                counts.pop(from, to);
                *c -= 1;
                if *c == 0 {
                    model.remove(&(from, to));
                }
            }
            assert_eq!(counts.nonempty(), model.len());
            for (k, (&channel, &count)) in model.iter().enumerate() {
                assert_eq!(counts.nth_nonempty(k), Some(channel), "rank {k}");
                assert_eq!(counts.count(channel.0, channel.1), count);
            }
            assert_eq!(counts.nth_nonempty(model.len()), None);
            let into: Vec<NodeId> = model.keys().filter(|c| c.1 == to).map(|c| c.0).collect();
            assert_eq!(counts.nonempty_into(to), into);
        }
    }
}
