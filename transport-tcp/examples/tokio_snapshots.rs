//! Snapshots of a small bank whose branches are tokio tasks talking TCP.
//!
//! Four branches run as tasks on one tokio runtime (no thread per branch), each with
//! its own [`AsyncTcpTransport`] on 127.0.0.1, driven by the async `Node` methods
//! (`next_event_async`, `initiate_async`, `send_async`). Money moves between them in
//! chains of transfers: a branch that receives a transfer credits it and, while the
//! chain has hops left, sends part of its balance on to another branch.
//!
//! The main task is both master and observer: while the money moves, it asks one
//! branch after another to start a snapshot, collects the branches' parts, checks
//! that each snapshot is a consistent cut (`check_cut`) and that it accounts for every
//! coin, in the branches or in transit. Once every chain has ended it stops the
//! branches and checks the final balances too.
//!
//! ```text
//! cargo run -p transport-tcp --example tokio_snapshots --all-features
//! ```
//!
//! `cargo test -p transport-tcp` runs it too (it is an example with `test = true`).

use serde::{Deserialize, Serialize};
use snapshot_core::{
    AsyncTransport, Collector, Endpoint, Event, Frame, GlobalSnapshot, Incoming, LocalSnapshot,
    Node, NodeId, Outbox, Process,
};
use std::error::Error;
use std::time::{Duration, Instant};
use transport_tcp::{AsyncTcpTransport, TcpConfig, random_key};

type BoxError = Box<dyn Error + Send + Sync>;

/// How the run is shaped.
#[derive(Debug, Clone, Copy)]
struct Plan {
    branches: u32,
    /// Coins each branch starts with.
    opening: u64,
    /// Chains of transfers each branch starts.
    chains: u64,
    /// Transfers in each chain.
    hops: u32,
    snapshots: u32,
}

const PLAN: Plan = Plan {
    branches: 4,
    opening: 1_000,
    chains: 3,
    hops: 1_500,
    snapshots: 3,
};

/// A safety net against a stuck run, not a means of synchronisation.
const STALL: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------
// The application.
// ---------------------------------------------------------------------------------

/// Money moving from one branch to another, with the hops its chain has left.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    amount: u64,
    hops: u32,
}

/// A branch: its balance, its peers, and how it picks the next one.
#[derive(Debug)]
struct Branch {
    balance: u64,
    peers: Vec<NodeId>,
    /// Chains that ended here.
    ended: u64,
    /// A small deterministic generator (a linear congruential one).
    dice: u64,
}

impl Branch {
    fn roll(&mut self) -> u64 {
        self.dice = self
            .dice
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.dice >> 33
    }

    /// The next transfer of a chain: part of the balance, to a peer picked at random.
    fn pay(&mut self, hops: u32) -> (NodeId, Transfer) {
        let pick = self.roll() % self.peers.len() as u64;
        let to = self.peers[pick as usize];
        let amount = 1 + self.roll() % self.balance.clamp(1, 100);
        let amount = amount.min(self.balance);
        self.balance -= amount;
        (to, Transfer { amount, hops })
    }
}

impl Process for Branch {
    type Message = Transfer;
    /// The balance.
    type State = u64;
    /// The money caught in transit.
    type Record = u64;

    fn handle(&mut self, _from: NodeId, transfer: Transfer, outbox: &mut Outbox<Transfer>) {
        self.balance += transfer.amount;
        if transfer.hops == 0 {
            self.ended += 1;
        } else {
            let (to, next) = self.pay(transfer.hops - 1);
            outbox.send(to, next);
        }
    }
    fn capture(&self) -> u64 {
        self.balance
    }
    fn record(&self, in_transit: &mut u64, _from: NodeId, transfer: &Transfer) {
        *in_transit += transfer.amount;
    }
}

/// What the main task and the branches tell each other.
#[derive(Debug, Serialize, Deserialize)]
enum Ctl {
    /// Master to branch: start a snapshot.
    Initiate,
    /// Master to branch: how many chains ended with you?
    Ended,
    /// Branch to master: this many.
    EndedHere(u64),
    /// Master to branch: stop, and say your balance.
    Stop,
    /// Branch to master: my balance, as I stop.
    Closing(u64),
    /// Branch to observer: its part of a snapshot.
    Report(LocalSnapshot<u64, u64>),
}

type Wire = snapshot_core::NodeFrame<Branch, Ctl>;
type Transport = AsyncTcpTransport<Wire>;

// ---------------------------------------------------------------------------------
// A branch's task.
// ---------------------------------------------------------------------------------

/// Starts the branch's chains, then runs free until told to stop.
async fn run_branch(mut node: Node<Branch>, mut transport: Transport) -> Result<(), BoxError> {
    let chains = PLAN.chains;
    for _ in 0..chains {
        let (to, transfer) = node.process_mut().pay(PLAN.hops);
        node.send_async(&mut transport, to, transfer).await?;
    }
    let master = Endpoint::Role(0);
    loop {
        let reply = match node.next_event_async(&mut transport).await? {
            Event::Control { control, .. } => match control {
                Ctl::Initiate => match node.initiate_async(&mut transport).await?.1.completed {
                    Some(local) => Ctl::Report(local),
                    None => continue,
                },
                Ctl::Ended => Ctl::EndedHere(node.process().ended),
                Ctl::Stop => {
                    let balance = node.process().balance;
                    transport
                        .send(master, Frame::Control(Ctl::Closing(balance)))
                        .await?;
                    transport.close().await?;
                    return Ok(());
                }
                other => return Err(format!("unexpected {other:?}").into()),
            },
            Event::Completed(local) => Ctl::Report(local),
            // A branch leaves only once told to stop, after every chain has ended.
            Event::Departed(Endpoint::Node(_)) => continue,
            Event::Departed(peer) => return Err(format!("{peer} left early").into()),
            // Nothing here aborts snapshots.
            Event::Aborted(_) => continue,
        };
        transport.send(master, Frame::Control(reply)).await?;
    }
}

// ---------------------------------------------------------------------------------
// The main task: master and observer.
// ---------------------------------------------------------------------------------

/// What the run saw.
#[derive(Debug)]
struct Summary {
    /// Per snapshot: its id, the coins in the branches, and those in transit.
    snapshots: Vec<(String, u64, u64)>,
    total: u64,
    elapsed: Duration,
}

/// The master's next control frame, from a branch.
async fn next_control(master: &mut Transport) -> Result<(NodeId, Ctl), BoxError> {
    match master.recv_timeout(STALL).await? {
        Some(Incoming::Frame(Endpoint::Node(from), Frame::Control(ctl))) => Ok((from, ctl)),
        Some(other) => Err(format!("unexpected {other:?}").into()),
        None => Err(format!("nothing for {STALL:?}: stuck").into()),
    }
}

/// The branches' balances and the money in transit, checked.
fn audit(global: &GlobalSnapshot<u64, u64>, total: u64) -> Result<(u64, u64), BoxError> {
    global.check_cut()?;
    let held: u64 = global.nodes().map(|local| local.state).sum();
    let in_transit: u64 = global.channels().iter().map(|(_, _, ch)| ch.record).sum();
    if held + in_transit != total {
        return Err(format!(
            "snapshot {}: {held} held + {in_transit} in transit, not {total}",
            global.id()
        )
        .into());
    }
    Ok((held, in_transit))
}

async fn run(plan: Plan) -> Result<Summary, BoxError> {
    let start = Instant::now();
    let config = TcpConfig::new("tokio-snapshots", random_key());
    let ids: Vec<NodeId> = (1..=plan.branches).map(NodeId).collect();
    let mut master = Transport::bind(Endpoint::Role(0), config.clone()).await?;
    let mut branches = Vec::new();
    for &id in &ids {
        branches.push(Transport::bind(Endpoint::Node(id), config.clone()).await?);
    }
    // Each side connects to the other before traffic: branches to each other and
    // to the master, the master to every branch.
    let addresses: Vec<(Endpoint, String)> = branches
        .iter()
        .map(|t| (t.local(), t.address()))
        .chain([(master.local(), master.address())])
        .collect();
    for transport in branches.iter_mut().chain([&mut master]) {
        for (peer, address) in &addresses {
            if *peer != transport.local() {
                transport.connect(*peer, address).await?;
            }
        }
    }

    let mut tasks = Vec::new();
    for (&id, transport) in ids.iter().zip(branches) {
        let peers: Vec<NodeId> = ids.iter().copied().filter(|&p| p != id).collect();
        let branch = Branch {
            balance: plan.opening,
            peers: peers.clone(),
            ended: 0,
            dice: u64::from(id.0) * 7919,
        };
        let mut node = Node::new(id, branch);
        for peer in peers {
            node.add_peer(peer)?;
        }
        tasks.push(tokio::spawn(run_branch(node, transport)));
    }

    // The money moves: snapshots, one branch after another starting them.
    let total = plan.opening * u64::from(plan.branches);
    let mut collector = Collector::new(ids.iter().copied());
    let mut snapshots = Vec::new();
    for round in 0..plan.snapshots {
        let initiator = ids[(round % plan.branches) as usize];
        master
            .send(Endpoint::Node(initiator), Frame::Control(Ctl::Initiate))
            .await?;
        let global = loop {
            match next_control(&mut master).await? {
                (_, Ctl::Report(local)) => {
                    if let Some(global) = collector.add(local)? {
                        break global;
                    }
                }
                (from, other) => return Err(format!("unexpected {other:?} from {from}").into()),
            }
        };
        let (held, in_transit) = audit(&global, total)?;
        snapshots.push((global.id().to_string(), held, in_transit));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Every chain ends somewhere: once they all have, nothing is in transit.
    let chains = plan.chains * u64::from(plan.branches);
    loop {
        for &id in &ids {
            master
                .send(Endpoint::Node(id), Frame::Control(Ctl::Ended))
                .await?;
        }
        let mut ended = 0;
        for _ in &ids {
            match next_control(&mut master).await? {
                (_, Ctl::EndedHere(n)) => ended += n,
                (from, other) => return Err(format!("unexpected {other:?} from {from}").into()),
            }
        }
        if ended == chains {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for &id in &ids {
        master
            .send(Endpoint::Node(id), Frame::Control(Ctl::Stop))
            .await?;
    }
    let mut finally = 0;
    let mut departed = 0;
    while departed < ids.len() {
        match master.recv_timeout(STALL).await? {
            Some(Incoming::Frame(_, Frame::Control(Ctl::Closing(balance)))) => finally += balance,
            Some(Incoming::Departed(_)) => departed += 1,
            other => return Err(format!("unexpected {other:?} while stopping").into()),
        }
    }
    for task in tasks {
        task.await??;
    }
    if finally != total {
        return Err(format!("the branches hold {finally} at the end, not {total}").into());
    }
    Ok(Summary {
        snapshots,
        total,
        elapsed: start.elapsed(),
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run(PLAN).await?;
    println!(
        "{} branches as tokio tasks over TCP, {} coins, {} chains of {} transfers:",
        PLAN.branches,
        summary.total,
        PLAN.chains * u64::from(PLAN.branches),
        PLAN.hops
    );
    for (id, held, in_transit) in &summary.snapshots {
        println!(
            "  snapshot {id}: {held} in the branches + {in_transit} in transit = {}: a consistent cut",
            held + in_transit
        );
    }
    println!(
        "every chain ended, every coin is in a branch; {:.2?} in all",
        summary.elapsed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_example_runs_and_every_snapshot_adds_up() {
        let plan = Plan { hops: 500, ..PLAN };
        let summary = run(plan).await.unwrap();
        assert_eq!(summary.snapshots.len(), plan.snapshots as usize);
        for (_, held, in_transit) in summary.snapshots {
            assert_eq!(held + in_transit, summary.total);
        }
    }
}
