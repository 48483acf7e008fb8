//! The receiving side of a [`TcpTransport`](crate::TcpTransport): its authenticated
//! connections, read by the calling thread whenever it waits, and the frames taken
//! from them that the application has not had yet.
//!
//! The listener and the handshakes run on the transport's worker thread (so that peers
//! can connect while the application is busy); a connection that has proved itself is
//! handed over here ([`Handover`]) and the worker wakes the waiting thread. From then
//! on the connection is read with a `mio` poll in the calling thread: a frame that
//! arrives while the application sleeps costs one wake-up and one read, with no
//! scheduler in between. Decoding, read turns, the frames not handed out yet and the
//! peers' departures are `snapshot_core`'s [`Inbound`]; the poll is ours.

use crate::tls::TlsReader;
use serde::de::DeserializeOwned;
use snapshot_core::stream::{Inbound, Peers, Turn};
use snapshot_core::{Endpoint, Incoming};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

/// The poll's token for the worker's wake-ups; connections have their index.
const WAKE: Token = Token(usize::MAX);

/// How many reads past a short one a connection whose peer has closed its side gets
/// in one wait to reach its end.
const CLOSING_READS: usize = 4;

/// An authenticated connection, as the worker hands it over.
pub(crate) enum Socket {
    Plain(std::net::TcpStream),
    /// With the server side of its TLS session, whose handshake is over.
    Tls(std::net::TcpStream, Box<rustls::ServerConnection>),
}

impl Socket {
    fn stream(&self) -> &std::net::TcpStream {
        match self {
            Socket::Plain(stream) | Socket::Tls(stream, _) => stream,
        }
    }
}

/// A connection as the calling thread reads it: the socket itself, or the plaintext
/// of its TLS session.
pub(crate) enum Source {
    Plain(TcpStream),
    Tls(Box<TlsReader>),
}

impl Source {
    /// Whether a read would give something that no readiness event will announce:
    /// the end, or an error, behind the plaintext a short read gave.
    fn pending(&self) -> bool {
        match self {
            Source::Plain(_) => false,
            Source::Tls(reader) => reader.pending(),
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        match self {
            Source::Plain(stream) => stream,
            Source::Tls(reader) => reader.socket_mut(),
        }
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(stream) => stream.read(buf),
            Source::Tls(reader) => reader.read(buf),
        }
    }
}

impl mio::event::Source for Source {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket().deregister(registry)
    }
}

/// How the worker thread hands authenticated connections to the thread that reads
/// them, and tells it that a writer it waits for has room again, or that one has
/// found its connection broken.
pub(crate) struct Handover {
    /// Connections to adopt; `None` for one that broke on the way.
    streams: Mutex<Vec<(Endpoint, Option<Socket>)>>,
    /// Set by the worker when a writer that a sender waits for can take more.
    writer_ready: AtomicBool,
    waker: Waker,
}

impl Handover {
    /// Gives `stream`, authenticated as `peer`, to the reading thread; if it cannot be
    /// handed over, tells the reading thread that the connection from `peer` has
    /// ended.
    pub(crate) fn deliver(&self, peer: Endpoint, stream: io::Result<Socket>) {
        let stream = stream
            .and_then(|stream| stream.stream().set_nonblocking(true).map(|()| stream))
            .inspect_err(|error| {
                tracing::warn!(%peer, error = error as &dyn std::error::Error, "could not hand the connection over");
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

    /// Wakes the reading thread, to look at what the worker has for it.
    pub(crate) fn wake(&self) {
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

/// Every incoming connection of an endpoint, the poll that watches them, and what has
/// been read from them.
pub(crate) struct Reader<F> {
    local: Endpoint,
    poll: Poll,
    events: Events,
    handover: Arc<Handover>,
    /// The connections, by token, and what came from them.
    inbound: Inbound<Source, F>,
    /// How many connections have been added: the index [`Inbound::add`] gives the
    /// next, and its token.
    added: usize,
    /// Connections that may hold more than was read: reported ready and not yet read
    /// to the end.
    ready: Vec<usize>,
    /// Connections whose peer has closed its side, read until their end comes.
    closing: Vec<usize>,
}

impl<F> Reader<F> {
    /// The inbound side of `local`, which takes frames of up to `max_frame` bytes.
    pub(crate) fn new(local: Endpoint, max_frame: usize) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        Ok(Reader {
            local,
            poll,
            events: Events::with_capacity(64),
            handover: Arc::new(Handover {
                streams: Mutex::new(Vec::new()),
                writer_ready: AtomicBool::new(false),
                waker,
            }),
            inbound: Inbound::new(max_frame),
            added: 0,
            ready: Vec::new(),
            closing: Vec::new(),
        })
    }

    /// Where the worker thread hands connections over.
    pub(crate) fn handover(&self) -> &Arc<Handover> {
        &self.handover
    }

    /// Whether every peer has departed and every departure has been handed out.
    pub(crate) fn is_closed(&self) -> bool {
        self.inbound.is_closed()
    }

    /// The endpoint's peers.
    pub(crate) fn peers(&self) -> &Peers {
        self.inbound.peers()
    }

    /// Why `peer`'s connection to this endpoint ended, if it did not simply end.
    pub(crate) fn departure_cause(&self, peer: Endpoint) -> Option<&str> {
        self.inbound.departure_cause(peer)
    }

    /// Counts `peer`, connected to, as a peer.
    pub(crate) fn add_peer(&mut self, peer: Endpoint) {
        self.inbound.peers_mut().add(peer);
    }

    /// Queues the departure of `peer`, unless it was queued before.
    pub(crate) fn depart(&mut self, peer: Endpoint) {
        self.inbound.depart(peer);
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
                self.inbound.depart(peer);
                continue;
            };
            if self.inbound.peers().has_departed(peer) {
                // Its departure has been reported: nothing more may come from it.
                tracing::debug!(%peer, "closed a connection from a peer that has gone");
                continue;
            }
            let mut stream = match stream {
                Socket::Plain(stream) => Source::Plain(TcpStream::from_std(stream)),
                Socket::Tls(stream, connection) => Source::Tls(Box::new(TlsReader::new(
                    TcpStream::from_std(stream),
                    *connection,
                    self.local,
                    peer,
                ))),
            };
            let index = self.added;
            if let Err(error) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(index), Interest::READABLE)
            {
                tracing::warn!(%peer, error = &error as &dyn std::error::Error, "could not watch the connection; dropping the peer");
                self.inbound.depart(peer);
                continue;
            }
            let added = self.inbound.add(peer, stream);
            debug_assert_eq!(added, index, "tokens are the indices of Inbound");
            self.added += 1;
            // Frames may have come before it was registered.
            self.ready.push(index);
        }
    }
}

impl<F: DeserializeOwned> Reader<F> {
    /// The oldest arrival not handed out yet (a frame is decoded as it is handed
    /// out).
    pub(crate) fn pop(&mut self) -> Option<Incoming<F>> {
        self.inbound.pop()
    }

    /// Waits until a connection has something to say, or the worker has handed over a
    /// connection, freed a writer or reported a broken one, or `timeout` passes
    /// (`None`: for ever; zero: only looks). Reads every connection that is ready,
    /// keeping the whole frames it holds.
    ///
    /// A connection that ends is closed by [`Inbound`], which drops it without
    /// deregistering it: closing a socket takes it out of the poll.
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
                Token(index) => {
                    self.ready.push(index);
                    // The peer has closed its side: the end of the stream may have
                    // come with the last bytes, in the same readiness event, and no
                    // event follows it. Such a connection is read to its end.
                    if (event.is_read_closed() || event.is_error())
                        && !self.closing.contains(&index)
                    {
                        self.closing.push(index);
                    }
                }
            }
        }
        if woken {
            self.adopt();
        }
        let ready = std::mem::take(&mut self.ready);
        for index in ready {
            // A short read ends a turn: the socket is empty for now, and its next
            // bytes raise a new readiness event (with epoll and kqueue every arrival
            // does, which tokio relies on too).
            let mut turn = self.inbound.read(index);
            if cfg!(not(unix)) && turn == Turn::Drained {
                // Elsewhere mio wants reads until one would block before it reports
                // the socket again.
                turn = self.inbound.read(index);
            }
            if let Some(at) = self.closing.iter().position(|&i| i == index) {
                // Bounded: each read takes bytes or finds the end, which a closed
                // side gives once the bytes are taken.
                for _ in 0..CLOSING_READS {
                    if turn != Turn::Drained {
                        break;
                    }
                    turn = self.inbound.read(index);
                }
                if turn == Turn::Ended {
                    self.closing.swap_remove(at);
                } else if !self.ready.contains(&index) {
                    // Its end is still to come, and no event may announce it.
                    self.ready.push(index);
                }
            }
            let more = match turn {
                Turn::More => true,
                // A TLS connection may have its end, or an error, behind the last
                // plaintext: nothing else will announce it.
                Turn::Drained => self.inbound.source(index).is_some_and(Source::pending),
                Turn::Ended => false,
            };
            if more && !self.ready.contains(&index) {
                self.ready.push(index);
            }
        }
        Ok(())
    }
}
