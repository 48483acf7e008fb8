//! The ceiling of the bank's script mode for one script: a run laid out as `master`
//! lays it out (the observer and the script's nodes, threads on mem, processes on
//! pipe and tcp), in which every command after the start-up is replaced by the bare
//! round trip master -> node -> master to the node it goes to, in the script's order
//! ([`RoundTrips`]). Timed from the system's start to its shutdown, start-up included,
//! as `bank_script/T/ceiling` times it.
//!
//! ```text
//! cargo build --release -p bank-app --bins --examples
//! target/release/examples/round_trip TRANSPORT SCRIPT [MASTER]
//! ```
//!
//! MASTER is the `master` executable the node processes run (by default the one
//! beside the examples' directory). Prints the round trips per second.

use bank_app::ceiling::RoundTrips;
use bank_app::master::Master;
use bank_app::system::System;
use bank_app::systems::processes::SpawnedSystem;
use bank_app::systems::threads::MemSystem;
use bank_app::systems::{Options, TransportKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = match args.first().map(String::as_str) {
        Some("mem") => TransportKind::Mem,
        Some("pipe") => TransportKind::Pipe,
        Some("tcp") => TransportKind::Tcp,
        Some(other) => anyhow::bail!("unknown transport {other:?} (mem, pipe or tcp)"),
        None => anyhow::bail!("usage: round_trip TRANSPORT SCRIPT [MASTER]"),
    };
    let Some(script) = args.get(1) else {
        anyhow::bail!("usage: round_trip TRANSPORT SCRIPT [MASTER]");
    };
    let plan = RoundTrips::of(&std::fs::read_to_string(script)?);
    let program = match args.get(2) {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("master"))
            .ok_or_else(|| anyhow::anyhow!("cannot find the master executable"))?,
    };
    let took = run(kind, &plan, program)?;
    println!(
        "{} round trips in {:.1} ms: {:.0} round trips/s",
        plan.len(),
        took.as_secs_f64() * 1e3,
        plan.len() as f64 / took.as_secs_f64()
    );
    Ok(())
}

/// One run: start-up, the round trips, shutdown; the time it took.
fn run(kind: TransportKind, plan: &RoundTrips, program: PathBuf) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let system: Box<dyn System> = match kind {
        TransportKind::Mem => Box::new(MemSystem::with_master_core()),
        _ => Box::new(SpawnedSystem::new(kind, &Options::default())?.with_program(program)),
    };
    let mut master = Master::new(system, std::io::sink(), 1, Duration::from_secs(30));
    let result = plan.run(&mut master);
    let stopped = master.shutdown().map_err(|e| anyhow::anyhow!("{e}"));
    let took = start.elapsed();
    result.and(stopped).map(|()| took)
}
