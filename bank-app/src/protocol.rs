//! The bank's control protocol: what the master, the observer and the nodes say to
//! each other besides the node-to-node traffic of snapshot-core.

use crate::account::Account;
use serde::{Deserialize, Serialize};
use snapshot_core::Endpoint;
use snapshot_core::{GlobalSnapshot, NodeFrame, NodeId, NodeSnapshot};

/// A node's local snapshot in the bank: its balance, and the money in transit on each
/// incoming channel.
pub type BankLocal = NodeSnapshot<Account>;

/// A global snapshot of the bank.
pub type BankSnapshot = GlobalSnapshot<u64, crate::account::InTransit>;

/// The master's endpoint: the role that reads the script and drives the others.
pub const MASTER: Endpoint = Endpoint::Role(0);

/// The observer's endpoint: the role that starts and collects snapshots.
pub const OBSERVER: Endpoint = Endpoint::Role(1);

/// An endpoint as the bank names it in what it prints: `master`, `observer`,
/// `node 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who(pub Endpoint);

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            MASTER => f.write_str("master"),
            OBSERVER => f.write_str("observer"),
            other => other.fmt(f),
        }
    }
}

/// Everything the bank's transports carry.
pub type Wire = NodeFrame<Account, Control>;

/// A peer to connect to: its id and where it listens (for transports that need it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's node id.
    pub node: NodeId,
    /// Its transport address, if the transport needs one.
    pub address: Option<String>,
}

/// What a node took from a channel, as reported to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Taken {
    /// A transfer of this amount.
    Transfer(u64),
    /// A snapshot marker.
    Marker,
}

/// Control messages. Each role accepts only its own; anything else from a peer is a
/// protocol error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    // A role that has just started, to the master.
    /// "I am up, and reachable here."
    Hello {
        /// Where peers reach the sender, if the transport needs to be told.
        address: Option<String>,
    },

    // Master to a node.
    /// Tells a node started by hand where the master listens; it connects back and
    /// says hello.
    Attach {
        /// The master's address.
        master: String,
    },
    /// Sets a new node's balance and connects it to the observer and the existing
    /// nodes.
    Join {
        /// The opening balance.
        balance: u64,
        /// Where the observer listens, if the transport needs to be told.
        observer: Option<String>,
        /// Every node already in the bank.
        peers: Vec<Peer>,
    },
    /// Connects an existing node to a new one.
    Connect(Peer),
    /// The `Send` command: pay `amount` to `to`, if the balance covers it.
    Pay {
        /// The paid node.
        to: NodeId,
        /// How much.
        amount: u64,
    },
    /// The `Receive` command: take the head message of the channel `from -> self`.
    Take {
        /// The channel's sender.
        from: NodeId,
    },
    /// Exit.
    Stop,

    // A node to the master.
    /// `Join` or `Connect` is done.
    Joined,
    /// The transfer is on its way.
    Paid,
    /// The balance does not cover the transfer; nothing was done.
    Insufficient,
    /// The head message was handled.
    Took {
        /// What it was.
        what: Taken,
        /// Whether taking it made the node record its state (and so send a marker on
        /// every outgoing channel).
        recorded: bool,
    },

    // Master to the observer.
    /// A node has joined the bank.
    AddNode {
        /// The node.
        peer: Peer,
        /// Its opening balance, so that the observer can check that snapshots
        /// conserve money.
        balance: u64,
    },
    /// The `BeginSnapshot` command.
    Begin(NodeId),
    /// The `CollectState` command.
    Collect,
    /// The `PrintSnapshot` command: send the last collected snapshot.
    Print,

    // The observer to the master.
    /// `AddNode` is done.
    Added,
    /// The node has started the snapshot.
    Begun,
    /// The snapshot has been collected and checked.
    Collected,
    /// The snapshot could not be assembled or failed its checks.
    Invalid(String),
    /// The last collected snapshot.
    Snapshot(Option<BankSnapshot>),

    // The observer to a node.
    /// Start a snapshot.
    TakeSnapshot,
    /// Send your completed local snapshot, and forget it.
    Report,

    // A node to the observer.
    /// The snapshot is started.
    Started,
    /// The completed local snapshot, if any.
    Local(Option<Box<BankLocal>>),

    // Any role to the master.
    /// The sender has failed and is about to exit; the text says why.
    Failure(String),
    /// The sender cannot go on because this peer has gone; it waits to be stopped.
    PeerGone(Endpoint),
}
