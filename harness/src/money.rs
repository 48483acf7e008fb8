//! What the accounts open with, what a transfer moves, and the check that a snapshot
//! made or lost no money.

use bank_app::account::InTransit;
use snapshot_core::{GlobalSnapshot, TransportError};

/// The amount every transfer carries.
pub const AMOUNT: u64 = 1;

/// What every account opens with: far more than any run takes out of one (2^40
/// transfers), so that no transfer is refused for want of money.
pub const OPENING: u64 = 1 << 40;

/// Checks that `global` is a consistent cut in which no money was made or lost: the
/// accounts and the transfers in transit add up to what the accounts opened with,
/// [`OPENING`] each.
pub fn check(global: &GlobalSnapshot<u64, InTransit>) -> Result<(), TransportError> {
    global
        .check_cut()
        .map_err(|error| TransportError::Protocol(error.to_string()))?;
    let held: u128 = global.nodes().map(|l| u128::from(l.state)).sum();
    let in_transit: u128 = global
        .channels()
        .iter()
        .map(|(_, _, c)| u128::from(c.record.sum()))
        .sum();
    let opened = u128::from(OPENING) * global.nodes().count() as u128;
    if held + in_transit != opened {
        return Err(TransportError::Protocol(format!(
            "snapshot {}: {held} held + {in_transit} in transit, but the accounts opened with {opened}",
            global.id()
        )));
    }
    Ok(())
}
