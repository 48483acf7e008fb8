//! What a load measured, and its summary: plain text lines, or one JSON document.

use crate::systems::TransportKind;
use serde::Serialize;
use snapshot_core::SnapshotId;
use std::fmt::Write as _;
use std::time::Duration;

/// What a load measured and found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The seed of every random choice of the run.
    pub seed: u64,
    /// The medium.
    pub transport: TransportKind,
    /// How many branches.
    pub nodes: usize,
    /// The topology as given: `complete`, `ring`, a file, or `restored` (the saved
    /// snapshot's).
    pub topology: String,
    /// All the money of the bank.
    pub total: u64,
    /// The snapshot the bank was restored from, if it was.
    pub restored_from: Option<SnapshotId>,
    /// How long the nodes sent transfers.
    pub elapsed: Duration,
    /// Transfers sent, all nodes together (those put back after a restore not
    /// counted).
    pub transfers: u64,
    /// Snapshots assembled, each checked (those that failed included).
    pub completed: u64,
    /// Of those, the snapshots that failed their check.
    pub failed: u64,
    /// Snapshots aborted at their deadline.
    pub aborted: u64,
    /// Snapshots not started because as many as allowed were in flight.
    pub skipped: u64,
    /// Snapshots saved.
    pub saved: u64,
    /// The latency of every snapshot assembled, from the request to the last part,
    /// in the order they completed.
    pub latencies: Vec<Duration>,
    /// Why snapshots failed their check (the first few).
    pub failures: Vec<String>,
    /// What the branches held at the end, all together, once every transfer had
    /// arrived.
    pub final_balance: u64,
    /// The signal that ended the run early, if one did.
    pub signal: Option<i32>,
}

/// The latency of a set of snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The largest.
    pub max: Duration,
}

impl Latency {
    /// The latency of `latencies` (nearest rank); `None` when there are none.
    pub fn of(latencies: &[Duration]) -> Option<Latency> {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        let rank = |p: usize| {
            let at = (sorted.len() * p).div_ceil(100).max(1) - 1;
            sorted.get(at).copied()
        };
        Some(Latency {
            p50: rank(50)?,
            p99: rank(99)?,
            max: *sorted.last()?,
        })
    }
}

impl Report {
    /// Transfers per second.
    pub fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.transfers as f64 / seconds
        } else {
            0.0
        }
    }

    /// The latency of the snapshots assembled.
    pub fn latency(&self) -> Option<Latency> {
        Latency::of(&self.latencies)
    }

    /// Whether every snapshot assembled passed its check and the branches ended up
    /// with all the money (aborted snapshots are no failure).
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.final_balance == self.total
    }

    /// The exit status: 0 when [`passed`](Self::passed), 1 otherwise; after a
    /// signal, 128 + the signal.
    pub fn status(&self) -> u8 {
        match self.signal {
            Some(signal) => u8::try_from(128 + signal).unwrap_or(u8::MAX),
            None if self.passed() => 0,
            None => 1,
        }
    }

    /// The summary as plain text, a `name: value` line each.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(text, "{name}: {value}");
        };
        line("seed", self.seed.to_string());
        line("transport", self.transport.name().to_string());
        line("nodes", self.nodes.to_string());
        line("topology", self.topology.clone());
        if let Some(id) = self.restored_from {
            line("restored from", format!("snapshot {id}"));
        }
        line("total", self.total.to_string());
        line("duration", format!("{:.3}s", self.elapsed.as_secs_f64()));
        line("transfers", self.transfers.to_string());
        line("transfers/s", format!("{:.0}", self.rate()));
        line("snapshots completed", self.completed.to_string());
        line("snapshots failed", self.failed.to_string());
        line("snapshots aborted", self.aborted.to_string());
        line("snapshots skipped", self.skipped.to_string());
        line("snapshots saved", self.saved.to_string());
        let latency = self.latency();
        let ms = |pick: fn(&Latency) -> Duration| {
            latency.as_ref().map_or("-".to_string(), |l| {
                format!("{:.3}ms", pick(l).as_secs_f64() * 1e3)
            })
        };
        line("latency p50", ms(|l| l.p50));
        line("latency p99", ms(|l| l.p99));
        line("latency max", ms(|l| l.max));
        line(
            "final balance",
            format!(
                "{} ({})",
                self.final_balance,
                if self.final_balance == self.total {
                    "all the money"
                } else {
                    "money lost or made"
                }
            ),
        );
        text
    }

    /// The summary as one JSON document (pretty-printed, ending in a newline).
    pub fn json(&self) -> String {
        let latency = self.latency();
        let ms =
            |pick: fn(&Latency) -> Duration| latency.as_ref().map(|l| pick(l).as_secs_f64() * 1e3);
        let summary = Summary {
            seed: self.seed,
            transport: self.transport.name(),
            nodes: self.nodes,
            topology: &self.topology,
            restored_from: self.restored_from,
            total: self.total,
            duration_s: self.elapsed.as_secs_f64(),
            transfers: self.transfers,
            transfers_per_s: self.rate(),
            snapshots: Snapshots {
                completed: self.completed,
                failed: self.failed,
                aborted: self.aborted,
                skipped: self.skipped,
                saved: self.saved,
            },
            latency_ms: LatencyMs {
                p50: ms(|l| l.p50),
                p99: ms(|l| l.p99),
                max: ms(|l| l.max),
            },
            final_balance: self.final_balance,
            failures: &self.failures,
            status: self.status(),
        };
        // Numbers, strings and vectors always encode.
        let mut json = serde_json::to_string_pretty(&summary).unwrap_or_default();
        json.push('\n');
        json
    }
}

/// The JSON summary.
#[derive(Serialize)]
struct Summary<'a> {
    seed: u64,
    transport: &'a str,
    nodes: usize,
    topology: &'a str,
    restored_from: Option<SnapshotId>,
    total: u64,
    duration_s: f64,
    transfers: u64,
    transfers_per_s: f64,
    snapshots: Snapshots,
    latency_ms: LatencyMs,
    final_balance: u64,
    failures: &'a [String],
    status: u8,
}

#[derive(Serialize)]
struct Snapshots {
    completed: u64,
    failed: u64,
    aborted: u64,
    skipped: u64,
    saved: u64,
}

#[derive(Serialize)]
struct LatencyMs {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_go_by_nearest_rank() {
        let ms = Duration::from_millis;
        let latencies: Vec<Duration> = (1..=200).rev().map(ms).collect();
        let latency = Latency::of(&latencies).unwrap();
        assert_eq!(
            (latency.p50, latency.p99, latency.max),
            (ms(100), ms(198), ms(200))
        );
        let one = Latency::of(&[ms(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (ms(7), ms(7), ms(7)));
        assert_eq!(Latency::of(&[]), None);
    }
}
