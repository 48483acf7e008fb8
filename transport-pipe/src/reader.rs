//! The receiving side of an endpoint: the read ends of its incoming FIFOs, read by the
//! calling thread whenever it waits (to receive, or for a full pipe to drain), and the
//! frames taken from them that the application has not had yet.
//!
//! A read end is read only when `poll(2)` reports it ready. On Linux a FIFO whose
//! writer has not come yet is never reported (not even as hung up), while a `read`
//! from it would return 0 as if the writer had gone: so a FIFO is taken to have ended
//! only when a read that `poll` asked for finds the end of the stream.

use crate::fifo;
use serde::de::DeserializeOwned;
use snapshot_core::Endpoint;
use snapshot_core::codec::FrameDecoder;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// How much one `read` takes from a FIFO at most.
const CHUNK: usize = 64 * 1024;

/// How many full chunks one FIFO may give in a row before the others get their
/// turn: a peer that writes as fast as it is read cannot keep the endpoint for
/// itself.
const CHUNKS_PER_TURN: usize = 16;

/// What has come in, in the order it was read.
pub(crate) enum Arrival<F> {
    /// A frame from a peer.
    Frame(Endpoint, F),
    /// The FIFO from that peer has ended: the peer closed its end, or broke the
    /// framing. Comes exactly once per peer, after its last frame.
    Ended(Endpoint),
}

/// One incoming FIFO.
struct Incoming {
    /// The read end (non-blocking), until the FIFO has ended.
    fifo: Option<File>,
    /// The bytes of a frame not yet whole.
    decoder: FrameDecoder,
}

/// What became of one read of a FIFO.
enum Outcome {
    /// This many bytes, now in the chunk.
    Bytes(usize),
    /// Nothing for now.
    Empty,
    /// The end of the stream, or an error that ends it.
    End,
}

/// Every incoming FIFO of an endpoint, and what has been read from them.
pub(crate) struct Inbound<F> {
    incoming: HashMap<Endpoint, Incoming>,
    /// Read but not yet handed out, in the order it was read.
    arrived: VecDeque<Arrival<F>>,
    /// Where reads land before they are decoded (allocated on the first read).
    chunk: Vec<u8>,
    /// The poll set: the open read ends (rebuilt when `stale`), then during a wait
    /// the write end waited for.
    fds: Vec<libc::pollfd>,
    /// Whose read end each entry of `fds` is.
    peers: Vec<Endpoint>,
    stale: bool,
}

impl<F> Inbound<F> {
    pub(crate) fn new() -> Self {
        Inbound {
            incoming: HashMap::new(),
            arrived: VecDeque::new(),
            chunk: Vec::new(),
            fds: Vec::new(),
            peers: Vec::new(),
            stale: true,
        }
    }

    /// Whether a FIFO from `peer` was ever added.
    pub(crate) fn knows(&self, peer: Endpoint) -> bool {
        self.incoming.contains_key(&peer)
    }

    /// Whether the FIFO from `peer` has ended (the peer has gone, or was dropped).
    pub(crate) fn has_ended(&self, peer: Endpoint) -> bool {
        self.incoming.get(&peer).is_some_and(|i| i.fifo.is_none())
    }

    /// The peers that were ever connected to this endpoint.
    pub(crate) fn peers(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.incoming.keys().copied()
    }

    /// Starts reading `fifo`, the non-blocking read end of the FIFO from `peer`.
    pub(crate) fn add(&mut self, peer: Endpoint, fifo: File, max_frame: usize) {
        self.incoming.insert(
            peer,
            Incoming {
                fifo: Some(fifo),
                decoder: FrameDecoder::new(max_frame),
            },
        );
        self.stale = true;
    }

    /// The oldest arrival not handed out yet.
    pub(crate) fn pop(&mut self) -> Option<Arrival<F>> {
        self.arrived.pop_front()
    }

    /// Whether something has arrived that is not handed out yet.
    pub(crate) fn has_arrivals(&self) -> bool {
        !self.arrived.is_empty()
    }

    /// Waits in `poll(2)` until an open read end is ready, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Leaves the read ends' `revents` in `fds` for the caller. Returns `None` if
    /// there is nothing to wait for (no open read end and no `write`), else whether
    /// `write` can take more.
    fn poll(
        &mut self,
        write: Option<RawFd>,
        timeout: Option<Duration>,
    ) -> io::Result<Option<bool>> {
        if self.stale {
            self.fds.clear();
            self.peers.clear();
            for (&peer, incoming) in &self.incoming {
                if let Some(fifo) = &incoming.fifo {
                    self.fds.push(libc::pollfd {
                        fd: fifo.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    self.peers.push(peer);
                }
            }
            self.stale = false;
        }
        let reading = self.fds.len();
        if let Some(fd) = write {
            self.fds.push(libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        if self.fds.is_empty() {
            return Ok(None);
        }
        let polled = fifo::poll(&mut self.fds, timeout);
        // POLLOUT, or POLLERR once the reader has gone (the write then says so).
        let writable = self.fds[reading..].iter().any(|fd| fd.revents != 0);
        self.fds.truncate(reading);
        match polled {
            Ok(_) => Ok(Some(writable)),
            Err(error) => {
                // Nothing is ready for the caller to read.
                for fd in &mut self.fds {
                    fd.revents = 0;
                }
                Err(error)
            }
        }
    }

    /// The peers whose read ends the last [`poll`](Self::poll) found ready.
    fn ready(&self) -> Vec<Endpoint> {
        self.fds
            .iter()
            .zip(&self.peers)
            .filter(|(fd, _)| fd.revents != 0)
            .map(|(_, &peer)| peer)
            .collect()
    }

    /// One read of the FIFO from `peer` into the chunk.
    fn read_once(&mut self, peer: Endpoint) -> Outcome {
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let Some(fifo) = self.incoming.get_mut(&peer).and_then(|i| i.fifo.as_mut()) else {
            return Outcome::Empty;
        };
        loop {
            return match fifo.read(&mut self.chunk) {
                Ok(0) => Outcome::End,
                Ok(n) => Outcome::Bytes(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Outcome::Empty,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%peer, %error, "reading the FIFO failed; dropping the peer");
                    Outcome::End
                }
            };
        }
    }

    /// Closes the FIFO from `peer` and records that it has ended.
    fn end(&mut self, peer: Endpoint) {
        if let Some(incoming) = self.incoming.get_mut(&peer)
            && incoming.fifo.take().is_some()
        {
            self.arrived.push_back(Arrival::Ended(peer));
            self.stale = true;
        }
    }

    /// Like [`wait`](Self::wait), but throws away what it reads: for an endpoint that
    /// is going away and only has to keep its peers from waiting on it.
    pub(crate) fn wait_discarding(
        &mut self,
        write: Option<RawFd>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let Some(writable) = self.poll(write, timeout)? else {
            return Ok(false);
        };
        for peer in self.ready() {
            for _ in 0..CHUNKS_PER_TURN {
                match self.read_once(peer) {
                    Outcome::Bytes(n) if n == CHUNK => {}
                    Outcome::Bytes(_) | Outcome::Empty => break,
                    Outcome::End => {
                        self.end(peer);
                        break;
                    }
                }
            }
        }
        Ok(writable)
    }
}

impl<F: DeserializeOwned> Inbound<F> {
    /// Waits until an incoming FIFO has something to say, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Reads every FIFO that is ready, decoding what it holds. Says whether `write`
    /// can take more.
    ///
    /// With nothing to wait for (no open FIFO and no `write`), returns at once.
    pub(crate) fn wait(
        &mut self,
        write: Option<RawFd>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let Some(writable) = self.poll(write, timeout)? else {
            return Ok(false);
        };
        for peer in self.ready() {
            self.read(peer);
        }
        Ok(writable)
    }

    /// Reads what the FIFO from `peer` holds (up to a turn's worth), decoding every
    /// whole frame.
    fn read(&mut self, peer: Endpoint) {
        for _ in 0..CHUNKS_PER_TURN {
            let n = match self.read_once(peer) {
                Outcome::Bytes(n) => n,
                Outcome::Empty => return,
                Outcome::End => {
                    if self
                        .incoming
                        .get(&peer)
                        .is_some_and(|i| i.decoder.has_partial())
                    {
                        tracing::warn!(%peer, "the peer closed its FIFO in the middle of a frame");
                    } else {
                        tracing::debug!(%peer, "the peer closed its FIFO");
                    }
                    self.end(peer);
                    return;
                }
            };
            let Some(incoming) = self.incoming.get_mut(&peer) else {
                return;
            };
            incoming.decoder.feed(&self.chunk[..n]);
            loop {
                match incoming.decoder.next_frame::<F>() {
                    Ok(Some(frame)) => self.arrived.push_back(Arrival::Frame(peer, frame)),
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "bad frame on the FIFO; dropping the peer");
                        self.end(peer);
                        return;
                    }
                }
            }
            // A short read: the pipe is (probably) empty. If not, poll says so again.
            if n < CHUNK {
                return;
            }
        }
    }
}
