//! Moving frames between endpoints.

use crate::Endpoint;
use std::time::{Duration, Instant};
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

/// How long a transport's receive waits at each look, for those who write a
/// [`Transport`]: polls without sleeping for a while (the spin), then sleeps until a
/// deadline, if there is one, or for ever.
///
/// Make one per call to `recv` or `recv_timeout`, and ask it before each wait:
///
/// ```
/// use snapshot_core::Patience;
/// use std::time::{Duration, Instant};
///
/// let patience = Patience::new(Some(Instant::now()), Duration::ZERO);
/// // A deadline already passed: one last look that does not wait.
/// let look = patience.look();
/// assert_eq!((look.timeout, look.last), (Some(Duration::ZERO), true));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    deadline: Option<Instant>,
    /// `Some(None)`: a spin too long to represent, which never ends.
    spin_until: Option<Option<Instant>>,
}

/// What to do at one look: see [`Patience::look`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// How long to wait for something to arrive: `None` for ever, zero not at all.
    pub timeout: Option<Duration>,
    /// The deadline has passed: if this look finds nothing, give up.
    pub last: bool,
    /// Still spinning: if this look finds nothing, look again at once (after
    /// [`std::hint::spin_loop`]).
    pub spinning: bool,
}

impl Patience {
    /// Until `deadline` (`None`: for ever), spinning for `spin` first.
    pub fn new(deadline: Option<Instant>, spin: Duration) -> Self {
        Patience {
            deadline,
            spin_until: (!spin.is_zero()).then(|| Instant::now().checked_add(spin)),
        }
    }

    /// What the next wait should be. Reads the clock only if there is a deadline or a
    /// spin.
    pub fn look(&self) -> Look {
        let now = (self.deadline.is_some() || self.spin_until.is_some()).then(Instant::now);
        let spinning = self
            .spin_until
            .is_some_and(|until| until.is_none_or(|until| now.is_some_and(|now| now < until)));
        let (timeout, last) = match (self.deadline, now) {
            // One last look, then give up.
            (Some(deadline), Some(now)) if now >= deadline => (Some(Duration::ZERO), true),
            _ if spinning => (Some(Duration::ZERO), false),
            (Some(deadline), Some(now)) => (Some(deadline - now), false),
            _ => (None, false),
        };
        Look {
            timeout,
            last,
            spinning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_deadline_or_spin_a_look_waits_for_ever() {
        let look = Patience::new(None, Duration::ZERO).look();
        assert_eq!(
            look,
            Look {
                timeout: None,
                last: false,
                spinning: false
            }
        );
    }

    #[test]
    fn a_spin_polls_first_and_a_deadline_bounds_the_wait() {
        let far = Instant::now() + Duration::from_secs(3600);
        let look = Patience::new(Some(far), Duration::from_secs(60)).look();
        assert_eq!(
            (look.timeout, look.last, look.spinning),
            (Some(Duration::ZERO), false, true)
        );
        let look = Patience::new(Some(far), Duration::ZERO).look();
        assert!(!look.last && !look.spinning);
        assert!(look.timeout.is_some_and(|t| t > Duration::from_secs(3500)));
        // A spin too long to represent never ends; without a deadline it never gives up.
        let look = Patience::new(None, Duration::MAX).look();
        assert_eq!(
            (look.timeout, look.last, look.spinning),
            (Some(Duration::ZERO), false, true)
        );
    }

    #[test]
    fn a_passed_deadline_gives_one_last_look_even_while_spinning() {
        let patience = Patience::new(Some(Instant::now()), Duration::from_secs(60));
        let look = patience.look();
        assert_eq!((look.timeout, look.last), (Some(Duration::ZERO), true));
    }
}
