//! The inbound side of a transport over byte streams (FIFOs, sockets): the incoming
//! streams, read by whoever polls them, and what has been decoded from them and not
//! handed out yet.

use crate::Endpoint;
use crate::Incoming;
use crate::codec::{CodecError, FrameDecoder};
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

/// One incoming stream, and the frames read from it and not handed out yet.
struct Stream<S> {
    peer: Endpoint,
    /// `None` once the stream is closed: what it gave before is still handed out.
    source: Option<S>,
    decoder: FrameDecoder,
}

/// The next `count` whole frames of stream `index`, still as bytes in its decoder.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    index: usize,
    count: usize,
}

/// What waits to be handed out, in the order it arrived.
enum Arrival<F> {
    /// The next `count` whole frames of stream `index`, still as bytes in its decoder:
    /// they are decoded one at a time as they are handed out, from where the read
    /// put them, rather than all at once into a queue beyond the cache.
    Frames { index: usize, count: usize },
    /// A frame that arrived by other means, or a departure.
    Ready(Incoming<F>),
}

/// The incoming streams of one endpoint, each from one peer, and what has arrived
/// from them.
///
/// The transport owns the waiting: it polls the sources ([`source`](Self::source)
/// gives each one's handle, by the index [`add`](Self::add) returned) and calls
/// [`read`](Self::read) for each that is ready. Sources are non-blocking readers:
/// a read that would block ends the turn. Whole frames are handed out by
/// [`pop`](Self::pop) in the order they were read, each decoded as it is handed out;
/// a stream that ends, fails or carries garbage is closed and its peer departs, after
/// the frames it gave before. A length over the bound is garbage found as it is read;
/// a frame whose body does not decode is found as it is handed out, and its stream is
/// closed then.
///
/// It also keeps the endpoint's [`Peers`]: a departure is queued once, however many
/// ways it is noticed.
pub struct Inbound<S, F> {
    streams: Vec<Option<Stream<S>>>,
    /// The frames handed out next, before anything in `arrived`: the run at the
    /// head of the queue, taken out of it so that handing out a frame does not go
    /// through the queue.
    head: Run,
    arrived: VecDeque<Arrival<F>>,
    peers: Peers,
    /// Where the reads of [`discard`](Self::discard) land (allocated on its first
    /// read); [`read`](Self::read) reads into each stream's decoder.
    chunk: Vec<u8>,
    max_frame: usize,
    /// Why peers' streams ended, for those that did not simply end.
    causes: Vec<(Endpoint, String)>,
}

impl<S, F> std::fmt::Debug for Inbound<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field(
                "streams",
                &self
                    .streams
                    .iter()
                    .flatten()
                    .filter(|s| s.source.is_some())
                    .count(),
            )
            .field("frames", &self.head.count)
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
            head: Run::default(),
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

    /// What a read of `peer`'s stream gave, a failed one taken as the stream's end,
    /// its cause kept.
    fn note_failure(&mut self, peer: Endpoint, read: io::Result<Bytes>) -> Bytes {
        read.unwrap_or_else(|error| {
            self.ended_by(peer, format!("reading its stream failed: {error}"));
            Bytes::End
        })
    }

    /// Starts reading `source`, the stream from `peer`, which becomes a peer. Returns
    /// its index.
    pub fn add(&mut self, peer: Endpoint, source: S) -> usize {
        self.peers.add(peer);
        self.streams.push(Some(Stream {
            peer,
            source: Some(source),
            decoder: FrameDecoder::new(self.max_frame),
        }));
        self.streams.len() - 1
    }

    /// The source of stream `index`, while it is open.
    pub fn source(&self, index: usize) -> Option<&S> {
        self.streams.get(index)?.as_ref()?.source.as_ref()
    }

    /// The open streams: index, peer and source.
    pub fn open(&self) -> impl Iterator<Item = (usize, Endpoint, &S)> + '_ {
        self.streams.iter().enumerate().filter_map(|(index, s)| {
            let s = s.as_ref()?;
            Some((index, s.peer, s.source.as_ref()?))
        })
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

    /// Closes stream `index`, if open, and returns its source; its peer departs,
    /// after the frames already read from it.
    pub fn close(&mut self, index: usize) -> Option<S> {
        let slot = self.streams.get_mut(index)?;
        let stream = slot.as_mut()?;
        let source = stream.source.take()?;
        let peer = stream.peer;
        if stream.decoder.ready() == 0 {
            *slot = None;
        }
        self.depart(peer);
        Some(source)
    }

    /// Queues the departure of `peer`, unless it was queued before. For departures
    /// noticed other than by reading (a write that fails). The stream from `peer`, if
    /// one is open, should be read to its end first: its frames come before.
    pub fn depart(&mut self, peer: Endpoint) {
        if self.peers.depart(peer) {
            self.arrived
                .push_back(Arrival::Ready(Incoming::Departed(peer)));
        }
    }

    /// Queues a frame that arrived by other means, from `from`, which becomes a peer.
    pub fn push_frame(&mut self, from: Endpoint, frame: F) {
        self.peers.add(from);
        self.arrived
            .push_back(Arrival::Ready(Incoming::Frame(from, frame)));
    }

    /// Queues the `count` whole frames that a read of stream `index` completed: with
    /// the frames the stream's last read completed if nothing came in between, else
    /// after what did.
    fn queue_frames(&mut self, index: usize, count: usize) {
        if self.arrived.is_empty() && (self.head.count == 0 || self.head.index == index) {
            self.head.index = index;
            self.head.count += count;
            return;
        }
        if let Some(Arrival::Frames {
            index: last,
            count: before,
        }) = self.arrived.back_mut()
            && *last == index
        {
            *before += count;
            return;
        }
        self.arrived.push_back(Arrival::Frames { index, count });
    }

    /// Whether something has arrived that is not handed out yet.
    pub fn has_arrivals(&self) -> bool {
        self.head.count > 0 || !self.arrived.is_empty()
    }

    /// Whether every peer has departed and every departure has been handed out.
    pub fn is_closed(&self) -> bool {
        !self.has_arrivals() && self.peers.is_closed()
    }
}

/// What one read of a source gave.
enum Bytes {
    Some(usize),
    None,
    End,
}

impl<S: Read, F> Inbound<S, F> {
    /// One read of stream `index` into the shared chunk, for bytes thrown away.
    fn read_chunk(&mut self, index: usize) -> Bytes {
        if self.chunk.is_empty() {
            self.chunk = vec![0; CHUNK];
        }
        let Some(Some(stream)) = self.streams.get_mut(index) else {
            return Bytes::End;
        };
        let Some(source) = stream.source.as_mut() else {
            return Bytes::End;
        };
        let peer = stream.peer;
        let bytes = read_once(source, &mut self.chunk);
        self.note_failure(peer, bytes)
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
    /// Reads what stream `index` holds, up to a turn's worth, straight into its
    /// decoder, and queues the whole frames it completes. A short read ends the turn:
    /// the source is taken to be empty, and its poll reports it again when more
    /// comes. A read into less room than a chunk (the rest of the room made for a
    /// large frame) that fills it ends the turn too, as one that may have left more.
    pub fn read(&mut self, index: usize) -> Turn {
        for _ in 0..CHUNKS_PER_TURN {
            let Some(Some(stream)) = self.streams.get_mut(index) else {
                return Turn::Ended;
            };
            let peer = stream.peer;
            let (read, room) = match stream.source.as_mut() {
                Some(source) => {
                    let room = stream.decoder.room(CHUNK);
                    let size = room.len();
                    (read_once(source, room), size)
                }
                None => (Ok(Bytes::End), 0),
            };
            let (n, room) = match (self.note_failure(peer, read), room) {
                (Bytes::Some(n), room) => (n, room),
                (Bytes::None, _) => return Turn::Drained,
                (Bytes::End, _) => {
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
            let before = stream.decoder.ready();
            stream.decoder.commit(n);
            let added = stream.decoder.ready() - before;
            let refusal = stream.decoder.refusal();
            if added > 0 {
                self.queue_frames(index, added);
            }
            if let Some(error) = refusal {
                self.ended_by(peer, undecodable(&error));
                self.close(index);
                return Turn::Ended;
            }
            if n < room {
                return Turn::Drained;
            }
            if room < CHUNK {
                return Turn::More;
            }
        }
        Turn::More
    }
}

/// The cause of a departure for a frame that does not decode, with what the codec
/// found (postcard's own words).
fn undecodable(error: &CodecError) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("it sent a frame that does not decode: {error}: {source}"),
        None => format!("it sent a frame that does not decode: {error}"),
    }
}

/// One read of `source` into `buffer`; an error if it failed.
fn read_once<S: Read>(source: &mut S, buffer: &mut [u8]) -> io::Result<Bytes> {
    loop {
        return match source.read(buffer) {
            Ok(0) => Ok(Bytes::End),
            Ok(n) => Ok(Bytes::Some(n)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::None),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => Err(error),
        };
    }
}

impl<S, F: DeserializeOwned> Inbound<S, F> {
    /// The oldest arrival not handed out yet. A frame read from a stream is decoded
    /// here; one that does not decode closes its stream, drops what the stream gave
    /// after it, and its peer departs.
    #[inline]
    pub fn pop(&mut self) -> Option<Incoming<F>> {
        // The common case, a frame of an open stream that decodes, without the loop
        // and the cases around it; anything else is left to `pop_slow`, from the
        // same place (a frame that did not decode is decoded there again).
        if self.head.count > 0
            && let Some(Some(stream)) = self.streams.get_mut(self.head.index)
            && stream.source.is_some()
            && let Ok(Some(frame)) = stream.decoder.next_frame::<F>()
        {
            self.head.count -= 1;
            return Some(Incoming::Frame(stream.peer, frame));
        }
        self.pop_slow()
    }

    /// [`pop`](Self::pop) for everything but a frame of an open stream that
    /// decodes: the next run, a departure, a closed stream's last frames, garbage.
    #[inline(never)]
    fn pop_slow(&mut self) -> Option<Incoming<F>> {
        loop {
            if self.head.count == 0 {
                match self.arrived.pop_front()? {
                    Arrival::Ready(incoming) => return Some(incoming),
                    Arrival::Frames { index, count } => self.head = Run { index, count },
                }
            }
            self.head.count -= 1;
            let index = self.head.index;
            let Some(Some(stream)) = self.streams.get_mut(index) else {
                continue;
            };
            let peer = stream.peer;
            match stream.decoder.next_frame::<F>() {
                Ok(Some(frame)) => {
                    if stream.decoder.ready() == 0 && stream.source.is_none() {
                        // Closed, and everything it gave is handed out.
                        self.streams[index] = None;
                    }
                    return Some(Incoming::Frame(peer, frame));
                }
                Ok(None) => {}
                Err(error) => {
                    if let Some(departed) = self.refuse(index, peer, &error) {
                        return Some(departed);
                    }
                }
            }
        }
    }

    /// Stream `index`, from `peer`, gave a frame that does not decode: it is closed,
    /// what it gave after that frame is dropped, and its peer departs (returned, if
    /// this is the first news of it).
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, index: usize, peer: Endpoint, error: &CodecError) -> Option<Incoming<F>> {
        self.ended_by(peer, undecodable(error));
        if let Some(slot) = self.streams.get_mut(index) {
            *slot = None;
        }
        if self.head.index == index {
            self.head.count = 0;
        }
        self.arrived
            .retain(|arrival| !matches!(arrival, Arrival::Frames { index: i, .. } if *i == index));
        self.peers.depart(peer).then_some(Incoming::Departed(peer))
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

    impl Pieces {
        fn new(pieces: impl IntoIterator<Item = Vec<u8>>, ended: bool) -> Self {
            Pieces {
                pieces: pieces.into_iter().collect(),
                ended,
            }
        }
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
            Pieces::new(VecDeque::from([head.to_vec(), tail.to_vec()]), false),
        );
        // Each short read ends a turn: the source's poll says when to read again.
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(drain(&mut inbound), [Incoming::Frame(peer, 1)]);
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(
            drain(&mut inbound),
            [2, 3].map(|v| Incoming::Frame(peer, v))
        );
        inbound.streams[index]
            .as_mut()
            .unwrap()
            .source
            .as_mut()
            .unwrap()
            .ended = true;
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
        let index = inbound.add(peer, Pieces::new(VecDeque::from([bytes]), false));
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
            Pieces::new(VecDeque::from([bytes[..bytes.len() - 1].to_vec()]), true),
        );
        while inbound.read(index) != Turn::Ended {}
        assert_eq!(
            inbound.departure_cause(cut),
            Some("its stream ended in the middle of a frame")
        );
    }

    #[test]
    fn a_frame_split_across_reads_is_handed_out_once_whole() {
        let peer = Endpoint::Node(NodeId(4));
        let bytes = frames(&[1, 300, 70_000]);
        // Cuts in the first prefix, in the second body and in the third prefix.
        let pieces = [&bytes[..2], &bytes[2..8], &bytes[8..11], &bytes[11..]];
        let mut inbound = Inbound::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(peer, Pieces::new(pieces.iter().map(|p| p.to_vec()), true));
        let mut got = Vec::new();
        for _ in pieces {
            assert_eq!(inbound.read(index), Turn::Drained);
            got.push(drain(&mut inbound));
        }
        let frame = |v| vec![Incoming::Frame(peer, v)];
        assert_eq!(got, [vec![], frame(1), frame(300), frame(70_000)]);
        assert_eq!(inbound.read(index), Turn::Ended);
        assert_eq!(drain(&mut inbound), [Incoming::Departed(peer)]);
    }

    #[test]
    fn frames_are_handed_out_in_the_order_they_were_read() {
        let (a, b) = (Endpoint::Node(NodeId(1)), Endpoint::Node(NodeId(2)));
        let from_a = frames(&[1, 2, 3]);
        let mut inbound = Inbound::new(DEFAULT_MAX_FRAME);
        // The second frame of `a` comes in two reads, with a read of `b` between them.
        let ia = inbound.add(
            a,
            Pieces::new(
                VecDeque::from([from_a[..7].to_vec(), from_a[7..].to_vec()]),
                false,
            ),
        );
        let ib = inbound.add(b, Pieces::new(VecDeque::from([frames(&[10, 11])]), true));
        assert_eq!(inbound.read(ia), Turn::Drained);
        assert_eq!(inbound.read(ib), Turn::Drained);
        assert_eq!(inbound.read(ib), Turn::Ended);
        assert_eq!(inbound.read(ia), Turn::Drained);
        assert_eq!(
            drain(&mut inbound),
            [
                Incoming::Frame(a, 1),
                Incoming::Frame(b, 10),
                Incoming::Frame(b, 11),
                Incoming::Departed(b),
                Incoming::Frame(a, 2),
                Incoming::Frame(a, 3),
            ]
        );
        assert!(!inbound.has_arrivals());
    }

    #[test]
    fn a_body_that_does_not_decode_drops_the_stream_where_it_is() {
        let peer = Endpoint::Node(NodeId(3));
        let mut bytes = frames(&[1, 2]);
        // A whole frame whose body is no u32: a varint that never ends.
        bytes.extend_from_slice(&[1, 0, 0, 0, 0x80]);
        bytes.extend_from_slice(&frames(&[3]));
        let mut inbound = Inbound::<_, u32>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(peer, Pieces::new(VecDeque::from([bytes]), false));
        assert_eq!(inbound.read(index), Turn::Drained);
        assert!(inbound.source(index).is_some(), "nothing decoded yet");
        assert_eq!(
            drain(&mut inbound),
            [
                Incoming::Frame(peer, 1),
                Incoming::Frame(peer, 2),
                Incoming::Departed(peer)
            ]
        );
        assert!(inbound.source(index).is_none(), "the stream is closed");
        assert!(inbound.is_closed());
        assert_eq!(inbound.read(index), Turn::Ended);
        assert!(!inbound.has_arrivals(), "a departure is reported once");
    }

    #[test]
    fn frames_read_before_the_end_are_handed_out_after_it_is_read() {
        let peer = Endpoint::Role(2);
        let mut inbound = Inbound::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(peer, Pieces::new(VecDeque::from([frames(&[5, 6])]), true));
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(inbound.read(index), Turn::Ended);
        assert!(inbound.source(index).is_none());
        assert!(!inbound.is_closed(), "two frames and the departure wait");
        assert_eq!(
            drain(&mut inbound),
            [
                Incoming::Frame(peer, 5),
                Incoming::Frame(peer, 6),
                Incoming::Departed(peer)
            ]
        );
        assert!(inbound.is_closed());
        assert!(inbound.streams[index].is_none(), "its bytes are freed");
    }

    #[test]
    fn a_busy_stream_yields_after_a_turn() {
        let peer = Endpoint::Role(1);
        let big = vec![vec![0u8; CHUNK]; CHUNKS_PER_TURN + 1];
        let mut inbound = Inbound::<_, u32>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(peer, Pieces::new(big, false));
        assert_eq!(inbound.discard(index), Turn::More);
        assert_eq!(inbound.discard(index), Turn::Drained);
    }
}
