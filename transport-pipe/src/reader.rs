//! The thread that drains one incoming FIFO into the endpoint's inbox.
//!
//! Readers drain into memory whatever the application is doing, so a writer never
//! waits on the application at the other end: two endpoints sending each other more
//! than a pipe holds, before either receives, cannot deadlock.

use crate::fifo::{self, Wake};
use crossbeam_channel::Sender;
use serde::de::DeserializeOwned;
use snapshot_core::Endpoint;
use snapshot_core::codec::FrameDecoder;
use std::fs::File;
use std::io::{self, PipeReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How much one `read` takes from a FIFO at most.
const CHUNK: usize = 64 * 1024;

/// What a reader hands to its endpoint.
pub(crate) enum Event<F> {
    /// Frames from a peer, in the order it sent them.
    Frames(Endpoint, Vec<F>),
    /// The reader for that peer has stopped: the peer closed its end, or broke the
    /// framing. Sent exactly once per reader, as its last word.
    Ended(Endpoint),
}

/// Everything a reader thread owns.
pub(crate) struct Reader<F> {
    /// Who writes into this FIFO.
    pub(crate) peer: Endpoint,
    /// The FIFO's read end, non-blocking.
    pub(crate) fifo: File,
    /// The endpoint's inbox.
    pub(crate) inbox: Sender<Event<F>>,
    /// Becomes readable (hung up) when the transport is dropped.
    pub(crate) stop: Arc<PipeReader>,
    /// The bound on one frame.
    pub(crate) max_frame: usize,
    /// Set when the reader stops, before [`Event::Ended`] is sent: lets a sender
    /// waiting for this peer give up at once.
    pub(crate) finished: Arc<AtomicBool>,
}

/// Sends [`Event::Ended`] however the reader leaves, a panic in a frame's
/// `Deserialize` included, so that the endpoint's count of live readers stays true.
struct EndNotice<'a, F> {
    peer: Endpoint,
    inbox: &'a Sender<Event<F>>,
    finished: &'a AtomicBool,
}

impl<F> Drop for EndNotice<'_, F> {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::Release);
        let _ = self.inbox.send(Event::Ended(self.peer));
    }
}

impl<F: DeserializeOwned> Reader<F> {
    /// Reads until the peer goes away, the framing breaks, or the transport stops.
    pub(crate) fn run(mut self) {
        let _notice = EndNotice {
            peer: self.peer,
            inbox: &self.inbox,
            finished: &self.finished,
        };
        let peer = self.peer;
        let mut decoder = FrameDecoder::new(self.max_frame);
        let mut chunk = vec![0; CHUNK];
        let mut batch_hint = 0;
        loop {
            match fifo::wait_readable(&self.fifo, &*self.stop) {
                Ok(Wake::Fifo) => {}
                Ok(Wake::Stop) => return,
                Err(error) => {
                    tracing::warn!(%peer, %error, "waiting on the FIFO failed; dropping the peer");
                    return;
                }
            }
            // Read until the pipe is (probably) empty before waiting again: a full
            // chunk suggests more is there, a short one that the writer is behind.
            loop {
                let n = match self.fifo.read(&mut chunk) {
                    Ok(0) => {
                        if decoder.has_partial() {
                            tracing::warn!(%peer, "the peer closed its FIFO in the middle of a frame");
                        } else {
                            tracing::debug!(%peer, "the peer closed its FIFO");
                        }
                        return;
                    }
                    Ok(n) => n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "reading the FIFO failed; dropping the peer");
                        return;
                    }
                };
                decoder.feed(&chunk[..n]);
                let mut batch = Vec::with_capacity(batch_hint);
                let broken = loop {
                    match decoder.next_frame::<F>() {
                        Ok(Some(frame)) => batch.push(frame),
                        Ok(None) => break None,
                        Err(error) => break Some(error),
                    }
                };
                batch_hint = batch.len();
                if !batch.is_empty() && self.inbox.send(Event::Frames(peer, batch)).is_err() {
                    return;
                }
                if let Some(error) = broken {
                    tracing::warn!(%peer, %error, "bad frame on the FIFO; dropping the peer");
                    return;
                }
                if n < chunk.len() {
                    break;
                }
            }
        }
    }
}
