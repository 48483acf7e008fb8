//! A conformance suite for [`Transport`]s: checks that a transport keeps the contract
//! documented on the trait.
//!
//! The suite owns the checks; a transport under test supplies only a [`Network`], a
//! factory of fresh, unconnected endpoints. The checks create the endpoints they need,
//! connect them as the contract says (each side calls
//! [`connect`](Transport::connect) with the other's [`address`](Transport::address),
//! both ways, before any traffic), and send [`Probe`]s between them.
//!
//! ```no_run
//! # use snapshot_core::conformance::{self, Network, Probe};
//! # use snapshot_core::{Endpoint, Transport, TransportError};
//! # struct MyNetwork;
//! # impl MyNetwork { fn new() -> Self { MyNetwork } }
//! # impl Network for MyNetwork {
//! #     type Transport = Box<dyn Transport<Probe> + Send>;
//! #     fn endpoint(&mut self, _: Endpoint) -> Result<Self::Transport, TransportError> {
//! #         Err(TransportError::Closed)
//! #     }
//! # }
//! // Every check, each on a network of its own:
//! conformance::run_all(MyNetwork::new).unwrap();
//! // Or one check at a time, say one per test:
//! conformance::fifo_per_pair(MyNetwork::new()).unwrap();
//! ```
//!
//! # The checks
//!
//! Each check is a function of its own, named as in [`CHECKS`], that takes a fresh
//! network and returns `Ok(())` or the [`Failure`] it found:
//!
//! | check | what it asks of the transport |
//! |---|---|
//! | [`fifo_per_pair`] | 4 senders on threads of their own send 2,000 frames each to one receiver: each sender's frames arrive in the order sent. |
//! | [`no_loss_no_duplication`] | The same traffic: every frame of every sender arrives exactly once, intact. |
//! | [`departures`] | A peer that sends and drops its transport: its frames, then one [`Incoming::Departed`], nothing after it; sends to it fail with [`TransportError::Disconnected`]; once every peer has departed, receiving fails with [`TransportError::Closed`]; an endpoint with no peer yet waits. |
//! | [`recv_timeout`](recv_timeout()) | Gives up with `Ok(None)` no earlier than its timeout; a zero timeout does not wait but takes what has arrived; `recv` and `recv_timeout` flush what was sent before they wait. |
//! | [`unknown_endpoint`] | A send to an endpoint never connected fails with [`TransportError::UnknownEndpoint`], and the transport goes on working. |
//! | [`frame_size`] | With a [`max_frame`](Network::max_frame): a frame of exactly that size arrives, one a byte over is refused with [`TransportError::FrameTooLarge`], and the connection goes on working. |
//! | [`hub`] | 64 endpoints around one: the hub gets every frame, in order per spoke, and each spoke gets the hub's reply. |
//! | [`flood_both_ways`] | Two endpoints send each other 20,000 frames of [`FLOOD_PAYLOAD`] bytes, half in a burst, half receiving between sends: neither deadlocks, and each gets all of the other's frames in order. |
//! | [`ring`] | 5 endpoints in a one-way ring each send the next 5,000 frames of [`FLOOD_PAYLOAD`] bytes, half in a burst, half receiving between sends: none deadlocks, and each gets all of the previous one's frames in order. |
//! | [`bounded_memory`] | With a [`held_bound`](Network::held_bound): a sender to an endpoint that never calls its transport is made to wait once that many frames are held; when the receiver drains, everything arrives in order. |
//!
//! A check is deterministic for a correct transport: it waits for what must come
//! (up to [`Network::patience`] before it calls a frame lost), and the only timings
//! it asserts are lower bounds the contract promises (a timeout is not cut short) and
//! generous upper ones. It leaves nothing running: it joins the threads it starts and
//! drops every transport it made, with one exception: a check that deadlocks is
//! reported as a [`Failure`] once its deadline has passed ([`DEADLINE_PATIENCES`]
//! times the network's [`patience`](Network::patience): 90 s by default; 60 s for the
//! floods of [`flood_both_ways`] and [`ring`]), and its stuck threads, with their
//! transports, are left behind, since a thread cannot be stopped from outside.
//!
//! On the in-memory reference transport of this crate's tests, the whole suite runs
//! in about a second in a debug build, most of it the waits that check timeouts and
//! the memory bound.

use crate::{Endpoint, Incoming, NodeId, Transport, TransportError};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The payload of a flood frame, in bytes: the frames of [`flood_both_ways`],
/// [`ring`] and [`bounded_memory`], and the unit [`Network::held_bound`] counts in.
pub const FLOOD_PAYLOAD: usize = 1024;

/// The names of the checks, in the order [`run_all`] runs them: what
/// [`Failure::check`] says.
pub const CHECKS: [&str; 10] = [
    "fifo_per_pair",
    "no_loss_no_duplication",
    "departures",
    "recv_timeout",
    "unknown_endpoint",
    "frame_size",
    "hub",
    "flood_both_ways",
    "ring",
    "bounded_memory",
];

/// How long a check may run before it is reported as deadlocked, in multiples of the
/// network's [`patience`](Network::patience). The floods of [`flood_both_ways`] and
/// [`ring`] must be over within two thirds of it.
pub const DEADLINE_PATIENCES: u32 = 9;

/// Senders in the traffic of [`fifo_per_pair`] and [`no_loss_no_duplication`].
const SENDERS: u32 = 4;
/// Frames each of them sends.
const FRAMES: u64 = 2_000;
/// The payload of the frames that are not flood frames.
const SMALL: usize = 16;
/// Frames a departing peer sends before it goes.
const BEFORE_DEPARTURE: u64 = 10;
/// How long a check waits to see that nothing comes.
const SHORT: Duration = Duration::from_millis(100);
/// The timeout [`recv_timeout`](recv_timeout()) checks is not cut short.
const TIMEOUT: Duration = Duration::from_millis(200);
/// How late a receive may return and still count as on time.
const LATE: Duration = Duration::from_secs(5);
/// Spokes around the hub.
const SPOKES: u32 = 64;
/// Frames each spoke sends the hub.
const SPOKE_FRAMES: u64 = 4;
/// Flood frames each side of [`flood_both_ways`] sends.
const FLOOD: u64 = 20_000;
/// Endpoints in the ring of [`ring`].
const RING: u32 = 5;
/// Flood frames each of them sends the next.
const RING_FLOOD: u64 = 5_000;
/// How long the counter of completed sends must stand still before
/// [`bounded_memory`] reads it.
const SETTLE: Duration = Duration::from_millis(500);
/// How long [`bounded_memory`] waits, at most, for the counter to settle.
const SETTLE_AT_MOST: Duration = Duration::from_secs(10);

/// The frame every check sends: serde, so that byte-stream transports carry it.
///
/// It encodes as postcard does any struct of a `u64` and a byte string: the sequence
/// number as a varint, the payload's length as a varint, then the payload's bytes
/// (see [`encoded_size`](Self::encoded_size)). The payload is serialized as bytes
/// rather than as a sequence, which is the same on postcard's wire and much faster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The frame's number, counting from 0 per sender and check.
    pub seq: u64,
    /// Filler, in a pattern that depends on the sender and `seq`, so that a damaged
    /// or misattributed frame is noticed.
    #[serde(with = "bytes")]
    pub payload: Vec<u8>,
}

impl Probe {
    /// The probe the suite sends as frame `seq` from `from`, with `len` bytes of
    /// payload.
    pub fn new(from: Endpoint, seq: u64, len: usize) -> Self {
        Probe {
            seq,
            payload: vec![fill(from, seq); len],
        }
    }

    /// Whether this is, intact, the probe [`new`](Self::new) makes for `from`, its
    /// `seq` and `len` bytes of payload.
    pub fn is_intact(&self, from: Endpoint, len: usize) -> bool {
        let fill = fill(from, self.seq);
        self.payload.len() == len && self.payload.iter().all(|&byte| byte == fill)
    }

    /// Its size once encoded, as `snapshot_core::codec` encodes a frame (postcard),
    /// without the length prefix: what a transport's bound on a frame's size applies
    /// to.
    pub fn encoded_size(&self) -> usize {
        varint_size(self.seq) + varint_size(self.payload.len() as u64) + self.payload.len()
    }
}

/// The byte a probe's payload is filled with.
fn fill(from: Endpoint, seq: u64) -> u8 {
    let tag = match from {
        Endpoint::Node(NodeId(id)) => u64::from(id),
        Endpoint::Role(role) => (u64::from(role) + 1) << 40,
    };
    (seq.wrapping_add(tag.wrapping_mul(31)) % 251) as u8
}

/// The size of `value` as a postcard varint.
fn varint_size(value: u64) -> usize {
    let bits = (u64::BITS - value.leading_zeros()).max(1);
    bits.div_ceil(7) as usize
}

/// A probe from `from` whose encoded size is exactly `size`, if a probe can be that
/// small.
fn probe_of_size(from: Endpoint, size: usize) -> Option<Probe> {
    // A sequence number of one or two bytes fills the byte a payload's length can
    // skip where it grows a byte.
    for seq in [1, 200] {
        for length_size in 1..=10 {
            let Some(len) = size.checked_sub(varint_size(seq) + length_size) else {
                continue;
            };
            if varint_size(len as u64) == length_size {
                return Some(Probe::new(from, seq, len));
            }
        }
    }
    None
}

/// The payload as a byte string.
mod bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

/// What a transport under test supplies: fresh endpoints of one network.
///
/// Each check gets a network of its own and makes every endpoint it uses from it,
/// before it connects any of them. The endpoints it asks for are distinct
/// [`Endpoint::Node`]s, `Endpoint::Role(0)` and `Endpoint::Role(1)`.
pub trait Network: Send + 'static {
    /// The transport under test, carrying [`Probe`]s.
    type Transport: Transport<Probe> + Send + 'static;

    /// A new, unconnected endpoint `endpoint` of this network.
    fn endpoint(&mut self, endpoint: Endpoint) -> Result<Self::Transport, TransportError>;

    /// The bound on one frame's encoded size (as [`Probe::encoded_size`] counts it:
    /// postcard, without the length prefix), if the transport has one. `None` (the
    /// default) skips [`frame_size`].
    fn max_frame(&self) -> Option<usize> {
        None
    }

    /// At most how many flood frames (a [`Probe`] with [`FLOOD_PAYLOAD`] bytes of
    /// payload) the transport holds for an endpoint that never calls it, senders'
    /// buffers included; `None` (the default) skips [`bounded_memory`].
    ///
    /// That is: how many sends one sender can complete to an endpoint that is not
    /// receiving before a send waits. Count every place such a frame can wait: the
    /// sender's own buffers, the medium's (a pipe's capacity, socket send and receive
    /// buffers, a channel's capacity), and whatever the receiving transport takes in
    /// without being called (a reader thread's queue). For buffers counted in bytes,
    /// dividing by [`FLOOD_PAYLOAD`] overestimates a little (a flood frame encodes in
    /// a few bytes more, plus any length prefix), which is safe: the check fails only
    /// a transport that lets the sender run past the bound, so the bound should be an
    /// upper one, but not so loose (several times the true figure) that it would hide
    /// a transport that buffers without bound. The check sends `4 * bound + 1000`
    /// frames, so a large bound makes it slow.
    fn held_bound(&self) -> Option<usize> {
        None
    }

    /// How long a check waits for something that must come (a frame, a departure, a
    /// thread's end) before it reports it lost. Default 10 s: generous, so that a
    /// correct transport on a loaded machine is never failed; it is only waited out
    /// in full when the transport is broken. It also sets the deadline past which a
    /// check is reported as deadlocked: [`DEADLINE_PATIENCES`] times it (and 6 times
    /// it for the whole flood of [`flood_both_ways`] or [`ring`]), so a transport
    /// whose checks take long (a slow medium, a debug build) needs patience to match.
    fn patience(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// A check that found the transport breaking the contract.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{check}: {message}")]
pub struct Failure {
    /// The check that failed: one of [`CHECKS`].
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Every failure of a run of the whole suite, in the order of [`CHECKS`]: what
/// [`run_all`] returns when a check fails.
#[derive(Clone, PartialEq, Eq, Error)]
pub struct Failures(
    /// The failures, at most one per check.
    pub Vec<Failure>,
);

impl Failures {
    /// The names of the checks that failed.
    pub fn checks(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|failure| failure.check)
    }
}

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} conformance checks failed",
            self.0.len(),
            CHECKS.len()
        )?;
        for failure in &self.0 {
            write!(f, "\n  {failure}")?;
        }
        Ok(())
    }
}

/// Shown as its [`Display`](fmt::Display), so that `run_all(..).unwrap()` reads well.
impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs every check, in the order of [`CHECKS`], each on a fresh network from
/// `make`. Runs them all even when some fail, and returns every failure.
pub fn run_all<N: Network>(mut make: impl FnMut() -> N) -> Result<(), Failures> {
    let checks: [fn(N) -> Result<(), Failure>; CHECKS.len()] = [
        fifo_per_pair,
        no_loss_no_duplication,
        departures,
        recv_timeout,
        unknown_endpoint,
        frame_size,
        hub,
        flood_both_ways,
        ring,
        bounded_memory,
    ];
    let failures: Vec<Failure> = checks
        .into_iter()
        .filter_map(|check| check(make()).err())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

/// Writes one `#[test]` per check, each on a network from `$make` (an expression
/// that makes a fresh [`Network`]), so that the test runner runs them in parallel and
/// names the one that fails. For a transport crate's `tests/conformance.rs`:
///
/// ```ignore
/// snapshot_core::conformance_tests!(MyNetwork::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            fifo_per_pair, no_loss_no_duplication, departures, recv_timeout,
            unknown_endpoint, frame_size, hub, flood_both_ways, ring, bounded_memory);
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                if let Err(failure) = $crate::conformance::$check($make) {
                    panic!("{failure}");
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------

/// Check `fifo_per_pair`: 4 senders, each on a thread of its own, send 2,000 frames
/// each to one receiver, flush and drop their transports; every sender's frames
/// arrive in the order it sent them. The receiver takes frames until every sender
/// has departed, or until every sender's last frame has come and nothing more comes
/// for 100 ms.
pub fn fifo_per_pair<N: Network>(network: N) -> Result<(), Failure> {
    guarded("fifo_per_pair", network, |ctx, network| {
        let received = traffic(&ctx, network)?;
        for (from, probes) in &received {
            let mut last: Option<u64> = None;
            for probe in probes {
                if let Some(last) = last
                    && probe.seq < last
                {
                    return Err(ctx.fail(format!(
                        "from {from}, frame {} came after frame {last}",
                        probe.seq
                    )));
                }
                last = last.max(Some(probe.seq));
            }
        }
        Ok(())
    })
}

/// Check `no_loss_no_duplication`: the traffic of [`fifo_per_pair`]; every frame of
/// every sender arrives exactly once, intact, and nothing else arrives.
pub fn no_loss_no_duplication<N: Network>(network: N) -> Result<(), Failure> {
    guarded("no_loss_no_duplication", network, |ctx, network| {
        let received = traffic(&ctx, network)?;
        let mut problems = Vec::new();
        for (&from, probes) in &received {
            if !(1..=SENDERS).any(|i| node(i) == from) {
                problems.push(format!(
                    "{} frames came from {from}, which sent nothing",
                    probes.len()
                ));
                continue;
            }
            let mut counts = vec![0usize; FRAMES as usize];
            for probe in probes {
                match counts.get_mut(probe.seq as usize) {
                    Some(count) if probe.is_intact(from, SMALL) => *count += 1,
                    Some(_) => problems.push(format!(
                        "from {from}, frame {} arrived damaged (or was someone else's)",
                        probe.seq
                    )),
                    None => problems.push(format!(
                        "from {from}, frame {} arrived, which it never sent",
                        probe.seq
                    )),
                }
            }
            let seqs = |wanted: fn(usize) -> bool| -> Vec<usize> {
                (0..)
                    .zip(&counts)
                    .filter(|&(_, &count)| wanted(count))
                    .map(|(seq, _)| seq)
                    .collect()
            };
            let lost = seqs(|count| count == 0);
            let doubled = seqs(|count| count > 1);
            if !lost.is_empty() {
                problems.push(format!(
                    "from {from}, {} of {FRAMES} frames were lost ({})",
                    lost.len(),
                    some(&lost)
                ));
            }
            if !doubled.is_empty() {
                problems.push(format!(
                    "from {from}, {} frames arrived more than once ({})",
                    doubled.len(),
                    some(&doubled)
                ));
            }
        }
        for i in 1..=SENDERS {
            if !received.contains_key(&node(i)) {
                problems.push(format!("nothing came from {}", node(i)));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ctx.fail(problems.join("; ")))
        }
    })
}

/// Check `departures`: an endpoint with no peer yet waits (`recv_timeout` returns
/// `Ok(None)`). Of a receiver's two peers, the first sends 10 frames, flushes and
/// drops its transport: the receiver gets the 10 frames, then one
/// [`Incoming::Departed`] for it and nothing more from it; a send to it then fails
/// with [`TransportError::Disconnected`], `flush` does not fail, connecting to it
/// again does nothing, and receiving does not fail while the other peer is there.
/// Then the other does the same, and once its departure is reported, `recv_timeout`
/// and `recv` fail with [`TransportError::Closed`].
pub fn departures<N: Network>(network: N) -> Result<(), Failure> {
    guarded("departures", network, |ctx, mut network| {
        let mut lonely = endpoint(&ctx, &mut network, node(9))?;
        let got = lonely.recv_timeout(SHORT);
        if !matches!(got, Ok(None)) {
            return Err(ctx.fail(format!(
                "an endpoint with no peer yet: recv_timeout({SHORT:?}) returned {}, not Ok(None)",
                describe(&got)
            )));
        }
        drop(lonely);

        let mut receiver = endpoint(&ctx, &mut network, node(1))?;
        let mut first = endpoint(&ctx, &mut network, node(2))?;
        let mut second = endpoint(&ctx, &mut network, node(3))?;
        link(&ctx, &mut receiver, &mut first)?;
        link(&ctx, &mut receiver, &mut second)?;
        let me = receiver.local();

        let first_at = first.address();
        let first = depart(&ctx, first, me)?;
        receive_then_departure(&ctx, &mut receiver, first)?;
        expect_disconnected(&ctx, &mut receiver, first)?;
        receiver
            .flush()
            .map_err(|e| ctx.fail(format!("flush failed after {first} departed: {e:?}")))?;
        let got = receiver.recv_timeout(SHORT);
        if !matches!(got, Ok(None)) {
            return Err(ctx.fail(format!(
                "after {first} departed, with another peer still there and nothing sent, \
                 recv_timeout returned {}, not Ok(None)",
                describe(&got)
            )));
        }
        receiver.connect(first, &first_at).map_err(|e| {
            ctx.fail(format!(
                "connecting again to {first}, which has departed, failed ({e:?}): it \
                 should do nothing"
            ))
        })?;
        expect_disconnected(&ctx, &mut receiver, first)?;

        let second = depart(&ctx, second, me)?;
        receive_then_departure(&ctx, &mut receiver, second)?;
        let got = receiver.recv_timeout(SHORT);
        if !matches!(got, Err(TransportError::Closed)) {
            return Err(ctx.fail(format!(
                "every peer has departed, and recv_timeout returned {}, not Err(Closed)",
                describe(&got)
            )));
        }
        expect_disconnected(&ctx, &mut receiver, second)?;
        let waiting = Worker::spawn(&ctx, format!("{me} calling recv"), move || {
            let got = receiver.recv();
            drop(receiver);
            got.map(Some)
        })?;
        let got = waiting.join_by(&ctx, Instant::now() + ctx.patience)?;
        if !matches!(got, Err(TransportError::Closed)) {
            return Err(ctx.fail(format!(
                "every peer has departed, and recv returned {}, not Err(Closed)",
                describe(&got)
            )));
        }
        Ok(())
    })
}

/// Check `recv_timeout`: with a live peer that sends nothing, `recv_timeout(200 ms)`
/// returns `Ok(None)` no earlier than 200 ms after it was called (and no later than
/// 5 s after that); `recv_timeout(ZERO)` returns at once, and a frame the peer has
/// sent and flushed comes out of it if it is called until it does. Flush before
/// wait: a request sent without `flush`, followed by `recv_timeout` (and then by
/// `recv`), reaches the peer, whose answer comes back.
pub fn recv_timeout<N: Network>(network: N) -> Result<(), Failure> {
    guarded("recv_timeout", network, |ctx, mut network| {
        let mut asker = endpoint(&ctx, &mut network, Endpoint::Role(1))?;
        let mut answerer = endpoint(&ctx, &mut network, node(1))?;
        link(&ctx, &mut asker, &mut answerer)?;
        let (me, peer) = (asker.local(), answerer.local());

        let start = Instant::now();
        let got = asker.recv_timeout(TIMEOUT);
        let took = start.elapsed();
        if !matches!(got, Ok(None)) {
            return Err(ctx.fail(format!(
                "nothing was sent, and recv_timeout({TIMEOUT:?}) returned {}, not Ok(None)",
                describe(&got)
            )));
        }
        if took < TIMEOUT {
            return Err(ctx.fail(format!(
                "recv_timeout({TIMEOUT:?}) gave up after {took:?}, before its timeout"
            )));
        }
        if took > TIMEOUT + LATE {
            return Err(ctx.fail(format!(
                "recv_timeout({TIMEOUT:?}) gave up only after {took:?}"
            )));
        }

        let start = Instant::now();
        let got = asker.recv_timeout(Duration::ZERO);
        let took = start.elapsed();
        if !matches!(got, Ok(None)) {
            return Err(ctx.fail(format!(
                "nothing was sent, and recv_timeout(ZERO) returned {}, not Ok(None)",
                describe(&got)
            )));
        }
        if took > LATE {
            return Err(ctx.fail(format!("recv_timeout(ZERO) waited {took:?}")));
        }

        let sent = Probe::new(peer, 0, SMALL);
        answerer
            .send(me, sent.clone())
            .and_then(|()| answerer.flush())
            .map_err(|e| ctx.fail(format!("{peer}: sending to {me} failed: {e:?}")))?;
        let give_up = Instant::now() + ctx.patience;
        loop {
            let start = Instant::now();
            let got = asker.recv_timeout(Duration::ZERO);
            let took = start.elapsed();
            if took > LATE {
                return Err(ctx.fail(format!("recv_timeout(ZERO) waited {took:?}")));
            }
            match got {
                Ok(Some(Incoming::Frame(from, probe))) if from == peer && probe == sent => break,
                Ok(None) if Instant::now() < give_up => thread::sleep(Duration::from_millis(1)),
                Ok(None) => {
                    return Err(ctx.fail(format!(
                        "a frame sent and flushed by {peer} did not come out of \
                         recv_timeout(ZERO), called over and over for {:?}",
                        ctx.patience
                    )));
                }
                other => {
                    return Err(ctx.fail(format!(
                        "waiting with recv_timeout(ZERO) for frame 0 from {peer}, got {}",
                        describe(&other)
                    )));
                }
            }
        }

        // Flush before wait: the answerer replies to each of two requests.
        let answering = Worker::spawn(&ctx, format!("{peer} answering"), move || {
            let result = answer(&ctx, &mut answerer, me, 2);
            drop(answerer);
            result
        })?;
        let asked = ask(&ctx, &mut asker, peer, 0, "recv_timeout", |asker| {
            asker.recv_timeout(ctx.patience)
        })
        .and_then(|()| {
            ask(&ctx, &mut asker, peer, 1, "recv", |asker| {
                asker.recv().map(Some)
            })
        });
        let answered = answering.join_by(&ctx, Instant::now() + ctx.patience * 2);
        drop(asker);
        asked?;
        answered?
    })
}

/// Check `unknown_endpoint`: a send to an endpoint that exists but was never
/// connected to, and to endpoints that do not exist, fails with
/// [`TransportError::UnknownEndpoint`] naming it; the transport then goes on working.
pub fn unknown_endpoint<N: Network>(network: N) -> Result<(), Failure> {
    guarded("unknown_endpoint", network, |ctx, mut network| {
        let mut sender = endpoint(&ctx, &mut network, node(1))?;
        let mut receiver = endpoint(&ctx, &mut network, node(2))?;
        let stranger = endpoint(&ctx, &mut network, node(3))?;
        link(&ctx, &mut sender, &mut receiver)?;
        let me = sender.local();
        for to in [stranger.local(), node(99), Endpoint::Role(0)] {
            match sender.send(to, Probe::new(me, 0, SMALL)) {
                Err(TransportError::UnknownEndpoint(named)) if named == to => {}
                other => {
                    return Err(ctx.fail(format!(
                        "a send to {to}, never connected to, returned {other:?}, not \
                         Err(UnknownEndpoint({to}))"
                    )));
                }
            }
        }
        let to = receiver.local();
        sender
            .send(to, Probe::new(me, 0, SMALL))
            .and_then(|()| sender.flush())
            .map_err(|e| {
                ctx.fail(format!(
                    "after the refused sends, sending to {to} failed: {e:?}"
                ))
            })?;
        let mut expect = InOrder::new(me, SMALL, 1);
        expect.receive_rest(&ctx, &mut receiver)?;
        drop(stranger);
        Ok(())
    })
}

/// Check `frame_size`, where the network has a [`max_frame`](Network::max_frame): a
/// frame whose encoded size ([`Probe::encoded_size`]) is exactly the bound is sent
/// and arrives intact; one a byte larger is refused by `send` with
/// [`TransportError::FrameTooLarge`]; a small frame sent after it arrives next.
pub fn frame_size<N: Network>(network: N) -> Result<(), Failure> {
    guarded("frame_size", network, |ctx, mut network| {
        let Some(bound) = network.max_frame() else {
            return Ok(());
        };
        let mut sender = endpoint(&ctx, &mut network, node(1))?;
        let mut receiver = endpoint(&ctx, &mut network, node(2))?;
        link(&ctx, &mut sender, &mut receiver)?;
        let (me, to) = (sender.local(), receiver.local());
        let (Some(largest), Some(over)) = (
            probe_of_size(me, bound),
            bound
                .checked_add(1)
                .and_then(|over| probe_of_size(me, over)),
        ) else {
            return Err(ctx.fail(format!("max_frame() is {bound}: no probe is that small")));
        };
        let small = Probe::new(me, 7, 0);
        let expected = [largest.clone(), small.clone()];
        let receiving = Worker::spawn(&ctx, format!("{to} receiving"), move || {
            let result =
                expected
                    .iter()
                    .try_for_each(|due| match receiver.recv_timeout(ctx.patience) {
                        Ok(Some(Incoming::Frame(from, probe))) if from == me && probe == *due => {
                            Ok(())
                        }
                        Ok(Some(Incoming::Frame(from, probe))) if from == me => {
                            Err(ctx.fail(format!(
                                "frame {} of {} bytes came where frame {} of {} bytes was due",
                                probe.seq,
                                probe.encoded_size(),
                                due.seq,
                                due.encoded_size()
                            )))
                        }
                        other => Err(ctx.fail(format!(
                            "waiting for frame {} from {me}, got {}",
                            due.seq,
                            describe(&other)
                        ))),
                    });
            drop(receiver);
            result
        })?;
        let sent = (|| {
            sender.send(to, largest).map_err(|e| {
                ctx.fail(format!(
                    "a frame of exactly max_frame() = {bound} bytes was refused: {e:?}"
                ))
            })?;
            match sender.send(to, over) {
                Err(TransportError::FrameTooLarge { .. }) => {}
                other => {
                    return Err(ctx.fail(format!(
                        "a frame of {} bytes, over max_frame() = {bound}, was not refused \
                         with FrameTooLarge: {other:?}",
                        bound + 1
                    )));
                }
            }
            sender
                .send(to, small)
                .and_then(|()| sender.flush())
                .map_err(|e| {
                    ctx.fail(format!(
                        "after the frame over the bound was refused, a small one failed: {e:?}"
                    ))
                })
        })();
        let received = match &sent {
            // The receiver waits for what never left: end its wait.
            Err(_) => {
                drop(sender);
                receiving.join_by(&ctx, Instant::now() + ctx.patience)
            }
            Ok(()) => {
                let received = receiving.join_by(&ctx, Instant::now() + ctx.patience * 2);
                drop(sender);
                received
            }
        };
        sent?;
        received?
    })
}

/// Check `hub`: 64 spokes connect to one hub (the endpoint `Endpoint::Role(0)`),
/// which connects to them all with one [`connect_all`](Transport::connect_all) (a
/// spoke named twice in it, as connecting twice does nothing), and send it 4 frames
/// each, all from one thread; the hub gets all 256, in order per spoke, and replies to
/// each spoke, which gets its reply.
pub fn hub<N: Network>(network: N) -> Result<(), Failure> {
    guarded("hub", network, |ctx, mut network| {
        let mut hub = endpoint(&ctx, &mut network, Endpoint::Role(0))?;
        let (center, center_at) = (hub.local(), hub.address());
        let mut spokes = Vec::new();
        for i in 1..=SPOKES {
            let mut spoke = endpoint(&ctx, &mut network, node(i))?;
            let at = spoke.local();
            spoke.connect(center, &center_at).map_err(|e| {
                ctx.fail(format!(
                    "{at} could not connect to {center} at {center_at:?}: {e:?}"
                ))
            })?;
            spokes.push(spoke);
        }
        let addresses: Vec<(Endpoint, String)> = spokes
            .iter()
            .map(|spoke| (spoke.local(), spoke.address()))
            .chain(spokes.first().map(|spoke| (spoke.local(), spoke.address())))
            .collect();
        let peers: Vec<(Endpoint, &str)> = addresses
            .iter()
            .map(|(spoke, at)| (*spoke, at.as_str()))
            .collect();
        hub.connect_all(&peers).map_err(|e| {
            ctx.fail(format!(
                "{center} could not connect to its {SPOKES} spokes at once: {e:?}"
            ))
        })?;
        let driving = Worker::spawn(&ctx, "the spokes".to_string(), move || {
            let result = drive_spokes(&ctx, &mut spokes, center);
            drop(spokes);
            result
        })?;
        let result = hub_side(&ctx, &mut hub);
        if result.is_err() {
            drop(hub);
            let _ = driving.join_by(&ctx, Instant::now() + ctx.patience * 2);
            return result;
        }
        let driven = driving.join_by(&ctx, Instant::now() + ctx.patience * 2);
        drop(hub);
        driven?
    })
}

/// Check `flood_both_ways`: two endpoints, each on a thread of its own, send each
/// other 20,000 frames of [`FLOOD_PAYLOAD`] bytes: the first 10,000 in one burst,
/// receiving nothing meanwhile (a send that waits must take in what arrives, as the
/// contract says), the rest taking what has arrived with `recv_timeout(ZERO)` after
/// every send. Both finish within 6 times the network's
/// [`patience`](Network::patience), 60 s by default (a deadlock is reported, and the
/// stuck threads are left behind), and each gets all of the other's frames, in
/// order.
pub fn flood_both_ways<N: Network>(network: N) -> Result<(), Failure> {
    guarded("flood_both_ways", network, |ctx, network| {
        flood_ring(&ctx, network, 2, FLOOD)
    })
}

/// Check `ring`: 5 endpoints in a one-way ring, each connected to the one before it
/// and the one after it and on a thread of its own. Each sends the next 5,000 frames
/// of [`FLOOD_PAYLOAD`] bytes while it takes the previous one's: the first 2,500 in
/// one burst, receiving nothing meanwhile (a send that waits must take in what
/// arrives, from every peer, not only from the one it waits for), the rest taking
/// what has arrived with `recv_timeout(ZERO)` after every send; then it flushes and
/// takes the rest. All finish within 6 times the network's
/// [`patience`](Network::patience), as in [`flood_both_ways`], and each gets all of
/// the previous one's frames, in order.
pub fn ring<N: Network>(network: N) -> Result<(), Failure> {
    guarded("ring", network, |ctx, network| {
        flood_ring(&ctx, network, RING, RING_FLOOD)
    })
}

/// Check `bounded_memory`, where the network has a
/// [`held_bound`](Network::held_bound) `b`: a sender thread sends `4 * b + 1000`
/// flood frames to a receiver that does not call its transport, counting its
/// completed sends. Once the count has not moved for 500 ms (or after 10 s), it must
/// be at most `b`. The receiver then drains: every frame arrives, in order, and the
/// sender finishes.
pub fn bounded_memory<N: Network>(network: N) -> Result<(), Failure> {
    guarded("bounded_memory", network, |ctx, mut network| {
        let Some(bound) = network.held_bound() else {
            return Ok(());
        };
        let total = bound.saturating_mul(4).saturating_add(1000);
        let mut sender = endpoint(&ctx, &mut network, node(1))?;
        let mut receiver = endpoint(&ctx, &mut network, node(2))?;
        link(&ctx, &mut sender, &mut receiver)?;
        let (me, to) = (sender.local(), receiver.local());
        let completed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&completed);
        let sending = Worker::spawn(&ctx, format!("{me} sending"), move || {
            let result = (|| {
                for seq in 0..total as u64 {
                    sender
                        .send(to, Probe::new(me, seq, FLOOD_PAYLOAD))
                        .map_err(|e| ctx.fail(format!("{me}: send {seq} to {to} failed: {e:?}")))?;
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                sender
                    .flush()
                    .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))
            })();
            (result, sender)
        })?;

        let start = Instant::now();
        let mut seen = completed.load(Ordering::SeqCst);
        let mut since = Instant::now();
        while seen < total && since.elapsed() < SETTLE && start.elapsed() < SETTLE_AT_MOST {
            thread::sleep(Duration::from_millis(20));
            let now = completed.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                since = Instant::now();
            }
        }
        let held = completed.load(Ordering::SeqCst);

        let drained =
            InOrder::new(me, FLOOD_PAYLOAD, total as u64).receive_rest(&ctx, &mut receiver);
        let sent = match &drained {
            Ok(()) => sending.join_by(&ctx, Instant::now() + ctx.patience),
            Err(_) => {
                drop(receiver);
                sending.join_by(&ctx, Instant::now() + ctx.patience)
            }
        };
        if held > bound {
            return Err(ctx.fail(format!(
                "{me} completed {held} sends of flood frames to an endpoint that never \
                 called its transport, more than held_bound() = {bound}: the transport \
                 buffers without bound (or held_bound is too low)"
            )));
        }
        drained?;
        let (sent, sender) = sent?;
        drop(sender);
        sent
    })
}

// ---------------------------------------------------------------------------------
// What the checks share.
// ---------------------------------------------------------------------------------

/// What a check knows besides its network.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    check: &'static str,
    patience: Duration,
}

impl Ctx {
    fn fail(&self, message: impl Into<String>) -> Failure {
        Failure {
            check: self.check,
            message: message.into(),
        }
    }
}

/// Runs `body` on a thread of its own, and reports it as deadlocked if it has not
/// finished by the check's deadline.
fn guarded<N: Network>(
    check: &'static str,
    network: N,
    body: impl FnOnce(Ctx, N) -> Result<(), Failure> + Send + 'static,
) -> Result<(), Failure> {
    let ctx = Ctx {
        check,
        patience: network.patience(),
    };
    let deadline = Instant::now() + ctx.patience * DEADLINE_PATIENCES;
    Worker::spawn(&ctx, "the check".to_string(), move || body(ctx, network))?
        .join_by(&ctx, deadline)?
}

/// A thread whose result can be waited for with a deadline.
struct Worker<T> {
    name: String,
    result: mpsc::Receiver<T>,
    handle: JoinHandle<()>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(
        ctx: &Ctx,
        name: String,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Self, Failure> {
        let (report, result) = mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name(format!("conformance {}: {name}", ctx.check))
            .spawn(move || {
                let _ = report.send(body());
            })
            .map_err(|e| ctx.fail(format!("could not start a thread for {name}: {e}")))?;
        Ok(Worker {
            name,
            result,
            handle,
        })
    }

    /// Its result; a failure if it panicked or has not finished by `deadline`, in
    /// which case it is left running.
    fn join_by(self, ctx: &Ctx, deadline: Instant) -> Result<T, Failure> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.result.recv_timeout(wait) {
            Ok(result) => {
                // It has sent its result: it is ending.
                let _ = self.handle.join();
                Ok(result)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(ctx.fail(format!(
                "{} did not finish in time: a deadlock? (its thread is left running)",
                self.name
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(panic) => Err(ctx.fail(format!(
                    "{} panicked: {}",
                    self.name,
                    panic_message(panic.as_ref())
                ))),
                Ok(()) => Err(ctx.fail(format!("{} ended without a result", self.name))),
            },
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// A new endpoint of the network, which must say it is `at`.
fn endpoint<N: Network>(ctx: &Ctx, network: &mut N, at: Endpoint) -> Result<N::Transport, Failure> {
    let transport = network
        .endpoint(at)
        .map_err(|e| ctx.fail(format!("the network could not make endpoint {at}: {e:?}")))?;
    if transport.local() != at {
        return Err(ctx.fail(format!(
            "the transport made for {at} says it is {}",
            transport.local()
        )));
    }
    Ok(transport)
}

/// Connects `a` and `b` as the contract asks: each to the other.
fn link<T: Transport<Probe>>(ctx: &Ctx, a: &mut T, b: &mut T) -> Result<(), Failure> {
    let (a_end, a_at) = (a.local(), a.address());
    let (b_end, b_at) = (b.local(), b.address());
    a.connect(b_end, &b_at).map_err(|e| {
        ctx.fail(format!(
            "{a_end} could not connect to {b_end} at {b_at:?}: {e:?}"
        ))
    })?;
    b.connect(a_end, &a_at).map_err(|e| {
        ctx.fail(format!(
            "{b_end} could not connect to {a_end} at {a_at:?}: {e:?}"
        ))
    })
}

/// What a receive returned, in a few words.
fn describe(got: &Result<Option<Incoming<Probe>>, TransportError>) -> String {
    match got {
        Ok(None) => "Ok(None)".to_string(),
        Ok(Some(Incoming::Frame(from, probe))) => format!("frame {} from {from}", probe.seq),
        Ok(Some(Incoming::Departed(peer))) => format!("Departed({peer})"),
        Err(e) => format!("Err({e:?})"),
    }
}

/// A few of `seqs`, for a message.
fn some(seqs: &[usize]) -> String {
    let mut listed: Vec<String> = seqs.iter().take(5).map(|s| s.to_string()).collect();
    if seqs.len() > listed.len() {
        listed.push("...".to_string());
    }
    listed.join(", ")
}

/// Frames expected from one peer, in order: `len`-byte probes 0, 1, 2 and on.
struct InOrder {
    from: Endpoint,
    len: usize,
    next: u64,
    total: u64,
}

impl InOrder {
    fn new(from: Endpoint, len: usize, total: u64) -> Self {
        InOrder {
            from,
            len,
            next: 0,
            total,
        }
    }

    fn done(&self) -> bool {
        self.next >= self.total
    }

    /// Takes what `at` received.
    fn take(&mut self, ctx: &Ctx, at: Endpoint, got: Incoming<Probe>) -> Result<(), Failure> {
        match got {
            Incoming::Frame(from, probe) if from == self.from && !self.done() => {
                if probe.seq != self.next {
                    return Err(ctx.fail(format!(
                        "at {at}, from {from}: frame {} came where frame {} was due",
                        probe.seq, self.next
                    )));
                }
                if !probe.is_intact(from, self.len) {
                    return Err(ctx.fail(format!(
                        "at {at}, from {from}: frame {} arrived damaged",
                        probe.seq
                    )));
                }
                self.next += 1;
                Ok(())
            }
            Incoming::Frame(from, probe) => Err(ctx.fail(format!(
                "at {at}: frame {} from {from}, which was not expected",
                probe.seq
            ))),
            Incoming::Departed(peer) if peer == self.from => Err(ctx.fail(format!(
                "at {at}: {peer} was reported departed while it was still there \
                 ({} of its {} frames had come)",
                self.next, self.total
            ))),
            Incoming::Departed(peer) => Err(ctx.fail(format!(
                "at {at}: Departed({peer}) came, which was not expected (a second time, \
                 or for an endpoint that was not a peer)",
            ))),
        }
    }

    /// Receives on `transport` until every frame has come.
    fn receive_rest<T: Transport<Probe>>(
        &mut self,
        ctx: &Ctx,
        transport: &mut T,
    ) -> Result<(), Failure> {
        let at = transport.local();
        while !self.done() {
            match transport.recv_timeout(ctx.patience) {
                Ok(Some(got)) => self.take(ctx, at, got)?,
                Ok(None) => {
                    return Err(ctx.fail(format!(
                        "at {at}: {} of {} frames had come from {}, then nothing for {:?}",
                        self.next, self.total, self.from, ctx.patience
                    )));
                }
                Err(e) => {
                    return Err(ctx.fail(format!(
                        "at {at}: receiving failed after {} of {} frames from {}: {e:?}",
                        self.next, self.total, self.from
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The traffic of [`fifo_per_pair`] and [`no_loss_no_duplication`]: what the
/// receiver got from each sender, in the order it got it.
fn traffic<N: Network>(
    ctx: &Ctx,
    mut network: N,
) -> Result<BTreeMap<Endpoint, Vec<Probe>>, Failure> {
    let mut receiver = endpoint(ctx, &mut network, Endpoint::Role(1))?;
    let mut senders = Vec::new();
    for i in 1..=SENDERS {
        let mut sender = endpoint(ctx, &mut network, node(i))?;
        link(ctx, &mut sender, &mut receiver)?;
        senders.push(sender);
    }
    let to = receiver.local();
    let mut workers = Vec::new();
    for mut sender in senders {
        let ctx = *ctx;
        let me = sender.local();
        workers.push(Worker::spawn(&ctx, format!("{me} sending"), move || {
            for seq in 0..FRAMES {
                sender
                    .send(to, Probe::new(me, seq, SMALL))
                    .map_err(|e| ctx.fail(format!("{me}: send {seq} to {to} failed: {e:?}")))?;
            }
            sender
                .flush()
                .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))?;
            // Departs, which tells the receiver it has everything.
            drop(sender);
            Ok::<(), Failure>(())
        })?);
    }

    let mut received: BTreeMap<Endpoint, Vec<Probe>> = BTreeMap::new();
    let mut departed = BTreeSet::new();
    // Senders whose last frame has come: once all have, a short silence ends the
    // traffic too, so that a transport that does not report departures is not waited
    // for (that is for `departures` to say), while a frame that comes soon after
    // what should have been the last (a duplicate, say) is still seen.
    let mut finished = BTreeSet::new();
    let receiving = loop {
        let wait = if finished.len() == SENDERS as usize {
            SHORT
        } else {
            ctx.patience
        };
        match receiver.recv_timeout(wait) {
            Ok(Some(Incoming::Frame(from, probe))) => {
                if probe.seq == FRAMES - 1 {
                    finished.insert(from);
                }
                received.entry(from).or_default().push(probe);
            }
            Ok(Some(Incoming::Departed(peer))) => {
                departed.insert(peer);
                if departed.len() == SENDERS as usize {
                    break Ok(());
                }
            }
            // Whether anything is missing is for the checks to say.
            Ok(None) | Err(TransportError::Closed) => break Ok(()),
            Err(e) => break Err(ctx.fail(format!("receiving failed: {e:?}"))),
        }
    };
    drop(receiver);
    let deadline = Instant::now() + ctx.patience;
    let mut sending = Ok(());
    for worker in workers {
        let sent = worker.join_by(ctx, deadline).and_then(|sent| sent);
        sending = sending.and(sent);
    }
    receiving?;
    sending?;
    Ok(received)
}

/// `peer` sends [`BEFORE_DEPARTURE`] frames to `to`, flushes, and drops its
/// transport.
fn depart<T: Transport<Probe>>(ctx: &Ctx, mut peer: T, to: Endpoint) -> Result<Endpoint, Failure> {
    let me = peer.local();
    for seq in 0..BEFORE_DEPARTURE {
        peer.send(to, Probe::new(me, seq, SMALL))
            .map_err(|e| ctx.fail(format!("{me}: send {seq} to {to} failed: {e:?}")))?;
    }
    peer.flush()
        .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))?;
    Ok(me)
}

/// Receives the frames a departing peer sent, then its departure.
fn receive_then_departure<T: Transport<Probe>>(
    ctx: &Ctx,
    receiver: &mut T,
    peer: Endpoint,
) -> Result<(), Failure> {
    let at = receiver.local();
    let mut expect = InOrder::new(peer, SMALL, BEFORE_DEPARTURE);
    loop {
        match receiver.recv_timeout(ctx.patience) {
            Ok(Some(Incoming::Departed(gone))) if gone == peer => {
                if !expect.done() {
                    return Err(ctx.fail(format!(
                        "Departed({peer}) came after only {} of the {BEFORE_DEPARTURE} \
                         frames it sent",
                        expect.next
                    )));
                }
                return Ok(());
            }
            Ok(Some(Incoming::Frame(from, probe))) if from == peer && expect.done() => {
                return Err(ctx.fail(format!(
                    "{peer} sent {BEFORE_DEPARTURE} frames and departed, and frame {} \
                     came after them",
                    probe.seq
                )));
            }
            Ok(Some(got)) => expect.take(ctx, at, got)?,
            Ok(None) if expect.done() => {
                return Err(ctx.fail(format!(
                    "{peer} sent {BEFORE_DEPARTURE} frames and dropped its transport; they \
                     came, but its departure did not within {:?}",
                    ctx.patience
                )));
            }
            other => {
                return Err(ctx.fail(format!(
                    "waiting for the frames of {peer}, which dropped its transport, got {} \
                     after {} of its {BEFORE_DEPARTURE} frames",
                    describe(&other),
                    expect.next
                )));
            }
        }
    }
}

/// A send to `peer`, whose departure has been reported, must fail with
/// [`TransportError::Disconnected`].
fn expect_disconnected<T: Transport<Probe>>(
    ctx: &Ctx,
    transport: &mut T,
    peer: Endpoint,
) -> Result<(), Failure> {
    let me = transport.local();
    match transport.send(peer, Probe::new(me, 0, SMALL)) {
        Err(TransportError::Disconnected(named)) if named == peer => Ok(()),
        other => Err(ctx.fail(format!(
            "{peer}'s departure was reported, and a send to it returned {other:?}, not \
             Err(Disconnected({peer}))"
        ))),
    }
}

/// The asker's side of a request and its answer: sends request `seq` without
/// flushing, then waits with `wait`, which must flush it.
fn ask<T: Transport<Probe>>(
    ctx: &Ctx,
    asker: &mut T,
    peer: Endpoint,
    seq: u64,
    how: &str,
    wait: impl FnOnce(&mut T) -> Result<Option<Incoming<Probe>>, TransportError>,
) -> Result<(), Failure> {
    let me = asker.local();
    asker.send(peer, Probe::new(me, seq, SMALL)).map_err(|e| {
        ctx.fail(format!(
            "{me}: sending request {seq} to {peer} failed: {e:?}"
        ))
    })?;
    let got = wait(asker);
    match &got {
        Ok(Some(Incoming::Frame(from, probe)))
            if *from == peer && probe.seq == 1000 + seq && probe.is_intact(peer, SMALL) =>
        {
            Ok(())
        }
        Ok(None) | Ok(Some(Incoming::Departed(_))) => Err(ctx.fail(format!(
            "{me} sent a request without flushing, then called {how}, which returned {}: \
             the request never left ({how} must flush before it waits)",
            describe(&got)
        ))),
        _ => Err(ctx.fail(format!(
            "{me} sent request {seq} and called {how}, which returned {}, not answer {}",
            describe(&got),
            1000 + seq
        ))),
    }
}

/// The answerer's side: answers `requests` requests from `asker`, each with frame
/// `1000 + seq`, flushing each answer.
fn answer<T: Transport<Probe>>(
    ctx: &Ctx,
    answerer: &mut T,
    asker: Endpoint,
    requests: u64,
) -> Result<(), Failure> {
    let me = answerer.local();
    for seq in 0..requests {
        match answerer.recv_timeout(ctx.patience) {
            Ok(Some(Incoming::Frame(from, probe)))
                if from == asker && probe.seq == seq && probe.is_intact(asker, SMALL) => {}
            other => {
                return Err(ctx.fail(format!(
                    "{me}, waiting for request {seq} from {asker}, got {}",
                    describe(&other)
                )));
            }
        }
        answerer
            .send(asker, Probe::new(me, 1000 + seq, SMALL))
            .and_then(|()| answerer.flush())
            .map_err(|e| ctx.fail(format!("{me}: answering {asker} failed: {e:?}")))?;
    }
    Ok(())
}

/// The spokes' side of [`hub`]: each sends its frames, then each takes its reply.
fn drive_spokes<T: Transport<Probe>>(
    ctx: &Ctx,
    spokes: &mut [T],
    hub: Endpoint,
) -> Result<(), Failure> {
    for spoke in spokes.iter_mut() {
        let me = spoke.local();
        for seq in 0..SPOKE_FRAMES {
            spoke
                .send(hub, Probe::new(me, seq, SMALL))
                .map_err(|e| ctx.fail(format!("{me}: send {seq} to {hub} failed: {e:?}")))?;
        }
        spoke
            .flush()
            .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))?;
    }
    for (i, spoke) in (1..).zip(spokes.iter_mut()) {
        let me = spoke.local();
        let got = spoke.recv_timeout(ctx.patience);
        match &got {
            Ok(Some(Incoming::Frame(from, probe)))
                if *from == hub && probe.seq == i && probe.is_intact(hub, SMALL) => {}
            _ => {
                return Err(ctx.fail(format!(
                    "{me}, waiting for the hub's reply (frame {i} from {hub}), got {}",
                    describe(&got)
                )));
            }
        }
    }
    Ok(())
}

/// The hub's side of [`hub`]: takes every spoke's frames, then replies to each.
fn hub_side<T: Transport<Probe>>(ctx: &Ctx, hub: &mut T) -> Result<(), Failure> {
    let me = hub.local();
    let mut expect: BTreeMap<Endpoint, InOrder> = (1..=SPOKES)
        .map(|i| (node(i), InOrder::new(node(i), SMALL, SPOKE_FRAMES)))
        .collect();
    let mut waiting = u64::from(SPOKES) * SPOKE_FRAMES;
    while waiting > 0 {
        match hub.recv_timeout(ctx.patience) {
            Ok(Some(got)) => match expect.get_mut(&got.peer()) {
                Some(spoke) => spoke.take(ctx, me, got)?,
                None => {
                    return Err(ctx.fail(format!(
                        "{me} got {}, from no spoke",
                        describe(&Ok(Some(got)))
                    )));
                }
            },
            other => {
                let missing: Vec<String> = expect
                    .values()
                    .filter(|spoke| !spoke.done())
                    .map(|spoke| format!("{} ({} of {})", spoke.from, spoke.next, spoke.total))
                    .take(5)
                    .collect();
                return Err(ctx.fail(format!(
                    "{me}, waiting for {waiting} more frames, from {} and more, got {}",
                    missing.join(", "),
                    describe(&other)
                )));
            }
        }
        waiting -= 1;
    }
    for (i, spoke) in (1..).zip(expect.keys()) {
        hub.send(*spoke, Probe::new(me, i, SMALL))
            .map_err(|e| ctx.fail(format!("{me}: replying to {spoke} failed: {e:?}")))?;
    }
    hub.flush()
        .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))
}

/// The floods of [`flood_both_ways`] and [`ring`]: endpoints 1 to `size` (at least
/// 2) in a one-way ring, each on a thread of its own, each sending the next `total`
/// flood frames (see [`flood`]) while it takes the previous one's, all by two thirds
/// of the check's deadline. In a ring of two, each is the other's next.
fn flood_ring<N: Network>(ctx: &Ctx, mut network: N, size: u32, total: u64) -> Result<(), Failure> {
    let mut ring = Vec::new();
    for i in 1..=size {
        ring.push(endpoint(ctx, &mut network, node(i))?);
    }
    for i in 1..ring.len() {
        let (before, after) = ring.split_at_mut(i);
        link(ctx, &mut before[i - 1], &mut after[0])?;
    }
    // Closes the ring, unless it is a pair, linked already.
    if let [first, between @ .., last] = ring.as_mut_slice()
        && !between.is_empty()
    {
        link(ctx, last, first)?;
    }
    let ends: Vec<Endpoint> = ring.iter().map(Transport::local).collect();
    let deadline = Instant::now() + ctx.patience * (DEADLINE_PATIENCES * 2 / 3);
    let mut workers = Vec::new();
    for (i, mut transport) in ring.into_iter().enumerate() {
        let ctx = *ctx;
        let me = ends[i];
        let next = ends[(i + 1) % ends.len()];
        let previous = ends[(i + ends.len() - 1) % ends.len()];
        workers.push(Worker::spawn(&ctx, format!("{me} flooding"), move || {
            let result = flood(&ctx, &mut transport, next, previous, total);
            // A failed endpoint drops its transport here: its departure ends the
            // others' waits.
            (result.map(|()| transport), Instant::now())
        })?);
    }
    let mut failures = Vec::new();
    let mut finished = Vec::new();
    for worker in workers {
        match worker.join_by(ctx, deadline) {
            Ok((Ok(transport), _)) => finished.push(transport),
            Ok((Err(failure), at)) => failures.push((at, failure)),
            // Stuck, or panicked.
            Err(failure) => failures.push((Instant::now(), failure)),
        }
    }
    // Every thread has ended (or is left behind) before any transport drops.
    drop(finished);
    // The failure that came first: the others may follow from it.
    match failures.into_iter().min_by_key(|&(at, _)| at) {
        None => Ok(()),
        Some((_, failure)) => Err(failure),
    }
}

/// One endpoint of a flood: sends `total` flood frames to `next`, the first half in
/// a burst, then taking what has arrived with `recv_timeout(ZERO)` after each send;
/// flushes; then takes the rest of the `total` frames due from `previous`.
fn flood<T: Transport<Probe>>(
    ctx: &Ctx,
    transport: &mut T,
    next: Endpoint,
    previous: Endpoint,
    total: u64,
) -> Result<(), Failure> {
    let me = transport.local();
    let mut expect = InOrder::new(previous, FLOOD_PAYLOAD, total);
    for seq in 0..total {
        transport
            .send(next, Probe::new(me, seq, FLOOD_PAYLOAD))
            .map_err(|e| ctx.fail(format!("{me}: send {seq} to {next} failed: {e:?}")))?;
        if seq < total / 2 {
            continue;
        }
        loop {
            match transport.recv_timeout(Duration::ZERO) {
                Ok(Some(got)) => expect.take(ctx, me, got)?,
                Ok(None) => break,
                Err(e) => {
                    return Err(ctx.fail(format!(
                        "{me}: recv_timeout(ZERO) failed after send {seq}: {e:?}"
                    )));
                }
            }
        }
    }
    // Everything due may have come already, and then receiving would not flush.
    transport
        .flush()
        .map_err(|e| ctx.fail(format!("{me}: flush failed: {e:?}")))?;
    expect.receive_rest(ctx, transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_size_is_postcards() {
        for len in (0..300).chain([16_380, 16_383, 16_384, 16_385, 70_000]) {
            for seq in [0, 1, 127, 128, 200, 16_383, 16_384, u64::MAX] {
                let probe = Probe::new(Endpoint::Role(1), seq, len);
                let bytes = postcard::to_stdvec(&probe).unwrap();
                assert_eq!(probe.encoded_size(), bytes.len(), "seq {seq}, {len} bytes");
                // The same bytes as a plain sequence of bytes would give.
                let plain = postcard::to_stdvec(&(seq, probe.payload.clone())).unwrap();
                assert_eq!(bytes, plain);
                assert_eq!(postcard::from_bytes::<Probe>(&bytes).unwrap(), probe);
            }
        }
    }

    #[test]
    fn probes_come_in_every_size() {
        assert!(probe_of_size(Endpoint::Role(1), 1).is_none());
        for size in (2..20_000).chain([(1 << 21) - 1, 1 << 21, (1 << 21) + 1, 16 << 20]) {
            let probe = probe_of_size(Endpoint::Role(1), size).unwrap();
            assert_eq!(probe.encoded_size(), size);
            assert!(probe.is_intact(Endpoint::Role(1), probe.payload.len()));
        }
    }

    #[test]
    fn failures_read_well() {
        let failures = Failures(vec![Failure {
            check: "fifo_per_pair",
            message: "from node 2, frame 17 came after frame 18".to_string(),
        }]);
        assert_eq!(
            format!("{failures:?}"),
            "1 of 10 conformance checks failed\n  fifo_per_pair: from node 2, frame 17 came \
             after frame 18"
        );
        assert_eq!(failures.checks().collect::<Vec<_>>(), ["fifo_per_pair"]);
    }
}
