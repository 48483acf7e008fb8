//! A bank branch as a snapshot-core [`Process`], and the transfers between branches.
//!
//! These are the bank's own types, and the benchmarks' too: `snapshot-harness` runs
//! [`Account`]s on threads, so what the benchmarks measure is the work of a branch of
//! this bank.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use snapshot_core::{NodeId, Outbox, Process, Replay, Restore};

/// Money on its way from one branch to another.
///
/// On the wire a transfer takes 16 bytes whatever its amount: the amount, a
/// little-endian `u64`, then 8 reserved bytes that are zero (a transfer whose reserved
/// bytes are not is refused). Every transfer frame thus has one size, 22 bytes on pipe
/// and tcp with the length prefix and the frame's tags: the size the benchmarks
/// measure (see `BENCHMARKS.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer(pub u64);

impl Transfer {
    /// The size of a transfer on the wire.
    pub const WIRE_SIZE: usize = 16;

    /// Its bytes on the wire.
    pub fn to_wire(self) -> [u8; Self::WIRE_SIZE] {
        let mut bytes = [0; Self::WIRE_SIZE];
        bytes[..8].copy_from_slice(&self.0.to_le_bytes());
        bytes
    }

    /// The transfer `bytes` carry; `None` if their reserved bytes are not zero.
    pub fn from_wire(bytes: [u8; Self::WIRE_SIZE]) -> Option<Self> {
        let (amount, reserved) = bytes.split_at(8);
        if reserved.iter().any(|&b| b != 0) {
            return None;
        }
        let mut amount_bytes = [0; 8];
        amount_bytes.copy_from_slice(amount);
        Some(Transfer(u64::from_le_bytes(amount_bytes)))
    }
}

/// In a compact format (postcard, on every transport) a transfer is written as two
/// `f64`s whose bits are the amount and the reserved zeros: such a format writes an
/// `f64` as its 8 little-endian bytes, so the bytes are those of
/// [`to_wire`](Transfer::to_wire), put down in two runs of 8 instead of 16 one at a
/// time (what an array of bytes costs through serde), and read back the same way. The
/// `f64`s are only carriers: their bits are taken as they are and never computed with.
/// A human-readable format gets the 16 bytes as an array.
impl Serialize for Transfer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return self.to_wire().serialize(serializer);
        }
        let mut halves = serializer.serialize_tuple(2)?;
        halves.serialize_element(&f64::from_bits(self.0))?;
        halves.serialize_element(&f64::from_bits(0))?;
        halves.end()
    }
}

impl<'de> Deserialize<'de> for Transfer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let bytes = <[u8; Self::WIRE_SIZE]>::deserialize(deserializer)?;
            return Transfer::from_wire(bytes).ok_or_else(|| D::Error::custom(RESERVED));
        }
        deserializer.deserialize_tuple(2, Halves)
    }
}

/// Why a transfer is refused.
const RESERVED: &str = "a transfer's reserved bytes are not zero";

/// Reads a transfer from its two halves in a compact format (see [`Transfer`]'s
/// `Serialize`).
struct Halves;

impl<'de> Visitor<'de> for Halves {
    type Value = Transfer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a transfer: its amount and 8 reserved bytes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Transfer, A::Error> {
        let Some(amount) = seq.next_element::<f64>()? else {
            return Err(A::Error::invalid_length(0, &self));
        };
        let Some(reserved) = seq.next_element::<f64>()? else {
            return Err(A::Error::invalid_length(1, &self));
        };
        if reserved.to_bits() != 0 {
            return Err(A::Error::custom(RESERVED));
        }
        Ok(Transfer(amount.to_bits()))
    }
}

/// A branch's balance, and how many transfers it has taken in.
///
/// Snapshots record the balance, and fold the transfers caught in transit on a
/// channel into their sum: that is all the bank prints of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    /// The money the branch holds.
    pub balance: u64,
    /// The transfers it has handled (taken in), whatever their amount.
    pub handled: u64,
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
    type Record = InTransit;

    fn handle(
        &mut self,
        _from: NodeId,
        Transfer(amount): Transfer,
        _outbox: &mut Outbox<Transfer>,
    ) {
        // The master refuses any CreateNode that would take the bank's total past
        // u64::MAX, so no balance can overflow; saturating keeps that a non-panic.
        self.balance = self.balance.saturating_add(amount);
        self.handled += 1;
    }

    fn capture(&self) -> u64 {
        self.balance
    }

    fn record(&self, in_transit: &mut InTransit, _from: NodeId, transfer: &Transfer) {
        in_transit.0.push(*transfer);
    }
}

/// A branch is rebuilt from the balance a snapshot recorded (it has taken nothing in
/// since).
impl Restore for Account {
    fn restore(_node: NodeId, balance: &u64) -> Self {
        Account {
            balance: *balance,
            handled: 0,
        }
    }
}

/// The transfers a snapshot caught in transit on one channel, in the order they were
/// taken: kept whole, so that a restored bank can put them back on their channel
/// ([`Replay`]); shown as their sum, which is all the bank prints of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InTransit(pub Vec<Transfer>);

impl InTransit {
    /// The money in transit. The master refuses any CreateNode that would take the
    /// bank's total past u64::MAX, so the sum cannot overflow; saturating keeps that a
    /// non-panic.
    pub fn sum(&self) -> u64 {
        self.0
            .iter()
            .fold(0, |sum, Transfer(amount)| sum.saturating_add(*amount))
    }
}

/// The sum of the money in transit.
impl std::fmt::Display for InTransit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.sum().fmt(f)
    }
}

impl Replay<Transfer> for InTransit {
    fn messages(&self) -> impl Iterator<Item = Transfer> {
        self.0.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_on_the_wire_is_its_amount_and_8_reserved_bytes() {
        let wire = Transfer(0x0102_0304_0506_0708).to_wire();
        assert_eq!(wire, [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Transfer::from_wire(wire),
            Some(Transfer(0x0102_0304_0506_0708))
        );
        let mut reserved = wire;
        reserved[15] = 1;
        assert_eq!(Transfer::from_wire(reserved), None);
    }

    #[test]
    fn postcard_carries_a_transfer_as_its_wire_bytes() {
        // Amounts whose bits, read as an f64, are infinities and NaNs (quiet,
        // signalling, negative) come back as they went.
        for amount in [
            0,
            1,
            0x0102_0304_0506_0708,
            0x7ff0_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            0x7ff8_0000_0000_0001,
            0xfff0_0000_0000_0001,
            u64::MAX,
        ] {
            let transfer = Transfer(amount);
            let bytes = postcard::to_stdvec(&transfer).unwrap();
            assert_eq!(bytes, transfer.to_wire(), "{amount:#x}");
            assert_eq!(postcard::from_bytes::<Transfer>(&bytes).unwrap(), transfer);
        }
        let mut reserved = Transfer(5).to_wire();
        reserved[8] = 1;
        assert!(postcard::from_bytes::<Transfer>(&reserved).is_err());
        assert!(postcard::from_bytes::<Transfer>(&reserved[..12]).is_err());
    }

    #[test]
    fn json_carries_a_transfer_as_its_16_bytes() {
        let json = serde_json::to_string(&Transfer(258)).unwrap();
        assert_eq!(json, "[2,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0]");
        assert_eq!(
            serde_json::from_str::<Transfer>(&json).unwrap(),
            Transfer(258)
        );
        assert!(serde_json::from_str::<Transfer>("[2,1,0,0,0,0,0,0,0,0,0,0,0,0,0,1]").is_err());
    }

    #[test]
    fn a_branch_counts_what_it_takes_in() {
        let mut account = Account {
            balance: 10,
            handled: 0,
        };
        assert!(account.withdraw(4));
        assert!(!account.withdraw(7));
        account.handle(NodeId(2), Transfer(5), &mut Outbox::default());
        assert_eq!(
            account,
            Account {
                balance: 11,
                handled: 1
            }
        );
        let mut in_transit = InTransit::default();
        account.record(&mut in_transit, NodeId(2), &Transfer(3));
        account.record(&mut in_transit, NodeId(2), &Transfer(4));
        assert_eq!(account.capture(), 11);
        assert_eq!(in_transit.to_string(), "7", "printed as the sum");
        assert_eq!(
            in_transit.messages().collect::<Vec<_>>(),
            [Transfer(3), Transfer(4)]
        );
    }
}
