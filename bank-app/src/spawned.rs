//! Runs where every node and the observer is an OS process of its own, started by the
//! master from its own executable (`master node …`), over pipes or TCP.

use crate::cleanup;
use crate::protocol::MASTER;
use crate::protocol::Wire;
use crate::role::Role;
use crate::system::{Options, Started, System, TransportKind};
use anyhow::Context;
use snapshot_core::{Endpoint, Transport};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use transport_pipe::PipeTransport;
use transport_tcp::{TcpConfig, TcpTransport};

/// The environment variable that carries the shared TCP key to the processes of a run
/// (never the command line, which other users can read).
pub const KEY_VARIABLE: &str = "SNAPSHOT_RS_KEY";

/// How long a stopping run waits for its processes before it kills them.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Every node and the observer a process; each process holds descriptors (a pipe or a
/// socket each way) per peer, so the bank's complete graph is bounded here.
const PROCESS_MAX_NODES: usize = 64;

/// What one endpoint of a process-crossing transport needs to open it.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The run's directory (pipes).
    pub dir: Option<PathBuf>,
    /// The cluster name that TCP hellos carry.
    pub cluster: String,
    /// The shared TCP key.
    pub key: Vec<u8>,
    /// Where to listen (TCP).
    pub listen: SocketAddr,
}

/// How long the master polls for an answer before it sleeps. A command's round trip
/// through another process takes tens of microseconds; polling through it saves the
/// master a wake-up per command.
const MASTER_SPIN: Duration = Duration::from_micros(200);

/// Opens `endpoint`'s transport of `kind` (pipe or tcp). The master polls for its
/// answers a while before it sleeps (`MASTER_SPIN`).
pub fn open(
    kind: TransportKind,
    endpoint: Endpoint,
    config: &EndpointConfig,
) -> anyhow::Result<Box<dyn Transport<Wire>>> {
    Ok(match kind {
        TransportKind::Pipe => {
            let dir = config
                .dir
                .clone()
                .context("a pipe endpoint needs the run's directory")?;
            let mut transport = PipeTransport::new(dir, endpoint)?;
            if endpoint == MASTER {
                transport.set_spin(MASTER_SPIN);
            }
            Box::new(transport)
        }
        TransportKind::Tcp => {
            let mut tcp = TcpConfig::new(config.cluster.clone(), config.key.clone());
            tcp.bind = config.listen;
            let mut transport = TcpTransport::new(endpoint, tcp)?;
            if endpoint == MASTER {
                transport.set_spin(MASTER_SPIN);
            }
            Box::new(transport)
        }
        TransportKind::Mem => anyhow::bail!("the mem transport does not cross processes"),
    })
}

/// A fresh id for a run: the master's pid and 32 random bits.
fn run_id() -> String {
    format!(
        "{}-{:08x}",
        std::process::id(),
        crate::choice::fresh_seed() as u32
    )
}

/// Nodes and the observer as child processes of the master.
pub struct SpawnedSystem {
    kind: TransportKind,
    run_id: String,
    config: EndpointConfig,
    /// The shared key, as text: it travels to the children in [`KEY_VARIABLE`].
    key: String,
    master_address: Option<String>,
}

impl SpawnedSystem {
    /// A run over `kind` (pipe or tcp); creates the run's directory for pipes.
    pub fn new(kind: TransportKind, options: &Options) -> anyhow::Result<Self> {
        let run_id = run_id();
        let dir = match kind {
            TransportKind::Pipe => {
                let dir = std::env::temp_dir().join(format!("snapshot-rs-{run_id}"));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                cleanup::track_dir(dir.clone());
                Some(dir)
            }
            _ => None,
        };
        let key = match &options.key {
            Some(key) => key.clone(),
            // A run that starts its own nodes draws a key for itself.
            None => hex(&transport_tcp::random_key()),
        };
        let listen = options
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        Ok(SpawnedSystem {
            kind,
            config: EndpointConfig {
                dir,
                cluster: format!("snapshot-rs-{run_id}"),
                key: key.clone().into_bytes(),
                listen,
            },
            run_id,
            key,
            master_address: None,
        })
    }
}

use std::os::unix::fs::DirBuilderExt;

impl System for SpawnedSystem {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let transport = open(self.kind, MASTER, &self.config)?;
        self.master_address = Some(transport.address());
        Ok(transport)
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        let exe = std::env::current_exe().context("cannot find the master's executable")?;
        let master = self
            .master_address
            .clone()
            .context("the master's endpoint is not open")?;
        let mut command = Command::new(exe);
        command
            .arg("node")
            .args(["--transport", kind_name(self.kind)])
            .args(["--cluster", &self.config.cluster])
            .args(["--run-id", &self.run_id])
            .args(["--master", &master]);
        if let Some(dir) = &self.config.dir {
            command.arg("--dir").arg(dir);
        }
        let listen = SocketAddr::new(self.config.listen.ip(), 0);
        command.args(["--listen", &listen.to_string()]);
        match role {
            Role::Observer => command.arg("--observer"),
            Role::Node(id) => command.args(["--id", &id.to_string()]),
        };
        command
            .env(KEY_VARIABLE, &self.key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Out of the terminal's process group: Ctrl-C reaches the master alone,
            // which then takes everything down in order.
            .process_group(0);
        let child = command.spawn().context("cannot start the process")?;
        cleanup::track_child(role, child).context("cannot watch the process")?;
        Ok(Started {
            address: self.config.dir.as_ref().map(|d| d.display().to_string()),
            attach: false,
        })
    }

    fn max_nodes(&self) -> usize {
        PROCESS_MAX_NODES
    }

    fn shutdown(&mut self) {
        cleanup::stopping();
        if !cleanup::wait_for_children(STOP_GRACE) {
            tracing::warn!("processes did not stop in time; killing them");
        }
        cleanup::clean_up();
    }
}

/// The name `--transport` takes for `kind`.
pub fn kind_name(kind: TransportKind) -> &'static str {
    match kind {
        TransportKind::Mem => "mem",
        TransportKind::Pipe => "pipe",
        TransportKind::Tcp => "tcp",
    }
}

/// `bytes` in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
