//! The frame decoders that pipe and tcp run on whatever a peer writes: the codec's
//! `FrameDecoder` and the byte-stream reader `stream::Inbound`, fed arbitrary bytes in
//! arbitrary pieces, valid frame streams with mutations, and hostile length prefixes.
//!
//! Every case must end without a panic, and the largest single allocation made while
//! decoding it (measured by the counting allocator of this test binary, per thread)
//! must stay within the bound that the frame limit sets, whatever length a prefix
//! announces.
//!
//! Seeded: the same cases every run. `PROPTEST_CASES` changes how many.
#![cfg(feature = "codec")]

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseError, TestRunner};
use snapshot_core::codec::{
    CodecError, DEFAULT_MAX_FRAME, FrameDecoder, LENGTH_PREFIX, encode_into,
};
use snapshot_core::stream::{Inbound, Turn};
use snapshot_core::{
    Aborted, ChannelRecord, Coordination, Endpoint, Envelope, Frame, Incoming, LocalSnapshot,
    NodeId, SnapshotId,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read};

/// Counts, per thread, the largest single allocation (or reallocation) asked for.
struct Counting;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: a thread being torn down has no counter any more.
    let _ = PEAK.try_with(|peak| {
        if size > peak.get() {
            peak.set(size);
        }
    });
}

// SAFETY: every call is passed on to `System` unchanged; the counter is a
// thread-local `Cell` with a const initializer and no destructor, which never
// allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns what it returned with the largest single allocation this
/// thread made meanwhile.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|peak| peak.set(0));
    let result = f();
    (result, PEAK.with(Cell::get))
}

/// A frame type with every shape the transports carry: strings, vectors of several
/// element sizes, boxes, maps, nested enums.
type Wire = Frame<String, Vec<u64>, Vec<u8>, Vec<u32>>;

/// The largest element of a sequence in [`Wire`], in bytes: what a decoded vector
/// can take per byte of its encoding.
const WIDEST_ELEMENT: usize = 8;

/// The frame limit of the fuzzed decoders: small, so that frames over it are common.
const LIMIT: usize = 512;

/// How much `Inbound` reads at once (its `CHUNK`).
const CHUNK: usize = 64 * 1024;

/// The bound on one allocation while a [`FrameDecoder`] limited to `limit` decodes
/// `fed` bytes: its buffer holds at most what was fed, in a vector that grows by
/// doubling; a decoded vector takes at most [`WIDEST_ELEMENT`] bytes per byte of the
/// frame; and the fixed-size parts of a frame (a boxed `LocalSnapshot`, a map's
/// node) take less than 1 KiB. Nothing depends on what a length prefix announces.
fn decoder_bound(fed: usize, limit: usize) -> usize {
    (2 * fed).max(WIDEST_ELEMENT * limit).max(1024)
}

/// The bound on one allocation while an [`Inbound`] limited to `limit` reads `fed`
/// bytes: its read buffer, one chunk; its decoder's buffer, at most a chunk and a
/// partial frame beside bytes already decoded that it has not compacted yet (under
/// 64 KiB), doubled by growth; its queue of arrivals, doubled by growth.
fn inbound_bound(fed: usize, limit: usize) -> usize {
    let frames = fed / (LENGTH_PREFIX + 1) + 1;
    let queue = 2 * frames * size_of::<Incoming<Wire>>();
    (2 * (CHUNK + 64 * 1024 + limit + LENGTH_PREFIX))
        .max(queue)
        .max(decoder_bound(0, limit))
}

/// The same cases every run (a fixed seed unless `PROPTEST_RNG_SEED` gives one, no
/// failures persisted), `cases` of them unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0xC0DE_C0DE_F022_0001);
    }
    config
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![0..4u32, Just(u32::MAX), any::<u32>()].prop_map(NodeId)
}

fn snapshot_id() -> impl Strategy<Value = SnapshotId> {
    (
        node_id(),
        prop_oneof![0..4u64, Just(u64::MAX), any::<u64>()],
    )
        .prop_map(|(initiator, seq)| SnapshotId { initiator, seq })
}

fn local_snapshot() -> impl Strategy<Value = LocalSnapshot<Vec<u64>, Vec<u8>>> {
    (
        snapshot_id(),
        node_id(),
        vec(any::<u64>(), 0..6),
        btree_map(node_id(), (vec(any::<u8>(), 0..6), any::<u64>()), 0..4),
        btree_map(node_id(), any::<u64>(), 0..4),
        btree_map(node_id(), any::<u64>(), 0..4),
    )
        .prop_map(
            |(id, node, state, channels, sent, received)| LocalSnapshot {
                id,
                node,
                state,
                channels: channels
                    .into_iter()
                    .map(|(from, (record, messages))| (from, ChannelRecord { record, messages }))
                    .collect(),
                sent,
                received,
            },
        )
}

fn wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        ".{0,12}".prop_map(|text| Frame::Peer(Envelope::App(text))),
        snapshot_id().prop_map(|id| Frame::Peer(Envelope::Marker(id))),
        Just(Frame::Snapshot(Coordination::Initiate)),
        snapshot_id().prop_map(|id| Frame::Snapshot(Coordination::Started(id))),
        local_snapshot().prop_map(|part| Frame::Snapshot(Coordination::Report(Box::new(part)))),
        snapshot_id().prop_map(|id| Frame::Snapshot(Coordination::Abort(id))),
        (
            snapshot_id(),
            prop_oneof![
                vec(node_id(), 0..5).prop_map(Aborted::Waiting),
                Just(Aborted::Finished),
                Just(Aborted::NotReached),
            ]
        )
            .prop_map(|(id, why)| Frame::Snapshot(Coordination::Aborted(id, why))),
        vec(any::<u32>(), 0..8).prop_map(Frame::Control),
    ]
}

/// `frames` encoded one after the other, and where each ends in the stream.
fn encode(frames: &[Wire], limit: usize) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for frame in frames {
        match encode_into(frame, &mut bytes, limit) {
            Ok(()) => ends.push(bytes.len()),
            Err(CodecError::TooLarge { .. }) => {}
            Err(error) => panic!("{frame:?} does not encode: {error}"),
        }
    }
    (bytes, ends)
}

/// `bytes` cut into pieces of the sizes `sizes` gives, in turn (each at least 1).
fn pieces(bytes: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        out.push(piece.to_vec());
        rest = tail;
    }
    out
}

/// What a decoder made of a stream: the frames, in order, and whether it stopped on
/// an error.
#[derive(Debug)]
struct Decoded {
    frames: Vec<Wire>,
    error: Option<String>,
}

/// Feeds `pieces` to a decoder limited to `limit`, taking every whole frame after
/// each piece, and stops at the first error, as a transport drops the stream there.
fn decode(pieces: &[Vec<u8>], limit: usize) -> Decoded {
    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.feed(piece);
        loop {
            match decoder.next_frame::<Wire>() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Decoded {
                        frames,
                        error: Some(error.to_string()),
                    };
                }
            }
        }
    }
    Decoded {
        frames,
        error: None,
    }
}

/// One edit of a byte stream.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the byte at this position (modulo the length).
    Set(usize, u8),
    /// Flip the bits of this mask in the byte at this position.
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Overwrite the length prefix of the frame at this index (modulo the count).
    Prefix(usize, u32),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let hostile = prop_oneof![
        Just(u32::MAX),
        Just(u32::MAX - 1),
        Just(0x8000_0000),
        Just(LIMIT as u32 + 1),
        Just(LIMIT as u32),
        Just(0),
        Just(1),
        Just(DEFAULT_MAX_FRAME as u32 + 1),
        any::<u32>(),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Set(at, byte)),
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, mask)| Edit::Flip(at, mask)),
        (any::<usize>(), vec(any::<u8>(), 1..6)).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1..8usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), hostile).prop_map(|(frame, length)| Edit::Prefix(frame, length)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies `edits` to `bytes`, whose frames end at `ends`; returns the first position
/// any edit touched (the stream before it is intact).
fn apply(bytes: &mut Vec<u8>, ends: &[usize], edits: &[Edit]) -> usize {
    let mut first = bytes.len();
    for edit in edits {
        let len = bytes.len();
        let at = |n: usize| if len == 0 { 0 } else { n % len };
        match edit {
            Edit::Set(n, byte) if len > 0 => {
                let i = at(*n);
                if bytes[i] != *byte {
                    bytes[i] = *byte;
                    first = first.min(i);
                }
            }
            Edit::Flip(n, mask) if len > 0 => {
                let i = at(*n);
                bytes[i] ^= mask;
                first = first.min(i);
            }
            Edit::Insert(n, inserted) => {
                let i = n % (len + 1);
                bytes.splice(i..i, inserted.iter().copied());
                first = first.min(i);
            }
            Edit::Delete(n, count) if len > 0 => {
                let i = at(*n);
                bytes.drain(i..(i + count).min(len));
                first = first.min(i);
            }
            Edit::Prefix(frame, length) if !ends.is_empty() => {
                // Frame `k` starts where frame `k - 1` ended, if the stream is still
                // long enough to hold its prefix.
                let k = frame % ends.len();
                let start = if k == 0 { 0 } else { ends[k - 1] };
                if start + LENGTH_PREFIX <= len {
                    let old = &mut bytes[start..start + LENGTH_PREFIX];
                    if *old != length.to_le_bytes() {
                        old.copy_from_slice(&length.to_le_bytes());
                        first = first.min(start);
                    }
                }
            }
            Edit::Truncate(n) => {
                let cut = n % (len + 1);
                if cut < len {
                    bytes.truncate(cut);
                    first = first.min(cut);
                }
            }
            _ => {}
        }
    }
    first
}

/// A source that gives its pieces one read at a time, says it would block between
/// them where `blocks` says so, then ends.
struct Source {
    pieces: VecDeque<Vec<u8>>,
    /// Before which pieces a read would block (once each).
    blocks: VecDeque<bool>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocks.pop_front() == Some(true) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.pieces.pop_front() {
            Some(piece) => {
                let n = piece.len().min(buf.len());
                buf[..n].copy_from_slice(&piece[..n]);
                if n < piece.len() {
                    self.pieces.push_front(piece[n..].to_vec());
                    self.blocks.push_front(false);
                }
                Ok(n)
            }
            None => Ok(0),
        }
    }
}

/// Reads every stream of `inbound` in turn until each has ended, as a transport's
/// poll would; returns everything that arrived, in order. Each stream must end in a
/// bounded number of reads.
fn read_all(inbound: &mut Inbound<Source, Wire>, streams: &[usize]) -> Vec<Incoming<Wire>> {
    let mut arrived = Vec::new();
    let mut open: Vec<usize> = streams.to_vec();
    let mut reads = 0;
    while !open.is_empty() {
        open.retain(|&index| inbound.read(index) != Turn::Ended);
        arrived.extend(std::iter::from_fn(|| inbound.pop()));
        reads += 1;
        assert!(reads < 100_000, "the streams never end");
    }
    arrived
}

/// The frames `from` sent, in the order they arrived, and whether its departure came
/// once, last of what it sent.
fn from_peer(arrived: &[Incoming<Wire>], from: Endpoint) -> (Vec<Wire>, bool) {
    let mine: Vec<&Incoming<Wire>> = arrived
        .iter()
        .filter(|item| matches!(item, Incoming::Frame(p, _) | Incoming::Departed(p) if *p == from))
        .collect();
    let departed_last = mine.last() == Some(&&Incoming::Departed(from))
        && mine
            .iter()
            .filter(|item| matches!(item, Incoming::Departed(_)))
            .count()
            == 1;
    let frames = mine
        .into_iter()
        .filter_map(|item| match item {
            Incoming::Frame(_, frame) => Some(frame.clone()),
            Incoming::Departed(_) => None,
        })
        .collect();
    (frames, departed_last)
}

/// Runs `body` on `cases` values of `strategy` (seeded, see [`config`]); `body`
/// returns the largest single allocation of its case and the bound on it, which must
/// hold. Prints how many cases ran and the largest allocation seen.
fn fuzz<S>(
    name: &str,
    cases: u32,
    strategy: S,
    body: impl Fn(S::Value) -> Result<(usize, usize), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config(cases));
    let worst = Cell::new((0, 0));
    let started = std::time::Instant::now();
    let result = runner.run(&strategy, |value| {
        let (peak, bound) = body(value)?;
        prop_assert!(
            peak <= bound,
            "largest allocation {peak} bytes, over the bound of {bound}"
        );
        if peak > worst.get().0 {
            worst.set((peak, bound));
        }
        Ok(())
    });
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
    let (peak, bound) = worst.get();
    println!(
        "{name}: {} cases in {:.2?}, largest allocation {peak} bytes (bound {bound} for that case)",
        runner.config().cases,
        started.elapsed()
    );
}

/// Arbitrary bytes in arbitrary pieces: frames or an error, never a panic, and
/// allocations bounded by what was fed and the limit.
#[test]
fn arbitrary_bytes_in_arbitrary_pieces() {
    let strategy = (vec(any::<u8>(), 0..2048), vec(1..64usize, 1..8));
    fuzz("arbitrary bytes", 3000, strategy, |(bytes, sizes)| {
        let pieces = pieces(&bytes, &sizes);
        let (_, peak) = peak_of(|| decode(&pieces, LIMIT));
        Ok((peak, decoder_bound(bytes.len(), LIMIT)))
    });
}

/// Arbitrary bytes behind a length prefix, the body's own length or any other: the
/// body is what postcard must refuse or accept.
#[test]
fn arbitrary_bodies_behind_a_length_prefix() {
    let strategy = (
        vec(any::<u8>(), 0..600),
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
    );
    fuzz("arbitrary bodies", 3000, strategy, |(body, announced)| {
        let length = announced.unwrap_or(body.len() as u32);
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        let (decoded, peak) = peak_of(|| decode(std::slice::from_ref(&bytes), LIMIT));
        if length as usize > LIMIT {
            prop_assert!(decoded.frames.is_empty());
            prop_assert!(decoded.error.is_some_and(|e| e.contains("bound")));
        }
        Ok((peak, decoder_bound(bytes.len(), LIMIT)))
    });
}

/// Valid streams, cut anywhere: every frame comes out whole and in order.
#[test]
fn valid_streams_in_any_pieces_decode_whole() {
    let strategy = (vec(wire(), 0..24), vec(1..200usize, 1..6));
    fuzz("valid streams", 1000, strategy, |(frames, sizes)| {
        let (bytes, ends) = encode(&frames, DEFAULT_MAX_FRAME);
        prop_assert_eq!(ends.len(), frames.len());
        let pieces = pieces(&bytes, &sizes);
        let (decoded, peak) = peak_of(|| decode(&pieces, DEFAULT_MAX_FRAME));
        prop_assert_eq!(decoded.error, None);
        prop_assert_eq!(decoded.frames, frames);
        Ok((peak, decoder_bound(bytes.len(), bytes.len())))
    });
}

/// Valid streams with bytes changed, inserted, deleted, length prefixes made
/// hostile, or cut short: never a panic, allocations bounded, and every frame that
/// ends before the first edit comes out as it was sent, first.
#[test]
fn mutated_streams_keep_the_frames_before_the_damage() {
    let strategy = (
        vec(wire(), 1..16),
        vec(edit(), 1..6),
        vec(1..100usize, 1..6),
    );
    fuzz(
        "mutated streams",
        3000,
        strategy,
        |(frames, edits, sizes)| {
            let (mut bytes, ends) = encode(&frames, LIMIT);
            let sent = within(frames, LIMIT);
            let first = apply(&mut bytes, &ends, &edits);
            let intact = ends.iter().filter(|&&end| end <= first).count();
            let pieces = pieces(&bytes, &sizes);
            let (decoded, peak) = peak_of(|| decode(&pieces, LIMIT));
            prop_assert!(decoded.frames.len() >= intact, "{decoded:?}");
            prop_assert_eq!(&decoded.frames[..intact], &sent[..intact]);
            Ok((peak, decoder_bound(bytes.len(), LIMIT)))
        },
    );
}

/// Any length prefix alone: refused at once if over the limit, otherwise waited
/// for, with nothing allocated for the body it announces.
#[test]
fn a_length_prefix_alone_allocates_nothing_for_its_body() {
    let strategy = (
        any::<u32>(),
        prop_oneof![
            Just(LIMIT),
            Just(DEFAULT_MAX_FRAME),
            Just(u32::MAX as usize)
        ],
    );
    fuzz(
        "length prefixes alone",
        3000,
        strategy,
        |(length, limit)| {
            let (result, peak) = peak_of(|| {
                let mut decoder = FrameDecoder::new(limit);
                decoder.feed(&length.to_le_bytes());
                decoder.next_frame::<Wire>()
            });
            if length as usize > limit {
                prop_assert!(result.is_err());
            } else {
                prop_assert!(matches!(result, Ok(None)), "{result:?}");
            }
            Ok((peak, 64))
        },
    );
}

/// Arbitrary bytes from several peers through `Inbound`, in arbitrary reads with
/// reads that would block between them: each stream ends once, its peer departs
/// once after its frames, the other peers' valid streams arrive whole and in order,
/// and allocations stay within the bound.
#[test]
fn inbound_keeps_each_peer_apart_whatever_one_sends() {
    let strategy = (
        vec(any::<u8>(), 0..4096),
        (vec(wire(), 1..12), vec(edit(), 0..4)),
        vec(wire(), 0..12),
        vec(1..300usize, 1..6),
        vec(any::<bool>(), 0..32),
    );
    fuzz(
        "Inbound, three peers",
        1000,
        strategy,
        |(garbage, mutated, valid, sizes, blocks)| {
            let (good, bad, worse) = (
                Endpoint::Node(NodeId(1)),
                Endpoint::Node(NodeId(2)),
                Endpoint::Role(3),
            );
            let (valid_bytes, _) = encode(&valid, LIMIT);
            let sent = within(valid, LIMIT);
            let (mut mutated_bytes, ends) = encode(&mutated.0, LIMIT);
            apply(&mut mutated_bytes, &ends, &mutated.1);
            let fed = garbage.len() + valid_bytes.len() + mutated_bytes.len();
            let source = |bytes: &[u8]| Source {
                pieces: pieces(bytes, &sizes).into(),
                blocks: blocks.clone().into(),
            };
            let sources = [
                (good, source(&valid_bytes)),
                (bad, source(&mutated_bytes)),
                (worse, source(&garbage)),
            ];
            let (arrived, peak) = peak_of(|| {
                let mut inbound = Inbound::<Source, Wire>::new(LIMIT);
                let streams = sources.map(|(peer, source)| inbound.add(peer, source));
                let arrived = read_all(&mut inbound, &streams);
                assert!(inbound.is_closed(), "every peer has departed");
                assert!(streams.iter().all(|&i| inbound.source(i).is_none()));
                arrived
            });
            let (frames, departed_last) = from_peer(&arrived, good);
            prop_assert_eq!(frames, sent);
            prop_assert!(departed_last);
            for peer in [bad, worse] {
                prop_assert!(from_peer(&arrived, peer).1, "{peer} departs once, last");
            }
            Ok((peak, inbound_bound(fed, LIMIT)))
        },
    );
}

/// The frames of `frames` that encode within `limit`, which a sender can send.
fn within(frames: Vec<Wire>, limit: usize) -> Vec<Wire> {
    frames
        .into_iter()
        .filter(|f| encode(std::slice::from_ref(f), limit).1.len() == 1)
        .collect()
}

/// The hostile prefixes a peer can send, each refused before anything is allocated
/// for the length it announces: through the decoder alone and through `Inbound` (which
/// reads in chunks of 64 KiB), at the default limit and a small one.
#[test]
fn hostile_length_prefixes_are_refused_before_allocating() {
    for limit in [LIMIT, DEFAULT_MAX_FRAME] {
        for length in [
            u32::MAX,
            u32::MAX - 3,
            0x8000_0000,
            limit as u32 + 1,
            (DEFAULT_MAX_FRAME as u32).saturating_mul(2),
        ] {
            if length as usize <= limit {
                continue;
            }
            let mut bytes = length.to_le_bytes().to_vec();
            bytes.extend_from_slice(&[0xAB; 16]);
            let (result, peak) = peak_of(|| {
                let mut decoder = FrameDecoder::new(limit);
                decoder.feed(&bytes);
                decoder.next_frame::<Wire>()
            });
            assert!(
                matches!(result, Err(CodecError::TooLarge { size, limit: l }) if size == length as usize && l == limit),
                "{result:?}"
            );
            assert!(
                peak <= 64,
                "the decoder allocated {peak} bytes for {length}"
            );

            let decoder_peak = peak;
            let peer = Endpoint::Node(NodeId(9));
            let (arrived, peak) = peak_of(|| {
                let mut inbound = Inbound::<Source, Wire>::new(limit);
                let index = inbound.add(
                    peer,
                    Source {
                        pieces: VecDeque::from([bytes.clone()]),
                        blocks: VecDeque::from([false, true]),
                    },
                );
                assert_eq!(inbound.read(index), Turn::Ended);
                std::iter::from_fn(|| inbound.pop()).collect::<Vec<_>>()
            });
            assert_eq!(arrived, [Incoming::Departed(peer)]);
            assert!(
                peak <= CHUNK,
                "Inbound allocated {peak} bytes for a prefix of {length} (its read buffer is {CHUNK})"
            );
            println!(
                "prefix {length} at limit {limit}: largest allocation {decoder_peak} bytes \
                 in the decoder, {peak} bytes in Inbound"
            );
        }
    }
}

/// A prefix at the limit, whose body never comes: the decoder waits, holding only the
/// bytes that came, and the end of the stream drops the peer.
#[test]
fn a_prefix_at_the_limit_holds_only_what_came() {
    let mut bytes = (DEFAULT_MAX_FRAME as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[7; 1000]);
    let (result, peak) = peak_of(|| {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.feed(&bytes);
        let first = decoder.next_frame::<Wire>().map_err(|e| e.to_string());
        (first, decoder.has_partial())
    });
    assert!(matches!(result, (Ok(None), true)), "{result:?}");
    assert!(peak <= 2 * bytes.len(), "{peak}");

    let peer = Endpoint::Role(1);
    let (arrived, peak) = peak_of(|| {
        let mut inbound = Inbound::<Source, Wire>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(
            peer,
            Source {
                pieces: VecDeque::from([bytes.clone()]),
                blocks: VecDeque::new(),
            },
        );
        assert_eq!(inbound.read(index), Turn::Drained);
        assert_eq!(inbound.read(index), Turn::Ended);
        std::iter::from_fn(|| inbound.pop()).collect::<Vec<_>>()
    });
    assert_eq!(arrived, [Incoming::Departed(peer)]);
    assert!(peak <= CHUNK, "{peak}");
}

/// A sequence that announces more elements than the frame holds bytes: the decoded
/// vector is not sized by the announcement.
#[test]
fn an_announced_sequence_length_is_not_trusted() {
    // `Control(Vec<u32>)`: the variant's index (2), then the vector's length as a
    // varint (u64::MAX here), then a few elements.
    let mut body = vec![2];
    body.extend_from_slice(&[0xff; 9]);
    body.push(0x01);
    body.extend_from_slice(&[1, 2, 3]);
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let (result, peak) = peak_of(|| {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        decoder.feed(&bytes);
        decoder.next_frame::<Wire>().map_err(|e| e.to_string())
    });
    assert!(result.is_err(), "{result:?}");
    assert!(
        peak <= WIDEST_ELEMENT * bytes.len(),
        "{peak} bytes allocated for a frame of {}",
        bytes.len()
    );
}

/// Frames exactly at the limit decode; one byte over, they are refused on both sides.
#[test]
fn the_limit_is_inclusive_on_both_sides() {
    // `Control(vec)`: 1 byte of variant, a 2-byte varint length, then one byte per
    // element below 128.
    let at_limit: Wire = Frame::Control(vec![5; LIMIT - 3]);
    let mut bytes = Vec::new();
    encode_into(&at_limit, &mut bytes, LIMIT).unwrap();
    assert_eq!(bytes.len(), LENGTH_PREFIX + LIMIT);
    let decoded = decode(&pieces(&bytes, &[7]), LIMIT);
    assert_eq!(decoded.frames, std::slice::from_ref(&at_limit));
    let mut refused = Vec::new();
    assert!(matches!(
        encode_into(&at_limit, &mut refused, LIMIT - 1),
        Err(CodecError::TooLarge { size, limit }) if size == LIMIT && limit == LIMIT - 1
    ));
    assert!(refused.is_empty());
    let decoded = decode(&[bytes], LIMIT - 1);
    assert!(decoded.frames.is_empty() && decoded.error.is_some());
}

/// The counting allocator sees a large allocation, and only this thread's.
#[test]
fn the_allocation_counter_sees_large_allocations() {
    let (_, peak) = peak_of(|| std::hint::black_box(vec![1u8; 3 << 20]));
    assert!(peak >= 3 << 20, "{peak}");
    let (_, peak) = peak_of(|| {
        std::thread::spawn(|| std::hint::black_box(vec![1u8; 3 << 20]))
            .join()
            .unwrap()
    });
    assert!(peak < 3 << 20, "{peak}: another thread's allocation");
}

/// A frame at the default bound, read in chunks as a transport reads it: once its
/// length is known, the decoder makes room for the rest of it at once, so the largest
/// allocation is the frame (and what came with its first chunk), not twice it.
#[test]
fn a_frame_at_the_default_bound_takes_no_more_than_the_frame() {
    // `Peer(App(text))`: two variant indices and a 4-byte varint length, then the text.
    let text = "x".repeat(DEFAULT_MAX_FRAME - 6);
    let frame: Wire = Frame::Peer(Envelope::App(text));
    let mut bytes = Vec::new();
    encode_into(&frame, &mut bytes, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(bytes.len(), LENGTH_PREFIX + DEFAULT_MAX_FRAME);
    let peer = Endpoint::Role(2);
    let (arrived, peak) = peak_of(|| {
        let mut inbound = Inbound::<Source, Wire>::new(DEFAULT_MAX_FRAME);
        let index = inbound.add(
            peer,
            Source {
                pieces: pieces(&bytes, &[CHUNK]).into(),
                blocks: VecDeque::new(),
            },
        );
        let arrived = read_all(&mut inbound, &[index]);
        assert!(inbound.is_closed());
        arrived
    });
    assert_eq!(
        arrived,
        [Incoming::Frame(peer, frame), Incoming::Departed(peer)]
    );
    assert!(
        peak <= LENGTH_PREFIX + DEFAULT_MAX_FRAME + CHUNK,
        "{peak} bytes for a frame of {DEFAULT_MAX_FRAME}"
    );
    println!("a frame of {DEFAULT_MAX_FRAME} bytes: largest allocation {peak} bytes");
}
