//! The harness behind snapshot-rs's benchmarks (see `BENCHMARKS.md` at the root of
//! the repository for the figures and how to reproduce them).
//!
//! A run is a [`Cluster`]: nodes, each a thread of this process running a
//! [`Node`] free over its own endpoint of one [`Medium`], and a driver on the
//! `Endpoint::Role(0)` endpoint, in the calling thread, that starts them, asks
//! for snapshots and assembles them with a [`Collector`]. On pipe and tcp the
//! endpoints are real FIFOs and real loopback sockets; only the processes are
//! threads.
//!
//! Every node holds an [`Account`]: a [`Transfer`] takes money from one account and
//! brings it to another, so a snapshot must account for all of it, in the accounts or
//! in transit, and every snapshot a run assembles is [checked](check) for that.
//!
//! ```
//! use snapshot_benches::{Cluster, Medium, Topology, Work, check};
//! use snapshot_core::NodeId;
//!
//! # fn main() -> Result<(), snapshot_core::TransportError> {
//! let mut cluster = Cluster::spawn(Medium::Mem, Topology::Ring(4), |_| Work::Idle)?;
//! cluster.start()?;
//! let (latency, global) = cluster.snapshot(NodeId(1))?;
//! check(&global)?;
//! assert_eq!(global.nodes().count(), 4);
//! assert!(latency.as_secs() < 60);
//! cluster.stop()?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};
use snapshot_core::codec::{DEFAULT_MAX_FRAME, encode_into};
use snapshot_core::{
    Collector, Endpoint, Event, Frame, GlobalSnapshot, Incoming, LocalSnapshot, Node, NodeError,
    NodeId, Outbox, Process, Transport, TransportError,
};
use std::io::{Read, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport_mem::MemNetwork;
use transport_pipe::PipeTransport;
use transport_tcp::{TcpConfig, TcpTransport, random_key};

/// A transfer between two accounts: 16 bytes on the wire, the amount and the
/// sender's sequence number, both little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer(pub [u8; 16]);

impl Transfer {
    /// The `seq`-th transfer of `amount` from its sender.
    pub fn new(amount: i64, seq: u64) -> Self {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&amount.to_le_bytes());
        bytes[8..].copy_from_slice(&seq.to_le_bytes());
        Transfer(bytes)
    }

    /// The amount moved.
    pub fn amount(&self) -> i64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self.0[..8]);
        i64::from_le_bytes(bytes)
    }
}

/// A node's application: a balance, and how many transfers it has taken in.
///
/// Accounts start empty and may go negative: what is conserved is the sum over every
/// account and every transfer in transit, which is always zero.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Account {
    /// The money held (negative: owed).
    pub balance: i64,
    /// The transfers handled.
    pub handled: u64,
}

impl Process for Account {
    type Message = Transfer;
    type State = i64;
    type Record = i64;

    fn handle(&mut self, _from: NodeId, transfer: Transfer, _outbox: &mut Outbox<Transfer>) {
        self.balance += transfer.amount();
        self.handled += 1;
    }

    fn capture(&self) -> i64 {
        self.balance
    }

    fn record(&self, in_transit: &mut i64, _from: NodeId, transfer: &Transfer) {
        *in_transit += transfer.amount();
    }
}

/// The amount every transfer carries.
pub const AMOUNT: i64 = 1;

/// A local snapshot of an [`Account`].
pub type AccountSnapshot = LocalSnapshot<i64, i64>;

/// What the driver and the nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Driver to node: start working.
    Start,
    /// Driver to node: start a snapshot.
    Initiate,
    /// Driver to node: stop, and return the account.
    Stop,
    /// Node to driver: its part of a snapshot (boxed, so that the frames of the
    /// in-process medium stay small).
    Local(Box<AccountSnapshot>),
    /// Node to driver: it has sent all it had to and handled all it expected.
    Done,
}

/// What every endpoint carries.
pub type Wire = snapshot_core::NodeFrame<Account, Control>;

/// The frame of one transfer, as every medium carries it.
pub fn transfer_frame(seq: u64) -> Wire {
    Frame::Peer(snapshot_core::Envelope::App(Transfer::new(AMOUNT, seq)))
}

/// The medium a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// `transport-mem`, batching (`MemNetwork::with_batching`): crossbeam channels
    /// between threads.
    Mem,
    /// `transport-pipe`: a named FIFO per ordered pair.
    Pipe,
    /// `transport-tcp`: a loopback TCP connection per ordered pair.
    Tcp,
}

impl Medium {
    /// Every medium.
    pub const ALL: [Medium; 3] = [Medium::Mem, Medium::Pipe, Medium::Tcp];

    /// Its name in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            Medium::Mem => "mem",
            Medium::Pipe => "pipe",
            Medium::Tcp => "tcp",
        }
    }

    /// How many transfers a busy node sends between two looks at what has arrived.
    ///
    /// Every look flushes the transport's buffers, so on pipe and tcp it is also
    /// how many frames a write carries at most: enough to fill most of a 64 KiB
    /// buffer. In memory a batch crosses at 256 frames anyway, and looking as often
    /// keeps queues short.
    pub fn batch(self) -> u64 {
        match self {
            Medium::Mem => 256,
            Medium::Pipe | Medium::Tcp => 4096,
        }
    }
}

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

    /// Whether `node` sends transfers when it works.
    pub fn sends(self, node: u32) -> bool {
        !matches!(self, Topology::OneWay if node != 1)
    }
}

/// What a node does besides reacting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Nothing: it handles what comes.
    Idle,
    /// After `Start`, sends `send` transfers, round robin over its neighbours, as fast
    /// as it can, looking at what has arrived every `batch` transfers; reports `Done`
    /// once it has sent them all and handled `expected`.
    Transfers {
        /// How many it sends.
        send: u64,
        /// How many it takes in before it is done.
        expected: u64,
        /// How many it sends between two looks at what has arrived.
        batch: u64,
    },
    /// After `Start`, sends `batch` transfers every `every`, round robin over its
    /// neighbours, until stopped, and handles what comes in between: a background
    /// load.
    Background {
        /// Transfers per round.
        batch: u32,
        /// The time between the starts of two rounds.
        every: Duration,
    },
}

/// The background load of `snapshot_latency`'s loaded rows: every node sends 16
/// transfers every millisecond (16,000 a second), half to each neighbour.
pub const BACKGROUND: Work = Work::Background {
    batch: 16,
    every: Duration::from_millis(1),
};

/// The nodes of `snapshot_overhead`'s ring.
pub const OVERHEAD_NODES: u32 = 8;

/// The transfers of one `snapshot_overhead` run on `medium`, all nodes together:
/// about a quarter of a second's work on a 2-core machine, 25 snapshots at 100 a
/// second.
pub fn overhead_transfers(medium: Medium) -> u64 {
    match medium {
        Medium::Mem => 2_500_000,
        Medium::Pipe | Medium::Tcp => 2_000_000,
    }
}

/// How long the driver waits for the nodes before it gives up on a run.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How a node's loop ends: with its account, or with the error that stopped it.
type NodeResult = Result<Account, NodeError>;

/// What a node does with a failed step: a peer node that has gone means the run is
/// ending (it got `Stop` first), so the node stops sending and waits for its own;
/// the driver gone, or nothing left to receive, ends it at once.
enum Failure {
    Quiet,
    End,
    Fail(NodeError),
}

fn classify(error: NodeError) -> Failure {
    match error {
        NodeError::Transport(TransportError::Disconnected(Endpoint::Node(_))) => Failure::Quiet,
        NodeError::Transport(
            TransportError::Disconnected(Endpoint::Role(0)) | TransportError::Closed,
        ) => Failure::End,
        other => Failure::Fail(other),
    }
}

/// One node at work: a free-running [`Node`] and its transport, with where its
/// [`Work`] stands.
struct Worker<T> {
    node: Node<Account>,
    t: T,
    work: Work,
    neighbours: Vec<NodeId>,
    /// The neighbour the next transfer goes to.
    next: usize,
    sent: u64,
    started: bool,
    /// A peer has gone: the run is ending, so nothing more is sent.
    quiet: bool,
    done: bool,
    next_round: Instant,
}

impl<T: Transport<Wire>> Worker<T> {
    /// Sends `count` transfers, round robin.
    fn transfer(&mut self, count: u64) -> Result<(), NodeError> {
        for _ in 0..count {
            let Some(&to) = self.neighbours.get(self.next) else {
                return Ok(());
            };
            self.node.process_mut().balance -= AMOUNT;
            self.node
                .send(&mut self.t, to, Transfer::new(AMOUNT, self.sent))?;
            self.next = (self.next + 1) % self.neighbours.len();
            self.sent += 1;
        }
        Ok(())
    }

    fn report(&mut self, control: Control) -> Result<(), NodeError> {
        self.t.send(Endpoint::Role(0), Frame::Control(control))?;
        Ok(self.t.flush()?)
    }

    /// Does one round of work and handles what comes meanwhile; `false` once told
    /// to stop.
    fn step(&mut self) -> Result<bool, NodeError> {
        let event = match self.work {
            Work::Transfers { send, batch, .. }
                if self.started && !self.quiet && self.sent < send =>
            {
                self.transfer(batch.min(send - self.sent))?;
                // Takes in up to twice what it has just sent, so that the nodes keep
                // pace with each other and a marker does not wait behind a backlog;
                // a bounded number of looks, so that events coming without end
                // cannot keep it from sending either.
                let limit = self.node.process().handled + 2 * batch;
                for _ in 0..2 * batch.div_ceil(Node::<Account>::POLL_BURST as u64) + 8 {
                    let before = self.node.process().handled;
                    let event = self.node.poll_event(&mut self.t, Duration::ZERO)?;
                    let drained = event.is_none();
                    if let Some(event) = event
                        && !self.on_event(event)?
                    {
                        return Ok(false);
                    }
                    // Fewer than a burst and no event: nothing more had arrived.
                    let handled = self.node.process().handled;
                    if handled >= limit
                        || (drained && handled - before < Node::<Account>::POLL_BURST as u64)
                    {
                        break;
                    }
                }
                None
            }
            // Everything is sent: handles what comes, and looks again whether it is
            // done every millisecond at least.
            Work::Transfers { .. } if self.started && !self.done => self
                .node
                .poll_event(&mut self.t, Duration::from_millis(1))?,
            Work::Background { batch, every } if self.started && !self.quiet => {
                let now = Instant::now();
                if now >= self.next_round {
                    self.next_round = now + every;
                    self.transfer(u64::from(batch))?;
                }
                let wait = self.next_round.saturating_duration_since(now);
                self.node.poll_event(&mut self.t, wait)?
            }
            _ => Some(self.node.next_event(&mut self.t)?),
        };
        if let Some(event) = event
            && !self.on_event(event)?
        {
            return Ok(false);
        }
        if let Work::Transfers { send, expected, .. } = self.work
            && self.started
            && !self.done
            && self.sent == send
            && self.node.process().handled == expected
        {
            self.done = true;
            self.report(Control::Done)?;
        }
        Ok(true)
    }

    /// Acts on what the node handed over; `false` once told to stop.
    fn on_event(&mut self, event: Event<i64, i64, Control>) -> Result<bool, NodeError> {
        match event {
            Event::Control { control, .. } => match control {
                Control::Start => {
                    self.started = true;
                    self.next_round = Instant::now();
                }
                Control::Initiate => {
                    if let (_, Some(local)) = self.node.initiate(&mut self.t)? {
                        self.report(Control::Local(Box::new(local)))?;
                    }
                }
                Control::Stop => {
                    // What could not be written now has nowhere to go.
                    let _ = self.t.flush();
                    return Ok(false);
                }
                Control::Local(_) | Control::Done => {
                    return Err(TransportError::Protocol(format!(
                        "{} was sent {control:?}, which only the driver takes",
                        self.node.id()
                    ))
                    .into());
                }
            },
            Event::Completed(local) => self.report(Control::Local(Box::new(local)))?,
            // A node gone: the run is ending, so nothing more is sent.
            Event::Departed(Endpoint::Node(_)) => self.quiet = true,
            // The driver gone: the run is over.
            Event::Departed(_) => return Ok(false),
        }
        Ok(true)
    }
}

/// One node's thread: the loop of [`Work`] around a free-running [`Node`].
fn node_loop<T: Transport<Wire>>(
    id: NodeId,
    neighbours: Vec<NodeId>,
    work: Work,
    t: T,
) -> NodeResult {
    let mut node = Node::new(id, Account::default());
    for &peer in &neighbours {
        node.add_peer(peer)?;
    }
    let mut worker = Worker {
        node,
        t,
        work,
        neighbours,
        next: 0,
        sent: 0,
        started: false,
        quiet: false,
        done: false,
        next_round: Instant::now(),
    };
    loop {
        match worker.step() {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => match classify(error) {
                Failure::Quiet => worker.quiet = true,
                Failure::End => break,
                Failure::Fail(error) => return Err(error),
            },
        }
    }
    Ok(std::mem::take(worker.node.process_mut()))
}

/// The driver's endpoint.
type Driver = Box<dyn Transport<Wire>>;

/// The endpoints of a run and the pairs to connect.
struct Plan {
    endpoints: Vec<Endpoint>,
    pairs: Vec<(Endpoint, Endpoint)>,
}

impl Plan {
    fn new(topology: Topology) -> Self {
        let mut endpoints = vec![Endpoint::Role(0)];
        let mut pairs = Vec::new();
        for node in 1..=topology.nodes() {
            endpoints.push(Endpoint::Node(NodeId(node)));
            pairs.push((Endpoint::Role(0), Endpoint::Node(NodeId(node))));
            for peer in topology.neighbours(node) {
                if peer.0 > node {
                    pairs.push((Endpoint::Node(NodeId(node)), Endpoint::Node(peer)));
                }
            }
        }
        Plan { endpoints, pairs }
    }

    /// Connects both ends of every pair.
    fn connect<T: Transport<Wire>>(
        &self,
        open: &mut [(Endpoint, T)],
    ) -> Result<(), TransportError> {
        let addresses: Vec<(Endpoint, String)> =
            open.iter().map(|(e, t)| (*e, t.address())).collect();
        let address = |e: Endpoint| {
            addresses
                .iter()
                .find(|(a, _)| *a == e)
                .map(|(_, address)| address.clone())
                .ok_or(TransportError::UnknownEndpoint(e))
        };
        for &(a, b) in &self.pairs {
            let (address_a, address_b) = (address(a)?, address(b)?);
            for (e, t) in open.iter_mut() {
                if *e == a {
                    t.connect(b, &address_b)?;
                } else if *e == b {
                    t.connect(a, &address_a)?;
                }
            }
        }
        Ok(())
    }
}

/// The nodes' threads of a run, and the driver's endpoint.
type Launched = (Driver, Vec<JoinHandle<NodeResult>>);

/// Starts a thread per node on its endpoint of `open` (the observer's is the
/// driver's).
fn launch<T: Transport<Wire> + 'static>(
    mut open: Vec<(Endpoint, T)>,
    topology: Topology,
    work: &dyn Fn(u32) -> Work,
) -> Result<Launched, TransportError> {
    let at = open
        .iter()
        .position(|(e, _)| *e == Endpoint::Role(0))
        .ok_or(TransportError::UnknownEndpoint(Endpoint::Role(0)))?;
    let mut driver: Driver = Box::new(open.swap_remove(at).1);
    let mut threads = Vec::new();
    let mut started = Vec::new();
    for (endpoint, t) in open {
        let Endpoint::Node(id) = endpoint else {
            continue;
        };
        let neighbours = topology.neighbours(id.0);
        let work = work(id.0);
        let thread = std::thread::Builder::new()
            .name(format!("node {}", id.0))
            .spawn(move || node_loop(id, neighbours, work, t))
            .map_err(|source| TransportError::Io {
                context: "starting a node".to_string(),
                source,
            });
        match thread {
            Ok(thread) => {
                threads.push(thread);
                started.push(id);
            }
            Err(error) => {
                // Those already started are told to stop.
                for id in started {
                    let _ = driver.send(Endpoint::Node(id), Frame::Control(Control::Stop));
                }
                let _ = driver.flush();
                drop(driver);
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(error);
            }
        }
    }
    Ok((driver, threads))
}

/// A running set of nodes, and the driver's endpoint.
///
/// Dropping it stops the nodes, joins their threads and removes what the medium
/// created on disk; [`stop`](Self::stop) does the same and returns the accounts.
pub struct Cluster {
    /// Until the cluster is stopped or dropped.
    driver: Option<Driver>,
    nodes: Vec<NodeId>,
    threads: Vec<JoinHandle<NodeResult>>,
    collector: Collector<i64, i64>,
    snapshots: u64,
    /// The FIFOs' directory, removed once every endpoint has gone.
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes.len())
            .field("snapshots", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Opens a run of `topology` on `medium` and starts its nodes, node `k` doing
    /// `work(k)`. Nothing moves until [`start`](Self::start). A topology of fewer
    /// than 2 nodes is refused.
    pub fn spawn(
        medium: Medium,
        topology: Topology,
        work: impl Fn(u32) -> Work,
    ) -> Result<Self, TransportError> {
        if topology.nodes() < 2 {
            return Err(TransportError::Protocol(format!(
                "a run needs 2 nodes or more, not {}",
                topology.nodes()
            )));
        }
        let plan = Plan::new(topology);
        let mut dir = None;
        let (driver, threads) = match medium {
            Medium::Mem => {
                let network = MemNetwork::with_batching();
                let mut open = Vec::new();
                for &e in &plan.endpoints {
                    open.push((e, network.endpoint(e)?));
                }
                plan.connect(&mut open)?;
                launch(open, topology, &work)?
            }
            Medium::Pipe => {
                let temp = tempfile::tempdir().map_err(|source| TransportError::Io {
                    context: "creating the run directory".to_string(),
                    source,
                })?;
                let mut open = Vec::new();
                for &e in &plan.endpoints {
                    open.push((e, PipeTransport::new(temp.path(), e)?));
                }
                plan.connect(&mut open)?;
                let launched = launch(open, topology, &work)?;
                dir = Some(temp);
                launched
            }
            Medium::Tcp => {
                let config = TcpConfig::new("bench", random_key());
                let mut open = Vec::new();
                for &e in &plan.endpoints {
                    open.push((e, TcpTransport::new(e, config.clone())?));
                }
                plan.connect(&mut open)?;
                launch(open, topology, &work)?
            }
        };
        Ok(Cluster {
            driver: Some(driver),
            nodes: (1..=topology.nodes()).map(NodeId).collect(),
            threads,
            collector: Collector::new((1..=topology.nodes()).map(NodeId)),
            snapshots: 0,
            dir,
        })
    }

    /// The number of nodes.
    pub fn nodes(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// The snapshots assembled so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    fn driver(&mut self) -> Result<&mut dyn Transport<Wire>, TransportError> {
        match self.driver.as_mut() {
            Some(driver) => Ok(driver.as_mut()),
            None => Err(TransportError::Closed),
        }
    }

    fn tell(&mut self, node: NodeId, control: Control) -> Result<(), TransportError> {
        self.driver()?
            .send(Endpoint::Node(node), Frame::Control(control))
    }

    /// Tells every node to start its work.
    pub fn start(&mut self) -> Result<(), TransportError> {
        for node in self.nodes.clone() {
            self.tell(node, Control::Start)?;
        }
        self.driver()?.flush()
    }

    /// Asks `node` to start a snapshot.
    pub fn initiate(&mut self, node: NodeId) -> Result<(), TransportError> {
        self.tell(node, Control::Initiate)?;
        self.driver()?.flush()
    }

    /// Takes in one thing the nodes say, waiting up to `timeout` for it: a part of a
    /// snapshot (returned, with the snapshot, once the snapshot is complete) or a
    /// `Done` (counted in `done`).
    pub fn collect(
        &mut self,
        timeout: Duration,
        done: &mut usize,
    ) -> Result<Option<GlobalSnapshot<i64, i64>>, TransportError> {
        let (from, frame) = match self.driver()?.recv_timeout(timeout)? {
            None => return Ok(None),
            Some(Incoming::Frame(from, frame)) => (from, frame),
            Some(Incoming::Departed(peer)) => {
                return Err(TransportError::Protocol(format!(
                    "{peer} left in the middle of the run"
                )));
            }
        };
        match frame {
            Frame::Control(Control::Local(local)) => {
                let global = self
                    .collector
                    .add(*local)
                    .map_err(|error| TransportError::Protocol(error.to_string()))?;
                if global.is_some() {
                    self.snapshots += 1;
                }
                Ok(global)
            }
            Frame::Control(Control::Done) => {
                *done += 1;
                Ok(None)
            }
            other => Err(TransportError::Protocol(format!(
                "{from} sent {other:?} to the driver"
            ))),
        }
    }

    /// Starts a snapshot at `node` and waits until the collector has assembled it;
    /// returns how long that took, from the driver's request to the last part, and
    /// the snapshot.
    ///
    /// Meant for runs where nothing else is in flight: a `Done`, or the part of
    /// another snapshot, fails it.
    pub fn snapshot(
        &mut self,
        node: NodeId,
    ) -> Result<(Duration, GlobalSnapshot<i64, i64>), TransportError> {
        let start = Instant::now();
        self.initiate(node)?;
        let mut done = 0;
        loop {
            if let Some(global) = self.collect(PATIENCE, &mut done)? {
                return Ok((start.elapsed(), global));
            }
            if done > 0 || self.collector.in_progress() > 1 {
                return Err(TransportError::Protocol(
                    "something else came in while a snapshot was taken".to_string(),
                ));
            }
            if start.elapsed() > PATIENCE {
                return Err(TransportError::Protocol(
                    "no snapshot within the patience".to_string(),
                ));
            }
        }
    }

    /// Stops every node and returns their accounts, in node order.
    pub fn stop(mut self) -> Result<Vec<Account>, TransportError> {
        self.shut_down();
        let mut accounts = Vec::new();
        let mut failure = None;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(account)) => accounts.push(account),
                Ok(Err(error)) => {
                    failure.get_or_insert(TransportError::Protocol(error.to_string()));
                }
                Err(_) => {
                    failure.get_or_insert(TransportError::Protocol("a node panicked".to_string()));
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(accounts),
        }
    }

    /// Tells every node to stop and lets the driver's endpoint go: a node that missed
    /// the word sees the driver gone and stops too.
    fn shut_down(&mut self) {
        for node in self.nodes.clone() {
            // A node that has failed has gone: its error comes from its thread.
            let _ = self.tell(node, Control::Stop);
        }
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.flush();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shut_down();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Only now that every endpoint has gone.
        drop(self.dir.take());
    }
}

/// What [`run_transfers`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferRun {
    /// From `Start` to the last node's `Done`.
    pub elapsed: Duration,
    /// Transfers handled, all nodes together.
    pub transfers: u64,
    /// Snapshots assembled meanwhile (each one checked).
    pub snapshots: u64,
}

impl TransferRun {
    /// Transfers per second.
    pub fn rate(&self) -> f64 {
        self.transfers as f64 / self.elapsed.as_secs_f64()
    }
}

/// How many transfers each node of `topology` receives when the senders send
/// `sends(node)` each, round robin over their neighbours.
fn expected(topology: Topology, sends: &dyn Fn(u32) -> u64, node: u32) -> u64 {
    (1..=topology.nodes())
        .filter(|&p| p != node)
        .map(|p| {
            let targets = topology.neighbours(p);
            let count = sends(p);
            let width = targets.len() as u64;
            targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.0 == node)
                .map(|(at, _)| count / width + u64::from((at as u64) < count % width))
                .sum::<u64>()
        })
        .sum()
}

/// The most snapshots [`run_transfers`] has in flight at once: half of what a node's
/// engine takes by default, so that a run whose snapshots fall behind its schedule
/// skips some rather than fails.
pub const MAX_IN_FLIGHT: u64 =
    snapshot_core::SnapshotEngine::<Account>::DEFAULT_MAX_IN_FLIGHT as u64 / 2;

/// Runs `topology` on `medium` with its sending nodes moving `total` transfers
/// between them as fast as they can (shared out evenly), while the driver starts a
/// snapshot `snapshots_per_second` times a second (0: none), at each node in turn,
/// with as many in flight as that makes, up to [`MAX_IN_FLIGHT`] (a snapshot due
/// beyond it is skipped). Every assembled snapshot is [checked](check).
///
/// The time runs from the driver's `Start` to the last node's `Done`; setting the
/// nodes up and stopping them is not part of it.
pub fn run_transfers(
    medium: Medium,
    topology: Topology,
    total: u64,
    snapshots_per_second: u32,
) -> Result<TransferRun, TransportError> {
    let n = topology.nodes();
    let senders = (1..=n).filter(|&k| topology.sends(k)).count() as u64;
    let sends = move |node: u32| -> u64 {
        if !topology.sends(node) {
            return 0;
        }
        // The first `total % senders` senders send one more.
        let rank = (1..node).filter(|&k| topology.sends(k)).count() as u64;
        total / senders + u64::from(rank < total % senders)
    };
    let mut cluster = Cluster::spawn(medium, topology, |node| Work::Transfers {
        send: sends(node),
        expected: expected(topology, &sends, node),
        batch: medium.batch(),
    })?;
    let every = (snapshots_per_second > 0)
        .then(|| Duration::from_secs_f64(1.0 / f64::from(snapshots_per_second)));
    let start = Instant::now();
    cluster.start()?;
    let mut next_snapshot = every.map(|every| start + every);
    let mut initiator = 0u32;
    let mut done = 0usize;
    while done < n as usize {
        let now = Instant::now();
        if now - start > PATIENCE {
            return Err(TransportError::Protocol(
                "the run took too long".to_string(),
            ));
        }
        let timeout = match (next_snapshot, every) {
            (Some(at), Some(every)) if now >= at => {
                // Never more in flight than the nodes' engines take: a snapshot due
                // while as many are unfinished is skipped, not queued.
                if u64::from(initiator) - cluster.snapshots < MAX_IN_FLIGHT {
                    cluster.initiate(NodeId(initiator % n + 1))?;
                    initiator += 1;
                }
                // A driver that has fallen behind does not catch up in a burst.
                next_snapshot = Some((at + every).max(now));
                Duration::ZERO
            }
            (Some(at), _) => at - now,
            (None, _) => PATIENCE,
        };
        if let Some(global) = cluster.collect(timeout, &mut done)? {
            check(&global)?;
        }
    }
    let elapsed = start.elapsed();
    let snapshots = cluster.snapshots;
    let accounts = cluster.stop()?;
    let transfers = accounts.iter().map(|a| a.handled).sum();
    let wanted: u64 = (1..=n).map(sends).sum();
    if transfers != wanted {
        return Err(TransportError::Protocol(format!(
            "{transfers} transfers handled of {wanted} sent"
        )));
    }
    Ok(TransferRun {
        elapsed,
        transfers,
        snapshots,
    })
}

/// Checks that `global` is a consistent cut in which no money was made or lost: the
/// accounts and the transfers in transit add up to zero, what they started with.
pub fn check(global: &GlobalSnapshot<i64, i64>) -> Result<(), TransportError> {
    global
        .check_cut()
        .map_err(|error| TransportError::Protocol(error.to_string()))?;
    let held: i64 = global.nodes().map(|l| l.state).sum();
    let in_transit: i64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
    if held + in_transit != 0 {
        return Err(TransportError::Protocol(format!(
            "snapshot {}: {held} held + {in_transit} in transit, but the accounts started with 0",
            global.id()
        )));
    }
    Ok(())
}

/// The bytes of one transfer frame on pipe and tcp: the length prefix and the
/// postcard encoding of [`transfer_frame`], as the transports write it.
pub fn encoded_transfer() -> Result<Vec<u8>, TransportError> {
    let mut bytes = Vec::new();
    encode_into(&transfer_frame(0), &mut bytes, DEFAULT_MAX_FRAME).map_err(|error| {
        TransportError::Codec {
            context: "a transfer".to_string(),
            reason: error.to_string(),
        }
    })?;
    Ok(bytes)
}

/// The size of the buffers the ceilings write through.
pub const CEILING_BUFFER: usize = 64 * 1024;

fn io_error(context: &str) -> impl Fn(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        context: context.to_string(),
        source,
    }
}

/// The raw ceiling of `medium`: how long the bare medium takes to move `frames`
/// transfer frames one way between two threads, without snapshot-core.
///
/// - mem: an unbounded crossbeam channel carrying `(Endpoint, Wire)` items, one
///   frame per `send`;
/// - pipe: an anonymous pipe (the same kernel object as a FIFO), and tcp: a loopback
///   socket with `TCP_NODELAY`, both written through [`CEILING_BUFFER`]-byte
///   buffers holding the transports' encoding of the same frames
///   ([`encoded_transfer`]), and read 64 KiB at a time and counted, not decoded.
pub fn ceiling(medium: Medium, frames: u64) -> Result<Duration, TransportError> {
    match medium {
        Medium::Mem => {
            let (tx, rx) = crossbeam_channel::unbounded::<(Endpoint, Wire)>();
            let reader = std::thread::spawn(move || {
                let mut count = 0u64;
                while count < frames && rx.recv().is_ok() {
                    count += 1;
                }
                count
            });
            let start = Instant::now();
            let from = Endpoint::Node(NodeId(1));
            for seq in 0..frames {
                tx.send((from, transfer_frame(seq)))
                    .map_err(|_| TransportError::Disconnected(Endpoint::Node(NodeId(2))))?;
            }
            let count = reader
                .join()
                .map_err(|_| TransportError::Protocol("the reader panicked".to_string()))?;
            let elapsed = start.elapsed();
            if count != frames {
                return Err(TransportError::Protocol(format!(
                    "{count} of {frames} frames arrived"
                )));
            }
            Ok(elapsed)
        }
        Medium::Pipe => {
            let (rx, tx) = std::io::pipe().map_err(io_error("opening a pipe"))?;
            bare_stream(frames, rx, tx)
        }
        Medium::Tcp => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(io_error("binding a listener"))?;
            let address = listener
                .local_addr()
                .map_err(io_error("binding a listener"))?;
            let tx = std::net::TcpStream::connect(address).map_err(io_error("connecting"))?;
            tx.set_nodelay(true)
                .map_err(io_error("setting TCP_NODELAY"))?;
            let (rx, _) = listener.accept().map_err(io_error("accepting"))?;
            bare_stream(frames, rx, tx)
        }
    }
}

/// `frames` encoded transfer frames from `tx` to `rx`, the reader in a thread of its
/// own: the time from the first write to the last byte read.
fn bare_stream<R, W>(frames: u64, mut rx: R, mut tx: W) -> Result<Duration, TransportError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let frame = encoded_transfer()?;
    let bytes = frames * frame.len() as u64;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut chunk = vec![0; 64 * 1024];
        let mut got = 0u64;
        while got < bytes {
            match rx.read(&mut chunk)? {
                0 => break,
                n => got += n as u64,
            }
        }
        Ok(got)
    });
    let start = Instant::now();
    let mut buffer = Vec::with_capacity(CEILING_BUFFER + frame.len());
    for _ in 0..frames {
        buffer.extend_from_slice(&frame);
        if buffer.len() + frame.len() > CEILING_BUFFER {
            tx.write_all(&buffer).map_err(io_error("writing"))?;
            buffer.clear();
        }
    }
    tx.write_all(&buffer).map_err(io_error("writing"))?;
    drop(tx);
    let got = reader
        .join()
        .map_err(|_| TransportError::Protocol("the reader panicked".to_string()))?
        .map_err(io_error("reading"))?;
    let elapsed = start.elapsed();
    if got != bytes {
        return Err(TransportError::Protocol(format!(
            "{got} of {bytes} bytes arrived"
        )));
    }
    Ok(elapsed)
}
