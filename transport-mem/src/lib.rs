//! An in-process [`Transport`] for `snapshot-core`: endpoints are threads of one
//! process, and frames move through unbounded crossbeam channels without being
//! serialized.
//!
//! A [`MemNetwork`] is the directory of endpoints; each endpoint takes its
//! [`MemTransport`] from it and may be moved to a thread of its own. Endpoints can join
//! at any time, and every other endpoint can reach them at once.
//!
//! Guarantees, as [`Transport`] asks: frames from one endpoint to another arrive in the
//! order they were sent (every ordered pair of endpoints uses one FIFO channel);
//! nothing is lost or duplicated while both ends are alive; sending to an endpoint
//! that has gone away fails with [`TransportError::Disconnected`].
//!
//! ```
//! use snapshot_core::{Endpoint, NodeId, Transport};
//! use transport_mem::MemNetwork;
//!
//! let network = MemNetwork::<String>::new();
//! let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
//! let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
//! a.send(b.local(), "hello".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), (a.local(), "hello".to_string()));
//! ```
//!
//! # Wake-ups
//!
//! On a small machine the cost of an in-process round trip is the operating system
//! waking the thread that waits for it, not moving the frame. Two options trade CPU
//! for fewer wake-ups where an application's pattern allows it:
//!
//! - [`MemNetwork::with_deferred_node_frames`]: node-to-node frames do not wake a
//!   node; it finds them when it next wakes for anything else. For applications whose
//!   nodes take node-to-node traffic only when told to (the bank of `bank-app`).
//! - [`MemTransport::set_spin`]: an endpoint polls its inbox for a while before it
//!   sleeps. For one endpoint that waits for quick replies (a master driving the
//!   nodes) when a core is free to spin on.
//!
//! # Batching
//!
//! By default every `send` crosses its channel at once. A network made with
//! [`MemNetwork::with_batching`] gathers frames per peer and hands them over as one
//! item on `flush` (which `recv` does first) or when [`BATCH`] are waiting: for
//! streams of small frames, where the channel's own cost per item is most of the
//! cost, that multiplies throughput (see `BENCHMARKS.md`).

#![deny(missing_docs)]

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};
use snapshot_core::{Endpoint, Transport, TransportError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What travels on a queue: one frame, or a batch of frames from one sender.
enum Parcel<F> {
    One(Endpoint, F),
    Batch(Endpoint, Vec<F>),
}

type Queue<F> = Sender<Parcel<F>>;

/// How many frames a batching endpoint gathers for a peer before it hands them over
/// without waiting for a flush.
pub const BATCH: usize = 256;

/// The queues an endpoint receives on.
struct Mailbox<F> {
    /// Frames that wake the endpoint.
    inbox: Queue<F>,
    /// Node-to-node frames, on a network that defers them.
    deferred: Option<Queue<F>>,
}

impl<F> Clone for Mailbox<F> {
    fn clone(&self) -> Self {
        Mailbox {
            inbox: self.inbox.clone(),
            deferred: self.deferred.clone(),
        }
    }
}

struct Directory<F> {
    mailboxes: HashMap<Endpoint, Mailbox<F>>,
    defer_node_frames: bool,
    batch: bool,
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
        MemNetwork {
            directory: Arc::new(Mutex::new(Directory {
                mailboxes: HashMap::new(),
                defer_node_frames: false,
                batch: false,
            })),
        }
    }
}

impl<F> std::fmt::Debug for MemNetwork<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork").finish_non_exhaustive()
    }
}

impl<F: Send> MemNetwork<F> {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty network whose node-to-node frames do not wake their receiver.
    ///
    /// A frame from one [`Endpoint::Node`] to another waits, in order, until the
    /// receiving node returns from [`recv`](Transport::recv) for another reason (a
    /// frame from a non-node endpoint, or one already queued): a node blocked in
    /// `recv` is not woken for it. That saves an OS wake-up per node-to-node frame for
    /// an application whose nodes take node-to-node traffic only when another endpoint
    /// tells them to, and whose telling always follows the frame (the bank's master
    /// asks a node to take a transfer only after the sender has acknowledged sending
    /// it). An application whose nodes react to node-to-node traffic by themselves
    /// must not use it: they would sleep through it.
    pub fn with_deferred_node_frames() -> Self {
        let network = Self::default();
        network.lock().defer_node_frames = true;
        network
    }

    /// An empty network whose endpoints batch what they send.
    ///
    /// A sent frame waits in a per-peer buffer until [`flush`](Transport::flush),
    /// [`recv`](Transport::recv) or [`recv_timeout`](Transport::recv_timeout) (which
    /// flush first), or until [`BATCH`] frames are waiting for that peer; the batch
    /// then crosses the channel as one item. That divides the channel's cost per
    /// frame, which is most of the cost of a stream of small frames, at the price of
    /// the flushes the [`Transport`] contract asks for anyway. A send to a peer that
    /// has gone fails at the flush that hands its batch over.
    pub fn with_batching() -> Self {
        let network = Self::default();
        network.lock().batch = true;
        network
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Directory<F>> {
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the network as `endpoint`. Fails if that endpoint is already taken.
    pub fn endpoint(&self, endpoint: Endpoint) -> Result<MemTransport<F>, TransportError> {
        let mut directory = self.lock();
        if directory.mailboxes.contains_key(&endpoint) {
            return Err(TransportError::Protocol(format!(
                "{endpoint} has already joined this network"
            )));
        }
        let (inbox, inbox_rx) = unbounded();
        let (deferred, deferred_rx) =
            if directory.defer_node_frames && matches!(endpoint, Endpoint::Node(_)) {
                let (tx, rx) = unbounded();
                (Some(tx), Some(rx))
            } else {
                (None, None)
            };
        directory
            .mailboxes
            .insert(endpoint, Mailbox { inbox, deferred });
        Ok(MemTransport {
            local: endpoint,
            inbox: inbox_rx,
            deferred: deferred_rx,
            network: self.clone(),
            routes: HashMap::new(),
            spin: Duration::ZERO,
            batch: directory.batch,
            dirty: Vec::new(),
            current: Vec::new().into_iter(),
            current_from: endpoint,
        })
    }

    fn mailbox(&self, to: Endpoint) -> Option<Mailbox<F>> {
        self.lock().mailboxes.get(&to).cloned()
    }
}

/// One endpoint of a [`MemNetwork`].
///
/// Dropping it takes the endpoint out of the network: frames sent to it afterwards
/// fail with [`TransportError::Disconnected`].
pub struct MemTransport<F> {
    local: Endpoint,
    inbox: Receiver<Parcel<F>>,
    deferred: Option<Receiver<Parcel<F>>>,
    network: MemNetwork<F>,
    /// The queue each peer is reached on, once looked up, so that a send takes no
    /// lock, and the frames waiting for it (batching only). Every ordered pair of
    /// endpoints always uses the same queue, which is what keeps it FIFO.
    routes: HashMap<Endpoint, Route<F>>,
    spin: Duration,
    /// Whether sends are batched.
    batch: bool,
    /// Peers with frames waiting (batching only).
    dirty: Vec<Endpoint>,
    /// The rest of the batch being handed out, and who sent it.
    current: std::vec::IntoIter<F>,
    current_from: Endpoint,
}

/// How a peer is reached.
struct Route<F> {
    queue: Queue<F>,
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
        // What was sent arrives: a batch still waiting goes now (to peers still there).
        for route in self.routes.values_mut() {
            if !route.waiting.is_empty() {
                let batch = std::mem::take(&mut route.waiting);
                let _ = route.queue.send(Parcel::Batch(self.local, batch));
            }
        }
        let mut directory = self
            .network
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        directory.mailboxes.remove(&self.local);
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

    /// The first frame of `parcel`; the rest of a batch is kept for the next calls.
    fn open(&mut self, parcel: Parcel<F>) -> Option<(Endpoint, F)> {
        match parcel {
            Parcel::One(from, frame) => Some((from, frame)),
            Parcel::Batch(from, frames) => {
                self.current = frames.into_iter();
                self.current_from = from;
                self.current.next().map(|frame| (from, frame))
            }
        }
    }

    fn try_take(&mut self) -> Result<Option<(Endpoint, F)>, TransportError> {
        loop {
            if let Some(frame) = self.current.next() {
                return Ok(Some((self.current_from, frame)));
            }
            let parcel = match self.deferred.as_ref().map(Receiver::try_recv) {
                Some(Ok(parcel)) => parcel,
                _ => match self.inbox.try_recv() {
                    Ok(parcel) => parcel,
                    Err(TryRecvError::Empty) => return Ok(None),
                    Err(TryRecvError::Disconnected) => return Err(TransportError::Closed),
                },
            };
            if let Some(item) = self.open(parcel) {
                return Ok(Some(item));
            }
        }
    }

    /// Hands the frames waiting for `to` over.
    fn hand_over(&mut self, to: Endpoint) -> Result<(), TransportError> {
        let Some(route) = self.routes.get_mut(&to) else {
            return Ok(());
        };
        if route.waiting.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut route.waiting, Vec::with_capacity(BATCH));
        if route.queue.send(Parcel::Batch(self.local, batch)).is_err() {
            self.routes.remove(&to);
            return Err(TransportError::Disconnected(to));
        }
        Ok(())
    }

    fn spin_for(&mut self) -> Result<Option<(Endpoint, F)>, TransportError> {
        if let Some(item) = self.try_take()? {
            return Ok(Some(item));
        }
        if self.spin.is_zero() {
            return Ok(None);
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(item) = self.try_take()? {
                    return Ok(Some(item));
                }
            }
            if start.elapsed() >= self.spin {
                return Ok(None);
            }
        }
    }
}

impl<F: Send> Transport<F> for MemTransport<F> {
    fn local(&self) -> Endpoint {
        self.local
    }

    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let route = match self.routes.get_mut(&to) {
            Some(route) => route,
            None => {
                let mailbox = self
                    .network
                    .mailbox(to)
                    .ok_or(TransportError::UnknownEndpoint(to))?;
                let route = match (self.local, mailbox.deferred) {
                    (Endpoint::Node(_), Some(deferred)) => deferred,
                    _ => mailbox.inbox,
                };
                self.routes.entry(to).or_insert(Route {
                    queue: route,
                    waiting: Vec::new(),
                })
            }
        };
        if self.batch {
            if route.waiting.is_empty() {
                self.dirty.push(to);
            }
            route.waiting.push(frame);
            if route.waiting.len() >= BATCH {
                return self.hand_over(to);
            }
            return Ok(());
        }
        if route.queue.send(Parcel::One(self.local, frame)).is_err() {
            self.routes.remove(&to);
            return Err(TransportError::Disconnected(to));
        }
        Ok(())
    }

    /// Hands every waiting batch over (batching only; otherwise frames leave on
    /// `send`). If several peers have gone, the first is reported and the others by
    /// the following calls.
    fn flush(&mut self) -> Result<(), TransportError> {
        let mut result = Ok(());
        let dirty = std::mem::take(&mut self.dirty);
        for (at, &to) in dirty.iter().enumerate() {
            if let Err(error) = self.hand_over(to) {
                self.dirty.extend_from_slice(&dirty[at + 1..]);
                result = Err(error);
                break;
            }
        }
        result
    }

    fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        self.flush()?;
        loop {
            if let Some(item) = self.spin_for()? {
                return Ok(item);
            }
            let parcel = self.inbox.recv().map_err(|_| TransportError::Closed)?;
            if let Some(item) = self.open(parcel) {
                return Ok(item);
            }
        }
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(Endpoint, F)>, TransportError> {
        self.flush()?;
        if let Some(item) = self.spin_for()? {
            return Ok(Some(item));
        }
        match self.inbox.recv_timeout(timeout) {
            Ok(parcel) => Ok(self.open(parcel)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Closed),
        }
    }
}
