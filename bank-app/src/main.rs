//! `master`: runs the distributed bank on a script (see the README and BANK.md), and,
//! as `master node`, one node of a bank whose master runs elsewhere.

use anyhow::Context;
use bank_app::choice;
use bank_app::master::{Master, Status, run_script};
use bank_app::protocol::{Control, MASTER, Wire};
use bank_app::role::Role;
use bank_app::spawned::{self, EndpointConfig, KEY_VARIABLE};
use bank_app::system::{self, Options, TransportKind, run_reporting_failure};
use bank_app::{cleanup, cluster, output};
use clap::{Args, Parser, Subcommand};
use snapshot_core::{Frame, Incoming, NodeId, Transport, TransportError};
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs the distributed bank on a script of commands, one per line, and prints what
/// the commands print. Rejected lines are reported on stderr as `line N: REASON`.
///
/// Exit status: 0 if every line was accepted, 1 if any was rejected, 2 for a usage
/// error or an unreadable script, 3 if the system failed, 130/143 after SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "master", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one node of a bank whose master runs elsewhere (see `--cluster`).
    ///
    /// Start it on its host before the master runs the script; it waits for the master
    /// to attach it (`CreateNode ID AMOUNT`), and exits at `KillAll` or when the master
    /// goes away.
    Node(NodeArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The medium between the master, the observer and the nodes: threads of this
    /// process (mem), or a process per node and observer over named pipes (pipe) or TCP
    /// (tcp).
    #[arg(long, value_enum, default_value = "mem")]
    transport: TransportKind,

    /// Seeds every random choice, so that a run can be replayed exactly. Without it a
    /// fresh seed is drawn and logged (RUST_LOG=info shows it).
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,

    /// How long to wait for a role's answer before declaring it failed, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    ack_timeout: f64,

    /// With --transport tcp: the nodes were started by hand (`master node`) on the
    /// hosts this file names, one `node ID HOST:PORT` a line (and an optional
    /// `cluster NAME`).
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,

    /// With --transport tcp: the key every peer proves it holds (HMAC-SHA256
    /// challenge-response; traffic is authenticated, not encrypted). A run that starts
    /// its own nodes draws a random one.
    #[arg(long, env = KEY_VARIABLE, hide_env_values = true)]
    key: Option<String>,

    /// With --transport tcp: where the master listens (default 127.0.0.1 with a port
    /// chosen by the OS; a cluster needs an address its nodes can reach).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,

    /// The script to run; `-` or nothing reads standard input.
    script: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// This node's id, as the master's cluster file and CreateNode name it.
    #[arg(long, required_unless_present = "observer")]
    id: Option<u32>,

    /// Where this node listens, e.g. 10.0.0.2:7000 (the address in the cluster file).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,

    /// The cluster's name, as in the cluster file.
    #[arg(long, default_value = cluster::DEFAULT_CLUSTER)]
    cluster: String,

    /// The key every peer proves it holds (the master's --key).
    #[arg(long, env = KEY_VARIABLE, hide_env_values = true)]
    key: Option<String>,

    /// The medium (only tcp reaches other hosts).
    #[arg(long, value_enum, default_value = "tcp")]
    transport: TransportKind,

    // What a master passes to the processes it starts itself.
    #[arg(long, hide = true)]
    run_id: Option<String>,
    #[arg(long, hide = true)]
    master: Option<String>,
    #[arg(long, hide = true)]
    dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    observer: bool,
}

fn parse_seed(text: &str) -> Result<u64, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(seed) if digits => Ok(seed),
        _ => Err(format!("{text:?} is not a number from 0 to {}", u64::MAX)),
    }
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
    match cli.command {
        Some(Command::Node(args)) => match run_node(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("master node: {error:#}");
                ExitCode::from(Status::Usage as u8)
            }
        },
        None => match run(cli.run) {
            Ok(status) => ExitCode::from(status as u8),
            Err(error) => {
                let _ = output::flush();
                eprintln!("master: {error:#}");
                cleanup::clean_up();
                ExitCode::from(Status::Usage as u8)
            }
        },
    }
}

/// Opens the script: the file at `script`, or standard input. Says whether it is a
/// regular file, which is read without waiting for anyone.
fn open_script(script: Option<&PathBuf>) -> anyhow::Result<(Box<dyn BufRead>, bool)> {
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
            Ok((
                Box::new(BufReader::with_capacity(64 * 1024, file)),
                metadata.is_file(),
            ))
        }
        _ => Ok((Box::new(std::io::stdin().lock()), false)),
    }
}

fn run(args: RunArgs) -> anyhow::Result<Status> {
    let (mut input, regular) = open_script(args.script.as_ref())?;
    let seed = args.seed.unwrap_or_else(|| {
        let seed = choice::fresh_seed();
        tracing::info!(seed, "no --seed given; replay this run with --seed {seed}");
        seed
    });
    watch_signals()?;
    let options = Options {
        cluster: args.cluster,
        key: args.key,
        listen: args.listen,
    };
    let system = system::build(args.transport, &options)?;
    let ack_timeout = Duration::from_secs_f64(args.ack_timeout);
    // Nobody waits on the other side of a regular file for each answer.
    let mut master = Master::new(system, output::Stdout::new(regular), seed, ack_timeout);
    Ok(run_script(&mut master, &mut input))
}

/// On SIGINT or SIGTERM: removes what the run created, then exits with 128 + the
/// signal's number.
fn watch_signals() -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot watch signals")?;
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                cleanup::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Runs one node (or, for a master that started it, the observer) in this process.
/// Says whether the role ended without failing.
fn run_node(args: NodeArgs) -> anyhow::Result<bool> {
    let role = match (args.observer, args.id) {
        (true, _) => Role::Observer,
        (false, Some(id)) => Role::Node(NodeId(id)),
        (false, None) => anyhow::bail!("--id is required"),
    };
    anyhow::ensure!(
        args.transport != TransportKind::Mem,
        "a node process needs --transport pipe or tcp"
    );
    let key = match (&args.key, args.transport) {
        (Some(key), _) => key.clone(),
        (None, TransportKind::Tcp) => {
            anyhow::bail!("the shared key is missing: --key or {KEY_VARIABLE}")
        }
        (None, _) => String::new(),
    };
    let config = EndpointConfig {
        dir: args.dir.clone(),
        cluster: args.cluster,
        key: key.into_bytes(),
        listen: args
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
    };
    let mut transport = spawned::open(args.transport, role.endpoint(), &config)?;
    if let Some(run_id) = &args.run_id {
        tracing::debug!(%run_id, ?role, "started by a master");
    }
    let attached = match &args.master {
        Some(master) => {
            transport.connect(MASTER, master)?;
            true
        }
        None => {
            let address = transport.address();
            tracing::info!(%address, ?role, "waiting for the master");
            wait_for_attach(transport.as_mut())?
        }
    };
    let ok = !attached || run_reporting_failure(role, transport.as_mut());
    drop(transport);
    if let Some(dir) = &args.dir {
        // The last process of the run to leave removes its directory; the others
        // find it not empty yet.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(ok)
}

/// Waits for a master to attach this node; says whether one did.
fn wait_for_attach(transport: &mut dyn Transport<Wire>) -> anyhow::Result<bool> {
    loop {
        match transport.recv() {
            Ok(Incoming::Frame(MASTER, Frame::Control(Control::Attach { master }))) => {
                transport.connect(MASTER, &master)?;
                return Ok(true);
            }
            Ok(Incoming::Frame(from, frame)) => {
                tracing::warn!(%from, ?frame, "ignored before attach")
            }
            Ok(Incoming::Departed(peer)) => tracing::info!(%peer, "left"),
            Err(TransportError::Closed) => return Ok(false),
            Err(error) => return Err(error.into()),
        }
    }
}
