//! What the master asks of the system that runs the roles, whatever the transport: a
//! trait, and the little it passes around. The systems themselves are in
//! [`crate::systems`]; the master sees nothing but this trait and `dyn Transport`.

use crate::protocol::Wire;
use crate::role::Role;
use crossbeam_channel::Receiver;
use snapshot_core::{Endpoint, NodeId, Transport};
use std::time::Duration;

/// How the master reaches a role it has just started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    /// The role's address, when it is known before the role says hello (the master
    /// connects to it at once).
    pub address: Option<String>,
    /// The role waits to be told the master's address
    /// ([`Control::Attach`](crate::protocol::Control::Attach)) before it says hello.
    pub attach: bool,
}

/// A role that has gone without being told to, as the system that ran it knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Departure {
    /// The role.
    pub who: Endpoint,
    /// Why it has gone: "the process died (signal 9)".
    pub cause: String,
}

/// Ends a run from another thread than the master's (on a signal): kills whatever the
/// system started and removes whatever the run created; says what it could not
/// remove.
pub type Teardown = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// The roles of one run, and the medium between them.
pub trait System {
    /// The master's own endpoint. Called once, before any role is started.
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>>;

    /// Starts `role`. It says `Hello` to the master once it is up.
    fn start(&mut self, role: Role) -> anyhow::Result<Started>;

    /// The most nodes this system can run.
    fn max_nodes(&self) -> usize;

    /// Why `node` cannot join this system, if it cannot (a cluster runs only the nodes
    /// its file names).
    fn refuses(&self, node: NodeId) -> Option<String> {
        let _ = node;
        None
    }

    /// Where the system tells of roles that leave without being told to, as soon as
    /// it learns of it by itself (a child process that exits), whatever the master is
    /// doing. `None` if it never learns of anything the transport does not tell.
    fn departures(&self) -> Option<Receiver<Departure>> {
        None
    }

    /// Why `who`, which the transport says has gone, has gone, if the system knows or
    /// learns it within `grace` (a process it started, seen to exit).
    fn why_gone(&mut self, who: Endpoint, grace: Duration) -> Option<String> {
        let _ = (who, grace);
        None
    }

    /// Why `who` cannot answer, if the system can see that it cannot (its process is
    /// stopped).
    fn unresponsive(&self, who: Endpoint) -> Option<String> {
        let _ = who;
        None
    }

    /// From now on, roles that leave are expected to: the master is telling them to
    /// stop.
    fn stopping(&mut self) {}

    /// Waits for every role to exit (the master has told them to stop) and removes
    /// whatever the run created; says what it could not remove.
    fn shutdown(&mut self) -> Result<(), String>;

    /// A way to end the run from another thread, if the system has anything to end
    /// that would outlive the process.
    fn teardown(&self) -> Option<Teardown> {
        None
    }
}
