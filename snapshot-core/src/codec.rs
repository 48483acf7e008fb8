//! Frames as bytes, for transports that cross a process boundary: a 4-byte
//! little-endian length, then the value in postcard. Pure functions over buffers; the
//! transports do the reading and writing.

use crate::TransportError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// The default bound on one frame's encoded size. A length above it is taken as
/// garbage rather than honoured with an allocation.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// The size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// A frame that cannot be encoded or decoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// postcard refused the value or the bytes.
    #[error("postcard")]
    Postcard(#[from] postcard::Error),
    /// The frame is over the bound.
    #[error("frame of {size} bytes is over the {limit}-byte bound")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The bound.
        limit: usize,
    },
}

impl CodecError {
    /// The error as a transport reports it: [`TransportError::FrameTooLarge`] for a
    /// frame over the bound, [`TransportError::Codec`] (with `context`, saying where
    /// the frame was going or came from) for the rest.
    pub fn into_transport(self, context: impl FnOnce() -> String) -> TransportError {
        match self {
            CodecError::TooLarge { size, limit } => TransportError::FrameTooLarge { size, limit },
            other => TransportError::Codec {
                context: context(),
                reason: other.to_string(),
            },
        }
    }
}

/// Appends `value` to `out` as one frame.
pub fn encode_into<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    if let Err(error) = postcard::serialize_with_flavor(value, Appender(out)) {
        out.truncate(start);
        return Err(error.into());
    }
    let size = out.len() - start - LENGTH_PREFIX;
    if size > limit || u32::try_from(size).is_err() {
        out.truncate(start);
        return Err(CodecError::TooLarge { size, limit });
    }
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(size as u32).to_le_bytes());
    Ok(())
}

/// Lets postcard append to a caller's buffer without taking it: each byte a `push`,
/// each run of bytes one copy, with no iterator in between.
struct Appender<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Appender<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Where the undecoded bytes start in `buffer`.
    start: usize,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Whether bytes of an incomplete frame are waiting.
    pub fn has_partial(&self) -> bool {
        self.start < self.buffer.len()
    }

    /// Keeps a buffer that grows by doubling, as a `Vec` does while the bytes of a
    /// frame of `frame` bytes (its prefix included) come in, from passing the frame's
    /// end: once doubling would pass it, the buffer is made exactly as large as the
    /// frame. Room is never made ahead of the bytes, or 4 bytes of a peer's could
    /// claim the bound; and a frame at the bound takes the bound, not twice it.
    fn make_room(&mut self, frame: usize) {
        let end = self.start + frame;
        let capacity = self.buffer.capacity();
        if capacity < end && capacity.saturating_mul(2) > end {
            self.buffer.reserve_exact(end - self.buffer.len());
        }
    }

    /// The next whole frame, if one has arrived. After an error the stream cannot be
    /// trusted: drop it.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let pending = &self.buffer[self.start..];
        let Some(prefix) = pending.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let mut length = [0; LENGTH_PREFIX];
        length.copy_from_slice(prefix);
        let size = u32::from_le_bytes(length) as usize;
        if size > self.limit {
            return Err(CodecError::TooLarge {
                size,
                limit: self.limit,
            });
        }
        let Some(body) = pending.get(LENGTH_PREFIX..LENGTH_PREFIX + size) else {
            self.make_room(LENGTH_PREFIX + size);
            return Ok(None);
        };
        let value = postcard::from_bytes(body)?;
        self.start += LENGTH_PREFIX + size;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buffer.len() {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let values: Vec<(u32, String)> = (0..50).map(|i| (i, "x".repeat(i as usize))).collect();
        let mut bytes = Vec::new();
        for v in &values {
            encode_into(v, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
        }
        for piece in [1, 3, 7, 64, bytes.len()] {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                decoder.feed(chunk);
                while let Some(v) = decoder.next_frame::<(u32, String)>().unwrap() {
                    got.push(v);
                }
            }
            assert_eq!(got, values, "pieces of {piece}");
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn oversized_and_garbage_frames_are_errors() {
        let mut bytes = Vec::new();
        assert!(matches!(
            encode_into(&vec![0u8; 100], &mut bytes, 10),
            Err(CodecError::TooLarge { .. })
        ));
        assert!(bytes.is_empty(), "a refused frame leaves nothing behind");
        let mut decoder = FrameDecoder::new(10);
        decoder.feed(&1000u32.to_le_bytes());
        assert!(matches!(
            decoder.next_frame::<u8>(),
            Err(CodecError::TooLarge { size: 1000, .. })
        ));
        let mut decoder = FrameDecoder::new(10);
        decoder.feed(&[2, 0, 0, 0, 0xff, 0xff]);
        assert!(decoder.next_frame::<String>().is_err());
    }
}
