//! A role in a process of its own (`master node …`): a node started by hand on its
//! host, which waits for a master to attach it, or a node or the observer started by
//! a master, which connects to it at once.
//!
//! A process started by a master holds two pipes to it (see [`super::supervisor`]):
//! - it [watches](watch_master) its standard input, which the master never writes to,
//!   and ends as soon as it reaches its end: the master has gone, whatever the role
//!   is doing, even if the master never wrote to it (a FIFO whose writer never opened
//!   it gives no hang-up);
//! - it [reports](report) why it failed on its standard output, and nowhere else: the
//!   master tells the user, once.

use super::endpoint::{self, EndpointConfig, TransportKind};
use crate::protocol::{Control, MASTER, Wire};
use crate::role::Role;
use snapshot_core::{Frame, Incoming, Transport, TransportError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One role's process.
#[derive(Debug, Clone)]
pub struct NodeProcess {
    /// The role it plays.
    pub role: Role,
    /// Its transport (pipe or tcp).
    pub kind: TransportKind,
    /// How its endpoint is opened.
    pub config: EndpointConfig,
    /// The master's address, for a process a master started itself; `None` for a node
    /// started by hand, which waits to be attached.
    pub master: Option<String>,
    /// The run's id, for a process a master started itself.
    pub run_id: Option<String>,
}

/// Runs the role until it is told to stop, or the master goes. The outer error is a
/// failure to set the role up; the inner one the role's own failure, already told
/// to the master.
pub fn run(node: &NodeProcess) -> anyhow::Result<Result<(), String>> {
    let mut transport = endpoint::open(node.kind, node.role.endpoint(), &node.config)?;
    if let Some(run_id) = &node.run_id {
        tracing::debug!(%run_id, role = ?node.role, "started by a master");
    }
    let attached = match &node.master {
        Some(master) => {
            transport.connect(MASTER, master)?;
            true
        }
        None => {
            let address = transport.address();
            tracing::info!(%address, role = ?node.role, "waiting for the master");
            wait_for_attach(transport.as_mut())?
        }
    };
    let ended = if attached {
        super::run_role(node.role, transport.as_mut())
    } else {
        Ok(())
    };
    drop(transport);
    if let Some(dir) = &node.config.dir {
        // The last process of the run to leave removes its directory; the others
        // find it not empty yet.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(ended)
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

/// Watches, from a thread of its own, the standard input that the master which
/// started this process holds open: at its end, the master has gone. Then removes
/// what it can of the run's files in `dir` (every FIFO there, and the directory once
/// empty), since nobody else will, and calls `exit`.
pub fn watch_master(dir: Option<PathBuf>, exit: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("master-watch".to_string())
        .stack_size(64 * 1024)
        .spawn(move || {
            // Nothing is ever written: this returns at the end, or on an error, which
            // is as final.
            let _ = io::copy(&mut io::stdin(), &mut io::sink());
            tracing::debug!("the master has gone");
            if let Some(dir) = &dir {
                remove_run_files(dir);
            }
            exit();
        })?;
    Ok(())
}

/// Removes the FIFOs in the run's directory, then the directory if that empties it.
/// Only FIFOs: the directory comes from the command line.
fn remove_run_files(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_fifo()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Tells the master that started this process why it fails: on standard output,
/// which the master reads.
pub fn report(cause: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{cause}").and_then(|()| out.flush());
}
