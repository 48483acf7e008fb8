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
    /// The latency of every snapshot assembled, from the request to the last part.
    pub latencies: Latencies,
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

/// Sub-buckets per power of two: latencies within 1/64 (1.6%) of each other share a
/// bucket.
const SUB_BUCKETS: u64 = 64;

/// How many buckets cover every `u64` of nanoseconds: `SUB_BUCKETS` exact ones below
/// `SUB_BUCKETS`, then `SUB_BUCKETS` for each power of two from there to 2^64.
const BUCKETS: usize = (SUB_BUCKETS * (64 - SUB_BUCKETS.trailing_zeros() as u64 + 1)) as usize;

/// Snapshot latencies, in memory that does not grow however long a run goes on: a
/// count per bucket (exact below 64 ns, then 64 buckets per power of two, each 1/64
/// of it wide), and the largest exactly. A percentile is the upper end of the bucket
/// that holds it (no more than 1.6% above the latency itself), or the largest when
/// that is smaller.
#[derive(Clone, PartialEq, Eq)]
pub struct Latencies {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("total", &self.total)
            .field("latency", &self.latency())
            .finish()
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            counts: vec![0; BUCKETS],
            total: 0,
            max: Duration::ZERO,
        }
    }
}

impl Latencies {
    /// No latency yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket of `nanos`.
    fn bucket(nanos: u64) -> usize {
        if nanos < SUB_BUCKETS {
            return nanos as usize;
        }
        let power = u64::from(63 - nanos.leading_zeros());
        let shift = power - u64::from(SUB_BUCKETS.trailing_zeros());
        let sub = (nanos >> shift) - SUB_BUCKETS;
        (SUB_BUCKETS * (shift + 1) + sub) as usize
    }

    /// The largest number of nanoseconds in bucket `index`.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        let sub = index % SUB_BUCKETS;
        let top = (u128::from(SUB_BUCKETS + sub + 1) << shift) - 1;
        u64::try_from(top).unwrap_or(u64::MAX)
    }

    /// Counts one more latency.
    pub fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        if let Some(count) = self.counts.get_mut(Self::bucket(nanos)) {
            *count += 1;
        }
        self.total += 1;
        self.max = self.max.max(latency);
    }

    /// How many latencies were counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `p`th percentile, by nearest rank.
    fn percentile(&self, p: u64) -> Option<Duration> {
        let rank = (self.total * p).div_ceil(100).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = Duration::from_nanos(Self::upper(index));
                return Some(upper.min(self.max));
            }
        }
        None
    }

    /// The median, the 99th percentile and the largest; `None` when there are none.
    pub fn latency(&self) -> Option<Latency> {
        if self.total == 0 {
            return None;
        }
        Some(Latency {
            p50: self.percentile(50)?,
            p99: self.percentile(99)?,
            max: self.max,
        })
    }
}

impl FromIterator<Duration> for Latencies {
    fn from_iter<I: IntoIterator<Item = Duration>>(latencies: I) -> Self {
        let mut all = Latencies::new();
        for latency in latencies {
            all.record(latency);
        }
        all
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
        self.latencies.latency()
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
    fn percentiles_go_by_nearest_rank_within_a_bucket() {
        let ms = Duration::from_millis;
        let latencies: Latencies = (1..=200).rev().map(ms).collect();
        let latency = latencies.latency().unwrap();
        // Each within 1/64 above the exact percentile (100 ms and 198 ms).
        assert!(latency.p50 >= ms(100) && latency.p50 <= ms(100) * 65 / 64);
        assert!(latency.p99 >= ms(198) && latency.p99 <= ms(198) * 65 / 64);
        assert_eq!(latency.max, ms(200));
        assert_eq!(latencies.len(), 200);
        let one: Latencies = [ms(7)].into_iter().collect();
        let one = one.latency().unwrap();
        assert_eq!((one.p50, one.p99, one.max), (ms(7), ms(7), ms(7)));
        assert_eq!(Latencies::new().latency(), None);
    }

    #[test]
    fn every_duration_falls_in_a_bucket_that_holds_it() {
        let mut nanos = vec![
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            1_000,
            999_999,
            1 << 40,
            u64::MAX,
        ];
        nanos.extend((0..64).map(|k| 1u64 << k));
        nanos.extend((1..64).map(|k| (1u64 << k) - 1));
        for n in nanos {
            let index = Latencies::bucket(n);
            assert!(index < BUCKETS, "{n} -> {index}");
            let upper = Latencies::upper(index);
            assert!(upper >= n, "{n} is above its bucket's top {upper}");
            // The bucket is at most 1/64 of its values wide.
            assert!(upper - n <= n / 64, "{n} in a bucket up to {upper}");
            if index > 0 {
                assert!(Latencies::upper(index - 1) < n, "{n} belongs lower");
            }
        }
    }

    #[test]
    fn memory_does_not_grow_with_the_count() {
        let mut latencies = Latencies::new();
        let before = latencies.counts.len();
        for k in 0..100_000u64 {
            latencies.record(Duration::from_micros(k % 5_000));
        }
        assert_eq!((latencies.counts.len(), latencies.len()), (before, 100_000));
    }
}
