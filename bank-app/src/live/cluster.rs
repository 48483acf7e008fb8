//! Nodes as threads of this process, each on its own endpoint of a real medium, and a
//! driver on [`DRIVER`] in the calling thread: the plan of endpoints and the pairs
//! that talk, connecting both ends of each pair, a thread per node, and stopping them.
//!
//! On mem the endpoints are those of a batching `transport-mem` network; on pipe, a
//! named FIFO per ordered pair in a temporary directory that is removed once every
//! endpoint has gone; on tcp, a loopback connection per ordered pair, authenticated
//! with a key drawn for the run. Only the processes are threads: the frames go
//! through the same kernel objects as between processes.
//!
//! What a node's thread does is the caller's: a [`NodeMain`], generic over the
//! medium's transport type, so that a node's loop is compiled for each medium rather
//! than going through a `dyn Transport` for every frame.

use crate::systems::TransportKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::topology::Topology;
use snapshot_core::{Endpoint, NodeId, Transport, TransportError};
use std::collections::BTreeSet;
use std::thread::JoinHandle;
use transport_mem::MemNetwork;
use transport_pipe::PipeTransport;
use transport_tcp::{TcpConfig, TcpTransport, random_key};

/// The driver's endpoint: the one the calling thread keeps.
pub const DRIVER: Endpoint = Endpoint::Role(0);

/// How many transfers a busy node sends between two looks at what has arrived, on
/// `medium`.
///
/// Every look flushes the transport's buffers, so on pipe and tcp it is also how many
/// frames a write carries at most: enough to fill most of a 64 KiB buffer. In memory a
/// batch crosses at 256 frames anyway, and looking as often keeps queues short.
pub fn batch(medium: TransportKind) -> u64 {
    match medium {
        TransportKind::Mem => 256,
        TransportKind::Pipe | TransportKind::Tcp => 4096,
    }
}

/// What a node's thread runs, whatever the medium: made for each node before the
/// threads start, and given the node's endpoint on its thread.
pub trait NodeMain<F>: Send + 'static {
    /// What the thread returns.
    type Output: Send + 'static;

    /// Runs the node over `transport`, its endpoint, until it ends.
    fn run<T: Transport<F> + Send + 'static>(self, transport: T) -> Self::Output;
}

/// The endpoints of a run (the driver's, then every node's) and the pairs that talk:
/// the driver with every node, and the two ends of every channel of the topology,
/// each pair once whichever way its channels go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    endpoints: Vec<Endpoint>,
    pairs: Vec<(Endpoint, Endpoint)>,
}

impl Plan {
    /// The plan of a run of `topology`.
    pub fn new(topology: &Topology) -> Self {
        let mut endpoints = vec![DRIVER];
        let mut pairs = Vec::new();
        for node in topology.nodes() {
            endpoints.push(Endpoint::Node(node));
            pairs.push((DRIVER, Endpoint::Node(node)));
        }
        let linked: BTreeSet<(NodeId, NodeId)> = topology
            .links()
            .map(|(from, to)| (from.min(to), from.max(to)))
            .collect();
        pairs.extend(
            linked
                .into_iter()
                .map(|(a, b)| (Endpoint::Node(a), Endpoint::Node(b))),
        );
        Plan { endpoints, pairs }
    }

    /// Every endpoint, the driver's first, then the nodes' in order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The pairs of endpoints that talk, each once.
    pub fn pairs(&self) -> &[(Endpoint, Endpoint)] {
        &self.pairs
    }

    /// Connects both ends of every pair, among the endpoints of `open`.
    pub fn connect<F, T: Transport<F>>(
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

/// A running set of nodes, a thread each, and the driver's endpoint.
///
/// Dropping it tells every node to stop, lets the driver's endpoint go (a node that
/// missed the word sees the driver gone), joins the threads, and only then removes
/// what the medium made on disk; [`stop`](Self::stop) does the same and returns what
/// each thread returned.
pub struct Cluster<F, O> {
    /// Until the cluster is stopped or dropped.
    driver: Option<Box<dyn Transport<F>>>,
    nodes: Vec<NodeId>,
    /// Every node's thread, in node order, until it is joined.
    threads: Vec<(NodeId, Option<JoinHandle<O>>)>,
    /// The frame that tells a node to stop.
    stop: fn() -> F,
    /// The FIFOs' directory, removed once every endpoint has gone.
    dir: Option<tempfile::TempDir>,
}

impl<F, O> std::fmt::Debug for Cluster<F, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.nodes)
            .field("dir", &self.dir.as_ref().map(|d| d.path().to_path_buf()))
            .finish_non_exhaustive()
    }
}

/// The driver's endpoint and the nodes' threads, once launched.
type Launched<F, O> = (Box<dyn Transport<F>>, Vec<(NodeId, Option<JoinHandle<O>>)>);

impl<F, O> Cluster<F, O>
where
    F: Serialize + DeserializeOwned + Send + 'static,
    O: Send + 'static,
{
    /// Opens an endpoint of `medium` for the driver and for every node of `topology`,
    /// connects every pair that talks ([`Plan`]), and starts a thread per node (named
    /// `node ID`) running `main(id)` on its endpoint. `stop` makes the frame that
    /// tells a node to stop.
    ///
    /// If a thread cannot be started, those already started are told to stop and
    /// joined before the error is returned.
    pub fn spawn<N, M>(
        medium: TransportKind,
        topology: &Topology,
        stop: fn() -> F,
        mut main: M,
    ) -> Result<Self, TransportError>
    where
        N: NodeMain<F, Output = O>,
        M: FnMut(NodeId) -> N,
    {
        let plan = Plan::new(topology);
        let mut dir = None;
        let (driver, threads) = match medium {
            TransportKind::Mem => {
                let network = MemNetwork::with_batching();
                let mut open = Vec::new();
                for &e in plan.endpoints() {
                    open.push((e, network.endpoint(e)?));
                }
                plan.connect(&mut open)?;
                launch(open, stop, &mut main)?
            }
            TransportKind::Pipe => {
                let temp = tempfile::tempdir().map_err(|source| TransportError::Io {
                    context: "creating the run directory".to_string(),
                    source,
                })?;
                let mut open = Vec::new();
                for &e in plan.endpoints() {
                    open.push((e, PipeTransport::new(temp.path(), e)?));
                }
                plan.connect(&mut open)?;
                let launched = launch(open, stop, &mut main)?;
                dir = Some(temp);
                launched
            }
            TransportKind::Tcp => {
                let config = TcpConfig::new("local", random_key());
                let mut open = Vec::new();
                for &e in plan.endpoints() {
                    open.push((e, TcpTransport::new(e, config.clone())?));
                }
                plan.connect(&mut open)?;
                launch(open, stop, &mut main)?
            }
        };
        Ok(Cluster {
            driver: Some(driver),
            nodes: topology.nodes().collect(),
            threads,
            stop,
            dir,
        })
    }
}

/// Starts a thread per node on its endpoint of `open`; the driver's endpoint is
/// returned.
fn launch<F, T, N, M>(
    mut open: Vec<(Endpoint, T)>,
    stop: fn() -> F,
    main: &mut M,
) -> Result<Launched<F, N::Output>, TransportError>
where
    T: Transport<F> + Send + 'static,
    N: NodeMain<F>,
    M: FnMut(NodeId) -> N,
{
    let at = open
        .iter()
        .position(|(e, _)| *e == DRIVER)
        .ok_or(TransportError::UnknownEndpoint(DRIVER))?;
    let mut driver: Box<dyn Transport<F>> = Box::new(open.swap_remove(at).1);
    let mut threads = Vec::new();
    let mut nodes: Vec<(NodeId, T)> = open
        .into_iter()
        .filter_map(|(e, t)| match e {
            Endpoint::Node(id) => Some((id, t)),
            Endpoint::Role(_) => None,
        })
        .collect();
    nodes.sort_by_key(|(id, _)| *id);
    for (id, t) in nodes {
        let node = main(id);
        let thread = std::thread::Builder::new()
            .name(format!("node {id}"))
            .spawn(move || node.run(t))
            .map_err(|source| TransportError::Io {
                context: format!("starting node {id}'s thread"),
                source,
            });
        match thread {
            Ok(thread) => threads.push((id, Some(thread))),
            Err(error) => {
                for &(id, _) in &threads {
                    let _ = driver.send(Endpoint::Node(id), stop());
                }
                let _ = driver.flush();
                drop(driver);
                for (_, thread) in threads {
                    if let Some(thread) = thread {
                        let _ = thread.join();
                    }
                }
                return Err(error);
            }
        }
    }
    Ok((driver, threads))
}

impl<F, O> Cluster<F, O> {
    /// The nodes, in order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The directory of the FIFOs, on pipe.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// The driver's endpoint; [`TransportError::Closed`] once the cluster is stopping.
    pub fn driver(&mut self) -> Result<&mut dyn Transport<F>, TransportError> {
        match self.driver.as_mut() {
            Some(driver) => Ok(driver.as_mut()),
            None => Err(TransportError::Closed),
        }
    }

    /// Sends `frame` to `node` from the driver (flushed with the driver's next flush).
    pub fn tell(&mut self, node: NodeId, frame: F) -> Result<(), TransportError> {
        self.driver()?.send(Endpoint::Node(node), frame)
    }

    /// The nodes whose thread has ended (and has not been joined yet), in order.
    pub fn ended(&self) -> Vec<NodeId> {
        self.threads
            .iter()
            .filter(|(_, t)| t.as_ref().is_some_and(JoinHandle::is_finished))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits for `node`'s thread to end and returns what it returned (`Err` with the
    /// panic's payload if it panicked); `None` if it has been joined already or is not
    /// a node of the cluster.
    pub fn join(&mut self, node: NodeId) -> Option<std::thread::Result<O>> {
        let thread = self
            .threads
            .iter_mut()
            .find(|(id, _)| *id == node)
            .and_then(|(_, t)| t.take())?;
        Some(thread.join())
    }

    /// Tells every node to stop, lets the driver's endpoint go, and returns what each
    /// node's thread returned, in node order (those not joined before).
    pub fn stop(mut self) -> Vec<(NodeId, std::thread::Result<O>)> {
        self.shut_down();
        let results = self.join_all();
        drop(self.dir.take());
        results
    }

    fn join_all(&mut self) -> Vec<(NodeId, std::thread::Result<O>)> {
        self.threads
            .iter_mut()
            .filter_map(|(id, t)| t.take().map(|t| (*id, t.join())))
            .collect()
    }

    /// Tells every node to stop and lets the driver's endpoint go: a node that missed
    /// the word sees the driver gone and stops too.
    fn shut_down(&mut self) {
        let stop = self.stop;
        if let Some(mut driver) = self.driver.take() {
            for &node in &self.nodes {
                // A node that has failed has gone: what it returned says why.
                let _ = driver.send(Endpoint::Node(node), stop());
            }
            let _ = driver.flush();
        }
    }
}

impl<F, O> Drop for Cluster<F, O> {
    fn drop(&mut self) {
        self.shut_down();
        let _ = self.join_all();
        // Only now that every endpoint has gone.
        drop(self.dir.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_way_ring_pairs_each_node_with_its_successor_once() {
        let ring = Topology::ring([3, 1, 2].map(NodeId));
        let plan = Plan::new(&ring);
        let node = |n| Endpoint::Node(NodeId(n));
        assert_eq!(plan.endpoints(), [DRIVER, node(1), node(2), node(3)]);
        assert_eq!(
            plan.pairs(),
            [
                (DRIVER, node(1)),
                (DRIVER, node(2)),
                (DRIVER, node(3)),
                (node(1), node(2)),
                (node(1), node(3)),
                (node(2), node(3)),
            ]
        );
        // Both ways between two nodes are one pair.
        let two = Topology::complete([1, 2].map(NodeId));
        assert_eq!(Plan::new(&two).pairs().len(), 3);
    }
}
