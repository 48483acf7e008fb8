//! The script's lines, read on a thread of their own, so that the master can wait for
//! the next line and for news of its roles at once.
//!
//! Lines travel in batches: as many as are already read (up to [`BATCH`]), so that a
//! script file costs a hand-over per batch rather than per line, while a line typed
//! at a terminal is handed over as soon as it is complete.

use crossbeam_channel::Receiver;
use std::io::{self, BufRead, BufReader, Read};

/// The most lines handed over at once.
const BATCH: usize = 256;

/// How many batches are read ahead of the line running.
const AHEAD: usize = 8;

/// What the reading thread hands over: lines, each with its `\n` but perhaps the
/// last of the input, or the error that ended the reading.
pub type Batch = io::Result<Vec<Vec<u8>>>;

/// The lines of a script, as they are read.
pub struct Lines {
    batches: Receiver<Batch>,
    pending: std::vec::IntoIter<Vec<u8>>,
}

impl Lines {
    /// Starts reading `input` on a thread of its own, until its end, an error, or
    /// nobody takes the lines any more.
    pub fn read(input: impl Read + Send + 'static) -> io::Result<Lines> {
        let (hand, batches) = crossbeam_channel::bounded(AHEAD);
        let mut input = BufReader::with_capacity(64 * 1024, input);
        std::thread::Builder::new()
            .name("script".to_string())
            .spawn(move || {
                loop {
                    let (lines, end) = read_batch(&mut input);
                    if !lines.is_empty() && hand.send(Ok(lines)).is_err() {
                        return;
                    }
                    match end {
                        None => {}
                        Some(Ok(())) => return,
                        Some(Err(error)) => {
                            let _ = hand.send(Err(error));
                            return;
                        }
                    }
                }
            })?;
        Ok(Lines {
            batches,
            pending: Vec::new().into_iter(),
        })
    }

    /// The next line already handed over, if there is one.
    pub fn next_read(&mut self) -> Option<Vec<u8>> {
        self.pending.next()
    }

    /// Where the next batch comes, once [`next_read`](Self::next_read) has none left;
    /// it disconnects at the end of the input.
    pub fn batches(&self) -> &Receiver<Batch> {
        &self.batches
    }

    /// Takes `lines`, a batch just received, and returns the first.
    pub fn take(&mut self, lines: Vec<Vec<u8>>) -> Option<Vec<u8>> {
        self.pending = lines.into_iter();
        self.pending.next()
    }
}

/// One line, and then as many more as are already read, without waiting for more
/// input; and how the input ended, if it has.
fn read_batch<R: Read>(input: &mut BufReader<R>) -> (Vec<Vec<u8>>, Option<io::Result<()>>) {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return (lines, Some(Ok(()))),
            Ok(_) => lines.push(line),
            Err(error) => return (lines, Some(Err(error))),
        }
        if lines.len() >= BATCH || !input.buffer().contains(&b'\n') {
            return (lines, None);
        }
    }
}
