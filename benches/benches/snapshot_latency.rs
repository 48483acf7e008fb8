//! `snapshot_latency/{medium}/{nodes}/{idle,loaded}`: from the driver's request to
//! a node to the `GlobalSnapshot` assembled at the driver's collector, on a ring of
//! `nodes` nodes (each linked both ways to its two neighbours, so a marker crosses up
//! to `nodes / 2` hops), idle or under `BACKGROUND` load (every node sends 16
//! transfers every millisecond). Nodes 2 to 32, and 64 on mem; each node a thread of
//! this process over its own endpoint (real FIFOs and loopback sockets on pipe and
//! tcp). The initiator goes round the ring.
//!
//! `snapshot_latency/{medium}/{nodes}/ceiling`: each ring's ceiling, the hops a
//! snapshot on it waits for one after another (`nodes / 2 + 3`) over the bare medium,
//! a thread woken at each (`snapshot_harness::HopChain`).
//!
//! Beside them, idle: `snapshot_latency/mem/complete/{16,64,128,256}`, complete
//! graphs on mem (every node linked both ways to every other: a snapshot sends a
//! marker on each of the `nodes × (nodes − 1)` channels), and
//! `snapshot_latency/tcp-tls/16`, the ring of `tcp/16` over mutual TLS 1.3
//! (`snapshot_benches::GraphCluster`).
//!
//! ```text
//! cargo bench -p snapshot-benches --bench snapshot_latency
//! ```

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main,
};
use snapshot_benches::{
    COMPLETE_SIZES, GraphCluster, GraphMedium, LATENCY_LOADS, TLS_RING, latency_sizes,
};
use snapshot_core::NodeId;
use snapshot_core::topology::Topology as Graph;
use snapshot_harness::{Cluster, HopChain, Medium, Topology, TransportKind, check, ring_hops};
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
                each_initiator(&mut group, id, nodes, |node| {
                    let (took, global) = cluster.snapshot(node).expect("the snapshot completes");
                    check(&global).expect("the snapshot is consistent");
                    took
                });
                cluster.stop().expect("the nodes stop cleanly");
            }
            // The ring's ceiling: the hops a snapshot waits for one after another,
            // over the bare medium.
            let id = BenchmarkId::new(format!("{}/{nodes}", medium.name()), "ceiling");
            let mut chain =
                HopChain::new(medium, ring_hops(nodes)).expect("the chain of hops starts");
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| chain.round().expect("the frame goes round"))
                        .sum()
                })
            });
        }
    }
    // Beside the rings: complete graphs on mem, idle, and the tcp ring over TLS.
    let graphs = COMPLETE_SIZES
        .iter()
        .map(|&nodes| {
            let graph = Graph::complete((1..=nodes).map(NodeId));
            (GraphMedium::Mem, format!("complete/{nodes}"), nodes, graph)
        })
        .chain(std::iter::once((
            GraphMedium::TcpTls,
            TLS_RING.to_string(),
            TLS_RING,
            Topology::Ring(TLS_RING).graph(),
        )));
    for (medium, name, nodes, graph) in graphs {
        let id = BenchmarkId::new(format!("{}/{name}", medium.name()), "idle");
        let mut cluster = GraphCluster::spawn(medium, graph).expect("the cluster starts");
        each_initiator(&mut group, id, nodes, |node| {
            let (took, global) = cluster.snapshot(node).expect("the snapshot completes");
            check(&global).expect("the snapshot is consistent");
            took
        });
        cluster.stop().expect("the nodes stop cleanly");
    }
    group.finish();
}

/// Benchmarks `snapshot` as row `id`, the initiator going round nodes 1 to `nodes`;
/// `snapshot` returns how long the snapshot took.
fn each_initiator(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    nodes: u32,
    mut snapshot: impl FnMut(NodeId) -> Duration,
) {
    let mut initiator = 0;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    initiator = initiator % nodes + 1;
                    snapshot(NodeId(initiator))
                })
                .sum()
        })
    });
}

criterion_group!(benches, latency);
criterion_main!(benches);
