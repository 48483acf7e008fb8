//! `engine`: the bare `SnapshotEngine`, no transport and no threads.
//!
//! - `engine/count`: application messages taken in with no snapshot in flight (the
//!   engine only counts them); elements are messages.
//! - `engine/record/{1,8}`: messages taken in on a channel that 1 or 8 snapshots in
//!   flight are recording; elements are messages recorded (each into every snapshot).
//! - `engine/markers/{2,8,64}`: a node with that many channels each way takes one
//!   snapshot after another, started elsewhere: the first marker records the node
//!   and asks for a marker on every outgoing channel, the others close their
//!   channels, the last completes the local snapshot; elements are markers handled.
//!
//! ```text
//! cargo bench -p snapshot-benches --bench engine
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use snapshot_core::{NodeId, SnapshotEngine, SnapshotId};
use snapshot_harness::{Account, Transfer};
use std::hint::black_box;
use std::time::Duration;

/// Messages per iteration of the message rows.
const MESSAGES: u64 = 1_000;

/// A node with channels both ways to nodes 1 to `peers`.
fn engine_with(peers: u32) -> SnapshotEngine<Account> {
    let mut engine = SnapshotEngine::new(NodeId(0));
    for peer in 1..=peers {
        engine.add_incoming(NodeId(peer)).expect("a new channel");
        engine.add_outgoing(NodeId(peer)).expect("a new channel");
    }
    engine
}

fn engine(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let account = Account::default();
    let transfer = Transfer(1);

    let mut node = engine_with(2);
    group.throughput(Throughput::Elements(MESSAGES));
    group.bench_function("count", |b| {
        b.iter(|| {
            for _ in 0..MESSAGES {
                node.on_message(NodeId(2), black_box(&transfer), &account)
                    .expect("a message on a known channel");
            }
        })
    });

    for in_flight in [1u64, 8] {
        let mut node = engine_with(2);
        // Snapshots started by markers from node 1: the channel from node 2 stays
        // open, recorded by every one of them.
        for seq in 0..in_flight {
            let id = SnapshotId {
                initiator: NodeId(1),
                seq,
            };
            black_box(
                node.on_marker(NodeId(1), id, &account)
                    .expect("a first marker"),
            );
        }
        group.throughput(Throughput::Elements(MESSAGES));
        group.bench_function(BenchmarkId::new("record", in_flight), |b| {
            b.iter(|| {
                for _ in 0..MESSAGES {
                    node.on_message(NodeId(2), black_box(&transfer), &account)
                        .expect("a message on a known channel");
                }
            })
        });
    }

    for peers in [2u32, 8, 64] {
        let mut node = engine_with(peers);
        let mut seq = 0;
        group.throughput(Throughput::Elements(u64::from(peers)));
        group.bench_function(BenchmarkId::new("markers", peers), |b| {
            b.iter(|| {
                let id = SnapshotId {
                    initiator: NodeId(1),
                    seq,
                };
                seq += 1;
                for peer in 1..=peers {
                    let actions = node
                        .on_marker(NodeId(peer), id, &account)
                        .expect("a marker on a channel still open");
                    black_box(actions);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
