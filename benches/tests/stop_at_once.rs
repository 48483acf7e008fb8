//! A cluster stopped right after it starts stops cleanly, on every medium and at every
//! size the benches run (issue 12, defect 5).
//!
//! `cargo bench -p snapshot-benches --bench snapshot_latency -- 'snapshot_latency/mem/64/'`
//! used to panic with `the nodes stop cleanly: Protocol("no route to node 1")`: every
//! row the filter skips still starts its cluster and stops it at once, and on mem a
//! loaded node whose first transfer went to a neighbour already stopped found no
//! route to it, which the harness took for a failure rather than a peer gone.

use snapshot_benches::{LATENCY_LOADS, OVERHEAD_NODES, latency_sizes};
use snapshot_harness::{Cluster, Medium, Topology, TransportKind, Work};

/// Starts a cluster of `topology` on `medium`, every node doing `work`, tells the nodes
/// to start if `start`, and stops it at once.
fn start_and_stop(
    medium: TransportKind,
    topology: Topology,
    work: Work,
    start: bool,
) -> Result<(), String> {
    let mut cluster = Cluster::spawn(medium, topology, |_| work).map_err(|e| format!("{e:?}"))?;
    if start {
        cluster.start().map_err(|e| format!("{e:?}"))?;
    }
    let accounts = cluster.stop().map_err(|e| format!("{e:?}"))?;
    if accounts.len() != topology.nodes() as usize {
        return Err(format!("{} accounts came back", accounts.len()));
    }
    Ok(())
}

#[test]
fn a_cluster_stopped_right_after_it_starts_stops_cleanly() {
    let mut runs = Vec::new();
    for &medium in TransportKind::all() {
        // The shapes of snapshot_latency, the rows a filter skips.
        for &nodes in latency_sizes(medium) {
            for (_, work) in LATENCY_LOADS {
                runs.push((medium, Topology::Ring(nodes), work));
            }
        }
        // And those of snapshot_overhead and transport_throughput, busy at once.
        let busy = Work::Transfers {
            send: 1_000_000,
            expected: 1_000_000,
            batch: medium.batch(),
        };
        runs.push((medium, Topology::Ring(OVERHEAD_NODES), busy));
        runs.push((medium, Topology::OneWay, busy));
    }
    let mut failures = Vec::new();
    // A few rounds: whether a node's first transfer meets a neighbour already gone is
    // a race.
    for _ in 0..3 {
        for &(medium, topology, work) in &runs {
            for start in [true, false] {
                if let Err(error) = start_and_stop(medium, topology, work, start) {
                    failures.push(format!(
                        "{} {topology:?} {work:?}, started: {start}: {error}",
                        medium.name()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} clusters did not stop cleanly:\n{}",
        failures.len(),
        3 * 2 * runs.len(),
        failures.join("\n")
    );
}
