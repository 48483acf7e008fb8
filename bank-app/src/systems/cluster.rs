//! Runs over TCP whose nodes were started by hand on other hosts, each with the public
//! `master node` subcommand, and are named in a cluster file.
//!
//! The file has one entry a line; blank lines and `#` comments are skipped:
//!
//! ```text
//! cluster bank-east          # optional: the name every hello carries (default "snapshot-rs")
//! node 1 10.0.0.1:7000
//! node 2 bank-node-2.bank:7000
//! node 3 [fd00::3]:7000
//! ```
//!
//! A node's address is an IP address and port, or a host name and port. Names are
//! resolved when the run starts ([`ClusterFile::resolve`]), once: a name that resolves
//! to several addresses is taken at its first IPv4 address (a node listening on
//! `0.0.0.0` is reached there), or at its first address if it has no IPv4 one. The
//! TLS names that certificates carry are the endpoints' (`node-2.<cluster>`), not the
//! hosts', so a node may be named either way.
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
use std::net::{SocketAddr, ToSocketAddrs};
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
    /// Where each node listens, as the file gives it.
    pub nodes: BTreeMap<NodeId, Entry>,
}

/// One `node ID ADDRESS` line of a cluster file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the node listens.
    pub address: NodeAddress,
    /// The line of the file that names the node, from 1.
    pub line: usize,
}

/// Where a node listens, as a cluster file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddress {
    /// An IP address and port: `10.0.0.1:7000`, `[fd00::1]:7000`.
    Ip(SocketAddr),
    /// A host name and port, `bank-node-1.bank:7000`, resolved when the run starts.
    Name {
        /// The host name: labels of letters, digits and hyphens, joined by dots.
        host: String,
        /// The port.
        port: u16,
    },
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeAddress::Ip(address) => write!(f, "{address}"),
            NodeAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl NodeAddress {
    /// Reads `HOST:PORT`: an IP address and port, or a host name and port. `None` if
    /// it is neither.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Some(NodeAddress::Ip(address));
        }
        let (host, port) = text.rsplit_once(':')?;
        // Plain digits, as everywhere in the file.
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let port = port.parse().ok()?;
        is_host_name(host).then(|| NodeAddress::Name {
            host: host.to_string(),
            port,
        })
    }

    /// The address to connect to: the address itself, or what the name resolves to
    /// now (its first IPv4 address, or its first address if it has no IPv4 one).
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            NodeAddress::Ip(address) => Ok(*address),
            NodeAddress::Name { host, port } => {
                let addresses: Vec<SocketAddr> =
                    (host.as_str(), *port).to_socket_addrs()?.collect();
                addresses
                    .iter()
                    .find(|address| address.is_ipv4())
                    .or(addresses.first())
                    .copied()
                    .ok_or_else(|| std::io::Error::other("it resolves to no address"))
            }
        }
    }
}

/// Whether `host` is a host name as DNS writes them: at most 253 characters, labels
/// of 1 to 63 letters, digits and hyphens (not at either end), joined by dots (and
/// one more dot at the end, for a fully qualified name), the last one not all digits
/// (`10.0.0.300` is a wrong address, not a name).
fn is_host_name(host: &str) -> bool {
    let labels: Vec<&str> = host.strip_suffix('.').unwrap_or(host).split('.').collect();
    let label_ok = |label: &&str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    host.len() <= 253
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

impl ClusterFile {
    /// Parses the text of a cluster file. Nothing is resolved: see
    /// [`resolve`](Self::resolve).
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
                    let address = NodeAddress::parse(address).with_context(|| {
                        format!(
                            "line {number}: {address:?} is not an IP address and port, nor a \
                             host name and port"
                        )
                    })?;
                    let entry = Entry {
                        address,
                        line: number,
                    };
                    if file.nodes.insert(NodeId(id), entry).is_some() {
                        bail!("line {number}: node {id} is named twice");
                    }
                }
                _ => bail!("line {number}: expected `node ID HOST:PORT` or `cluster NAME`"),
            }
        }
        Ok(file)
    }

    /// Where each node is to be reached: host names resolved now. Fails at the first
    /// name that does not resolve, naming its line and the host.
    pub fn resolve(&self) -> anyhow::Result<BTreeMap<NodeId, SocketAddr>> {
        self.nodes
            .iter()
            .map(|(&id, entry)| {
                let address = entry.address.resolve().with_context(|| {
                    format!(
                        "line {}: cannot resolve the address of node {id}, {}",
                        entry.line, entry.address
                    )
                })?;
                Ok((id, address))
            })
            .collect()
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
    /// Where each node is reached, its host name resolved when the run started.
    addresses: BTreeMap<NodeId, SocketAddr>,
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
        let addresses = file
            .resolve()
            .with_context(|| format!("in the cluster file {}", path.display()))?;
        Ok(ClusterSystem {
            config: EndpointConfig {
                dir: None,
                cluster: file.name.clone(),
                key,
                listen,
                tls,
            },
            file,
            addresses,
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
                    .addresses
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
        assert_eq!(
            file.nodes[&NodeId(15)],
            Entry {
                address: NodeAddress::Ip("10.0.0.2:7001".parse().unwrap()),
                line: 5,
            }
        );
        assert!(ClusterFile::parse("node 1 nowhere").is_err());
        assert!(ClusterFile::parse("node 1 10.0.0.1:1\nnode 1 10.0.0.1:2").is_err());
        assert!(ClusterFile::parse("nodes 1 10.0.0.1:1").is_err());
        // Ids are plain digits, as in a script.
        let signed = ClusterFile::parse("node +1 10.0.0.1:1").unwrap_err();
        assert_eq!(signed.to_string(), "line 1: \"+1\" is not a node id");
        assert!(ClusterFile::parse("node 001 10.0.0.1:1").is_ok());
    }

    fn address(text: &str) -> Option<NodeAddress> {
        NodeAddress::parse(text)
    }

    #[test]
    fn nodes_may_be_named_by_host_name_and_port() {
        let file = ClusterFile::parse(
            "cluster bank\nnode 0 bank-node-0.bank:7000\nnode 1 10.0.0.2:7000\n\
             node 2 [fd00::2]:7001\nnode 3 localhost:9\nnode 4 A-1.b2.example.:80\n",
        )
        .unwrap();
        let name = |host: &str, port| NodeAddress::Name {
            host: host.to_string(),
            port,
        };
        assert_eq!(
            file.nodes[&NodeId(0)].address,
            name("bank-node-0.bank", 7000)
        );
        assert_eq!(file.nodes[&NodeId(0)].line, 2);
        assert_eq!(
            file.nodes[&NodeId(1)].address,
            NodeAddress::Ip("10.0.0.2:7000".parse().unwrap())
        );
        assert_eq!(
            file.nodes[&NodeId(2)].address,
            NodeAddress::Ip("[fd00::2]:7001".parse().unwrap())
        );
        assert_eq!(file.nodes[&NodeId(3)].address, name("localhost", 9));
        assert_eq!(
            file.nodes[&NodeId(4)].address.to_string(),
            "A-1.b2.example.:80"
        );
        assert_eq!(file.nodes[&NodeId(4)].line, 6);

        for wrong in [
            "bank-node-0.bank",    // no port
            "bank-node-0.bank:",   // empty port
            "bank-node-0.bank:+7", // signed port
            "bank-node-0.bank:70000",
            ":7000",           // no host
            "-bank:7000",      // a label starting with a hyphen
            "bank-:7000",      // or ending with one
            "a..b:7000",       // an empty label
            "a.b..:7000",      // two dots at the end
            "bank_node:7000",  // not a DNS character
            "10.0.0.300:7000", // a wrong address, not a name
            "fd00::1:7000",    // IPv6 without brackets
            "[fd00::1]",       // no port
        ] {
            assert_eq!(address(wrong), None, "{wrong}");
            let refused = ClusterFile::parse(&format!("node 1 {wrong}")).unwrap_err();
            assert_eq!(
                refused.to_string(),
                format!(
                    "line 1: {wrong:?} is not an IP address and port, nor a host name and port"
                )
            );
        }
        let host = |labels: usize| ["a"; 200][..labels].join(".");
        assert_eq!(host(127).len(), 253);
        assert!(address(&format!("{}:1", host(127))).is_some());
        assert!(address(&format!("{}:1", host(128))).is_none(), "over 253");
        assert!(address(&format!("{}:1", "a".repeat(64))).is_none());
        assert!(address(&format!("{}:1", "a".repeat(63))).is_some());
    }

    #[test]
    fn localhost_resolves_to_a_loopback_address_and_its_port() {
        let file = ClusterFile::parse("node 7 localhost:4321\nnode 8 127.0.0.3:99\n").unwrap();
        let resolved = file.resolve().unwrap();
        let local = resolved[&NodeId(7)];
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 4321);
        assert_eq!(resolved[&NodeId(8)], "127.0.0.3:99".parse().unwrap());
    }

    #[test]
    fn a_name_that_does_not_resolve_is_refused_naming_its_line_and_host() {
        // `.invalid` never resolves (RFC 2606).
        let file = ClusterFile::parse(
            "cluster lab\nnode 1 127.0.0.1:7000\n# the second host\nnode 2 nowhere.invalid:7000\n",
        )
        .unwrap();
        let error = file.resolve().unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.starts_with(
                "line 4: cannot resolve the address of node 2, nowhere.invalid:7000: "
            ),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}
