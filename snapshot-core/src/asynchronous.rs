//! Moving frames between endpoints from asynchronous code: [`AsyncTransport`], the
//! twin of [`Transport`](crate::Transport).

use crate::{Endpoint, Incoming, TransportError};
use async_trait::async_trait;
use std::time::Duration;

/// Moves frames of type `F` between [`Endpoint`]s, for applications on an
/// asynchronous runtime: the twin of [`Transport`](crate::Transport), method for
/// method, under **the same contract** (see [its documentation](crate::Transport#the-contract)):
/// each side connects to the other before traffic, FIFO per ordered pair, no loss and
/// no duplication while both ends are alive, departures reported by receiving as
/// [`Incoming::Departed`] once per peer after its last frame,
/// [`TransportError::Closed`] once every peer has departed, bounded memory, and an
/// endpoint waiting in `send` or `flush` goes on taking in what is sent to it.
///
/// Where the sync methods block, these wait without holding a thread, so that one
/// runtime runs many endpoints. The trait says nothing of the runtime: an
/// implementation brings its own (and says which).
///
/// Implementations should make `recv` and `recv_timeout` cancel-safe (a receive
/// dropped before it completes has taken nothing), and say whether `send` is (a send
/// dropped while it waits has queued its frame, or not), so that they can be raced
/// with other futures.
///
/// It is dyn-compatible, as the sync trait is: `Box<dyn AsyncTransport<F>>` picks the
/// medium at run time.
#[async_trait]
pub trait AsyncTransport<F: Send + 'static>: Send {
    /// The endpoint this transport sends from and receives for.
    fn local(&self) -> Endpoint;

    /// Where peers reach this endpoint: what they pass to [`connect`](Self::connect).
    fn address(&self) -> String;

    /// Makes `peer`, reachable at `address`, a peer of this endpoint: see
    /// [`Transport::connect`](crate::Transport::connect).
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError>;

    /// Queues `frame` for `to`. May wait while the medium holds as much for `to` as
    /// it will, taking in what arrives meanwhile.
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError>;

    /// Hands every queued frame to the medium. Frames for peers that have departed
    /// are dropped: their departure is reported by receiving.
    async fn flush(&mut self) -> Result<(), TransportError>;

    /// Flushes, then waits for the next frame or departure.
    async fn recv(&mut self) -> Result<Incoming<F>, TransportError>;

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`. A zero
    /// timeout takes what has already arrived and does not wait.
    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<F>>, TransportError>;
}

#[async_trait]
impl<F: Send + 'static, T: AsyncTransport<F> + ?Sized> AsyncTransport<F> for Box<T> {
    fn local(&self) -> Endpoint {
        (**self).local()
    }
    fn address(&self) -> String {
        (**self).address()
    }
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        (**self).connect(peer, address).await
    }
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        (**self).send(to, frame).await
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush().await
    }
    async fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        (**self).recv().await
    }
    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<F>>, TransportError> {
        (**self).recv_timeout(timeout).await
    }
}
