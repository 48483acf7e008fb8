//! Moving frames between endpoints: the [`Transport`] contract.

use crate::Endpoint;
use std::time::Duration;
use thiserror::Error;

/// Why a transport could not do what it was asked.
///
/// A peer that goes away is not an error: receiving reports it as
/// [`Incoming::Departed`]. Only a send to a peer the transport already knows has gone
/// fails, with [`Disconnected`](Self::Disconnected).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint is not connected, or does not exist.
    #[error("no route to {0}")]
    UnknownEndpoint(Endpoint),
    /// A send to a peer that has departed.
    #[error("{0} is gone")]
    Disconnected(Endpoint),
    /// Every peer of this endpoint has departed: nothing can arrive until a new one
    /// comes.
    #[error("every peer has gone")]
    Closed,
    /// The endpoint is already taken by another transport of the same network.
    #[error("{0} has already joined")]
    AlreadyJoined(Endpoint),
    /// The transport was given settings it cannot work with.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An operating-system error while talking to a peer. Its message is the
    /// context alone: the operating system's error is its
    /// [source](std::error::Error::source), for whoever writes the chain.
    #[error("{context}")]
    Io {
        /// What was being done, and with whom.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A frame could not be encoded or decoded.
    #[error("bad frame ({context}): {reason}")]
    Codec {
        /// Where the frame came from or was going.
        context: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A frame is larger than the transport allows.
    #[error("frame of {size} bytes is over the {limit}-byte bound")]
    FrameTooLarge {
        /// The frame's size.
        size: usize,
        /// The transport's bound.
        limit: usize,
    },
    /// A peer broke the transport's own protocol (for example, failed to prove it
    /// belongs).
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// What receiving returns: a frame, or the news that a peer has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<F> {
    /// A frame, and who sent it.
    Frame(Endpoint, F),
    /// The peer has gone: it dropped its transport, its process ended, its connection
    /// broke, or it broke the transport's framing. Comes once per peer, after every
    /// frame that peer sent; nothing more comes from it, and sends to it fail with
    /// [`TransportError::Disconnected`].
    Departed(Endpoint),
}

impl<F> Incoming<F> {
    /// The endpoint this is about: the sender of a frame, or the peer that departed.
    pub fn peer(&self) -> Endpoint {
        match self {
            Incoming::Frame(from, _) | Incoming::Departed(from) => *from,
        }
    }

    /// The frame and its sender, if this is a frame.
    pub fn into_frame(self) -> Option<(Endpoint, F)> {
        match self {
            Incoming::Frame(from, frame) => Some((from, frame)),
            Incoming::Departed(_) => None,
        }
    }
}

/// Moves frames of type `F` between [`Endpoint`]s.
///
/// # The contract
///
/// Every implementation in this workspace keeps it, and
/// `snapshot_core::conformance` (feature `conformance`) checks it for any other.
///
/// - **Endpoints and peers.** Each endpoint has its own transport. Its *peers* are the
///   endpoints it has [connected](Self::connect) to and those whose frames it has
///   received.
/// - **Connecting.** Before two endpoints exchange frames, *each* calls
///   `connect(other, address)`, with the address the other's
///   [`address`](Self::address) returned, whichever way the frames will flow. Each
///   transport opens there what it needs for the pair (a FIFO to read, a connection
///   to write, a route), without waiting for the other side's `connect`. A transport
///   may refuse to connect to an endpoint that does not exist yet
///   ([`TransportError::UnknownEndpoint`], or an I/O error): create every endpoint
///   before connecting them. Connecting to a peer again does nothing, even after it
///   has departed.
/// - **Sending.** [`send`](Self::send) to an endpoint this one has not connected to
///   fails with [`TransportError::UnknownEndpoint`]. The first send to a peer may wait,
///   for a bounded time, for that peer's own `connect`.
/// - **FIFO per ordered pair.** Frames sent by `a` to `b` arrive at `b` in the order
///   `a` sent them; nothing is promised between different pairs.
/// - **No loss, no duplication** while both ends are alive.
/// - **Departures are events, not errors.** When a peer goes (drops its transport, its
///   process dies, its connection breaks, it sends what does not decode),
///   [`recv`](Self::recv) returns [`Incoming::Departed`] for it, once, after every
///   frame it sent. From then on sends to it fail with
///   [`TransportError::Disconnected`]; frames sent to it before the transport knew
///   are lost with it. [`flush`](Self::flush) does not report departures.
/// - **No peer left.** Once every peer has departed, and each departure has been
///   returned, `recv` and `recv_timeout` return [`TransportError::Closed`]: nothing
///   can arrive until a new peer comes (a later `connect`, or a peer connecting to
///   this one, where the medium allows it), and a later call returns what it sends.
///   Before an endpoint has any peer, they wait, as for any frame.
/// - **Flush before wait.** `send` may buffer; buffered frames leave on `flush`, and
///   `recv` and `recv_timeout` flush before they wait, so a request followed by
///   waiting for its reply never stalls on a buffer. That flush waits as `flush` does:
///   a peer that holds as much as the medium will and does not receive holds up
///   `recv_timeout` too, whatever its timeout, which bounds only the wait for
///   arrivals.
/// - **Bounded memory.** A transport buffers a bounded amount for an endpoint that
///   does not call it (each transport documents its bound and how to set it); once
///   that is full, sends to the endpoint wait. An endpoint waiting in `send` or
///   `flush` goes on taking in what is sent to it, so endpoints that keep receiving
///   while they send never deadlock, however much each sends; what it takes in while
///   it waits is held for its next `recv`.
///
/// The trait is dyn-compatible so that the medium can be picked at run time
/// (`Box<dyn Transport<F>>`).
pub trait Transport<F>: Send {
    /// The endpoint this transport sends from and receives for.
    fn local(&self) -> Endpoint;

    /// Where peers reach this endpoint: what they pass to [`connect`](Self::connect).
    fn address(&self) -> String;

    /// Makes `peer`, reachable at `address`, a peer of this endpoint: see the
    /// contract above.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError>;

    /// Connects to each of `peers` (endpoint and address), as [`connect`](Self::connect)
    /// does. A transport whose connections take a handshake may run them all at once
    /// (tcp does), which this default, one `connect` after the other, does not.
    ///
    /// Fails with the error of the first peer, in the order given, that could not be
    /// connected; those before it are connected, and those after it may be.
    fn connect_all(&mut self, peers: &[(Endpoint, &str)]) -> Result<(), TransportError> {
        for &(peer, address) in peers {
            self.connect(peer, address)?;
        }
        Ok(())
    }

    /// Queues `frame` for `to`. May wait while the medium holds as much for `to` as
    /// it will, taking in what arrives meanwhile.
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError>;

    /// Hands every queued frame to the medium. Frames for peers that have departed
    /// are dropped: their departure is reported by receiving.
    fn flush(&mut self) -> Result<(), TransportError>;

    /// Flushes, then waits for the next frame or departure.
    fn recv(&mut self) -> Result<Incoming<F>, TransportError>;

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`. A zero
    /// timeout takes what has already arrived and does not wait for more. The flush
    /// before it is not bounded by `timeout` (see "Flush before wait" above).
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<F>>, TransportError>;

    /// Why `peer` departed, when the transport knows more than that its stream ended:
    /// a read that failed (a TLS record that did not verify, say), a frame that did
    /// not decode. `None` for a peer that has not departed, that closed its end
    /// cleanly, or when the transport does not say (this default).
    fn departure_cause(&self, peer: Endpoint) -> Option<String> {
        let _ = peer;
        None
    }
}

impl<F, T: Transport<F> + ?Sized> Transport<F> for Box<T> {
    fn local(&self) -> Endpoint {
        (**self).local()
    }
    fn address(&self) -> String {
        (**self).address()
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        (**self).connect(peer, address)
    }
    fn connect_all(&mut self, peers: &[(Endpoint, &str)]) -> Result<(), TransportError> {
        (**self).connect_all(peers)
    }
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        (**self).send(to, frame)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        (**self).recv()
    }
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<F>>, TransportError> {
        (**self).recv_timeout(timeout)
    }
    fn departure_cause(&self, peer: Endpoint) -> Option<String> {
        (**self).departure_cause(peer)
    }
}
