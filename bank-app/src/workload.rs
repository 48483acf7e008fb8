//! Seeded scripts for measuring the bank: many transfers and receives between random
//! nodes, with snapshot cycles in between.

use crate::choice::Chooser;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

/// What a generated script is made of.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// The number of nodes (ids 1 to `nodes`).
    pub nodes: u32,
    /// The number of commands, at least (a snapshot cycle may end a little past it).
    pub commands: usize,
    /// The seed of the generator.
    pub seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Item {
    Transfer,
    Marker,
}

impl Workload {
    /// The script: about 45% `Send` and 45% `Receive TO FROM` between uniformly
    /// random nodes; the rest are snapshot steps: `BeginSnapshot` when none is open,
    /// else a receive on a channel that still carries a marker, else `CollectState`
    /// and `PrintSnapshot`. Every line is valid: receives are drawn among the channels
    /// the generator knows to be non-empty.
    pub fn script(&self) -> String {
        let nodes = self.nodes.max(2);
        let mut chooser = Chooser::new(self.seed);
        let mut script = String::from("StartMaster\n");
        for id in 1..=nodes {
            let _ = writeln!(script, "CreateNode {id} 1000000");
        }
        let mut channels: BTreeMap<(u32, u32), VecDeque<Item>> = BTreeMap::new();
        let mut recorded = vec![false; nodes as usize + 1];
        let mut open = false;
        let mut commands = 0;
        while commands < self.commands {
            let roll = chooser.pick(100);
            let nonempty: Vec<(u32, u32)> = channels
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&k, _)| k)
                .collect();
            if roll < 45 || (roll < 90 && nonempty.is_empty()) {
                let from = 1 + chooser.pick(nodes as usize) as u32;
                let to = 1 + (from + chooser.pick(nodes as usize - 1) as u32) % nodes;
                let amount = 1 + chooser.pick(100);
                let _ = writeln!(script, "Send {from} {to} {amount}");
                channels
                    .entry((from, to))
                    .or_default()
                    .push_back(Item::Transfer);
                commands += 1;
            } else if roll < 90 {
                let (from, to) = nonempty[chooser.pick(nonempty.len())];
                commands += receive(&mut script, &mut channels, &mut recorded, nodes, from, to);
            } else if !open {
                let node = 1 + chooser.pick(nodes as usize) as u32;
                let _ = writeln!(script, "BeginSnapshot {node}");
                record(&mut channels, &mut recorded, nodes, node);
                open = true;
                commands += 1;
            } else if let Some((&(from, to), _)) =
                channels.iter().find(|(_, q)| q.contains(&Item::Marker))
            {
                // A marker is still in transit: move its channel along.
                commands += receive(&mut script, &mut channels, &mut recorded, nodes, from, to);
            } else {
                script.push_str("CollectState\nPrintSnapshot\n");
                recorded.iter_mut().for_each(|r| *r = false);
                open = false;
                commands += 2;
            }
        }
        script.push_str("KillAll\n");
        script
    }
}

fn receive(
    script: &mut String,
    channels: &mut BTreeMap<(u32, u32), VecDeque<Item>>,
    recorded: &mut [bool],
    nodes: u32,
    from: u32,
    to: u32,
) -> usize {
    let _ = writeln!(script, "Receive {to} {from}");
    let item = channels.get_mut(&(from, to)).and_then(VecDeque::pop_front);
    if item == Some(Item::Marker) && !recorded[to as usize] {
        record(channels, recorded, nodes, to);
    }
    1
}

fn record(
    channels: &mut BTreeMap<(u32, u32), VecDeque<Item>>,
    recorded: &mut [bool],
    nodes: u32,
    node: u32,
) {
    recorded[node as usize] = true;
    for to in (1..=nodes).filter(|&to| to != node) {
        channels
            .entry((node, to))
            .or_default()
            .push_back(Item::Marker);
    }
}
