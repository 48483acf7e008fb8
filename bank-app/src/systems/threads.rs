//! Every role a thread of the master's process, on a [`MemNetwork`].

use crate::protocol::{MASTER, Wire};
use crate::role::Role;
use crate::system::{Started, System};
use anyhow::Context;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use snapshot_core::Transport;
use std::thread::JoinHandle;
use std::time::Duration;
use transport_mem::MemNetwork;

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
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Threads are cheap but not free: this bounds a run's memory and start-up time.
const MAX_NODES: usize = 256;

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
                // A failure has been told to the master, which reports it.
                let _ = super::run_role(role, &mut transport);
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
        MAX_NODES
    }

    fn shutdown(&mut self) -> Result<(), String> {
        self.alive = None;
        // Nothing is ever sent on this channel: it disconnects when the last role
        // thread has dropped its handle.
        if self.all_done.recv_timeout(SHUTDOWN_GRACE) == Err(RecvTimeoutError::Timeout) {
            tracing::error!("role threads did not stop; they end with the process");
            return Ok(());
        }
        for thread in self.threads.drain(..) {
            // A role that panicked has already reported it to the master.
            let _ = thread.join();
        }
        Ok(())
    }
}
