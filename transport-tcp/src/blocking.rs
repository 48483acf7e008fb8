//! The synchronous form: an [`AsyncTcpTransport`] on a tokio runtime of its own.

use crate::{AsyncTcpTransport, TcpConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::{Endpoint, Transport, TransportError};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// How long dropping a [`TcpTransport`] waits for its writers to write what it was
/// sent before it gives up on them.
pub const LINGER: Duration = Duration::from_secs(5);

/// One endpoint talking TCP, for synchronous code: implements
/// [`snapshot_core::Transport`].
///
/// It owns two tokio runtimes:
///
/// - one with a worker thread of its own, which runs the listener, the handshakes and
///   the writers while the application does something else, so that peers can always
///   connect and flushed frames always leave;
/// - one driven by the calling thread, inside the calls that wait
///   ([`recv`](Transport::recv), a [`send`](Transport::send) or
///   [`flush`](Transport::flush) held back by a writer that is behind), which reads the
///   authenticated connections. A frame that arrives while the application sleeps in
///   `recv` therefore costs one wake-up (of that thread), not two (a reader's, then
///   the application's).
///
/// Connections are read only while the application is inside such a call: bytes that
/// arrive meanwhile wait in the socket, and a peer that sends more than the socket
/// holds waits for the application to receive (its own calls that wait go on reading
/// its connections, so two endpoints sending each other large volumes cannot
/// deadlock). Sends that need no waiting do not touch either runtime: they encode
/// into a buffer.
///
/// Its methods must not be called from within an asynchronous context (a tokio task):
/// they block, and tokio refuses that. Applications on tokio use
/// [`AsyncTcpTransport`] instead.
///
/// Dropping it flushes, closes its connections once their writers have written
/// everything (waiting up to [`LINGER`] for them), stops the runtimes and joins their
/// threads: nothing is left running.
///
/// See the [crate documentation](crate) for how it works and what it guarantees.
pub struct TcpTransport<F> {
    inner: AsyncTcpTransport<F>,
    /// The listener, handshakes and writers, on a thread of their own. Always there
    /// until the transport is dropped.
    runtime: Option<Runtime>,
    /// The readers, driven by the calling thread. Always there until the transport is
    /// dropped.
    readers: Option<Runtime>,
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
        let readers = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| TransportError::Io {
                context: format!("starting the readers' runtime of {local}"),
                source,
            })?;
        let inner = runtime.block_on(AsyncTcpTransport::bind_with_readers(
            local,
            config,
            Some(readers.handle().clone()),
        ))?;
        Ok(TcpTransport {
            inner,
            runtime: Some(runtime),
            readers: Some(readers),
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

    fn readers(&self) -> Result<&Runtime, TransportError> {
        self.readers.as_ref().ok_or(TransportError::Closed)
    }

    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<(Endpoint, F)>, TransportError> {
        self.flush_all()?;
        // Frames that have arrived are taken without entering the runtime.
        if let Some(item) = self.inner.try_next()? {
            return Ok(Some(item));
        }
        // With neither spin nor deadline, the runtime reads the sockets while it waits.
        if self.spin.is_zero() && deadline.is_none() {
            let readers = self.readers.as_ref().ok_or(TransportError::Closed)?;
            return readers.block_on(self.inner.next(None));
        }
        // Looks at the sockets without sleeping for a while (`spin`), and at least
        // long enough for what has already arrived to be read: two turns of the
        // readers' runtime, one to see the sockets ready and one to run their readers.
        // A zero timeout is answered from that alone, not by the runtime's timer,
        // whose resolution is a millisecond.
        let start = Instant::now();
        let spin = deadline.map_or(self.spin, |deadline| {
            self.spin.min(deadline.saturating_duration_since(start))
        });
        let readers = self.readers.as_ref().ok_or(TransportError::Closed)?;
        let inner = &mut self.inner;
        let spun = readers.block_on(async {
            let mut turns = 0;
            loop {
                tokio::task::yield_now().await;
                turns += 1;
                if let Some(item) = inner.try_next()? {
                    return Ok(Some(item));
                }
                if turns >= 2 && start.elapsed() >= spin {
                    return Ok::<_, TransportError>(None);
                }
            }
        })?;
        if spun.is_some() {
            return Ok(spun);
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Ok(None);
        }
        readers.block_on(self.inner.next(deadline))
    }

    fn flush_all(&mut self) -> Result<(), TransportError> {
        while let Some(stall) = self.inner.try_flush()? {
            // Waiting for a writer, the readers go on reading.
            self.readers()?.block_on(stall.wait());
        }
        Ok(())
    }
}

impl<F> Transport<F> for TcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        crate::AsyncTransport::local(&self.inner)
    }

    /// Queues `frame` for `to`, which must have been [connected](Self::connect)
    /// ([`TransportError::UnknownEndpoint`] otherwise). Frames are written in batches:
    /// when the buffer for `to` is full, and on flush. Fails with
    /// [`TransportError::Disconnected`] once the connection to `to` has broken, and
    /// with [`TransportError::FrameTooLarge`] for a frame over
    /// [`TcpConfig::max_frame`] (nothing is queued then, and the connection stays up).
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if let Some(stall) = self.inner.queue(to, &frame)? {
            self.readers()?.block_on(stall.wait());
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
        let readers = self.readers.take();
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking here would panic: let the runtimes go without waiting.
            runtime.shutdown_background();
            if let Some(readers) = readers {
                readers.shutdown_background();
            }
            return;
        }
        // The timer is made inside the runtime, which it needs.
        let finished =
            runtime.block_on(async { tokio::time::timeout(LINGER, self.inner.finish()).await });
        if let Ok(Err(error)) = finished {
            tracing::debug!(local = %self.inner.local_addr(), %error, "closing");
        }
        // Dropping the runtimes cancels what is left and joins their threads.
        drop(runtime);
        drop(readers);
    }
}
