//! The sending side of one ordered pair: the FIFO's write end and the frames waiting
//! to go into it.

use crate::fifo::{self, FileId};
use serde::Serialize;
use snapshot_core::codec::{self, CodecError};
use snapshot_core::{Endpoint, TransportError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
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
}

impl Writer {
    /// Opens `dir/<local>-to-<peer>`, creating it if needed, and waits up to
    /// `timeout` for the peer to be reading it; gives up with `Disconnected` if
    /// `peer_gone` says the peer has left meanwhile. Once open, the FIFO is unlinked:
    /// both ends hold it, and nobody else needs its name. FIFOs this call creates are
    /// recorded in `created` until they are unlinked.
    pub(crate) fn open(
        dir: &Path,
        local: Endpoint,
        peer: Endpoint,
        timeout: Duration,
        created: &mut HashMap<PathBuf, FileId>,
        peer_gone: impl Fn() -> bool,
    ) -> Result<Self, TransportError> {
        let path = fifo::fifo_path(dir, local, peer);
        let io_error = |source: io::Error| TransportError::Io {
            context: format!("opening {} to send to {peer}", path.display()),
            source,
        };
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(id) = fifo::create(&path).map_err(io_error)? {
                created.insert(path.clone(), id);
            }
            match fifo::open_write(&path) {
                Ok(fifo) => {
                    let id = FileId::of_file(&fifo).map_err(io_error)?;
                    fifo::remove_if_same(&path, id);
                    created.remove(&path);
                    tracing::debug!(%local, %peer, "opened the FIFO for writing");
                    return Ok(Writer {
                        peer,
                        fifo,
                        buffer: Vec::with_capacity(BATCH + BATCH / 4),
                    });
                }
                // No reader yet: the peer has not connected to us.
                Err(error) if error.raw_os_error() == Some(libc::ENXIO) => {}
                // Removed between our mkfifo and open (its creator gave up on it):
                // make it again.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
            if peer_gone() {
                return Err(TransportError::Disconnected(peer));
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(%local, %peer, ?timeout, "nobody opened the FIFO to read");
                return Err(TransportError::UnknownEndpoint(peer));
            }
            // Backing off, not synchronising: the peer's connect is what we wait for,
            // and the kernel offers no way to sleep until a FIFO gets a reader.
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Queues `frame`, writing the batch out once it is big enough.
    pub(crate) fn send<F: Serialize>(
        &mut self,
        frame: &F,
        max_frame: usize,
    ) -> Result<(), TransportError> {
        codec::encode_into(frame, &mut self.buffer, max_frame).map_err(|error| match error {
            CodecError::TooLarge { size, limit } => TransportError::FrameTooLarge { size, limit },
            other => TransportError::Codec {
                context: format!("frame for {}", self.peer),
                reason: other.to_string(),
            },
        })?;
        if self.buffer.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether frames are waiting in the buffer.
    pub(crate) fn is_dirty(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Writes the buffered frames. After an error the writer is useless: the peer
    /// has gone (`Disconnected`) or the pipe is broken (`Io`), and what was in the
    /// buffer is lost with it.
    pub(crate) fn flush(&mut self) -> Result<(), TransportError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.fifo.write_all(&self.buffer);
        self.buffer.clear();
        result.map_err(|source| {
            if source.kind() == io::ErrorKind::BrokenPipe {
                TransportError::Disconnected(self.peer)
            } else {
                TransportError::Io {
                    context: format!("writing to {}", self.peer),
                    source,
                }
            }
        })
    }
}

/// Tells `peer`, if it is reading `dir/<local>-to-<peer>`, that `local` has gone, by
/// opening that FIFO for writing and closing it at once: its reader then sees the end
/// of the stream. For peers this endpoint never sent anything to.
pub(crate) fn farewell(dir: &Path, local: Endpoint, peer: Endpoint) {
    let path = fifo::fifo_path(dir, local, peer);
    if let Ok(fifo) = fifo::open_write(&path) {
        if let Ok(id) = FileId::of_file(&fifo) {
            fifo::remove_if_same(&path, id);
        }
        tracing::trace!(%local, %peer, "said goodbye");
    }
}
