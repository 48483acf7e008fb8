//! Moving frames between endpoints.

use crate::Endpoint;
use std::time::Duration;
use thiserror::Error;

/// Why a transport could not move a frame.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No route is known to the endpoint.
    #[error("no route to {0}")]
    UnknownEndpoint(Endpoint),
    /// The peer has gone away (closed its end, exited, or the connection broke).
    #[error("{0} is gone")]
    Disconnected(Endpoint),
    /// This endpoint's own receiving side is closed: nothing more can arrive.
    #[error("the transport is closed")]
    Closed,
    /// An operating-system error while talking to a peer.
    #[error("{context}: {source}")]
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

/// Moves frames of type `F` between [`Endpoint`]s.
///
/// Every implementation guarantees, and documents and tests:
///
/// - **FIFO per ordered pair**: frames sent by `a` to `b` arrive at `b` in the order
///   `a` sent them; nothing is promised between different pairs;
/// - **no loss, no duplication** while both ends are alive; a peer that goes away is
///   reported as [`TransportError::Disconnected`], never silently.
///
/// [`send`](Self::send) may buffer; buffered frames leave on
/// [`flush`](Self::flush), and `recv`/`recv_timeout` flush before they wait, so a
/// request followed by waiting for its reply never stalls on a buffer.
///
/// Flow control is the medium's. A `send` or `flush` may wait while the medium holds
/// as much for the peer as it will (a socket's or a pipe's buffer); while it waits, an
/// implementation goes on taking in the frames sent to its own endpoint, so endpoints
/// that send to each other at once cannot deadlock. An endpoint that stops receiving
/// altogether eventually holds up those that send to it, as a socket would.
///
/// The trait is object-safe so that the medium can be picked at run time
/// (`Box<dyn Transport<F>>`).
pub trait Transport<F>: Send {
    /// The endpoint this transport sends from and receives for.
    fn local(&self) -> Endpoint;

    /// Queues `frame` for `to`.
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError>;

    /// Hands every queued frame to the medium.
    fn flush(&mut self) -> Result<(), TransportError>;

    /// Waits for the next frame from any peer and says who sent it.
    fn recv(&mut self) -> Result<(Endpoint, F), TransportError>;

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`.
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(Endpoint, F)>, TransportError>;

    /// Makes `peer` reachable at `address` (as given by that peer's
    /// [`address`](Self::address)). Transports that find peers by themselves accept
    /// any address.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        let _ = (peer, address);
        Ok(())
    }

    /// Where peers can reach this endpoint, for transports that need to be told
    /// (see [`connect`](Self::connect)).
    fn address(&self) -> Option<String> {
        None
    }
}

impl<F, T: Transport<F> + ?Sized> Transport<F> for Box<T> {
    fn local(&self) -> Endpoint {
        (**self).local()
    }
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        (**self).send(to, frame)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        (**self).recv()
    }
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(Endpoint, F)>, TransportError> {
        (**self).recv_timeout(timeout)
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        (**self).connect(peer, address)
    }
    fn address(&self) -> Option<String> {
        (**self).address()
    }
}
