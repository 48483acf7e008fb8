//! The receiving side of an endpoint: the read ends of its incoming FIFOs, read by the
//! calling thread whenever it waits (to receive, or for a full pipe to drain), through
//! snapshot-core's shared [`Inbound`].
//!
//! A read end is read only when `poll(2)` reports it ready. On Linux a FIFO whose
//! writer has not come yet is never reported (not even as hung up), while a `read`
//! from it would return 0 as if the writer had gone: so a FIFO is taken to have ended
//! only when a read that `poll` asked for finds the end of the stream.

use crate::fifo;
use serde::de::DeserializeOwned;
use snapshot_core::stream::{Inbound, Turn};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Every incoming FIFO of an endpoint, what has been read from them, and the poll set.
pub(crate) struct Reader<F> {
    pub(crate) inbound: Inbound<File, F>,
    /// The poll set: the open read ends (rebuilt when `stale`), then during a wait
    /// the write end waited for.
    fds: Vec<libc::pollfd>,
    /// Whose read end each entry of `fds` is: its index in `inbound`.
    streams: Vec<usize>,
    /// Read ends that gave a whole turn and may hold more.
    more: Vec<usize>,
    stale: bool,
}

impl<F> Reader<F> {
    pub(crate) fn new(max_frame: usize) -> Self {
        Reader {
            inbound: Inbound::new(max_frame),
            fds: Vec::new(),
            streams: Vec::new(),
            more: Vec::new(),
            stale: true,
        }
    }

    /// Starts reading `fifo`, the non-blocking read end of the FIFO from `peer`.
    pub(crate) fn add(&mut self, peer: snapshot_core::Endpoint, fifo: File) {
        self.inbound.add(peer, fifo);
        self.stale = true;
    }

    /// Waits in `poll(2)` until an open read end is ready, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Returns the streams to read and whether `write` can take more.
    fn poll(
        &mut self,
        write: Option<RawFd>,
        timeout: Option<Duration>,
    ) -> io::Result<(Vec<usize>, bool)> {
        if self.stale {
            self.fds.clear();
            self.streams.clear();
            for (index, _, fifo) in self.inbound.open() {
                self.fds.push(libc::pollfd {
                    fd: fifo.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                self.streams.push(index);
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
        // Streams with more to read are read now: no waiting for them.
        let timeout = if self.more.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let polled = fifo::poll(&mut self.fds, timeout);
        // POLLOUT, or POLLERR once the reader has gone (the write then says so).
        let writable = self.fds[reading..].iter().any(|fd| fd.revents != 0);
        self.fds.truncate(reading);
        polled?;
        let mut ready = std::mem::take(&mut self.more);
        for (fd, &index) in self.fds.iter().zip(&self.streams) {
            if fd.revents != 0 && !ready.contains(&index) {
                ready.push(index);
            }
        }
        Ok((ready, writable))
    }

    /// Like [`wait`](Self::wait), but throws away what it reads: for an endpoint that
    /// is going away and only has to keep its peers from waiting on it.
    pub(crate) fn wait_discarding(
        &mut self,
        write: Option<RawFd>,
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
        match turn {
            Turn::Drained => {}
            Turn::More => self.more.push(index),
            Turn::Ended => self.stale = true,
        }
    }
}

impl<F: DeserializeOwned> Reader<F> {
    /// Waits until an incoming FIFO has something to say, or `write` (a FIFO's write
    /// end) can take more, or `timeout` passes (`None`: for ever; zero: only looks).
    /// Reads every FIFO that is ready, decoding what it holds. Says whether `write`
    /// can take more.
    pub(crate) fn wait(
        &mut self,
        write: Option<RawFd>,
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
            self.stale = true;
        } else {
            self.inbound.depart(peer);
        }
    }
}
