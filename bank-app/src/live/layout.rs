//! Which branches a load has, what each opens with, and which channels join them:
//! a complete graph, a one-way ring, or a topology file.
//!
//! A topology file is plain text, one declaration a line:
//!
//! ```text
//! # three branches; 30 never holds anything until it is paid
//! node 10 500
//! node 20 250
//! node 30 0
//! link 10 20   # one direction: 10 sends to 20
//! link 20 30
//! link 30 10
//! link 20 10
//! ```
//!
//! `node ID BALANCE` declares a branch and its opening balance (ids are any numbers
//! from 0 to 4294967295, in any order; a balance may be 0); `link FROM TO` a channel
//! from one declared branch to another, one way. `#` starts a comment to the end of
//! the line; blank lines are skipped. Numbers are plain decimal digits.

use snapshot_core::NodeId;
use snapshot_core::topology::Topology;
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

/// The most branches a load runs: they are threads of one process, with a channel
/// each way between every two on a complete graph.
pub const MAX_NODES: usize = 256;

/// The branches of a load, their opening balances, and their channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The channels, one way each.
    pub topology: Topology,
    /// Every branch's opening balance.
    pub balances: BTreeMap<NodeId, u64>,
}

/// Why a layout cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// A line of a topology file says something else than a declaration.
    #[error("topology {file} line {line}: {reason}")]
    Line {
        /// The file, as given.
        file: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A topology file cannot be read.
    #[error("topology {file}: {reason}")]
    Unreadable {
        /// The file, as given.
        file: String,
        /// Why.
        reason: String,
    },
    /// The layout is not one a load can run: too small, its money past what a
    /// balance holds, or not strongly connected.
    #[error("{what}: {reason}")]
    Refused {
        /// The layout (`topology FILE`, `a ring of 8 nodes`).
        what: String,
        /// Why.
        reason: String,
    },
}

impl Layout {
    /// `nodes` branches, ids 1 to `nodes`, each opening with `balance`, with a channel
    /// each way between every two.
    pub fn complete(nodes: u32, balance: u64) -> Result<Layout, LayoutError> {
        let what = format!("a complete graph of {nodes} nodes");
        too_many(&what, nodes)?;
        let ids = (1..=nodes).map(NodeId);
        Layout::of(
            what,
            Topology::complete(ids.clone()),
            ids.map(|id| (id, balance)).collect(),
        )
    }

    /// `nodes` branches, ids 1 to `nodes`, each opening with `balance`, on a one-way
    /// ring: node `i` sends to node `i + 1` only, and the last to the first.
    pub fn ring(nodes: u32, balance: u64) -> Result<Layout, LayoutError> {
        let what = format!("a ring of {nodes} nodes");
        too_many(&what, nodes)?;
        let ids = (1..=nodes).map(NodeId);
        Layout::of(
            what,
            Topology::ring(ids.clone()),
            ids.map(|id| (id, balance)).collect(),
        )
    }

    /// The layout a topology file at `path` declares (see the [module](self)).
    pub fn read(path: &Path) -> Result<Layout, LayoutError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| LayoutError::Unreadable {
            file: file.clone(),
            reason: error.to_string(),
        })?;
        Layout::parse(&file, &text)
    }

    /// The layout `text`, the topology file `file`, declares.
    pub fn parse(file: &str, text: &str) -> Result<Layout, LayoutError> {
        let at = |line: usize, reason: String| LayoutError::Line {
            file: file.to_string(),
            line,
            reason,
        };
        let mut balances = BTreeMap::new();
        let mut declared_on = BTreeMap::new();
        let mut links = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let content = raw.split('#').next().unwrap_or_default();
            let words: Vec<&str> = content.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                ["node", id, balance] => {
                    let id = NodeId(number(id, "a node id").map_err(|r| at(line, r))?);
                    let balance = number(balance, "a balance").map_err(|r| at(line, r))?;
                    if let Some(first) = declared_on.insert(id, line) {
                        return Err(at(
                            line,
                            format!("node {id} is declared twice (first on line {first})"),
                        ));
                    }
                    if balances.len() == MAX_NODES {
                        return Err(at(
                            line,
                            format!("a load runs at most {MAX_NODES} nodes: node {id} is one more"),
                        ));
                    }
                    balances.insert(id, balance);
                }
                ["link", from, to] => {
                    let from = NodeId(number(from, "a node id").map_err(|r| at(line, r))?);
                    let to = NodeId(number(to, "a node id").map_err(|r| at(line, r))?);
                    if from == to {
                        return Err(at(
                            line,
                            format!("link {from} -> {to} joins a node to itself"),
                        ));
                    }
                    links.push((line, from, to));
                }
                ["node", ..] => {
                    return Err(at(
                        line,
                        "`node` takes an id and a balance: node ID BALANCE".to_string(),
                    ));
                }
                ["link", ..] => {
                    return Err(at(
                        line,
                        "`link` takes two node ids: link FROM TO".to_string(),
                    ));
                }
                [keyword, ..] => {
                    return Err(at(
                        line,
                        format!(
                            "unknown keyword {keyword:?}: a line is `node ID BALANCE` or `link FROM TO`"
                        ),
                    ));
                }
            }
        }
        let mut topology = Topology::default();
        for &id in balances.keys() {
            topology.add_node(id);
        }
        for (line, from, to) in links {
            for end in [from, to] {
                if !balances.contains_key(&end) {
                    return Err(at(
                        line,
                        format!("link {from} -> {to}: node {end} is not declared"),
                    ));
                }
            }
            topology.link(from, to);
        }
        Layout::of(format!("topology {file}"), topology, balances)
    }

    /// A layout of `topology` and `balances`, once it is one a load can run.
    fn of(
        what: String,
        topology: Topology,
        balances: BTreeMap<NodeId, u64>,
    ) -> Result<Layout, LayoutError> {
        let refused = |reason: String| LayoutError::Refused {
            what: what.clone(),
            reason,
        };
        if balances.len() < 2 {
            return Err(refused(format!(
                "a bank needs 2 nodes or more, not {}",
                balances.len()
            )));
        }
        if balances
            .values()
            .try_fold(0u64, |sum, &b| sum.checked_add(b))
            .is_none()
        {
            return Err(refused(format!(
                "the balances add up to more than {}",
                u64::MAX
            )));
        }
        topology.check().map_err(|error| {
            refused(format!(
                "the graph is not strongly connected, so a snapshot could not complete on it: {error}"
            ))
        })?;
        Ok(Layout { topology, balances })
    }

    /// All the money of the bank.
    pub fn total(&self) -> u64 {
        // `of` refused balances that do not add up within a u64.
        self.balances
            .values()
            .fold(0u64, |sum, &b| sum.saturating_add(b))
    }
}

/// Refuses `nodes` past [`MAX_NODES`] before anything is made for them.
fn too_many(what: &str, nodes: u32) -> Result<(), LayoutError> {
    if usize::try_from(nodes).map_or(true, |n| n > MAX_NODES) {
        return Err(LayoutError::Refused {
            what: what.to_string(),
            reason: format!("a load runs at most {MAX_NODES} nodes"),
        });
    }
    Ok(())
}

/// `word` as a number of plain decimal digits (no sign), or why not.
fn number<N: std::str::FromStr>(word: &str, what: &str) -> Result<N, String> {
    let digits = !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit());
    match word.parse::<N>() {
        Ok(n) if digits => Ok(n),
        _ => Err(format!("{word:?} is not {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_declares_nodes_with_any_ids_and_one_way_links() {
        let text = "# a triangle, one way, and back from 20\n\
                    node 10 500\n\
                    \n\
                    node 20 250   # trailing comment\n\
                    node 30 0\n\
                    link 10 20\n link 20 30\nlink 30 10\nlink 20 10\n";
        let layout = Layout::parse("t.txt", text).unwrap();
        assert_eq!(layout.total(), 750);
        assert_eq!(layout.balances[&NodeId(30)], 0);
        let links: Vec<_> = layout.topology.links().collect();
        assert_eq!(links.len(), 4);
        assert_eq!(
            layout.topology.outgoing(NodeId(20)).collect::<Vec<_>>(),
            [NodeId(10), NodeId(30)]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let error = |text: &str| Layout::parse("t.txt", text).unwrap_err().to_string();
        assert_eq!(
            error("node 1 5\nnode 2 5\nlnk 1 2\n"),
            "topology t.txt line 3: unknown keyword \"lnk\": a line is `node ID BALANCE` or `link FROM TO`"
        );
        assert_eq!(
            error("node 1 x\n"),
            "topology t.txt line 1: \"x\" is not a balance"
        );
        assert_eq!(
            error("node 1 -5\n"),
            "topology t.txt line 1: \"-5\" is not a balance"
        );
        assert_eq!(
            error("node 1 5\nnode 1 6\n"),
            "topology t.txt line 2: node 1 is declared twice (first on line 1)"
        );
        assert_eq!(
            error("node 1 5\nlink 1 9\n"),
            "topology t.txt line 2: link 1 -> 9: node 9 is not declared"
        );
        assert_eq!(
            error("node 1 5\n\nlink 1 1\n"),
            "topology t.txt line 3: link 1 -> 1 joins a node to itself"
        );
        assert_eq!(
            error("node 1\n"),
            "topology t.txt line 1: `node` takes an id and a balance: node ID BALANCE"
        );
    }

    #[test]
    fn a_graph_that_is_not_strongly_connected_is_refused_with_the_reason() {
        let text = "node 1 5\nnode 2 5\nnode 3 5\nlink 1 2\nlink 2 1\nlink 2 3\n";
        let error = Layout::parse("t.txt", text).unwrap_err().to_string();
        assert!(error.starts_with("topology t.txt: the graph is not strongly connected, so a snapshot could not complete on it: "), "{error}");
        assert!(
            error.contains("node 1 cannot be reached from node 3"),
            "{error}"
        );
        assert!(Layout::parse("t.txt", "node 1 5\n").is_err());
        assert!(Layout::parse("t.txt", "").is_err());
    }

    #[test]
    fn rings_go_one_way_and_complete_graphs_both() {
        let ring = Layout::ring(4, 10).unwrap();
        assert_eq!(
            ring.topology.outgoing(NodeId(4)).collect::<Vec<_>>(),
            [NodeId(1)]
        );
        assert_eq!(ring.topology.links().count(), 4);
        assert_eq!(ring.total(), 40);
        assert_eq!(
            Layout::complete(4, 10).unwrap().topology.links().count(),
            12
        );
        assert!(Layout::complete(1, 10).is_err());
        assert!(Layout::complete(MAX_NODES as u32, 10).is_ok());
        // A file of a ring of n nodes: refused at the node one past the most.
        let ring = |n: usize| -> String {
            let nodes = (1..=n).map(|id| format!("node {id} 1\n"));
            let links = (1..=n).map(|id| format!("link {id} {}\n", id % n + 1));
            nodes.chain(links).collect()
        };
        assert!(Layout::parse("fits", &ring(MAX_NODES)).is_ok());
        assert!(matches!(
            Layout::parse("big", &ring(MAX_NODES + 1)),
            Err(LayoutError::Line { line, reason, .. })
                if line == MAX_NODES + 1 && reason.contains("at most")
        ));
        for nodes in [MAX_NODES as u32 + 1, u32::MAX] {
            for layout in [Layout::complete(nodes, 10), Layout::ring(nodes, 10)] {
                assert!(
                    matches!(&layout, Err(LayoutError::Refused { reason, .. }) if reason.contains("at most")),
                    "{nodes}: {layout:?}"
                );
            }
        }
        assert!(Layout::complete(2, u64::MAX).is_err());
    }
}
