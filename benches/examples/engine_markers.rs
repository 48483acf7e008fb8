//! The work of `engine/markers/{channels}` without criterion around it, for a
//! profiler that counts instructions (valgrind's callgrind, on a machine with no cycle
//! counters): a node with `channels` channels each way takes `snapshots` snapshots,
//! one after another, each started by a marker from a peer.
//!
//! ```text
//! cargo build --release -p snapshot-benches --example engine_markers
//! valgrind --tool=callgrind target/release/examples/engine_markers 64 20000
//! ```
//!
//! 64 channels and 20,000 snapshots unless told.

use snapshot_core::{NodeId, SnapshotEngine, SnapshotId};
use snapshot_harness::Account;
use std::hint::black_box;

fn number(arg: Option<String>, default: u64) -> Result<u64, String> {
    arg.map_or(Ok(default), |a| {
        a.parse().map_err(|_| format!("not a number: {a}"))
    })
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let channels = u32::try_from(number(args.next(), 64)?).map_err(|e| e.to_string())?;
    let snapshots = number(args.next(), 20_000)?;
    let account = Account::default();
    let mut engine = SnapshotEngine::<Account>::new(NodeId(0));
    for peer in 1..=channels {
        engine
            .add_incoming(NodeId(peer))
            .map_err(|e| e.to_string())?;
        engine
            .add_outgoing(NodeId(peer))
            .map_err(|e| e.to_string())?;
    }
    for seq in 0..snapshots {
        let id = SnapshotId {
            initiator: NodeId(1),
            seq,
        };
        for peer in 1..=channels {
            let actions = engine
                .on_marker(NodeId(peer), id, &account)
                .map_err(|e| e.to_string())?;
            black_box(actions);
        }
    }
    println!(
        "{} markers on {channels} channels",
        snapshots * u64::from(channels)
    );
    Ok(())
}
