//! Seeded scripts for measuring the bank: many transfers and receives between random
//! nodes, with snapshot cycles in between.

use crate::choice::Chooser;
use snapshot_core::topology::Topology;
use snapshot_core::{Action, NodeId, Outbox, Process, SnapshotEngine, SnapshotId};
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
    Marker(SnapshotId),
}

/// A node as the generator sees it: nothing but its snapshot engine, which says when
/// markers go out. The generator keeps no rule of the protocol of its own.
struct Quiet;

impl Process for Quiet {
    type Message = ();
    type State = ();
    type Record = ();
    fn handle(&mut self, _: NodeId, (): (), _: &mut Outbox<()>) {}
    fn capture(&self) {}
    fn record(&self, (): &mut (), _: NodeId, (): &()) {}
}

/// The channels of the generated run, with what each carries, and every node's
/// engine.
struct Run {
    channels: BTreeMap<(u32, u32), VecDeque<Item>>,
    engines: BTreeMap<u32, SnapshotEngine<Quiet>>,
}

impl Run {
    /// `nodes` nodes, a channel each way between every two.
    fn new(nodes: u32) -> Self {
        let ids = || (1..=nodes).map(NodeId);
        let topology = Topology::complete(ids());
        let engines = ids()
            .map(|id| {
                let mut engine = SnapshotEngine::new(id);
                for from in topology.incoming(id) {
                    let _ = engine.add_incoming(from);
                }
                for to in topology.outgoing(id) {
                    let _ = engine.add_outgoing(to);
                }
                (id.0, engine)
            })
            .collect();
        Run {
            channels: BTreeMap::new(),
            engines,
        }
    }

    fn send(&mut self, from: u32, to: u32) {
        if let Some(engine) = self.engines.get_mut(&from) {
            let _ = engine.on_send(NodeId(to));
        }
        self.channels
            .entry((from, to))
            .or_default()
            .push_back(Item::Transfer);
    }

    /// Node `node` starts a snapshot.
    fn begin(&mut self, node: u32) {
        if let Some(engine) = self.engines.get_mut(&node)
            && let Ok((_, actions)) = engine.initiate(&Quiet)
        {
            self.carry_out(node, actions);
        }
    }

    /// `to` takes the head of the channel `from -> to`.
    fn receive(&mut self, from: u32, to: u32) {
        let item = self
            .channels
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front);
        let Some(engine) = self.engines.get_mut(&to) else {
            return;
        };
        match item {
            Some(Item::Transfer) => {
                let _ = engine.on_message(NodeId(from), &(), &Quiet);
            }
            Some(Item::Marker(id)) => {
                if let Ok(actions) = engine.on_marker(NodeId(from), id, &Quiet) {
                    self.carry_out(to, actions);
                }
            }
            None => {}
        }
    }

    fn carry_out(&mut self, node: u32, actions: Vec<Action<(), ()>>) {
        for action in actions {
            if let Action::SendMarker { to, id } = action {
                self.channels
                    .entry((node, to.0))
                    .or_default()
                    .push_back(Item::Marker(id));
            }
        }
    }

    /// A channel that still carries a marker, if any.
    fn marker_in_transit(&self) -> Option<(u32, u32)> {
        self.channels
            .iter()
            .find(|(_, q)| q.iter().any(|item| matches!(item, Item::Marker(_))))
            .map(|(&channel, _)| channel)
    }
}

impl Workload {
    /// The script: about 45% `Send` and 45% `Receive TO FROM` between uniformly
    /// random nodes; the rest are snapshot steps: `BeginSnapshot` when none is open,
    /// else a receive on a channel that still carries a marker, else `CollectState`
    /// and `PrintSnapshot`. Every line is valid: receives are drawn among the channels
    /// the generator knows to be non-empty, and where markers go is what
    /// snapshot-core's engine says, run for every node.
    pub fn script(&self) -> String {
        let nodes = self.nodes.max(2);
        let mut chooser = Chooser::new(self.seed);
        let mut script = String::from("StartMaster\n");
        for id in 1..=nodes {
            let _ = writeln!(script, "CreateNode {id} 1000000");
        }
        let mut run = Run::new(nodes);
        let mut open = false;
        let mut commands = 0;
        while commands < self.commands {
            let roll = chooser.pick(100);
            let nonempty: Vec<(u32, u32)> = run
                .channels
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(&k, _)| k)
                .collect();
            if roll < 45 || (roll < 90 && nonempty.is_empty()) {
                let from = 1 + chooser.pick(nodes as usize) as u32;
                let to = 1 + (from + chooser.pick(nodes as usize - 1) as u32) % nodes;
                let amount = 1 + chooser.pick(100);
                let _ = writeln!(script, "Send {from} {to} {amount}");
                run.send(from, to);
            } else if roll < 90 {
                let (from, to) = nonempty[chooser.pick(nonempty.len())];
                let _ = writeln!(script, "Receive {to} {from}");
                run.receive(from, to);
            } else if !open {
                let node = 1 + chooser.pick(nodes as usize) as u32;
                let _ = writeln!(script, "BeginSnapshot {node}");
                run.begin(node);
                open = true;
            } else if let Some((from, to)) = run.marker_in_transit() {
                // A marker is still in transit: move its channel along.
                let _ = writeln!(script, "Receive {to} {from}");
                run.receive(from, to);
            } else {
                script.push_str("CollectState\nPrintSnapshot\n");
                open = false;
                commands += 1;
            }
            commands += 1;
        }
        script.push_str("KillAll\n");
        script
    }
}
