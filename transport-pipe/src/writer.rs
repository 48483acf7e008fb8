//! The sending side of one ordered pair: the FIFO's write end and the frames waiting
//! to go into it.

use crate::fifo::{self, FileId};
use rustix::io::Errno;
use serde::Serialize;
use snapshot_core::codec;
use snapshot_core::{Endpoint, TransportError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Buffered frames are written once they reach this size, and on flush.
pub(crate) const BATCH: usize = 64 * 1024;

/// The longest pause between two attempts to open a FIFO whose reader is not there
/// yet.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// An open write end and its buffer.
pub(crate) struct Writer {
    peer: Endpoint,
    fifo: File,
    buffer: Vec<u8>,
    /// How much of `buffer` is already in the pipe.
    written: usize,
}

impl Writer {
    /// Opens `dir/<local>-to-<peer>`, creating it if needed, and waits up to
    /// `timeout` for the peer to be reading it; gives up with `Disconnected` if
    /// `peer_gone` says the peer has left meanwhile. Asks for a pipe of `pipe_size`
    /// bytes (see [`PipeOptions::pipe_size`](crate::PipeOptions::pipe_size)). Once
    /// open, the FIFO is unlinked: both ends hold it, and nobody else needs its name.
    /// FIFOs this call creates are recorded in `created` until they are unlinked.
    pub(crate) fn open(
        dir: &Path,
        local: Endpoint,
        peer: Endpoint,
        timeout: Duration,
        pipe_size: usize,
        created: &mut HashMap<PathBuf, FileId>,
        mut peer_gone: impl FnMut() -> bool,
    ) -> Result<Self, TransportError> {
        let path = fifo::fifo_path(dir, local, peer);
        let io_error = |source: io::Error| TransportError::Io {
            context: format!("opening {} to send to {peer}", path.display()),
            source,
        };
        // `None`: a timeout past the end of time, which never falls.
        let deadline = Instant::now().checked_add(timeout);
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(id) = fifo::create(&path).map_err(io_error)? {
                created.insert(path.clone(), id);
            }
            match fifo::open_write(&path, pipe_size) {
                Ok(fifo) => {
                    let id = FileId::of_file(&fifo).map_err(io_error)?;
                    fifo::remove_if_same(&path, id);
                    created.remove(&path);
                    tracing::debug!(%local, %peer, "opened the FIFO for writing");
                    return Ok(Writer {
                        peer,
                        fifo,
                        buffer: Vec::with_capacity(BATCH + BATCH / 4),
                        written: 0,
                    });
                }
                // No reader yet: the peer has not connected to us.
                Err(error) if error.raw_os_error() == Some(Errno::NXIO.raw_os_error()) => {}
                // Removed between our mkfifo and open (its creator gave up on it):
                // make it again.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
            if peer_gone() {
                return Err(TransportError::Disconnected(peer));
            }
            let now = Instant::now();
            if deadline.is_some_and(|deadline| now >= deadline) {
                tracing::debug!(%local, %peer, ?timeout, "nobody opened the FIFO to read");
                return Err(TransportError::UnknownEndpoint(peer));
            }
            // Backing off, not synchronising: the peer's connect is what we wait for,
            // and the kernel offers no way to sleep until a FIFO gets a reader.
            let left = deadline.map_or(backoff, |deadline| deadline - now);
            std::thread::sleep(backoff.min(left));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Queues `frame`. Says whether the buffer holds a batch's worth, to be written.
    #[inline]
    pub(crate) fn send<F: Serialize>(
        &mut self,
        frame: &F,
        max_frame: usize,
    ) -> Result<bool, TransportError> {
        if let Err(error) = codec::encode_into(frame, &mut self.buffer, max_frame) {
            return Err(self.refused(error));
        }
        Ok(self.buffer.len() - self.written >= BATCH)
    }

    /// The error of a frame that could not be encoded, as a send reports it. Out of
    /// line, so that a send that succeeds stays small enough to be inlined.
    #[cold]
    #[inline(never)]
    fn refused(&self, error: codec::CodecError) -> TransportError {
        error.into_transport(|| format!("frame for {}", self.peer))
    }

    /// Whether frames are waiting in the buffer.
    pub(crate) fn is_dirty(&self) -> bool {
        self.written < self.buffer.len()
    }

    /// The write end, to wait on when the pipe is full.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fifo.as_fd()
    }

    /// Writes as much of the buffer as the pipe takes without waiting. Says whether
    /// all of it is written. After an error the writer is useless: the peer has gone
    /// (`Disconnected`) or the pipe is broken (`Io`), and what was in the buffer is
    /// lost with it.
    pub(crate) fn write_some(&mut self) -> Result<bool, TransportError> {
        while self.written < self.buffer.len() {
            match self.fifo.write(&self.buffer[self.written..]) {
                Ok(n) => self.written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.buffer.clear();
                    self.written = 0;
                    return Err(if source.kind() == io::ErrorKind::BrokenPipe {
                        TransportError::Disconnected(self.peer)
                    } else {
                        TransportError::Io {
                            context: format!("writing to {}", self.peer),
                            source,
                        }
                    });
                }
            }
        }
        self.buffer.clear();
        self.written = 0;
        Ok(true)
    }
}

/// Tells `peer`, if it is reading `dir/<local>-to-<peer>`, that `local` has gone, by
/// opening that FIFO for writing and closing it at once: its reader then sees the end
/// of the stream. For peers this endpoint never sent anything to.
pub(crate) fn farewell(dir: &Path, local: Endpoint, peer: Endpoint) {
    let path = fifo::fifo_path(dir, local, peer);
    if let Ok(fifo) = fifo::open_write(&path, 0) {
        if let Ok(id) = FileId::of_file(&fifo) {
            fifo::remove_if_same(&path, id);
        }
        tracing::trace!(%local, %peer, "said goodbye");
    }
}
