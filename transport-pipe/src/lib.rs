//! A [`Transport`] for `snapshot-core` over named pipes (FIFOs): every endpoint is an
//! OS process of its own, every ordered pair of endpoints has its own FIFO in a run
//! directory they share, and frames are length-prefixed postcard
//! ([`snapshot_core::codec`]).
//!
//! ```
//! use snapshot_core::{Endpoint, Incoming, NodeId, Transport};
//! use transport_pipe::PipeTransport;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The application owns the run directory; here both endpoints are in one process.
//! let dir = tempfile::tempdir()?;
//! let mut master = PipeTransport::<String>::new(dir.path(), Endpoint::Role(1))?;
//! let mut node = PipeTransport::<String>::new(dir.path(), Endpoint::Node(NodeId(1)))?;
//! let address = master.address();
//! master.connect(node.local(), &address)?;
//! node.connect(Endpoint::Role(1), &address)?;
//!
//! node.send(Endpoint::Role(1), "hello".to_string())?;
//! node.flush()?;
//! assert_eq!(master.recv()?, Incoming::Frame(node.local(), "hello".to_string()));
//! drop((master, node));
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "no FIFO is left behind");
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! Frames from `a` to `b` go through the FIFO `dir/<a>-to-<b>`, with endpoints named
//! `node-5` and `role-0` (see [`fifo_path`]). There are no threads: every
//! read and write is made by the thread calling the transport.
//!
//! - [`connect(peer, dir)`](Transport::connect) creates the incoming FIFO
//!   `dir/<peer>-to-<local>` if the peer has not already, and opens its read end at
//!   once, non-blocking. From then on the peer can open its write end without waiting.
//! - The first [`send`](Transport::send) to a peer opens the outgoing FIFO
//!   `dir/<local>-to-<peer>` (creating it if needed), non-blocking, and asks the kernel
//!   for a pipe of [`PipeOptions::pipe_size`] (256 KiB by default, best effort). If the
//!   peer has not connected yet, it retries with a short backoff for up to
//!   [`PipeOptions::open_timeout`] (10 s by default), then fails with
//!   [`TransportError::UnknownEndpoint`]. As soon as the write end is open, both ends
//!   are, and the writer unlinks the FIFO: nothing of a working pair stays on disk.
//! - `send` encodes into a 64 KiB buffer per peer and writes it when it is full;
//!   [`flush`](Transport::flush), [`recv`](Transport::recv) and
//!   [`recv_timeout`](Transport::recv_timeout) write every buffer out. A flush writes
//!   first to the peer whose frame was received last, which in request-reply traffic
//!   is the one waiting for an answer, then to the others in the order they were sent
//!   to.
//! - `recv` and `recv_timeout` flush, then hand out the frames already read, in the
//!   order they were read. When there are none, they wait in `poll(2)` on every
//!   incoming FIFO at once (after spinning, if asked: see [Latency](#latency)), and
//!   read each one that is ready until it is empty (or has given 1 MiB, so that one
//!   busy peer cannot keep the others waiting); each frame is decoded from the bytes
//!   read when it is handed out.
//! - A write that finds the pipe full waits in `poll(2)` for it to drain **and** for
//!   the incoming FIFOs, reading whatever arrives meanwhile into memory. So two
//!   endpoints sending each other large volumes at once cannot deadlock, while an
//!   endpoint that does not receive at all holds back its senders once its pipes are
//!   full, as the [`Transport`] contract allows. Bytes sent to an endpoint while it is
//!   not inside one of these calls wait in the pipe.
//!
//! Everyone of a run passes the same `dir`: it is what [`address`](Transport::address)
//! returns and what `connect` expects (a different directory is refused with
//! [`TransportError::Protocol`]). The application creates the directory before the
//! endpoints use it and removes it after they are gone.
//!
//! # Guarantees
//!
//! The [`Transport`] contract, as `tests/conformance.rs` checks it:
//!
//! - **FIFO per ordered pair**: one pipe per ordered pair, written by one endpoint and
//!   read by one, its bytes decoded in order, so frames from `a` to `b` arrive in the
//!   order `a` sent them. Frames from different peers are handed out in the order
//!   they were read.
//! - **No loss, no duplication** while both ends are alive.
//! - **Departures**: `recv` returns [`Incoming::Departed`] once per peer, after every
//!   frame it sent, when its FIFO to us reaches its end (the peer dropped its
//!   transport, exited or was killed) or a write finds its read end closed (then its
//!   FIFO to us is read to its end first). After that the pair is closed both ways
//!   (our write end to it is closed too), and sends to it fail with
//!   [`TransportError::Disconnected`]. A flush drops the frames of a peer that has
//!   gone. A peer that never wrote to us has no write end to close: when it drops its
//!   transport, it opens and closes the FIFO to every peer it was connected to, so that
//!   they notice. A process killed before it ever sent us anything is noticed only
//!   when we write to it.
//! - **Garbage**: a peer that sends bytes that do not decode, or announces a frame over
//!   [`PipeOptions::max_frame`], is logged (`tracing::warn!`) and dropped: its FIFO is
//!   closed and it departs, exactly as if it had gone away. Frames it sent before the
//!   bad one are delivered first. Nothing a peer writes makes the transport panic.
//! - **No peer left**: once every peer has departed, `recv` and `recv_timeout` return
//!   [`TransportError::Closed`]; before the first [`connect`](Transport::connect) they
//!   wait (there is nothing to read until then).
//! - **Bounded memory**: what waits for an endpoint that does not call its transport
//!   is what its pipes hold, [`PipeOptions::pipe_size`] per peer, plus what each
//!   sender has buffered for it (up to a 64 KiB batch and one frame).

//! # Latency
//!
//! A frame that comes while `recv` sleeps in `poll(2)` costs one wake-up, of the
//! calling thread, which then reads the FIFO itself; on a virtual machine whose idle
//! cores halt, that wake-up can be most of a round trip.
//! [`PipeTransport::set_spin`] makes `recv` poll the FIFOs for a while before it
//! sleeps, at the price of a busy core while it spins. `examples/pipe_throughput.rs`
//! measures both. Without spinning, `recv` yields its core once before it sleeps,
//! and looks again: threads that are ready run first, and on a machine with fewer
//! cores than busy threads they are often the peers about to write to it, whose
//! frames are then read without a sleep and a wake-up. With no other thread ready
//! the yield returns at once.
//!
//! # Cleaning up
//!
//! Dropping a [`PipeTransport`] writes out what is buffered (waiting up to [`LINGER`]
//! for full pipes, reading and discarding what arrives meanwhile so that a peer doing
//! the same is not stuck either), closes its write ends (its peers see it go) and its
//! read ends, and unlinks every FIFO it created whose other end never opened. Nothing
//! it created stays in `dir`, and no thread is left: there never was one. Every
//! descriptor is opened close-on-exec, so processes the application spawns do not
//! hold pipes open.
//!
//! # Platform
//!
//! Unix only, and written for Linux, which it relies on in two ways. A read end is
//! opened without waiting for the writer, and read only when `poll(2)` says so:
//! Linux reports nothing, not even a hang-up, for a FIFO whose writer has never
//! opened it (a `read` would find no writer and return 0 as if it had gone), and
//! reports the hang-up once the writer has opened and closed it. And pipes are
//! enlarged with `fcntl(F_SETPIPE_SZ)`. Writing to a FIFO whose reader has gone
//! raises `SIGPIPE`, which Rust programs ignore by default (the write then fails with
//! `EPIPE` and is reported as `Disconnected`); a program that restores `SIGPIPE` must
//! not use this transport.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg(unix)]

mod fifo;
mod options;
mod reader;
mod writer;

pub use fifo::fifo_path;
pub use options::{DEFAULT_OPEN_TIMEOUT, DEFAULT_PIPE_SIZE, PipeOptions};

use fifo::FileId;
use reader::Reader;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::stream::{EndpointMap, Patience, Spin, flush_order};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use writer::Writer;

/// How long dropping a [`PipeTransport`] waits for its peers' full pipes to take what
/// it has buffered for them before it gives up on them.
pub const LINGER: Duration = Duration::from_secs(5);

/// The sending side of a pair, as far as this endpoint knows.
enum Route {
    /// Connected; the write end opens on the first send.
    Connected,
    /// The write end is open: the writer at this index of `writers`.
    Open(usize),
    /// The peer has gone: sends to it fail at once.
    Gone,
}

/// One endpoint of a run whose endpoints talk through FIFOs in a shared directory.
///
/// See the [crate documentation](crate) for how it works and what it guarantees.
pub struct PipeTransport<F> {
    dir: PathBuf,
    local: Endpoint,
    options: PipeOptions,
    /// The sending side, per connected peer.
    routes: EndpointMap<Route>,
    /// The open write ends, by the index their [`Route::Open`] holds; `None` once
    /// the peer has gone (an index is never reused).
    writers: Vec<Option<Writer>>,
    /// The peer sent to last and the index of its writer, so that a run of sends to
    /// one peer looks its route up once: a stale entry finds its writer gone.
    last_sent: Option<(Endpoint, usize)>,
    /// The peers whose buffers may hold frames, each once, in the order they were
    /// first sent to since the last flush.
    dirty: Vec<Endpoint>,
    /// The incoming FIFOs and what has been read from them.
    reader: Reader<F>,
    /// Who sent the frame handed out last.
    last_from: Endpoint,
    /// How long `recv` polls before it sleeps.
    spin: Spin,
    /// FIFOs this endpoint created and nobody has unlinked yet.
    created: HashMap<PathBuf, FileId>,
}

impl<F> std::fmt::Debug for PipeTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeTransport")
            .field("dir", &self.dir)
            .field("local", &self.local)
            .field("options", &self.options)
            .field("spin", &self.spin)
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
        Ok(PipeTransport {
            dir: dir.into(),
            local,
            reader: Reader::new(options.max_frame),
            options,
            routes: EndpointMap::default(),
            writers: Vec::new(),
            last_sent: None,
            dirty: Vec::new(),
            last_from: local,
            spin: Spin::new(Duration::ZERO),
            created: HashMap::new(),
        })
    }
}

impl<F> PipeTransport<F> {
    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in force.
    pub fn options(&self) -> &PipeOptions {
        &self.options
    }

    /// Polls the FIFOs for frames for up to `spin` before sleeping in `recv` and
    /// `recv_timeout` (never past the latter's timeout).
    ///
    /// On a machine where waking a sleeping thread is slow (a virtual machine whose
    /// idle cores halt), spinning takes a quick reply without a wake-up, at the price
    /// of a busy core while it lasts. Worth it for one endpoint that waits for round
    /// trips; on a machine with fewer cores than spinning threads it slows
    /// everything down. The default is no spinning.
    ///
    /// A spin that the frame outlasts turns spinning off until a wait ends within
    /// `spin` again (see [`Spin`]): an endpoint waiting through a long step (peers
    /// starting, connecting, taking a snapshot) leaves the core to them.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = Spin::new(spin);
    }
}

impl<F> PipeTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
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

    /// Opens the write end to `to`, for its first send.
    fn open_route(&mut self, to: Endpoint) -> Result<Writer, TransportError> {
        let reader = &mut self.reader;
        Writer::open(
            &self.dir,
            self.local,
            to,
            self.options.open_timeout,
            self.options.pipe_size,
            &mut self.created,
            || {
                // Takes in what has come meanwhile: the peer may have gone. A failure
                // to look is not a departure; the open goes on trying.
                let _ = reader.wait(None, Some(Duration::ZERO));
                reader.inbound.peers().has_departed(to)
            },
        )
    }

    /// `peer` has gone (a write found its read end closed): what it sent comes first,
    /// then its departure; sends to it fail from now on.
    fn lose(&mut self, peer: Endpoint) {
        self.set_gone(peer);
        self.reader.finish(peer);
    }

    /// Marks `peer` as gone, and closes the write end to it, if open.
    fn set_gone(&mut self, peer: Endpoint) {
        if let Some(Route::Open(at)) = self.routes.insert(peer, Route::Gone)
            && let Some(slot) = self.writers.get_mut(at)
        {
            *slot = None;
        }
    }

    /// The index of the writer to `to`, opening the FIFO on the first send to it;
    /// an error for a peer that has gone or is unknown. Remembers it for the next
    /// send.
    #[inline(never)]
    fn route_for(&mut self, to: Endpoint) -> Result<usize, TransportError> {
        let at = match self.routes.get(&to) {
            Some(&Route::Open(at)) => at,
            Some(Route::Gone) => return Err(TransportError::Disconnected(to)),
            None => return Err(TransportError::UnknownEndpoint(to)),
            Some(Route::Connected) => {
                let writer = match self.open_route(to) {
                    Ok(writer) => writer,
                    Err(TransportError::Disconnected(_)) => {
                        self.lose(to);
                        return Err(TransportError::Disconnected(to));
                    }
                    Err(error) => return Err(error),
                };
                let at = self.writers.len();
                self.writers.push(Some(writer));
                self.routes.insert(to, Route::Open(at));
                at
            }
        };
        if !matches!(self.writers.get(at), Some(Some(_))) {
            return Err(TransportError::Disconnected(to));
        }
        self.last_sent = Some((to, at));
        Ok(at)
    }

    /// The oldest arrival not handed out yet, if any.
    #[inline]
    fn pop(&mut self) -> Option<Incoming<F>> {
        let incoming = self.reader.inbound.pop()?;
        match incoming {
            Incoming::Frame(from, _) => self.last_from = from,
            Incoming::Departed(peer) => self.close_route(peer),
        }
        Some(incoming)
    }

    /// `peer` has departed: the pair is closed both ways, and our write end closes
    /// too, so that the peer (if it is still there, having sent garbage) sees us go.
    #[cold]
    #[inline(never)]
    fn close_route(&mut self, peer: Endpoint) {
        self.set_gone(peer);
    }

    /// What has arrived, without waiting: the frames already read, else one look at
    /// the FIFOs. What [`next`](Self::next) does with a deadline already passed,
    /// without reading the clock, which a node draining a flood calls once a frame.
    fn next_now(&mut self) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all()?;
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        self.look_now()
    }

    /// [`next_now`](Self::next_now) once what had arrived is all handed out: one look
    /// at the FIFOs. Kept out of line, so that taking a frame already read stays
    /// small enough to be inlined into the caller's loop.
    #[inline(never)]
    fn look_now(&mut self) -> Result<Option<Incoming<F>>, TransportError> {
        if self.reader.inbound.is_closed() {
            return Err(TransportError::Closed);
        }
        wait(&mut self.reader, self.local, None, Some(Duration::ZERO))?;
        Ok(self.pop())
    }

    /// Waits for the next frame or departure until `deadline` (`None`: for ever),
    /// spinning first for up to [`spin`](Self::set_spin).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all()?;
        // What has already arrived is handed out before the clock is read.
        if let Some(incoming) = self.pop() {
            return Ok(Some(incoming));
        }
        let began = self.spin.begin();
        let patience = Patience::new(deadline, self.spin.next());
        let mut yielded = false;
        loop {
            if let Some(incoming) = self.pop() {
                self.spin.ended(began);
                return Ok(Some(incoming));
            }
            if self.reader.inbound.is_closed() {
                return Err(TransportError::Closed);
            }
            let mut look = patience.look();
            if look.timeout != Some(Duration::ZERO) && !yielded {
                // About to sleep: the threads that are ready run first, and the FIFOs
                // are looked at once more (see [Latency](crate#latency)).
                yielded = true;
                std::thread::yield_now();
                look.timeout = Some(Duration::ZERO);
            }
            wait(&mut self.reader, self.local, None, look.timeout)?;
            if !self.reader.inbound.has_arrivals() {
                if look.last {
                    self.spin.ended(began);
                    return Ok(None);
                }
                if look.spinning {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// Writes everything buffered for `peer`, waiting for its pipe to drain (reading
    /// the incoming FIFOs meanwhile) for as long as it takes. A peer that has gone is
    /// marked so, and its frames dropped: receiving reports its departure.
    fn write_out(&mut self, peer: Endpoint) -> Result<(), TransportError> {
        loop {
            let Some(&Route::Open(at)) = self.routes.get(&peer) else {
                return Ok(());
            };
            let Some(Some(writer)) = self.writers.get_mut(at) else {
                return Ok(());
            };
            match writer.write_some() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(TransportError::Disconnected(_)) => {
                    self.lose(peer);
                    return Ok(());
                }
                Err(error) => {
                    self.lose(peer);
                    return Err(error);
                }
            }
            // Until the pipe can take more; reading is what lets a peer that is
            // writing to us at the same time get on, and then read what we write.
            while !wait(&mut self.reader, self.local, Some(writer.fd()), None)? {}
        }
    }

    /// Writes out every buffer that holds frames. Called for every frame taken, so
    /// the common case, nothing buffered, costs no call.
    #[inline]
    fn flush_all(&mut self) -> Result<(), TransportError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        self.flush_dirty()
    }

    fn flush_dirty(&mut self) -> Result<(), TransportError> {
        flush_order(&mut self.dirty, self.last_from);
        let dirty = std::mem::take(&mut self.dirty);
        for (at, &peer) in dirty.iter().enumerate() {
            if let Err(error) = self.write_out(peer) {
                // What is left stays buffered for next time.
                self.dirty = dirty[at + 1..].to_vec();
                return Err(error);
            }
        }
        Ok(())
    }
}

/// [`Reader::wait`] for the endpoint `local`, with errors as the transport reports
/// them.
fn wait<F: DeserializeOwned>(
    reader: &mut Reader<F>,
    local: Endpoint,
    write: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> Result<bool, TransportError> {
    reader
        .wait(write, timeout)
        .map_err(|source| TransportError::Io {
            context: format!("waiting on the FIFOs of {local}"),
            source,
        })
}

impl<F> Transport<F> for PipeTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        self.local
    }

    /// The run directory, which every endpoint of the run passes to `connect`.
    fn address(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// Makes `peer` a peer: creates `dir/<peer>-to-<local>` unless the peer already
    /// has, and opens it for reading; the FIFO the other way opens on the first send.
    /// `address` must name this endpoint's run directory (what
    /// [`address`](Transport::address) returns); another directory is refused with
    /// [`TransportError::Protocol`].
    ///
    /// Connecting to a peer already connected does nothing, even if it has gone
    /// since: a peer that has gone stays gone for this transport.
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.check_address(peer, address)?;
        if self.routes.contains_key(&peer) {
            return Ok(());
        }
        let fifo = self.open_incoming(peer)?;
        self.reader.add(peer, fifo);
        self.routes.insert(peer, Route::Connected);
        tracing::debug!(local = %self.local, %peer, "connected");
        Ok(())
    }

    /// Queues `frame` for `to`. The first send to a peer opens the FIFO to it, waiting
    /// up to [`PipeOptions::open_timeout`] for the peer to connect (then
    /// [`TransportError::UnknownEndpoint`]). A batch's worth of frames is written at
    /// once; if the pipe is full, the send waits for it to drain, reading the frames
    /// sent to this endpoint meanwhile.
    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let at = match self.last_sent {
            Some((peer, at)) if peer == to => at,
            _ => self.route_for(to)?,
        };
        let writer = match self.writers.get_mut(at) {
            Some(Some(writer)) => writer,
            // The peer sent to last has gone since.
            _ => return Err(TransportError::Disconnected(to)),
        };
        let was_dirty = writer.is_dirty();
        let full = writer.send(&frame, self.options.max_frame)?;
        if !was_dirty && !self.dirty.contains(&to) {
            self.dirty.push(to);
        }
        if full {
            self.write_out(to)?;
        }
        Ok(())
    }

    /// Writes every buffered frame, waiting for full pipes to drain (reading the
    /// frames sent to this endpoint meanwhile). The peer whose frame was received last
    /// goes first: in request-reply traffic it is the one waiting, for the reply just
    /// queued. Frames for peers that have gone are dropped: receiving reports them.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all()
    }

    fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        loop {
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
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.next(Some(deadline)),
            // A timeout too long to represent is no timeout.
            None => self.recv().map(Some),
        }
    }

    /// Why `peer`'s FIFO to this endpoint ended, if it did not simply end: a read that
    /// failed, a frame that did not decode, an end in the middle of a frame.
    fn departure_cause(&self, peer: Endpoint) -> Option<String> {
        self.reader.inbound.departure_cause(peer).map(str::to_owned)
    }
}

impl<F> Drop for PipeTransport<F> {
    fn drop(&mut self) {
        let deadline = Instant::now() + LINGER;
        let mut peers: Vec<Endpoint> = self.routes.keys().copied().collect();
        peers.sort();
        for &peer in &peers {
            // Best effort: a peer that has gone, or stays full past the linger,
            // cannot be helped.
            while let Some(&Route::Open(at)) = self.routes.get(&peer)
                && let Some(Some(writer)) = self.writers.get_mut(at)
            {
                if !matches!(writer.write_some(), Ok(false)) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                // A peer may be waiting to write to us while we wait to write to it:
                // what it sends is read, and thrown away.
                if self
                    .reader
                    .wait_discarding(Some(writer.fd()), Some(deadline - now))
                    .is_err()
                {
                    break;
                }
            }
        }
        // Closing the write ends tells the peers we have gone. Peers we connected to
        // but never sent anything are told by opening and closing theirs.
        for peer in peers {
            if matches!(self.routes.get(&peer), Some(Route::Connected)) {
                writer::farewell(&self.dir, self.local, peer);
            }
        }
        self.routes.clear();
        self.writers.clear();
        for (path, id) in self.created.drain() {
            fifo::remove_if_same(&path, id);
        }
    }
}
