//! Bank branches as threads: the harness behind snapshot-rs's benchmarks and their
//! tests (see `BENCHMARKS.md` at the root of the repository for the figures).
//!
//! A run is a [`Cluster`]: nodes, each a thread of this process running a
//! [`Node`](snapshot_core::Node) free over its own endpoint of one medium (a
//! [`TransportKind`]), and a driver on the `Endpoint::Role(0)` endpoint, in the
//! calling thread, that starts them, asks for snapshots and assembles them with a
//! [`Collector`](snapshot_core::Collector). On pipe and tcp the endpoints are real
//! FIFOs and real loopback sockets; only the processes are threads.
//!
//! Every node is a branch of the bank, an [`Account`]: a [`Transfer`] takes money from
//! one account and brings it to another, so a snapshot must account for all of it, in
//! the accounts or in transit, and every snapshot a run assembles is
//! [checked](check) for that.
//!
//! Modules, by concept:
//! - [`medium`]: the media a run can use, and what the harness tunes for each;
//! - [`topology`]: which nodes a run has, and which are linked;
//! - [`wire`]: what the driver and the nodes say to each other;
//! - [`money`]: what the accounts open with, and the check that none was made or lost;
//! - [`node`]: what a node does ([`Work`]) and its loop;
//! - [`cluster`]: starting the nodes on a medium (the threads and endpoints of
//!   `bank_app::live::cluster`, which `master load` runs on too), driving them,
//!   stopping them;
//! - [`transfers`]: a run that moves transfers as fast as it can, snapshots meanwhile;
//! - [`ceiling`](mod@ceiling): the same frames over the bare medium, without
//!   snapshot-core, as fast as it moves them, and as fast as it passes one along a
//!   chain of threads ([`HopChain`], a snapshot's latency on a ring).
//!
//! ```
//! use snapshot_harness::{Cluster, Topology, TransportKind, Work, check};
//! use snapshot_core::NodeId;
//!
//! # fn main() -> Result<(), snapshot_core::TransportError> {
//! let mut cluster = Cluster::spawn(TransportKind::Mem, Topology::Ring(4), |_| Work::Idle)?;
//! cluster.start()?;
//! let (latency, global) = cluster.snapshot(NodeId(1))?;
//! check(&global)?;
//! assert_eq!(global.nodes().count(), 4);
//! assert!(latency.as_secs() < 60);
//! cluster.stop()?;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ceiling;
pub mod cluster;
pub mod medium;
pub mod money;
pub mod node;
pub mod topology;
pub mod transfers;
pub mod wire;

/// The bank's branch and transfer: the nodes of every run are bank branches.
pub use bank_app::account::{Account, Transfer};
/// The bank's choice of transport: the media a run can use.
pub use bank_app::systems::TransportKind;

pub use ceiling::{CEILING_BUFFER, HopChain, ceiling, encoded_transfer, ring_hops};
pub use cluster::{Cluster, PATIENCE};
pub use medium::Medium;
pub use money::{AMOUNT, OPENING, check};
pub use node::Work;
pub use topology::Topology;
pub use transfers::{MAX_IN_FLIGHT, TransferRun, run_transfers};
pub use wire::{AccountSnapshot, Control, Wire, transfer_frame};
