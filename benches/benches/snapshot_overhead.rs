//! `snapshot_overhead/{medium}/{0,10,100}`: 8 nodes on a ring, each sending transfers
//! to its two neighbours as fast as it can, with no snapshots, 10 a second and 100 a
//! second (started by the driver at each node in turn, as many in flight as that
//! makes; every one assembled and checked). Each node is a thread of this process
//! over its own endpoint (real FIFOs and loopback sockets on pipe and tcp).
//! Criterion reports the throughput of each rate; the overhead in percent, from
//! alternating runs, is what `examples/overhead.rs` measures.
//!
//! ```text
//! cargo bench -p snapshot-benches --bench snapshot_overhead
//! cargo run --release -p snapshot-benches --example overhead
//! ```

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use snapshot_benches::{OVERHEAD_NODES, OVERHEAD_RATES, overhead_transfers};
use snapshot_harness::{Medium, Topology, TransportKind, run_transfers};
use std::time::Duration;

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_overhead");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(2500));
    for &medium in TransportKind::all() {
        let total = overhead_transfers(medium);
        group.throughput(Throughput::Elements(total));
        for rate in OVERHEAD_RATES {
            group.bench_function(BenchmarkId::new(medium.name(), rate), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let run =
                                run_transfers(medium, Topology::Ring(OVERHEAD_NODES), total, rate)
                                    .expect("the run completes");
                            assert_eq!(run.transfers, total);
                            run.elapsed
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
