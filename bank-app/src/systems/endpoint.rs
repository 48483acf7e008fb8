//! The transports a run can use, and how an endpoint of a process-crossing one is
//! opened: one place for both ends (the master, the processes it starts, the nodes of
//! a cluster).

use crate::protocol::{MASTER, Wire};
use anyhow::Context;
use snapshot_core::{Endpoint, Transport};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use transport_pipe::PipeTransport;
use transport_tcp::{TcpConfig, TcpTransport, TlsIdentity};

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

impl TransportKind {
    /// The name `--transport` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Mem => "mem",
            TransportKind::Pipe => "pipe",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// How the endpoints of a TCP run prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Auth {
    /// TLS 1.3, both sides authenticated by certificates of the cluster's authority;
    /// every frame encrypted.
    Tls,
    /// The shared key's HMAC challenge-response when a connection opens; the frames
    /// that follow are neither encrypted nor authenticated.
    Key,
}

/// The environment variables that carry a TLS identity, in PEM, to a process that a
/// master starts itself: the authority's certificate, the process's certificate and
/// its private key (never the command line, which other users can read).
pub const TLS_VARIABLES: [&str; 3] = [
    "SNAPSHOT_RS_TLS_CA",
    "SNAPSHOT_RS_TLS_CERT",
    "SNAPSHOT_RS_TLS_KEY",
];

/// Reads an identity from the PEM files `--ca`, `--cert` and `--key-file` name.
pub fn identity_from_files(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<TlsIdentity> {
    TlsIdentity::from_pem_files(ca, cert, key).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The environment variable that carries the shared TCP key to the processes of a run
/// (never the command line, which other users can read).
pub const KEY_VARIABLE: &str = "SNAPSHOT_RS_KEY";

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
    /// The endpoint's TLS identity: with one, its TCP connections are TLS 1.3 and the
    /// key is not used.
    pub tls: Option<TlsIdentity>,
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
            tcp.tls = config.tls.clone();
            let mut transport = TcpTransport::new(endpoint, tcp)?;
            if endpoint == MASTER {
                transport.set_spin(MASTER_SPIN);
            }
            Box::new(transport)
        }
        TransportKind::Mem => anyhow::bail!("the mem transport does not cross processes"),
    })
}

/// `bytes` in lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
