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
//! This crate is built in layers, so that each can be used and tested alone:
//!
//! - [`SnapshotEngine`]: the protocol for one node, a deterministic state machine with
//!   no threads, sockets or clocks. Inputs are method calls ("a marker arrived from
//!   node 3"), outputs are [`Action`]s ("send a marker to node 5", "local part
//!   complete"). Any number of snapshots may be in flight, started by any node, on any
//!   directed topology.
//! - [`Process`]: the application, as the protocol sees it: its messages, its state,
//!   and how a message caught in transit is recorded.
//! - [`Transport`]: moves [`Frame`]s between [`Endpoint`]s, FIFO per ordered pair. It is
//!   object-safe, so the medium can be chosen at run time.
//! - [`Node`]: a driver that joins a process, its engine and a transport, and does the
//!   counting that is easy to get wrong by hand.
//!   With the `async` feature, `AsyncTransport` is the transport's asynchronous twin
//!   and `Node` has async twins of its methods (`next_event_async`, ...), for nodes
//!   run as tasks on any runtime.
//! - [`GlobalSnapshot`]: local snapshots assembled into one, serializable with serde,
//!   that can [check](GlobalSnapshot::check_cut) that it is a consistent cut.
//!
//! # Example
//!
//! Three processes pass tokens around; the total number of tokens never changes, so a
//! consistent snapshot must account for every one of them, including those in
//! transit. The engine is driven by hand here, with the channels as plain queues,
//! which is exactly what makes it easy to test:
//!
//! ```
//! use snapshot_core::{
//!     Action, GlobalSnapshot, NodeId, Outbox, Process, SnapshotEngine, SnapshotId,
//! };
//! use std::collections::{BTreeMap, VecDeque};
//!
//! /// A process holding some tokens.
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
//! /// What travels on a channel.
//! enum Item {
//!     Tokens(u64),
//!     Marker(SnapshotId),
//! }
//!
//! let ids = [NodeId(1), NodeId(2), NodeId(3)];
//! let mut procs: BTreeMap<NodeId, Tokens> = ids.iter().map(|&id| (id, Tokens(10))).collect();
//! let mut engines: BTreeMap<NodeId, SnapshotEngine<Tokens>> = BTreeMap::new();
//! let mut channels: BTreeMap<(NodeId, NodeId), VecDeque<Item>> = BTreeMap::new();
//! for &me in &ids {
//!     let mut engine = SnapshotEngine::new(me);
//!     for &peer in ids.iter().filter(|&&p| p != me) {
//!         engine.add_incoming(peer).unwrap();
//!         engine.add_outgoing(peer).unwrap();
//!         channels.insert((me, peer), VecDeque::new());
//!     }
//!     engines.insert(me, engine);
//! }
//!
//! // Process 1 sends 4 tokens to 2, then starts a snapshot; 2 sends 3 tokens to 3.
//! let (a, b, c) = (ids[0], ids[1], ids[2]);
//! procs.get_mut(&a).unwrap().0 -= 4;
//! engines.get_mut(&a).unwrap().on_send(b).unwrap();
//! channels.get_mut(&(a, b)).unwrap().push_back(Item::Tokens(4));
//!
//! let mut done = Vec::new();
//! let mut carry_out = |from: NodeId, actions: Vec<Action<u64, u64>>,
//!                      channels: &mut BTreeMap<(NodeId, NodeId), VecDeque<Item>>| {
//!     for action in actions {
//!         match action {
//!             Action::SendMarker { to, id } => {
//!                 channels.get_mut(&(from, to)).unwrap().push_back(Item::Marker(id))
//!             }
//!             Action::Complete(local) => done.push(local),
//!             Action::Recorded { .. } => {}
//!         }
//!     }
//! };
//! let (id, actions) = engines.get_mut(&a).unwrap().initiate(&procs[&a]);
//! carry_out(a, actions, &mut channels);
//!
//! procs.get_mut(&b).unwrap().0 -= 3;
//! engines.get_mut(&b).unwrap().on_send(c).unwrap();
//! channels.get_mut(&(b, c)).unwrap().push_back(Item::Tokens(3));
//!
//! // Deliver everything, channel by channel, in order.
//! while let Some((&(from, to), _)) = channels.iter().find(|(_, q)| !q.is_empty()) {
//!     let item = channels.get_mut(&(from, to)).unwrap().pop_front().unwrap();
//!     let engine = engines.get_mut(&to).unwrap();
//!     match item {
//!         Item::Tokens(n) => {
//!             engine.on_message(from, &n, &procs[&to]).unwrap();
//!             procs.get_mut(&to).unwrap().handle(from, n, &mut Outbox::default());
//!         }
//!         Item::Marker(id) => {
//!             let actions = engine.on_marker(from, id, &procs[&to]).unwrap();
//!             carry_out(to, actions, &mut channels);
//!         }
//!     }
//! }
//!
//! let global = GlobalSnapshot::from_locals(id, done).unwrap();
//! global.check_cut().unwrap();
//! let held: u64 = global.nodes().map(|local| local.state).sum();
//! let in_transit: u64 = global.channels().iter().map(|(_, _, ch)| ch.record).sum();
//! assert_eq!(held + in_transit, 30, "every token is accounted for");
//! ```
//!
//! `examples/tokens.rs` runs the same application with a thread per process, through
//! the [`Node`] driver and a [`Transport`] written in a few lines over `std::sync::mpsc`.

#![deny(missing_docs)]

#[cfg(feature = "async")]
mod asynchronous;
#[cfg(feature = "codec")]
pub mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
mod engine;
mod frame;
mod id;
mod node;
mod process;
mod snapshot;
pub mod stream;
mod transport;

#[cfg(feature = "async")]
pub use asynchronous::AsyncTransport;
pub use engine::{Action, EngineError, SnapshotEngine};
pub use frame::{Envelope, Frame};
pub use id::{Endpoint, NodeId, SnapshotId};
pub use node::{Event, Node, NodeError, NodeEvent, NodeFrame, NodeSnapshot, Outcome};
pub use process::{Outbox, Process};
pub use snapshot::{ChannelRecord, Collector, GlobalSnapshot, LocalSnapshot, SnapshotError};
pub use transport::{Incoming, Transport, TransportError};
