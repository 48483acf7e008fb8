//! A run that moves transfers as fast as it can, with snapshots taken meanwhile.

use crate::cluster::{Cluster, PATIENCE};
use crate::medium::Medium;
use crate::money::check;
use crate::node::Work;
use crate::topology::Topology;
use crate::{Account, TransportKind};
use snapshot_core::{NodeId, TransportError};
use std::time::{Duration, Instant};

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
/// snapshot `snapshots_per_second` times a second (0: none), the first at once, at
/// each node in turn, with as many in flight as that makes, up to [`MAX_IN_FLIGHT`]
/// (a snapshot due beyond it is skipped). Every snapshot started is assembled and
/// [checked](check) before the run ends: a run asked for snapshots has at least one,
/// however fast its transfers go.
///
/// The time runs from the driver's `Start` to the last node's `Done`; setting the
/// nodes up, assembling the snapshots still in flight then, and stopping the nodes
/// are not part of it.
pub fn run_transfers(
    medium: TransportKind,
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
    let mut next_snapshot = every.map(|_| start);
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
                if u64::from(initiator) - cluster.snapshots() < MAX_IN_FLIGHT {
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
    while cluster.snapshots() < u64::from(initiator) {
        if start.elapsed() > PATIENCE {
            return Err(TransportError::Protocol(
                "a snapshot started during the run was never assembled".to_string(),
            ));
        }
        if let Some(global) = cluster.collect(PATIENCE, &mut done)? {
            check(&global)?;
        }
    }
    let snapshots = cluster.snapshots();
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
