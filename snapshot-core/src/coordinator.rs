//! Starting snapshots and collecting their parts: the endpoint that coordinates.

use crate::{
    Collector, Coordination, Endpoint, Frame, GlobalSnapshot, Incoming, NodeId, SnapshotError,
    SnapshotId, Transport, TransportError,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a [`Coordinator`] could not go on.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A node's part does not fit the snapshot it claims to belong to.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A snapshot was asked of a node the coordinator does not coordinate.
    #[error("node {0} is not one of the nodes this coordinator coordinates")]
    UnknownNode(NodeId),
    /// An endpoint sent the coordinator what only nodes take.
    #[error("{from} sent the coordinator {what}, which only nodes take")]
    Unexpected {
        /// Who sent it.
        from: Endpoint,
        /// What it was.
        what: &'static str,
    },
}

/// What a [`Coordinator`] hands to its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorEvent<S, R, C = ()> {
    /// A node asked to initiate has started snapshot `id`.
    Started {
        /// The initiator.
        node: NodeId,
        /// The snapshot.
        id: SnapshotId,
    },
    /// Every node's part of a snapshot is in: the whole snapshot, not yet checked
    /// (see [`GlobalSnapshot::check_cut`]).
    Completed(GlobalSnapshot<S, R>),
    /// A control frame of the application's, from any endpoint.
    Control {
        /// Who sent it.
        from: Endpoint,
        /// What it says.
        control: C,
    },
    /// A peer has gone (see [`Incoming::Departed`]). If it was a node, snapshots in
    /// flight cannot complete.
    Departed(Endpoint),
}

/// Starts snapshots at nodes and assembles their parts, over any [`Transport`] of
/// [`Frame`]s, so that an application writes no control protocol of its own.
///
/// It speaks [`Coordination`] with the [`Node`](crate::Node) driver, which answers by
/// itself: [`initiate`](Self::initiate) asks a node to start a snapshot; the node
/// says which one it started, and every node sends its part to the coordinator once
/// it is complete (a node asked to initiate by a coordinator reports to it; the
/// others are told with [`Node::report_to`](crate::Node::report_to)).
/// [`next_event`](Self::next_event) receives until something needs the application:
/// a snapshot started or complete, a control frame, a departure.
///
/// ```
/// use snapshot_core::{Coordinator, NodeId};
///
/// let coordinator = Coordinator::<u64, u64>::new([NodeId(1), NodeId(2), NodeId(3)]);
/// assert_eq!(coordinator.nodes().count(), 3);
/// assert_eq!(coordinator.in_flight(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Coordinator<S, R> {
    collector: Collector<S, R>,
    /// Snapshots started and not yet complete.
    started: BTreeSet<SnapshotId>,
    /// Initiations asked for and not yet started.
    asked: usize,
}

impl<S, R> Coordinator<S, R> {
    /// A coordinator of `nodes`: every snapshot is complete once each of them has sent
    /// its part.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Coordinator {
            collector: Collector::new(nodes),
            started: BTreeSet::new(),
            asked: 0,
        }
    }

    /// The nodes whose parts make a snapshot whole.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.collector.nodes()
    }

    /// How many snapshots have been asked for and are not complete yet.
    pub fn in_flight(&self) -> usize {
        self.asked + self.started.len()
    }

    /// The snapshots started and not complete, with the nodes whose parts are still
    /// missing from each.
    pub fn missing(&self) -> Vec<(SnapshotId, Vec<NodeId>)> {
        let mut missing: Vec<_> = self.collector.missing().collect();
        for &id in &self.started {
            if !missing.iter().any(|(m, _)| *m == id) {
                missing.push((id, self.collector.nodes().collect()));
            }
        }
        missing.sort_by_key(|(id, _)| *id);
        missing
    }

    /// Asks `node` to start a snapshot. Its id comes back as
    /// [`CoordinatorEvent::Started`].
    pub fn initiate<M, C, T>(
        &mut self,
        transport: &mut T,
        node: NodeId,
    ) -> Result<(), CoordinatorError>
    where
        T: Transport<Frame<M, S, R, C>> + ?Sized,
    {
        if !self.collector.nodes().any(|n| n == node) {
            return Err(CoordinatorError::UnknownNode(node));
        }
        transport.send(
            Endpoint::Node(node),
            Frame::Snapshot(Coordination::Initiate),
        )?;
        transport.flush()?;
        self.asked += 1;
        Ok(())
    }

    /// Takes in one thing received; returns what needs the application, if anything.
    pub fn handle<M, C>(
        &mut self,
        incoming: Incoming<Frame<M, S, R, C>>,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError> {
        let (from, frame) = match incoming {
            Incoming::Frame(from, frame) => (from, frame),
            Incoming::Departed(peer) => return Ok(Some(CoordinatorEvent::Departed(peer))),
        };
        match frame {
            Frame::Control(control) => Ok(Some(CoordinatorEvent::Control { from, control })),
            Frame::Peer(_) => Err(CoordinatorError::Unexpected {
                from,
                what: "node-to-node traffic",
            }),
            Frame::Snapshot(Coordination::Initiate) => Err(CoordinatorError::Unexpected {
                from,
                what: "a request to initiate",
            }),
            Frame::Snapshot(Coordination::Started(id)) => {
                // The initiator's own part comes after this, on the same channel: the
                // snapshot cannot have completed yet.
                self.asked = self.asked.saturating_sub(1);
                self.started.insert(id);
                Ok(Some(CoordinatorEvent::Started {
                    node: id.initiator,
                    id,
                }))
            }
            Frame::Snapshot(Coordination::Report(local)) => {
                let id = local.id;
                match self.collector.add(*local)? {
                    Some(global) => {
                        self.started.remove(&id);
                        Ok(Some(CoordinatorEvent::Completed(global)))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Receives, and takes in what comes, until something needs the application or
    /// `timeout` passes (then `Ok(None)`).
    pub fn next_event<M, C, T>(
        &mut self,
        transport: &mut T,
        timeout: Duration,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError>
    where
        T: Transport<Frame<M, S, R, C>> + ?Sized,
    {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let Some(incoming) = transport.recv_timeout(left)? else {
                return Ok(None);
            };
            if let Some(event) = self.handle(incoming)? {
                return Ok(Some(event));
            }
        }
    }
}
