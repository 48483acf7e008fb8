//! The `Transport` contract, checked by snapshot-core's conformance suite over TCP on
//! 127.0.0.1: the synchronous `TcpTransport`, and `AsyncTcpTransport` through an
//! adapter that runs each call to completion on a tokio runtime; each plain and over
//! TLS.

use snapshot_core::codec::DEFAULT_MAX_FRAME;
use snapshot_core::conformance::{FLOOD_PAYLOAD, Network, Probe};
use snapshot_core::{AsyncTransport, Endpoint, Incoming, Transport, TransportError};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;
use transport_tcp::{AsyncTcpTransport, Ca, TcpConfig, TcpTransport, random_key};

/// A batch a sender fills before it writes, and the batches its writer queues.
const SENDER_BUFFERS: usize = (1 + 8) * 64 * 1024;

/// The most a TCP socket's buffer grows to, from `/proc/sys/net/ipv4/tcp_{r,w}mem`
/// (the third figure), with Linux's defaults when they cannot be read.
fn socket_buffer(name: &str, default: usize) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(default)
}

/// What a TLS receiver may hold besides: the ciphertext of one read of its socket,
/// rustls's record buffer and the plaintext of a record.
const TLS_BUFFERS: usize = 64 * 1024 + 2 * 17 * 1024;

/// What can wait for a receiver that does not call its transport: the receiver's
/// socket buffer, the sender's, the sender's own buffers, and `inbox` batches of
/// 64 KiB that an asynchronous receiver's readers take in by themselves; with `tls`,
/// the TLS session's buffers too.
fn held_bound(inbox: usize, tls: bool) -> usize {
    let kernel = socket_buffer("tcp_rmem", 6 << 20) + socket_buffer("tcp_wmem", 4 << 20);
    let tls = if tls { TLS_BUFFERS } else { 0 };
    (kernel + SENDER_BUFFERS + inbox * 64 * 1024 + tls) / FLOOD_PAYLOAD
}

const CLUSTER: &str = "conformance";

fn config() -> TcpConfig {
    TcpConfig::new(CLUSTER, random_key())
}

/// Every endpoint's settings: the cluster's, and under TLS a certificate of its own
/// from the cluster's authority.
#[derive(Clone)]
struct Settings {
    config: TcpConfig,
    ca: Option<Arc<Ca>>,
}

impl Settings {
    fn plain() -> Self {
        Settings {
            config: config(),
            ca: None,
        }
    }

    fn tls() -> Self {
        Settings {
            config: TcpConfig::new(CLUSTER, Vec::new()),
            ca: Some(Arc::new(Ca::new(CLUSTER).expect("a CA"))),
        }
    }

    fn of(&self, endpoint: Endpoint) -> Result<TcpConfig, TransportError> {
        let mut config = self.config.clone();
        if let Some(ca) = &self.ca {
            config.tls = Some(ca.issue(endpoint)?);
        }
        Ok(config)
    }
}

/// The synchronous transport.
struct Sync {
    settings: Settings,
}

impl Network for Sync {
    type Transport = TcpTransport<Probe>;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<Self::Transport, TransportError> {
        TcpTransport::new(endpoint, self.settings.of(endpoint)?)
    }

    fn max_frame(&self) -> Option<usize> {
        Some(DEFAULT_MAX_FRAME)
    }

    fn held_bound(&self) -> Option<usize> {
        Some(held_bound(0, self.settings.ca.is_some()))
    }
}

/// The asynchronous transport, every endpoint on one runtime.
struct Async {
    settings: Settings,
    runtime: Arc<Runtime>,
}

impl Async {
    fn new(settings: Settings) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Async {
            settings,
            runtime: Arc::new(runtime),
        }
    }
}

/// An [`AsyncTcpTransport`] whose calls block on the runtime until they are done.
struct Blocking {
    transport: Option<AsyncTcpTransport<Probe>>,
    runtime: Arc<Runtime>,
}

impl Blocking {
    fn call<T>(
        &mut self,
        call: impl AsyncFnOnce(&mut AsyncTcpTransport<Probe>) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let transport = self.transport.as_mut().ok_or(TransportError::Closed)?;
        self.runtime.block_on(call(transport))
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        // Inside the runtime, so that what it still holds is written out.
        let _inside = self.runtime.enter();
        drop(self.transport.take());
    }
}

impl Transport<Probe> for Blocking {
    fn local(&self) -> Endpoint {
        self.transport
            .as_ref()
            .map_or(Endpoint::Role(1), AsyncTransport::local)
    }
    fn address(&self) -> String {
        self.transport
            .as_ref()
            .map(AsyncTransport::address)
            .unwrap_or_default()
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.call(async |t| t.connect(peer, address).await)
    }
    fn send(&mut self, to: Endpoint, frame: Probe) -> Result<(), TransportError> {
        self.call(async |t| t.send(to, frame).await)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.call(async |t| t.flush().await)
    }
    fn recv(&mut self) -> Result<Incoming<Probe>, TransportError> {
        self.call(async |t| t.recv().await)
    }
    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        self.call(async |t| t.recv_timeout(timeout).await)
    }
}

impl Network for Async {
    type Transport = Blocking;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<Self::Transport, TransportError> {
        let config = self.settings.of(endpoint)?;
        let transport = self
            .runtime
            .block_on(AsyncTcpTransport::bind(endpoint, config))?;
        Ok(Blocking {
            transport: Some(transport),
            runtime: Arc::clone(&self.runtime),
        })
    }

    fn max_frame(&self) -> Option<usize> {
        Some(DEFAULT_MAX_FRAME)
    }

    fn held_bound(&self) -> Option<usize> {
        Some(held_bound(
            self.settings.config.inbox,
            self.settings.ca.is_some(),
        ))
    }
}

mod sync {
    snapshot_core::conformance_tests!(super::Sync {
        settings: super::Settings::plain()
    });
}

mod asynchronous {
    snapshot_core::conformance_tests!(super::Async::new(super::Settings::plain()));
}

mod sync_tls {
    snapshot_core::conformance_tests!(super::Sync {
        settings: super::Settings::tls()
    });
}

mod asynchronous_tls {
    snapshot_core::conformance_tests!(super::Async::new(super::Settings::tls()));
}
