//! An in-process [`Transport`] for `snapshot-core`: endpoints are threads of one
//! process, and frames move through bounded crossbeam channels without being
//! serialized.
//!
//! A [`MemNetwork`] is the directory of endpoints; each endpoint takes its
//! [`MemTransport`] from it and may be moved to a thread of its own. Endpoints can join
//! at any time; as the [`Transport`] contract asks, two endpoints
//! [connect](Transport::connect) to each other before they exchange frames (the
//! address is ignored: the directory knows every endpoint).
//!
//! ```
//! use snapshot_core::{Endpoint, Incoming, NodeId, Transport};
//! use transport_mem::MemNetwork;
//!
//! let network = MemNetwork::<String>::new();
//! let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
//! let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
//! a.connect(b.local(), &b.address()).unwrap();
//! b.connect(a.local(), &a.address()).unwrap();
//! a.send(b.local(), "hello".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), Incoming::Frame(a.local(), "hello".to_string()));
//! drop(a);
//! assert_eq!(b.recv().unwrap(), Incoming::Departed(Endpoint::Node(NodeId(1))));
//! ```
//!
//! # Guarantees
//!
//! The [`Transport`] contract, as `tests/conformance.rs` checks it:
//!
//! - **FIFO per ordered pair**: every ordered pair of endpoints uses one channel, in
//!   order (a node's frames to a node use the receiver's deferred channel on a network
//!   that defers them, always that one).
//! - **Departures**: dropping a [`MemTransport`] tells its peers (those it connected
//!   to, those it received from, and those that connected to it) that it has gone,
//!   behind every frame it sent, a batch still gathered included; they receive
//!   [`Incoming::Departed`]. A send that finds a peer gone fails with
//!   [`TransportError::Disconnected`], and the peer's departure is then reported by
//!   `recv` too.
//! - **Bounded memory**: each endpoint's channels hold at most
//!   [`MemOptions::capacity`] parcels (a parcel is one frame, or one batch of up to
//!   [`BATCH`] frames on a batching network); a send to a full channel waits, taking
//!   in meanwhile what is sent to its own endpoint, so endpoints that send to each
//!   other cannot deadlock.
//!
//! # Wake-ups
//!
//! On a small machine the cost of an in-process round trip is the operating system
//! waking the thread that waits for it, not moving the frame. An endpoint that finds
//! nothing to take yields its core once, and looks again, before it sleeps: when
//! other threads are ready to run (often the ones about to send to it) they run
//! first, and what they send is taken without a sleep and a wake-up; when none is,
//! the yield returns at once. Two options trade CPU for fewer wake-ups where an
//! application's pattern allows it:
//!
//! - [`MemOptions::defer_node_frames`]: node-to-node frames do not wake a node; it
//!   finds them when it next wakes for anything else. For applications whose nodes
//!   take node-to-node traffic only when told to (the bank of `bank-app`).
//! - [`MemTransport::set_spin`]: an endpoint polls its inbox for a while before it
//!   sleeps. For one endpoint that waits for quick replies (a master driving the
//!   nodes) when a core is free to spin on.
//!
//! # Batching
//!
//! By default every `send` crosses its channel at once. With
//! [`MemOptions::batching`] an endpoint gathers frames per peer and hands them over as
//! one parcel on `flush` (which `recv` does first) or when [`BATCH`] are waiting: for
//! streams of small frames, where the channel's own cost per item is most of the
//! cost, that multiplies throughput (see `BENCHMARKS.md`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use crossbeam_channel::{Receiver, Select, SendError, Sender, TrySendError, bounded, unbounded};
use snapshot_core::stream::{EndpointMap, Peers, flush_order};
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How many frames a batching endpoint gathers for a peer before it hands them over
/// without waiting for a flush.
pub const BATCH: usize = 256;

/// How many parcels, by default, an endpoint's channel holds before senders wait.
pub const DEFAULT_CAPACITY: usize = 1024;

/// The most parcels an endpoint's channel may hold ([`MemOptions::capacity`]); a
/// channel allocates room for all of them when the endpoint joins.
pub const MAX_CAPACITY: usize = 1 << 20;

/// What travels on a data channel: one frame, or a batch of frames from one sender.
enum Parcel<F> {
    One(Endpoint, F),
    Batch(Endpoint, Vec<F>),
}

/// The settings of a [`MemNetwork`]: start from [`MemOptions::default`].
///
/// ```
/// use transport_mem::{MemNetwork, MemOptions};
///
/// let network = MemNetwork::<u64>::with_options(MemOptions::default().batching().capacity(64));
/// # drop(network);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemOptions {
    /// How many parcels each channel of an endpoint holds before senders wait: the
    /// bound on what the network buffers for an endpoint that does not receive
    /// (times [`BATCH`] frames on a batching network, plus what each sender gathers).
    /// From 1 to [`MAX_CAPACITY`]. Default: [`DEFAULT_CAPACITY`].
    pub capacity: usize,
    /// Whether endpoints gather frames per peer (see [Batching](crate#batching)).
    pub batch: bool,
    /// Whether node-to-node frames wake their receiver (see
    /// [`defer_node_frames`](Self::defer_node_frames)).
    pub defer_node_frames: bool,
}

impl Default for MemOptions {
    fn default() -> Self {
        MemOptions {
            capacity: DEFAULT_CAPACITY,
            batch: false,
            defer_node_frames: false,
        }
    }
}

impl MemOptions {
    /// These options with [`capacity`](Self::capacity) set to `parcels`.
    pub fn capacity(mut self, parcels: usize) -> Self {
        self.capacity = parcels;
        self
    }

    /// These options with batching on.
    ///
    /// A sent frame waits in a per-peer buffer until [`flush`](Transport::flush),
    /// [`recv`](Transport::recv) or [`recv_timeout`](Transport::recv_timeout) (which
    /// flush first), or until [`BATCH`] frames are waiting for that peer; the batch
    /// then crosses the channel as one parcel.
    pub fn batching(mut self) -> Self {
        self.batch = true;
        self
    }

    /// These options with node-to-node frames that do not wake their receiver.
    ///
    /// A frame from one [`Endpoint::Node`] to another waits, in order, until the
    /// receiving node returns from [`recv`](Transport::recv) for another reason (a
    /// frame from a non-node endpoint, a departure, or one already queued): a node
    /// blocked in `recv` is not woken for it. That saves an OS wake-up per
    /// node-to-node frame for an application whose nodes take node-to-node traffic
    /// only when another endpoint tells them to, and whose telling always follows the
    /// frame (the bank's master asks a node to take a transfer only after the sender
    /// has acknowledged sending it). An application whose nodes react to node-to-node
    /// traffic by themselves must not use it: they would sleep through it.
    pub fn defer_node_frames(mut self) -> Self {
        self.defer_node_frames = true;
        self
    }
}

/// An endpoint's word that it has gone, with the frames it had gathered for the
/// receiver that did not fit in its channel: they arrive just before the departure.
struct Farewell<F> {
    from: Endpoint,
    leftover: Vec<F>,
}

/// The channels an endpoint receives on, as its peers reach them.
struct Mailbox<F> {
    /// Frames that wake the endpoint.
    inbox: Sender<Parcel<F>>,
    /// Node-to-node frames, on a network that defers them.
    deferred: Option<Sender<Parcel<F>>>,
    /// Departures: unbounded, so that an endpoint going away never waits, and read
    /// only after the data channels are drained, so that they come after the frames.
    departures: Sender<Farewell<F>>,
}

impl<F> Clone for Mailbox<F> {
    fn clone(&self) -> Self {
        Mailbox {
            inbox: self.inbox.clone(),
            deferred: self.deferred.clone(),
            departures: self.departures.clone(),
        }
    }
}

struct Directory<F> {
    mailboxes: HashMap<Endpoint, Mailbox<F>>,
    options: MemOptions,
}

/// The directory of the endpoints of one in-process system.
///
/// Cloning it is cheap and gives another handle on the same directory.
pub struct MemNetwork<F> {
    directory: Arc<Mutex<Directory<F>>>,
}

impl<F> Clone for MemNetwork<F> {
    fn clone(&self) -> Self {
        MemNetwork {
            directory: Arc::clone(&self.directory),
        }
    }
}

impl<F> Default for MemNetwork<F> {
    fn default() -> Self {
        Self::with_options(MemOptions::default())
    }
}

impl<F> std::fmt::Debug for MemNetwork<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork")
            .field("options", &self.lock().options)
            .finish_non_exhaustive()
    }
}

impl<F> MemNetwork<F> {
    /// An empty network with `options`.
    pub fn with_options(options: MemOptions) -> Self {
        MemNetwork {
            directory: Arc::new(Mutex::new(Directory {
                mailboxes: HashMap::new(),
                options,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Directory<F>> {
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn mailbox(&self, to: Endpoint) -> Option<Mailbox<F>> {
        self.lock().mailboxes.get(&to).cloned()
    }
}

impl<F: Send> MemNetwork<F> {
    /// An empty network with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty network whose node-to-node frames do not wake their receiver (see
    /// [`MemOptions::defer_node_frames`]).
    pub fn with_deferred_node_frames() -> Self {
        Self::with_options(MemOptions::default().defer_node_frames())
    }

    /// An empty network whose endpoints batch what they send (see
    /// [`MemOptions::batching`]).
    pub fn with_batching() -> Self {
        Self::with_options(MemOptions::default().batching())
    }

    /// Joins the network as `endpoint`. Fails with [`TransportError::AlreadyJoined`]
    /// if that endpoint is taken, and with [`TransportError::Config`] if the
    /// network's capacity is zero or over [`MAX_CAPACITY`].
    pub fn endpoint(&self, endpoint: Endpoint) -> Result<MemTransport<F>, TransportError> {
        let mut directory = self.lock();
        if directory.mailboxes.contains_key(&endpoint) {
            return Err(TransportError::AlreadyJoined(endpoint));
        }
        let options = directory.options.clone();
        if options.capacity == 0 {
            return Err(TransportError::Config(
                "a network's capacity must be at least one parcel".to_owned(),
            ));
        }
        if options.capacity > MAX_CAPACITY {
            return Err(TransportError::Config(format!(
                "a network's capacity of {} parcels is more than the {MAX_CAPACITY} a \
                 channel may hold",
                options.capacity
            )));
        }
        let (inbox, inbox_rx) = bounded(options.capacity);
        let (deferred, deferred_rx) =
            if options.defer_node_frames && matches!(endpoint, Endpoint::Node(_)) {
                let (tx, rx) = bounded(options.capacity);
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
        let (departures, departures_rx) = unbounded();
        directory.mailboxes.insert(
            endpoint,
            Mailbox {
                inbox,
                deferred,
                departures,
            },
        );
        Ok(MemTransport {
            local: endpoint,
            inbox: inbox_rx,
            deferred: deferred_rx,
            departures: departures_rx,
            network: self.clone(),
            routes: EndpointMap::default(),
            peers: Peers::default(),
            arrived: VecDeque::new(),
            spin: Duration::ZERO,
            batch: options.batch,
            dirty: Vec::new(),
            current: Vec::new().into_iter(),
            last_from: endpoint,
        })
    }
}

/// One endpoint of a [`MemNetwork`].
///
/// Dropping it takes the endpoint out of the network and tells its peers.
pub struct MemTransport<F> {
    local: Endpoint,
    inbox: Receiver<Parcel<F>>,
    deferred: Option<Receiver<Parcel<F>>>,
    departures: Receiver<Farewell<F>>,
    network: MemNetwork<F>,
    /// The channel each connected peer is reached on, and the frames waiting for it
    /// (batching only). Every ordered pair of endpoints always uses the same channel,
    /// which is what keeps it FIFO.
    routes: EndpointMap<Route<F>>,
    peers: Peers,
    /// Taken in but not handed out yet: frames taken while a send waited, and
    /// departures behind the frames before them.
    arrived: VecDeque<Incoming<F>>,
    spin: Duration,
    /// Whether sends are batched.
    batch: bool,
    /// Peers with frames waiting (batching only).
    dirty: Vec<Endpoint>,
    /// The rest of the batch being handed out; `last_from` sent it.
    current: std::vec::IntoIter<F>,
    /// Who sent the frame handed out last: a flush hands over to it first.
    last_from: Endpoint,
}

/// How a peer is reached.
struct Route<F> {
    queue: Sender<Parcel<F>>,
    /// Frames waiting to be handed over (batching only).
    waiting: Vec<F>,
}

impl<F> std::fmt::Debug for MemTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTransport")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<F> Drop for MemTransport<F> {
    fn drop(&mut self) {
        // What was sent arrives: a batch still waiting goes now if there is room, and
        // otherwise with the departure (a drop cannot wait for a peer that does not
        // receive).
        let mut leftovers: HashMap<Endpoint, Vec<F>> = HashMap::new();
        for (&peer, route) in &mut self.routes {
            if !route.waiting.is_empty() {
                let batch = std::mem::take(&mut route.waiting);
                if let Err(TrySendError::Full(Parcel::Batch(_, batch))) =
                    route.queue.try_send(Parcel::Batch(self.local, batch))
                {
                    leftovers.insert(peer, batch);
                }
            }
        }
        let mut directory = self
            .network
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        directory.mailboxes.remove(&self.local);
        // Every endpoint hears that this one has gone, behind its frames: its peers,
        // and those that connected to it without hearing from it, which it does not
        // know of (the others ignore it).
        for (&endpoint, mailbox) in &directory.mailboxes {
            let _ = mailbox.departures.send(Farewell {
                from: self.local,
                leftover: leftovers.remove(&endpoint).unwrap_or_default(),
            });
        }
    }
}

impl<F> MemTransport<F> {
    /// Polls the inbox for up to `spin` before sleeping in `recv` and `recv_timeout`.
    ///
    /// Spinning answers a quick reply without an OS wake-up, at the price of a busy
    /// core while it lasts. Worth it for one endpoint that waits for round trips; on a
    /// machine with fewer cores than spinning threads it slows everything down. The
    /// default is no spinning.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Takes `parcel` in: its frames go behind what has arrived.
    fn take_in(&mut self, parcel: Parcel<F>) {
        match parcel {
            Parcel::One(from, frame) => {
                self.peers.add(from);
                self.arrived.push_back(Incoming::Frame(from, frame));
            }
            Parcel::Batch(from, frames) => {
                self.peers.add(from);
                self.arrived
                    .extend(frames.into_iter().map(|frame| Incoming::Frame(from, frame)));
            }
        }
    }

    /// Takes in every parcel of the data channels, without waiting.
    fn drain_data(&mut self) {
        while let Some(Ok(parcel)) = self.deferred.as_ref().map(Receiver::try_recv) {
            self.take_in(parcel);
        }
        while let Ok(parcel) = self.inbox.try_recv() {
            self.take_in(parcel);
        }
    }

    /// `farewell.from` has gone: its departure goes behind every frame it sent, which
    /// is in the data channels by now or came with the farewell.
    fn departed(&mut self, farewell: Farewell<F>) {
        let Farewell {
            from: peer,
            leftover,
        } = farewell;
        // First what it sent before it went: a waiting select may pick the farewell
        // over parcels in the data channels, and those make it a peer.
        self.drain_data();
        if !leftover.is_empty() {
            self.take_in(Parcel::Batch(peer, leftover));
        }
        if !self.peers.is_live(peer) && !self.routes.contains_key(&peer) {
            return; // not a peer of ours
        }
        self.routes.remove(&peer);
        self.dirty.retain(|&p| p != peer);
        if self.peers.depart(peer) {
            self.arrived.push_back(Incoming::Departed(peer));
        }
    }

    /// The next frame or departure already here, without waiting.
    fn try_take(&mut self) -> Option<Incoming<F>> {
        if let Some(frame) = self.current.next() {
            return Some(Incoming::Frame(self.last_from, frame));
        }
        if let Some(incoming) = self.pop_arrived() {
            return Some(incoming);
        }
        let parcel = match self.deferred.as_ref().map(Receiver::try_recv) {
            Some(Ok(parcel)) => Some(parcel),
            _ => self.inbox.try_recv().ok(),
        };
        if let Some(parcel) = parcel {
            return Some(self.open(parcel));
        }
        if let Ok(farewell) = self.departures.try_recv() {
            self.departed(farewell);
            return self.pop_arrived();
        }
        None
    }

    /// The next of what was taken in, remembering who sent it if it is a frame.
    fn pop_arrived(&mut self) -> Option<Incoming<F>> {
        let incoming = self.arrived.pop_front()?;
        if let Incoming::Frame(from, _) = incoming {
            self.last_from = from;
        }
        Some(incoming)
    }

    /// The first frame of `parcel`; the rest of a batch is kept for the next calls.
    fn open(&mut self, parcel: Parcel<F>) -> Incoming<F> {
        match parcel {
            Parcel::One(from, frame) => {
                self.peers.add(from);
                self.last_from = from;
                Incoming::Frame(from, frame)
            }
            Parcel::Batch(from, frames) => {
                self.peers.add(from);
                self.last_from = from;
                self.current = frames.into_iter();
                match self.current.next() {
                    Some(frame) => Incoming::Frame(from, frame),
                    // Never sent: a batch is handed over only when it holds frames.
                    None => Incoming::Departed(from),
                }
            }
        }
    }

    /// Puts `parcel` on the channel to `to`, waiting while it is full and taking in
    /// meanwhile what comes for this endpoint.
    fn put(&mut self, to: Endpoint, parcel: Parcel<F>) -> Result<(), TransportError> {
        let Some(route) = self.routes.get(&to) else {
            return Err(TransportError::UnknownEndpoint(to));
        };
        let mut parcel = match route.queue.try_send(parcel) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(parcel)) => parcel,
            Err(TrySendError::Disconnected(_)) => return Err(self.gone(to)),
        };
        // Full: the wait below takes in this endpoint's own frames, which needs the
        // endpoint, so it holds a handle of its own on the queue. Only here: cloning a
        // sender and dropping it are two atomic operations on a count the receiver's
        // side shares, on every send otherwise.
        let queue = route.queue.clone();
        loop {
            let mut select = Select::new();
            let send = select.send(&queue);
            let inbox = select.recv(&self.inbox);
            if let Some(deferred) = &self.deferred {
                select.recv(deferred);
            }
            let operation = select.select();
            let index = operation.index();
            let arrived = if index == send {
                return match operation.send(&queue, parcel) {
                    Ok(()) => Ok(()),
                    Err(SendError(_)) => Err(self.gone(to)),
                };
            } else if index == inbox {
                operation.recv(&self.inbox)
            } else {
                match &self.deferred {
                    Some(deferred) => operation.recv(deferred),
                    None => continue, // not an index this select has
                }
            };
            if let Ok(arrived) = arrived {
                self.take_in(arrived);
            }
            // Room may have come while this endpoint took things in.
            parcel = match queue.try_send(parcel) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(parcel)) => parcel,
                Err(TrySendError::Disconnected(_)) => return Err(self.gone(to)),
            };
        }
    }

    /// A send found `to` gone: from now on it is departed.
    fn gone(&mut self, to: Endpoint) -> TransportError {
        self.peers.add(to);
        self.departed(Farewell {
            from: to,
            leftover: Vec::new(),
        });
        TransportError::Disconnected(to)
    }

    /// Hands the frames waiting for `to` over.
    fn hand_over(&mut self, to: Endpoint) -> Result<(), TransportError> {
        let Some(route) = self.routes.get_mut(&to) else {
            return Ok(());
        };
        if route.waiting.is_empty() {
            return Ok(());
        }
        let parcel = if route.waiting.len() == 1 {
            // One frame (a marker, a reply) crosses alone, and the buffer stays for
            // the next ones: no allocation.
            match route.waiting.pop() {
                Some(frame) => Parcel::One(self.local, frame),
                None => return Ok(()),
            }
        } else {
            // The next batch is likely as long as this one: room for as many, so
            // that a full stream allocates once per batch and a trickle little.
            let room = route.waiting.len();
            Parcel::Batch(
                self.local,
                std::mem::replace(&mut route.waiting, Vec::with_capacity(room)),
            )
        };
        self.put(to, parcel)
    }

    fn flush_all(&mut self) -> Result<(), TransportError> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        // Taken for the loop and given back cleared, to keep its buffer.
        let mut dirty = std::mem::take(&mut self.dirty);
        // The peer that sent the request being answered first: it waits, and a
        // thread woken for a frame sent to another only delays it.
        flush_order(&mut dirty, self.last_from);
        let mut failed = None;
        for &to in &dirty {
            match self.hand_over(to) {
                Ok(()) | Err(TransportError::Disconnected(_)) => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        failed.map_or(Ok(()), Err)
    }

    /// Waits for a parcel or a departure until `deadline` (`None`: for ever), after
    /// spinning for up to [`spin`](Self::set_spin). Node-to-node frames on a network
    /// that defers them do not end the wait.
    fn wait(&mut self, deadline: Option<Instant>) -> Option<Incoming<F>> {
        if !self.spin.is_zero() {
            let start = Instant::now();
            loop {
                for _ in 0..64 {
                    std::hint::spin_loop();
                    if let Some(incoming) = self.try_take() {
                        return Some(incoming);
                    }
                }
                if start.elapsed() >= self.spin || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
        // Lets the threads that are ready run first, and looks again: a thread that
        // sleeps as soon as its inbox is empty is woken for each frame, where one that
        // yields first often finds several (many threads on few cores, frames coming
        // from several peers at once). With no other thread ready this returns at
        // once.
        std::thread::yield_now();
        if let Some(incoming) = self.try_take() {
            return Some(incoming);
        }
        let mut select = Select::new();
        let inbox = select.recv(&self.inbox);
        select.recv(&self.departures);
        let operation = match deadline {
            None => select.select(),
            Some(deadline) => select.select_deadline(deadline).ok()?,
        };
        if operation.index() == inbox {
            return operation
                .recv(&self.inbox)
                .ok()
                .map(|parcel| self.open(parcel));
        }
        let farewell = operation.recv(&self.departures).ok()?;
        self.departed(farewell);
        self.pop_arrived()
    }

    /// The next frame or departure, waiting until `deadline` (`None`: for ever).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all()?;
        loop {
            if let Some(incoming) = self.try_take() {
                return Ok(Some(incoming));
            }
            if self.peers.is_closed() {
                return Err(TransportError::Closed);
            }
            if let Some(incoming) = self.wait(deadline) {
                return Ok(Some(incoming));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(self.try_take());
            }
        }
    }
}

impl<F: Send> Transport<F> for MemTransport<F> {
    fn local(&self) -> Endpoint {
        self.local
    }

    /// The endpoint's name: the directory finds endpoints by themselves, so
    /// [`connect`](Transport::connect) ignores addresses.
    fn address(&self) -> String {
        self.local.to_string()
    }

    /// Makes `peer` reachable. Fails with [`TransportError::UnknownEndpoint`] if it
    /// has not joined the network (yet). Connecting again does nothing.
    fn connect(&mut self, peer: Endpoint, _address: &str) -> Result<(), TransportError> {
        if self.routes.contains_key(&peer) || self.peers.has_departed(peer) {
            return Ok(());
        }
        let mailbox = self
            .network
            .mailbox(peer)
            .ok_or(TransportError::UnknownEndpoint(peer))?;
        let queue = match (self.local, mailbox.deferred) {
            (Endpoint::Node(_), Some(deferred)) => deferred,
            _ => mailbox.inbox,
        };
        self.routes.insert(
            peer,
            Route {
                queue,
                waiting: Vec::new(),
            },
        );
        self.peers.add(peer);
        Ok(())
    }

    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let Some(route) = self.routes.get_mut(&to) else {
            return Err(if self.peers.has_departed(to) {
                TransportError::Disconnected(to)
            } else {
                TransportError::UnknownEndpoint(to)
            });
        };
        if !self.batch {
            return self.put(to, Parcel::One(self.local, frame));
        }
        if route.waiting.is_empty() {
            self.dirty.push(to);
        }
        route.waiting.push(frame);
        if route.waiting.len() >= BATCH {
            return self.hand_over(to);
        }
        Ok(())
    }

    /// Hands every waiting batch over (batching only; otherwise frames leave on
    /// `send`). Batches for peers that have gone are dropped: `recv` reports them.
    fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all()
    }

    fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        loop {
            if let Some(incoming) = self.next(None)? {
                return Ok(incoming);
            }
        }
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Incoming<F>>, TransportError> {
        if timeout.is_zero() {
            // What is here already, without a look at the clock: a node taking
            // frames one by one asks this for every frame.
            self.flush_all()?;
            if let Some(incoming) = self.try_take() {
                return Ok(Some(incoming));
            }
            if self.peers.is_closed() {
                return Err(TransportError::Closed);
            }
            return Ok(None);
        }
        // A timeout too long to represent is no timeout.
        let deadline = Instant::now().checked_add(timeout);
        match deadline {
            Some(deadline) => self.next(Some(deadline)),
            None => self.recv().map(Some),
        }
    }
}
