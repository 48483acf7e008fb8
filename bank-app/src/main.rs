//! `master`: runs the distributed bank on a script (see the README and BANK.md).

use anyhow::Context;
use bank_app::choice;
use bank_app::master::{Master, Status, run_script};
use bank_app::system::{self, TransportKind};
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs the distributed bank on a script of commands, one per line, and prints what
/// the commands print. Rejected lines are reported on stderr as `line N: REASON`.
///
/// Exit status: 0 if every line was accepted, 1 if any was rejected, 2 for a usage
/// error or an unreadable script, 3 if the system failed, 130/143 after SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "master", version)]
struct Cli {
    /// The medium between the master, the observer and the nodes.
    #[arg(long, value_enum, default_value = "mem")]
    transport: TransportKind,

    /// Seeds every random choice, so that a run can be replayed exactly. Without it a
    /// fresh seed is drawn and logged (RUST_LOG=info shows it).
    #[arg(long)]
    seed: Option<u64>,

    /// How long to wait for a role's answer before declaring it failed, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    ack_timeout: f64,

    /// The script to run; `-` or nothing reads standard input.
    script: Option<PathBuf>,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(s),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(Status::Usage as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(status) => ExitCode::from(status as u8),
        Err(error) => {
            eprintln!("master: {error:#}");
            ExitCode::from(Status::Usage as u8)
        }
    }
}

fn open_script(script: Option<&PathBuf>) -> anyhow::Result<Box<dyn BufRead>> {
    match script {
        Some(path) if path.as_os_str() != "-" => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read the script {}", path.display()))?;
            let metadata = file
                .metadata()
                .with_context(|| format!("cannot read the script {}", path.display()))?;
            anyhow::ensure!(
                !metadata.is_dir(),
                "cannot read the script {}: it is a directory",
                path.display()
            );
            Ok(Box::new(BufReader::with_capacity(64 * 1024, file)))
        }
        _ => Ok(Box::new(std::io::stdin().lock())),
    }
}

fn run(cli: Cli) -> anyhow::Result<Status> {
    let mut input = open_script(cli.script.as_ref())?;
    let seed = cli.seed.unwrap_or_else(|| {
        let seed = choice::fresh_seed();
        tracing::info!(seed, "no --seed given; replay this run with --seed {seed}");
        seed
    });
    watch_signals()?;
    let system = system::build(cli.transport);
    let ack_timeout = Duration::from_secs_f64(cli.ack_timeout);
    let mut master = Master::new(system, std::io::stdout(), seed, ack_timeout);
    Ok(run_script(&mut master, &mut input))
}

/// Ends the run with 128 + the signal's number on SIGINT or SIGTERM.
fn watch_signals() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot watch signals")?;
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
