//! Starting snapshots, collecting their parts, and giving up on those that miss
//! their deadline: the endpoint that coordinates.

use crate::{
    Aborted, Collector, Coordination, Endpoint, Frame, GlobalSnapshot, Incoming, NodeId,
    SnapshotError, SnapshotId, Transport, TransportError,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a snapshot has, by default, from the request to its last part.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many aborted snapshots a coordinator remembers, to pass over their late
/// parts.
const ABORTED_REMEMBERED: usize = 1024;

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
    /// An endpoint sent what only another node sends: that node's part, or its word,
    /// as the initiator, that it started a snapshot. It is not taken in, so that the
    /// node's own still counts.
    #[error("{from} sent the coordinator {what} of node {node}")]
    NotItsOwn {
        /// Who sent it.
        from: Endpoint,
        /// The node whose it was.
        node: NodeId,
        /// What it was.
        what: &'static str,
    },
}

/// Figures of one snapshot, like Flink's checkpoint statistics: serializable, to
/// keep beside the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// The snapshot.
    pub id: SnapshotId,
    /// From the request to the initiator's word that it had recorded its state (zero
    /// for a snapshot the coordinator did not ask for).
    pub start_delay: Duration,
    /// From the request (or, for a snapshot the coordinator did not ask for, the
    /// first part) to the last part.
    pub duration: Duration,
    /// Application messages recorded in transit, on every channel together.
    pub messages_in_transit: u64,
    /// The size of the channel records, as the coordinator's
    /// [record size](Coordinator::with_record_size) counts it (`None` without one).
    pub bytes_in_transit: Option<u64>,
    /// The node whose part came last.
    pub last_node: NodeId,
}

/// A whole snapshot and its figures: what [`CoordinatorEvent::Completed`] hands over,
/// serializable as one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenSnapshot<S, R> {
    /// The snapshot, not yet checked (see [`GlobalSnapshot::check_cut`]).
    pub snapshot: GlobalSnapshot<S, R>,
    /// Its figures.
    pub stats: SnapshotStats,
}

/// Where a node stood on a snapshot that was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unfinished {
    /// It did not answer the abort in time (it stopped, or has gone).
    Silent,
    /// It had recorded its state and was still waiting for the marker of these
    /// incoming channels.
    Waiting(Vec<NodeId>),
    /// No marker of the snapshot had reached it.
    NotReached,
}

/// A snapshot given up on because it missed its deadline: which nodes had not
/// finished, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedSnapshot {
    /// The node asked to initiate.
    pub initiator: NodeId,
    /// The snapshot, if the initiator said it had started it.
    pub id: Option<SnapshotId>,
    /// The nodes whose part had not come, and where each stood.
    pub unfinished: BTreeMap<NodeId, Unfinished>,
    /// How long it had.
    pub timeout: Duration,
}

impl fmt::Display for AbortedSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "snapshot {id}")?,
            None => write!(f, "the snapshot asked of node {}", self.initiator)?,
        }
        write!(f, " missed its deadline of {:?}", self.timeout)?;
        let mut sep = ": ";
        for (node, unfinished) in &self.unfinished {
            f.write_str(sep)?;
            sep = "; ";
            match unfinished {
                Unfinished::Silent => write!(f, "node {node} did not answer")?,
                Unfinished::NotReached => write!(f, "no marker reached node {node}")?,
                Unfinished::Waiting(channels) => {
                    write!(f, "node {node} never had the marker from node")?;
                    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
                    write!(
                        f,
                        "{} {}",
                        if channels.len() > 1 { "s" } else { "" },
                        channels.join(", ")
                    )?;
                }
            }
        }
        Ok(())
    }
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
    /// Every node's part of a snapshot is in: the whole snapshot, not yet checked, and
    /// its figures.
    Completed(TakenSnapshot<S, R>),
    /// A snapshot missed its deadline and was aborted at every node.
    Aborted(AbortedSnapshot),
    /// A control frame of the application's, from any endpoint.
    Control {
        /// Who sent it.
        from: Endpoint,
        /// What it says.
        control: C,
    },
    /// A peer has gone (see [`Incoming::Departed`]). If it was a node, snapshots in
    /// flight cannot complete, and will be aborted at their deadline.
    Departed(Endpoint),
}

/// A snapshot asked for, started or not.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    asked_at: Instant,
    started_at: Option<Instant>,
}

/// A snapshot being aborted: the nodes that had not finished, as far as they said.
#[derive(Debug, Clone)]
struct Aborting {
    initiator: NodeId,
    unfinished: BTreeMap<NodeId, Unfinished>,
    /// When the nodes that have not answered are reported silent (`None`: a timeout
    /// so long that it never falls).
    until: Option<Instant>,
}

/// Starts snapshots at nodes, assembles their parts, and aborts those that miss their
/// deadline, over any [`Transport`] of [`Frame`]s, so that an application writes no
/// control protocol of its own.
///
/// It speaks [`Coordination`] with the [`Node`](crate::Node) driver, which answers by
/// itself:
///
/// 1. **Start.** [`initiate`](Self::initiate) asks a node to start a snapshot; the
///    node says which one it started ([`CoordinatorEvent::Started`]).
/// 2. **Complete.** Every node sends its part once it is complete (a node asked to
///    initiate by a coordinator reports to it; the others are told with
///    [`Node::report_to`](crate::Node::report_to)); the last part makes
///    [`CoordinatorEvent::Completed`], with the snapshot's [figures](SnapshotStats).
/// 3. **Or abort.** A snapshot whose last part has not come
///    [`timeout`](Self::with_timeout) after the request is aborted: every node is
///    told to drop what it recorded of it (and to ignore its late markers), and says
///    where it stood; [`CoordinatorEvent::Aborted`] names each node that had not
///    finished and the incoming channels it still waited on (or that it did not
///    answer within the timeout again). The next snapshot goes as usual.
///
/// [`next_event`](Self::next_event) receives, and keeps the deadlines, until something
/// needs the application. The coordinator reads the clock only there and in
/// [`initiate`](Self::initiate); [`initiate_at`](Self::initiate_at),
/// [`handle_at`](Self::handle_at) and [`expire`](Self::expire) take the time as an
/// argument instead, for tests and simulations that keep their own.
///
/// ```
/// use snapshot_core::{Coordinator, NodeId};
/// use std::time::Duration;
///
/// let coordinator = Coordinator::<u64, u64>::new([NodeId(1), NodeId(2), NodeId(3)])
///     .with_timeout(Duration::from_secs(2));
/// assert_eq!(coordinator.nodes().count(), 3);
/// assert_eq!(coordinator.in_flight(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct Coordinator<S, R> {
    collector: Collector<S, R>,
    timeout: Duration,
    record_size: Option<fn(&R) -> u64>,
    /// Requests not started yet, per node, oldest first.
    asked: BTreeMap<NodeId, VecDeque<Instant>>,
    /// Snapshots started (or whose parts have come), not complete.
    tracked: BTreeMap<SnapshotId, Tracked>,
    /// Snapshots being aborted.
    aborting: BTreeMap<SnapshotId, Aborting>,
    /// Snapshots aborted or given up on: their late parts are passed over.
    aborted: VecDeque<SnapshotId>,
    /// Snapshots started after their request was given up on: to abort.
    orphans: Vec<SnapshotId>,
    /// What the deadlines produced, for the application.
    ready: VecDeque<AbortedSnapshot>,
}

impl<S, R> Coordinator<S, R> {
    /// A coordinator of `nodes`: every snapshot is complete once each of them has sent
    /// its part. Snapshots have [`DEFAULT_TIMEOUT`].
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Coordinator {
            collector: Collector::new(nodes),
            timeout: DEFAULT_TIMEOUT,
            record_size: None,
            asked: BTreeMap::new(),
            tracked: BTreeMap::new(),
            aborting: BTreeMap::new(),
            aborted: VecDeque::new(),
            orphans: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// This coordinator, with snapshots that have `timeout` from their request to
    /// their last part.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This coordinator, counting the bytes recorded in transit with `size` (for
    /// [`SnapshotStats::bytes_in_transit`]), for example the length of a channel
    /// record's encoding.
    #[must_use]
    pub fn with_record_size(mut self, size: fn(&R) -> u64) -> Self {
        self.record_size = Some(size);
        self
    }

    /// Sets how long snapshots have from their request to their last part, those in
    /// flight included.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// How long a snapshot has from its request to its last part.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The nodes whose parts make a snapshot whole.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.collector.nodes()
    }

    /// How many snapshots have been asked for (or have parts in) and are neither
    /// complete nor aborted.
    pub fn in_flight(&self) -> usize {
        self.asked.values().map(VecDeque::len).sum::<usize>() + self.tracked.len()
    }

    /// The snapshots started and not complete, with the nodes whose parts are still
    /// missing from each.
    pub fn missing(&self) -> Vec<(SnapshotId, Vec<NodeId>)> {
        self.tracked
            .keys()
            .map(|&id| (id, self.missing_from(id)))
            .collect()
    }

    fn missing_from(&self, id: SnapshotId) -> Vec<NodeId> {
        self.collector
            .missing()
            .find(|(m, _)| *m == id)
            .map_or_else(|| self.collector.nodes().collect(), |(_, missing)| missing)
    }

    /// Asks `node` to start a snapshot. Its id comes back as
    /// [`CoordinatorEvent::Started`]; its deadline runs from now.
    pub fn initiate<M, C, T>(
        &mut self,
        transport: &mut T,
        node: NodeId,
    ) -> Result<(), CoordinatorError>
    where
        T: Transport<Frame<M, S, R, C>> + ?Sized,
    {
        self.initiate_at(transport, node, Instant::now())
    }

    /// [`initiate`](Self::initiate), at the time `now`.
    pub fn initiate_at<M, C, T>(
        &mut self,
        transport: &mut T,
        node: NodeId,
        now: Instant,
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
        self.asked.entry(node).or_default().push_back(now);
        Ok(())
    }

    /// Takes in one thing received; returns what needs the application, if anything.
    pub fn handle<M, C>(
        &mut self,
        incoming: Incoming<Frame<M, S, R, C>>,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError> {
        self.handle_at(incoming, Instant::now())
    }

    /// [`handle`](Self::handle), at the time `now`.
    pub fn handle_at<M, C>(
        &mut self,
        incoming: Incoming<Frame<M, S, R, C>>,
        now: Instant,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError> {
        let (from, frame) = match incoming {
            Incoming::Frame(from, frame) => (from, frame),
            Incoming::Departed(peer) => return Ok(Some(CoordinatorEvent::Departed(peer))),
        };
        let unexpected = |what| Err(CoordinatorError::Unexpected { from, what });
        match frame {
            Frame::Control(control) => Ok(Some(CoordinatorEvent::Control { from, control })),
            Frame::Peer(_) => unexpected("node-to-node traffic"),
            Frame::Snapshot(Coordination::Initiate) => unexpected("a request to initiate"),
            Frame::Snapshot(Coordination::Abort(_)) => unexpected("an abort"),
            Frame::Snapshot(Coordination::Started(id)) => {
                own(from, id.initiator, "the start of a snapshot")?;
                Ok(self.started(id, now))
            }
            Frame::Snapshot(Coordination::Report(local)) => {
                own(from, local.node, "the part")?;
                self.report(*local, now)
            }
            Frame::Snapshot(Coordination::Aborted(id, what)) => {
                if let Endpoint::Node(node) = from {
                    self.answered(id, node, what);
                }
                Ok(self.ready.pop_front().map(CoordinatorEvent::Aborted))
            }
        }
    }

    /// The initiator of `id` has started it.
    fn started<C>(&mut self, id: SnapshotId, now: Instant) -> Option<CoordinatorEvent<S, R, C>> {
        let asked_at = self
            .asked
            .get_mut(&id.initiator)
            .and_then(VecDeque::pop_front);
        let Some(asked_at) = asked_at else {
            // Its request was given up on (or it was never asked for): abort it.
            self.orphans.push(id);
            return None;
        };
        let tracked = self.tracked.entry(id).or_insert(Tracked {
            asked_at,
            started_at: None,
        });
        tracked.asked_at = asked_at;
        tracked.started_at = Some(now);
        Some(CoordinatorEvent::Started {
            node: id.initiator,
            id,
        })
    }

    fn report<C>(
        &mut self,
        local: crate::LocalSnapshot<S, R>,
        now: Instant,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError> {
        let id = local.id;
        if self.aborted.contains(&id) || self.aborting.contains_key(&id) {
            return Ok(None); // late: the snapshot was given up on
        }
        let node = local.node;
        let Some(snapshot) = self.collector.add(local)? else {
            // The initiator's word comes before its part: a part of a snapshot not
            // asked for starts its clock.
            self.tracked.entry(id).or_insert(Tracked {
                asked_at: now,
                started_at: None,
            });
            return Ok(None);
        };
        let tracked = self.tracked.remove(&id).unwrap_or(Tracked {
            asked_at: now,
            started_at: None,
        });
        let channels = snapshot.channels();
        let stats = SnapshotStats {
            id,
            start_delay: tracked.started_at.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(tracked.asked_at)
            }),
            duration: now.saturating_duration_since(tracked.asked_at),
            // Counts a node reported: added up without overflowing.
            messages_in_transit: channels
                .iter()
                .fold(0u64, |sum, (_, _, c)| sum.saturating_add(c.messages)),
            bytes_in_transit: self.record_size.map(|size| {
                channels
                    .iter()
                    .fold(0u64, |sum, (_, _, c)| sum.saturating_add(size(&c.record)))
            }),
            last_node: node,
        };
        Ok(Some(CoordinatorEvent::Completed(TakenSnapshot {
            snapshot,
            stats,
        })))
    }

    /// `node` answered the abort of `id`.
    fn answered(&mut self, id: SnapshotId, node: NodeId, what: Aborted) {
        let Some(aborting) = self.aborting.get_mut(&id) else {
            return;
        };
        match what {
            // Its part is on its way, or was lost with the snapshot: it had finished.
            Aborted::Finished => {
                aborting.unfinished.remove(&node);
            }
            Aborted::Waiting(channels) => {
                aborting
                    .unfinished
                    .insert(node, Unfinished::Waiting(channels));
            }
            Aborted::NotReached => {
                aborting.unfinished.insert(node, Unfinished::NotReached);
            }
        }
        if !aborting
            .unfinished
            .values()
            .any(|u| *u == Unfinished::Silent)
        {
            self.finish_abort(id);
        }
    }

    fn finish_abort(&mut self, id: SnapshotId) {
        if let Some(aborting) = self.aborting.remove(&id) {
            self.ready.push_back(AbortedSnapshot {
                initiator: aborting.initiator,
                id: Some(id),
                unfinished: aborting.unfinished,
                timeout: self.timeout,
            });
        }
    }

    fn remember_aborted(&mut self, id: SnapshotId) {
        if self.aborted.len() == ABORTED_REMEMBERED {
            self.aborted.pop_front();
        }
        self.aborted.push_back(id);
    }

    /// When the next deadline falls, if any snapshot has one.
    pub fn next_deadline(&self) -> Option<Instant> {
        let asked = self
            .asked
            .values()
            .filter_map(|q| q.front())
            .filter_map(|&at| at.checked_add(self.timeout));
        let tracked = self
            .tracked
            .values()
            .filter_map(|t| t.asked_at.checked_add(self.timeout));
        let aborting = self.aborting.values().filter_map(|a| a.until);
        asked.chain(tracked).chain(aborting).min()
    }

    /// Keeps the deadlines at the time `now`: aborts the snapshots that missed theirs
    /// (telling every node), and returns an abort that is complete, if there is one.
    pub fn expire<M, C, T>(
        &mut self,
        transport: &mut T,
        now: Instant,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError>
    where
        T: Transport<Frame<M, S, R, C>> + ?Sized,
    {
        let mut abort: Vec<SnapshotId> = std::mem::take(&mut self.orphans);
        // Requests never started: the initiator did not answer.
        for (&node, queue) in &mut self.asked {
            while queue
                .front()
                .is_some_and(|&at| passed(at, self.timeout, now))
            {
                queue.pop_front();
                self.ready.push_back(AbortedSnapshot {
                    initiator: node,
                    id: None,
                    unfinished: BTreeMap::from([(node, Unfinished::Silent)]),
                    timeout: self.timeout,
                });
            }
        }
        // Snapshots started and late.
        let late: Vec<SnapshotId> = self
            .tracked
            .iter()
            .filter(|(_, t)| passed(t.asked_at, self.timeout, now))
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.tracked.remove(&id);
            let unfinished = self
                .missing_from(id)
                .into_iter()
                .map(|node| (node, Unfinished::Silent))
                .collect();
            self.collector.abandon(id);
            self.aborting.insert(
                id,
                Aborting {
                    initiator: id.initiator,
                    unfinished,
                    until: now.checked_add(self.timeout),
                },
            );
            abort.push(id);
        }
        for id in abort {
            self.remember_aborted(id);
            for node in self.collector.nodes().collect::<Vec<_>>() {
                let abort = Frame::Snapshot(Coordination::Abort(id));
                match transport.send(Endpoint::Node(node), abort) {
                    // A node that has gone needs no telling; it stays silent.
                    Ok(()) | Err(TransportError::Disconnected(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            transport.flush()?;
        }
        // Aborts whose silent nodes had their time.
        let done: Vec<SnapshotId> = self
            .aborting
            .iter()
            .filter(|(_, a)| a.until.is_some_and(|until| until <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in done {
            self.finish_abort(id);
        }
        Ok(self.ready.pop_front().map(CoordinatorEvent::Aborted))
    }

    /// Receives, and takes in what comes, keeping the deadlines, until something
    /// needs the application or `timeout` passes (then `Ok(None)`).
    pub fn next_event<M, C, T>(
        &mut self,
        transport: &mut T,
        timeout: Duration,
    ) -> Result<Option<CoordinatorEvent<S, R, C>>, CoordinatorError>
    where
        T: Transport<Frame<M, S, R, C>> + ?Sized,
    {
        let until = Instant::now().checked_add(timeout);
        loop {
            let now = Instant::now();
            if let Some(event) = self.expire(transport, now)? {
                return Ok(Some(event));
            }
            let mut wake = until;
            if let Some(deadline) = self.next_deadline() {
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
            }
            let wait = wake.map_or(Duration::MAX, |w| w.saturating_duration_since(now));
            match transport.recv_timeout(wait)? {
                Some(incoming) => {
                    if let Some(event) = self.handle_at(incoming, Instant::now())? {
                        return Ok(Some(event));
                    }
                }
                None if until.is_some_and(|u| Instant::now() >= u) => {
                    return self.expire(transport, Instant::now());
                }
                None => {}
            }
        }
    }
}

/// Whether a deadline `timeout` after `at` has passed at `now`; one past the end of
/// time never does.
fn passed(at: Instant, timeout: Duration, now: Instant) -> bool {
    at.checked_add(timeout)
        .is_some_and(|deadline| deadline <= now)
}

/// Refuses what `from` sent about `node` unless `from` is that node.
fn own(from: Endpoint, node: NodeId, what: &'static str) -> Result<(), CoordinatorError> {
    if from == Endpoint::Node(node) {
        Ok(())
    } else {
        Err(CoordinatorError::NotItsOwn { from, node, what })
    }
}
