//! Runs one scenario of the benchmarks once, outside criterion, so that a profiler
//! sees nothing else (valgrind's callgrind where the machine has no cycle counters):
//!
//! ```text
//! cargo build --release -p snapshot-benches --example profile
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/profile throughput mem 1000000
//! callgrind_annotate --inclusive=yes cg.out | head -40
//! ```
//!
//! Scenarios: `throughput MEDIUM TRANSFERS` (one way, node 1 to node 2),
//! `ceiling MEDIUM FRAMES`, `overhead MEDIUM TRANSFERS SNAPSHOTS_PER_SECOND` (8 nodes
//! on a ring), `latency MEDIUM NODES SNAPSHOTS [loaded]` (a ring, idle or
//! under the `BACKGROUND` load) and `engine MESSAGES`
//! (the bare engine: messages counted, messages recorded, markers handled).

use snapshot_benches::BACKGROUND;
use snapshot_core::{NodeId, SnapshotEngine, SnapshotId};
use snapshot_harness::{
    Account, Cluster, Medium, Topology, Transfer, TransportKind, Work, ceiling, check,
    run_transfers,
};
use std::hint::black_box;
use std::time::Instant;

fn medium(name: &str) -> Result<TransportKind, String> {
    TransportKind::all()
        .iter()
        .copied()
        .find(|m| m.name() == name)
        .ok_or_else(|| format!("no medium {name:?}: mem, pipe or tcp"))
}

fn number(arg: Option<&String>, default: u64) -> Result<u64, String> {
    arg.map_or(Ok(default), |a| {
        a.parse().map_err(|_| format!("not a number: {a}"))
    })
}

/// The bare engine: `messages` messages counted with nothing in flight, as many
/// recorded into an open snapshot, and markers on 8 channels, `messages / 8`
/// snapshots' worth.
fn engine(messages: u64) -> Result<(), String> {
    let account = Account::default();
    let mut engine = SnapshotEngine::<Account>::new(NodeId(0));
    for peer in 1..=8 {
        engine
            .add_incoming(NodeId(peer))
            .map_err(|e| e.to_string())?;
        engine
            .add_outgoing(NodeId(peer))
            .map_err(|e| e.to_string())?;
    }
    let transfer = Transfer(1);
    for _ in 0..messages {
        engine
            .on_message(NodeId(1), black_box(&transfer), &account)
            .map_err(|e| e.to_string())?;
    }
    let id = SnapshotId {
        initiator: NodeId(1),
        seq: 0,
    };
    black_box(
        engine
            .on_marker(NodeId(1), id, &account)
            .map_err(|e| e.to_string())?,
    );
    for _ in 0..messages {
        engine
            .on_message(NodeId(2), black_box(&transfer), &account)
            .map_err(|e| e.to_string())?;
    }
    for peer in 2..=8 {
        black_box(
            engine
                .on_marker(NodeId(peer), id, &account)
                .map_err(|e| e.to_string())?,
        );
    }
    for seq in 1..messages / 8 {
        let id = SnapshotId {
            initiator: NodeId(1),
            seq,
        };
        for peer in 1..=8 {
            black_box(
                engine
                    .on_marker(NodeId(peer), id, &account)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    match args.first().map(String::as_str) {
        Some("throughput") => {
            let run = run_transfers(
                medium(args.get(1).map_or("mem", String::as_str))?,
                Topology::OneWay,
                number(args.get(2), 1_000_000)?,
                0,
            )?;
            println!("{:.2} M transfers/s", run.rate() / 1e6);
        }
        Some("ceiling") => {
            let frames = number(args.get(2), 10_000_000)?;
            let took = ceiling(medium(args.get(1).map_or("mem", String::as_str))?, frames)?;
            println!("{:.2} M frames/s", frames as f64 / took.as_secs_f64() / 1e6);
        }
        Some("overhead") => {
            let run = run_transfers(
                medium(args.get(1).map_or("mem", String::as_str))?,
                Topology::Ring(8),
                number(args.get(2), 2_000_000)?,
                u32::try_from(number(args.get(3), 100)?)?,
            )?;
            println!(
                "{:.2} M transfers/s, {} snapshots",
                run.rate() / 1e6,
                run.snapshots
            );
        }
        Some("latency") => {
            let medium = medium(args.get(1).map_or("mem", String::as_str))?;
            let nodes = u32::try_from(number(args.get(2), 16)?)?;
            let work = match args.get(4).map(String::as_str) {
                Some("loaded") => BACKGROUND,
                _ => Work::Idle,
            };
            let mut cluster = Cluster::spawn(medium, Topology::Ring(nodes), |_| work)?;
            cluster.start()?;
            let mut times = Vec::new();
            for k in 0..number(args.get(3), 100)? {
                let (took, global) = cluster.snapshot(NodeId(k as u32 % nodes + 1))?;
                check(&global)?;
                times.push(took);
            }
            cluster.stop()?;
            times.sort();
            println!("median {:?}", times[times.len() / 2]);
        }
        Some("engine") => engine(number(args.get(1), 10_000_000)?)?,
        _ => {
            return Err("usage: profile throughput|ceiling|overhead|latency|engine ARGS...".into());
        }
    }
    eprintln!("{:?}", start.elapsed());
    Ok(())
}
