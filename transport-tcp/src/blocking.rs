//! The synchronous form: an endpoint's listener and writers on a tokio runtime of its
//! own, and its connections read by the calling thread itself.

use crate::TcpConfig;
use crate::connection::Readers;
use crate::direct::Reader;
use crate::outbound::{Outbound, Stall};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::stream::{Patience, Spin};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
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
/// deadlock; what they take in waits for `recv`). Sends that need no waiting do not touch the runtime: they encode into a
/// buffer, and a flush writes it to the socket from the calling thread when the
/// writer is idle.
///
/// Its methods must not be called from within an asynchronous context (a tokio task):
/// they block, and tokio refuses that. Applications on tokio use
/// [`AsyncTcpTransport`](crate::AsyncTcpTransport) instead.
///
/// Dropping it flushes, closes its connections once their writers have written
/// everything (waiting up to [`LINGER`] for them), stops the runtime and joins its
/// thread: nothing is left running.
///
/// See the [crate documentation](crate) for how it works and what it guarantees.
pub struct TcpTransport<F> {
    local: Endpoint,
    /// The listener and the outgoing connections.
    outbound: Outbound,
    /// The listener, handshakes and writers, on a thread of their own. Always there
    /// until the transport is dropped.
    runtime: Option<Runtime>,
    /// The authenticated connections, read by the calling thread, and the peers.
    reader: Reader<F>,
    /// The peer whose frame was handed out last: a flush writes to it first.
    last_from: Endpoint,
    spin: Spin,
}

impl<F> std::fmt::Debug for TcpTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("outbound", &self.outbound)
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
    /// Fails with [`TransportError::Config`] if the key is empty, and otherwise if
    /// the address cannot be bound or the runtime cannot start.
    pub fn new(local: Endpoint, config: TcpConfig) -> Result<Self, TransportError> {
        config.check()?;
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
        let reader = Reader::new(local, config.max_frame).map_err(|source| TransportError::Io {
            context: format!("starting the poll of {local}"),
            source,
        })?;
        let readers = Readers::<F>::Handover(Arc::clone(reader.handover()));
        let outbound = runtime.block_on(Outbound::start(local, config, readers))?;
        Ok(TcpTransport {
            local,
            outbound,
            runtime: Some(runtime),
            reader,
            last_from: local,
            spin: Spin::new(Duration::ZERO),
        })
    }
}

impl<F> TcpTransport<F> {
    /// The address the listener is bound to (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.outbound.address()
    }

    /// Polls for frames for up to `spin` before sleeping in `recv` and
    /// `recv_timeout`.
    ///
    /// On a machine where waking a sleeping thread is slow (a virtual machine whose
    /// idle cores halt), spinning answers a quick reply without a wake-up, at the
    /// price of a busy core while it lasts. Worth it for one endpoint that waits for
    /// round trips; on a machine with fewer cores than spinning threads it slows
    /// everything down. The default is no spinning.
    ///
    /// A spin that the frame outlasts turns spinning off until a wait ends within
    /// `spin` again (see [`Spin`]): an endpoint waiting through a long step (peers
    /// starting, connecting, taking a snapshot) leaves the core to them.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = Spin::new(spin);
    }

    /// Takes in the connections from this endpoint found broken: the peer has gone.
    /// Its departure is reported when its connection to this endpoint ends, after its
    /// last frame, or at once if it has none.
    fn take_lost(&mut self) {
        while let Some(peer) = self.outbound.next_lost() {
            if !self.reader.peers().has_departed(peer) && !self.outbound.admitted(peer) {
                self.reader.depart(peer);
            }
        }
    }
}

impl<F> TcpTransport<F>
where
    F: DeserializeOwned,
{
    /// The oldest arrival not handed out yet, if any.
    #[inline]
    fn pop(&mut self) -> Option<Incoming<F>> {
        let incoming = self.reader.pop()?;
        match &incoming {
            Incoming::Frame(from, _) => self.last_from = *from,
            Incoming::Departed(peer) => self.outbound.close_route(*peer),
        }
        Some(incoming)
    }

    /// What has arrived, without waiting: the frames already read, else one look at
    /// the connections. What [`next`](Self::next) does with a deadline already passed,
    /// without reading the clock, which a node draining a flood calls once a frame.
    fn next_now(&mut self) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all()?;
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        self.look_now()
    }

    /// [`next_now`](Self::next_now) once what had arrived is all handed out: takes
    /// in the broken connections, then one look at the connections.
    #[inline(never)]
    fn look_now(&mut self) -> Result<Option<Incoming<F>>, TransportError> {
        self.take_lost();
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        if self.reader.is_closed() {
            return Err(TransportError::Closed);
        }
        self.wait(Some(Duration::ZERO))?;
        self.take_lost();
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        if self.reader.is_closed() {
            return Err(TransportError::Closed);
        }
        Ok(None)
    }

    /// Waits for the next frame or departure until `deadline` (`None`: for ever),
    /// spinning first for up to [`spin`](Self::set_spin).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all()?;
        // What has already arrived is handed out before anything else is looked at.
        // A connection found broken meanwhile is taken in below, once these are out:
        // its peer's departure would come after them all the same.
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        let began = self.spin.begin();
        let patience = Patience::new(deadline, self.spin.next());
        let mut last = false;
        loop {
            self.take_lost();
            if let Some(incoming) = self.pop() {
                self.spin.ended(began);
                return Ok(Some(incoming));
            }
            if self.reader.is_closed() {
                return Err(TransportError::Closed);
            }
            if last {
                self.spin.ended(began);
                return Ok(None);
            }
            let look = patience.look();
            self.wait(look.timeout)?;
            last = look.last;
            if look.spinning {
                std::hint::spin_loop();
            }
        }
    }

    /// [`Reader::wait`], with errors as the transport reports them.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<(), TransportError> {
        self.reader
            .wait(timeout)
            .map_err(|source| TransportError::Io {
                context: format!("waiting on the connections of {}", self.local),
                source,
            })
    }

    /// Waits until the writer behind `stall` can take another batch, reading the
    /// connections meanwhile: a peer that is writing to us at the same time gets on,
    /// and then reads what we write. What is read waits for `recv`.
    fn wait_for_writer(&mut self, stall: Stall) -> Result<(), TransportError> {
        let runtime = self.runtime.as_ref().ok_or(TransportError::Closed)?;
        let handover = Arc::clone(self.reader.handover());
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
        while let Some(stall) = self.outbound.try_flush(self.last_from) {
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

    /// The listener's address, `ip:port`.
    fn address(&self) -> String {
        self.outbound.address().to_string()
    }

    /// Opens the one connection that carries frames from this endpoint to `peer`,
    /// listening at `address` (`ip:port`, or `host:port`), and runs the handshake on
    /// it; gives up after [`TcpConfig::hello_timeout`]. A peer that does not prove it
    /// knows the key, or that is another endpoint or another cluster, is refused with
    /// [`TransportError::Protocol`]. Connecting to a peer again does nothing, even if
    /// it has departed since.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        if self.reader.peers().has_departed(peer) {
            return Ok(());
        }
        let runtime = self.runtime.as_ref().ok_or(TransportError::Closed)?;
        // On the worker's runtime: the handshake of a peer connecting back to this
        // endpoint meanwhile (even this very endpoint) goes on there.
        runtime.block_on(self.outbound.open(peer, address))?;
        self.reader.add_peer(peer);
        Ok(())
    }

    /// Connects to each of `peers` as [`connect`](Self::connect) does, their
    /// connections and handshakes all at once: a node joining a cluster of N waits
    /// about one handshake, not N. Fails with the error of the first peer, in the
    /// order given, that could not be connected; the others are connected.
    fn connect_all(&mut self, peers: &[(Endpoint, &str)]) -> Result<(), TransportError> {
        let wanted: Vec<(Endpoint, &str)> = peers
            .iter()
            .copied()
            .filter(|&(peer, _)| !self.reader.peers().has_departed(peer))
            .collect();
        let runtime = self.runtime.as_ref().ok_or(TransportError::Closed)?;
        let opened = runtime.block_on(self.outbound.open_all(&wanted));
        for &(peer, _) in &wanted {
            if self.outbound.has_route(peer) {
                self.reader.add_peer(peer);
            }
        }
        opened
    }

    /// Queues `frame` for `to`, which must have been [connected](Self::connect)
    /// ([`TransportError::UnknownEndpoint`] otherwise). Frames are written in batches:
    /// when the buffer for `to` is full, and on flush; a full writer queue makes it
    /// wait, reading the connections meanwhile. Fails with
    /// [`TransportError::Disconnected`] once `to` has departed or its connection is
    /// known to have broken, and with [`TransportError::FrameTooLarge`] for a frame
    /// over [`TcpConfig::max_frame`] (nothing is queued then, and the connection
    /// stays up).
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if let Some(stall) = self.outbound.queue(to, &frame)? {
            self.wait_for_writer(stall)?;
        }
        Ok(())
    }

    /// Hands every buffered frame to the writers, waiting for those that are behind
    /// (and reading the connections meanwhile). Frames for a peer whose connection
    /// has broken are dropped: its departure is reported by receiving.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all()
    }

    /// Flushes, then waits for the next frame or departure. A peer departs when its
    /// connection to this endpoint ends (after every frame that came on it), or when
    /// the connection from this endpoint to it breaks and it has none to this
    /// endpoint. Once every peer has departed, and each departure has been returned,
    /// fails with [`TransportError::Closed`]. Before any peer, waits.
    fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        loop {
            // Without a deadline, `next` gives up only with an error.
            if let Some(incoming) = self.next(None)? {
                return Ok(incoming);
            }
        }
    }

    #[inline]
    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<F>>, TransportError> {
        if timeout.is_zero() {
            return self.next_now();
        }
        // A timeout too long to represent is no timeout.
        self.next(Instant::now().checked_add(timeout))
    }

    /// Why `peer`'s connection to this endpoint ended, if it did not simply end: a
    /// read that failed (under TLS, a record that did not verify: corrupted or
    /// tampered with on the way), a frame that did not decode.
    fn departure_cause(&self, peer: Endpoint) -> Option<String> {
        self.reader.departure_cause(peer).map(str::to_owned)
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
        let last_from = self.last_from;
        let finished = runtime.block_on(async {
            tokio::time::timeout(LINGER, self.outbound.finish(last_from)).await
        });
        if finished.is_err() {
            tracing::debug!(local = %self.local, "closing: the writers did not finish in time");
        }
        // Dropping the runtime cancels what is left and joins its thread.
        drop(runtime);
    }
}
