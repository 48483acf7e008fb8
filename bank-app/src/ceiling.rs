//! The ceiling of the bank's script mode: the round trips a script's commands make,
//! with none of the bank's work.
//!
//! Every command the master sends to a node costs at least one round trip, master ->
//! node -> master. [`RoundTrips::of`] keeps a script's `StartMaster` and `CreateNode`s
//! as its start-up (one created part-way through moves up to it), and puts in place of
//! each other command up to `KillAll` the bare round trip ([`Master::round_trip`]) to
//! the node that command is about, in the script's order: the payer of a `Send`, the
//! receiver of a `Receive`, the node of a `BeginSnapshot` (which the master reaches
//! through the observer). The commands the master sends to the observer alone
//! (`CollectState`, `PrintSnapshot`) or that drain every channel (`ReceiveAll`) make one
//! round trip each, to the lowest node the script creates. A line that does not parse
//! makes none; a line the master would refuse still makes its round trip, and one to a
//! node the script never creates fails the run.
//!
//! The order matters: on a machine with few cores, a node asked again soon after it
//! answered may not have gone to sleep yet, and one asked after a long pause has. It
//! is a reference for the script, not a bound: a script can be faster than its round
//! trips (BENCHMARKS.md, §12).

use crate::master::{Flow, Master};
use crate::script::{Command, parse_line};
use anyhow::Context;
use snapshot_core::NodeId;
use std::io::Write;

/// A script's start-up and the round trips its other commands make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundTrips {
    start_up: Vec<Command>,
    trips: Vec<NodeId>,
}

impl RoundTrips {
    /// The round trips of `script` (see the module's documentation).
    pub fn of(script: &str) -> RoundTrips {
        let commands: Vec<Command> = script
            .lines()
            .filter_map(|line| parse_line(line.as_bytes()).ok().flatten())
            .collect();
        let lowest = commands
            .iter()
            .filter_map(|command| match command {
                Command::CreateNode { node, .. } => Some(*node),
                _ => None,
            })
            .min()
            .unwrap_or(NodeId(1));
        let mut start_up = Vec::new();
        let mut trips = Vec::new();
        for command in commands {
            match command {
                Command::StartMaster | Command::CreateNode { .. } => start_up.push(command),
                Command::KillAll => break,
                Command::Send { from, .. } => trips.push(from),
                Command::Receive { to, .. } => trips.push(to),
                Command::BeginSnapshot(node) => trips.push(node),
                Command::CollectState | Command::PrintSnapshot | Command::ReceiveAll => {
                    trips.push(lowest)
                }
            }
        }
        RoundTrips { start_up, trips }
    }

    /// How many round trips there are, start-up aside.
    pub fn len(&self) -> usize {
        self.trips.len()
    }

    /// Whether there are none, start-up aside.
    pub fn is_empty(&self) -> bool {
        self.trips.is_empty()
    }

    /// The nodes asked, in order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.trips
    }

    /// Starts the script's roles on `master`, then makes the round trips. Shutting the
    /// run down is the caller's.
    pub fn run<W: Write>(&self, master: &mut Master<W>) -> anyhow::Result<()> {
        for command in &self.start_up {
            let flow = master
                .execute(*command)
                .map_err(|refusal| anyhow::anyhow!("{refusal}"))
                .with_context(|| format!("{command:?}"))?;
            anyhow::ensure!(flow == Flow::Continue, "{command:?} ended the run");
        }
        for &node in &self.trips {
            master
                .round_trip(node)
                .map_err(|refusal| anyhow::anyhow!("{refusal}"))
                .with_context(|| format!("a round trip to node {node}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_asks_the_node_it_goes_to_in_the_scripts_order() {
        let script = "StartMaster\n\
                      CreateNode 3 100\n\
                      CreateNode 2 100\n\
                      # a comment\n\
                      Send 3 2 10\n\
                      Receive 2 3\n\
                      BeginSnapshot 2\n\
                      Receive 3\n\
                      CollectState\n\
                      PrintSnapshot\n\
                      ReceiveAll\n\
                      Send 2\n\
                      KillAll\n\
                      Send 3 2 1\n";
        let plan = RoundTrips::of(script);
        assert_eq!(
            plan.start_up,
            [
                Command::StartMaster,
                Command::CreateNode {
                    node: NodeId(3),
                    amount: 100
                },
                Command::CreateNode {
                    node: NodeId(2),
                    amount: 100
                },
            ]
        );
        // The line that does not parse (`Send 2`) and `KillAll` make none, nor does
        // what comes after `KillAll`; the observer's commands and `ReceiveAll` ask the
        // lowest node.
        assert_eq!(plan.nodes(), [3, 2, 2, 3, 2, 2, 2].map(NodeId).as_slice());
        assert_eq!(plan.len(), 7);
    }

    #[test]
    fn a_script_without_commands_has_no_round_trips() {
        let plan = RoundTrips::of("StartMaster\nCreateNode 1 5\nKillAll\n");
        assert!(plan.is_empty());
        assert_eq!(plan.start_up.len(), 2);
    }
}
