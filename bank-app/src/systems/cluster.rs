//! Runs over TCP whose nodes were started by hand on other hosts, each with the public
//! `master node` subcommand, and are named in a cluster file.
//!
//! The file has one entry a line; blank lines and `#` comments are skipped:
//!
//! ```text
//! cluster bank-east          # optional: the name every hello carries (default "snapshot-rs")
//! node 1 10.0.0.1:7000
//! node 2 10.0.0.2:7000
//! ```
//!
//! `CreateNode ID AMOUNT` attaches the waiting node ID and sets its balance; an id
//! that the file does not name is rejected. The observer runs inside the master.
//!
//! Connections are TLS 1.3 by default (`--auth tls`): the master reads its identity
//! from `--ca`, `--cert` and `--key-file`, and its certificate must name both the
//! master and the observer (`master.<cluster>`, `role-1.<cluster>`), since the
//! observer's endpoint, in the master's process, uses the same identity. With
//! `--auth key`, the shared key's HMAC hello authenticates connections and nothing is
//! encrypted.

use super::Options;
use super::endpoint::{self, Auth, EndpointConfig, KEY_VARIABLE, TransportKind};
use crate::protocol::{MASTER, OBSERVER, Wire};
use crate::role::Role;
use crate::system::{Started, System};
use anyhow::{Context, bail};
use snapshot_core::{NodeId, Transport};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use transport_tcp::{TlsIdentity, tls_name};

/// The cluster's name when the file gives none.
pub const DEFAULT_CLUSTER: &str = "snapshot-rs";

/// A parsed cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    /// The name every hello carries.
    pub name: String,
    /// Where each node listens.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
}

impl ClusterFile {
    /// Parses the text of a cluster file.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut file = ClusterFile {
            name: DEFAULT_CLUSTER.to_string(),
            nodes: BTreeMap::new(),
        };
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = index + 1;
            match words[..] {
                [] => {}
                ["cluster", name] => file.name = name.to_string(),
                ["node", id, address] => {
                    // Plain digits, as in a script: no sign.
                    let digits = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
                    let id: u32 = id
                        .parse()
                        .ok()
                        .filter(|_| digits)
                        .with_context(|| format!("line {number}: {id:?} is not a node id"))?;
                    let address: SocketAddr = address.parse().with_context(|| {
                        format!("line {number}: {address:?} is not an IP address and port")
                    })?;
                    if file.nodes.insert(NodeId(id), address).is_some() {
                        bail!("line {number}: node {id} is named twice");
                    }
                }
                _ => bail!("line {number}: expected `node ID HOST:PORT` or `cluster NAME`"),
            }
        }
        Ok(file)
    }
}

/// Checks that the master's certificate names the master and the observer of
/// `cluster`: the observer runs in the master's process, on an endpoint of its own,
/// with the master's identity.
fn check_master_identity(identity: &TlsIdentity, cluster: &str) -> anyhow::Result<()> {
    let names = identity.names();
    for endpoint in [MASTER, OBSERVER] {
        let name = tls_name(endpoint, cluster);
        if !names.contains(&name) {
            bail!(
                "the master's certificate (--cert) names {}, not {name}: in cluster {cluster} \
                 it must name {} and {} (the observer runs in the master's process with its \
                 identity); `master certs --cluster {cluster}` makes one",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                },
                tls_name(MASTER, cluster),
                tls_name(OBSERVER, cluster),
            );
        }
    }
    Ok(())
}

/// A cluster of nodes started by hand, with the observer in a thread of the master.
pub struct ClusterSystem {
    file: ClusterFile,
    config: EndpointConfig,
    master_address: Option<String>,
    observer: Option<JoinHandle<()>>,
}

impl ClusterSystem {
    /// Reads the cluster file at `path`.
    pub fn new(path: &Path, options: &Options) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the cluster file {}", path.display()))?;
        let file = ClusterFile::parse(&text)
            .with_context(|| format!("in the cluster file {}", path.display()))?;
        let Some(listen) = options.listen else {
            bail!("a cluster needs --listen HOST:PORT, an address the nodes can reach");
        };
        let (key, tls) = match options.auth.unwrap_or(Auth::Tls) {
            Auth::Key => {
                if options.identity.any() {
                    bail!("--ca, --cert and --key-file are for --auth tls, not --auth key");
                }
                let Some(key) = &options.key else {
                    bail!("--auth key needs the shared key: --key or {KEY_VARIABLE}");
                };
                (key.clone().into_bytes(), None)
            }
            Auth::Tls => {
                let identity = options.identity.load()?;
                check_master_identity(&identity, &file.name)?;
                (Vec::new(), Some(identity))
            }
        };
        Ok(ClusterSystem {
            config: EndpointConfig {
                dir: None,
                cluster: file.name.clone(),
                key,
                listen,
                tls,
            },
            file,
            master_address: None,
            observer: None,
        })
    }
}

impl System for ClusterSystem {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let transport = endpoint::open(TransportKind::Tcp, MASTER, &self.config)?;
        self.master_address = Some(transport.address());
        Ok(transport)
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        match role {
            Role::Node(id) => {
                let address = self
                    .file
                    .nodes
                    .get(&id)
                    .with_context(|| format!("node {id} is not in the cluster file"))?;
                Ok(Started {
                    address: Some(address.to_string()),
                    attach: true,
                })
            }
            Role::Observer => {
                let master = self
                    .master_address
                    .clone()
                    .context("the master's endpoint is not open")?;
                let config = EndpointConfig {
                    listen: SocketAddr::new(self.config.listen.ip(), 0),
                    ..self.config.clone()
                };
                let mut transport = endpoint::open(TransportKind::Tcp, OBSERVER, &config)?;
                transport.connect(MASTER, &master)?;
                let thread = std::thread::Builder::new()
                    .name("observer".to_string())
                    .spawn(move || {
                        // A failure has been told to the master, which reports it.
                        let _ = super::run_role(Role::Observer, &mut transport);
                    })
                    .context("cannot start the observer's thread")?;
                self.observer = Some(thread);
                Ok(Started::default())
            }
        }
    }

    fn max_nodes(&self) -> usize {
        self.file.nodes.len()
    }

    fn refuses(&self, node: NodeId) -> Option<String> {
        (!self.file.nodes.contains_key(&node))
            .then(|| format!("node {node} is not in the cluster file"))
    }

    fn shutdown(&mut self) -> Result<(), String> {
        // The observer has been told to stop; it ends as soon as it reads that.
        if let Some(observer) = self.observer.take() {
            let _ = observer.join();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_files_parse() {
        let file = ClusterFile::parse(
            "# two hosts\ncluster east\n\nnode 1 10.0.0.1:7000\nnode 15 10.0.0.2:7001 # second\n",
        )
        .unwrap();
        assert_eq!(file.name, "east");
        assert_eq!(file.nodes.len(), 2);
        assert_eq!(file.nodes[&NodeId(15)], "10.0.0.2:7001".parse().unwrap());
        assert!(ClusterFile::parse("node 1 nowhere").is_err());
        assert!(ClusterFile::parse("node 1 10.0.0.1:1\nnode 1 10.0.0.1:2").is_err());
        assert!(ClusterFile::parse("nodes 1 10.0.0.1:1").is_err());
        // Ids are plain digits, as in a script.
        let signed = ClusterFile::parse("node +1 10.0.0.1:1").unwrap_err();
        assert_eq!(signed.to_string(), "line 1: \"+1\" is not a node id");
        assert!(ClusterFile::parse("node 001 10.0.0.1:1").is_ok());
    }
}
