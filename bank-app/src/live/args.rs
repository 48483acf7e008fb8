//! `master load`'s command line, what it makes of it, and the command itself: the
//! run, its summary, and its exit status.

use crate::cause::chain;
use crate::choice;
use crate::live::layout::Layout;
use crate::live::run::{End, LoadConfig, LoadError, Opening, run};
use crate::saved;
use crate::systems::TransportKind;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

/// The nodes of a complete graph or a ring when `--nodes` is not given.
pub const DEFAULT_NODES: u32 = 8;

/// Every node's opening balance when `--balance` is not given.
pub const DEFAULT_BALANCE: u64 = 1000;

/// How long the nodes send when neither `--duration` nor `--transfers` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `master load`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// How many branches (ids 1 to N) [default: 8]. Not needed with a topology file
    /// or --restore, which name the nodes.
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,

    /// Every branch's opening balance [default: 1000]. Not with a topology file,
    /// which gives each its own.
    #[arg(long, value_name = "B", value_parser = parse_number::<u64>)]
    pub balance: Option<u64>,

    /// The medium: threads over crossbeam channels (mem), named pipes (pipe), or
    /// loopback TCP (tcp); the branches are threads of this process on every one.
    #[arg(long, value_enum, default_value = "mem", hide_possible_values = true)]
    pub transport: TransportKind,

    /// The channels: every ordered pair (complete), a one-way ring (ring: node i
    /// sends to node i+1 only), or a topology FILE of `node ID BALANCE` and
    /// `link FROM TO` lines [default: complete].
    #[arg(long, value_name = "complete|ring|FILE")]
    pub topology: Option<String>,

    /// How long the nodes send [default: 10s], e.g. 3s, 100ms, 1.5s, 2m.
    #[arg(long, value_name = "D", value_parser = parse_duration, conflicts_with = "transfers")]
    pub duration: Option<Duration>,

    /// Instead of a duration: how many transfers the nodes send, all together.
    #[arg(long, value_name = "N", value_parser = parse_number::<u64>)]
    pub transfers: Option<u64>,

    /// How often a snapshot is started, at a random node; `off` takes none (to measure
    /// what snapshots cost).
    #[arg(long, value_name = "I", value_parser = parse_interval, default_value = "100ms")]
    pub snapshot_every: Duration,

    /// The most snapshots in flight at once; a snapshot due beyond it is skipped (and
    /// counted).
    #[arg(long, value_name = "K", value_parser = parse_number::<usize>, default_value = "4")]
    pub max_concurrent: usize,

    /// How long a snapshot has, from its request to its last part, before it is
    /// aborted.
    #[arg(long, value_name = "T", value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,

    /// Seeds every random choice (amounts, receivers, initiators). Without it a seed
    /// is drawn, logged (RUST_LOG=info) and printed in the summary.
    #[arg(long, value_name = "S", value_parser = parse_number::<u64>)]
    pub seed: Option<u64>,

    /// Saves every snapshot assembled to DIR, as INITIATOR-SEQ.json and
    /// INITIATOR-SEQ.postcard.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,

    /// Prints the summary as one JSON document.
    #[arg(long)]
    pub json: bool,

    /// Continues from a saved snapshot (a .json or .postcard file of --save): every
    /// branch starts with its recorded balance, and what was in transit is put back on
    /// its channel first.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
}

/// `text` as plain decimal digits (no sign).
fn parse_number<N: std::str::FromStr>(text: &str) -> Result<N, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<N>() {
        Ok(n) if digits => Ok(n),
        _ => Err(format!("{text:?} is not a number (plain digits)")),
    }
}

/// Parses `--snapshot-every`: a duration, or `off` for none ([`Duration::MAX`]: a
/// tick that never comes).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    match text {
        "off" => Ok(Duration::MAX),
        _ => parse_duration(text),
    }
}

/// The longest duration an option takes: ten years.
pub const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `text` as a duration: a number and a unit, `ms`, `s`, `m` or `h` (`us` too):
/// `3s`, `100ms`, `1.5s`, `2m`; [`LONGEST`] at most.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: a number and a unit (ms, s, m, h), e.g. 100ms, 1.5s"
            ));
        }
    };
    let seconds = match number.parse::<f64>() {
        Ok(n) if !number.is_empty() && n.is_finite() => n * scale,
        _ => {
            return Err(format!(
                "{text:?} is not a duration: {number:?} is not a number"
            ));
        }
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= LONGEST => Ok(duration),
        _ => Err(format!(
            "{text:?} is too long a duration (ten years, {}h, at most)",
            LONGEST.as_secs() / 3600
        )),
    }
}

impl LoadArgs {
    /// The run these options ask for, with `seed` when they give none. Reads the
    /// topology file or the saved snapshot; what cannot run is a
    /// [`LoadError::Usage`].
    pub fn config(&self, seed: u64) -> Result<LoadConfig, LoadError> {
        let usage = |text: String| LoadError::Usage(text);
        let (opening, name) = match (&self.restore, self.topology.as_deref()) {
            (Some(path), None) => {
                if self.balance.is_some() {
                    return Err(usage(
                        "--balance cannot be given with --restore: the snapshot has the balances"
                            .to_string(),
                    ));
                }
                (restored(path)?, "restored".to_string())
            }
            (Some(_), Some(_)) => {
                return Err(usage(
                    "--topology cannot be given with --restore: the snapshot's channels are the topology"
                        .to_string(),
                ));
            }
            (None, topology) => {
                let topology = topology.unwrap_or("complete");
                let nodes = self.nodes.unwrap_or(DEFAULT_NODES);
                let balance = self.balance.unwrap_or(DEFAULT_BALANCE);
                let layout = match topology {
                    "complete" => Layout::complete(nodes, balance),
                    "ring" => Layout::ring(nodes, balance),
                    file => {
                        if self.balance.is_some() {
                            return Err(usage(format!(
                                "--balance cannot be given with the topology file {file}, which gives every node its balance"
                            )));
                        }
                        Layout::read(std::path::Path::new(file))
                    }
                }
                .map_err(|error| usage(error.to_string()))?;
                (Opening::Fresh(layout), topology.to_string())
            }
        };
        let count = opening.topology().nodes().count();
        if let Some(nodes) = self.nodes
            && usize::try_from(nodes).ok() != Some(count)
        {
            return Err(usage(format!(
                "--nodes {nodes} disagrees with the {count} nodes of {name}"
            )));
        }
        let mut config = LoadConfig::new(opening, name);
        config.transport = self.transport;
        config.end = match (self.duration, self.transfers) {
            (_, Some(n)) => End::Transfers(n),
            (Some(d), None) => End::After(d),
            (None, None) => End::After(DEFAULT_DURATION),
        };
        config.snapshot_every = self.snapshot_every;
        config.max_concurrent = self.max_concurrent;
        config.timeout = self.timeout;
        config.seed = self.seed.unwrap_or(seed);
        config.save = self.save.clone();
        Ok(config)
    }
}

/// The bank a saved snapshot at `path` recorded, once the snapshot holds.
fn restored(path: &std::path::Path) -> Result<Opening, LoadError> {
    let cannot = |reason: String| {
        LoadError::Usage(format!("cannot restore from {}: {reason}", path.display()))
    };
    let saved = saved::load(path).map_err(|error| cannot(chain(&error)))?;
    saved::check(&saved).map_err(|error| cannot(error.to_string()))?;
    let snapshot = saved.to_bank().map_err(|error| cannot(error.to_string()))?;
    Ok(Opening::Restored {
        snapshot: Box::new(snapshot),
        total: saved.total,
    })
}

/// `master load`: runs the load, prints its summary on standard output, and returns
/// its exit status: 0 when every snapshot assembled passed its check, 1 when one did
/// not, 2 for a usage error, 3 when the system failed, 128 + the signal after SIGINT
/// or SIGTERM (which end the run early; a second one ends the process at once).
pub fn main(args: LoadArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        let seed = choice::fresh_seed();
        tracing::info!(seed, "no --seed given; replay this run with --seed {seed}");
        seed
    });
    let mut config = match args.config(seed) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    config.progress = std::io::stderr().is_terminal();
    match watch_signals() {
        Ok(signal) => config.interrupt = Some(signal),
        Err(error) => return fail(&LoadError::System(format!("cannot watch signals: {error}"))),
    }
    let report = match run(config) {
        Ok(report) => report,
        Err(error) => return fail(&error),
    };
    for failure in &report.failures {
        eprintln!("master load: {failure}");
    }
    if report.failed > report.failures.len() as u64 {
        eprintln!(
            "master load: {} more snapshots failed their check",
            report.failed - report.failures.len() as u64
        );
    }
    if report.final_balance != report.total {
        eprintln!(
            "master load: the branches ended with {} but the bank holds {}",
            report.final_balance, report.total
        );
    }
    let summary = if args.json {
        report.json()
    } else {
        report.text()
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(summary.as_bytes()).and_then(|()| out.flush()) {
        // Nobody reading the summary any more is not the run's failure; a summary
        // that cannot be written (a full disk) is lost, and the run with it.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => fail(&LoadError::System(
            format!("cannot write the summary: {error}"),
        )),
        _ => ExitCode::from(report.status()),
    }
}

fn fail(error: &LoadError) -> ExitCode {
    eprintln!("master load: {error}");
    ExitCode::from(error.status())
}

/// SIGINT and SIGTERM set the returned number to theirs, once; a second one ends the
/// process at once.
fn watch_signals() -> std::io::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let signal = Arc::new(AtomicUsize::new(0));
    let once = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The shutdown first: it acts only once the flag is set, by the first signal.
        flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&once))?;
        flag::register(sig, Arc::clone(&once))?;
        flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
    }
    Ok(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("3s"), Ok(ms(3000)));
        assert_eq!(parse_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["3", "s", "-1s", "1.5.2s", "3 s", "3sec", "", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        // Ten years is the most, so that no deadline made from one overflows.
        assert_eq!(parse_duration("87600h"), Ok(LONGEST));
        for long in [
            "87600.001h",
            "10000000000000000000s",
            "1000000000000000000000000h",
        ] {
            let refused = parse_duration(long);
            assert!(
                refused.as_ref().is_err_and(|why| why.contains("too long")),
                "{long}: {refused:?}"
            );
        }
    }

    /// `master load ARGS`'s options.
    fn parse(args: &[&str]) -> LoadArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let all = std::iter::once("load").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(all).unwrap().load
    }

    #[test]
    fn the_defaults_are_a_complete_graph_of_8_with_1000_each_for_10s() {
        let config = parse(&[]).config(3).unwrap();
        assert_eq!(config.opening.topology().nodes().count(), 8);
        assert_eq!(config.opening.total(), 8000);
        assert_eq!(config.end, End::After(Duration::from_secs(10)));
        assert_eq!(config.snapshot_every, Duration::from_millis(100));
        assert_eq!(config.max_concurrent, 4);
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!((config.seed, config.transport), (3, TransportKind::Mem));
        assert_eq!(parse(&["--seed", "9"]).config(3).unwrap().seed, 9);
        let off = parse(&["--snapshot-every", "off"]).config(3).unwrap();
        assert_eq!(off.snapshot_every, Duration::MAX);
    }

    #[test]
    fn nodes_that_disagree_with_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.txt");
        std::fs::write(&file, "node 5 10\nnode 6 0\nlink 5 6\nlink 6 5\n").unwrap();
        let file = file.display().to_string();
        let config = parse(&["--topology", &file]).config(7).unwrap();
        assert_eq!(config.opening.total(), 10);
        assert!(
            parse(&["--topology", &file, "--nodes", "2"])
                .config(7)
                .is_ok()
        );
        for refused in [
            &["--topology", &file, "--nodes", "3"][..],
            &["--topology", &file, "--balance", "5"],
        ] {
            assert!(matches!(parse(refused).config(7), Err(LoadError::Usage(_))));
        }
    }
}
