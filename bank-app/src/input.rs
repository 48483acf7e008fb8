//! The script's lines, read on a thread of their own, so that the master can wait for
//! the next line and for news of its roles at once.
//!
//! Lines travel in batches: as many as are already read (up to `BATCH`, 256), so that a
//! script file costs a hand-over per batch rather than per line, while a line typed
//! at a terminal is handed over as soon as it is complete.

use crossbeam_channel::Receiver;
use std::io::{self, BufRead, BufReader, Read};

/// The longest line that can be a command, in bytes without its `\n`; a comment
/// may be longer. Of a longer line only the first `MAX_LINE + 1` bytes are handed
/// over, which is enough for parsing to refuse it.
pub const MAX_LINE: usize = 1 << 20;

/// The most lines handed over at once.
const BATCH: usize = 256;

/// How many batches are read ahead of the line running.
const AHEAD: usize = 8;

/// What the reading thread hands over: lines, each with its `\n` but perhaps the
/// last of the input (a line longer than [`MAX_LINE`] cut to its first
/// `MAX_LINE + 1` bytes, without it), or the error that ended the reading.
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
        let limit = MAX_LINE as u64 + 1;
        match (&mut *input).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return (lines, Some(Ok(()))),
            Ok(_) => {
                let cut = line.len() > MAX_LINE && line.last() != Some(&b'\n');
                lines.push(line);
                // A line too long to keep: the rest of it is read and dropped.
                if cut && let Err(error) = skip_line(input) {
                    return (lines, Some(Err(error)));
                }
            }
            Err(error) => return (lines, Some(Err(error))),
        }
        if lines.len() >= BATCH || !input.buffer().contains(&b'\n') {
            return (lines, None);
        }
    }
}

/// Reads `input` up to and with the next `\n`, or to its end, keeping nothing.
fn skip_line<R: Read>(input: &mut BufReader<R>) -> io::Result<()> {
    loop {
        let buffer = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                input.consume(all);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `text` holds, as the reading thread hands them over.
    fn all(text: Vec<u8>) -> Vec<Vec<u8>> {
        let mut input = BufReader::with_capacity(1024, io::Cursor::new(text));
        let mut lines = Vec::new();
        loop {
            let (batch, end) = read_batch(&mut input);
            lines.extend(batch);
            if let Some(end) = end {
                end.unwrap();
                return lines;
            }
        }
    }

    #[test]
    fn a_line_too_long_is_cut_and_the_next_read_whole() {
        let mut long = vec![b'x'; 3 * MAX_LINE];
        long.push(b'\n');
        let exact = vec![b'y'; MAX_LINE];
        let text = [&b"first\n"[..], &long, &exact, b"\nlast"].concat();
        let lines = all(text);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], b"first\n");
        assert_eq!(lines[1], vec![b'x'; MAX_LINE + 1], "cut, its end dropped");
        assert_eq!(lines[2], [&exact[..], b"\n"].concat(), "just fits");
        assert_eq!(lines[3], b"last");
        // Cut without an end of line, at the end of the input.
        let lines = all(vec![b'z'; MAX_LINE + 10]);
        assert_eq!(lines, [vec![b'z'; MAX_LINE + 1]]);
    }
}
