//! A distributed bank whose global state is captured with Chandy-Lamport snapshots.
//!
//! This crate is the `master` program of the bank's specification: a master that runs
//! a script of commands, an observer that collects snapshots, and N nodes (bank
//! branches) that move money over FIFO channels. The snapshot protocol itself is
//! `snapshot-core`'s; the branches are [`account::Account`] processes driven by its
//! `Node`, and every role talks through `dyn Transport`, so the medium is chosen at
//! run time.
//!
//! Modules, from the top down: each imports only modules further down the list.
//! - [`live`]: `master load`, the bank running free on threads while snapshots are
//!   taken and checked, and the nodes-as-threads cluster the benchmarks share;
//! - [`ceiling`]: the bare round trips a script's commands make, the ceiling its
//!   script mode is measured against;
//! - [`master`]: checks and runs commands, makes the seeded random choices, prints;
//! - [`saved`]: saved snapshots: their file format, writing, reading, checking and
//!   printing them, and `master inspect`;
//! - [`systems`]: the ways to run the roles: threads ([`systems::threads`]), child
//!   processes watched by a supervisor ([`systems::processes`]), or nodes started by
//!   hand on other hosts ([`systems::cluster`]), and what a role's own process does
//!   ([`systems::child`]);
//! - [`system`]: what the master asks of a system, whichever it is;
//! - [`role`]: the node and observer roles;
//! - [`check`]: the check every snapshot passes (a consistent cut that holds all the
//!   money);
//! - [`protocol`]: what the roles say to each other;
//! - [`account`]: a branch as a snapshot-core `Process`;
//! - [`script`]: the command language;
//! - [`input`]: the script's lines, read ahead on a thread of their own;
//! - [`channels`]: the master's count of messages per channel;
//! - [`workload`]: seeded scripts for measuring the bank;
//! - [`choice`]: reproducible random choices;
//! - [`output`]: the master's standard output;
//! - [`cause`]: how a failure's cause is written.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod account;
pub mod cause;
pub mod ceiling;
pub mod channels;
pub mod check;
pub mod choice;
pub mod input;
pub mod live;
pub mod master;
pub mod output;
pub mod protocol;
pub mod role;
pub mod saved;
pub mod script;
pub mod system;
pub mod systems;
pub mod workload;
