//! The whole round trip of a restore, over `transport-mem` with a thread per node:
//!
//! 1. **run**: four purses pay each other coins at random, as fast as they can;
//! 2. **snapshot**: a coordinator takes snapshots until one catches coins in transit;
//! 3. **save**: the snapshot goes to a file, with serde (postcard);
//! 4. **stop**: every node stops, and the network goes: what was in transit is lost;
//! 5. **restore**: a new system is restored from the file, each node rebuilt from its
//!    recorded balance, and the coins in transit are put back on their channels;
//! 6. **run on**: the purses pay each other again; snapshots of the restored system
//!    account for every coin, with new ids past the restored one, and once the
//!    payments stop every coin is in a purse.
//!
//! ```text
//! cargo run -p snapshot-core --example restore --all-features
//! ```

use snapshot_core::restore::{Replay, Restore};
use snapshot_core::topology::Topology;
use snapshot_core::{
    Coordinator, CoordinatorEvent, Endpoint, Event, Frame, GlobalSnapshot, Node, NodeError,
    NodeFrame, NodeId, Outbox, Process, Restored, Transport, TransportError,
};
use std::fmt;
use std::time::Duration;
use transport_mem::{MemNetwork, MemTransport};

type Error = Box<dyn std::error::Error + Send + Sync>;

const NODES: u32 = 4;
const COINS_EACH: u64 = 1_000;
const TOTAL: u64 = NODES as u64 * COINS_EACH;
const COORDINATOR: Endpoint = Endpoint::Role(0);
const WAIT: Duration = Duration::from_secs(10);

/// A purse: the coins it holds.
struct Purse {
    coins: u64,
}

/// Coins paid from one purse to another.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Coins(u64);

/// The payments caught in transit on a channel: kept one by one, so that they can be
/// put back on their channel, and shown as their sum.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Payments(Vec<u64>);

impl Payments {
    fn sum(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl fmt::Display for Payments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.sum())
    }
}

impl Replay<Coins> for Payments {
    fn messages(&self) -> impl Iterator<Item = Coins> {
        self.0.iter().map(|&amount| Coins(amount))
    }
}

impl Process for Purse {
    type Message = Coins;
    type State = u64;
    type Record = Payments;

    fn handle(&mut self, _from: NodeId, Coins(amount): Coins, _outbox: &mut Outbox<Coins>) {
        self.coins += amount;
    }
    fn capture(&self) -> u64 {
        self.coins
    }
    fn record(&self, in_transit: &mut Payments, _from: NodeId, Coins(amount): &Coins) {
        in_transit.0.push(*amount);
    }
}

impl Restore for Purse {
    fn restore(_node: NodeId, coins: &u64) -> Self {
        Purse { coins: *coins }
    }
}

/// What the coordinator tells the nodes.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// Stop paying; go on taking what comes.
    Pause,
    /// Stop.
    Stop,
}

type Wire = NodeFrame<Purse, Command>;
type Snapshot = GlobalSnapshot<u64, Payments>;

/// A node's thread: pays a random peer some coins between events, until paused, and
/// returns its node when stopped. A restored node first puts back what it must.
fn run(
    node: Result<Node<Purse>, Restored<Purse>>,
    mut t: MemTransport<Wire>,
) -> Result<Node<Purse>, Error> {
    let mut node = match node {
        Ok(node) => node,
        Err(restored) => restored.resume(&mut t)?,
    };
    let peers: Vec<NodeId> = node.engine().outgoing().collect();
    let mut random = u64::from(node.id().0).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut paying = true;
    loop {
        match node.poll_event(&mut t, Duration::from_micros(100))? {
            Some(Event::Control {
                control: Command::Pause,
                ..
            }) => paying = false,
            Some(Event::Control {
                control: Command::Stop,
                ..
            }) => return Ok(node),
            _ => {}
        }
        if paying {
            // xorshift64: enough for picking a peer and an amount.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let to = peers[random as usize % peers.len()];
            let amount = 1 + (random >> 32) % 20;
            if node.process().coins >= amount {
                node.process_mut().coins -= amount;
                match node.send(&mut t, to, Coins(amount)) {
                    Ok(()) => {}
                    // The system is stopping, and that peer has stopped already: the
                    // coins stay here, and this node pays no more.
                    Err(NodeError::Transport(TransportError::Disconnected(_))) => {
                        node.process_mut().coins += amount;
                        paying = false;
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        }
    }
}

/// A system of `NODES` purses on a complete graph, each node on its thread, and the
/// coordinator's endpoint. `node(id)` is the node to run: new, or restored.
struct System {
    ids: Vec<NodeId>,
    control: MemTransport<Wire>,
    coordinator: Coordinator<u64, Payments>,
    threads: Vec<std::thread::JoinHandle<Result<Node<Purse>, Error>>>,
}

impl System {
    fn start(
        mut node: impl FnMut(NodeId) -> Result<Result<Node<Purse>, Restored<Purse>>, Error>,
    ) -> Result<Self, Error> {
        let ids: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let network = MemNetwork::<Wire>::new();
        let mut control = network.endpoint(COORDINATOR)?;
        let mut transports = ids
            .iter()
            .map(|&id| network.endpoint(Endpoint::Node(id)))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses: Vec<_> = transports
            .iter()
            .map(|t| (t.local(), t.address()))
            .collect();
        for t in &mut transports {
            for (peer, address) in &addresses {
                if *peer != t.local() {
                    t.connect(*peer, address)?;
                }
            }
            t.connect(COORDINATOR, &control.address())?;
            control.connect(t.local(), &t.address())?;
        }
        let mut threads = Vec::new();
        for (&id, t) in ids.iter().zip(transports) {
            let node = node(id)?;
            threads.push(std::thread::spawn(move || run(node, t)));
        }
        let coordinator = Coordinator::new(ids.iter().copied());
        Ok(System {
            ids,
            control,
            coordinator,
            threads,
        })
    }

    /// A snapshot started at node 1, checked: a consistent cut, every coin once.
    fn snapshot(&mut self) -> Result<Snapshot, Error> {
        self.coordinator.initiate(&mut self.control, NodeId(1))?;
        let snapshot = loop {
            match self.coordinator.next_event(&mut self.control, WAIT)? {
                Some(CoordinatorEvent::Started { .. }) => {}
                Some(CoordinatorEvent::Completed(taken)) => break taken.snapshot,
                other => return Err(format!("{other:?}").into()),
            }
        };
        snapshot.check_cut()?;
        let (held, in_transit) = count(&snapshot);
        if held + in_transit != TOTAL {
            return Err(format!("{held} held and {in_transit} in transit, not {TOTAL}").into());
        }
        Ok(snapshot)
    }

    fn tell(&mut self, command: Command) -> Result<(), Error> {
        for &id in &self.ids {
            match self
                .control
                .send(Endpoint::Node(id), Frame::Control(command))
            {
                // A node that has stopped (a stop told twice) needs no telling.
                Ok(()) | Err(TransportError::Disconnected(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.control.flush()?;
        Ok(())
    }

    /// Stops every node; returns them, in id order.
    fn stop(mut self) -> Result<Vec<Node<Purse>>, Error> {
        self.tell(Command::Stop)?;
        self.threads
            .into_iter()
            .map(|thread| thread.join().map_err(|_| "a node panicked")?)
            .collect()
    }
}

/// The coins held, and the coins in transit, in a snapshot.
fn count(snapshot: &Snapshot) -> (u64, u64) {
    let held = snapshot.nodes().map(|local| local.state).sum();
    let channels = snapshot.channels();
    let in_transit = channels.iter().map(|(_, _, c)| c.record.sum()).sum();
    (held, in_transit)
}

fn show(snapshot: &Snapshot) {
    let (held, in_transit) = count(snapshot);
    println!(
        "snapshot {}: {held} held, {in_transit} in transit",
        snapshot.id()
    );
    for (from, to, channel) in snapshot.channels() {
        if channel.messages > 0 {
            let n = channel.messages;
            println!(
                "  channel ({from} -> {to}) = {} in {n} payment(s)",
                channel.record
            );
        }
    }
}

fn main() -> Result<(), Error> {
    let complete = Topology::complete((1..=NODES).map(NodeId));
    complete.check()?;

    // 1. Run.
    let mut system = System::start(|id| {
        let mut node = Node::new(id, Purse { coins: COINS_EACH });
        complete.join(&mut node)?;
        node.report_to(COORDINATOR);
        Ok(Ok(node))
    })?;

    // 2. Snapshot, until one catches payments in transit (so that there is something
    // to put back), for at most 50 tries.
    std::thread::sleep(Duration::from_millis(20));
    let mut snapshot = system.snapshot()?;
    for _ in 0..50 {
        if count(&snapshot).1 > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        snapshot = system.snapshot()?;
    }
    show(&snapshot);

    // 3. Save.
    let path = std::env::temp_dir().join(format!(
        "snapshot-core-restore-{}.postcard",
        std::process::id()
    ));
    std::fs::write(&path, postcard::to_allocvec(&snapshot)?)?;
    println!("saved to {}", path.display());

    // 4. Stop: the nodes stop where they are, and the network goes with what it held.
    let stopped = system.stop()?;
    let held: u64 = stopped.iter().map(|node| node.process().coins).sum();
    println!(
        "stopped: the purses hold {held} of {TOTAL}; {} in transit are lost with the network",
        TOTAL - held
    );
    drop(stopped);

    // 5. Restore, from the file.
    let bytes = std::fs::read(&path)?;
    std::fs::remove_file(&path)?;
    let saved: Snapshot = postcard::from_bytes(&bytes)?;
    let mut system = System::start(|id| {
        let mut restored = Node::<Purse>::restore(&saved, id)?;
        restored.report_to(COORDINATOR);
        let back: u64 = restored.replay().iter().map(|(_, Coins(n))| n).sum();
        let node = restored.node();
        println!(
            "node {id} restored: {} coins, puts back {back} in {} payment(s), snapshots from #{}",
            node.process().coins,
            restored.replay().len(),
            node.engine().epoch(),
        );
        Ok(Err(restored))
    })?;

    // 6. Run on: snapshots account for every coin, past the restored one's id.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(5));
        let taken = system.snapshot()?;
        if taken.id().seq <= saved.id().seq {
            return Err(format!("{} is not past {}", taken.id(), saved.id()).into());
        }
        show(&taken);
    }
    // The payments stop; once nothing is in transit, every coin is in a purse.
    system.tell(Command::Pause)?;
    let mut last = system.snapshot()?;
    while count(&last).1 > 0 {
        last = system.snapshot()?;
    }
    show(&last);
    let end = system.stop()?;
    let held: u64 = end.iter().map(|node| node.process().coins).sum();
    if held != TOTAL {
        return Err(format!("the purses hold {held}, not {TOTAL}").into());
    }
    println!(
        "restored from {} and ran on: all {TOTAL} coins in the purses",
        saved.id()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_round_trip_keeps_every_coin() {
        super::main().unwrap();
    }
}
