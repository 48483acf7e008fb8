#![cfg(feature = "conformance")]
//! The conformance suite, run on a small reference transport that keeps the contract,
//! and on broken variants of it, to show that each check catches the defect it is
//! there for.

use crossbeam_channel::{Receiver, Select, Sender, TrySendError, bounded, unbounded};
use snapshot_core::conformance::{self, Failure, Network, Probe};
use snapshot_core::stream::Peers;
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// The reference transport.
// ---------------------------------------------------------------------------------

/// Frames the reference holds for one ordered pair of endpoints: its memory bound.
const CAPACITY: usize = 64;
/// Its bound on a frame's encoded size.
const MAX_FRAME: usize = 3_000;

/// A channel of frames from one endpoint to another, as its receiver learns of it.
type Announcement = (Endpoint, Receiver<Probe>);

/// Every endpoint of a network, and how to tell it of a new channel to it.
type Directory = Arc<Mutex<HashMap<Endpoint, Sender<Announcement>>>>;

/// A network of in-process endpoints: a bounded channel per ordered pair, made by
/// the sender's `connect`; a peer's departure is the disconnection of its channel,
/// which comes after every frame in it.
#[derive(Clone)]
struct RefNetwork {
    directory: Directory,
    flaws: Flaws,
    patience: Duration,
}

/// Defects of the reference that a wrapper cannot add.
#[derive(Debug, Clone, Copy, Default)]
struct Flaws {
    /// Channels without a bound (the bound is still claimed).
    unbounded: bool,
    /// A send to a full channel waits without taking in what arrives.
    selfish: bool,
    /// A send to a full channel takes in, while it waits, only what the endpoint it
    /// sends to sends.
    narrow: bool,
    /// Frames of exactly the bound are refused too.
    refuse_at_bound: bool,
}

impl RefNetwork {
    fn new() -> Self {
        RefNetwork {
            directory: Arc::default(),
            flaws: Flaws::default(),
            patience: Duration::from_secs(10),
        }
    }
}

impl Network for RefNetwork {
    type Transport = RefTransport;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<RefTransport, TransportError> {
        let mut directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if directory.contains_key(&endpoint) {
            return Err(TransportError::AlreadyJoined(endpoint));
        }
        let (announce, announcements) = unbounded();
        directory.insert(endpoint, announce);
        Ok(RefTransport {
            local: endpoint,
            directory: Arc::clone(&self.directory),
            flaws: self.flaws,
            announcements,
            routes: HashMap::new(),
            incoming: Vec::new(),
            peers: Peers::default(),
            held: VecDeque::new(),
        })
    }

    fn max_frame(&self) -> Option<usize> {
        Some(MAX_FRAME)
    }

    fn held_bound(&self) -> Option<usize> {
        // The sender buffers nothing; its channel holds CAPACITY frames.
        Some(CAPACITY)
    }

    fn patience(&self) -> Duration {
        self.patience
    }
}

struct RefTransport {
    local: Endpoint,
    directory: Directory,
    flaws: Flaws,
    announcements: Receiver<Announcement>,
    /// Where frames to each connected peer go.
    routes: HashMap<Endpoint, Sender<Probe>>,
    /// Where frames from each peer come from, until it departs.
    incoming: Vec<Announcement>,
    peers: Peers,
    /// What arrived while this endpoint waited to send, for its next receive.
    held: VecDeque<Incoming<Probe>>,
}

/// What one wait of a receive, or of a blocked send, came back with.
enum Event {
    Announced(Announcement),
    Frame(Endpoint, Probe),
    Gone(usize),
    Sent,
    SendFailed,
}

impl RefTransport {
    fn address_of(endpoint: Endpoint) -> String {
        format!("mem:{endpoint}")
    }

    /// Waits, until `deadline` (`None`: for ever), for something to arrive, or, with
    /// `to_send`, for room to send it to its endpoint.
    fn wait(
        &self,
        deadline: Option<Instant>,
        to_send: Option<(Endpoint, &Sender<Probe>, &mut Option<Probe>)>,
    ) -> Option<Event> {
        let mut select = Select::new();
        let announced = select.recv(&self.announcements);
        let first = announced + 1;
        // Where in `incoming` each channel listened to is.
        let mut listened = Vec::new();
        for (i, (from, receiver)) in self.incoming.iter().enumerate() {
            if let Some((to, ..)) = &to_send
                && self.flaws.narrow
                && from != to
            {
                continue;
            }
            select.recv(receiver);
            listened.push(i);
        }
        let send_index = to_send.as_ref().map(|&(_, sender, _)| select.send(sender));
        let operation = match deadline {
            None => select.select(),
            Some(deadline) => select.select_deadline(deadline).ok()?,
        };
        let index = operation.index();
        Some(if index == announced {
            match operation.recv(&self.announcements) {
                Ok(announcement) => Event::Announced(announcement),
                // The directory holds the other end while this endpoint exists.
                Err(_) => return None,
            }
        } else if Some(index) == send_index {
            let (_, sender, frame) = to_send?;
            let frame = frame.take()?;
            match operation.send(sender, frame) {
                Ok(()) => Event::Sent,
                Err(_) => Event::SendFailed,
            }
        } else {
            let at = listened[index - first];
            let (from, receiver) = &self.incoming[at];
            match operation.recv(receiver) {
                Ok(frame) => Event::Frame(*from, frame),
                Err(_) => Event::Gone(at),
            }
        })
    }

    /// Takes in what a wait came back with; returns it, if it is for the caller.
    fn take_in(&mut self, event: Event) -> Option<Incoming<Probe>> {
        match event {
            Event::Announced(announcement) => {
                self.incoming.push(announcement);
                None
            }
            Event::Frame(from, frame) => {
                self.peers.add(from);
                Some(Incoming::Frame(from, frame))
            }
            Event::Gone(index) => {
                let (peer, _) = self.incoming.remove(index);
                self.peers.depart(peer).then_some(Incoming::Departed(peer))
            }
            Event::Sent | Event::SendFailed => None,
        }
    }

    fn receive(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        if let Some(held) = self.held.pop_front() {
            return Ok(Some(held));
        }
        loop {
            while let Ok(announcement) = self.announcements.try_recv() {
                self.incoming.push(announcement);
            }
            if self.peers.is_closed() {
                return Err(TransportError::Closed);
            }
            let Some(event) = self.wait(deadline, None) else {
                return Ok(None);
            };
            if let Some(incoming) = self.take_in(event) {
                return Ok(Some(incoming));
            }
        }
    }
}

impl Transport<Probe> for RefTransport {
    fn local(&self) -> Endpoint {
        self.local
    }

    fn address(&self) -> String {
        Self::address_of(self.local)
    }

    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        if self.routes.contains_key(&peer) || self.peers.has_departed(peer) {
            return Ok(());
        }
        if address != Self::address_of(peer) {
            return Err(TransportError::Config(format!(
                "{address:?} is not {peer}'s address"
            )));
        }
        let directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let announce = directory
            .get(&peer)
            .ok_or(TransportError::UnknownEndpoint(peer))?;
        let (sender, receiver) = if self.flaws.unbounded {
            unbounded()
        } else {
            bounded(CAPACITY)
        };
        announce
            .send((self.local, receiver))
            .map_err(|_| TransportError::Disconnected(peer))?;
        self.routes.insert(peer, sender);
        self.peers.add(peer);
        Ok(())
    }

    fn send(&mut self, to: Endpoint, frame: Probe) -> Result<(), TransportError> {
        if self.peers.has_departed(to) {
            return Err(TransportError::Disconnected(to));
        }
        let sender = self
            .routes
            .get(&to)
            .ok_or(TransportError::UnknownEndpoint(to))?
            .clone();
        let size = postcard::to_stdvec(&frame)
            .map_err(|e| TransportError::Codec {
                context: format!("to {to}"),
                reason: e.to_string(),
            })?
            .len();
        if size > MAX_FRAME || (self.flaws.refuse_at_bound && size == MAX_FRAME) {
            return Err(TransportError::FrameTooLarge {
                size,
                limit: MAX_FRAME,
            });
        }
        let mut frame = match sender.try_send(frame) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(frame)) if self.flaws.selfish => {
                let _ = sender.send(frame);
                return Ok(());
            }
            Err(TrySendError::Full(frame)) => Some(frame),
            // Lost with the peer, whose departure receiving reports.
            Err(TrySendError::Disconnected(_)) => return Ok(()),
        };
        // Wait for room, taking in what arrives meanwhile.
        loop {
            let Some(event) = self.wait(None, Some((to, &sender, &mut frame))) else {
                continue;
            };
            if matches!(event, Event::Sent | Event::SendFailed) {
                return Ok(());
            }
            if let Some(incoming) = self.take_in(event) {
                self.held.push_back(incoming);
            }
        }
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn recv(&mut self) -> Result<Incoming<Probe>, TransportError> {
        loop {
            if let Some(incoming) = self.receive(None)? {
                return Ok(incoming);
            }
        }
    }

    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        self.receive(Some(Instant::now() + timeout))
    }
}

impl Drop for RefTransport {
    fn drop(&mut self) {
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.local);
    }
}

// ---------------------------------------------------------------------------------
// Broken variants.
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    /// Swaps every 7th frame to a peer with the one after it.
    Reorder,
    /// Loses one frame in 500.
    Lose,
    /// Delivers one frame in 500 twice.
    Duplicate,
    /// Never reports a departure.
    HideDepartures,
    /// Sends only on an explicit `flush`: receiving does not flush.
    NoFlushOnReceive,
    /// Takes a send to an endpoint never connected to, and drops it.
    AcceptUnknown,
}

/// The reference, with a defect.
struct Faulty {
    network: RefNetwork,
    defect: Defect,
}

fn faulty(defect: Defect) -> Faulty {
    let mut network = RefNetwork::new();
    // Broken transports are waited out in full: keep it short.
    network.patience = Duration::from_secs(1);
    Faulty { network, defect }
}

impl Network for Faulty {
    type Transport = FaultyTransport;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<FaultyTransport, TransportError> {
        Ok(FaultyTransport {
            inner: self.network.endpoint(endpoint)?,
            defect: self.defect,
            sent: HashMap::new(),
            stashed: HashMap::new(),
            outbox: Vec::new(),
        })
    }

    fn max_frame(&self) -> Option<usize> {
        self.network.max_frame()
    }

    fn held_bound(&self) -> Option<usize> {
        self.network.held_bound()
    }

    fn patience(&self) -> Duration {
        self.network.patience()
    }
}

struct FaultyTransport {
    inner: RefTransport,
    defect: Defect,
    /// Frames sent to each peer.
    sent: HashMap<Endpoint, u64>,
    /// A frame held back to be sent after the next one.
    stashed: HashMap<Endpoint, Probe>,
    /// Frames waiting for a flush.
    outbox: Vec<(Endpoint, Probe)>,
}

impl FaultyTransport {
    fn release(&mut self) -> Result<(), TransportError> {
        for (to, frame) in std::mem::take(&mut self.stashed) {
            self.inner.send(to, frame)?;
        }
        if self.defect == Defect::NoFlushOnReceive {
            for (to, frame) in std::mem::take(&mut self.outbox) {
                self.inner.send(to, frame)?;
            }
        }
        Ok(())
    }

    fn receive(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        if self.defect != Defect::NoFlushOnReceive {
            self.release()?;
        }
        loop {
            let got = match deadline {
                None => self.inner.recv().map(Some)?,
                Some(deadline) => self
                    .inner
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))?,
            };
            match got {
                Some(Incoming::Departed(_)) if self.defect == Defect::HideDepartures => {}
                got => return Ok(got),
            }
        }
    }
}

impl Transport<Probe> for FaultyTransport {
    fn local(&self) -> Endpoint {
        self.inner.local()
    }

    fn address(&self) -> String {
        self.inner.address()
    }

    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.inner.connect(peer, address)
    }

    fn send(&mut self, to: Endpoint, frame: Probe) -> Result<(), TransportError> {
        let count = self.sent.entry(to).or_default();
        *count += 1;
        let nth = *count;
        match self.defect {
            Defect::Reorder if nth.is_multiple_of(7) && !self.stashed.contains_key(&to) => {
                self.stashed.insert(to, frame);
                Ok(())
            }
            Defect::Lose if nth.is_multiple_of(500) => Ok(()),
            Defect::Duplicate if nth.is_multiple_of(500) => {
                self.inner.send(to, frame.clone())?;
                self.inner.send(to, frame)
            }
            Defect::NoFlushOnReceive => {
                self.outbox.push((to, frame));
                Ok(())
            }
            Defect::AcceptUnknown => match self.inner.send(to, frame) {
                Err(TransportError::UnknownEndpoint(_)) => Ok(()),
                other => other,
            },
            _ => {
                self.inner.send(to, frame)?;
                match self.stashed.remove(&to) {
                    Some(stashed) => self.inner.send(to, stashed),
                    None => Ok(()),
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        self.release()?;
        self.inner.flush()
    }

    fn recv(&mut self) -> Result<Incoming<Probe>, TransportError> {
        loop {
            if let Some(incoming) = self.receive(None)? {
                return Ok(incoming);
            }
        }
    }

    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Probe>>, TransportError> {
        self.receive(Some(Instant::now() + timeout))
    }
}

fn flawed(flaws: Flaws) -> RefNetwork {
    let mut network = RefNetwork::new();
    network.flaws = flaws;
    network.patience = Duration::from_secs(1);
    network
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

#[test]
fn the_reference_passes_every_check() {
    let start = Instant::now();
    conformance::run_all(RefNetwork::new).unwrap();
    eprintln!("run_all on the reference took {:?}", start.elapsed());
}

/// `check` fails on a network with `defect`, as `name`, with a message that says
/// `says`.
fn caught(failure: Result<(), Failure>, name: &str, says: &str) {
    let failure = failure.expect_err("the check should fail");
    eprintln!("caught, as it should be: {failure}");
    assert_eq!(failure.check, name, "{failure}");
    assert!(failure.message.contains(says), "{failure}");
    assert!(failure.to_string().starts_with(&format!("{name}: ")));
}

#[test]
fn reordering_is_caught_by_fifo_per_pair() {
    caught(
        conformance::fifo_per_pair(faulty(Defect::Reorder)),
        "fifo_per_pair",
        "came after frame",
    );
    // Nothing is lost or doubled, and that check says so.
    conformance::no_loss_no_duplication(faulty(Defect::Reorder)).unwrap();
}

#[test]
fn loss_is_caught_by_no_loss_no_duplication() {
    caught(
        conformance::no_loss_no_duplication(faulty(Defect::Lose)),
        "no_loss_no_duplication",
        "were lost",
    );
    conformance::fifo_per_pair(faulty(Defect::Lose)).unwrap();
}

#[test]
fn duplication_is_caught_by_no_loss_no_duplication() {
    caught(
        conformance::no_loss_no_duplication(faulty(Defect::Duplicate)),
        "no_loss_no_duplication",
        "more than once",
    );
    conformance::fifo_per_pair(faulty(Defect::Duplicate)).unwrap();
}

#[test]
fn hidden_departures_are_caught_by_departures() {
    caught(
        conformance::departures(faulty(Defect::HideDepartures)),
        "departures",
        "its departure did not",
    );
}

#[test]
fn unbounded_buffering_is_caught_by_bounded_memory() {
    caught(
        conformance::bounded_memory(flawed(Flaws {
            unbounded: true,
            ..Flaws::default()
        })),
        "bounded_memory",
        "buffers without bound",
    );
}

#[test]
fn a_receive_that_does_not_flush_is_caught_by_recv_timeout() {
    caught(
        conformance::recv_timeout(faulty(Defect::NoFlushOnReceive)),
        "recv_timeout",
        "must flush before it waits",
    );
}

#[test]
fn a_refused_send_to_a_stranger_is_caught_by_unknown_endpoint() {
    caught(
        conformance::unknown_endpoint(faulty(Defect::AcceptUnknown)),
        "unknown_endpoint",
        "not Err(UnknownEndpoint(node 3))",
    );
}

#[test]
fn an_off_by_one_bound_is_caught_by_frame_size() {
    caught(
        conformance::frame_size(flawed(Flaws {
            refuse_at_bound: true,
            ..Flaws::default()
        })),
        "frame_size",
        "a frame of exactly max_frame() = 3000 bytes was refused",
    );
}

/// On the reference with `flaws`, `check` deadlocks, and reports it after 6 times
/// `patience` (well within 9 times it); the deadlocked threads are left behind.
fn deadlocks(
    flaws: Flaws,
    check: fn(RefNetwork) -> Result<(), Failure>,
    name: &str,
    patience: Duration,
) {
    let mut network = flawed(flaws);
    network.patience = patience;
    let start = Instant::now();
    caught(check(network), name, "did not finish in time: a deadlock?");
    assert!(start.elapsed() < patience * 9);
}

const SELFISH: Flaws = Flaws {
    unbounded: false,
    selfish: true,
    narrow: false,
    refuse_at_bound: false,
};

/// Reported after 6 s.
#[test]
fn a_send_that_stops_receiving_is_caught_by_flood_both_ways() {
    deadlocks(
        SELFISH,
        conformance::flood_both_ways,
        "flood_both_ways",
        Duration::from_secs(1),
    );
}

/// Every endpoint of the ring waits, in its burst, for the next one, which waits
/// for the one after it. Reported after 1.5 s.
#[test]
fn a_send_that_stops_receiving_is_caught_by_ring() {
    deadlocks(
        SELFISH,
        conformance::ring,
        "ring",
        Duration::from_millis(250),
    );
}

/// Taking in only from the endpoint a send waits for is enough for two endpoints
/// that flood each other, not for a ring, where that endpoint sends nothing back.
#[test]
fn taking_in_only_from_the_peer_sent_to_is_caught_by_ring_not_by_flood_both_ways() {
    let narrow = Flaws {
        narrow: true,
        ..Flaws::default()
    };
    conformance::flood_both_ways(flawed(narrow)).unwrap();
    deadlocks(
        narrow,
        conformance::ring,
        "ring",
        Duration::from_millis(250),
    );
}

#[test]
fn run_all_reports_every_failed_check() {
    let failures = conformance::run_all(|| faulty(Defect::Reorder)).unwrap_err();
    eprintln!("{failures}");
    let failed: Vec<&str> = failures.checks().collect();
    assert!(failed.contains(&"fifo_per_pair"), "{failures}");
    assert!(!failed.contains(&"no_loss_no_duplication"), "{failures}");
}
