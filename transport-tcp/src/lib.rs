//! A [`Transport`] for `snapshot-core` over TCP: every endpoint is a process (or a
//! thread) of its own, on this host or another, and frames are length-prefixed
//! postcard ([`snapshot_core::codec`]) on connections that open with a mutual,
//! HMAC-authenticated handshake. [tokio] does the I/O.
//!
//! Two forms of the same endpoint:
//!
//! - [`TcpTransport`], for synchronous code: implements [`Transport`], and runs tokio
//!   partly on a thread of its own and partly on the caller's;
//! - [`AsyncTcpTransport`], for applications already on tokio: implements the
//!   [`AsyncTransport`] trait (the asynchronous twin of [`Transport`]) on the
//!   application's runtime.
//!
//! ```
//! use snapshot_core::{Endpoint, NodeId, Transport};
//! use transport_tcp::{TcpConfig, TcpTransport, random_key};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Every endpoint of a cluster has the same cluster name and key.
//! let config = TcpConfig::new("demo", random_key());
//! let mut master = TcpTransport::<String>::new(Endpoint::Master, config.clone())?;
//! let mut node = TcpTransport::<String>::new(Endpoint::Node(NodeId(1)), config)?;
//! // Each endpoint connects to those it sends to, at the address they report.
//! node.connect(Endpoint::Master, &master.address().unwrap_or_default())?;
//!
//! node.send(Endpoint::Master, "hello".to_string())?;
//! node.flush()?;
//! assert_eq!(master.recv()?, (node.local(), "hello".to_string()));
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
//!   listener. So each endpoint connects to the peers it sends to; one that only
//!   receives needs to connect to nobody.
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
//!   were sent to. `TCP_NODELAY`
//!   is set: the batching is ours. A sender faster than the network is held back: at
//!   most 8 buffers wait for a writer task.
//! - Incoming connections are read in two ways. [`AsyncTcpTransport`] has a reader
//!   task per connection, on the application's runtime, which drains it into the
//!   endpoint's inbox whatever the application is doing. [`TcpTransport`] hands each
//!   connection, once it has proved itself, from its worker thread to the calling
//!   thread, which reads it with a `mio` poll inside the calls that wait (`recv`, and
//!   a `send` or `flush` waiting for a writer): a frame costs one wake-up of that
//!   thread and one read, with no task or scheduler in between (see
//!   [Latency](#latency)), and bytes that come meanwhile wait in the socket. Either
//!   way, an endpoint waiting to send goes on reading, so two endpoints sending each
//!   other large volumes cannot deadlock; one that does not receive at all holds its
//!   senders back once the sockets are full, as the [`Transport`] contract allows.
//!
//! # Guarantees
//!
//! As [`Transport`] asks:
//!
//! - **FIFO per ordered pair**: one connection per ordered pair and one reader on
//!   it; its bytes are written in order, by the sending thread while nothing waits
//!   for the writer task and by the writer task alone while something does, so frames
//!   from `a` to `b` arrive in the order `a` sent them.
//! - **No loss, no duplication** while both ends are alive. A peer that goes away is
//!   reported as [`TransportError::Disconnected`], never silently, and **once**, by
//!   the first call that notices it. After that the pair is closed both ways as far as
//!   this endpoint is concerned: sends to the peer fail at once with `Disconnected`,
//!   and `recv` goes on with the other peers. What notices it:
//!   - `recv`, once the connection from the peer has ended (the peer dropped its
//!     transport, exited, was killed, or sent a bad frame), after every frame that
//!     came on it;
//!   - `send` or `flush` to a peer whose connection has broken: a write has failed,
//!     or the writer task has seen the peer close its end. Frames written just
//!     before it broke are lost with it.
//! - A peer that has gone stays gone for this endpoint: connecting to it again does
//!   nothing, and a new connection claiming to be it is refused.
//!
//! # Strangers and garbage
//!
//! Each accepted connection is handled by a task of its own, so that nothing a
//! stranger does delays anyone else. A connection is closed, and the reason logged
//! with `tracing::warn!`, if before the end of its handshake it sends anything but a
//! well-formed handshake, a message over 1 KiB, a MAC that does not verify, the name
//! of another cluster or of another endpoint, or nothing at all for
//! [`TcpConfig::hello_timeout`] (5 s by default). An endpoint that connects twice is
//! refused the second time. After the handshake, a frame that does not decode or
//! announces more than [`TcpConfig::max_frame`] closes the connection (logged), and
//! the peer is reported as gone.
//!
//! The handshake authenticates membership, not identity: any holder of the key can
//! claim to be any endpoint. Frames after the handshake are neither encrypted nor
//! authenticated: on a network where others can tamper with TCP streams, run it
//! inside a tunnel.
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

mod asynchronous;
mod blocking;
mod config;
mod connection;
mod direct;
mod handshake;

pub use asynchronous::{AsyncTcpTransport, AsyncTransport};
pub use blocking::{LINGER, TcpTransport};
pub use config::{DEFAULT_HELLO_TIMEOUT, TcpConfig, random_key};

use snapshot_core::Endpoint;
#[cfg(doc)]
use snapshot_core::{Transport, TransportError};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// What an endpoint's tasks share.
pub(crate) struct Shared {
    local: Endpoint,
    cluster: String,
    key: Vec<u8>,
    max_frame: usize,
    hello_timeout: Duration,
    /// The peers that have connected to this endpoint, gone or not: each may connect
    /// once.
    incoming: Mutex<HashSet<Endpoint>>,
    /// Where authenticated connections are read: by a task on the runtime the
    /// endpoint was bound on when `None`, by the thread behind this handover otherwise.
    handover: Option<std::sync::Arc<direct::Handover>>,
}
