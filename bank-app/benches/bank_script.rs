//! `bank_script/{mem,pipe,tcp}`: commands per second of the bank's `master` on the
//! seeded 8-node script of 10,010 commands (`Workload { nodes: 8, commands: 10_000,
//! seed: 1 }`, what `examples/workload.rs 8 10000 1` prints), the whole process
//! timed, from its start to its exit: `master --transport T --seed 1 SCRIPT`, output
//! to a file, as `scripts/measure-bank.sh` runs it. On pipe and tcp the master starts
//! a process per node and one for the observer.
//!
//! ```text
//! cargo bench -p bank-app --bench bank_script
//! ```

use bank_app::workload::Workload;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
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
    group.finish();
}

criterion_group!(benches, bank_script);
criterion_main!(benches);
