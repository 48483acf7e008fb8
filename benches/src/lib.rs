//! The rows of snapshot-rs's benchmarks: what each one runs, on each medium (see
//! `BENCHMARKS.md` at the root of the repository for the figures and how to reproduce
//! them).
//!
//! The runs themselves are `snapshot-harness`'s: bank branches as threads over mem,
//! pipe or tcp. The benches, the examples and the tests of this package take their
//! parameters from here, so that a test covers what a bench runs. Beside them,
//! [`GraphCluster`] runs idle branches on graphs and media the harness's clusters do
//! not have: complete graphs on mem, and a ring over TLS.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use snapshot_core::topology::Topology as Graph;
use snapshot_core::{
    Collector, Endpoint, Event, Frame, GlobalSnapshot, Incoming, Node, NodeError, NodeId, Process,
    Transport, TransportError,
};
use snapshot_harness::{Account, Control, OPENING, PATIENCE, TransportKind, Wire, Work};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport_mem::MemNetwork;
use transport_tcp::{Ca, TcpConfig, TcpTransport};

/// The transfers of one `transport_throughput/{medium}` run: a tenth of a second or
/// more on every medium.
pub fn throughput_transfers(medium: TransportKind) -> u64 {
    match medium {
        TransportKind::Mem => 2_000_000,
        TransportKind::Pipe | TransportKind::Tcp => 1_000_000,
    }
}

/// The frames of one `transport_throughput/{medium}/ceiling` run: the bare medium is
/// several times faster, so more frames, for as long a run.
pub const CEILING_FRAMES: u64 = 10_000_000;

/// The ring sizes of `snapshot_latency/{medium}/{nodes}`: 2 to 32 nodes, and 64 on
/// mem.
pub fn latency_sizes(medium: TransportKind) -> &'static [u32] {
    match medium {
        TransportKind::Mem => &[2, 4, 8, 16, 32, 64],
        TransportKind::Pipe | TransportKind::Tcp => &[2, 4, 8, 16, 32],
    }
}

/// The background load of `snapshot_latency`'s loaded rows: every node sends 16
/// transfers every millisecond (16,000 a second), half to each neighbour.
pub const BACKGROUND: Work = Work::Background {
    batch: 16,
    every: Duration::from_millis(1),
};

/// The loads of `snapshot_latency/{medium}/{nodes}/{load}`, by name: idle, and under
/// [`BACKGROUND`].
pub const LATENCY_LOADS: [(&str, Work); 2] = [("idle", Work::Idle), ("loaded", BACKGROUND)];

/// The nodes of `snapshot_overhead`'s ring.
pub const OVERHEAD_NODES: u32 = 8;

/// The snapshots per second of `snapshot_overhead/{medium}/{rate}`: none, 10 and 100.
pub const OVERHEAD_RATES: [u32; 3] = [0, 10, 100];

/// The transfers of one `snapshot_overhead` run on `medium`, all nodes together:
/// about a quarter of a second's work on a 2-core machine, 25 snapshots at 100 a
/// second.
pub fn overhead_transfers(medium: TransportKind) -> u64 {
    match medium {
        TransportKind::Mem => 2_500_000,
        TransportKind::Pipe | TransportKind::Tcp => 2_000_000,
    }
}

/// The sizes of `snapshot_latency/mem/complete/{nodes}`: complete graphs, every node
/// linked both ways to every other (256 nodes: 65,280 channels, a marker on each per
/// snapshot).
pub const COMPLETE_SIZES: [u32; 4] = [16, 64, 128, 256];

/// The ring of `snapshot_latency/tcp-tls/{nodes}`: the size of the tcp row it stands
/// beside.
pub const TLS_RING: u32 = 16;

/// The medium of a [`GraphCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphMedium {
    /// A batching `transport-mem` network, as the harness's mem.
    Mem,
    /// Loopback TCP with mutual TLS 1.3: every endpoint has a certificate from one
    /// CA made for the run, in memory.
    TcpTls,
}

impl GraphMedium {
    /// The medium's name in benchmark ids.
    pub fn name(self) -> &'static str {
        match self {
            GraphMedium::Mem => "mem",
            GraphMedium::TcpTls => "tcp-tls",
        }
    }
}

/// What a [`GraphCluster`]'s nodes report.
pub type GraphSnapshot = GlobalSnapshot<<Account as Process>::State, <Account as Process>::Record>;

/// Idle nodes on any strongly connected graph, each a thread over its own endpoint,
/// and a driver on `Endpoint::Role(0)` that asks for snapshots and assembles them:
/// the harness's [`Cluster`](snapshot_harness::Cluster) for the topologies and media
/// it does not have (complete graphs, TLS). The nodes only react: they start a
/// snapshot when the driver says and send it their parts.
///
/// Dropping it stops the nodes and joins their threads.
pub struct GraphCluster {
    driver: Option<Box<dyn Transport<Wire>>>,
    nodes: Vec<NodeId>,
    threads: Vec<JoinHandle<Result<(), NodeError>>>,
    collector: Collector<<Account as Process>::State, <Account as Process>::Record>,
}

impl std::fmt::Debug for GraphCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCluster")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// The driver's endpoint.
const DRIVER: Endpoint = Endpoint::Role(0);

/// A node's thread: an idle [`Account`] that starts snapshots when told and reports
/// its parts to the driver, until told to stop or the driver goes.
fn idle_node<T: Transport<Wire>>(id: NodeId, graph: &Graph, mut t: T) -> Result<(), NodeError> {
    let mut node = Node::new(
        id,
        Account {
            balance: OPENING,
            handled: 0,
        },
    );
    graph.join(&mut node)?;
    loop {
        let event = match node.next_event(&mut t) {
            Ok(event) => event,
            Err(NodeError::Transport(TransportError::Closed | TransportError::Disconnected(_))) => {
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        match event {
            Event::Control {
                control: Control::Initiate,
                ..
            } => {
                if let Some(local) = node.initiate(&mut t)?.1.completed {
                    t.send(DRIVER, Frame::Control(Control::Local(Box::new(local))))?;
                }
                t.flush()?;
            }
            Event::Control {
                control: Control::Stop,
                ..
            } => return Ok(()),
            Event::Completed(local) => {
                t.send(DRIVER, Frame::Control(Control::Local(Box::new(local))))?;
                t.flush()?;
            }
            Event::Departed(DRIVER) => return Ok(()),
            Event::Control { .. } | Event::Departed(_) | Event::Aborted(_) => {}
        }
    }
}

/// Connects every endpoint of `open` to the driver and to its neighbours in `graph`
/// (both ways, as the transport contract asks), and starts a thread per node.
fn launch<T: Transport<Wire> + Send + 'static>(
    graph: &Arc<Graph>,
    mut open: Vec<(Endpoint, T)>,
) -> Result<GraphCluster, TransportError> {
    let addresses: BTreeMap<Endpoint, String> =
        open.iter().map(|(e, t)| (*e, t.address())).collect();
    let address = |e: &Endpoint| {
        addresses
            .get(e)
            .cloned()
            .ok_or(TransportError::UnknownEndpoint(*e))
    };
    for (e, t) in &mut open {
        let peers: Vec<Endpoint> = match *e {
            DRIVER => graph.nodes().map(Endpoint::Node).collect(),
            Endpoint::Node(id) => {
                let linked: BTreeSet<NodeId> =
                    graph.outgoing(id).chain(graph.incoming(id)).collect();
                std::iter::once(DRIVER)
                    .chain(linked.into_iter().map(Endpoint::Node))
                    .collect()
            }
            Endpoint::Role(_) => Vec::new(),
        };
        for peer in peers {
            t.connect(peer, &address(&peer)?)?;
        }
    }
    let at = open
        .iter()
        .position(|(e, _)| *e == DRIVER)
        .ok_or(TransportError::UnknownEndpoint(DRIVER))?;
    let driver: Box<dyn Transport<Wire>> = Box::new(open.swap_remove(at).1);
    let mut cluster = GraphCluster {
        driver: Some(driver),
        nodes: graph.nodes().collect(),
        threads: Vec::new(),
        collector: Collector::new(graph.nodes()),
    };
    for (e, t) in open {
        let Endpoint::Node(id) = e else { continue };
        let graph = Arc::clone(graph);
        let thread = std::thread::Builder::new()
            .name(format!("node {id}"))
            .stack_size(256 * 1024)
            .spawn(move || idle_node(id, &graph, t))
            .map_err(|source| TransportError::Io {
                context: format!("starting node {id}'s thread"),
                source,
            })?;
        cluster.threads.push(thread);
    }
    Ok(cluster)
}

impl GraphCluster {
    /// Opens an endpoint of `medium` for the driver and every node of `graph`,
    /// connects them, and starts a thread per node. The graph must be strongly
    /// connected, with 2 nodes or more.
    pub fn spawn(medium: GraphMedium, graph: Graph) -> Result<Self, TransportError> {
        graph
            .check()
            .map_err(|error| TransportError::Config(error.to_string()))?;
        if graph.nodes().count() < 2 {
            return Err(TransportError::Config("a run needs 2 nodes or more".into()));
        }
        let graph = Arc::new(graph);
        let endpoints: Vec<Endpoint> = std::iter::once(DRIVER)
            .chain(graph.nodes().map(Endpoint::Node))
            .collect();
        match medium {
            GraphMedium::Mem => {
                let network = MemNetwork::with_batching();
                let open = endpoints
                    .iter()
                    .map(|&e| Ok((e, network.endpoint(e)?)))
                    .collect::<Result<Vec<_>, TransportError>>()?;
                launch(&graph, open)
            }
            GraphMedium::TcpTls => {
                let cluster = "latency";
                let ca = Ca::new(cluster)?;
                let open = endpoints
                    .iter()
                    .map(|&e| {
                        let config = TcpConfig {
                            tls: Some(ca.issue(e)?),
                            ..TcpConfig::new(cluster, Vec::new())
                        };
                        Ok((e, TcpTransport::new(e, config)?))
                    })
                    .collect::<Result<Vec<_>, TransportError>>()?;
                launch(&graph, open)
            }
        }
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Asks `node` for a snapshot and waits until the driver has every part;
    /// returns how long that took, from the request to the last part, and the
    /// snapshot.
    pub fn snapshot(&mut self, node: NodeId) -> Result<(Duration, GraphSnapshot), TransportError> {
        let driver = self.driver.as_mut().ok_or(TransportError::Closed)?;
        let start = Instant::now();
        driver.send(Endpoint::Node(node), Frame::Control(Control::Initiate))?;
        driver.flush()?;
        loop {
            let left = PATIENCE.saturating_sub(start.elapsed());
            let (from, frame) = match driver.recv_timeout(left)? {
                Some(Incoming::Frame(from, frame)) => (from, frame),
                Some(Incoming::Departed(peer)) => {
                    return Err(TransportError::Protocol(format!(
                        "{peer} left in the middle of the run"
                    )));
                }
                None => {
                    return Err(TransportError::Protocol(
                        "no snapshot within the patience".to_string(),
                    ));
                }
            };
            let Frame::Control(Control::Local(local)) = frame else {
                return Err(TransportError::Protocol(format!(
                    "{from} sent {frame:?} to the driver"
                )));
            };
            if let Some(global) = self
                .collector
                .add(*local)
                .map_err(|error| TransportError::Protocol(error.to_string()))?
            {
                return Ok((start.elapsed(), global));
            }
        }
    }

    /// Stops the nodes and joins their threads; the first error a node ended with,
    /// if any did.
    pub fn stop(mut self) -> Result<(), TransportError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), TransportError> {
        if let Some(mut driver) = self.driver.take() {
            for &node in &self.nodes {
                let _ = driver.send(Endpoint::Node(node), Frame::Control(Control::Stop));
            }
            let _ = driver.flush();
        }
        let mut failure = None;
        for thread in self.threads.drain(..) {
            let error = match thread.join() {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => TransportError::Protocol(error.to_string()),
                Err(_) => TransportError::Protocol("a node panicked".to_string()),
            };
            failure.get_or_insert(error);
        }
        failure.map_or(Ok(()), Err)
    }
}

impl Drop for GraphCluster {
    fn drop(&mut self) {
        let _ = self.shut_down();
    }
}
