//! `snapshot_latency/{medium}/{nodes}/{idle,loaded}`: from the driver's request to
//! a node to the `GlobalSnapshot` assembled at the driver's collector, on a ring of
//! `nodes` nodes (each linked both ways to its two neighbours, so a marker crosses up
//! to `nodes / 2` hops), idle or under `BACKGROUND` load (every node sends 16
//! transfers every millisecond). Nodes 2 to 32, and 64 on mem; each node a thread of
//! this process over its own endpoint (real FIFOs and loopback sockets on pipe and
//! tcp). The initiator goes round the ring.
//!
//! ```text
//! cargo bench -p snapshot-benches --bench snapshot_latency
//! ```

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use snapshot_benches::{LATENCY_LOADS, latency_sizes};
use snapshot_core::NodeId;
use snapshot_harness::{Cluster, Medium, Topology, TransportKind, check};
use std::time::Duration;

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_latency");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(800));
    for &medium in TransportKind::all() {
        for &nodes in latency_sizes(medium) {
            for (load, work) in LATENCY_LOADS {
                let id = BenchmarkId::new(format!("{}/{nodes}", medium.name()), load);
                // Set up once per row, outside the measurement.
                let mut cluster = Cluster::spawn(medium, Topology::Ring(nodes), |_| work)
                    .expect("the cluster starts");
                cluster.start().expect("the nodes start");
                let mut initiator = 0;
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| {
                                initiator = initiator % nodes + 1;
                                let (took, global) = cluster
                                    .snapshot(NodeId(initiator))
                                    .expect("the snapshot completes");
                                check(&global).expect("the snapshot is consistent");
                                took
                            })
                            .sum()
                    })
                });
                cluster.stop().expect("the nodes stop cleanly");
            }
        }
    }
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
