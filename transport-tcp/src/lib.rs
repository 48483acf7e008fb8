//! A [`Transport`] for `snapshot-core` over TCP: every endpoint is a process (or a
//! thread, or a task) of its own, on this host or another, and frames are
//! length-prefixed postcard ([`snapshot_core::codec`]) on connections that open with a
//! mutual, HMAC-authenticated handshake, or, optionally, that are TLS 1.3 with both
//! sides authenticated by certificates ([TLS](#tls)). [tokio] does the I/O.
//!
//! Two forms of the same endpoint:
//!
//! - [`TcpTransport`], for synchronous code: implements [`Transport`], and runs tokio
//!   partly on a thread of its own and partly on the caller's;
//! - [`AsyncTcpTransport`], for applications already on tokio: implements
//!   [`AsyncTransport`] (`snapshot-core`'s asynchronous twin of [`Transport`], feature
//!   `async`, re-exported here) on the application's runtime, so that many endpoints
//!   (a node each, driven by `Node::next_event_async`) share one runtime without a
//!   thread each: see `examples/tokio_snapshots.rs`.
//!
//! Both keep the [`Transport` contract](Transport#the-contract).
//!
//! ```
//! use snapshot_core::{Endpoint, Incoming, NodeId, Transport};
//! use transport_tcp::{TcpConfig, TcpTransport, random_key};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every endpoint of a cluster has the same cluster name and key.
//! let config = TcpConfig::new("demo", random_key());
//! let mut master = TcpTransport::<String>::new(Endpoint::Role(1), config.clone())?;
//! let mut node = TcpTransport::<String>::new(Endpoint::Node(NodeId(1)), config)?;
//! // Each side connects to the other, at the address it reports.
//! node.connect(Endpoint::Role(1), &master.address())?;
//! master.connect(node.local(), &node.address())?;
//!
//! node.send(Endpoint::Role(1), "hello".to_string())?;
//! node.flush()?;
//! assert_eq!(master.recv()?, Incoming::Frame(node.local(), "hello".to_string()));
//! // A peer that goes is news, after its last frame; then nobody is left.
//! drop(node);
//! assert_eq!(master.recv()?, Incoming::Departed(Endpoint::Node(NodeId(1))));
//! assert!(master.recv().is_err());
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - Every endpoint listens from the moment it is created, on [`TcpConfig::bind`]
//!   (`127.0.0.1` and a port the OS chooses, by default);
//!   [`address`](Transport::address) says where (`ip:port`).
//! - [`connect(peer, address)`](Transport::connect) opens **one** connection, which
//!   carries every frame from this endpoint to `peer` and nothing else. Frames from
//!   `peer` to this endpoint come on the connection `peer` opened to this endpoint's
//!   listener. So each endpoint connects to the peers it sends to (and, as the
//!   contract asks, to those it hears from).
//! - Every connection opens with a handshake in which each side proves it knows the
//!   cluster's shared key ([`TcpConfig::key`]): HMAC-SHA256 over both sides' fresh
//!   random nonces, the cluster name and both endpoints, checked in constant time.
//!   The client also learns that the server is the endpoint it meant to reach. A
//!   handshake message is at most 1 KiB.
//! - `send` encodes into a buffer per peer. A full buffer (64 KiB), or every buffer on
//!   [`flush`](Transport::flush), is written with one non-blocking `write` from the
//!   calling thread; what the socket does not take at once goes to that connection's
//!   writer task, which writes it (and the buffers queued behind it, joining small
//!   ones) as the socket drains. `recv` and `recv_timeout` flush first. A flush
//!   writes first to the peer whose frame was received last, which in request-reply
//!   traffic is the one waiting for an answer, then to the others in the order they
//!   were sent to ([`snapshot_core::stream::flush_order`]). `TCP_NODELAY` is set: the
//!   batching is ours. A sender faster than the network is held back: at most 8
//!   buffers wait for a writer task, and then `send` and `flush` wait.
//! - Incoming connections are read in two ways. [`AsyncTcpTransport`] has a reader
//!   task per connection, on the application's runtime, which decodes what comes into
//!   the endpoint's bounded inbox whatever the application is doing.
//!   [`TcpTransport`] hands each connection, once it has proved itself, from its
//!   worker thread to the calling thread, which reads it with a `mio` poll inside the
//!   calls that wait (`recv`, and a `send` or `flush` waiting for a writer), through
//!   `snapshot-core`'s [`Inbound`](snapshot_core::stream::Inbound): a frame costs one
//!   wake-up of that thread and one read, with no task or scheduler in between (see
//!   [Latency](#latency)), and bytes that come meanwhile wait in the socket. Either
//!   way, an endpoint waiting to send goes on reading, and keeps what it reads for
//!   `recv`, so two endpoints sending each other large volumes cannot deadlock.
//!
//! # Guarantees
//!
//! As the [`Transport` contract](Transport#the-contract) asks:
//!
//! - **FIFO per ordered pair**: one connection per ordered pair and one reader on
//!   it; its bytes are written in order, by the sending thread while nothing waits
//!   for the writer task and by the writer task alone while something does, so frames
//!   from `a` to `b` arrive in the order `a` sent them.
//! - **No loss, no duplication** while both ends are alive.
//! - **Departures are events.** A peer that goes away is reported by `recv` as
//!   [`Incoming::Departed`], **once**, and never before a frame of its own:
//!   - when the connection from the peer ends (the peer dropped its transport,
//!     exited, was killed, or sent a bad frame), after every frame that came on it;
//!   - when the connection to the peer breaks (a write fails, or its writer task sees
//!     the peer close its end): at once if the peer has no connection to this
//!     endpoint, and otherwise when that connection ends, after its last frame.
//!     Frames written just before it broke are lost with it.
//!
//!   From then on the pair is closed both ways: this endpoint closes its connection
//!   to the peer, sends to it fail at once with [`TransportError::Disconnected`]
//!   (so do sends after its connection is known to have broken), and `recv` goes on
//!   with the others. [`flush`](Transport::flush) never reports a departure: frames
//!   for such a peer are dropped.
//! - **No peer left**: once every peer (those connected to, and those that connected
//!   to this endpoint) has departed and each departure has been returned, `recv`
//!   returns [`TransportError::Closed`]; before any peer, it waits. A peer that has
//!   gone stays gone: connecting to it again does nothing, and a new connection
//!   claiming to be it is refused.
//!
//! # Bounded memory
//!
//! What an endpoint that does not call its transport can be made to hold, per peer
//! sending to it, is bounded:
//!
//! - the kernel's socket buffers, at both ends of the peer's connection;
//! - the peer's own queue for that connection: its 64 KiB encoding buffer and at most
//!   8 batches of about 64 KiB waiting for its writer task (beyond that the peer's
//!   `send` waits);
//! - for [`AsyncTcpTransport`] only, its inbox: at most [`TcpConfig::inbox`] batches
//!   of decoded frames for all peers together (64 by default, each from one read of
//!   at most 64 KiB, or one frame when a frame is larger), plus the one batch each
//!   reader task holds while it waits for room. Its readers stop reading their
//!   sockets while the inbox is full.
//!
//! [`TcpTransport`] reads its sockets only inside its own calls, so it holds nothing
//! beyond the socket buffers for an application that does not call it. Either form,
//! waiting in `send` or `flush`, takes in whatever its peers send meanwhile and keeps
//! it for `recv`, as the contract asks: that is what keeps two endpoints flooding
//! each other from deadlocking.
//!
//! # Strangers and garbage
//!
//! Each accepted connection runs its handshake in a task of its own, so that nothing
//! a stranger does delays anyone else, within two bounds:
//!
//! - **The handshake deadline.** A connection has [`TcpConfig::hello_timeout`] (5 s
//!   by default) from the moment it is accepted to prove itself; one that sends
//!   nothing, or trickles its hello, is closed then. The same deadline bounds a
//!   [`connect`](Transport::connect) on the other side.
//! - **The handshake cap.** At most [`TcpConfig::max_handshakes`]
//!   ([`DEFAULT_MAX_HANDSHAKES`], 64) handshakes are in progress per listener. A
//!   connection that arrives when that many are closes the one that has been in
//!   progress longest. So connections that never prove themselves hold at most that
//!   many sockets (and file descriptors) at a time, however many come, and a peer
//!   that proves itself at once (a round trip) gets in whatever came before it,
//!   rather than waiting for their deadline.
//!
//! A connection is refused, that is closed, with a `tracing::warn!` line "refused a
//! connection" naming the endpoint (`local`), the stranger's address (`remote`) and
//! the reason, if before the end of its handshake:
//!
//! - its first bytes are not this protocol's: the hello's length is believed only
//!   once the magic that opens the hello has been checked (byte by byte, as it comes),
//!   and the reason is "the peer does not speak the snapshot-rs protocol (it sent
//!   "…")", with the first bytes it sent (up to 32), escaped;
//! - it announces a handshake message over 1 KiB, or sends one that does not decode,
//!   or a hello of another version;
//! - it names another cluster ("a hello for cluster …") or another endpoint;
//! - it fails to prove it knows the key (its MAC does not verify);
//! - it claims the name of an endpoint that has connected before, connected still or
//!   gone ("… is already connected, or has been and gone");
//! - it has not completed the handshake by the deadline ("no handshake in time");
//! - the listener needs its place for a newer connection ("too many handshakes in
//!   progress").
//!
//! That is one line per connection refused. The connecting side checks the same way:
//! [`connect`](Transport::connect) fails with [`TransportError::Protocol`] if the
//! server does not prove it knows the key, is another endpoint, or does not speak the
//! protocol (a web server answering "HTTP/1.1 400 …" is named as such, with what it
//! sent, since every message a server sends has a known size that its length prefix
//! is checked against). After the handshake, a frame that does not decode or
//! announces more than [`TcpConfig::max_frame`] closes the connection (logged), and
//! the peer departs.
//!
//! Without TLS, the handshake authenticates membership, not identity: any holder of
//! the key can claim to be any endpoint, and frames after the handshake are neither
//! encrypted nor authenticated. On a network where others can read or tamper with TCP
//! streams, use [TLS](#tls) (or run inside a tunnel).
//!
//! # TLS
//!
//! With a [`TlsIdentity`] in [`TcpConfig::tls`], every connection is TLS 1.3 (rustls,
//! with *ring*'s cryptography), both sides authenticated by certificates, and
//! everything after the TLS handshake, the hello included, is encrypted and
//! authenticated. Every endpoint of the cluster must have one: an endpoint with TLS
//! refuses peers without, and the other way round.
//!
//! **Configuring.** A cluster has a certificate authority (CA); each endpoint has a
//! certificate signed by it, and the matching private key. A certificate names its
//! endpoint and cluster as a DNS subject alternative name ([`tls_name`]):
//! `node-<id>.<cluster>` for a node, `master.<cluster>` for `Endpoint::Role(0)`,
//! `role-<n>.<cluster>` for the other roles; so under TLS the cluster's name must be a
//! DNS name (letters, digits, hyphens and dots). The certificate must allow both
//! server and client authentication (or not restrict its use), since each endpoint
//! accepts connections and opens them. [`TlsIdentity::from_pem_files`] reads the CA's
//! certificate, the endpoint's certificate chain and its key from PEM files; with
//! the feature `certs`, `Ca` makes a CA and its endpoints' identities in memory
//! (`Ca::new(cluster)`, `ca.issue(endpoint)`), and writes them as PEM
//! (`ca.to_pem()`, `identity.to_pem()`).
//!
//! ```
//! # #[cfg(feature = "certs")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use snapshot_core::{Endpoint, Incoming, NodeId, Transport};
//! use transport_tcp::{Ca, TcpConfig, TcpTransport};
//!
//! let ca = Ca::new("demo")?;
//! let config = |endpoint| -> Result<TcpConfig, Box<dyn std::error::Error>> {
//!     Ok(TcpConfig {
//!         tls: Some(ca.issue(endpoint)?),
//!         // No key: under TLS, the certificates prove who belongs.
//!         ..TcpConfig::new("demo", Vec::new())
//!     })
//! };
//! let (master, node) = (Endpoint::Role(0), Endpoint::Node(NodeId(1)));
//! let mut master = TcpTransport::<String>::new(master, config(master)?)?;
//! let mut node = TcpTransport::<String>::new(node, config(node)?)?;
//! node.connect(master.local(), &master.address())?;
//! master.connect(node.local(), &node.address())?;
//! node.send(master.local(), "over TLS".to_string())?;
//! node.flush()?;
//! assert_eq!(master.recv()?, Incoming::Frame(node.local(), "over TLS".to_string()));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "certs"))]
//! # fn main() {}
//! ```
//!
//! **What is checked.** When an endpoint is created, its own certificate: it must
//! chain to the CA, be valid now, allow both uses and name the endpoint, or creation
//! fails with [`TransportError::Config`]. On every connection, both ways:
//!
//! - the server's certificate chains to the CA, is valid now, and names the endpoint
//!   the client meant to reach (rustls's check of the server name, with the name of
//!   the peer given to [`connect`](Transport::connect));
//! - the client's certificate chains to the CA and is valid now (rustls, which
//!   requires a client certificate); then the client's hello, inside the TLS stream,
//!   says which endpoint it is, and the server checks that the certificate names that
//!   endpoint of its cluster. The hello's other checks stay (cluster, endpoint, a peer
//!   that has connected before);
//! - every record after the handshake decrypts and verifies.
//!
//! The HMAC challenge of the plain handshake is left out under TLS: the certificates
//! prove more (membership, and which endpoint each side is) and the TLS keys protect
//! everything after, so the cluster key is not used, and may be empty.
//!
//! **What is refused**, each with a "refused a connection" warning naming the reason,
//! and with no effect on the other connections:
//!
//! - a peer that presents no certificate ("peer sent no certificates"), one that does
//!   not chain to the CA ("invalid peer certificate: UnknownIssuer", or
//!   "BadSignature" for another CA of the same name), or has expired ("certificate
//!   expired: …");
//! - a peer whose valid certificate names another endpoint than the one its hello
//!   claims ("the peer claims to be node 3, but its certificate names
//!   node-2.cluster, not node-3.cluster");
//! - a peer that speaks plain text: the plain hello is named as such ("the peer
//!   speaks plain text (a snapshot-rs hello without TLS), and this endpoint requires
//!   TLS"), and answered with a TLS alert, which the plain client reports ("the peer
//!   speaks TLS"); other bytes are refused as for a plain endpoint ("does not speak
//!   the snapshot-rs protocol"). The other way round, an endpoint without TLS refuses
//!   a TLS client ("the peer speaks TLS (it sent "\x16\x03…"), and this endpoint is
//!   configured without TLS") and answers it with a `protocol_version` alert, which
//!   the client reports ("the server does not speak TLS 1.3").
//!
//! The connecting side refuses a server whose certificate fails the same checks,
//! failing [`connect`](Transport::connect) with [`TransportError::Protocol`] and
//! rustls's reason (for instance "certificate not valid for name
//! "node-5.cluster"…" when the address given is another endpoint's). The TLS
//! handshake is part of the handshake that the [deadline](#strangers-and-garbage)
//! and the cap bound: a peer that stalls in it holds a place for at most
//! [`TcpConfig::hello_timeout`], and delays nobody else.
//!
//! After the handshake, a record that does not verify (a stream corrupted or tampered
//! with on the way) closes the connection, with a warning "the peer's TLS records do
//! not verify (corrupted or tampered with on the way); dropping it": the frames
//! before it are delivered, none after, and the peer departs, as for a bad frame. A
//! connection that ends without a TLS `close_notify` is an end like any other (a peer
//! that exits sends none); the endpoints send one when they close a connection
//! cleanly.
//!
//! **The cost.** Each connection's handshake costs a TLS 1.3 handshake with two
//! certificate checks (ECDSA P-256 with `Ca`'s certificates) on top of the hello's
//! round trip. After it, the sending side encrypts each batch where it is made (the
//! thread that flushes, for [`TcpTransport`]) and the receiving side decrypts where
//! it reads, with AES-GCM or ChaCha20-Poly1305: the same batching, wake-ups and
//! writes as without TLS. Without TLS nothing of this runs; the plain paths are the
//! same as before. `examples/tls_throughput.rs` measures both.
//!
//! # Latency
//!
//! A reply that comes back while [`TcpTransport::recv`] sleeps costs the operating
//! system's wake-up of the calling thread (which reads the socket itself), and on a
//! virtual machine whose idle cores halt that can be most of a round trip.
//! [`TcpTransport::set_spin`] makes `recv` poll the sockets for a while before it
//! sleeps, at the price of a busy core while it spins. `examples/tcp_throughput.rs`
//! measures both; the figures for this machine are in `BENCHMARKS.md`.
//!
//! # Cleaning up
//!
//! Dropping a [`TcpTransport`] flushes, lets its writers finish (up to [`LINGER`]),
//! closes every connection and the listener, stops its runtime and joins its thread.
//! Dropping an [`AsyncTcpTransport`] stops its listener and readers at once and lets
//! its writers finish in the background; [`AsyncTcpTransport::close`] waits for them.
//!
//! # Platform
//!
//! Written and tested for Linux; it relies on nothing Linux-only: tokio and `mio` do
//! the polling, and writes go through a duplicate of each socket's descriptor
//! (`std::os::fd` on Unix, `std::os::windows` on Windows), which is all the platform
//! code there is.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod asynchronous;
mod blocking;
#[cfg(feature = "certs")]
mod certs;
mod config;
mod connection;
mod direct;
mod handshake;
mod outbound;
mod tls;

pub use asynchronous::AsyncTcpTransport;
pub use blocking::{LINGER, TcpTransport};
#[cfg(feature = "certs")]
pub use certs::{CERT_VALIDITY, Ca, CaPem, TlsPem};
pub use config::{
    DEFAULT_HELLO_TIMEOUT, DEFAULT_INBOX, DEFAULT_MAX_HANDSHAKES, MAX_INBOX, TcpConfig, random_key,
};
/// The DER types of [`TlsIdentity`]'s certificates and key, from `rustls-pki-types`.
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
/// The asynchronous transport trait, from `snapshot-core` (feature `async`), which
/// [`AsyncTcpTransport`] implements; re-exported for those who named it here before
/// it moved there.
pub use snapshot_core::AsyncTransport;
pub use tls::{TlsIdentity, tls_name};

use snapshot_core::Endpoint;
#[cfg(doc)]
use snapshot_core::{Incoming, Transport, TransportError};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// What an endpoint's tasks share.
pub(crate) struct Shared {
    local: Endpoint,
    cluster: String,
    key: Vec<u8>,
    max_frame: usize,
    hello_timeout: Duration,
    /// How many handshakes the listener runs at once.
    max_handshakes: usize,
    /// The peers admitted on a connection to this endpoint, gone or not, and those
    /// that have departed: each may connect once, and none once it has departed.
    incoming: Mutex<HashSet<Endpoint>>,
    /// The TLS configurations, if this endpoint speaks TLS.
    tls: Option<tls::Tls>,
    /// Where writer tasks report a peer whose connection broke.
    lost: mpsc::UnboundedSender<Endpoint>,
    /// The thread that reads the connections, for the synchronous form: woken when a
    /// writer reports.
    wake: Option<Arc<direct::Handover>>,
}

impl Shared {
    /// Admits `peer` on a connection to this endpoint, unless it has been before or
    /// has departed.
    fn admit(&self, peer: Endpoint) -> bool {
        self.incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer)
    }

    /// Whether `peer` has been admitted on a connection to this endpoint (or has
    /// departed).
    fn admitted(&self, peer: Endpoint) -> bool {
        self.incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&peer)
    }

    /// A writer task's news that the connection to `peer` has broken.
    fn writer_lost(&self, peer: Endpoint) {
        let _ = self.lost.send(peer);
        if let Some(handover) = &self.wake {
            handover.wake();
        }
    }
}
