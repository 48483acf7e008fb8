//! A bank branch as a snapshot-core [`Process`].

use serde::{Deserialize, Serialize};
use snapshot_core::{NodeId, Outbox, Process};

/// Money on its way from one branch to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer(pub u64);

/// A branch's balance.
///
/// Snapshots record the balance, and fold the transfers caught in transit on a
/// channel into their sum: that is all the bank prints of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    /// The money the branch holds.
    pub balance: u64,
}

impl Account {
    /// Takes `amount` out for a transfer, if the balance covers it.
    pub fn withdraw(&mut self, amount: u64) -> bool {
        match self.balance.checked_sub(amount) {
            Some(rest) => {
                self.balance = rest;
                true
            }
            None => false,
        }
    }
}

impl Process for Account {
    type Message = Transfer;
    type State = u64;
    type Record = u64;

    fn handle(
        &mut self,
        _from: NodeId,
        Transfer(amount): Transfer,
        _outbox: &mut Outbox<Transfer>,
    ) {
        // The master refuses any CreateNode that would take the bank's total past
        // u64::MAX, so no balance can overflow; saturating keeps that a non-panic.
        self.balance = self.balance.saturating_add(amount);
    }

    fn capture(&self) -> u64 {
        self.balance
    }

    fn record(&self, in_transit: &mut u64, _from: NodeId, Transfer(amount): &Transfer) {
        *in_transit = in_transit.saturating_add(*amount);
    }
}
