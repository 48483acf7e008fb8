//! The knobs of a [`PipeTransport`](crate::PipeTransport).

use snapshot_core::codec::DEFAULT_MAX_FRAME;
use std::time::Duration;

/// How long the first [`send`](snapshot_core::Transport::send) to a peer waits, by
/// default, for that peer to open its end of the FIFO.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings for a [`PipeTransport`](crate::PipeTransport): start from
/// [`PipeOptions::default`] and change what you need.
///
/// ```
/// use std::time::Duration;
/// use transport_pipe::PipeOptions;
///
/// let options = PipeOptions::default()
///     .with_max_frame(1024 * 1024)
///     .with_open_timeout(Duration::from_secs(2));
/// assert_eq!(options.max_frame, 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeOptions {
    /// The bound on one frame's encoded size, both ways: `send` refuses a larger
    /// frame with
    /// [`TransportError::FrameTooLarge`](snapshot_core::TransportError::FrameTooLarge),
    /// and a peer announcing one is taken to be sending garbage. Every endpoint of a
    /// run should use the same bound. Default:
    /// [`DEFAULT_MAX_FRAME`](snapshot_core::codec::DEFAULT_MAX_FRAME).
    pub max_frame: usize,
    /// How long the first `send` to a peer waits for that peer to
    /// [`connect`](snapshot_core::Transport::connect) to this endpoint (that is, to
    /// open the FIFO for reading) before it fails with
    /// [`TransportError::UnknownEndpoint`](snapshot_core::TransportError::UnknownEndpoint).
    /// Default: [`DEFAULT_OPEN_TIMEOUT`].
    pub open_timeout: Duration,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            max_frame: DEFAULT_MAX_FRAME,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
        }
    }
}

impl PipeOptions {
    /// These options with [`max_frame`](Self::max_frame) set to `bytes`.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// These options with [`open_timeout`](Self::open_timeout) set to `timeout`.
    pub fn with_open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }
}
