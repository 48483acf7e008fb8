//! A [`Transport`] for `snapshot-core` over named pipes (FIFOs): every endpoint is an
//! OS process of its own, every ordered pair of endpoints has its own FIFO in a run
//! directory they share, and frames are length-prefixed postcard
//! ([`snapshot_core::codec`]).
//!
//! ```
//! use snapshot_core::{Endpoint, NodeId, Transport};
//! use transport_pipe::PipeTransport;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The application owns the run directory; here both endpoints are in one process.
//! let dir = tempfile::tempdir()?;
//! let mut master = PipeTransport::<String>::new(dir.path(), Endpoint::Master)?;
//! let mut node = PipeTransport::<String>::new(dir.path(), Endpoint::Node(NodeId(1)))?;
//! let address = master.address().unwrap_or_default();
//! master.connect(node.local(), &address)?;
//! node.connect(Endpoint::Master, &address)?;
//!
//! node.send(Endpoint::Master, "hello".to_string())?;
//! node.flush()?;
//! assert_eq!(master.recv()?, (node.local(), "hello".to_string()));
//! drop((master, node));
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "no FIFO is left behind");
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! Frames from `a` to `b` go through the FIFO `dir/<a>-to-<b>`, with endpoints named
//! `node-5`, `observer` and `master` (see [`fifo_path`]).
//!
//! - [`connect(peer, dir)`](Transport::connect) creates the incoming FIFO
//!   `dir/<peer>-to-<local>` if the peer has not already, opens its read end at once,
//!   and starts a thread that drains it into the endpoint's inbox. From then on the
//!   peer can open its write end without waiting.
//! - The first [`send`](Transport::send) to a peer opens the outgoing FIFO
//!   `dir/<local>-to-<peer>` (creating it if needed). If the peer has not connected
//!   yet, it retries with a short backoff for up to
//!   [`PipeOptions::open_timeout`] (10 s by default), then fails with
//!   [`TransportError::UnknownEndpoint`]. As soon as the write end is open, both ends
//!   are, and the writer unlinks the FIFO: nothing of a working pair stays on disk.
//! - `send` encodes into a 64 KiB buffer per peer and writes it when it is full;
//!   [`flush`](Transport::flush), [`recv`](Transport::recv) and
//!   [`recv_timeout`](Transport::recv_timeout) write every buffer out.
//! - Readers drain their FIFO into memory whatever the application does, so writes
//!   never wait for the application at the other end, and two endpoints sending each
//!   other large volumes cannot deadlock.
//!
//! Everyone of a run passes the same `dir`: it is what [`address`](Transport::address)
//! returns and what `connect` expects (a different directory is refused with
//! [`TransportError::Protocol`]). The application creates the directory before the
//! endpoints use it and removes it after they are gone.
//!
//! # Guarantees
//!
//! As [`Transport`] asks:
//!
//! - **FIFO per ordered pair**: one pipe per ordered pair, one writer and one reader
//!   thread on it, so frames from `a` to `b` arrive in the order `a` sent them.
//! - **No loss, no duplication** while both ends are alive. A peer that goes away is
//!   reported as [`TransportError::Disconnected`], never silently, and **once**: by the
//!   first call that notices it. After that the pair is closed both ways (our write end
//!   to it is closed too), sends to it fail at once with `Disconnected`, and `recv`
//!   goes on with the other peers. What notices it:
//!   - `recv`, once the peer's FIFO has reached its end (the peer dropped its
//!     transport, exited or was killed), after every frame the peer sent before;
//!   - the call that writes a batch to a peer whose reader has gone (`flush`, `recv`,
//!     or a `send` that fills the batch): the frames of that batch are lost with it;
//!   - the first `send` to a peer whose departure the reader has already seen.
//!
//!   A peer that never wrote to us has no write end to close: when it drops its
//!   transport, it opens and closes the FIFO to every peer it was connected to, so
//!   that they notice. A process killed before it ever sent us anything is noticed
//!   only when we write to it.
//! - **Garbage**: a peer that sends bytes that do not decode, or announces a frame over
//!   [`PipeOptions::max_frame`], is logged (`tracing::warn!`) and dropped: its FIFO is
//!   closed and it is reported as [`TransportError::Disconnected`], exactly as if it
//!   had gone away. Frames it sent before the bad one are delivered first.
//! - A peer that has gone stays gone for this transport: connecting to it again does
//!   nothing.
//! - `recv` and `recv_timeout` return [`TransportError::Closed`] when nothing can
//!   arrive any more: no peer is connected (none yet, or every one has gone).
//!
//! # Cleaning up
//!
//! Dropping a [`PipeTransport`] flushes what it can, closes its write ends (its peers
//! see it go), stops and joins its reader threads, and unlinks every FIFO it created
//! whose other end never opened. Nothing it created stays in `dir`. Every descriptor is
//! opened close-on-exec, so processes the application spawns do not hold pipes open.
//!
//! # Platform
//!
//! Unix only, and written for Linux: a reader opens its FIFO without waiting for the
//! writer and then sleeps in `poll(2)`, relying on Linux not reporting a hang-up on a
//! FIFO whose writer has not come yet. Writing to a FIFO whose reader has gone raises
//! `SIGPIPE`, which Rust programs ignore by default (the write then fails with `EPIPE`
//! and is reported as `Disconnected`); a program that restores `SIGPIPE` must not use
//! this transport.

#![deny(missing_docs)]
#![cfg(unix)]

mod fifo;
mod options;
mod reader;
mod writer;

pub use fifo::fifo_path;
pub use options::{DEFAULT_OPEN_TIMEOUT, PipeOptions};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};
use fifo::FileId;
use reader::{Event, Reader};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::{Endpoint, Transport, TransportError};
use std::collections::{HashMap, VecDeque};
use std::io::{self, PipeWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use writer::Writer;

/// The sending side of a pair, as far as this endpoint knows.
enum Route {
    /// The write end is open.
    Open(Writer),
    /// The peer has gone, and the application has been told: sends to it fail at
    /// once, and the end of its reader is not reported a second time.
    Gone,
}

/// The receiving side of a pair.
struct Incoming {
    /// The reader thread, until it has been joined.
    thread: Option<JoinHandle<()>>,
    /// Set by the reader when it stops.
    finished: Arc<AtomicBool>,
    /// Whether `recv` has taken the reader's [`Event::Ended`].
    ended: bool,
}

impl Incoming {
    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }
}

/// One endpoint of a run whose endpoints talk through FIFOs in a shared directory.
///
/// See the [crate documentation](crate) for how it works and what it guarantees.
pub struct PipeTransport<F> {
    dir: PathBuf,
    local: Endpoint,
    options: PipeOptions,
    /// Write ends, per peer.
    routes: HashMap<Endpoint, Route>,
    /// Whether some writer has buffered frames.
    dirty: bool,
    /// Errors met while flushing several peers, not yet returned.
    failures: VecDeque<TransportError>,
    /// Reader threads, per peer.
    incoming: HashMap<Endpoint, Incoming>,
    /// Readers that have not yet been reported ended.
    live_readers: usize,
    /// Cloned into every reader.
    inbox_tx: Sender<Event<F>>,
    inbox: Receiver<Event<F>>,
    /// The frames of the batch being handed out, and who sent them.
    batch: std::vec::IntoIter<F>,
    batch_from: Endpoint,
    /// Closing it wakes every reader to stop.
    stop_tx: Option<PipeWriter>,
    stop_rx: Arc<io::PipeReader>,
    /// FIFOs this endpoint created and nobody has unlinked yet.
    created: HashMap<PathBuf, FileId>,
}

impl<F> std::fmt::Debug for PipeTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTransport")
            .field("dir", &self.dir)
            .field("local", &self.local)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<F> PipeTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    /// The endpoint `local` of the run whose FIFOs live in `dir`, with the default
    /// [`PipeOptions`]. Creates nothing on disk: FIFOs appear on
    /// [`connect`](Transport::connect) and on the first [`send`](Transport::send) to
    /// a peer.
    pub fn new(dir: impl Into<PathBuf>, local: Endpoint) -> Result<Self, TransportError> {
        Self::with_options(dir, local, PipeOptions::default())
    }

    /// Like [`new`](Self::new), with `options`.
    pub fn with_options(
        dir: impl Into<PathBuf>,
        local: Endpoint,
        options: PipeOptions,
    ) -> Result<Self, TransportError> {
        let (stop_rx, stop_tx) = io::pipe().map_err(|source| TransportError::Io {
            context: format!("creating the stop pipe of {local}"),
            source,
        })?;
        let (inbox_tx, inbox) = unbounded();
        Ok(PipeTransport {
            dir: dir.into(),
            local,
            options,
            routes: HashMap::new(),
            dirty: false,
            failures: VecDeque::new(),
            incoming: HashMap::new(),
            live_readers: 0,
            inbox_tx,
            inbox,
            batch: Vec::new().into_iter(),
            batch_from: local,
            stop_tx: Some(stop_tx),
            stop_rx: Arc::new(stop_rx),
            created: HashMap::new(),
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force.
    pub fn options(&self) -> &PipeOptions {
        &self.options
    }

    fn check_address(&self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        let given = Path::new(address);
        if given == self.dir {
            return Ok(());
        }
        match (given.canonicalize(), self.dir.canonicalize()) {
            (Ok(given), Ok(ours)) if given == ours => Ok(()),
            _ => Err(TransportError::Protocol(format!(
                "{peer} was given the run directory {address}, but {} uses {}",
                self.local,
                self.dir.display()
            ))),
        }
    }

    /// Creates (if needed) and opens the read end of `dir/<peer>-to-<local>`.
    fn open_incoming(&mut self, peer: Endpoint) -> Result<std::fs::File, TransportError> {
        let path = fifo_path(&self.dir, peer, self.local);
        let io_error = |source: io::Error| TransportError::Io {
            context: format!("opening {} to receive from {peer}", path.display()),
            source,
        };
        // A FIFO can vanish between our mkfifo (which found it) and our open, if the
        // peer created it, gave up waiting and was dropped: make it again, a few times.
        let mut attempts = 0;
        loop {
            if let Some(id) = fifo::create(&path).map_err(io_error)? {
                self.created.insert(path.clone(), id);
            }
            match fifo::open_read(&path) {
                Ok(file) => return Ok(file),
                Err(error) if error.kind() == io::ErrorKind::NotFound && attempts < 3 => {
                    attempts += 1;
                }
                Err(error) => return Err(io_error(error)),
            }
        }
    }

    /// Opens the write end to `to`, for its first send. A peer whose reader has
    /// already seen it go is `Disconnected` at once, and from then on.
    fn open_route(&mut self, to: Endpoint) -> Result<Writer, TransportError> {
        let finished = self.incoming.get(&to).map(|i| Arc::clone(&i.finished));
        let peer_gone = || finished.as_ref().is_some_and(|f| f.load(Ordering::Acquire));
        let opened = if peer_gone() {
            Err(TransportError::Disconnected(to))
        } else {
            Writer::open(
                &self.dir,
                self.local,
                to,
                self.options.open_timeout,
                &mut self.created,
                peer_gone,
            )
        };
        if let Err(TransportError::Disconnected(_)) = opened {
            self.routes.insert(to, Route::Gone);
        }
        opened
    }

    /// Hands out the next frame of the current batch, or takes the next event.
    fn take(&mut self, event: Event<F>) -> Option<Result<(Endpoint, F), TransportError>> {
        match event {
            Event::Frames(from, frames) => {
                self.batch_from = from;
                self.batch = frames.into_iter();
                self.batch.next().map(|frame| Ok((from, frame)))
            }
            Event::Ended(peer) => {
                let incoming = self.incoming.get_mut(&peer)?;
                if incoming.ended {
                    return None;
                }
                incoming.ended = true;
                if let Some(thread) = incoming.thread.take() {
                    // It has just said its last word.
                    let _ = thread.join();
                }
                self.live_readers -= 1;
                // The pair is closed both ways: close our write end too, so that the
                // peer (if it is still there, having sent garbage) sees us go.
                match self.routes.insert(peer, Route::Gone) {
                    Some(Route::Gone) => None, // already reported, by a send or flush
                    _ => Some(Err(TransportError::Disconnected(peer))),
                }
            }
        }
    }

    /// Waits for the next frame until `deadline` (`None`: for ever).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<(Endpoint, F)>, TransportError> {
        self.flush()?;
        loop {
            if let Some(frame) = self.batch.next() {
                return Ok(Some((self.batch_from, frame)));
            }
            let event = match self.inbox.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) if self.live_readers == 0 => {
                    return Err(TransportError::Closed);
                }
                Err(TryRecvError::Empty) => {
                    let waited = match deadline {
                        Some(deadline) => self.inbox.recv_deadline(deadline),
                        None => self
                            .inbox
                            .recv()
                            .map_err(|_| RecvTimeoutError::Disconnected),
                    };
                    match waited {
                        Ok(event) => event,
                        Err(RecvTimeoutError::Timeout) => return Ok(None),
                        Err(RecvTimeoutError::Disconnected) => return Err(TransportError::Closed),
                    }
                }
                Err(TryRecvError::Disconnected) => return Err(TransportError::Closed),
            };
            if let Some(result) = self.take(event) {
                return result.map(Some);
            }
        }
    }
}

impl<F> Transport<F> for PipeTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        self.local
    }

    /// Queues `frame` for `to`. The first send to a peer opens the FIFO to it, waiting
    /// up to [`PipeOptions::open_timeout`] for the peer to connect (then
    /// [`TransportError::UnknownEndpoint`]).
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let writer = match self.routes.get_mut(&to) {
            Some(Route::Open(writer)) => writer,
            Some(Route::Gone) => return Err(TransportError::Disconnected(to)),
            None => {
                let writer = self.open_route(to)?;
                self.routes.insert(to, Route::Open(writer));
                match self.routes.get_mut(&to) {
                    Some(Route::Open(writer)) => writer,
                    _ => return Err(TransportError::Disconnected(to)),
                }
            }
        };
        match writer.send(&frame, self.options.max_frame) {
            Ok(()) => {
                self.dirty |= writer.is_dirty();
                Ok(())
            }
            Err(error @ (TransportError::FrameTooLarge { .. } | TransportError::Codec { .. })) => {
                Err(error)
            }
            Err(error) => {
                self.routes.insert(to, Route::Gone);
                Err(error)
            }
        }
    }

    /// Writes every buffered frame. If several peers fail, the first error is
    /// returned and the others by the following calls.
    fn flush(&mut self) -> Result<(), TransportError> {
        if self.dirty {
            self.dirty = false;
            for route in self.routes.values_mut() {
                if let Route::Open(writer) = route
                    && let Err(error) = writer.flush()
                {
                    *route = Route::Gone;
                    self.failures.push_back(error);
                }
            }
        }
        match self.failures.pop_front() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

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

    /// Makes `peer` able to send to this endpoint: creates `dir/<peer>-to-<local>`
    /// unless the peer already has, opens it for reading and starts draining it.
    /// `address` must name this endpoint's run directory (what
    /// [`address`](Transport::address) returns); another directory is refused with
    /// [`TransportError::Protocol`].
    ///
    /// Connecting to a peer already connected does nothing, even if it has gone
    /// since: a peer that has gone stays gone for this transport.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.check_address(peer, address)?;
        if self.incoming.contains_key(&peer) {
            return Ok(());
        }
        let fifo = self.open_incoming(peer)?;
        let finished = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            peer,
            fifo,
            inbox: self.inbox_tx.clone(),
            stop: Arc::clone(&self.stop_rx),
            max_frame: self.options.max_frame,
            finished: Arc::clone(&finished),
        };
        let thread = std::thread::Builder::new()
            .name(format!(
                "pipe {}<-{}",
                fifo::endpoint_name(self.local),
                fifo::endpoint_name(peer)
            ))
            .spawn(move || reader.run())
            .map_err(|source| TransportError::Io {
                context: format!("starting the reader for {peer}"),
                source,
            })?;
        self.incoming.insert(
            peer,
            Incoming {
                thread: Some(thread),
                finished,
                ended: false,
            },
        );
        self.live_readers += 1;
        tracing::debug!(local = %self.local, %peer, "connected");
        Ok(())
    }

    /// The run directory, which every endpoint of the run passes to `connect`.
    fn address(&self) -> Option<String> {
        Some(self.dir.to_string_lossy().into_owned())
    }
}

impl<F> Drop for PipeTransport<F> {
    fn drop(&mut self) {
        for route in self.routes.values_mut() {
            if let Route::Open(writer) = route {
                // Best effort: a peer that has gone cannot be helped.
                let _ = writer.flush();
            }
        }
        // Closing the write ends tells the peers we have gone. Peers that connected to
        // us but were never sent anything are told by opening and closing theirs.
        for (peer, incoming) in &self.incoming {
            if !self.routes.contains_key(peer) && !incoming.is_finished() {
                writer::farewell(&self.dir, self.local, *peer);
            }
        }
        self.routes.clear();
        // Closing the stop pipe wakes every reader; none of them blocks anywhere
        // else, so joining them cannot hang.
        self.stop_tx = None;
        for incoming in self.incoming.values_mut() {
            if let Some(thread) = incoming.thread.take() {
                let _ = thread.join();
            }
        }
        for (path, id) in self.created.drain() {
            fifo::remove_if_same(&path, id);
        }
    }
}
