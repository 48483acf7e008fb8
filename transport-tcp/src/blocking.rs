//! The synchronous form: an [`AsyncTcpTransport`] on a tokio runtime of its own, whose
//! connections the calling thread reads itself.

use crate::asynchronous::Stall;
use crate::direct::{Arrival, Inbound};
use crate::{AsyncTcpTransport, TcpConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::{Endpoint, Patience, Transport, TransportError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// How long dropping a [`TcpTransport`] waits for its writers to write what it was
/// sent before it gives up on them.
pub const LINGER: Duration = Duration::from_secs(5);

/// One endpoint talking TCP, for synchronous code: implements
/// [`snapshot_core::Transport`].
///
/// Its I/O is shared between two threads:
///
/// - a tokio runtime on a worker thread of its own runs the listener, the handshakes
///   and the writers, so that peers can always connect, and flushed frames always
///   leave, while the application does something else. A connection that has proved
///   itself is handed to the calling thread.
/// - the calling thread reads the authenticated connections itself, with a `mio`
///   poll, inside the calls that wait ([`recv`](Transport::recv), and a
///   [`send`](Transport::send) or [`flush`](Transport::flush) held back by a writer
///   that is behind). A frame that arrives while the application sleeps in `recv`
///   therefore costs one wake-up of that thread and one read, with no scheduler or
///   task in between.
///
/// Connections are read only while the application is inside such a call: bytes that
/// arrive meanwhile wait in the socket, and a peer that sends more than the socket
/// holds waits for the application to receive (its own calls that wait go on reading
/// its connections, so two endpoints sending each other large volumes cannot
/// deadlock). Sends that need no waiting do not touch the runtime: they encode into a
/// buffer, and a flush writes it to the socket from the calling thread when the
/// writer is idle.
///
/// Its methods must not be called from within an asynchronous context (a tokio task):
/// they block, and tokio refuses that. Applications on tokio use
/// [`AsyncTcpTransport`] instead.
///
/// Dropping it flushes, closes its connections once their writers have written
/// everything (waiting up to [`LINGER`] for them), stops the runtime and joins its
/// thread: nothing is left running.
///
/// See the [crate documentation](crate) for how it works and what it guarantees.
pub struct TcpTransport<F> {
    local: Endpoint,
    inner: AsyncTcpTransport<F>,
    /// The listener, handshakes and writers, on a thread of their own. Always there
    /// until the transport is dropped.
    runtime: Option<Runtime>,
    /// The authenticated connections, read by the calling thread.
    inbound: Inbound<F>,
    spin: Duration,
}

impl<F> std::fmt::Debug for TcpTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F> TcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    /// The endpoint `local` of the cluster that `config` describes: starts its
    /// runtime, listens on `config.bind` and accepts peers that prove they belong.
    ///
    /// Fails if the key is empty, the address cannot be bound or the runtime cannot
    /// start.
    pub fn new(local: Endpoint, config: TcpConfig) -> Result<Self, TransportError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("snapshot-tcp")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| TransportError::Io {
                context: format!("starting the runtime of {local}"),
                source,
            })?;
        let inbound = Inbound::new(config.max_frame).map_err(|source| TransportError::Io {
            context: format!("starting the poll of {local}"),
            source,
        })?;
        let inner = runtime.block_on(AsyncTcpTransport::bind_with_handover(
            local,
            config,
            Some(Arc::clone(inbound.handover())),
        ))?;
        Ok(TcpTransport {
            local,
            inner,
            runtime: Some(runtime),
            inbound,
            spin: Duration::ZERO,
        })
    }
}

impl<F> TcpTransport<F> {
    /// The address the listener is bound to (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    /// Polls for frames for up to `spin` before sleeping in `recv` and
    /// `recv_timeout`.
    ///
    /// On a machine where waking a sleeping thread is slow (a virtual machine whose
    /// idle cores halt), spinning answers a quick reply without a wake-up, at the
    /// price of a busy core while it lasts. Worth it for one endpoint that waits for
    /// round trips; on a machine with fewer cores than spinning threads it slows
    /// everything down. The default is no spinning.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<F> TcpTransport<F>
where
    F: DeserializeOwned,
{
    /// Hands out `arrival`, or takes it in and says there is nothing to hand out.
    fn take(&mut self, arrival: Arrival<F>) -> Option<Result<(Endpoint, F), TransportError>> {
        match arrival {
            Arrival::Frame(from, frame) => {
                self.inner.received_from(from);
                Some(Ok((from, frame)))
            }
            Arrival::Ended(peer) => self
                .inner
                .ended(peer)
                .then_some(Err(TransportError::Disconnected(peer))),
        }
    }

    /// Waits for the next frame until `deadline` (`None`: for ever), spinning first
    /// for up to [`spin`](Self::set_spin).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<(Endpoint, F)>, TransportError> {
        self.flush_all()?;
        let patience = Patience::new(deadline, self.spin);
        loop {
            while let Some(arrival) = self.inbound.pop() {
                if let Some(result) = self.take(arrival) {
                    return result.map(Some);
                }
            }
            let look = patience.look();
            self.wait(look.timeout)?;
            if !self.inbound.has_arrivals() {
                if look.last {
                    return Ok(None);
                }
                if look.spinning {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// [`Inbound::wait`], with errors as the transport reports them.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.inbound
            .wait(timeout)
            .map_err(|source| TransportError::Io {
                context: format!("waiting on the connections of {}", self.local),
                source,
            })
    }

    /// Waits until the writer behind `stall` can take another batch, reading the
    /// connections meanwhile: a peer that is writing to us at the same time gets on,
    /// and then reads what we write.
    fn wait_for_writer(&mut self, stall: Stall) -> Result<(), TransportError> {
        let runtime = self.runtime.as_ref().ok_or(TransportError::Closed)?;
        let handover = Arc::clone(self.inbound.handover());
        handover.expect_writer();
        let notify = Arc::clone(&handover);
        runtime.spawn(async move {
            stall.wait().await;
            notify.writer_ready();
        });
        while !handover.is_writer_ready() {
            self.wait(None)?;
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), TransportError> {
        while let Some(stall) = self.inner.try_flush()? {
            self.wait_for_writer(stall)?;
        }
        Ok(())
    }
}

impl<F> Transport<F> for TcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        self.local
    }

    /// Queues `frame` for `to`, which must have been [connected](Self::connect)
    /// ([`TransportError::UnknownEndpoint`] otherwise). Frames are written in batches:
    /// when the buffer for `to` is full, and on flush. Fails with
    /// [`TransportError::Disconnected`] once the connection to `to` has broken, and
    /// with [`TransportError::FrameTooLarge`] for a frame over
    /// [`TcpConfig::max_frame`] (nothing is queued then, and the connection stays up).
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if let Some(stall) = self.inner.queue(to, &frame)? {
            self.wait_for_writer(stall)?;
        }
        Ok(())
    }

    /// Hands every buffered frame to the writers. If several peers have gone, the
    /// first is returned and the others by the following calls.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all()
    }

    /// Flushes, then waits for the next frame. When a connection from a peer ends
    /// (after all the frames that came on it), returns
    /// [`TransportError::Disconnected`] for that peer, once, and goes on with the
    /// others on the next call. Waits for ever if nobody sends anything: the listener
    /// may always accept a new peer.
    fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        match self.next(None)? {
            Some(item) => Ok(item),
            None => Err(TransportError::Closed),
        }
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(Endpoint, F)>, TransportError> {
        // A timeout too long to represent is no timeout.
        self.next(Instant::now().checked_add(timeout))
    }

    /// Opens the one connection that carries frames from this endpoint to `peer`,
    /// listening at `address` (`ip:port`, or `host:port`), and runs the handshake on
    /// it; gives up after [`TcpConfig::hello_timeout`]. A peer that does not prove it
    /// knows the key, or that is another endpoint or another cluster, is refused with
    /// [`TransportError::Protocol`]. Connecting to a peer again does nothing, even if
    /// it has gone since.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        let runtime = self.runtime.as_ref().ok_or(TransportError::Closed)?;
        // On the worker's runtime: the handshake of a peer connecting back to this
        // endpoint meanwhile (even this very endpoint) goes on there.
        runtime.block_on(self.inner.open(peer, address))
    }

    /// The listener's address, `ip:port`.
    fn address(&self) -> Option<String> {
        Some(self.inner.local_addr().to_string())
    }
}

impl<F> Drop for TcpTransport<F> {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would panic: let the runtime go without waiting.
            runtime.shutdown_background();
            return;
        }
        // The timer is made inside the runtime, which it needs.
        let finished =
            runtime.block_on(async { tokio::time::timeout(LINGER, self.inner.finish()).await });
        if let Ok(Err(error)) = finished {
            tracing::debug!(local = %self.inner.local_addr(), %error, "closing");
        }
        // Dropping the runtime cancels what is left and joins its thread.
        drop(runtime);
    }
}
