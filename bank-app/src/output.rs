//! The master's standard output.
//!
//! While a script file runs, what the master prints is buffered, which saves a system
//! call per printed line. When commands come from standard input, which may be a
//! person or a program waiting for each answer, every write goes out at once.
//!
//! Either way the buffer is flushed before anything is written to standard error, so
//! that the two keep their order when they go to the same place, and before the
//! process exits, however it exits. A handle can be cloned for the thread that ends
//! the process on a signal: [`Stdout::hold`] flushes the buffer and keeps anyone else
//! from printing until the process has exited.

use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How much is buffered before it is written.
const CAPACITY: usize = 64 * 1024;

/// A handle on the process's standard output, buffered or not. Clones share the
/// buffer.
#[derive(Debug, Clone)]
pub struct Stdout {
    buffer: Arc<Mutex<BufWriter<io::Stdout>>>,
    buffered: bool,
}

impl Stdout {
    /// A handle that buffers what it is given (`buffered`) or writes it at once.
    pub fn new(buffered: bool) -> Self {
        Stdout {
            buffer: Arc::new(Mutex::new(BufWriter::with_capacity(CAPACITY, io::stdout()))),
            buffered,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BufWriter<io::Stdout>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out what is buffered, and holds the output: nobody prints through a
    /// handle on it while the guard lives.
    pub fn hold(&self) -> MutexGuard<'_, BufWriter<io::Stdout>> {
        let mut out = self.lock();
        let _ = out.flush();
        out
    }
}

impl Write for Stdout {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut out = self.lock();
        let written = out.write(bytes)?;
        if !self.buffered {
            out.flush()?;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}
