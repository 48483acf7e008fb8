//! `master`: runs the distributed bank on a script (see `bank-app/README.md`), and,
//! as `master node`, one node of a bank whose master runs elsewhere.
//!
//! The only place that ends the process: on a signal, and in a role's process when
//! the master that started it has gone.

#![forbid(unsafe_code)]

use anyhow::Context;
use bank_app::cause::describe;
use bank_app::choice;
use bank_app::input::Lines;
use bank_app::master::{Master, Refusal, Status, run_lines};
use bank_app::output;
use bank_app::role::Role;
use bank_app::saved::SavedSnapshot;
use bank_app::system::Teardown;
use bank_app::systems::certs::{self, CertsError};
use bank_app::systems::child::{self, NodeProcess};
use bank_app::systems::cluster;
use bank_app::systems::endpoint::{EndpointConfig, KEY_VARIABLE, TLS_VARIABLES};
use bank_app::systems::{self, Auth, BuildError, Options, TlsFiles, TransportKind};
use clap::{Args, Parser, Subcommand};
use signal_hook::iterator::Signals;
use snapshot_core::NodeId;
use std::io::{Read, Write};
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
    /// Runs the bank free on threads, moving money as fast as it can while snapshots
    /// are taken and checked, and prints a summary (see `bank-app/README.md`).
    ///
    /// Exit status: 0 if every snapshot assembled passed its check, 1 if one did not,
    /// 2 for a usage error or a refused topology, 3 if the system failed.
    Load(bank_app::live::LoadArgs),
    /// Prints a saved snapshot (a `.json` or `.postcard` file) once it has checked it.
    ///
    /// Exit status: 0 if the snapshot holds (a consistent cut that conserves money),
    /// 1 if it does not (the reason on stderr, nothing printed), 2 if the file cannot
    /// be read or decoded.
    Inspect(InspectArgs),
    /// Starts the bank from a saved snapshot (each node's balance, and what was in
    /// transit back on its channel) and runs a script on it, as if `StartMaster` and
    /// the `CreateNode`s had run. The snapshot's topology must be complete.
    ///
    /// Exit status: as for a script; 2 also when the snapshot is refused.
    Restore(RestoreArgs),
    /// Makes a cluster's certificate authority and a certificate and key for its
    /// master and each node, and writes them as PEM files into a directory (see
    /// `bank-app/README.md`, "Certificates").
    ///
    /// Exit status: 0 when every file is written, 2 for a usage error or a file that
    /// exists already (nothing is written then), 3 if a file cannot be written.
    Certs(CertsArgs),
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// The cluster's name, as its cluster file names it (a DNS name: letters, digits,
    /// hyphens, dots).
    #[arg(long)]
    cluster: String,

    /// The ids of the nodes to make certificates for: 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<u32>,

    /// The directory to write into (made if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// The PEM files of an endpoint's TLS identity.
#[derive(Debug, Args)]
struct TlsArgs {
    /// With --auth tls: the cluster's authority's certificate (`ca.pem` of `master
    /// certs`).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// With --auth tls: this endpoint's certificate (`master.pem` or `node-ID.pem`).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,

    /// With --auth tls: this endpoint's private key (`master-key.pem` or
    /// `node-ID-key.pem`).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
}

impl TlsArgs {
    fn files(self) -> TlsFiles {
        TlsFiles {
            ca: self.ca,
            cert: self.cert,
            key: self.key_file,
        }
    }
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// The saved snapshot (`.json` or `.postcard`).
    file: PathBuf,

    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The saved snapshot.
    file: PathBuf,

    /// How to print it: the PrintSnapshot block (text), one line of JSON (json), or a
    /// Graphviz digraph (dot).
    #[arg(long, value_enum, default_value = "text")]
    format: bank_app::saved::Format,
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
    #[arg(long, default_value = "30", value_parser = parse_seconds)]
    ack_timeout: Duration,

    /// With --transport tcp: the nodes were started by hand (`master node`) on the
    /// hosts this file names, one `node ID HOST:PORT` a line (and an optional
    /// `cluster NAME`).
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,

    /// With --transport tcp: the key every peer proves it holds (HMAC-SHA256
    /// challenge-response; traffic is authenticated, not encrypted). A run that starts
    /// its own nodes draws a random one; a cluster uses it with --auth key only.
    #[arg(long, env = KEY_VARIABLE, hide_env_values = true)]
    key: Option<String>,

    /// With --cluster: how the endpoints prove who they are: TLS 1.3 with the
    /// certificates --ca, --cert and --key-file name (tls, the default), or the shared
    /// key's HMAC hello, unencrypted (key).
    #[arg(long, value_enum)]
    auth: Option<Auth>,

    /// With --transport tcp and no --cluster: TLS 1.3 between the processes of the
    /// run, with certificates the master makes for the run.
    #[arg(long)]
    tls: bool,

    #[command(flatten)]
    identity: TlsArgs,

    /// With --transport tcp: where the master listens (default 127.0.0.1 with a port
    /// chosen by the OS; a cluster needs an address its nodes can reach).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,

    /// How PrintSnapshot prints a snapshot: the specification's block (text), one
    /// line of JSON (json), or a Graphviz digraph (dot).
    #[arg(long, value_enum, default_value = "text")]
    format: bank_app::saved::Format,

    /// Saves every snapshot CollectState collects into DIR (made if missing), as
    /// `<initiator>-<seq>.json` and `.postcard`.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,

    /// With --transport pipe or tcp: the program the observer and the nodes run,
    /// given the arguments the master would give itself (`node ...`). A wrapper that
    /// ends with `exec master "$@"` can run them under strace, taskset or a debugger.
    #[arg(long, value_name = "PROGRAM")]
    role_program: Option<PathBuf>,

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

    /// With --auth key: the key every peer proves it holds (the master's --key).
    #[arg(long, env = KEY_VARIABLE, hide_env_values = true)]
    key: Option<String>,

    /// How the endpoints prove who they are: TLS 1.3 with the certificates --ca,
    /// --cert and --key-file name (tls, the default), or the shared key's HMAC hello,
    /// unencrypted (key).
    #[arg(long, value_enum)]
    auth: Option<Auth>,

    #[command(flatten)]
    identity: TlsArgs,

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

/// A positive number of seconds under a billion, at least a nanosecond.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s < 1e9)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                status(Status::Usage)
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
        Some(Command::Node(args)) => node(args),
        Some(Command::Load(args)) => bank_app::live::main(args),
        Some(Command::Restore(args)) => restore(args),
        Some(Command::Certs(args)) => make_certs(args),
        Some(Command::Inspect(args)) => {
            let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
            ExitCode::from(
                bank_app::saved::inspect(&args.file, args.format, &mut out, &mut err) as u8,
            )
        }
        None => run(cli.run),
    }
}

fn status(status: Status) -> ExitCode {
    ExitCode::from(status as u8)
}

/// Opens the script: the file at `script`, or standard input. Says whether it is a
/// regular file, which is read without waiting for anyone.
fn open_script(script: Option<&PathBuf>) -> anyhow::Result<(Box<dyn Read + Send>, bool)> {
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
            Ok((Box::new(file), metadata.is_file()))
        }
        _ => Ok((Box::new(std::io::stdin()), false)),
    }
}

/// Runs the script on a bank restored from a saved snapshot.
fn restore(args: RestoreArgs) -> ExitCode {
    match bank_app::saved::load(&args.file) {
        Ok(snapshot) => run_from(args.run, Some((args.file, snapshot))),
        Err(error) => {
            eprintln!("master restore: {}", describe(&anyhow::Error::new(error)));
            status(Status::Usage)
        }
    }
}

/// Runs the script.
fn run(args: RunArgs) -> ExitCode {
    run_from(args, None)
}

/// Runs the script, on a bank restored from `restored` if given.
fn run_from(args: RunArgs, restored: Option<(PathBuf, SavedSnapshot)>) -> ExitCode {
    let usage = |error: anyhow::Error| {
        eprintln!("master: {}", describe(&error));
        status(Status::Usage)
    };
    let (input, regular) = match open_script(args.script.as_ref()) {
        Ok(script) => script,
        Err(error) => return usage(error),
    };
    let seed = args.seed.unwrap_or_else(|| {
        let seed = choice::fresh_seed();
        tracing::info!(seed, "no --seed given; replay this run with --seed {seed}");
        seed
    });
    // Taken before the system makes anything: a signal from now on ends the run in
    // order.
    let signals = match Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => return usage(anyhow::Error::new(error).context("cannot watch signals")),
    };
    let options = Options {
        cluster: args.cluster,
        key: args.key,
        listen: args.listen,
        auth: args.auth,
        tls: args.tls,
        identity: args.identity.files(),
        role_program: args.role_program,
    };
    let system = match systems::build(args.transport, &options) {
        Ok(system) => system,
        Err(BuildError::Usage(error)) => return usage(error),
        Err(BuildError::Start(error)) => {
            eprintln!("master: {}", describe(&error));
            return status(Status::Failed);
        }
    };
    // Nobody waits on the other side of a regular file for each answer.
    let out = output::Stdout::new(regular);
    if let Err(error) = end_on_signals(signals, out.clone(), system.teardown()) {
        eprintln!("master: {}", describe(&error));
        // Dropping the system takes down whatever it has made.
        return status(Status::Failed);
    }
    // Read from here on, on a thread started before the master starts anything: a
    // thread started after a mem master has claimed its core would share that core.
    let lines = match Lines::read(input) {
        Ok(lines) => lines,
        Err(error) => {
            eprintln!("master: cannot read the script: {error}");
            return status(Status::Failed);
        }
    };
    let ack_timeout = args.ack_timeout;
    let mut master = Master::new(system, out, seed, ack_timeout).with_format(args.format);
    if let Some(dir) = args.save {
        master = master.with_save(dir);
    }
    if let Some((file, snapshot)) = restored {
        let refused = match master.restore(&snapshot) {
            Ok(()) => None,
            Err(Refusal::Rejected(reason)) => {
                eprintln!("master restore: {}: {reason}", file.display());
                Some(Status::Usage)
            }
            Err(Refusal::OutputClosed) => Some(Status::Accepted),
            Err(failure) => {
                eprintln!("{failure}");
                Some(Status::Failed)
            }
        };
        if let Some(refused) = refused {
            if let Err(problem) = master.shutdown() {
                eprintln!("master: {problem}");
            }
            return status(refused);
        }
    }
    status(run_lines(&mut master, lines, &mut std::io::stderr()))
}

/// On SIGINT or SIGTERM: writes out what the master has printed, removes what the run
/// created, then exits with 128 + the signal's number.
///
/// The thread holds standard output and standard error from the signal on: whatever
/// the teardown makes the master notice (its roles going) is never reported.
fn end_on_signals(
    mut signals: Signals,
    out: output::Stdout,
    teardown: Option<Teardown>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _out = out.hold();
                let _err = std::io::stderr().lock();
                if let Some(teardown) = teardown
                    && let Err(problem) = teardown()
                {
                    eprintln!("master: {problem}");
                }
                std::process::exit(128 + signal);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// Runs one node (or, for a master that started it, the observer) in this process.
fn node(args: NodeArgs) -> ExitCode {
    // A process that a master started tells it, and nobody else, why it fails; and
    // ends when it goes.
    let by_master = args.master.is_some();
    if by_master {
        // A panic is a failure like any other: the role reports it to the master.
        std::panic::set_hook(Box::new(|panic| tracing::error!(%panic, "panicked")));
        let watched = child::watch_master(args.dir.clone(), || std::process::exit(0));
        if let Err(error) = watched {
            child::report(&format!("cannot watch the master: {error}"));
            return status(Status::Failed);
        }
    }
    match node_process(args).and_then(|node| child::run(&node)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(cause)) => {
            // The master has been told already, unless the role could not reach it.
            if by_master {
                child::report(&cause);
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            let cause = describe(&error);
            if by_master {
                child::report(&cause);
            } else {
                eprintln!("master node: {cause}");
            }
            status(Status::Usage)
        }
    }
}

/// What the command line says about the node to run.
fn node_process(args: NodeArgs) -> anyhow::Result<NodeProcess> {
    let role = match (args.observer, args.id) {
        (true, _) => Role::Observer,
        (false, Some(id)) => Role::Node(NodeId(id)),
        (false, None) => anyhow::bail!("--id is required"),
    };
    anyhow::ensure!(
        args.transport != TransportKind::Mem,
        "a node process needs --transport pipe or tcp"
    );
    let auth = args.auth.unwrap_or(Auth::Tls);
    let files = args.identity.files();
    let tls = match (args.transport, auth) {
        (TransportKind::Tcp, Auth::Tls) => Some(node_identity(&files, args.master.is_some())?),
        (TransportKind::Tcp, Auth::Key) => {
            anyhow::ensure!(
                !files.any(),
                "--ca, --cert and --key-file are for --auth tls, not --auth key"
            );
            None
        }
        _ => None,
    };
    let key = match (args.key, args.transport, auth) {
        (Some(key), _, _) => key,
        (None, TransportKind::Tcp, Auth::Key) => {
            anyhow::bail!("--auth key needs the shared key: --key or {KEY_VARIABLE}")
        }
        (None, _, _) => String::new(),
    };
    Ok(NodeProcess {
        role,
        kind: args.transport,
        config: EndpointConfig {
            dir: args.dir,
            cluster: args.cluster,
            key: key.into_bytes(),
            listen: args
                .listen
                .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            tls,
        },
        master: args.master,
        run_id: args.run_id,
    })
}

/// A node's TLS identity: from the files the command line names or, for a process
/// that a master started itself, from the PEM the master put in [`TLS_VARIABLES`].
fn node_identity(files: &TlsFiles, by_master: bool) -> anyhow::Result<transport_tcp::TlsIdentity> {
    if by_master && !files.any() {
        let pem: Vec<String> = TLS_VARIABLES
            .iter()
            .filter_map(|variable| std::env::var(variable).ok())
            .collect();
        if let [ca, cert, key] = &pem[..] {
            return transport_tcp::TlsIdentity::from_pem(ca, cert, key)
                .map_err(|e| anyhow::anyhow!("{e}"));
        }
    }
    files.load()
}

/// `master certs`: writes the cluster's certificates, and lists the files written.
fn make_certs(args: CertsArgs) -> ExitCode {
    let nodes: Vec<NodeId> = args.nodes.into_iter().map(NodeId).collect();
    match certs::write(&args.cluster, &nodes, &args.out) {
        Ok(paths) => {
            let mut out = std::io::stdout().lock();
            for path in paths {
                let _ = writeln!(out, "{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("master certs: {error}");
            match error {
                CertsError::Usage(_) | CertsError::Exists(_) => status(Status::Usage),
                CertsError::Failed(_) => status(Status::Failed),
            }
        }
    }
}
