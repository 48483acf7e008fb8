//! The inbound side of a transport over byte streams (FIFOs, sockets): the incoming
//! streams, read by whoever polls them, and what has been decoded from them and not
//! handed out yet.

use crate::Endpoint;
use crate::Incoming;
use crate::codec::FrameDecoder;
use crate::stream::Peers;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::io::{self, Read};

/// How much one `read` takes from a stream at most.
const CHUNK: usize = 64 * 1024;

/// How many full chunks one stream may give in a row before the others get their
/// turn: a peer that writes as fast as it is read cannot keep the endpoint for itself.
const CHUNKS_PER_TURN: usize = 16;

/// What one [`Inbound::read`] of a stream found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The stream is empty for now.
    Drained,
    /// The stream gave a whole turn's worth and may hold more: read it again after
    /// the others.
    More,
    /// The stream has ended (end of stream, a read error, or a frame that does not
    /// decode) and is closed.
    Ended,
}

/// One incoming stream.
struct Stream<S> {
    peer: Endpoint,
    source: S,
    decoder: FrameDecoder,
}

/// The incoming streams of one endpoint, each from one peer, and what has arrived
/// from them.
///
/// The transport owns the waiting: it polls the sources ([`source`](Self::source)
/// gives each one's handle, by the index [`add`](Self::add) returned) and calls
/// [`read`](Self::read) for each that is ready. Sources are non-blocking readers:
/// a read that would block ends the turn. Frames are decoded as whole ones come, in
/// the order they were read; a stream that ends, fails or carries garbage is closed
/// and its peer departs, after the frames it gave before. The transport hands out
/// [`pop`](Self::pop) in order.
///
/// It also keeps the endpoint's [`Peers`]: a departure is queued once, however many
/// ways it is noticed.
pub struct Inbound<S, F> {
    streams: Vec<Option<Stream<S>>>,
    arrived: VecDeque<Incoming<F>>,
    peers: Peers,
    /// Where reads land before they are decoded (allocated on the first read).
    chunk: Vec<u8>,
    max_frame: usize,
    /// Why peers' streams ended, for those that did not simply end.
    causes: Vec<(Endpoint, String)>,
}

impl<S, F> std::fmt::Debug for Inbound<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("streams", &self.streams.iter().flatten().count())
            .field("arrived", &self.arrived.len())
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl<S, F> Inbound<S, F> {
    /// No streams yet; frames over `max_frame` bytes are garbage.
    pub fn new(max_frame: usize) -> Self {
        Inbound {
            streams: Vec::new(),
            arrived: VecDeque::new(),
            peers: Peers::default(),
            chunk: Vec::new(),
            max_frame,
            causes: Vec::new(),
        }
    }

    /// Why the stream from `peer` ended, if it did not simply end: a read that failed
    /// (with the error, such as a TLS record that did not verify), a frame that did
    /// not decode, an end in the middle of a frame.
    pub fn departure_cause(&self, peer: Endpoint) -> Option<&str> {
        self.causes
            .iter()
            .find(|(p, _)| *p == peer)
            .map(|(_, cause)| cause.as_str())
    }

    /// Logs what ended `peer`'s stream, and keeps the first cause for
    /// [`departure_cause`](Self::departure_cause).
    fn ended_by(&mut self, peer: Endpoint, cause: String) {
        tracing::warn!(%peer, "{cause}");
        if self.departure_cause(peer).is_none() {
            self.causes.push((peer, cause));
        }
    }

    /// Starts reading `source`, the stream from `peer`, which becomes a peer. Returns
    /// its index.
    pub fn add(&mut self, peer: Endpoint, source: S) -> usize {
        self.peers.add(peer);
        self.streams.push(Some(Stream {
            peer,
            source,
            decoder: FrameDecoder::new(self.max_frame),
        }));
        self.streams.len() - 1
    }

    /// The source of stream `index`, while it is open.
    pub fn source(&self, index: usize) -> Option<&S> {
        self.streams.get(index)?.as_ref().map(|s| &s.source)
    }

    /// The open streams: index, peer and source.
    pub fn open(&self) -> impl Iterator<Item = (usize, Endpoint, &S)> + '_ {
        self.streams
            .iter()
            .enumerate()
            .filter_map(|(index, s)| s.as_ref().map(|s| (index, s.peer, &s.source)))
    }

    /// The index of the open stream from `peer`, if there is one.
    pub fn stream_of(&self, peer: Endpoint) -> Option<usize> {
        self.open()
            .find(|&(_, p, _)| p == peer)
            .map(|(index, _, _)| index)
    }

    /// The endpoint's peers.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// The endpoint's peers, to add those it connects to.
    pub fn peers_mut(&mut self) -> &mut Peers {
        &mut self.peers
    }

    /// Closes stream `index`, if open, and returns its source; its peer departs.
    pub fn close(&mut self, index: usize) -> Option<S> {
        let stream = self.streams.get_mut(index)?.take()?;
        self.depart(stream.peer);
        Some(stream.source)
    }

    /// Queues the departure of `peer`, unless it was queued before. For departures
    /// noticed other than by reading (a write that fails). The stream from `peer`, if
    /// one is open, should be read to its end first: its frames come before.
    pub fn depart(&mut self, peer: Endpoint) {
        if self.peers.depart(peer) {
            self.arrived.push_back(Incoming::Departed(peer));
        }
    }

    /// Queues a frame that arrived by other means, from `from`, which becomes a peer.
    pub fn push_frame(&mut self, from: Endpoint, frame: F) {
        self.peers.add(from);
        self.arrived.push_back(Incoming::Frame(from, frame));
    }

    /// The oldest arrival not handed out yet.
    pub fn pop(&mut self) -> Option<Incoming<F>> {
        self.arrived.pop_front()
    }

    /// Whether something has arrived that is not handed out yet.
    pub fn has_arrivals(&self) -> bool {
        !self.arrived.is_empty()
    }

    /// Whether every peer has departed and every departure has been handed out.
    pub fn is_closed(&self) -> bool {
        self.arrived.is_empty() && self.peers.is_closed()
    }
}

/// What one read of a source gave.
enum Bytes {
    Some(usize),
    None,
    End,
}

impl<S: Read, F> Inbound<S, F> {
    fn read_chunk(&mut self, index: usize) -> Bytes {
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let Some(Some(stream)) = self.streams.get_mut(index) else {
            return Bytes::End;
        };
        let failed = loop {
            return match stream.source.read(&mut self.chunk) {
                Ok(0) => Bytes::End,
                Ok(n) => Bytes::Some(n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Bytes::None,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => break (stream.peer, error),
            };
        };
        let (peer, error) = failed;
        self.ended_by(peer, format!("reading its stream failed: {error}"));
        Bytes::End
    }

    /// Reads stream `index` for up to a turn and throws the bytes away: for an
    /// endpoint that is going away and only keeps its peers from waiting on it.
    pub fn discard(&mut self, index: usize) -> Turn {
        for _ in 0..CHUNKS_PER_TURN {
            match self.read_chunk(index) {
                Bytes::Some(n) if n == CHUNK => {}
                Bytes::Some(_) | Bytes::None => return Turn::Drained,
                Bytes::End => {
                    self.close(index);
                    return Turn::Ended;
                }
            }
        }
        Turn::More
    }
}

impl<S: Read, F: DeserializeOwned> Inbound<S, F> {
    /// Reads what stream `index` holds, up to a turn's worth, decoding every whole
    /// frame. A short read ends the turn: the source is taken to be empty, and its
    /// poll reports it again when more comes.
    pub fn read(&mut self, index: usize) -> Turn {
        for _ in 0..CHUNKS_PER_TURN {
            let n = match self.read_chunk(index) {
                Bytes::Some(n) => n,
                Bytes::None => return Turn::Drained,
                Bytes::End => {
                    if let Some(Some(stream)) = self.streams.get(index)
                        && stream.decoder.has_partial()
                    {
                        let peer = stream.peer;
                        self.ended_by(peer, "its stream ended in the middle of a frame".into());
                    }
                    self.close(index);
                    return Turn::Ended;
                }
            };
            let Some(Some(stream)) = self.streams.get_mut(index) else {
                return Turn::Ended;
            };
            stream.decoder.feed(&self.chunk[..n]);
            let peer = stream.peer;
            loop {
                match stream.decoder.next_frame::<F>() {
                    Ok(Some(frame)) => self.arrived.push_back(Incoming::Frame(peer, frame)),
                    Ok(None) => break,
                    Err(error) => {
                        self.ended_by(
                            peer,
                            format!("it sent a frame that does not decode: {error}"),
                        );
                        self.close(index);
                        return Turn::Ended;
                    }
                }
            }
            if n < CHUNK {
                return Turn::Drained;
            }
        }
        Turn::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;
    use crate::codec::{DEFAULT_MAX_FRAME, encode_into};

    /// A source that gives its bytes in pieces, then would block, then ends.
    struct Pieces {
        pieces: VecDeque<Vec<u8>>,
        ended: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.pieces.pop_front() {
                Some(piece) => {
                    let n = piece.len().min(buf.len());
                    buf[..n].copy_from_slice(&piece[..n]);
                    if n < piece.len() {
                        self.pieces.push_front(piece[n..].to_vec());
                    }
                    Ok(n)
                }
                None if self.ended => Ok(0),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn frames(values: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for v in values {
            encode_into(v, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
        }
        bytes
    }

    fn drain<S>(inbound: &mut Inbound<S, u32>) -> Vec<Incoming<u32>> {
        std::iter::from_fn(|| inbound.pop()).collect()
    }

    #[test]
    fn frames_come_whole_and_in_order_then_the_departure() {
        let peer = Endpoint::Node(NodeId(1));
        let bytes = frames(&[1, 2, 3]);
        let (head, tail) = bytes.split_at(7);
        let mut inbound = Inbound::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(
            peer,
            Pieces {
                pieces: VecDeque::from([head.to_vec(), tail.to_vec()]),
                ended: false,
            },
        );
        // Each short read ends a turn: the source's poll says when to read again.
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(drain(&mut inbound), [Incoming::Frame(peer, 1)]);
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(
            drain(&mut inbound),
            [2, 3].map(|v| Incoming::Frame(peer, v))
        );
        inbound.streams[index].as_mut().unwrap().source.ended = true;
        assert_eq!(inbound.read(index), Turn::Ended);
        assert_eq!(drain(&mut inbound), [Incoming::Departed(peer)]);
        assert!(inbound.is_closed());
        inbound.depart(peer);
        assert!(!inbound.has_arrivals(), "a departure is reported once");
        assert_eq!(
            inbound.departure_cause(peer),
            None,
            "a clean end has no cause"
        );
    }

    #[test]
    fn garbage_ends_the_stream_after_the_frames_before_it() {
        let peer = Endpoint::Role(0);
        let mut bytes = frames(&[7]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut inbound = Inbound::<_, u32>::new(1024);
        let index = inbound.add(
            peer,
            Pieces {
                pieces: VecDeque::from([bytes]),
                ended: false,
            },
        );
        assert_eq!(inbound.read(index), Turn::Ended);
        assert_eq!(
            drain(&mut inbound),
            [Incoming::Frame(peer, 7), Incoming::Departed(peer)]
        );
        assert!(inbound.source(index).is_none(), "the stream is closed");
        let cause = inbound.departure_cause(peer).unwrap_or_default();
        assert!(
            cause.starts_with("it sent a frame that does not decode"),
            "{cause}"
        );
    }

    /// A source whose second read fails, as a TLS reader does on a record that does
    /// not verify.
    struct Failing(u32);

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0 += 1;
            if self.0 == 1 {
                let bytes = frames(&[5]);
                buf[..bytes.len()].copy_from_slice(&bytes);
                return Ok(bytes.len());
            }
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record did not verify",
            ))
        }
    }

    #[test]
    fn a_failed_read_is_the_departure_cause_and_an_end_in_a_frame_is_one_too() {
        let (failing, cut) = (Endpoint::Node(NodeId(1)), Endpoint::Node(NodeId(2)));
        let mut inbound = Inbound::<_, u32>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(failing, Failing(0));
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(inbound.read(index), Turn::Ended);
        assert_eq!(
            drain(&mut inbound),
            [Incoming::Frame(failing, 5), Incoming::Departed(failing)]
        );
        assert_eq!(
            inbound.departure_cause(failing),
            Some("reading its stream failed: a record did not verify")
        );
        assert_eq!(inbound.departure_cause(cut), None, "not departed");

        let mut inbound = Inbound::<_, u32>::new(DEFAULT_MAX_FRAME);
        let bytes = frames(&[1, 2]);
        let index = inbound.add(
            cut,
            Pieces {
                pieces: VecDeque::from([bytes[..bytes.len() - 1].to_vec()]),
                ended: true,
            },
        );
        while inbound.read(index) != Turn::Ended {}
        assert_eq!(
            inbound.departure_cause(cut),
            Some("its stream ended in the middle of a frame")
        );
    }

    #[test]
    fn a_busy_stream_yields_after_a_turn() {
        let peer = Endpoint::Role(1);
        let big = vec![vec![0u8; CHUNK]; CHUNKS_PER_TURN + 1];
        let mut inbound = Inbound::<_, u32>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(
            peer,
            Pieces {
                pieces: big.into(),
                ended: false,
            },
        );
        assert_eq!(inbound.discard(index), Turn::More);
        assert_eq!(inbound.discard(index), Turn::Drained);
    }
}
