//! The bank's control protocol: what the master, the observer and the nodes say to
//! each other besides the node-to-node traffic of snapshot-core.

use crate::account::{Account, Transfer};
use serde::{Deserialize, Serialize};
use snapshot_core::{
    Endpoint, Frame, GlobalSnapshot, NodeFrame, NodeId, NodeSnapshot, Transport, TransportError,
};

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

/// What the roles say to each other besides node-to-node traffic, by the kind of
/// role it goes to. A role is sent only its own kind ([`ToNode`], [`ToObserver`],
/// [`ToMaster`]): the functions that send ([`to_node`], [`to_observer`],
/// [`to_master`]) take nothing else, and a role that receives another kind from a
/// peer refuses it as a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// To the process of a node started by hand, before it plays its role: where the
    /// master listens. It connects back and says hello.
    Attach {
        /// The master's address.
        master: String,
    },
    /// To a node, from the master or the observer.
    ToNode(ToNode),
    /// To the observer, from the master or a node.
    ToObserver(ToObserver),
    /// To the master, from any role.
    ToMaster(ToMaster),
}

/// What a node is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToNode {
    // From the master.
    /// Sets a new node's balance and connects it to the observer and the existing
    /// nodes.
    Join {
        /// The opening balance.
        balance: u64,
        /// Where its snapshots' sequence numbers start: past those of the snapshot
        /// the bank is restored from, 0 otherwise.
        epoch: u64,
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
    /// Put these transfers back on the channel `self -> to`, in order, as a restored
    /// bank's were in transit: sent without being paid for again.
    PutBack {
        /// The channel's receiver.
        to: NodeId,
        /// The transfers, in the order they were caught.
        transfers: Vec<Transfer>,
    },
    /// Take in what other nodes have sent and hold it, then answer: a transport may
    /// keep node-to-node frames back until their receiver is woken for something
    /// else, and their sender waiting (see `MemOptions::defer_node_frames`).
    Settle,
    /// Exit.
    Stop,

    // From the observer.
    /// Start a snapshot.
    TakeSnapshot,
    /// Send your completed local snapshot, and forget it.
    Report,
}

/// What the observer is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToObserver {
    // From the master.
    /// A node has joined the bank.
    AddNode {
        /// The node.
        peer: Peer,
        /// Its opening balance, so that the observer can check that snapshots
        /// conserve money.
        balance: u64,
    },
    /// Money put back in transit in a restored bank: it counts in the bank's total.
    PutBack {
        /// How much.
        amount: u64,
    },
    /// The `BeginSnapshot` command.
    Begin(NodeId),
    /// The `CollectState` command.
    Collect,
    /// The `PrintSnapshot` command: send the last collected snapshot.
    Print,
    /// Exit.
    Stop,

    // From a node.
    /// The snapshot is started: the node has recorded its state and sent a marker to
    /// each of these nodes.
    Started {
        /// Where its markers went, as its snapshot engine says.
        markers: Vec<NodeId>,
    },
    /// The completed local snapshot, if any.
    Local(Option<Box<BankLocal>>),
}

/// What the master is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToMaster {
    // From any role.
    /// "I am up, and reachable here."
    Hello {
        /// Where peers reach the sender, if the transport needs to be told.
        address: Option<String>,
    },
    /// The sender has failed and is about to exit; the text says why.
    Failure(String),
    /// The sender cannot go on because this peer has gone; it waits to be stopped.
    PeerGone(Endpoint),

    // From a node.
    /// `Join` or `Connect` is done.
    Joined,
    /// The transfer is on its way.
    Paid,
    /// The transfers are back on their channel.
    PutBack,
    /// What had arrived is taken in.
    Settled,
    /// The balance does not cover the transfer; nothing was done.
    Insufficient,
    /// The head message was handled.
    Took {
        /// What it was.
        what: Taken,
        /// The nodes that taking it made this node send a marker to (it recorded its
        /// state), as its snapshot engine says; empty if it recorded nothing.
        markers: Vec<NodeId>,
    },

    // From the observer.
    /// `AddNode` or `PutBack` is done.
    Added,
    /// The snapshot is started at the node asked.
    Begun {
        /// The nodes that node sent a marker to.
        markers: Vec<NodeId>,
    },
    /// The snapshot has been collected and checked.
    Collected,
    /// The snapshot could not be assembled or failed its checks.
    Invalid(String),
    /// The last collected snapshot.
    Snapshot(Option<BankSnapshot>),
}

impl From<ToNode> for Control {
    fn from(message: ToNode) -> Self {
        Control::ToNode(message)
    }
}

impl From<ToObserver> for Control {
    fn from(message: ToObserver) -> Self {
        Control::ToObserver(message)
    }
}

impl From<ToMaster> for Control {
    fn from(message: ToMaster) -> Self {
        Control::ToMaster(message)
    }
}

/// Sends `message` to node `node`.
pub fn to_node(
    transport: &mut (impl Transport<Wire> + ?Sized),
    node: NodeId,
    message: ToNode,
) -> Result<(), TransportError> {
    transport.send(Endpoint::Node(node), Frame::Control(message.into()))
}

/// Sends `message` to the observer.
pub fn to_observer(
    transport: &mut (impl Transport<Wire> + ?Sized),
    message: ToObserver,
) -> Result<(), TransportError> {
    transport.send(OBSERVER, Frame::Control(message.into()))
}

/// Sends `message` to the master.
pub fn to_master(
    transport: &mut (impl Transport<Wire> + ?Sized),
    message: ToMaster,
) -> Result<(), TransportError> {
    transport.send(MASTER, Frame::Control(message.into()))
}
