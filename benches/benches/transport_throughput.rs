//! `transport_throughput/{mem,pipe,tcp}`: transfers per second, one way from node 1
//! to node 2 through snapshot-core's `Node` driver, each node a thread of this process
//! over its own endpoint (real FIFOs and loopback sockets on pipe and tcp); beside
//! `transport_throughput/{mem,pipe,tcp}/ceiling`, the same frames over the bare
//! medium: a crossbeam channel, one frame per `send`; an OS pipe and a loopback TCP
//! socket, written through 64 KiB buffers.
//!
//! ```text
//! cargo bench -p snapshot-benches --bench transport_throughput
//! ```

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use snapshot_benches::{CEILING_FRAMES, throughput_transfers};
use snapshot_harness::{Medium, Topology, TransportKind, ceiling, run_transfers};
use std::time::Duration;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport_throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &medium in TransportKind::all() {
        let count = throughput_transfers(medium);
        group.throughput(Throughput::Elements(count));
        group.bench_function(medium.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let run = run_transfers(medium, Topology::OneWay, count, 0)
                            .expect("the run completes");
                        assert_eq!(run.transfers, count);
                        run.elapsed
                    })
                    .sum()
            })
        });
        let frames = CEILING_FRAMES;
        group.throughput(Throughput::Elements(frames));
        group.bench_function(BenchmarkId::new(medium.name(), "ceiling"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| ceiling(medium, frames).expect("the bare medium works"))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
