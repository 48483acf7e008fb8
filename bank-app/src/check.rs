//! The check every snapshot of the bank passes, whether the observer collected it
//! or `master load` assembled it: a consistent cut that accounts for all the money
//! of the bank, no more and no less.

use crate::protocol::BankSnapshot;
use snapshot_core::SnapshotError;
use thiserror::Error;

/// Why a snapshot fails its check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    /// The cut is not consistent (or misses a node's part).
    #[error("snapshot {id}: not a consistent cut")]
    Cut {
        /// The snapshot.
        id: snapshot_core::SnapshotId,
        /// What [`BankSnapshot::check_cut`] found.
        #[source]
        source: SnapshotError,
    },
    /// The balances and the money in transit (`held` and `in_transit`) do not add up
    /// to the bank's money.
    #[error("snapshot {id} accounts for {counted} but the bank holds {total}")]
    Money {
        /// The snapshot.
        id: snapshot_core::SnapshotId,
        /// The balances, all nodes together.
        held: u128,
        /// The money in transit, all channels together.
        in_transit: u128,
        /// The two together.
        counted: u128,
        /// The bank's money.
        total: u64,
    },
}

/// Checks that `snapshot` is a consistent cut ([`BankSnapshot::check_cut`]) whose
/// balances and money in transit add up to `total`.
pub fn check(snapshot: &BankSnapshot, total: u64) -> Result<(), CheckError> {
    let id = snapshot.id();
    snapshot
        .check_cut()
        .map_err(|source| CheckError::Cut { id, source })?;
    let held: u128 = snapshot.nodes().map(|l| u128::from(l.state)).sum();
    let in_transit: u128 = snapshot
        .channels()
        .iter()
        .flat_map(|(_, _, c)| c.record.0.iter())
        .map(|t| u128::from(t.0))
        .sum();
    let counted = held + in_transit;
    if counted != u128::from(total) {
        return Err(CheckError::Money {
            id,
            held,
            in_transit,
            counted,
            total,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{InTransit, Transfer};
    use snapshot_core::{ChannelRecord, GlobalSnapshot, LocalSnapshot, NodeId, SnapshotId};
    use std::collections::BTreeMap;

    const ID: SnapshotId = SnapshotId {
        initiator: NodeId(1),
        seq: 0,
    };

    /// Two branches holding 70 and 20, with 10 on its way from 1 to 2: 100 in all.
    fn two_branches() -> Vec<LocalSnapshot<u64, InTransit>> {
        let one = LocalSnapshot {
            id: ID,
            node: NodeId(1),
            state: 70,
            channels: BTreeMap::from([(NodeId(2), ChannelRecord::default())]),
            sent: BTreeMap::from([(NodeId(2), 3)]),
            received: BTreeMap::from([(NodeId(2), 1)]),
        };
        let two = LocalSnapshot {
            id: ID,
            node: NodeId(2),
            state: 20,
            channels: BTreeMap::from([(
                NodeId(1),
                ChannelRecord {
                    record: InTransit(vec![Transfer(10)]),
                    messages: 1,
                },
            )]),
            sent: BTreeMap::from([(NodeId(1), 1)]),
            received: BTreeMap::from([(NodeId(1), 2)]),
        };
        vec![one, two]
    }

    fn snapshot(locals: Vec<LocalSnapshot<u64, InTransit>>) -> BankSnapshot {
        GlobalSnapshot::from_locals(ID, locals).unwrap()
    }

    #[test]
    fn a_snapshot_that_accounts_for_all_the_money_passes() {
        check(&snapshot(two_branches()), 100).unwrap();
    }

    #[test]
    fn a_snapshot_missing_money_fails() {
        let mut locals = two_branches();
        locals[0].state -= 5;
        assert_eq!(
            check(&snapshot(locals), 100),
            Err(CheckError::Money {
                id: ID,
                held: 85,
                in_transit: 10,
                counted: 95,
                total: 100
            })
        );
        // The same snapshot against another total.
        assert!(matches!(
            check(&snapshot(two_branches()), 101),
            Err(CheckError::Money { counted: 100, .. })
        ));
    }

    #[test]
    fn a_snapshot_whose_counts_do_not_add_up_fails() {
        // The transfer in transit lost from the record, but still counted as sent.
        let mut locals = two_branches();
        locals[1]
            .channels
            .insert(NodeId(1), ChannelRecord::default());
        locals[0].state += 10;
        let error = check(&snapshot(locals), 100).unwrap_err();
        assert!(matches!(error, CheckError::Cut { .. }), "{error}");
        assert_eq!(error.to_string(), "snapshot 1#0: not a consistent cut");
        assert!(std::error::Error::source(&error).is_some());
    }
}
