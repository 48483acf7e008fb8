//! The `Transport` contract, checked by snapshot-core's conformance suite, over named
//! pipes in a run directory of the test's own.

use snapshot_core::codec::DEFAULT_MAX_FRAME;
use snapshot_core::conformance::{FLOOD_PAYLOAD, Network, Probe};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use transport_pipe::{PipeOptions, PipeTransport};

/// The pipe each pair is asked for: the kernel's default, so that the memory bound
/// is checked quickly.
const PIPE_SIZE: usize = 64 * 1024;

/// What a sender buffers before it writes (`writer::BATCH`), and a frame more.
const SENDER_BUFFER: usize = 64 * 1024 + 2 * FLOOD_PAYLOAD;

struct Pipes {
    dir: Arc<TempDir>,
}

impl Pipes {
    fn new() -> Self {
        Pipes {
            dir: Arc::new(tempfile::tempdir().expect("a temporary directory")),
        }
    }
}

/// An endpoint that keeps the run directory until it is dropped.
struct InDir {
    transport: PipeTransport<Probe>,
    _dir: Arc<TempDir>,
}

impl Transport<Probe> for InDir {
    fn local(&self) -> Endpoint {
        self.transport.local()
    }
    fn address(&self) -> String {
        self.transport.address()
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.transport.connect(peer, address)
    }
    fn send(&mut self, to: Endpoint, frame: Probe) -> Result<(), TransportError> {
        self.transport.send(to, frame)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.transport.flush()
    }
    fn recv(&mut self) -> Result<Incoming<Probe>, TransportError> {
        self.transport.recv()
    }
    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        self.transport.recv_timeout(timeout)
    }
}

impl Network for Pipes {
    type Transport = InDir;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<Self::Transport, TransportError> {
        let options = PipeOptions::default().with_pipe_size(PIPE_SIZE);
        Ok(InDir {
            transport: PipeTransport::with_options(self.dir.path(), endpoint, options)?,
            _dir: Arc::clone(&self.dir),
        })
    }

    fn max_frame(&self) -> Option<usize> {
        Some(DEFAULT_MAX_FRAME)
    }

    /// The pipe, and what the sender has buffered.
    fn held_bound(&self) -> Option<usize> {
        Some((PIPE_SIZE + SENDER_BUFFER) / FLOOD_PAYLOAD)
    }
}

snapshot_core::conformance_tests!(crate::Pipes::new());
