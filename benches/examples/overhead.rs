//! The overhead of snapshots on throughput, from alternating runs: 8 nodes on a ring,
//! each sending transfers to its neighbours as fast as it can, with no snapshots, 10
//! a second and 100 a second, one run of each in turn, `ROUNDS` times (10 by
//! default), for each medium given (all by default). A run moves `SCALE` times (1 by
//! default) the transfers of a `snapshot_overhead` run: longer runs average out more
//! of the scheduler's noise. Each node is a thread of this
//! process over its own endpoint (real FIFOs and loopback sockets on pipe and tcp).
//!
//! For each rate it prints the median throughput of its runs and their min-max, and
//! the overhead in percent, `100 * (1 - median / median without snapshots)`, with the
//! min-max of the overheads of the rounds (each run against the run without snapshots
//! of its round). A target that lies inside that spread cannot be told apart.
//!
//! ```text
//! cargo run --release -p snapshot-benches --example overhead -- \
//!     [ROUNDS] [--scale=SCALE] [mem|pipe|tcp]...
//! ```

use snapshot_benches::{OVERHEAD_NODES, OVERHEAD_RATES, overhead_transfers};
use snapshot_harness::{Medium, Topology, TransportKind, run_transfers};

/// The overhead at 100 snapshots a second this is measured against, in percent.
const TARGET: f64 = 5.0;

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rounds = 10usize;
    let mut scale = 1u64;
    let mut media = Vec::new();
    for arg in std::env::args().skip(1) {
        if let Some(factor) = arg.strip_prefix("--scale=") {
            scale = factor
                .parse()
                .map_err(|_| format!("not a scale: {factor:?}"))?;
        } else if let Ok(n) = arg.parse() {
            rounds = n;
        } else {
            let medium = TransportKind::all()
                .iter()
                .copied()
                .find(|m| m.name() == arg)
                .ok_or_else(|| format!("no medium {arg:?}: mem, pipe or tcp"))?;
            media.push(medium);
        }
    }
    if media.is_empty() {
        media = TransportKind::all().to_vec();
    }
    if rounds == 0 || scale == 0 {
        return Err("at least one round, of at least the default size".into());
    }
    println!(
        "{OVERHEAD_NODES} nodes on a ring, {rounds} rounds of alternating runs; M transfers/s"
    );
    for medium in media {
        let total = scale * overhead_transfers(medium);
        // rates[r][k]: the throughput of round k at OVERHEAD_RATES[r].
        let mut rates = vec![Vec::new(); OVERHEAD_RATES.len()];
        let mut snapshots = vec![0u64; OVERHEAD_RATES.len()];
        for _ in 0..rounds {
            for (r, &per_second) in OVERHEAD_RATES.iter().enumerate() {
                let run = run_transfers(medium, Topology::Ring(OVERHEAD_NODES), total, per_second)?;
                rates[r].push(run.rate() / 1e6);
                snapshots[r] += run.snapshots;
            }
        }
        let base = median(&rates[0]);
        println!("{} ({total} transfers a run):", medium.name());
        for (r, &per_second) in OVERHEAD_RATES.iter().enumerate() {
            let (lo, hi) = spread(&rates[r]);
            let line = format!(
                "  {per_second:>3} snapshots/s: median {:6.2} (min {:6.2}, max {:6.2}), {:.1} snapshots a run",
                median(&rates[r]),
                lo,
                hi,
                snapshots[r] as f64 / rounds as f64
            );
            if per_second == 0 {
                println!("{line}");
                continue;
            }
            let overheads: Vec<f64> = rates[r]
                .iter()
                .zip(&rates[0])
                .map(|(with, without)| 100.0 * (1.0 - with / without))
                .collect();
            let (lo, hi) = spread(&overheads);
            let overhead = 100.0 * (1.0 - median(&rates[r]) / base);
            let verdict = if per_second != 100 {
                String::new()
            } else if hi < TARGET {
                format!(": under {TARGET}%")
            } else if lo > TARGET {
                format!(": over {TARGET}%")
            } else {
                format!(": {TARGET}% lies inside the spread, cannot be told apart")
            };
            println!("{line}, overhead {overhead:+.1}% (rounds: {lo:+.1}% to {hi:+.1}%){verdict}");
        }
    }
    Ok(())
}
