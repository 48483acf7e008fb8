//! `bank_script/{mem,pipe,tcp,tcp-tls}`: commands per second of the bank's `master` on
//! the seeded 8-node script of 10,010 commands (`Workload { nodes: 8, commands:
//! 10_000, seed: 1 }`, what `examples/workload.rs 8 10000 1` prints), the whole
//! process timed, from its start to its exit: `master --transport T --seed 1 SCRIPT`
//! (`tcp-tls`: `--transport tcp --tls`), output to a file, as
//! `scripts/measure-bank.sh` runs it. On pipe and tcp the master starts a process per
//! node and one for the observer.
//!
//! `bank_script/{mem,pipe,tcp,tcp-tls}/ceiling`: each row's ceiling, in commands per second:
//! the same layout (the observer and 8 nodes, threads on mem, processes running this
//! `master` on pipe and tcp), started and stopped the same way, in which each command
//! after the start-up is the bare round trip master -> node -> master to the node it
//! goes to, in the script's order ([`RoundTrips`]). Each run is a process of its own
//! (this bench started again with `BANK_SCRIPT_ROUND_TRIPS` set), timed from its start
//! to its exit, as a `master` run is.
//!
//! ```text
//! cargo bench -p bank-app --bench bank_script
//! ```

use bank_app::ceiling::RoundTrips;
use bank_app::master::Master;
use bank_app::system::System;
use bank_app::systems::processes::SpawnedSystem;
use bank_app::systems::threads::MemSystem;
use bank_app::systems::{Options, TransportKind};
use bank_app::workload::Workload;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The rows: each transport's name, and the `master` flags that choose it.
const TRANSPORTS: [(&str, &[&str]); 4] = [
    ("mem", &["--transport", "mem"]),
    ("pipe", &["--transport", "pipe"]),
    ("tcp", &["--transport", "tcp"]),
    ("tcp-tls", &["--transport", "tcp", "--tls"]),
];

/// One run of `master` on `script`; the time from its start to its exit.
fn run((transport, flags): (&str, &[&str]), script: &Path, dir: &Path) -> Duration {
    let stdout = File::create(dir.join("out")).expect("an output file");
    let stderr = File::create(dir.join("err")).expect("an error file");
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_master"))
        .args(flags)
        .args(["--seed", "1"])
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
/// `TRANSPORT SCRIPT`.
const ROUND_TRIPS: &str = "BANK_SCRIPT_ROUND_TRIPS";

fn round_trip_run(transport: &str, script: &Path, dir: &Path) -> Duration {
    let stderr = File::create(dir.join("round-trip-err")).expect("an error file");
    let start = Instant::now();
    let status = Command::new(std::env::current_exe().expect("the bench's executable"))
        .env(ROUND_TRIPS, format!("{transport} {}", script.display()))
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

/// The round trips of `script` ([`RoundTrips`]), on roles started as `master` starts
/// them (over TLS with `tls`).
fn round_trips(kind: TransportKind, tls: bool, script: &Path) {
    let text = std::fs::read_to_string(script).expect("the script");
    let plan = RoundTrips::of(&text);
    let options = Options {
        tls,
        ..Options::default()
    };
    let system: Box<dyn System> = match kind {
        TransportKind::Mem => Box::new(MemSystem::with_master_core()),
        _ => Box::new(
            SpawnedSystem::new(kind, &options)
                .expect("a system of processes")
                .with_program(env!("CARGO_BIN_EXE_master").into()),
        ),
    };
    let mut master = Master::new(system, std::io::sink(), 1, Duration::from_secs(30));
    plan.run(&mut master).expect("the round trips");
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
    for row in TRANSPORTS {
        group.bench_function(row.0, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(row, &script, dir.path())).sum())
        });
    }
    for (transport, _) in TRANSPORTS {
        group.bench_function(format!("{transport}/ceiling"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| round_trip_run(transport, &script, dir.path()))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bank_script);

fn main() {
    if let Ok(spec) = std::env::var(ROUND_TRIPS) {
        let (transport, script) = spec.split_once(' ').expect("TRANSPORT SCRIPT");
        let (kind, tls) = match transport {
            "pipe" => (TransportKind::Pipe, false),
            "tcp" => (TransportKind::Tcp, false),
            "tcp-tls" => (TransportKind::Tcp, true),
            _ => (TransportKind::Mem, false),
        };
        round_trips(kind, tls, Path::new(script));
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
