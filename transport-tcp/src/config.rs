//! What an endpoint needs to know before it listens: where, for which cluster, with
//! which key or which TLS identity.

use crate::TlsIdentity;
use snapshot_core::TransportError;
use snapshot_core::codec::DEFAULT_MAX_FRAME;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long a peer has to complete the handshake, by default.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How many handshakes an endpoint's listener runs at once, by default: see
/// [`TcpConfig::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// How many batches of frames an [`AsyncTcpTransport`](crate::AsyncTcpTransport)'s
/// readers hold for the application, by default: with batches of at most 64 KiB of
/// the stream each, up to about 4 MiB.
pub const DEFAULT_INBOX: usize = 64;

/// The most batches an inbox may hold ([`TcpConfig::inbox`]): about 64 GiB of
/// batches of 64 KiB.
pub const MAX_INBOX: usize = 1 << 20;

/// The settings of one endpoint.
///
/// Every endpoint of a cluster must use the same `cluster` name and the same `key`:
/// the handshake that opens every connection proves, both ways, that the other side
/// knows them. Or, with [`tls`](Self::tls), every endpoint has a certificate from the
/// cluster's authority, and connections are TLS 1.3 with both sides authenticated:
/// see [TLS](crate#tls).
#[derive(Clone)]
pub struct TcpConfig {
    /// Where to listen. The default, `127.0.0.1:0`, takes a port the operating system
    /// chooses, on the loopback interface only; endpoints on other hosts need an
    /// address of an interface they can reach. The listener's real address is what
    /// [`address`](snapshot_core::Transport::address) reports.
    pub bind: SocketAddr,
    /// The name of the cluster (or of the run). A peer that names another cluster is
    /// refused, even with the right key, so that two runs sharing a key cannot be
    /// joined by mistake.
    pub cluster: String,
    /// The shared secret every endpoint of the cluster holds. Any length but zero;
    /// 32 random bytes ([`random_key`](crate::random_key)) is right. Not used under
    /// TLS ([`tls`](Self::tls)), where it may be empty.
    pub key: Vec<u8>,
    /// The bound on one frame's encoded size, both ways: a frame over it is refused
    /// when sent ([`TransportError::FrameTooLarge`](snapshot_core::TransportError)),
    /// and a peer announcing one is dropped. Defaults to
    /// [`DEFAULT_MAX_FRAME`](snapshot_core::codec::DEFAULT_MAX_FRAME).
    pub max_frame: usize,
    /// How long a handshake may take, either side. An incoming connection that has
    /// not proved itself by then is closed; an outgoing
    /// [`connect`](snapshot_core::Transport::connect) gives up. Defaults to
    /// [`DEFAULT_HELLO_TIMEOUT`] (5 s).
    pub hello_timeout: Duration,
    /// How many handshakes the listener runs at once. Connections that have not
    /// proved themselves yet hold a socket (and a descriptor) each until they do, fail
    /// or reach [`hello_timeout`](Self::hello_timeout): this bounds what connections
    /// that never do can hold. When a connection arrives with this many handshakes in
    /// progress, the one that has been in progress longest is closed (and logged) to
    /// make room: a peer that proves itself at once gets in whatever number of idle
    /// connections came before it. At least 1; defaults to
    /// [`DEFAULT_MAX_HANDSHAKES`] (64).
    pub max_handshakes: usize,
    /// The bound on what an [`AsyncTcpTransport`](crate::AsyncTcpTransport) holds
    /// for an application that does not receive: how many batches of frames its
    /// reader tasks may have decoded that the application has not taken, all peers
    /// together. A batch is what one read of a connection gave, at most 64 KiB of the
    /// stream (or one frame, when a frame is larger). Once the inbox is full, each
    /// reader holds the batch it has and stops reading its socket, so the socket
    /// buffers fill and the peers' sends wait: see
    /// [Bounded memory](crate#bounded-memory). From 1 to [`MAX_INBOX`]; defaults to
    /// [`DEFAULT_INBOX`] (64). [`TcpTransport`](crate::TcpTransport) has no inbox: it
    /// reads its sockets only inside its own calls.
    pub inbox: usize,
    /// This endpoint's TLS identity: with one, every connection is TLS 1.3 with
    /// mutual authentication, and peers without TLS are refused; without (the
    /// default), connections are plain TCP, authenticated by the cluster
    /// [`key`](Self::key). Every endpoint of a cluster must agree. Under TLS the
    /// cluster's name must be a DNS name (its endpoints' certificates are named
    /// after it: see [`tls_name`](crate::tls_name)); the endpoint's certificate is
    /// checked when it is created (it must chain to the authority, be valid now and
    /// name the endpoint), and a mistake is a [`TransportError::Config`].
    pub tls: Option<TlsIdentity>,
}

impl TcpConfig {
    /// The default settings for the cluster `cluster` with the shared `key`.
    pub fn new(cluster: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        TcpConfig {
            cluster: cluster.into(),
            key: key.into(),
            ..Self::default()
        }
    }

    /// Refuses settings no endpoint can work with, as
    /// [`TransportError::Config`].
    pub(crate) fn check(&self) -> Result<(), TransportError> {
        if self.key.is_empty() && self.tls.is_none() {
            return Err(TransportError::Config("the cluster key is empty".into()));
        }
        if self.max_handshakes == 0 {
            return Err(TransportError::Config(
                "the listener must run at least one handshake at a time".into(),
            ));
        }
        if self.inbox == 0 {
            return Err(TransportError::Config(
                "the inbox must hold at least one batch".into(),
            ));
        }
        if self.inbox > MAX_INBOX {
            return Err(TransportError::Config(format!(
                "an inbox of {} batches is more than the {MAX_INBOX} an inbox may hold",
                self.inbox
            )));
        }
        Ok(())
    }
}

/// Loopback with an OS-chosen port, the default bounds, no TLS, an empty cluster name
/// and **an empty key, which endpoints refuse**: set `key` (or `tls`) and `cluster`
/// before use.
impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            cluster: String::new(),
            key: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            inbox: DEFAULT_INBOX,
            tls: None,
        }
    }
}

/// Shows everything but the key (and the TLS identity's private key).
impl std::fmt::Debug for TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConfig")
            .field("bind", &self.bind)
            .field("cluster", &self.cluster)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("max_frame", &self.max_frame)
            .field("hello_timeout", &self.hello_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .field("inbox", &self.inbox)
            .field("tls", &self.tls)
            .finish()
    }
}

/// A fresh 32-byte key from the operating system's random source, for runs whose
/// endpoints all start on one host (the parent hands it to its children).
///
/// # Panics
///
/// If the operating system cannot provide random bytes: a key that is not random is
/// worse than none.
pub fn random_key() -> Vec<u8> {
    let mut key = vec![0; 32];
    getrandom::fill(&mut key).expect("the operating system's random source failed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_any_port_and_five_seconds() {
        let config = TcpConfig::new("c", random_key());
        assert_eq!(config.bind.to_string(), "127.0.0.1:0");
        assert_eq!(config.hello_timeout, Duration::from_secs(5));
        assert_eq!(config.max_frame, DEFAULT_MAX_FRAME);
        assert_eq!(config.inbox, DEFAULT_INBOX);
        assert_eq!(config.max_handshakes, DEFAULT_MAX_HANDSHAKES);
        assert!(config.check().is_ok());
        assert_eq!(config.key.len(), 32);
        assert_ne!(config.key, random_key(), "keys are drawn afresh");
        assert!(!format!("{config:?}").contains(&format!("{:?}", config.key)));
    }

    #[test]
    fn an_empty_key_an_empty_inbox_or_no_handshakes_is_a_configuration_error() {
        let config = TcpConfig::new("c", Vec::new());
        assert!(matches!(config.check(), Err(TransportError::Config(why)) if why.contains("key")));
        let config = TcpConfig {
            inbox: 0,
            ..TcpConfig::new("c", random_key())
        };
        assert!(
            matches!(config.check(), Err(TransportError::Config(why)) if why.contains("inbox"))
        );
        for inbox in [MAX_INBOX + 1, usize::MAX] {
            let config = TcpConfig {
                inbox,
                ..TcpConfig::new("c", random_key())
            };
            assert!(
                matches!(config.check(), Err(TransportError::Config(why)) if why.contains("inbox")),
                "{inbox}"
            );
        }
        let config = TcpConfig {
            inbox: MAX_INBOX,
            ..TcpConfig::new("c", random_key())
        };
        assert!(config.check().is_ok());
        let config = TcpConfig {
            max_handshakes: 0,
            ..TcpConfig::new("c", random_key())
        };
        assert!(
            matches!(config.check(), Err(TransportError::Config(why)) if why.contains("handshake"))
        );
    }
}
