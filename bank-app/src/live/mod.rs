//! `master load`: the bank running free, as fast as it can, while snapshots are taken
//! and checked.
//!
//! Every branch is a thread of this process running snapshot-core's free-running
//! `Node` around an [`Account`](crate::account::Account), over its own endpoint of
//! the chosen medium (real FIFOs and loopback sockets on pipe and tcp). The branches
//! send money to their out-neighbours in batches, random amounts to random
//! neighbours, and take in what arrives between batches. The driver, on the calling
//! thread, asks a random branch for a snapshot at a fixed interval through a
//! `Coordinator` (at most so many in flight, each with a deadline past which it is
//! aborted), and checks each snapshot assembled: a consistent cut that accounts for
//! all the bank's money. At the end the branches stop sending, every transfer
//! arrives, and the money is counted once more.
//!
//! ```
//! use bank_app::live::{End, Layout, LoadConfig, Opening, run};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = LoadConfig::new(Opening::Fresh(Layout::ring(4, 1000)?), "ring");
//! config.end = End::Transfers(50_000);
//! config.snapshot_every = Duration::from_millis(1);
//! let report = run(config)?;
//! assert_eq!(report.transfers, 50_000);
//! assert_eq!((report.failed, report.final_balance), (0, 4000));
//! assert_eq!(report.status(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! Modules, from the top down: each imports only modules further down the list.
//! - [`args`]: the command line, and the command;
//! - [`run`](mod@run): a run, from the nodes' start to the last count of the money;
//! - [`report`]: what a run measured, and its summary;
//! - `progress`: the progress line on a terminal;
//! - `node`: what a branch does under load;
//! - [`layout`]: the branches, their balances and channels, and topology files;
//! - [`wire`]: what the driver and the branches say to each other;
//! - [`cluster`]: nodes as threads over a medium's endpoints, for any topology (the
//!   benchmarks' harness runs on it too).

pub mod args;
pub mod cluster;
pub mod layout;
mod node;
mod progress;
pub mod report;
pub mod run;
pub mod wire;

pub use args::{LoadArgs, main};
pub use layout::{Layout, LayoutError};
pub use report::{Latency, Report};
pub use run::{End, Hooks, LoadConfig, LoadError, MAX_CONCURRENT, Opening, run};
