//! `bank_script/{mem,pipe,tcp}`: commands per second of the bank's `master` on the
//! seeded 8-node script of 10,010 commands (`Workload { nodes: 8, commands: 10_000,
//! seed: 1 }`, what `examples/workload.rs 8 10000 1` prints), the whole process
//! timed, from its start to its exit: `master --transport T --seed 1 SCRIPT`, output
//! to a file, as `scripts/measure-bank.sh` runs it. On pipe and tcp the master starts
//! a process per node and one for the observer.
//!
//! `bank_script/round-trip/{mem,pipe,tcp}`: each row's ceiling, in round trips per
//! second: the same layout (the observer and 8 nodes, threads on mem, processes
//! running this `master` on pipe and tcp), started and stopped the same way, with as
//! many bare round trips master -> node -> master (`Master::round_trip`, to the nodes
//! in turn) as the script has commands. Each run is a process of its own (this bench
//! started again with `BANK_SCRIPT_ROUND_TRIPS` set), timed from its start to its
//! exit, as a `master` run is.
//!
//! ```text
//! cargo bench -p bank-app --bench bank_script
//! ```

use bank_app::master::{Flow, Master};
use bank_app::script::Command as BankCommand;
use bank_app::system::System;
use bank_app::systems::processes::SpawnedSystem;
use bank_app::systems::threads::MemSystem;
use bank_app::systems::{Options, TransportKind};
use bank_app::workload::Workload;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use snapshot_core::NodeId;
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One run of `master` on `script`; the time from its start to its exit.
fn run(transport: &str, script: &Path, dir: &Path) -> Duration {
    let stdout = File::create(dir.join("out")).expect("an output file");
    let stderr = File::create(dir.join("err")).expect("an error file");
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_master"))
        .args(["--transport", transport, "--seed", "1"])
        .arg(script)
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .expect("master starts");
    let took = start.elapsed();
    assert!(
        status.success(),
        "master --transport {transport} failed ({status}): {}",
        std::fs::read_to_string(dir.join("err")).unwrap_or_default()
    );
    took
}

/// The variable that makes this bench, started again, one run of [`round_trips`]:
/// `TRANSPORT NODES COMMANDS`.
const ROUND_TRIPS: &str = "BANK_SCRIPT_ROUND_TRIPS";

/// One run of [`round_trips`] in a process of its own, as `master` runs: the time
/// from its start to its exit.
fn round_trip_run(transport: &str, commands: u64, dir: &Path) -> Duration {
    let stderr = File::create(dir.join("round-trip-err")).expect("an error file");
    let start = Instant::now();
    let status = Command::new(std::env::current_exe().expect("the bench's executable"))
        .env(ROUND_TRIPS, format!("{transport} 8 {commands}"))
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .expect("the round trips start");
    let took = start.elapsed();
    assert!(
        status.success(),
        "round trips on {transport} failed ({status}): {}",
        std::fs::read_to_string(dir.join("round-trip-err")).unwrap_or_default()
    );
    took
}

/// The ceiling of a run of `commands` commands on `kind`: the observer and `nodes`
/// nodes started as `master` starts them, `commands` bare round trips to the nodes in
/// turn, and the shutdown.
fn round_trips(kind: TransportKind, nodes: u32, commands: u64) {
    let system: Box<dyn System> = match kind {
        TransportKind::Mem => Box::new(MemSystem::with_master_core()),
        _ => Box::new(
            SpawnedSystem::new(kind, &Options::default())
                .expect("a system of processes")
                .with_program(env!("CARGO_BIN_EXE_master").into()),
        ),
    };
    let mut master = Master::new(system, std::io::sink(), 1, Duration::from_secs(30));
    let start_up = std::iter::once(BankCommand::StartMaster).chain((1..=nodes).map(|id| {
        BankCommand::CreateNode {
            node: NodeId(id),
            amount: 1_000_000,
        }
    }));
    for command in start_up {
        let flow = master.execute(command).expect("the bank starts");
        assert_eq!(flow, Flow::Continue);
    }
    for trip in 0..commands {
        let node = NodeId(1 + (trip % u64::from(nodes)) as u32);
        master.round_trip(node).expect("a round trip");
    }
    master.shutdown().expect("the bank stops");
}

fn bank_script(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let script = dir.path().join("workload.script");
    let text = Workload {
        nodes: 8,
        commands: 10_000,
        seed: 1,
    }
    .script();
    std::fs::write(&script, &text).expect("the script is written");
    // Every line is a command, as scripts/measure-bank.sh counts them.
    let commands = text.lines().filter(|line| !line.is_empty()).count() as u64;

    let mut group = c.benchmark_group("bank_script");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(commands));
    for transport in ["mem", "pipe", "tcp"] {
        group.bench_function(transport, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(transport, &script, dir.path()))
                    .sum()
            })
        });
    }
    for transport in ["mem", "pipe", "tcp"] {
        group.bench_function(format!("round-trip/{transport}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| round_trip_run(transport, commands, dir.path()))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bank_script);

fn main() {
    // Started again by `round_trip_run`: one run of round trips, and nothing else.
    if let Ok(spec) = std::env::var(ROUND_TRIPS) {
        let words: Vec<&str> = spec.split_whitespace().collect();
        let kind = match words.first().copied() {
            Some("pipe") => TransportKind::Pipe,
            Some("tcp") => TransportKind::Tcp,
            _ => TransportKind::Mem,
        };
        let number = |at: usize| words.get(at).and_then(|w| w.parse::<u64>().ok());
        let nodes = number(1).and_then(|n| u32::try_from(n).ok()).unwrap_or(8);
        round_trips(kind, nodes, number(2).unwrap_or(10_010));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
