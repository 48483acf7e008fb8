//! The systems that run the roles of a run, one per way of running them:
//!
//! - [`threads`]: every role a thread of the master's process, over transport-mem;
//! - [`processes`]: every role a child process of the master (`master node …`), over
//!   pipes or TCP, watched by a [`supervisor`];
//! - [`cluster`]: nodes started by hand on other hosts, over TCP.
//!
//! [`endpoint`] opens the transports of the processes, on both sides; [`child`] is
//! what a process started by a master does. This is the only place that knows which
//! transport a run uses.

pub mod child;
pub mod cluster;
pub mod endpoint;
pub mod processes;
pub mod supervisor;
pub mod threads;

pub use endpoint::TransportKind;

use crate::protocol::{ToMaster, Wire, to_master};
use crate::role::{self, Role};
use crate::system::System;
use snapshot_core::Transport;
use std::panic::{AssertUnwindSafe, catch_unwind};

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

/// Why no system was built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The options do not describe a system (a usage error).
    #[error(transparent)]
    Usage(anyhow::Error),
    /// The system could not be set up (its directory could not be created).
    #[error(transparent)]
    Start(anyhow::Error),
}

/// Builds the system for `kind`.
pub fn build(kind: TransportKind, options: &Options) -> Result<Box<dyn System>, BuildError> {
    Ok(match (kind, &options.cluster) {
        (TransportKind::Mem, None) => Box::new(threads::MemSystem::default()),
        (TransportKind::Pipe | TransportKind::Tcp, None) => {
            Box::new(processes::SpawnedSystem::new(kind, options).map_err(BuildError::Start)?)
        }
        (TransportKind::Tcp, Some(file)) => {
            Box::new(cluster::ClusterSystem::new(file, options).map_err(BuildError::Usage)?)
        }
        (_, Some(_)) => {
            return Err(BuildError::Usage(anyhow::anyhow!(
                "--cluster needs --transport tcp"
            )));
        }
    })
}

/// Runs `role`; if it fails or panics, tells the master why before it goes, and
/// returns the cause.
pub fn run_role(role: Role, transport: &mut dyn Transport<Wire>) -> Result<(), String> {
    let cause = match catch_unwind(AssertUnwindSafe(|| role::run(role, transport))) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(error)) => match error.gone_peer() {
            // Not this role's failure: the master names the peer that has gone and
            // ends the run; this role waits for that rather than exit and be blamed.
            Some(peer) => {
                tracing::warn!(?role, %peer, "cannot go on: a peer has gone");
                let _ = to_master(transport, ToMaster::PeerGone(peer));
                let _ = transport.flush();
                return if role::wait_for_stop(transport) {
                    Ok(())
                } else {
                    Err(format!("{peer} has gone"))
                };
            }
            None => crate::cause::chain(&error),
        },
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_string()),
    };
    tracing::error!(?role, %cause, "role failed");
    let _ = to_master(transport, ToMaster::Failure(cause.clone()));
    let _ = transport.flush();
    Err(cause)
}
