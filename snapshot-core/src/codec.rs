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
#[inline]
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
///
/// What is fed is checked at once, frame by frame, as far as whole frames go: their
/// length prefixes are read (a frame over the bound is an error from there on), and
/// [`ready`](Self::ready) counts the whole frames. Their bodies are decoded only when
/// [`next_frame`](Self::next_frame) asks for them, one at a time, straight from the
/// bytes that were fed.
///
/// Bytes come in by [`feed`](Self::feed), a copy, or are read straight into the
/// decoder: [`room`](Self::room), then [`commit`](Self::commit).
#[derive(Debug)]
pub struct FrameDecoder {
    /// The bytes of the stream up to `filled`; beyond, room to read into.
    buffer: Vec<u8>,
    /// Where the bytes of the stream end in `buffer`.
    filled: usize,
    /// Where the undecoded bytes start in `buffer`.
    start: usize,
    /// Where the whole frames end in `buffer`: an incomplete frame, if any, starts here.
    whole: usize,
    /// How many whole frames lie between `start` and `whole`.
    ready: usize,
    /// The size announced by a frame over the bound, which ends the stream after the
    /// whole frames before it.
    refused: Option<usize>,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `limit` bytes.
    pub fn new(limit: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            filled: 0,
            start: 0,
            whole: 0,
            ready: 0,
            refused: None,
            limit,
        }
    }

    /// Adds bytes read from the stream, and counts the frames they complete.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.buffer.truncate(self.filled);
        self.buffer.extend_from_slice(bytes);
        self.filled = self.buffer.len();
        self.scan();
    }

    /// Room for up to `max` more bytes of the stream, after those held, to read into
    /// without a copy; then [`commit`](Self::commit) what was read. The room is that
    /// already allocated if there is at least half of `max` of it, else `max` (the
    /// buffer grows by doubling); while a frame over `max` bytes comes in, it is what
    /// is left of the room made for the frame when its prefix came in, so that the frame
    /// does not make the buffer grow past it. It may thus be shorter than `max`: a
    /// read that fills it may have left more to read.
    pub fn room(&mut self, max: usize) -> &mut [u8] {
        self.compact();
        let capacity = self.buffer.capacity();
        let spare = capacity - self.filled;
        let large_frame = self
            .pending_end()
            .is_some_and(|end| end - self.whole > max && end > self.filled && end <= capacity);
        if spare >= max / 2 || large_frame {
            // Zeroes once what the allocation has not yet exposed: no reallocation.
            self.buffer.resize(capacity, 0);
        } else if self.buffer.len() < self.filled + max {
            self.buffer.resize(self.filled + max, 0);
        }
        let end = self.buffer.len().min(self.filled + max);
        &mut self.buffer[self.filled..end]
    }

    /// Takes the first `n` bytes of the last [`room`](Self::room) as read from the
    /// stream (no more than the room), and counts the frames they complete.
    pub fn commit(&mut self, n: usize) {
        self.filled = (self.filled + n).min(self.buffer.len());
        self.scan();
    }

    /// Where the incomplete frame after the whole ones ends, once its prefix is in.
    fn pending_end(&self) -> Option<usize> {
        let prefix = self.buffer[self.whole..self.filled].first_chunk::<LENGTH_PREFIX>()?;
        let size = u32::from_le_bytes(*prefix) as usize;
        Some(self.whole + LENGTH_PREFIX + size)
    }

    /// How many whole frames have been fed and not taken by
    /// [`next_frame`](Self::next_frame) yet.
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// The error that ends the stream once the [`ready`](Self::ready) frames are
    /// taken, if the bytes fed so far hold one that shows without decoding: a length
    /// over the bound.
    pub fn refusal(&self) -> Option<CodecError> {
        self.refused.map(|size| CodecError::TooLarge {
            size,
            limit: self.limit,
        })
    }

    /// Whether bytes of an incomplete frame are waiting (beyond the
    /// [`ready`](Self::ready) frames).
    pub fn has_partial(&self) -> bool {
        self.whole < self.filled
    }

    /// Drops the bytes already decoded: all of them if nothing is left, else by moving
    /// what is left to the front once that costs no more than what was decoded since
    /// (so that each byte is moved a bounded number of times).
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let left = self.filled - self.start;
        if left <= self.start {
            self.buffer.copy_within(self.start..self.filled, 0);
        } else {
            return;
        }
        self.filled = left;
        self.whole -= self.start;
        self.start = 0;
    }

    /// Counts the frames that the bytes after `whole` complete, up to an incomplete
    /// one or one over the bound.
    fn scan(&mut self) {
        while self.refused.is_none() {
            let pending = &self.buffer[self.whole..self.filled];
            let Some(prefix) = pending.first_chunk::<LENGTH_PREFIX>() else {
                return;
            };
            let size = u32::from_le_bytes(*prefix) as usize;
            if size > self.limit {
                self.refused = Some(size);
                return;
            }
            if pending.len() - LENGTH_PREFIX < size {
                self.make_room(LENGTH_PREFIX + size);
                return;
            }
            self.whole += LENGTH_PREFIX + size;
            self.ready += 1;
        }
    }

    /// Keeps a buffer that grows by doubling, as a `Vec` does while the bytes of a
    /// frame of `frame` bytes (its prefix included) come in, from passing the frame's
    /// end: once doubling would pass it, the buffer is made exactly as large as the
    /// frame. Room is never made ahead of the bytes, or 4 bytes of a peer's could
    /// claim the bound; and a frame at the bound takes the bound, not twice it.
    fn make_room(&mut self, frame: usize) {
        let end = self.whole + frame;
        let capacity = self.buffer.capacity();
        if capacity < end && capacity.saturating_mul(2) > end {
            self.buffer.reserve_exact(end - self.buffer.len());
        }
    }

    /// The next whole frame, if one has arrived. After an error the stream cannot be
    /// trusted: drop it.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        if self.ready == 0 {
            return match self.refusal() {
                Some(error) => Err(error),
                None => Ok(None),
            };
        }
        // A whole frame, whose prefix `scan` has read.
        let pending = &self.buffer[self.start..self.whole];
        let Some((prefix, rest)) = pending.split_first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        let size = u32::from_le_bytes(*prefix) as usize;
        let Some(body) = rest.get(..size) else {
            return Ok(None);
        };
        let value = postcard::from_bytes(body)?;
        self.start += LENGTH_PREFIX + size;
        self.ready -= 1;
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes 50 frames of growing size, hands them to a fresh decoder in pieces of
    /// every size in turn, through `give`, and checks they all come out whole and in
    /// order.
    fn survives_any_split(give: impl Fn(&mut FrameDecoder, &[u8], usize)) {
        let values: Vec<(u32, String)> = (0..50).map(|i| (i, "x".repeat(i as usize))).collect();
        let mut bytes = Vec::new();
        for v in &values {
            encode_into(v, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
        }
        for piece in [1, 3, 7, 64, bytes.len()] {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut got = Vec::new();
            for chunk in bytes.chunks(piece) {
                give(&mut decoder, chunk, piece);
                while let Some(v) = decoder.next_frame::<(u32, String)>().unwrap() {
                    got.push(v);
                }
            }
            assert_eq!(got, values, "pieces of {piece}");
            assert!(!decoder.has_partial());
            assert_eq!(decoder.ready(), 0);
        }
    }

    #[test]
    fn frames_survive_any_split() {
        survives_any_split(|decoder, chunk, _| decoder.feed(chunk));
    }

    #[test]
    fn frames_are_counted_as_they_come_and_decoded_as_they_are_taken() {
        let mut bytes = Vec::new();
        for v in [7u32, 70_000, 9] {
            encode_into(&v, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
        }
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        // The second frame is cut in its body, the third in its prefix.
        decoder.feed(&bytes[..7]);
        assert_eq!(decoder.ready(), 1);
        assert!(decoder.has_partial());
        decoder.feed(&bytes[7..12]);
        assert_eq!(decoder.ready(), 2);
        assert_eq!(decoder.next_frame::<u32>().unwrap(), Some(7));
        assert_eq!(decoder.ready(), 1);
        decoder.feed(&bytes[12..]);
        assert_eq!(decoder.ready(), 2);
        assert!(!decoder.has_partial());
        assert_eq!(decoder.next_frame::<u32>().unwrap(), Some(70_000));
        assert_eq!(decoder.next_frame::<u32>().unwrap(), Some(9));
        assert_eq!(decoder.next_frame::<u32>().unwrap(), None);
        assert_eq!(decoder.ready(), 0);
    }

    /// Reads `bytes` into `decoder` through its room, at most `piece` at a time.
    fn read_into(decoder: &mut FrameDecoder, mut bytes: &[u8], piece: usize, max: usize) {
        while !bytes.is_empty() {
            let room = decoder.room(max);
            let n = room.len().min(piece).min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            decoder.commit(n);
            bytes = &bytes[n..];
        }
    }

    #[test]
    fn frames_read_into_the_room_survive_any_split() {
        survives_any_split(|decoder, chunk, piece| read_into(decoder, chunk, piece, 16));
    }

    #[test]
    fn the_room_for_a_large_frame_ends_with_it() {
        let frame = vec![9u8; 1000];
        let mut bytes = Vec::new();
        encode_into(&frame, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        // Rooms of 64 bytes at most, filled each time.
        let mut rooms = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let room = decoder.room(64);
            rooms.push(room.len());
            let n = room.len().min(rest.len());
            room[..n].copy_from_slice(&rest[..n]);
            decoder.commit(n);
            rest = &rest[n..];
        }
        assert_eq!(
            rooms.iter().sum::<usize>(),
            bytes.len(),
            "no room past the frame"
        );
        assert!(rooms.iter().all(|&r| r <= 64));
        assert_eq!(decoder.next_frame::<Vec<u8>>().unwrap(), Some(frame));
        // What was read is dropped before the next room is made.
        assert!(decoder.room(64).len() >= 64);
    }

    #[test]
    fn a_length_over_the_bound_is_refused_after_the_frames_before_it() {
        let mut bytes = Vec::new();
        encode_into(&5u8, &mut bytes, 10).unwrap();
        bytes.extend_from_slice(&11u32.to_le_bytes());
        let mut decoder = FrameDecoder::new(10);
        decoder.feed(&bytes);
        assert_eq!(decoder.ready(), 1);
        assert!(matches!(
            decoder.refusal(),
            Some(CodecError::TooLarge { size: 11, .. })
        ));
        assert_eq!(decoder.next_frame::<u8>().unwrap(), Some(5));
        assert!(matches!(
            decoder.next_frame::<u8>(),
            Err(CodecError::TooLarge {
                size: 11,
                limit: 10
            })
        ));
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
