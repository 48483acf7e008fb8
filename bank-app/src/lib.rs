//! A distributed bank whose global state is captured with Chandy-Lamport snapshots.
//!
//! This crate is the `master` program of the bank's specification: a master that runs
//! a script of commands, an observer that collects snapshots, and N nodes (bank
//! branches) that move money over FIFO channels. The snapshot protocol itself is
//! `snapshot-core`'s; the branches are [`account::Account`] processes driven by its
//! `Node`, and every role talks through `dyn Transport`, so the medium is chosen at
//! run time.
//!
//! Modules, by concept:
//! - [`script`]: the command language;
//! - [`master`]: checks and runs commands, makes the seeded random choices, prints;
//! - [`role`]: the node and observer roles;
//! - [`protocol`]: what the roles say to each other;
//! - [`account`]: a branch as a snapshot-core `Process`;
//! - [`system`]: starting and stopping the roles for a transport: threads
//!   ([`system::MemSystem`]), child processes ([`spawned`]), or nodes started by hand
//!   on other hosts ([`cluster`]);
//! - [`cleanup`]: removing what a run created, however it ends;
//! - [`channels`]: the master's count of messages per channel;
//! - [`choice`]: reproducible random choices;
//! - [`workload`]: seeded scripts for measuring the bank.

#![deny(missing_docs)]

pub mod account;
pub mod channels;
pub mod choice;
pub mod cleanup;
pub mod cluster;
pub mod master;
pub mod output;
pub mod protocol;
pub mod role;
pub mod script;
pub mod spawned;
pub mod system;
pub mod workload;
