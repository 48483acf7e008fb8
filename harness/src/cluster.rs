//! Starting the nodes of a run on a medium, driving them, and stopping them.

use crate::node::{NodeResult, Work, node_loop};
use crate::topology::Topology;
use crate::wire::{Control, Wire};
use crate::{Account, TransportKind};
use bank_app::account::InTransit;
use snapshot_core::{
    Collector, Endpoint, Frame, GlobalSnapshot, Incoming, NodeId, Transport, TransportError,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport_mem::MemNetwork;
use transport_pipe::PipeTransport;
use transport_tcp::{TcpConfig, TcpTransport, random_key};

/// How long the driver waits for the nodes before it gives up on a run.
pub const PATIENCE: Duration = Duration::from_secs(60);

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
    collector: Collector<u64, InTransit>,
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
        medium: TransportKind,
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
            TransportKind::Mem => {
                let network = MemNetwork::with_batching();
                let mut open = Vec::new();
                for &e in &plan.endpoints {
                    open.push((e, network.endpoint(e)?));
                }
                plan.connect(&mut open)?;
                launch(open, topology, &work)?
            }
            TransportKind::Pipe => {
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
            TransportKind::Tcp => {
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
    ) -> Result<Option<GlobalSnapshot<u64, InTransit>>, TransportError> {
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
    ) -> Result<(Duration, GlobalSnapshot<u64, InTransit>), TransportError> {
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
