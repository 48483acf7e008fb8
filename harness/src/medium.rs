//! The media a run can use: the bank's [`TransportKind`] (whose `name()` is the
//! name of a medium in benchmark ids), and what the harness needs to know of each
//! besides.
//!
//! On mem the harness uses `transport-mem` batching (`MemNetwork::with_batching`):
//! crossbeam channels between threads; on pipe, a named FIFO per ordered pair; on
//! tcp, a loopback TCP connection per ordered pair.

use crate::TransportKind;
use clap::ValueEnum;

/// What the harness needs to know of a medium.
pub trait Medium: Copy + Sized + 'static {
    /// Every medium, in the order the bank's `--transport` lists them (mem, pipe,
    /// tcp): the order the benchmarks run them in.
    fn all() -> &'static [Self];

    /// How many transfers a busy node sends between two looks at what has arrived.
    ///
    /// Every look flushes the transport's buffers, so on pipe and tcp it is also
    /// how many frames a write carries at most: enough to fill most of a 64 KiB
    /// buffer. In memory a batch crosses at 256 frames anyway, and looking as often
    /// keeps queues short.
    fn batch(self) -> u64;
}

impl Medium for TransportKind {
    fn all() -> &'static [Self] {
        TransportKind::value_variants()
    }

    fn batch(self) -> u64 {
        bank_app::live::cluster::batch(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_are_the_banks_transports_in_order() {
        let names: Vec<&str> = TransportKind::all().iter().map(|m| m.name()).collect();
        assert_eq!(names, ["mem", "pipe", "tcp"]);
    }
}
