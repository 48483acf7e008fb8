//! Starting and stopping the roles of a run, whatever the transport.
//!
//! This is the only place that knows which transport a run uses: the master and the
//! roles see nothing but `dyn Transport`.

use crate::protocol::MASTER;
use crate::protocol::{Control, Wire};
use crate::role::{self, Role};
use anyhow::Context;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use snapshot_core::{Frame, NodeId, Transport};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread::JoinHandle;
use std::time::Duration;
use transport_mem::MemNetwork;

/// The transports a run can use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
pub enum TransportKind {
    /// Every role a thread of the master's process; frames move through crossbeam
    /// channels.
    Mem,
    /// Every node and the observer its own process; every channel a named pipe.
    Pipe,
    /// Every node and the observer its own process; every channel a TCP connection.
    Tcp,
}

/// How the master reaches a role it has just started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    /// The role's address, when it is known before the role says hello (the master
    /// connects to it at once).
    pub address: Option<String>,
    /// The role waits to be told the master's address
    /// ([`Control::Attach`]) before it says hello.
    pub attach: bool,
}

/// The roles of one run, and the medium between them.
pub trait System {
    /// The master's own endpoint. Called once, before any role is started.
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>>;

    /// Starts `role`. It says `Hello` to the master once it is up.
    fn start(&mut self, role: Role) -> anyhow::Result<Started>;

    /// The most nodes this system can run.
    fn max_nodes(&self) -> usize;

    /// Why `node` cannot join this system, if it cannot (a cluster runs only the nodes
    /// its file names).
    fn refuses(&self, node: NodeId) -> Option<String> {
        let _ = node;
        None
    }

    /// Waits for every role to exit (the master has told them to stop) and removes
    /// whatever the run created.
    fn shutdown(&mut self);
}

/// Builds the system for `kind`.
pub fn build(kind: TransportKind, options: &Options) -> anyhow::Result<Box<dyn System>> {
    Ok(match (kind, &options.cluster) {
        (TransportKind::Mem, None) => Box::new(MemSystem::default()),
        (TransportKind::Pipe | TransportKind::Tcp, None) => {
            Box::new(crate::spawned::SpawnedSystem::new(kind, options)?)
        }
        (TransportKind::Tcp, Some(file)) => {
            Box::new(crate::cluster::ClusterSystem::new(file, options)?)
        }
        (_, Some(_)) => anyhow::bail!("--cluster needs --transport tcp"),
    })
}

/// What shapes a run besides its transport.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The cluster file, for nodes started by hand on other hosts.
    pub cluster: Option<std::path::PathBuf>,
    /// The shared key that TCP peers prove they hold; drawn at random when absent
    /// (then only the processes the master starts itself can join).
    pub key: Option<String>,
    /// Where the master listens, for TCP.
    pub listen: Option<std::net::SocketAddr>,
}

/// Every role a thread, on a [`MemNetwork`].
pub struct MemSystem {
    network: MemNetwork<Wire>,
    /// The master's address, which every role connects to.
    master: String,
    threads: Vec<JoinHandle<()>>,
    /// Every role thread holds a clone and drops it as it ends, so that shutdown can
    /// wait for all of them with one deadline.
    alive: Option<Sender<()>>,
    all_done: Receiver<()>,
}

impl Default for MemSystem {
    fn default() -> Self {
        let (alive, all_done) = crossbeam_channel::bounded(0);
        MemSystem {
            // Nodes take node-to-node frames only when the master says `Take`, and the
            // master says it only after the sender has acknowledged the frame: waking
            // them for it would be wasted.
            network: MemNetwork::with_deferred_node_frames(),
            master: String::new(),
            threads: Vec::new(),
            alive: Some(alive),
            all_done,
        }
    }
}

/// How long the master polls for an answer before it sleeps: a command's round trip
/// through a node thread takes a few microseconds when nobody sleeps.
const MASTER_SPIN: Duration = Duration::from_micros(50);

/// How long shutdown waits for the role threads. A thread still running after that
/// (stuck in a bug) ends with the process.
const MEM_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Threads are cheap but not free: this bounds a run's memory and start-up time.
const MEM_MAX_NODES: usize = 256;

impl System for MemSystem {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let mut master = self.network.endpoint(MASTER)?;
        // The master waits for one quick answer at a time; nodes are many and mostly
        // idle, so only the master spins.
        master.set_spin(MASTER_SPIN);
        self.master = master.address();
        Ok(Box::new(master))
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        let mut transport = self.network.endpoint(role.endpoint())?;
        transport.connect(MASTER, &self.master)?;
        let address = transport.address();
        let name = match role {
            Role::Observer => "observer".to_string(),
            Role::Node(id) => format!("node-{id}"),
        };
        let alive = self.alive.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(move || {
                run_reporting_failure(role, &mut transport);
                drop(alive);
            })
            .context("cannot start a thread")?;
        self.threads.push(thread);
        Ok(Started {
            address: Some(address),
            attach: false,
        })
    }

    fn max_nodes(&self) -> usize {
        MEM_MAX_NODES
    }

    fn shutdown(&mut self) {
        self.alive = None;
        // Nothing is ever sent on this channel: it disconnects when the last role
        // thread has dropped its handle.
        if self.all_done.recv_timeout(MEM_SHUTDOWN_GRACE) == Err(RecvTimeoutError::Timeout) {
            tracing::error!("role threads did not stop; they end with the process");
            return;
        }
        for thread in self.threads.drain(..) {
            // A role that panicked has already reported it to the master.
            let _ = thread.join();
        }
    }
}

/// Runs `role`; if it fails or panics, tells the master why before it goes. Says
/// whether the role ended without failing.
pub fn run_reporting_failure(role: Role, transport: &mut dyn Transport<Wire>) -> bool {
    let cause = match catch_unwind(AssertUnwindSafe(|| role::run(role, transport))) {
        Ok(Ok(())) => return true,
        Ok(Err(error)) => match error.gone_peer() {
            // Not this role's failure: the master names the peer that has gone and
            // ends the run; this role waits for that rather than exit and be blamed.
            Some(peer) => {
                tracing::warn!(?role, %peer, "cannot go on: a peer has gone");
                let _ = transport.send(MASTER, Frame::Control(Control::PeerGone(peer)));
                let _ = transport.flush();
                return role::wait_for_stop(transport);
            }
            None => error.to_string(),
        },
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_string()),
    };
    tracing::error!(?role, %cause, "role failed");
    let _ = transport.send(MASTER, Frame::Control(Control::Failure(cause)));
    let _ = transport.flush();
    false
}
