//! The master's standard output.
//!
//! While a script file runs, what the master prints is buffered, which saves a system
//! call per printed line. When commands come from standard input, which may be a
//! person or a program waiting for each answer, every write goes out at once.
//!
//! Either way the buffer is flushed before anything is written to standard error, so
//! that the two keep their order when they go to the same place, and before the
//! process exits, however it exits: the buffer is process-wide for that reason, since
//! the ways out are on different threads (see [`crate::cleanup`]).

use std::io::{self, BufWriter, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How much is buffered before it is written.
const CAPACITY: usize = 64 * 1024;

static STDOUT: Mutex<Option<BufWriter<io::Stdout>>> = Mutex::new(None);

fn stdout() -> MutexGuard<'static, Option<BufWriter<io::Stdout>>> {
    STDOUT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on the process's standard output, buffered or not.
#[derive(Debug, Clone, Copy)]
pub struct Stdout {
    buffered: bool,
}

impl Stdout {
    /// A handle that buffers what it is given (`buffered`) or writes it at once.
    pub fn new(buffered: bool) -> Self {
        Stdout { buffered }
    }
}

impl Write for Stdout {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut guard = stdout();
        let out = guard.get_or_insert_with(|| BufWriter::with_capacity(CAPACITY, io::stdout()));
        let written = out.write(bytes)?;
        if !self.buffered {
            out.flush()?;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        flush()
    }
}

/// Writes out whatever is buffered.
pub fn flush() -> io::Result<()> {
    match stdout().as_mut() {
        Some(out) => out.flush(),
        None => Ok(()),
    }
}
