//! Consistent global snapshots of a distributed system: the Chandy-Lamport algorithm,
//! with no I/O of its own.
//!
//! A distributed system has no global clock, so "the state of the whole system now"
//! cannot be read off the nodes one by one: money in transit would be counted twice
//! or not at all. Chandy and Lamport's algorithm records a state the system *could*
//! have been in, while it keeps running, by sending a *marker* along every FIFO
//! channel: each node records its own state when the first marker reaches it, and
//! records every other incoming channel until that channel's marker arrives.
//!
//! # Taking snapshots
//!
//! An application describes each of its processes as a [`Process`] (its messages, its
//! state, how a message caught in transit is recorded), runs each one in a [`Node`]
//! over a [`Transport`], and lets a [`Coordinator`] start snapshots and assemble them:
//!
//! ```
//! use snapshot_core::topology::Topology;
//! use snapshot_core::{Coordinator, CoordinatorEvent, Endpoint, Node, NodeFrame, NodeId};
//! use snapshot_core::{Outbox, Process, Transport};
//! use std::time::Duration;
//! use transport_mem::MemNetwork;
//!
//! /// A process holding some tokens; what is in transit is summed.
//! struct Tokens(u64);
//!
//! impl Process for Tokens {
//!     type Message = u64; // tokens handed over
//!     type State = u64; // tokens held
//!     type Record = u64; // tokens caught in transit
//!
//!     fn handle(&mut self, _from: NodeId, tokens: u64, _outbox: &mut Outbox<u64>) {
//!         self.0 += tokens;
//!     }
//!     fn capture(&self) -> u64 {
//!         self.0
//!     }
//!     fn record(&self, in_transit: &mut u64, _from: NodeId, tokens: &u64) {
//!         *in_transit += tokens;
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Three nodes in a one-way ring, and a coordinator, on one in-process network.
//! let ids = [1, 2, 3].map(NodeId);
//! let ring = Topology::ring(ids);
//! ring.check()?; // strongly connected: a snapshot can complete
//! const COORDINATOR: Endpoint = Endpoint::Role(0);
//! let network = MemNetwork::<NodeFrame<Tokens>>::new();
//! let mut control = network.endpoint(COORDINATOR)?;
//! let mut nodes = Vec::new();
//! for id in ids {
//!     let t = network.endpoint(Endpoint::Node(id))?;
//!     let mut node = Node::new(id, Tokens(10));
//!     ring.join(&mut node)?;
//!     node.report_to(COORDINATOR);
//!     nodes.push((node, t));
//! }
//! // Each endpoint connects to every other it talks to, both ways.
//! let addresses: Vec<_> = nodes.iter().map(|(_, t)| (t.local(), t.address())).collect();
//! for (_, t) in &mut nodes {
//!     for (peer, address) in &addresses {
//!         if *peer != t.local() {
//!             t.connect(*peer, address)?;
//!         }
//!     }
//!     t.connect(COORDINATOR, &control.address())?;
//!     control.connect(t.local(), &t.address())?;
//! }
//!
//! // Node 1 hands 4 tokens to node 2; a snapshot starts at node 3 before they arrive.
//! let (node, t) = &mut nodes[0];
//! node.process_mut().0 -= 4;
//! node.send(t, NodeId(2), 4)?;
//! let mut coordinator = Coordinator::new(ids);
//! coordinator.initiate(&mut control, NodeId(3))?;
//!
//! // Each node handles what has come (one thread here; usually a thread or a task
//! // each, looping on `next_event`), until the coordinator has the whole snapshot.
//! let global = loop {
//!     for (node, t) in &mut nodes {
//!         node.poll_event(t, Duration::ZERO)?;
//!     }
//!     match coordinator.next_event(&mut control, Duration::ZERO)? {
//!         Some(CoordinatorEvent::Completed(taken)) => break taken.snapshot,
//!         _ => continue,
//!     }
//! };
//! global.check_cut()?; // a consistent cut...
//! let held: u64 = global.nodes().map(|local| local.state).sum();
//! let in_transit: u64 = global.channels().iter().map(|(_, _, c)| c.record).sum();
//! assert_eq!(held + in_transit, 30); // ...that accounts for every token
//! # Ok(())
//! # }
//! ```
//!
//! `examples/ring.rs` is the same with a thread per node, tokens and named items, and
//! three snapshots at once: `cargo run -p snapshot-core --example ring --all-features`.
//!
//! # The lifecycle of a snapshot
//!
//! 1. **Start.** [`Coordinator::initiate`] asks a node; its driver records the
//!    node's state, sends the markers and answers [`CoordinatorEvent::Started`]. Any
//!    number may be in flight, up to each engine's
//!    [bound](SnapshotEngine::with_max_in_flight).
//! 2. **Complete, or abort.** Every node sends its part as it completes; the last
//!    one makes [`CoordinatorEvent::Completed`], a [`TakenSnapshot`]: the
//!    [`GlobalSnapshot`] and its [`SnapshotStats`]. A snapshot whose last part has not
//!    come within the coordinator's [timeout](Coordinator::with_timeout) is aborted
//!    at every node ([`CoordinatorEvent::Aborted`] says which nodes had not finished
//!    and which channels they waited on); its late markers are ignored, and the next
//!    snapshot goes as usual.
//! 3. **Save.** A [`TakenSnapshot`] is serde-serializable: keep it anywhere, with
//!    any format.
//! 4. **Restore.** [`Node::restore`] rebuilds a node from a saved snapshot: its
//!    process from its recorded state ([`Restore`]), its channels, and an engine whose
//!    sequence numbers resume past the snapshot; on resuming, each node first sends
//!    again what the snapshot caught in transit on its channels ([`Replay`]), before
//!    anything new. A snapshot taken right after equals the one restored from. See
//!    [`restore`] and `examples/restore.rs`
//!    (`cargo run -p snapshot-core --example restore --all-features`).
//!
//! # Layers
//!
//! The crate is built in layers, so that each can be used and tested alone:
//!
//! - [`SnapshotEngine`]: the protocol for one node, a deterministic state machine with
//!   no threads, sockets or clocks. Inputs are method calls ("a marker arrived from
//!   node 3"), outputs are [`Action`]s ("send a marker to node 5", "local part
//!   complete"). Any number of snapshots may be in flight (up to a bound), started by
//!   any node, on any strongly connected directed [`topology`].
//! - [`Process`]: the application, as the protocol sees it.
//! - [`Transport`]: moves [`Frame`]s between [`Endpoint`]s, FIFO per ordered pair,
//!   under one contract (see the trait). It is dyn-compatible, so the medium can be
//!   chosen at run time. `transport-mem`, `transport-pipe` and `transport-tcp`
//!   implement it.
//! - [`Node`]: the driver that joins a process, its engine and a transport, and does
//!   the counting that is easy to get wrong by hand.
//! - [`Coordinator`]: starts snapshots at any node and assembles their parts, with the
//!   [`Coordination`] frames the driver answers by itself.
//! - [`GlobalSnapshot`]: local snapshots assembled into one, serializable with serde,
//!   that can [check](GlobalSnapshot::check_cut) that it is a consistent cut.
//!
//! # Features
//!
//! - `codec`: the `codec` module, length-prefixed postcard frames, and
//!   `stream::Inbound`, the reader of byte streams, for transports that cross a
//!   process boundary.
//! - `async`: `AsyncTransport`, the transport's asynchronous twin, and async twins of
//!   the [`Node`] methods (`next_event_async`, ...), for nodes run as tasks on tokio
//!   or any other runtime.
//! - `conformance`: `conformance`, the suite that checks a [`Transport`] keeps the
//!   contract; a transport crate runs it with `conformance_tests!`.
//! - `sim`: `sim`, a seeded simulated network, to test a [`Process`] under any
//!   schedule, delay or failure.
//!
//! Helpers for those who write a transport are in [`stream`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "async")]
mod asynchronous;
#[cfg(feature = "codec")]
pub mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
mod coordinator;
mod engine;
mod frame;
mod id;
mod node;
mod process;
pub mod restore;
#[cfg(feature = "sim")]
pub mod sim;
mod snapshot;
pub mod stream;
pub mod topology;
mod transport;

#[cfg(feature = "async")]
pub use asynchronous::AsyncTransport;
pub use coordinator::{
    AbortedSnapshot, Coordinator, CoordinatorError, CoordinatorEvent, DEFAULT_TIMEOUT,
    SnapshotStats, TakenSnapshot, Unfinished,
};
pub use engine::{ABORTED_REMEMBERED, Aborted, Action, EngineError, SnapshotEngine};
pub use frame::{Coordination, Envelope, Frame};
pub use id::{Endpoint, NodeId, SnapshotId};
pub use node::{Event, Node, NodeError, NodeEvent, NodeFrame, NodeSnapshot, Outcome};
pub use process::{Outbox, Process};
pub use restore::{Replay, Restore, RestoreError, Restored};
pub use snapshot::{ChannelRecord, Collector, GlobalSnapshot, LocalSnapshot, SnapshotError};
pub use transport::{Incoming, Transport, TransportError};
