//! The knobs of a [`PipeTransport`](crate::PipeTransport).

use snapshot_core::codec::DEFAULT_MAX_FRAME;
use std::time::Duration;

/// How long the first [`send`](snapshot_core::Transport::send) to a peer waits, by
/// default, for that peer to open its end of the FIFO.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How much, by default, a pipe is asked to hold: 256 KiB, four times the kernel's
/// default. Enough for a sender to run well ahead of its receiver, and small enough
/// that the bank's largest runs stay within an unprivileged user's pipe allowance.
pub const DEFAULT_PIPE_SIZE: usize = 256 * 1024;

/// Settings for a [`PipeTransport`](crate::PipeTransport): start from
/// [`PipeOptions::default`] and change what you need.
///
/// ```
/// use std::time::Duration;
/// use transport_pipe::PipeOptions;
///
/// let options = PipeOptions::default()
///     .with_max_frame(1024 * 1024)
///     .with_open_timeout(Duration::from_secs(2))
///     .with_pipe_size(1024 * 1024);
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
    /// How many bytes the pipe to each peer is asked to hold (`F_SETPIPE_SZ`, when
    /// the write end is opened). A bigger pipe lets a sender run further ahead of its
    /// receiver before it has to wait. Best effort: the kernel rounds the size up to
    /// a power of two pages and, for unprivileged users, refuses more than
    /// `/proc/sys/fs/pipe-max-size` (1 MiB by default) and any growth that would take
    /// the user's pipes together past `/proc/sys/fs/pipe-user-pages-soft` (64 MiB by
    /// default; past it, the kernel also gives that user's new pipes two pages
    /// only). A pipe whose growth is refused keeps the size it has (64 KiB by
    /// default); runs with many endpoints under one unprivileged user may want less
    /// here. Zero leaves every pipe as the kernel makes it. Default:
    /// [`DEFAULT_PIPE_SIZE`].
    pub pipe_size: usize,
}

impl Default for PipeOptions {
    fn default() -> Self {
        PipeOptions {
            max_frame: DEFAULT_MAX_FRAME,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            pipe_size: DEFAULT_PIPE_SIZE,
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

    /// These options with [`pipe_size`](Self::pipe_size) set to `bytes`.
    pub fn with_pipe_size(mut self, bytes: usize) -> Self {
        self.pipe_size = bytes;
        self
    }
}
