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

pub mod certs;
pub mod child;
pub mod cluster;
pub mod endpoint;
pub mod processes;
pub mod supervisor;
pub mod threads;

pub use endpoint::{Auth, TransportKind};

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
    /// How a cluster's endpoints prove who they are (`--auth`): TLS when absent.
    pub auth: Option<Auth>,
    /// A run that starts its own nodes over TCP uses TLS, with certificates it makes
    /// for itself (`--tls`).
    pub tls: bool,
    /// The PEM files of the master's TLS identity in a cluster: the authority's
    /// certificate, the master's certificate and its key (`--ca`, `--cert`,
    /// `--key-file`).
    pub identity: TlsFiles,
    /// The executable the observer and the nodes run, when it is not the master's own
    /// (`--role-program`): a wrapper that ends by `exec`ing `master` with the
    /// arguments it was given, to run the roles under `strace`, `taskset` or a
    /// debugger.
    pub role_program: Option<std::path::PathBuf>,
}

/// The PEM files of a TLS identity, as the command line names them.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The authority's certificate (`--ca`).
    pub ca: Option<std::path::PathBuf>,
    /// The endpoint's certificate (`--cert`).
    pub cert: Option<std::path::PathBuf>,
    /// The endpoint's private key (`--key-file`).
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// Whether any of the files is named.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Reads the identity, for `--auth tls`; all three files are needed.
    pub fn load(&self) -> anyhow::Result<transport_tcp::TlsIdentity> {
        match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => endpoint::identity_from_files(ca, cert, key),
            _ => {
                let missing: Vec<&str> = [
                    (self.ca.is_none(), "--ca FILE"),
                    (self.cert.is_none(), "--cert FILE"),
                    (self.key.is_none(), "--key-file FILE"),
                ]
                .into_iter()
                .filter_map(|(missing, flag)| missing.then_some(flag))
                .collect();
                anyhow::bail!(
                    "--auth tls (the default) needs the certificate files: {} missing \
                     (`master certs` makes them; `--auth key` uses the shared key instead, \
                     unencrypted)",
                    missing.join(", ")
                )
            }
        }
    }
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
    let usage = |why: &str| Err(BuildError::Usage(anyhow::anyhow!("{why}")));
    if options.tls && kind != TransportKind::Tcp {
        return usage("--tls needs --transport tcp");
    }
    if options.role_program.is_some() && (kind == TransportKind::Mem || options.cluster.is_some()) {
        return usage(
            "--role-program is for runs that start their own processes (--transport pipe or tcp, without --cluster)",
        );
    }
    if options.cluster.is_none() {
        if options.auth.is_some() {
            return usage(
                "--auth is for --cluster runs (a run that starts its own nodes takes --tls)",
            );
        }
        if options.identity.any() {
            return usage(
                "--ca, --cert and --key-file are for --cluster runs (a run that starts its own nodes makes its certificates with --tls)",
            );
        }
    } else if options.tls && options.auth == Some(Auth::Key) {
        return usage("--tls and --auth key contradict each other");
    }
    // The key proves a tcp peer, unless TLS does (a cluster's default).
    let key_proves = kind == TransportKind::Tcp
        && match options.cluster {
            None => !options.tls,
            Some(_) => options.auth == Some(Auth::Key),
        };
    if key_proves && options.key.as_deref() == Some("") {
        return usage(&format!(
            "the cluster key is empty (--key or {})",
            endpoint::KEY_VARIABLE
        ));
    }
    Ok(match (kind, &options.cluster) {
        (TransportKind::Mem, None) => Box::new(threads::MemSystem::with_master_core()),
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
