//! What the driver and the nodes of a load say to each other, besides what
//! snapshot-core's `Coordinator` and `Node` say for snapshots.

use crate::account::Account;
use serde::{Deserialize, Serialize};
use snapshot_core::{Frame, NodeId};

/// What the driver and the nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Driver to node: start sending.
    Start,
    /// Driver to node: send nothing more, and say how many transfers went on each
    /// outgoing channel ([`Control::Finished`]).
    Finish,
    /// Driver to node: say [`Control::Drained`] once this many transfers, all the
    /// node's incoming channels together, have been taken in.
    Drain {
        /// The transfers sent to the node, by every sender together.
        expected: u64,
    },
    /// Driver to node: stop, and return the account.
    Stop,
    /// Node to driver: it sent the last of the run's transfers.
    Spent,
    /// Node to driver: it sends nothing more; the transfers it sent on each outgoing
    /// channel, the ones it put back after a restore included.
    Finished {
        /// `(receiver, transfers)`, by receiver.
        sent: Vec<(NodeId, u64)>,
        /// Of those, the transfers it put back after a restore.
        replayed: u64,
    },
    /// Node to driver: it has taken in every transfer sent to it.
    Drained {
        /// Its balance then, which nothing changes any more.
        balance: u64,
        /// The transfers it has taken in.
        handled: u64,
    },
}

/// What every endpoint of a load carries.
pub type Wire = snapshot_core::NodeFrame<Account, Control>;

/// The frame that tells a node to stop.
pub fn stop_frame() -> Wire {
    Frame::Control(Control::Stop)
}
