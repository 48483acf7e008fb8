//! The native form: an endpoint driven by the application's own tokio runtime.

use crate::connection::{self, Event};
use crate::handshake::{self, HandshakeError};
use crate::{Shared, TcpConfig};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::codec::{self, CodecError};
use snapshot_core::{Endpoint, TransportError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A peer's buffer is handed to its writer once it holds this many bytes, and on
/// flush.
pub(crate) const BATCH: usize = 64 * 1024;

/// How many batches may wait for a writer before senders wait for it: the
/// back-pressure that keeps a sender faster than the network from filling memory.
const QUEUE: usize = 8;

/// Moves frames of type `F` between [`Endpoint`]s, for applications on tokio: the
/// asynchronous twin of [`snapshot_core::Transport`], with the same guarantees (FIFO
/// per ordered pair; no loss, no duplication while both ends are alive; a peer that
/// goes away is reported as [`TransportError::Disconnected`]).
///
/// [`send`](Self::send) may buffer; [`flush`](Self::flush) hands the buffers to the
/// medium, and [`recv`](Self::recv) and [`recv_timeout`](Self::recv_timeout) flush
/// before they wait.
#[async_trait]
pub trait AsyncTransport<F: Send + 'static>: Send {
    /// The endpoint this transport sends from and receives for.
    fn local(&self) -> Endpoint;

    /// Where peers can reach this endpoint (see [`connect`](Self::connect)).
    fn address(&self) -> Option<String>;

    /// Queues `frame` for `to`. Waits only when the medium is behind (back-pressure).
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError>;

    /// Hands every queued frame to the medium.
    async fn flush(&mut self) -> Result<(), TransportError>;

    /// Waits for the next frame from any peer and says who sent it.
    async fn recv(&mut self) -> Result<(Endpoint, F), TransportError>;

    /// Like [`recv`](Self::recv), but gives up after `timeout` with `Ok(None)`.
    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(Endpoint, F)>, TransportError>;

    /// Makes `peer` reachable at `address` (as given by that peer's
    /// [`address`](Self::address)).
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError>;
}

#[async_trait]
impl<F: Send + 'static, T: AsyncTransport<F> + ?Sized> AsyncTransport<F> for Box<T> {
    fn local(&self) -> Endpoint {
        (**self).local()
    }
    fn address(&self) -> Option<String> {
        (**self).address()
    }
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        (**self).send(to, frame).await
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        (**self).flush().await
    }
    async fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        (**self).recv().await
    }
    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(Endpoint, F)>, TransportError> {
        (**self).recv_timeout(timeout).await
    }
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        (**self).connect(peer, address).await
    }
}

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
    },
    /// The peer has gone, and the application has been told.
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

/// One endpoint talking TCP, on the tokio runtime it was created on.
///
/// See the [crate documentation](crate) for how it works and what it guarantees. Its
/// tasks run on the runtime that [`bind`](Self::bind) was called on; dropping it stops
/// the listener and the readers, and lets the writers finish what was flushed (and
/// what was sent but not flushed, as far as the writers' queues take it without
/// waiting). [`close`](Self::close) does all that and waits for the writers.
pub struct AsyncTcpTransport<F> {
    shared: Arc<Shared>,
    address: SocketAddr,
    routes: HashMap<Endpoint, Route>,
    /// The peers whose buffers may hold frames, in the order they were first written
    /// to since the last flush.
    dirty: Vec<Endpoint>,
    /// Departures met while flushing several peers, not yet returned.
    failures: VecDeque<TransportError>,
    /// Peers whose departure the application has been told of.
    reported: HashSet<Endpoint>,
    inbox: mpsc::UnboundedReceiver<Event<F>>,
    /// The frames of the batch being handed out, and who sent them.
    batch: std::vec::IntoIter<F>,
    batch_from: Endpoint,
    /// Dropping it stops the listener and the readers.
    shutdown: Option<watch::Sender<()>>,
}

impl<F> std::fmt::Debug for AsyncTcpTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpTransport")
            .field("local", &self.shared.local)
            .field("address", &self.address)
            .field("cluster", &self.shared.cluster)
            .finish_non_exhaustive()
    }
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> TransportError {
    move |source| TransportError::Io { context, source }
}

impl<F> AsyncTcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    /// The endpoint `local` of the cluster that `config` describes: listens on
    /// `config.bind` at once, on the current tokio runtime, and accepts peers that
    /// prove they belong.
    ///
    /// Fails if the key is empty or the address cannot be bound. Must be called
    /// within a tokio runtime (with I/O and time enabled).
    pub async fn bind(local: Endpoint, config: TcpConfig) -> Result<Self, TransportError> {
        Self::bind_with_handover(local, config, None).await
    }

    /// As [`bind`](Self::bind), but authenticated connections go to `handover` (when
    /// given), whose thread reads them, rather than to reader tasks.
    pub(crate) async fn bind_with_handover(
        local: Endpoint,
        config: TcpConfig,
        handover: Option<Arc<crate::direct::Handover>>,
    ) -> Result<Self, TransportError> {
        if config.key.is_empty() {
            return Err(TransportError::Io {
                context: format!("starting {local}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, "the cluster key is empty"),
            });
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(io_error(format!("{local} listening on {}", config.bind)))?;
        let address = listener
            .local_addr()
            .map_err(io_error(format!("{local} listening on {}", config.bind)))?;
        let shared = Arc::new(Shared {
            local,
            cluster: config.cluster,
            key: config.key,
            max_frame: config.max_frame,
            hello_timeout: config.hello_timeout,
            incoming: Mutex::new(HashSet::new()),
            handover,
        });
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(());
        tokio::spawn(connection::accept(
            listener,
            Arc::clone(&shared),
            inbox_tx,
            shutdown_rx,
        ));
        tracing::debug!(%local, %address, "listening");
        Ok(AsyncTcpTransport {
            shared,
            address,
            routes: HashMap::new(),
            dirty: Vec::new(),
            failures: VecDeque::new(),
            reported: HashSet::new(),
            inbox,
            batch: Vec::new().into_iter(),
            batch_from: local,
            shutdown: Some(shutdown),
        })
    }

    /// Encodes `frame` into the buffer for `to`, and hands the buffer to the writer if
    /// it is full. Returns a [`Stall`] to wait on if the writer is behind: the frame
    /// is queued all the same.
    pub(crate) fn queue(
        &mut self,
        to: Endpoint,
        frame: &F,
    ) -> Result<Option<Stall>, TransportError> {
        let (batches, buffer, direct, pending) = match self.routes.get_mut(&to) {
            Some(Route::Open {
                batches,
                buffer,
                direct,
                pending,
                ..
            }) => (batches, buffer, direct, pending),
            Some(Route::Gone) => return Err(TransportError::Disconnected(to)),
            None => return Err(TransportError::UnknownEndpoint(to)),
        };
        if batches.is_closed() {
            self.lose(to);
            return Err(TransportError::Disconnected(to));
        }
        let was_empty = buffer.is_empty();
        codec::encode_into(frame, buffer, self.shared.max_frame).map_err(|error| match error {
            CodecError::TooLarge { size, limit } => TransportError::FrameTooLarge { size, limit },
            other => TransportError::Codec {
                context: format!("frame for {to}"),
                reason: other.to_string(),
            },
        })?;
        if was_empty {
            self.dirty.push(to);
        }
        if buffer.len() < BATCH {
            return Ok(None);
        }
        match hand_off(batches, buffer, direct, pending) {
            HandOff::Done => Ok(None),
            HandOff::Full => Ok(Some(Stall(batches.clone()))),
            HandOff::Gone => {
                self.lose(to);
                Err(TransportError::Disconnected(to))
            }
        }
    }

    /// Opens the connection to `peer`, runs the handshake and starts its writer.
    pub(crate) async fn open(
        &mut self,
        peer: Endpoint,
        address: &str,
    ) -> Result<(), TransportError> {
        if self.routes.contains_key(&peer) {
            return Ok(());
        }
        let local = self.shared.local;
        let timeout = self.shared.hello_timeout;
        let context = || format!("{local} connecting to {peer} at {address}");
        let timed_out = || TransportError::Io {
            context: context(),
            source: io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection and handshake within {timeout:?}"),
            ),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(address))
            .await
            .map_err(|_| timed_out())?
            .map_err(io_error(context()))?;
        stream.set_nodelay(true).map_err(io_error(context()))?;
        let shared = &self.shared;
        tokio::time::timeout_at(deadline, handshake::client(&mut stream, shared, peer))
            .await
            .map_err(|_| timed_out())?
            .map_err(|error| match error {
                HandshakeError::Io(source) => TransportError::Io {
                    context: context(),
                    source,
                },
                HandshakeError::Closed => TransportError::Protocol(format!(
                    "{}: {error} (another cluster or key, not {peer}, or {local} is already \
                     connected there)",
                    context()
                )),
                other => TransportError::Protocol(format!("{}: {other}", context())),
            })?;
        let direct = duplicate(&stream).map_err(io_error(context()))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let (batches, queue) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(connection::write_batches(
            local,
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
            },
        );
        tracing::debug!(%local, %peer, %address, "connected");
        Ok(())
    }
}

impl<F> AsyncTcpTransport<F> {
    /// The address the listener is bound to (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Flushes, closes every outgoing connection once its writer has written
    /// everything, stops listening and reading, and waits for the writers to finish.
    ///
    /// Dropping the transport does the same without waiting (and so without knowing
    /// whether the last frames were written). Returns the first departure met while
    /// flushing, if any; the other connections are closed all the same. A peer that
    /// stops reading holds it up: wrap it in a timeout if that matters.
    pub async fn close(mut self) -> Result<(), TransportError> {
        self.finish().await
    }

    /// What [`close`](Self::close) does, leaving an inert transport behind.
    pub(crate) async fn finish(&mut self) -> Result<(), TransportError> {
        let flushed = self.flush_all().await;
        self.shutdown = None;
        for (_, route) in self.routes.drain() {
            if let Route::Open {
                batches, writer, ..
            } = route
            {
                drop(batches);
                let _ = writer.await;
            }
        }
        flushed
    }

    /// Marks `peer` gone; says whether the application is yet to be told.
    fn lose(&mut self, peer: Endpoint) -> bool {
        self.routes.insert(peer, Route::Gone);
        self.reported.insert(peer)
    }

    /// Hands every non-empty buffer to its writer, without waiting. Returns a
    /// [`Stall`] if a writer's queue is full (flush again once it resolves).
    ///
    /// The peer whose frame was received last goes first: in request-reply traffic it
    /// is the one waiting, for the reply just queued, while the others' frames are
    /// consequences of the request. Then the others, in the order they were written to.
    pub(crate) fn try_flush(&mut self) -> Result<Option<Stall>, TransportError> {
        if !self.dirty.is_empty() {
            if let Some(at) = self.dirty.iter().position(|&p| p == self.batch_from) {
                self.dirty[..=at].rotate_right(1);
            }
            let mut lost = Vec::new();
            let mut stall = None;
            let mut done = 0;
            for &peer in &self.dirty {
                let Some(Route::Open {
                    batches,
                    buffer,
                    direct,
                    pending,
                    ..
                }) = self.routes.get_mut(&peer)
                else {
                    done += 1;
                    continue;
                };
                if !buffer.is_empty() {
                    match hand_off(batches, buffer, direct, pending) {
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
                if self.lose(peer) {
                    self.failures.push_back(TransportError::Disconnected(peer));
                }
            }
            if stall.is_some() {
                return Ok(stall);
            }
        }
        match self.failures.pop_front() {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    async fn flush_all(&mut self) -> Result<(), TransportError> {
        while let Some(stall) = self.try_flush()? {
            stall.wait().await;
        }
        Ok(())
    }

    /// Notes that the application has been handed a frame from `peer`: a flush
    /// writes to it first ([`try_flush`](Self::try_flush)).
    pub(crate) fn received_from(&mut self, peer: Endpoint) {
        self.batch_from = peer;
    }

    /// The connection from `peer` has ended: the pair is closed both ways (our
    /// connection to it too, once its writer has written what it holds). Says whether
    /// the application is yet to be told.
    pub(crate) fn ended(&mut self, peer: Endpoint) -> bool {
        self.lose(peer)
    }

    /// Hands out the next frame of the current batch, or takes in `event`.
    fn take(&mut self, event: Event<F>) -> Option<Result<(Endpoint, F), TransportError>> {
        match event {
            Event::Frames(from, frames) => {
                self.batch_from = from;
                self.batch = frames.into_iter();
                self.batch.next().map(|frame| Ok((from, frame)))
            }
            Event::Ended(peer) => {
                if self.ended(peer) {
                    Some(Err(TransportError::Disconnected(peer)))
                } else {
                    None
                }
            }
        }
    }

    /// The next frame, if one has arrived; never waits.
    fn try_next(&mut self) -> Result<Option<(Endpoint, F)>, TransportError> {
        loop {
            if let Some(frame) = self.batch.next() {
                return Ok(Some((self.batch_from, frame)));
            }
            let event = match self.inbox.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => return Err(TransportError::Closed),
            };
            if let Some(result) = self.take(event) {
                return result.map(Some);
            }
        }
    }

    /// Waits for the next frame until `deadline` (`None`: for ever). Cancel-safe:
    /// nothing is taken from the inbox but what is returned.
    async fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<(Endpoint, F)>, TransportError> {
        self.flush_all().await?;
        loop {
            if let Some(item) = self.try_next()? {
                return Ok(Some(item));
            }
            let event = match deadline {
                None => self.inbox.recv().await,
                Some(deadline) => {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                        Ok(event) => event,
                        Err(_) => return Ok(None),
                    }
                }
            };
            let Some(event) = event else {
                return Err(TransportError::Closed);
            };
            if let Some(result) = self.take(event) {
                return result.map(Some);
            }
        }
    }
}

/// The asynchronous counterpart of [`snapshot_core::Transport`]; every method is
/// cancel-safe: a `send` cancelled while it waits has queued its frame, and a
/// cancelled `recv` has taken nothing.
#[async_trait]
impl<F> AsyncTransport<F> for AsyncTcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        self.shared.local
    }

    /// The listener's address, `ip:port`.
    fn address(&self) -> Option<String> {
        Some(self.address.to_string())
    }

    /// Queues `frame` for `to`, which must have been [connected](Self::connect)
    /// ([`TransportError::UnknownEndpoint`] otherwise). Frames are written in batches:
    /// when the buffer for `to` is full, and on flush. Fails with
    /// [`TransportError::Disconnected`] once the connection to `to` has broken, and
    /// with [`TransportError::FrameTooLarge`] for a frame over
    /// [`TcpConfig::max_frame`] (nothing is queued then, and the connection stays up).
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if let Some(stall) = self.queue(to, &frame)? {
            stall.wait().await;
        }
        Ok(())
    }

    /// Hands every buffered frame to the writers. If several peers have gone, the
    /// first is returned and the others by the following calls.
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all().await
    }

    /// Flushes, then waits for the next frame. When a connection from a peer ends
    /// (after all the frames that came on it), returns
    /// [`TransportError::Disconnected`] for that peer, once, and goes on with the
    /// others on the next call.
    async fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        match self.next(None).await? {
            Some(item) => Ok(item),
            None => Err(TransportError::Closed),
        }
    }

    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(Endpoint, F)>, TransportError> {
        // A timeout too long to represent is no timeout.
        self.next(Instant::now().checked_add(timeout)).await
    }

    /// Opens the one connection that carries frames from this endpoint to `peer`,
    /// listening at `address` (`ip:port`, or `host:port`), and runs the handshake on
    /// it; gives up after [`TcpConfig::hello_timeout`]. A peer that does not prove it
    /// knows the key, or that is another endpoint or another cluster, is refused with
    /// [`TransportError::Protocol`]. Connecting to a peer again does nothing, even if
    /// it has gone since.
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.open(peer, address).await
    }
}

impl<F> Drop for AsyncTcpTransport<F> {
    fn drop(&mut self) {
        // Frames sent but not flushed go out too: at once if the socket or the
        // writer's queue takes them, else by a task that waits (a drop cannot).
        for route in self.routes.values_mut() {
            if let Route::Open {
                batches,
                buffer,
                direct,
                pending,
                ..
            } = route
                && !buffer.is_empty()
                && let HandOff::Full = hand_off(batches, buffer, direct, pending)
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                let batches = batches.clone();
                let batch = std::mem::take(buffer);
                runtime.spawn(async move { batches.send(batch).await });
            }
        }
    }
}
