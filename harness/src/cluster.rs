//! Starting the nodes of a run on a medium, driving them, and stopping them.
//!
//! The nodes' threads and endpoints are the bank's [`live::cluster`](bank_app::live::cluster)
//! (the cluster `master load` runs on), on the topology's graph; this module adds the
//! harness's driving: `Start`, requests for snapshots, and their assembly.

use crate::node::{NodeResult, NodeSpec, Work};
use crate::topology::Topology;
use crate::wire::{Control, Wire};
use crate::{Account, TransportKind};
use bank_app::account::InTransit;
use bank_app::live::cluster as live;
use snapshot_core::{
    Collector, Frame, GlobalSnapshot, Incoming, NodeId, Transport, TransportError,
};
use std::time::{Duration, Instant};

/// How long the driver waits for the nodes before it gives up on a run.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The frame that tells a node to stop.
fn stop_frame() -> Wire {
    Frame::Control(Control::Stop)
}

/// A running set of nodes, and the driver's endpoint.
///
/// Dropping it stops the nodes, joins their threads and removes what the medium
/// created on disk; [`stop`](Self::stop) does the same and returns the accounts.
pub struct Cluster {
    inner: live::Cluster<Wire, NodeResult>,
    collector: Collector<u64, InTransit>,
    snapshots: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.inner.nodes().len())
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
        let inner = live::Cluster::spawn(medium, &topology.graph(), stop_frame, |id| NodeSpec {
            id,
            neighbours: topology.neighbours(id.0),
            work: work(id.0),
        })?;
        Ok(Cluster {
            inner,
            collector: Collector::new((1..=topology.nodes()).map(NodeId)),
            snapshots: 0,
        })
    }

    /// The number of nodes.
    pub fn nodes(&self) -> u32 {
        self.inner.nodes().len() as u32
    }

    /// The snapshots assembled so far.
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    fn driver(&mut self) -> Result<&mut dyn Transport<Wire>, TransportError> {
        self.inner.driver()
    }

    fn tell(&mut self, node: NodeId, control: Control) -> Result<(), TransportError> {
        self.inner.tell(node, Frame::Control(control))
    }

    /// Tells every node to start its work.
    pub fn start(&mut self) -> Result<(), TransportError> {
        for node in self.inner.nodes().to_vec() {
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
    pub fn stop(self) -> Result<Vec<Account>, TransportError> {
        let mut accounts = Vec::new();
        let mut failure = None;
        for (_, result) in self.inner.stop() {
            match result {
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
}
