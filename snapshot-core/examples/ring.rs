//! Five processes in a one-way ring pass tokens and named items to their successor,
//! each on a thread of its own, over `transport-mem`. While they do, a coordinator
//! asks three of them at once to start a snapshot, collects the three snapshots, and
//! checks each: a consistent cut, every token and every item accounted for exactly
//! once, whether held or caught in transit.
//!
//! ```text
//! cargo run -p snapshot-core --example ring --all-features
//! ```

use snapshot_core::topology::Topology;
use snapshot_core::{
    Coordinator, CoordinatorEvent, Endpoint, Event, GlobalSnapshot, Node, NodeError, NodeFrame,
    NodeId, Outbox, Process, Transport, TransportError,
};
use std::collections::BTreeSet;
use std::time::Duration;
use transport_mem::MemNetwork;

type Error = Box<dyn std::error::Error + Send + Sync>;

const NODES: u32 = 5;
const TOKENS_EACH: u64 = 100;
/// How many times a gift is passed on, at least, before it is kept.
const HOPS: u32 = 200;

/// What travels the ring: some tokens, maybe an item, and how far it still goes.
#[derive(Debug, Clone)]
struct Gift {
    tokens: u64,
    item: Option<String>,
    hops: u32,
}

/// What a process holds.
#[derive(Debug, Clone, Default)]
struct Holdings {
    tokens: u64,
    items: Vec<String>,
}

/// A process of the ring: it keeps the gifts that have come to the end of their hops,
/// and passes the others on to its successor.
struct Holder {
    next: NodeId,
    holds: Holdings,
}

impl Process for Holder {
    type Message = Gift;
    type State = Holdings;
    /// Gifts caught in transit, whole.
    type Record = Vec<Gift>;

    fn handle(&mut self, _from: NodeId, gift: Gift, outbox: &mut Outbox<Gift>) {
        if gift.hops == 0 {
            self.holds.tokens += gift.tokens;
            self.holds.items.extend(gift.item);
        } else {
            let hops = gift.hops - 1;
            outbox.send(self.next, Gift { hops, ..gift });
        }
    }
    fn capture(&self) -> Holdings {
        self.holds.clone()
    }
    fn record(&self, in_transit: &mut Vec<Gift>, _from: NodeId, gift: &Gift) {
        in_transit.push(gift.clone());
    }
}

/// A node's thread: sends its gifts, then lets the driver handle all that comes
/// (gifts, markers, the coordinator's requests) until the coordinator has gone.
fn run(mut node: Node<Holder>, mut t: impl Transport<NodeFrame<Holder>>) -> Result<(), Error> {
    let (me, next) = (node.id().0, node.process().next);
    for k in 0..TOKENS_EACH {
        node.process_mut().holds.tokens -= 1;
        let item = (k % 10 == 0).then(|| format!("item-{me}-{k}"));
        let gift = Gift {
            tokens: 1,
            item,
            hops: HOPS + k as u32,
        };
        node.send(&mut t, next, gift)?;
    }
    loop {
        match node.next_event(&mut t) {
            Ok(Event::Departed(peer)) if Some(peer) == node.coordinator() => return Ok(()),
            Ok(_) => {}
            // The ring is being taken down: the successor has gone first.
            Err(NodeError::Transport(TransportError::Disconnected(_))) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Checks a snapshot: a consistent cut, and every token and item exactly once.
fn check(global: &GlobalSnapshot<Holdings, Vec<Gift>>) -> Result<String, Error> {
    global.check_cut()?;
    let channels = global.channels();
    let caught: Vec<&Gift> = channels.iter().flat_map(|(_, _, c)| &c.record).collect();
    let (mut tokens, mut items) = (0, Vec::new());
    for holds in global.nodes().map(|local| &local.state) {
        tokens += holds.tokens;
        items.extend(&holds.items);
    }
    for gift in &caught {
        tokens += gift.tokens;
        items.extend(&gift.item);
    }
    let total = u64::from(NODES) * TOKENS_EACH;
    let distinct = items.iter().collect::<BTreeSet<_>>().len();
    let summary = format!(
        "{tokens} tokens, {} items ({distinct} distinct)",
        items.len()
    );
    if tokens != total || items.len() != distinct || distinct as u64 != total / 10 {
        return Err(summary.into());
    }
    Ok(format!("{summary}, {} gifts in transit", caught.len()))
}

fn main() -> Result<(), Error> {
    let ids: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
    let ring = Topology::ring(ids.iter().copied());
    ring.check()?;
    // Every endpoint joins first; then each connects to those it talks to.
    let network = MemNetwork::new();
    let here = Endpoint::Role(0);
    let mut control = network.endpoint(here)?;
    let endpoint = |&id| network.endpoint(Endpoint::Node(id));
    let transports = ids.iter().map(endpoint).collect::<Result<Vec<_>, _>>()?;
    let addresses: Vec<String> = transports.iter().map(Transport::address).collect();
    let address = |node: NodeId| &addresses[node.0 as usize - 1];
    let mut threads = Vec::new();
    for (&id, mut t) in ids.iter().zip(transports) {
        let next = ring.outgoing(id).next().ok_or("a successor")?;
        let previous = ring.incoming(id).next().ok_or("a predecessor")?;
        t.connect(Endpoint::Node(next), address(next))?;
        t.connect(Endpoint::Node(previous), address(previous))?;
        t.connect(here, &control.address())?;
        control.connect(Endpoint::Node(id), address(id))?;
        let holds = Holdings {
            tokens: TOKENS_EACH,
            ..Holdings::default()
        };
        let mut node = Node::new(id, Holder { next, holds });
        ring.join(&mut node)?;
        node.report_to(here);
        threads.push(std::thread::spawn(move || run(node, t)));
    }

    // Three snapshots at once, from different initiators, while the gifts travel.
    let mut coordinator = Coordinator::new(ids.iter().copied());
    for initiator in [1, 3, 5] {
        coordinator.initiate(&mut control, NodeId(initiator))?;
    }
    let mut checked = 0;
    while checked < 3 {
        match coordinator.next_event(&mut control, Duration::from_secs(10))? {
            Some(CoordinatorEvent::Started { node, id }) => println!("node {node} started {id}"),
            Some(CoordinatorEvent::Completed(taken)) => {
                let (checked_as, stats) = (check(&taken.snapshot)?, taken.stats);
                println!("{}: {checked_as}, in {:?}", stats.id, stats.duration);
                checked += 1;
            }
            // An abort (a snapshot late by the coordinator's timeout), or nothing at all.
            other => return Err(format!("{other:?}; missing: {:?}", coordinator.missing()).into()),
        }
    }
    // The coordinator leaves; the nodes see it go, and stop.
    drop(control);
    for thread in threads {
        thread.join().map_err(|_| "a node panicked")??;
    }
    println!("3 snapshots of a one-way ring of {NODES}, each consistent and complete");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ring_takes_three_checked_snapshots() {
        super::main().unwrap();
    }
}
