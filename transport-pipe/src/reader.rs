//! The receiving side of an endpoint: the read ends of its incoming FIFOs, read by the
//! calling thread whenever it waits (to receive, or for a full pipe to drain), through
//! snapshot-core's shared [`Inbound`].
//!
//! A read end is read only when `poll(2)` reports it ready. On Linux a FIFO whose
//! writer has not come yet is never reported (not even as hung up), while a `read`
//! from it would return 0 as if the writer had gone: so a FIFO is taken to have ended
//! only when a read that `poll` asked for finds the end of the stream.

use crate::fifo;
use rustix::event::{PollFd, PollFlags};
use serde::de::DeserializeOwned;
use snapshot_core::stream::{Inbound, Turn};
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// Every incoming FIFO of an endpoint, and what has been read from them.
pub(crate) struct Reader<F> {
    pub(crate) inbound: Inbound<File, F>,
    /// Whose read end each entry of a wait's poll set is: its index in `inbound`.
    /// The poll set borrows the open read ends, so each wait makes its own.
    streams: Vec<usize>,
    /// Read ends that gave a whole turn and may hold more.
    more: Vec<usize>,
}

impl<F> Reader<F> {
    pub(crate) fn new(max_frame: usize) -> Self {
        Reader {
            inbound: Inbound::new(max_frame),
            streams: Vec::new(),
            more: Vec::new(),
        }
    }

    /// Starts reading `fifo`, the non-blocking read end of the FIFO from `peer`.
    pub(crate) fn add(&mut self, peer: snapshot_core::Endpoint, fifo: File) {
        self.inbound.add(peer, fifo);
    }

    /// Waits in `poll(2)` until an open read end is ready, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Returns the streams to read and whether `write` can take more.
    fn poll(
        &mut self,
        write: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<(Vec<usize>, bool)> {
        let mut fds = Vec::with_capacity(self.streams.len() + 1);
        self.streams.clear();
        for (index, _, fifo) in self.inbound.open() {
            fds.push(PollFd::new(fifo, PollFlags::IN));
            self.streams.push(index);
        }
        let reading = fds.len();
        if let Some(fd) = write {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::OUT));
        }
        // Streams with more to read are read now: no waiting for them.
        let timeout = if self.more.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let polled = fifo::poll(&mut fds, timeout);
        // POLLOUT, or POLLERR once the reader has gone (the write then says so).
        let writable = fds[reading..].iter().any(|fd| !fd.revents().is_empty());
        polled?;
        let mut ready = std::mem::take(&mut self.more);
        for (fd, &index) in fds.iter().zip(&self.streams) {
            if !fd.revents().is_empty() && !ready.contains(&index) {
                ready.push(index);
            }
        }
        Ok((ready, writable))
    }

    /// Like [`wait`](Self::wait), but throws away what it reads: for an endpoint that
    /// is going away and only has to keep its peers from waiting on it.
    pub(crate) fn wait_discarding(
        &mut self,
        write: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let (ready, writable) = self.poll(write, timeout)?;
        for index in ready {
            let turn = self.inbound.discard(index);
            self.after(index, turn);
        }
        Ok(writable)
    }

    fn after(&mut self, index: usize, turn: Turn) {
        // A stream that ended was closed: the next poll set leaves it out.
        if turn == Turn::More {
            self.more.push(index);
        }
    }
}

impl<F: DeserializeOwned> Reader<F> {
    /// Waits until an incoming FIFO has something to say, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Reads every FIFO that is ready, keeping the whole frames it holds. Says whether `write`
    /// can take more.
    pub(crate) fn wait(
        &mut self,
        write: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<bool> {
        let (ready, writable) = self.poll(write, timeout)?;
        for index in ready {
            let turn = self.inbound.read(index);
            self.after(index, turn);
        }
        Ok(writable)
    }

    /// Reads what the FIFO from `peer` holds, without waiting, to its end or until it
    /// is empty, then closes it: `peer` has gone (it closed its read end), and its
    /// departure comes after the frames it sent.
    pub(crate) fn finish(&mut self, peer: snapshot_core::Endpoint) {
        if let Some(index) = self.inbound.stream_of(peer) {
            while self.inbound.read(index) == Turn::More {}
            self.inbound.close(index);
        } else {
            self.inbound.depart(peer);
        }
    }
}
