//! The ceiling of the bank's script mode: a run laid out as `master` lays it out (the
//! observer and NODES nodes, threads on mem, processes on pipe and tcp), in which
//! every command is replaced by the bare round trip master -> node -> master
//! ([`Master::round_trip`]), to nodes 1, 2, ..., NODES in turn. Timed from the
//! system's start to its shutdown, start-up (`StartMaster` and a `CreateNode` per
//! node) included, as `bank_script/round-trip/T` times it.
//!
//! ```text
//! cargo build --release -p bank-app --bins --examples
//! target/release/examples/round_trip TRANSPORT [NODES [TRIPS [MASTER]]]
//! ```
//!
//! MASTER is the `master` executable the node processes run (by default the one
//! beside the examples' directory). Prints the round trips per second.

use bank_app::master::{Flow, Master};
use bank_app::script::Command;
use bank_app::system::System;
use bank_app::systems::processes::SpawnedSystem;
use bank_app::systems::threads::MemSystem;
use bank_app::systems::{Options, TransportKind};
use snapshot_core::NodeId;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = match args.first().map(String::as_str) {
        Some("mem") | None => TransportKind::Mem,
        Some("pipe") => TransportKind::Pipe,
        Some("tcp") => TransportKind::Tcp,
        Some(other) => anyhow::bail!("unknown transport {other:?} (mem, pipe or tcp)"),
    };
    let nodes: u32 = args.get(1).map_or(Ok(8), |n| n.parse())?;
    let trips: u64 = args.get(2).map_or(Ok(10_010), |n| n.parse())?;
    let program = match args.get(3) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("master"))
            .ok_or_else(|| anyhow::anyhow!("cannot find the master executable"))?,
    };
    let took = run(kind, nodes, trips, program)?;
    println!(
        "{} round trips in {:.1} ms: {:.0} round trips/s",
        trips,
        took.as_secs_f64() * 1e3,
        trips as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// One run: start-up, `trips` round trips, shutdown; the time it took.
fn run(kind: TransportKind, nodes: u32, trips: u64, program: PathBuf) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let system: Box<dyn System> = match kind {
        TransportKind::Mem => Box::new(MemSystem::with_master_core()),
        _ => Box::new(SpawnedSystem::new(kind, &Options::default())?.with_program(program)),
    };
    let mut master = Master::new(system, std::io::sink(), 1, Duration::from_secs(30));
    let result = (|| {
        let mut commands = vec![Command::StartMaster];
        commands.extend((1..=nodes).map(|id| Command::CreateNode {
            node: NodeId(id),
            amount: 1_000_000,
        }));
        for command in commands {
            anyhow::ensure!(
                master
                    .execute(command)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    == Flow::Continue,
                "the run stopped"
            );
        }
        for trip in 0..trips {
            let node = NodeId(1 + (trip % u64::from(nodes.max(1))) as u32);
            master
                .round_trip(node)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(())
    })();
    let stopped = master.shutdown().map_err(|e| anyhow::anyhow!("{e}"));
    let took = start.elapsed();
    result.and(stopped).map(|()| took)
}
