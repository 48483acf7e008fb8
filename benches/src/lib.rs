//! The rows of snapshot-rs's benchmarks: what each one runs, on each medium (see
//! `BENCHMARKS.md` at the root of the repository for the figures and how to reproduce
//! them).
//!
//! The runs themselves are `snapshot-harness`'s: bank branches as threads over mem,
//! pipe or tcp. The benches, the examples and the tests of this package take their
//! parameters from here, so that a test covers what a bench runs.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use snapshot_harness::{TransportKind, Work};
use std::time::Duration;

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
