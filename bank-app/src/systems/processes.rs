//! Runs where every node and the observer is an OS process of its own, started by the
//! master from its own executable (`master node …`), over pipes or TCP, and watched
//! by a [`Supervisor`].

use super::Options;
use super::certs;
use super::endpoint::{self, EndpointConfig, KEY_VARIABLE, TLS_VARIABLES, TransportKind};
use super::supervisor::Supervisor;
use crate::protocol::{MASTER, Wire};
use crate::role::Role;
use crate::system::{Departure, Started, System, Teardown};
use anyhow::Context;
use crossbeam_channel::Receiver;
use snapshot_core::{Endpoint, Transport};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a stopping run waits for its processes before it kills them.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Every node and the observer a process; each process holds descriptors (a pipe or a
/// socket each way) per peer, so the bank's complete graph is bounded here.
const MAX_NODES: usize = 64;

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
    /// The executable the roles run: the master's own unless told otherwise.
    program: Option<PathBuf>,
    /// The run's certificate authority, in memory, under `--tls`: it issues each
    /// process its identity, which travels to it in [`TLS_VARIABLES`].
    ca: Option<transport_tcp::Ca>,
    supervisor: Supervisor,
}

impl SpawnedSystem {
    /// A run over `kind` (pipe or tcp); creates the run's directory for pipes, and,
    /// for tcp with `options.tls`, the run's certificate authority.
    pub fn new(kind: TransportKind, options: &Options) -> anyhow::Result<Self> {
        let run_id = run_id();
        let supervisor = Supervisor::default();
        let dir = match kind {
            TransportKind::Pipe => {
                let dir = std::env::temp_dir().join(format!("snapshot-rs-{run_id}"));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                supervisor.track_dir(dir.clone());
                Some(dir)
            }
            _ => None,
        };
        let key = match &options.key {
            Some(key) => key.clone(),
            // A run that starts its own nodes draws a key for itself.
            None => endpoint::hex(&transport_tcp::random_key()),
        };
        let listen = options
            .listen
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let cluster = format!("snapshot-rs-{run_id}");
        let (ca, tls) = if options.tls && kind == TransportKind::Tcp {
            let ca = transport_tcp::Ca::new(&cluster)
                .map_err(|e| anyhow::anyhow!("cannot make the run's certificates: {e}"))?;
            let master = certs::identity(&ca, MASTER)?;
            (Some(ca), Some(master))
        } else {
            (None, None)
        };
        Ok(SpawnedSystem {
            kind,
            config: EndpointConfig {
                dir,
                cluster,
                key: key.clone().into_bytes(),
                listen,
                tls,
            },
            ca,
            run_id,
            key,
            master_address: None,
            program: options.role_program.clone(),
            supervisor,
        })
    }

    /// Runs the roles with `program` (a `master` executable) rather than the running
    /// one: for a master that is not itself `master`, such as a test.
    pub fn with_program(mut self, program: PathBuf) -> Self {
        self.program = Some(program);
        self
    }
}

impl System for SpawnedSystem {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let transport = endpoint::open(self.kind, MASTER, &self.config)?;
        self.master_address = Some(transport.address());
        Ok(transport)
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        let program = match &self.program {
            Some(program) => program.clone(),
            None => std::env::current_exe().context("cannot find the master's executable")?,
        };
        let master = self
            .master_address
            .clone()
            .context("the master's endpoint is not open")?;
        let mut command = Command::new(program);
        command
            .arg("node")
            .args(["--transport", self.kind.name()])
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
        if self.kind == TransportKind::Tcp {
            match &self.ca {
                Some(ca) => {
                    let pem = certs::identity(ca, role.endpoint())?.to_pem();
                    command.args(["--auth", "tls"]);
                    for (variable, value) in TLS_VARIABLES.iter().zip([pem.ca, pem.cert, pem.key]) {
                        command.env(variable, value);
                    }
                }
                None => {
                    command.args(["--auth", "key"]);
                }
            }
        }
        command
            .env(KEY_VARIABLE, &self.key)
            // The lifeline and the report: see the supervisor.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Out of the terminal's process group: Ctrl-C reaches the master alone,
            // which then takes everything down in order.
            .process_group(0);
        let child = command.spawn().context("cannot start the process")?;
        self.supervisor
            .adopt(role, child)
            .context("cannot watch the process")?;
        Ok(Started {
            address: self.config.dir.as_ref().map(|d| d.display().to_string()),
            attach: false,
        })
    }

    fn max_nodes(&self) -> usize {
        MAX_NODES
    }

    fn departures(&self) -> Option<Receiver<Departure>> {
        Some(self.supervisor.departures())
    }

    fn why_gone(&mut self, who: Endpoint, grace: Duration) -> Option<String> {
        self.supervisor.why_gone(who, grace)
    }

    fn unresponsive(&self, who: Endpoint) -> Option<String> {
        self.supervisor.unresponsive(who)
    }

    fn stopping(&mut self) {
        self.supervisor.stopping();
    }

    fn shutdown(&mut self) -> Result<(), String> {
        self.supervisor.stopping();
        self.supervisor.kill_stopped();
        if !self.supervisor.wait_all(STOP_GRACE) {
            tracing::warn!("processes did not stop in time; killing them");
        }
        self.supervisor.end()
    }

    fn teardown(&self) -> Option<Teardown> {
        Some(self.supervisor.teardown())
    }
}
