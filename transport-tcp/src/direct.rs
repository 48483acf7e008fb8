//! The receiving side of a [`TcpTransport`](crate::TcpTransport): its authenticated
//! connections, read by the calling thread whenever it waits, and the frames taken
//! from them that the application has not had yet.
//!
//! The listener and the handshakes run on the transport's worker thread (so that peers
//! can connect while the application is busy); a connection that has proved itself is
//! handed over here ([`Handover`]) and the worker wakes the waiting thread. From then
//! on the connection is read with a `mio` poll in the calling thread: a frame that
//! arrives while the application sleeps costs one wake-up and one read, with no
//! scheduler in between.

use serde::de::DeserializeOwned;
use snapshot_core::Endpoint;
use snapshot_core::codec::FrameDecoder;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

/// How much one `read` takes from a connection at most.
const CHUNK: usize = 64 * 1024;

/// How many full chunks one connection may give in a row before the others get their
/// turn: a peer that writes as fast as it is read cannot keep the endpoint for itself.
const CHUNKS_PER_TURN: usize = 16;

/// The poll's token for the worker's wake-ups; connections have their index.
const WAKE: Token = Token(usize::MAX);

/// How the worker thread hands authenticated connections to the thread that reads
/// them, and tells it that a writer it waits for has room again.
pub(crate) struct Handover {
    /// Connections to adopt; `None` for one that broke on the way.
    streams: Mutex<Vec<(Endpoint, Option<std::net::TcpStream>)>>,
    /// Set by the worker when a writer that a sender waits for can take more.
    writer_ready: AtomicBool,
    waker: Waker,
}

impl Handover {
    /// Gives `stream`, authenticated as `peer`, to the reading thread; if it cannot be
    /// handed over, tells the reading thread that the connection from `peer` has
    /// ended.
    pub(crate) fn deliver(&self, peer: Endpoint, stream: io::Result<std::net::TcpStream>) {
        let stream = stream
            .and_then(|stream| stream.set_nonblocking(true).map(|()| stream))
            .inspect_err(|error| {
                tracing::warn!(%peer, %error, "could not hand the connection over");
            })
            .ok();
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((peer, stream));
        self.wake();
    }

    /// Tells the reading thread that the writer it waits for has room (or has stopped).
    pub(crate) fn writer_ready(&self) {
        self.writer_ready.store(true, Ordering::Release);
        self.wake();
    }

    fn wake(&self) {
        if let Err(error) = self.waker.wake() {
            tracing::warn!(%error, "could not wake the endpoint's thread");
        }
    }

    /// Forgets an earlier [`writer_ready`](Self::writer_ready), before a new wait.
    pub(crate) fn expect_writer(&self) {
        self.writer_ready.store(false, Ordering::Release);
    }

    /// Whether [`writer_ready`](Self::writer_ready) was called since
    /// [`expect_writer`](Self::expect_writer).
    pub(crate) fn is_writer_ready(&self) -> bool {
        self.writer_ready.load(Ordering::Acquire)
    }
}

/// What has come in, in the order it was read.
pub(crate) enum Arrival<F> {
    /// A frame from a peer.
    Frame(Endpoint, F),
    /// The connection from that peer has ended: the peer closed it, it broke, or the
    /// peer broke the framing. Comes exactly once per connection, after its last frame.
    Ended(Endpoint),
}

/// One authenticated incoming connection.
struct Connection {
    peer: Endpoint,
    stream: TcpStream,
    /// The bytes of a frame not yet whole.
    decoder: FrameDecoder,
}

/// What became of one read of a connection.
enum Outcome {
    /// This many bytes, now in the chunk.
    Bytes(usize),
    /// Nothing for now.
    Empty,
    /// The end of the stream, or an error that ends it.
    End,
}

/// Every incoming connection of an endpoint, and what has been read from them.
pub(crate) struct Inbound<F> {
    poll: Poll,
    events: Events,
    handover: Arc<Handover>,
    /// The connections, by token; `None` once ended.
    connections: Vec<Option<Connection>>,
    /// Connections that may hold more than was read: reported ready and not yet read
    /// to the end.
    ready: Vec<usize>,
    /// Read but not yet handed out, in the order it was read.
    arrived: VecDeque<Arrival<F>>,
    /// Where reads land before they are decoded (allocated on the first read).
    chunk: Vec<u8>,
    max_frame: usize,
}

impl<F> Inbound<F> {
    /// An endpoint's inbound side, which takes frames of up to `max_frame` bytes.
    pub(crate) fn new(max_frame: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        Ok(Inbound {
            poll,
            events: Events::with_capacity(64),
            handover: Arc::new(Handover {
                streams: Mutex::new(Vec::new()),
                writer_ready: AtomicBool::new(false),
                waker,
            }),
            connections: Vec::new(),
            ready: Vec::new(),
            arrived: VecDeque::new(),
            chunk: Vec::new(),
            max_frame,
        })
    }

    /// Where the worker thread hands connections over.
    pub(crate) fn handover(&self) -> &Arc<Handover> {
        &self.handover
    }

    /// The oldest arrival not handed out yet.
    pub(crate) fn pop(&mut self) -> Option<Arrival<F>> {
        self.arrived.pop_front()
    }

    /// Whether something has arrived that is not handed out yet.
    pub(crate) fn has_arrivals(&self) -> bool {
        !self.arrived.is_empty()
    }

    /// Starts reading the connections the worker has handed over.
    fn adopt(&mut self) {
        let streams = std::mem::take(
            &mut *self
                .handover
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (peer, stream) in streams {
            let Some(stream) = stream else {
                self.arrived.push_back(Arrival::Ended(peer));
                continue;
            };
            let index = self.connections.len();
            let mut stream = TcpStream::from_std(stream);
            if let Err(error) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(index), Interest::READABLE)
            {
                tracing::warn!(%peer, %error, "could not watch the connection; dropping the peer");
                self.arrived.push_back(Arrival::Ended(peer));
                continue;
            }
            self.connections.push(Some(Connection {
                peer,
                stream,
                decoder: FrameDecoder::new(self.max_frame),
            }));
            // Frames may have come before it was registered.
            self.ready.push(index);
        }
    }

    /// One read of connection `index` into the chunk.
    fn read_once(&mut self, index: usize) -> Outcome {
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let Some(Some(connection)) = self.connections.get_mut(index) else {
            return Outcome::Empty;
        };
        loop {
            return match connection.stream.read(&mut self.chunk) {
                Ok(0) => Outcome::End,
                Ok(n) => Outcome::Bytes(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Outcome::Empty,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(peer = %connection.peer, %error, "reading from the peer failed; dropping it");
                    Outcome::End
                }
            };
        }
    }

    /// Closes connection `index` and records that it has ended.
    fn end(&mut self, index: usize) {
        if let Some(slot) = self.connections.get_mut(index)
            && let Some(mut connection) = slot.take()
        {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            self.arrived.push_back(Arrival::Ended(connection.peer));
        }
    }
}

impl<F: DeserializeOwned> Inbound<F> {
    /// Waits until a connection has something to say, or the worker has handed over a
    /// connection or freed a writer, or `timeout` passes (`None`: for ever; zero:
    /// only looks). Reads every connection that is ready, decoding what it holds.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        // Connections left with more to read are read now: no waiting for them.
        let timeout = if self.ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(error) => return Err(error),
        }
        let mut woken = false;
        for event in &self.events {
            match event.token() {
                WAKE => woken = true,
                Token(index) => self.ready.push(index),
            }
        }
        if woken {
            self.adopt();
        }
        let ready = std::mem::take(&mut self.ready);
        for index in ready {
            if self.read(index) && !self.ready.contains(&index) {
                self.ready.push(index);
            }
        }
        Ok(())
    }

    /// Reads what connection `index` holds (up to a turn's worth), decoding every
    /// whole frame. Says whether it may hold more.
    fn read(&mut self, index: usize) -> bool {
        for _ in 0..CHUNKS_PER_TURN {
            let n = match self.read_once(index) {
                Outcome::Bytes(n) => n,
                Outcome::Empty => return false,
                Outcome::End => {
                    if let Some(Some(connection)) = self.connections.get(index) {
                        if connection.decoder.has_partial() {
                            tracing::warn!(peer = %connection.peer, "the peer closed its connection in the middle of a frame");
                        } else {
                            tracing::debug!(peer = %connection.peer, "the peer closed its connection");
                        }
                    }
                    self.end(index);
                    return false;
                }
            };
            let Some(Some(connection)) = self.connections.get_mut(index) else {
                return false;
            };
            connection.decoder.feed(&self.chunk[..n]);
            loop {
                match connection.decoder.next_frame::<F>() {
                    Ok(Some(frame)) => self
                        .arrived
                        .push_back(Arrival::Frame(connection.peer, frame)),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(peer = %connection.peer, %error, "bad frame from the peer; dropping it");
                        self.end(index);
                        return false;
                    }
                }
            }
            // A short read: the socket is empty for now. Its next bytes raise a new
            // readiness event (with epoll and kqueue every arrival does, which tokio
            // relies on too), so there is no read just to see it empty.
            if n < CHUNK && cfg!(unix) {
                return false;
            }
        }
        true
    }
}
