//! What the driver and the nodes say to each other, and what every endpoint carries.

use crate::Account;
use crate::Transfer;
use crate::money::AMOUNT;
use serde::{Deserialize, Serialize};
use snapshot_core::{Envelope, Frame, NodeSnapshot};

/// A local snapshot of an [`Account`]: its balance, and the sum of the transfers
/// caught in transit on each incoming channel.
pub type AccountSnapshot = NodeSnapshot<Account>;

/// What the driver and the nodes say to each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Driver to node: start working.
    Start,
    /// Driver to node: start a snapshot.
    Initiate,
    /// Driver to node: stop, and return the account.
    Stop,
    /// Node to driver: its part of a snapshot (boxed, so that the frames of the
    /// in-process medium stay small).
    Local(Box<AccountSnapshot>),
    /// Node to driver: it has sent all it had to and handled all it expected.
    Done,
}

/// What every endpoint carries.
pub type Wire = snapshot_core::NodeFrame<Account, Control>;

/// The frame of one transfer, as every medium carries it.
pub fn transfer_frame() -> Wire {
    Frame::Peer(Envelope::App(Transfer(AMOUNT)))
}
