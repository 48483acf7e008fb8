//! What both forms of an endpoint share: its listener, and its connections to the
//! peers it sends to, with their buffers and writer tasks.

use crate::connection::{self, Readers};
use crate::handshake::{self, HandshakeError};
use crate::tls::{self, Sealer, Tls};
use crate::{Shared, TcpConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::codec;
use snapshot_core::stream::{EndpointMap, flush_order};
use snapshot_core::{Endpoint, TransportError};
use std::collections::HashSet;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A peer's buffer is handed to its writer once it holds this many bytes, and on
/// flush.
pub(crate) const BATCH: usize = 64 * 1024;

/// How many batches may wait for a writer before senders wait for it: the
/// back-pressure that keeps a sender faster than the network from filling memory.
pub(crate) const QUEUE: usize = 8;

/// The sending side of an ordered pair, as far as this endpoint knows.
enum Route {
    /// The connection is up: frames are encoded into `buffer`, and whole buffers go
    /// to the writer task through `batches`.
    Open {
        batches: mpsc::Sender<Vec<u8>>,
        buffer: Vec<u8>,
        writer: JoinHandle<()>,
        /// The same socket, for writing without waking the writer task when it is
        /// idle.
        direct: std::net::TcpStream,
        /// Batches queued for the writer task and not yet written.
        pending: Arc<AtomicUsize>,
        /// Under TLS, the session that encrypts `buffer` on its way out.
        tls: Option<Box<Sealer>>,
    },
    /// The peer has gone (or this endpoint knows its connection has broken): sends to
    /// it fail, and its connection is closed.
    Gone,
}

/// A writer whose queue was full: waiting on it is the back-pressure.
pub(crate) struct Stall(mpsc::Sender<Vec<u8>>);

impl Stall {
    /// Resolves once the writer can take another batch (or has stopped).
    pub(crate) async fn wait(self) {
        let _ = self.0.reserve().await;
    }
}

/// Whether a buffer went to its writer.
enum HandOff {
    Done,
    /// The writer's queue is full; the buffer stays where it was.
    Full,
    /// The writer has stopped: the peer has gone or the connection broke.
    Gone,
}

fn hand_off(
    batches: &mpsc::Sender<Vec<u8>>,
    buffer: &mut Vec<u8>,
    direct: &std::net::TcpStream,
    pending: &AtomicUsize,
) -> HandOff {
    // A writer that has stopped has seen the connection end: writing around it
    // would lose the frames without a word.
    if batches.is_closed() {
        return HandOff::Gone;
    }
    // Nothing of ours waits in the writer task: write at once, from this thread. The
    // socket is non-blocking: what it does not take now goes to the writer task.
    let mut written = 0;
    if pending.load(Ordering::Acquire) == 0 {
        loop {
            match (&*direct).write(&buffer[written..]) {
                Ok(n) => {
                    written += n;
                    if written == buffer.len() {
                        buffer.clear();
                        return HandOff::Done;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::debug!(%error, "writing to the peer failed");
                    return HandOff::Gone;
                }
            }
        }
    }
    match batches.try_reserve() {
        Ok(permit) => {
            let batch = if written == 0 {
                let capacity = if buffer.len() >= BATCH {
                    BATCH + BATCH / 4
                } else {
                    0
                };
                std::mem::replace(buffer, Vec::with_capacity(capacity))
            } else {
                let rest = buffer[written..].to_vec();
                buffer.clear();
                rest
            };
            pending.fetch_add(1, Ordering::AcqRel);
            permit.send(batch);
            HandOff::Done
        }
        Err(TrySendError::Full(())) => {
            buffer.drain(..written);
            HandOff::Full
        }
        Err(TrySendError::Closed(())) => HandOff::Gone,
    }
}

/// [`hand_off`] for a route: under TLS, `buffer` is encrypted first, and the records
/// are what goes out (those that did not go last time first).
fn hand_off_route(
    batches: &mpsc::Sender<Vec<u8>>,
    buffer: &mut Vec<u8>,
    tls: &mut Option<Box<Sealer>>,
    direct: &std::net::TcpStream,
    pending: &AtomicUsize,
) -> HandOff {
    let Some(sealer) = tls else {
        return hand_off(batches, buffer, direct, pending);
    };
    if !buffer.is_empty()
        && let Err(error) = sealer.seal(buffer)
    {
        tracing::debug!(%error, "encrypting for the peer failed");
        return HandOff::Gone;
    }
    hand_off(batches, &mut sealer.sealed, direct, pending)
}

/// Whether a route holds bytes to hand off: frames, or records that did not go.
fn has_bytes(buffer: &[u8], tls: &Option<Box<Sealer>>) -> bool {
    !buffer.is_empty() || tls.as_ref().is_some_and(|sealer| !sealer.sealed.is_empty())
}

/// The connecting side's handshake under TLS: the TLS handshake, in which the server
/// must show a certificate naming `peer`, then the hello. Returns the TLS session.
async fn tls_handshake(
    stream: &mut TcpStream,
    shared: &Shared,
    tls: &Tls,
    peer: Endpoint,
) -> Result<rustls::ClientConnection, HandshakeError> {
    let name = tls::server_name(peer, &shared.cluster)
        .map_err(|error| HandshakeError::Io(io::Error::other(error.to_string())))?;
    let mut stream =
        tls.connector.connect(name, stream).await.map_err(
            |error| match HandshakeError::from_io(error) {
                HandshakeError::Tls(rustls::Error::AlertReceived(
                    rustls::AlertDescription::ProtocolVersion,
                )) => HandshakeError::ServerWithoutTls,
                HandshakeError::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    HandshakeError::Closed
                }
                other => other,
            },
        )?;
    handshake::client(&mut stream, shared, peer, false).await?;
    let (_, session) = stream.into_inner();
    Ok(session)
}

/// A connection whose handshake is over, with its TLS session if it has one.
struct Dialed {
    stream: TcpStream,
    tls: Option<Box<Sealer>>,
    /// The same socket, for plain non-blocking writes.
    direct: std::net::TcpStream,
}

/// Connects to `peer` at `address` and runs the handshake, within the hello timeout.
async fn dial(shared: &Shared, peer: Endpoint, address: &str) -> Result<Dialed, TransportError> {
    let local = shared.local;
    let timeout = shared.hello_timeout;
    let context = || format!("{local} connecting to {peer} at {address}");
    let timed_out = || TransportError::Io {
        context: context(),
        source: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection and handshake within {timeout:?}"),
        ),
    };
    let deadline = far_or(tokio::time::Instant::now(), timeout);
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(address))
        .await
        .map_err(|_| timed_out())?
        .map_err(io_error(context()))?;
    stream.set_nodelay(true).map_err(io_error(context()))?;
    let handshake = async {
        let Some(tls) = &shared.tls else {
            handshake::client(&mut stream, shared, peer, true).await?;
            return Ok((stream, None));
        };
        // Boxed: a TLS handshake's state is large, and a plain endpoint's futures
        // need not carry room for it.
        let session = Box::pin(tls_handshake(&mut stream, shared, tls, peer)).await?;
        Ok((stream, Some(Box::new(Sealer::new(session)))))
    };
    let (stream, tls) = tokio::time::timeout_at(deadline, handshake)
        .await
        .map_err(|_| timed_out())?
        .map_err(|error| match error {
            HandshakeError::Io(source) => TransportError::Io {
                context: context(),
                source,
            },
            HandshakeError::Closed if shared.tls.is_some() => TransportError::Protocol(format!(
                "{}: {error} (a server without TLS, another cluster, not {peer}, a \
                         certificate it does not accept, or {local} is already connected \
                         there)",
                context()
            )),
            HandshakeError::Closed => TransportError::Protocol(format!(
                "{}: {error} (another cluster or key, not {peer}, or {local} is already \
                     connected there)",
                context()
            )),
            other => TransportError::Protocol(format!("{}: {other}", context())),
        })?;
    let direct = duplicate(&stream).map_err(io_error(context()))?;
    Ok(Dialed {
        stream,
        tls,
        direct,
    })
}

/// Runs `futures` at once, on the calling task, and gives their outputs in the order
/// of `futures`.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Another handle on `stream`'s socket, for plain non-blocking writes.
fn duplicate(stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        Ok(stream.as_fd().try_clone_to_owned()?.into())
    }
    #[cfg(windows)]
    {
        use std::os::windows::io::AsSocket;
        Ok(stream.as_socket().try_clone_to_owned()?.into())
    }
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io { context, source }
}

/// An endpoint's listener and outgoing connections.
///
/// Its tasks run on the runtime it was [started](Self::start) on. Dropping it stops
/// the listener and the readers, and lets the writers finish what was handed to them
/// (and what was buffered, as far as their queues take it without waiting);
/// [`finish`](Self::finish) does that and waits for them.
pub(crate) struct Outbound {
    shared: Arc<Shared>,
    address: SocketAddr,
    routes: EndpointMap<Route>,
    /// The peers whose buffers may hold frames, in the order they were first written
    /// to since the last flush.
    dirty: Vec<Endpoint>,
    /// Peers whose connection this endpoint found broken itself, not yet taken by
    /// [`next_lost`](Self::next_lost).
    lost: Vec<Endpoint>,
    /// Where the writer tasks report theirs.
    writers_lost: mpsc::UnboundedReceiver<Endpoint>,
    /// Dropping it stops the listener and the readers.
    shutdown: Option<watch::Sender<()>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("local", &self.shared.local)
            .field("address", &self.address)
            .field("cluster", &self.shared.cluster)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Checks `config`, listens on `config.bind` on the current tokio runtime, and
    /// accepts peers that prove they belong, whose connections go to `readers`.
    pub(crate) async fn start<F>(
        local: Endpoint,
        config: TcpConfig,
        readers: Readers<F>,
    ) -> Result<Self, TransportError>
    where
        F: DeserializeOwned + Send + 'static,
    {
        config.check()?;
        let tls = match &config.tls {
            Some(identity) => Some(Tls::new(identity, local, &config.cluster)?),
            None => None,
        };
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(io_error(format!("{local} listening on {}", config.bind)))?;
        let address = listener
            .local_addr()
            .map_err(io_error(format!("{local} listening on {}", config.bind)))?;
        let (lost_tx, writers_lost) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            local,
            cluster: config.cluster,
            key: config.key,
            max_frame: config.max_frame,
            hello_timeout: config.hello_timeout,
            max_handshakes: config.max_handshakes,
            tls,
            incoming: Mutex::new(HashSet::new()),
            lost: lost_tx,
            wake: match &readers {
                Readers::Tasks(_) => None,
                Readers::Handover(handover) => Some(Arc::clone(handover)),
            },
        });
        let (shutdown, shutdown_rx) = watch::channel(());
        tokio::spawn(connection::accept(
            listener,
            Arc::clone(&shared),
            readers,
            shutdown_rx,
        ));
        tracing::debug!(%local, %address, "listening");
        Ok(Outbound {
            shared,
            address,
            routes: EndpointMap::default(),
            dirty: Vec::new(),
            lost: Vec::new(),
            writers_lost,
            shutdown: Some(shutdown),
        })
    }

    pub(crate) fn local(&self) -> Endpoint {
        self.shared.local
    }

    /// The address the listener is bound to (with the port the OS chose).
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether `peer` has been admitted on a connection to this endpoint (or has
    /// departed): if so, and it has not departed, the end of that connection is
    /// reported, and a departure noticed otherwise waits for it.
    pub(crate) fn admitted(&self, peer: Endpoint) -> bool {
        self.shared.admitted(peer)
    }

    /// Encodes `frame` into the buffer for `to`, and hands the buffer to the writer if
    /// it is full. Returns a [`Stall`] to wait on if the writer is behind: the frame
    /// is queued all the same.
    pub(crate) fn queue<F: Serialize>(
        &mut self,
        to: Endpoint,
        frame: &F,
    ) -> Result<Option<Stall>, TransportError> {
        let (batches, buffer, direct, pending, tls) = match self.routes.get_mut(&to) {
            Some(Route::Open {
                batches,
                buffer,
                direct,
                pending,
                tls,
                ..
            }) => (batches, buffer, direct, pending, tls),
            Some(Route::Gone) => return Err(TransportError::Disconnected(to)),
            None => return Err(TransportError::UnknownEndpoint(to)),
        };
        if batches.is_closed() {
            self.lose(to);
            return Err(TransportError::Disconnected(to));
        }
        let was_empty = buffer.is_empty();
        codec::encode_into(frame, buffer, self.shared.max_frame)
            .map_err(|error| error.into_transport(|| format!("frame for {to}")))?;
        if was_empty {
            self.dirty.push(to);
        }
        if buffer.len() < BATCH {
            return Ok(None);
        }
        match hand_off_route(batches, buffer, tls, direct, pending) {
            HandOff::Done => Ok(None),
            HandOff::Full => Ok(Some(Stall(batches.clone()))),
            HandOff::Gone => {
                self.lose(to);
                Err(TransportError::Disconnected(to))
            }
        }
    }

    /// Hands every non-empty buffer to its writer, without waiting. Returns a
    /// [`Stall`] if a writer's queue is full (flush again once it resolves). A
    /// connection found broken is dropped with its frames, and its peer left for
    /// [`next_lost`](Self::next_lost).
    ///
    /// `last_from`, the peer whose frame was received last, goes first
    /// ([`flush_order`]); then the others, in the order they were written to.
    #[inline]
    pub(crate) fn try_flush(&mut self, last_from: Endpoint) -> Option<Stall> {
        // Called for every frame received: nothing buffered costs no call.
        if self.dirty.is_empty() {
            return None;
        }
        self.flush_dirty(last_from)
    }

    /// [`try_flush`](Self::try_flush) with buffers to hand over.
    fn flush_dirty(&mut self, last_from: Endpoint) -> Option<Stall> {
        flush_order(&mut self.dirty, last_from);
        let mut lost = Vec::new();
        let mut stall = None;
        let mut done = 0;
        for &peer in &self.dirty {
            let Some(Route::Open {
                batches,
                buffer,
                direct,
                pending,
                tls,
                ..
            }) = self.routes.get_mut(&peer)
            else {
                done += 1;
                continue;
            };
            if has_bytes(buffer, tls) {
                match hand_off_route(batches, buffer, tls, direct, pending) {
                    HandOff::Done => {}
                    HandOff::Full => {
                        stall = Some(Stall(batches.clone()));
                        break;
                    }
                    HandOff::Gone => lost.push(peer),
                }
            }
            done += 1;
        }
        // What a full writer's queue held back stays, for the next flush.
        self.dirty.drain(..done);
        for peer in lost {
            self.lose(peer);
        }
        stall
    }

    /// Whether `peer` has a route, open or gone: connecting to it again does nothing.
    pub(crate) fn has_route(&self, peer: Endpoint) -> bool {
        self.routes.contains_key(&peer)
    }

    /// Opens the connection to `peer`, runs the handshake and starts its writer.
    /// Does nothing if there is a route to `peer` already, open or gone.
    pub(crate) async fn open(
        &mut self,
        peer: Endpoint,
        address: &str,
    ) -> Result<(), TransportError> {
        if self.has_route(peer) {
            return Ok(());
        }
        let dialed = dial(&self.shared, peer, address).await?;
        self.install(peer, address, dialed);
        Ok(())
    }

    /// Opens the connections to `peers` as [`open`](Self::open) does, their
    /// handshakes all at once. Fails with the error of the first peer, in the order
    /// given, whose connection failed; the others are open.
    pub(crate) async fn open_all(
        &mut self,
        peers: &[(Endpoint, &str)],
    ) -> Result<(), TransportError> {
        let mut wanted: Vec<(Endpoint, &str)> = Vec::with_capacity(peers.len());
        for &(peer, address) in peers {
            if !self.has_route(peer) && !wanted.iter().any(|&(p, _)| p == peer) {
                wanted.push((peer, address));
            }
        }
        let shared = &self.shared;
        let dialed = join_all(
            wanted
                .iter()
                .map(|&(peer, address)| dial(shared, peer, address)),
        )
        .await;
        let mut failed = None;
        for ((peer, address), dialed) in wanted.into_iter().zip(dialed) {
            match dialed {
                Ok(dialed) => self.install(peer, address, dialed),
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Makes the route to `peer` over the connection `dialed`, and starts its writer.
    fn install(&mut self, peer: Endpoint, address: &str, dialed: Dialed) {
        let Dialed {
            stream,
            tls,
            direct,
        } = dialed;
        let local = self.shared.local;
        let pending = Arc::new(AtomicUsize::new(0));
        let (batches, queue) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(connection::write_batches(
            Arc::clone(&self.shared),
            peer,
            stream,
            queue,
            Arc::clone(&pending),
        ));
        self.routes.insert(
            peer,
            Route::Open {
                batches,
                buffer: Vec::new(),
                writer,
                direct,
                pending,
                tls,
            },
        );
        tracing::debug!(%local, %peer, %address, "connected");
    }

    /// Marks the connection to `peer` broken, and leaves the news for
    /// [`next_lost`](Self::next_lost).
    fn lose(&mut self, peer: Endpoint) {
        self.routes.insert(peer, Route::Gone);
        self.lost.push(peer);
    }

    /// A peer whose connection from this endpoint was found broken (by a write, or by
    /// its writer task) since the last call, if any; its route is gone. A peer may
    /// come more than once.
    pub(crate) fn next_lost(&mut self) -> Option<Endpoint> {
        if let Some(peer) = self.lost.pop() {
            return Some(peer);
        }
        let peer = self.writers_lost.try_recv().ok()?;
        self.routes.insert(peer, Route::Gone);
        Some(peer)
    }

    /// Waits until a writer task reports a broken connection; then
    /// [`next_lost`](Self::next_lost) has it. Cancel-safe.
    pub(crate) async fn lost(&mut self) {
        if !self.lost.is_empty() {
            return;
        }
        match self.writers_lost.recv().await {
            Some(peer) => {
                self.routes.insert(peer, Route::Gone);
                self.lost.push(peer);
            }
            // The endpoint holds a sender: never.
            None => std::future::pending().await,
        }
    }

    /// The peer has departed: the pair is closed both ways. Its connection closes
    /// once its writer has written what it holds, and sends to it fail with
    /// [`TransportError::Disconnected`]; connecting to it again does nothing, and a
    /// connection from it is refused, as from a peer that has connected before.
    pub(crate) fn close_route(&mut self, peer: Endpoint) {
        self.routes.insert(peer, Route::Gone);
        self.shared.admit(peer);
    }

    /// Flushes (waiting for the writers, without reading anything), closes every
    /// outgoing connection once its writer has written everything, stops listening
    /// and reading, and waits for the writers to finish.
    pub(crate) async fn finish(&mut self, last_from: Endpoint) {
        while let Some(stall) = self.try_flush(last_from) {
            stall.wait().await;
        }
        self.shutdown = None;
        for (_, route) in self.routes.drain() {
            if let Route::Open {
                batches,
                mut buffer,
                writer,
                direct,
                pending,
                mut tls,
            } = route
            {
                // Under TLS, a close_notify goes last: the peer knows its stream was
                // not cut short.
                if let Some(sealer) = &mut tls
                    && sealer.close().is_ok()
                {
                    while let HandOff::Full =
                        hand_off_route(&batches, &mut buffer, &mut tls, &direct, &pending)
                    {
                        Stall(batches.clone()).wait().await;
                    }
                }
                drop(batches);
                let _ = writer.await;
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        // Frames sent but not flushed go out too: at once if the socket or the
        // writer's queue takes them, else by a task that waits (a drop cannot).
        for route in self.routes.values_mut() {
            if let Route::Open {
                batches,
                buffer,
                direct,
                pending,
                tls,
                ..
            } = route
            {
                if let Some(sealer) = tls {
                    // Sealed after the frames: a close_notify, last.
                    let closed = sealer.seal(buffer).and_then(|()| sealer.close());
                    if closed.is_err() {
                        continue;
                    }
                }
                if has_bytes(buffer, tls)
                    && let HandOff::Full = hand_off_route(batches, buffer, tls, direct, pending)
                    && let Ok(runtime) = tokio::runtime::Handle::try_current()
                {
                    let batches = batches.clone();
                    let batch = match tls {
                        Some(sealer) => std::mem::take(&mut sealer.sealed),
                        None => std::mem::take(buffer),
                    };
                    runtime.spawn(async move { batches.send(batch).await });
                }
            }
        }
    }
}

/// `timeout` after `now`, or, for a timeout past the end of time, 30 years after it:
/// later than anything waits.
fn far_or(now: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}
