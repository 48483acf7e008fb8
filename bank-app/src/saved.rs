//! Saved snapshots of the bank: the file format, writing and reading the files,
//! checking what a file holds, printing it, and `master inspect`.
//!
//! A saved snapshot ([`SavedSnapshot`]) is one document, written as JSON and as
//! postcard. Its JSON has this shape (the files are pretty-printed; [`to_json_line`]
//! writes the same on one line):
//!
//! ```json
//! {
//!   "snapshot": {"initiator": 1, "seq": 0},
//!   "total": 1500,
//!   "nodes": [{"id": 1, "balance": 300}, {"id": 2, "balance": 1100}],
//!   "channels": [
//!     {"from": 1, "to": 2, "amount": 0, "transfers": [], "sent": 4, "received": 4},
//!     {"from": 2, "to": 1, "amount": 100, "transfers": [60, 40], "sent": 7, "received": 5}
//!   ],
//!   "stats": {}
//! }
//! ```
//!
//! - `nodes`: every node by increasing id, with the balance it recorded;
//! - `channels`: every channel of the bank (one each way between every two nodes), by
//!   increasing (`from`, `to`), empty ones included: `transfers` are the amounts of the
//!   transfers the snapshot caught in transit on it, in the order they arrived, and
//!   `amount` is their sum; `sent` is how many transfers `from` had sent on it when it
//!   recorded, `received` how many `to` had taken from it when it recorded;
//! - `total`: all the money the bank holds, which the snapshot must account for;
//! - `stats`: figures of the snapshot, each present only when known ([`Stats`]).
//!
//! [`check`] proves a saved snapshot a consistent cut that conserves money;
//! [`save`] writes both files atomically, and [`load`] reads either, never trusting
//! what it reads.

use crate::account::{InTransit, Transfer};
use crate::cause::describe;
use crate::protocol::BankSnapshot;
use serde::{Deserialize, Serialize};
use snapshot_core::{
    ChannelRecord, GlobalSnapshot, LocalSnapshot, NodeId, SnapshotId, SnapshotStats,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The `PrintSnapshot` block: nodes by id, then channels by source and destination.
pub fn format_snapshot(snapshot: &BankSnapshot) -> String {
    let mut block = String::from("---Node states\n");
    for local in snapshot.nodes() {
        let _ = writeln!(block, "node {} = {}", local.node, local.state);
    }
    block.push_str("---Channel states\n");
    for (from, to, channel) in snapshot.channels() {
        let _ = writeln!(block, "channel ({from} -> {to}) = {}", channel.record);
    }
    block
}

/// The largest file [`load`] reads (and [`save`] writes): 64 MiB.
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// A snapshot of the bank as it is saved: what each node recorded, what was in transit
/// on each channel, the money the bank holds, and the snapshot's figures.
///
/// See the [module](self) for its JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSnapshot {
    /// The snapshot's id: `{"initiator": 1, "seq": 0}`.
    pub snapshot: SnapshotId,
    /// All the money in the bank: the balances and the amounts in transit must add up
    /// to it.
    pub total: u64,
    /// Every node, by increasing id.
    pub nodes: Vec<SavedNode>,
    /// Every channel, by increasing (`from`, `to`).
    pub channels: Vec<SavedChannel>,
    /// The snapshot's figures, as far as they are known.
    #[serde(default, with = "stats_encoding")]
    pub stats: Stats,
}

/// A node as a snapshot recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedNode {
    /// The node's id.
    pub id: NodeId,
    /// The balance it recorded.
    pub balance: u64,
}

/// A channel as a snapshot recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedChannel {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The money in transit: the sum of `transfers`.
    pub amount: u64,
    /// The amount of each transfer caught in transit, in the order they arrived.
    pub transfers: Vec<u64>,
    /// How many transfers the sender had sent on the channel when it recorded.
    pub sent: u64,
    /// How many transfers the receiver had taken from the channel when it recorded.
    pub received: u64,
}

/// Figures of a snapshot, each absent when not known (a snapshot taken by a script
/// knows none, and is saved with `"stats": {}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taken_at_ms: Option<u64>,
    /// From the request to the last node's part, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// From the request to the initiator's word that it had recorded, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_delay_us: Option<u64>,
    /// How many markers the snapshot sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub markers: Option<u64>,
    /// How many transfers it caught in transit, on every channel together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_in_transit: Option<u64>,
    /// The size of what it recorded in transit, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in_transit: Option<u64>,
}

/// The figures a coordinator measures; the rest stay unknown.
impl From<&SnapshotStats> for Stats {
    fn from(stats: &SnapshotStats) -> Self {
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Stats {
            latency_us: Some(micros(stats.duration)),
            start_delay_us: Some(micros(stats.start_delay)),
            messages_in_transit: Some(stats.messages_in_transit),
            bytes_in_transit: stats.bytes_in_transit,
            ..Stats::default()
        }
    }
}

/// [`Stats`] in JSON leaves out what is unknown; postcard, which has no field names,
/// writes every figure (unknown or not), in a fixed order.
mod stats_encoding {
    use super::Stats;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Every figure, none left out.
    #[derive(Serialize, Deserialize)]
    struct Compact {
        taken_at_ms: Option<u64>,
        latency_us: Option<u64>,
        start_delay_us: Option<u64>,
        markers: Option<u64>,
        messages_in_transit: Option<u64>,
        bytes_in_transit: Option<u64>,
    }

    pub fn serialize<S: Serializer>(stats: &Stats, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return stats.serialize(serializer);
        }
        let &Stats {
            taken_at_ms,
            latency_us,
            start_delay_us,
            markers,
            messages_in_transit,
            bytes_in_transit,
        } = stats;
        Compact {
            taken_at_ms,
            latency_us,
            start_delay_us,
            markers,
            messages_in_transit,
            bytes_in_transit,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Stats, D::Error> {
        if deserializer.is_human_readable() {
            return Stats::deserialize(deserializer);
        }
        let Compact {
            taken_at_ms,
            latency_us,
            start_delay_us,
            markers,
            messages_in_transit,
            bytes_in_transit,
        } = Compact::deserialize(deserializer)?;
        Ok(Stats {
            taken_at_ms,
            latency_us,
            start_delay_us,
            markers,
            messages_in_transit,
            bytes_in_transit,
        })
    }
}

/// Why a [`BankSnapshot`] cannot be saved: one of its channels is not recorded at both
/// ends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FromBankError {
    /// A channel names a node that has no local snapshot.
    #[error("channel ({from} -> {to}) names node {node}, which has no local snapshot")]
    MissingNode {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The node without a local snapshot.
        node: NodeId,
    },
    /// An end of a channel did not record what it should have.
    #[error("channel ({from} -> {to}): {what}")]
    Unrecorded {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// What is missing.
        what: &'static str,
    },
    /// The receiver's record of a channel counts other than the transfers it holds.
    #[error(
        "channel ({from} -> {to}) counts {messages} transfers in transit but holds {transfers}"
    )]
    Count {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The count the record carries.
        messages: u64,
        /// The transfers it holds.
        transfers: usize,
    },
}

impl SavedSnapshot {
    /// The saved form of `snapshot`, a snapshot of a bank holding `total`, with the
    /// figures known of it.
    ///
    /// Every channel that either end knows of is saved; it must be recorded at both
    /// ends (sent at the sender, received and in transit at the receiver).
    pub fn from_bank(
        snapshot: &BankSnapshot,
        total: u64,
        stats: Stats,
    ) -> Result<SavedSnapshot, FromBankError> {
        let mut pairs = BTreeSet::new();
        for local in snapshot.nodes() {
            pairs.extend(local.sent.keys().map(|&to| (local.node, to)));
            pairs.extend(local.channels.keys().map(|&from| (from, local.node)));
            pairs.extend(local.received.keys().map(|&from| (from, local.node)));
        }
        let mut channels = Vec::with_capacity(pairs.len());
        for (from, to) in pairs {
            let local = |node| {
                snapshot
                    .node(node)
                    .ok_or(FromBankError::MissingNode { from, to, node })
            };
            let unrecorded = |what| FromBankError::Unrecorded { from, to, what };
            let (sender, receiver) = (local(from)?, local(to)?);
            let sent = *sender
                .sent
                .get(&to)
                .ok_or(unrecorded("its sender recorded no count of transfers sent"))?;
            let received = *receiver.received.get(&from).ok_or(unrecorded(
                "its receiver recorded no count of transfers taken",
            ))?;
            let record = receiver
                .channels
                .get(&from)
                .ok_or(unrecorded("its receiver recorded nothing in transit"))?;
            let transfers: Vec<u64> = record.record.0.iter().map(|t| t.0).collect();
            if usize::try_from(record.messages).ok() != Some(transfers.len()) {
                return Err(FromBankError::Count {
                    from,
                    to,
                    messages: record.messages,
                    transfers: transfers.len(),
                });
            }
            channels.push(SavedChannel {
                from,
                to,
                amount: record.record.sum(),
                transfers,
                sent,
                received,
            });
        }
        Ok(SavedSnapshot {
            snapshot: snapshot.id(),
            total,
            nodes: snapshot
                .nodes()
                .map(|local| SavedNode {
                    id: local.node,
                    balance: local.state,
                })
                .collect(),
            channels,
            stats,
        })
    }

    /// The snapshot as the bank holds one, for restoring the bank from it or printing
    /// it with [`format_snapshot`]. Refused when the nodes and channels are not
    /// those of a bank (see [`check`]; the counts and amounts are not checked).
    pub fn to_bank(&self) -> Result<BankSnapshot, CheckError> {
        check_structure(self)?;
        let mut locals: BTreeMap<NodeId, LocalSnapshot<u64, InTransit>> = self
            .nodes
            .iter()
            .map(|node| {
                let local = LocalSnapshot {
                    id: self.snapshot,
                    node: node.id,
                    state: node.balance,
                    channels: BTreeMap::new(),
                    sent: BTreeMap::new(),
                    received: BTreeMap::new(),
                };
                (node.id, local)
            })
            .collect();
        for channel in &self.channels {
            if let Some(sender) = locals.get_mut(&channel.from) {
                sender.sent.insert(channel.to, channel.sent);
            }
            if let Some(receiver) = locals.get_mut(&channel.to) {
                let transfers =
                    InTransit(channel.transfers.iter().copied().map(Transfer).collect());
                let record = ChannelRecord {
                    messages: u64::try_from(transfers.0.len()).unwrap_or(u64::MAX),
                    record: transfers,
                };
                receiver.channels.insert(channel.from, record);
                receiver.received.insert(channel.from, channel.received);
            }
        }
        // The structure is checked: the nodes are distinct and all of this snapshot.
        GlobalSnapshot::from_locals(self.snapshot, locals.into_values()).map_err(|error| {
            CheckError::Assembly {
                reason: error.to_string(),
            }
        })
    }

    /// Each node's recorded balance: what a restored node starts with.
    pub fn balances(&self) -> BTreeMap<NodeId, u64> {
        self.nodes
            .iter()
            .map(|node| (node.id, node.balance))
            .collect()
    }

    /// Each channel's transfers in transit, in the order they arrived: what a restored
    /// bank puts back on its channels before anything else. Empty channels included.
    pub fn in_flight(&self) -> BTreeMap<(NodeId, NodeId), Vec<Transfer>> {
        self.channels
            .iter()
            .map(|channel| {
                let transfers = channel.transfers.iter().copied().map(Transfer).collect();
                ((channel.from, channel.to), transfers)
            })
            .collect()
    }

    /// The name of its files, without extension: `<initiator>-<seq>`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.snapshot.initiator, self.snapshot.seq)
    }
}

/// Why a saved snapshot does not hold: which node or channel, and how.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    /// No node is listed.
    #[error("the snapshot lists no node")]
    NoNodes,
    /// A node is listed twice.
    #[error("node {0} is listed twice")]
    DuplicateNode(NodeId),
    /// The nodes are not by increasing id.
    #[error("node {node} is listed after node {after}: nodes go by increasing id")]
    NodeOrder {
        /// The node out of place.
        node: NodeId,
        /// The node listed before it.
        after: NodeId,
    },
    /// The initiator is not one of the nodes.
    #[error("the initiator, node {0}, is not listed")]
    UnknownInitiator(NodeId),
    /// A channel leads from a node to itself.
    #[error("channel ({0} -> {0}) joins a node to itself")]
    SelfChannel(NodeId),
    /// A channel names a node that is not listed.
    #[error("channel ({from} -> {to}) names node {node}, which is not listed")]
    UnknownNode {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The node not listed.
        node: NodeId,
    },
    /// A channel is listed twice.
    #[error("channel ({from} -> {to}) is listed twice")]
    DuplicateChannel {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// The channels are not by increasing (from, to).
    #[error(
        "channel ({from} -> {to}) is listed after channel ({after_from} -> {after_to}): channels go by increasing (from, to)"
    )]
    ChannelOrder {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The sender of the channel listed before it.
        after_from: NodeId,
        /// The receiver of the channel listed before it.
        after_to: NodeId,
    },
    /// A channel of a complete graph is not listed ([`check_complete`]).
    #[error(
        "channel ({from} -> {to}) is missing: the topology is not complete, and a script runs on a complete graph"
    )]
    MissingChannel {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
    },
    /// The cut is not consistent: more taken from a channel than was put on it.
    #[error(
        "channel ({from} -> {to}): not a consistent cut: {received} transfers taken before the cut, but only {sent} sent"
    )]
    ReceivedMoreThanSent {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// Transfers sent before the cut.
        sent: u64,
        /// Transfers taken before the cut.
        received: u64,
    },
    /// The cut is not consistent: the transfers in transit are not those sent and not
    /// yet taken.
    #[error(
        "channel ({from} -> {to}): not a consistent cut: {sent} transfers sent and {received} taken before the cut leave {expected} in transit, but {recorded} are recorded"
    )]
    InTransit {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// Transfers sent before the cut.
        sent: u64,
        /// Transfers taken before the cut.
        received: u64,
        /// Transfers that must be in transit.
        expected: u64,
        /// Transfers recorded in transit.
        recorded: usize,
    },
    /// A channel's amount is not the sum of its transfers.
    #[error("channel ({from} -> {to}): amount {amount} is not the sum of its transfers, {sum}")]
    Amount {
        /// The channel's sender.
        from: NodeId,
        /// The channel's receiver.
        to: NodeId,
        /// The amount saved.
        amount: u64,
        /// The sum of the transfers.
        sum: u128,
    },
    /// The snapshot accounts for more money than the bank holds.
    #[error("money made: the snapshot accounts for {counted} but the bank holds {total}")]
    MoneyMade {
        /// The balances and the amounts in transit, together.
        counted: u128,
        /// The money the bank holds.
        total: u64,
    },
    /// The snapshot accounts for less money than the bank holds.
    #[error("money lost: the snapshot accounts for {counted} but the bank holds {total}")]
    MoneyLost {
        /// The balances and the amounts in transit, together.
        counted: u128,
        /// The money the bank holds.
        total: u64,
    },
    /// The nodes' parts do not make a global snapshot.
    #[error("{reason}")]
    Assembly {
        /// Why.
        reason: String,
    },
}

/// The nodes are distinct and by increasing id, the initiator is one of them, and
/// the channels are those of a bank (one each way between every two nodes), each
/// once, by increasing (from, to).
fn check_structure(saved: &SavedSnapshot) -> Result<(), CheckError> {
    let mut ids = BTreeSet::new();
    for node in &saved.nodes {
        if !ids.insert(node.id) {
            return Err(CheckError::DuplicateNode(node.id));
        }
    }
    for pair in saved.nodes.windows(2) {
        if let [before, node] = pair
            && node.id < before.id
        {
            return Err(CheckError::NodeOrder {
                node: node.id,
                after: before.id,
            });
        }
    }
    if ids.is_empty() {
        return Err(CheckError::NoNodes);
    }
    if !ids.contains(&saved.snapshot.initiator) {
        return Err(CheckError::UnknownInitiator(saved.snapshot.initiator));
    }
    let mut pairs = BTreeSet::new();
    for &SavedChannel { from, to, .. } in &saved.channels {
        if from == to {
            return Err(CheckError::SelfChannel(from));
        }
        for node in [from, to] {
            if !ids.contains(&node) {
                return Err(CheckError::UnknownNode { from, to, node });
            }
        }
        if !pairs.insert((from, to)) {
            return Err(CheckError::DuplicateChannel { from, to });
        }
    }
    for pair in saved.channels.windows(2) {
        if let [before, channel] = pair
            && (channel.from, channel.to) < (before.from, before.to)
        {
            return Err(CheckError::ChannelOrder {
                from: channel.from,
                to: channel.to,
                after_from: before.from,
                after_to: before.to,
            });
        }
    }
    Ok(())
}

/// Checks that a saved snapshot's topology is complete: a channel each way between
/// every two nodes, as the bank's script mode builds it (a snapshot of `master load`
/// may have any strongly connected topology). Names the first channel missing.
pub fn check_complete(saved: &SavedSnapshot) -> Result<(), CheckError> {
    check_structure(saved)?;
    // The channels listed are distinct and in order: the first pair that does not
    // come up in its turn is missing. The walk stops there, so it takes no longer
    // than the list.
    let mut listed = saved.channels.iter().map(|c| (c.from, c.to)).peekable();
    for from in saved.nodes.iter().map(|n| n.id) {
        for to in saved.nodes.iter().map(|n| n.id) {
            if from == to {
                continue;
            }
            if listed.next_if_eq(&(from, to)).is_none() {
                return Err(CheckError::MissingChannel { from, to });
            }
        }
    }
    Ok(())
}

/// Checks that a saved snapshot holds: its nodes and channels are those of a bank,
/// its cut is consistent (on every channel, the transfers taken before the cut and
/// those in transit are those sent before it), every amount is the sum of its
/// transfers, and the balances and the amounts in transit add up to the bank's total.
/// Says of the first failure which node or channel fails, and why.
pub fn check(saved: &SavedSnapshot) -> Result<(), CheckError> {
    check_structure(saved)?;
    let mut counted: u128 = saved.nodes.iter().map(|n| u128::from(n.balance)).sum();
    for channel in &saved.channels {
        let SavedChannel {
            from,
            to,
            amount,
            sent,
            received,
            ..
        } = *channel;
        let Some(expected) = sent.checked_sub(received) else {
            return Err(CheckError::ReceivedMoreThanSent {
                from,
                to,
                sent,
                received,
            });
        };
        let recorded = channel.transfers.len();
        if u64::try_from(recorded).ok() != Some(expected) {
            return Err(CheckError::InTransit {
                from,
                to,
                sent,
                received,
                expected,
                recorded,
            });
        }
        let sum: u128 = channel.transfers.iter().map(|&t| u128::from(t)).sum();
        if sum != u128::from(amount) {
            return Err(CheckError::Amount {
                from,
                to,
                amount,
                sum,
            });
        }
        counted += sum;
    }
    let total = saved.total;
    match counted.cmp(&u128::from(total)) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(CheckError::MoneyMade { counted, total }),
        std::cmp::Ordering::Less => Err(CheckError::MoneyLost { counted, total }),
    }
}

/// Why a saved snapshot could not be written. Each names the file or directory.
#[derive(Debug, Error)]
pub enum SaveError {
    /// The directory could not be made.
    #[error("cannot create the directory {}", .dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The snapshot could not be encoded as JSON.
    #[error("cannot encode {} as JSON", .path.display())]
    Json {
        /// The file it was for.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The snapshot could not be encoded as postcard.
    #[error("cannot encode {} as postcard", .path.display())]
    Postcard {
        /// The file it was for.
        path: PathBuf,
        /// Why.
        #[source]
        source: postcard::Error,
    },
    /// The encoded snapshot is larger than [`load`] would read.
    #[error("{}: {size} bytes is more than the {limit} a saved snapshot may take", .path.display())]
    TooLarge {
        /// The file it was for.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit, [`MAX_FILE_SIZE`].
        limit: u64,
    },
    /// The file could not be written, flushed to disk or put in place.
    #[error("cannot write {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Writes `saved` to `dir` (made if missing) as `<initiator>-<seq>.json`, pretty-printed
/// JSON ending in a newline, and `<initiator>-<seq>.postcard`, the same snapshot in
/// postcard. Returns their paths, JSON first.
///
/// Each file is written whole to a temporary file in `dir`, flushed to disk, then
/// renamed over its name, and the directory is flushed: a file of that name is the
/// old one or the new one, never part of one, and no temporary file is left.
pub fn save(dir: &Path, saved: &SavedSnapshot) -> Result<(PathBuf, PathBuf), SaveError> {
    std::fs::create_dir_all(dir).map_err(|source| SaveError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let stem = saved.file_stem();
    let json_path = dir.join(format!("{stem}.json"));
    let postcard_path = dir.join(format!("{stem}.postcard"));
    let mut json = serde_json::to_vec_pretty(saved).map_err(|source| SaveError::Json {
        path: json_path.clone(),
        source,
    })?;
    json.push(b'\n');
    let postcard = postcard::to_allocvec(saved).map_err(|source| SaveError::Postcard {
        path: postcard_path.clone(),
        source,
    })?;
    write_atomically(dir, &json_path, &json)?;
    write_atomically(dir, &postcard_path, &postcard)?;
    // The renames last only once the directory is on disk.
    let sync_dir = std::fs::File::open(dir).and_then(|d| d.sync_all());
    sync_dir.map_err(|source| SaveError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok((json_path, postcard_path))
}

/// Writes `bytes` to a temporary file in `dir`, flushes it to disk and renames it to
/// `path`.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > MAX_FILE_SIZE {
        return Err(SaveError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_FILE_SIZE,
        });
    }
    let failed = |source| SaveError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    // Dropped on failure, the temporary file is removed.
    file.persist(path).map_err(|error| failed(error.error))?;
    Ok(())
}

/// How a saved snapshot is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON (UTF-8).
    Json,
    /// postcard.
    Postcard,
}

impl Encoding {
    /// The encoding of the file at `path` that holds `bytes`: by its extension
    /// (`.json`, `.postcard`, in any case), and for any other by what it holds: JSON
    /// if its first byte other than whitespace is `{`, postcard otherwise.
    pub fn of(path: &Path, bytes: &[u8]) -> Encoding {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extension.eq_ignore_ascii_case("json") {
            Encoding::Json
        } else if extension.eq_ignore_ascii_case("postcard") {
            Encoding::Postcard
        } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Encoding::Json
        } else {
            Encoding::Postcard
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Json => "JSON",
            Encoding::Postcard => "postcard",
        })
    }
}

/// Why bytes are not a saved snapshot.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Not a saved snapshot in JSON.
    #[error("not a saved snapshot in JSON")]
    Json(#[source] serde_json::Error),
    /// Not a saved snapshot in postcard.
    #[error("not a saved snapshot in postcard")]
    Postcard(#[source] postcard::Error),
    /// A saved snapshot in postcard, followed by more bytes.
    #[error("not a saved snapshot in postcard: {0} bytes follow it")]
    Trailing(usize),
}

/// The saved snapshot that `bytes` encode. Never panics, whatever the bytes. A length
/// that the bytes claim is not trusted: a list is given room for at most a megabyte
/// ahead of what it holds, so decoding takes memory in proportion to the bytes, not
/// to what they claim.
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<SavedSnapshot, DecodeError> {
    match encoding {
        Encoding::Json => serde_json::from_slice(bytes).map_err(DecodeError::Json),
        Encoding::Postcard => {
            let (saved, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::Postcard)?;
            if rest.is_empty() {
                Ok(saved)
            } else {
                Err(DecodeError::Trailing(rest.len()))
            }
        }
    }
}

/// Why a saved snapshot could not be read. Each begins with the file's path.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("{}: cannot read it", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("{}: not a regular file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than a saved snapshot may be.
    #[error("{}: larger than the {limit} bytes a saved snapshot may take", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, [`MAX_FILE_SIZE`].
        limit: u64,
    },
    /// The file does not hold a saved snapshot.
    #[error("{}", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: DecodeError,
    },
}

/// Reads the saved snapshot at `path`, JSON or postcard as [`Encoding::of`] tells.
///
/// A file larger than [`MAX_FILE_SIZE`] is refused before it is read, and reading
/// stops past that size should it grow meanwhile. The snapshot is decoded, not
/// checked: see [`check`].
pub fn load(path: &Path) -> Result<SavedSnapshot, LoadError> {
    let unreadable = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || LoadError::TooLarge {
        path: path.to_path_buf(),
        limit: MAX_FILE_SIZE,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if metadata.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_FILE_SIZE {
        return Err(too_large());
    }
    decode(&bytes, Encoding::of(path, &bytes)).map_err(|source| LoadError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// `saved` as one line of JSON, without a newline: the shape of the files, with no
/// whitespace.
pub fn to_json_line(saved: &SavedSnapshot) -> String {
    // A struct of numbers, vectors and maps with string keys always encodes.
    serde_json::to_string(saved).unwrap_or_default()
}

/// `lines` as one quoted Graphviz string, its lines apart: in each, backslashes and
/// double quotes are escaped; between them goes `\n`, Graphviz's line break.
fn quote(lines: &[&str]) -> String {
    let mut quoted = String::from("\"");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            quoted.push_str("\\n");
        }
        for c in line.chars() {
            if matches!(c, '"' | '\\') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
    }
    quoted.push('"');
    quoted
}

/// `saved` as a Graphviz digraph, ending in a newline: a node per bank node,
/// labelled with its id and balance, and an edge per channel, labelled with the money
/// in transit on it and the number of transfers; the graph is named and labelled
/// after the snapshot. The same snapshot always gives the same text.
///
/// ```text
/// digraph "snapshot 1-0" {
///   label="snapshot 1-0 (initiator 1, seq 0): total 1500";
///   node [shape=box];
///   "1" [label="Node 1\n300"];
///   "2" [label="Node 2\n1100"];
///   "1" -> "2" [label="0 (0 transfers)"];
///   "2" -> "1" [label="100 (1 transfer)"];
/// }
/// ```
pub fn to_dot(saved: &SavedSnapshot) -> String {
    let SnapshotId { initiator, seq } = saved.snapshot;
    let name = format!("snapshot {}", saved.file_stem());
    let mut dot = format!("digraph {} {{\n", quote(&[&name]));
    let label = format!(
        "{name} (initiator {initiator}, seq {seq}): total {}",
        saved.total
    );
    let _ = writeln!(dot, "  label={};", quote(&[&label]));
    dot.push_str("  node [shape=box];\n");
    for node in &saved.nodes {
        let id = node.id.to_string();
        let (name, balance) = (format!("Node {id}"), node.balance.to_string());
        let _ = writeln!(
            dot,
            "  {} [label={}];",
            quote(&[&id]),
            quote(&[&name, &balance])
        );
    }
    for channel in &saved.channels {
        let (from, to) = (channel.from.to_string(), channel.to.to_string());
        let count = channel.transfers.len();
        // An empty channel is drawn faint, without a label, so that the money in
        // flight stands out.
        let attributes = if count == 0 {
            "color=gray70".to_string()
        } else {
            let plural = if count == 1 { "" } else { "s" };
            let label = format!("{} ({count} transfer{plural})", channel.amount);
            format!("label={}, penwidth=2", quote(&[&label]))
        };
        let _ = writeln!(
            dot,
            "  {} -> {} [{attributes}];",
            quote(&[&from]),
            quote(&[&to])
        );
    }
    dot.push_str("}\n");
    dot
}

/// How a saved snapshot is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The block `PrintSnapshot` prints: node states, then channel states.
    #[default]
    Text,
    /// One line of JSON, the shape of the saved files.
    Json,
    /// A Graphviz digraph.
    Dot,
}

/// `saved` printed in `format`, ending in a newline. Refused when its nodes and
/// channels are not those of a bank (the text goes through a [`BankSnapshot`]).
pub fn render(saved: &SavedSnapshot, format: Format) -> Result<String, CheckError> {
    Ok(match format {
        Format::Text => format_snapshot(&saved.to_bank()?),
        Format::Json => to_json_line(saved) + "\n",
        Format::Dot => to_dot(saved),
    })
}

/// How `master inspect` ends, as its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectStatus {
    /// The file holds a snapshot that holds; it was printed.
    Holds = 0,
    /// The file holds a snapshot that fails its check; nothing was printed.
    Fails = 1,
    /// The file could not be read or decoded, or the output could not be written.
    Unusable = 2,
}

/// `master inspect FILE`: loads the saved snapshot at `path`, checks it, and if it
/// holds prints it in `format` on `out`.
///
/// A snapshot that fails its check is not printed: `err` gets
/// `master inspect: FILE: REASON`, as it does for a file that cannot be read or
/// decoded. Output that nobody reads any more (a closed pipe) is not an error.
pub fn inspect(
    path: &Path,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> InspectStatus {
    let saved = match load(path) {
        Ok(saved) => saved,
        Err(error) => {
            let _ = writeln!(err, "master inspect: {}", describe(&error.into()));
            return InspectStatus::Unusable;
        }
    };
    let text = match check(&saved).and_then(|()| render(&saved, format)) {
        Ok(text) => text,
        Err(reason) => {
            let _ = writeln!(err, "master inspect: {}: {reason}", path.display());
            return InspectStatus::Fails;
        }
    };
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => InspectStatus::Holds,
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => InspectStatus::Holds,
        Err(error) => {
            let _ = writeln!(err, "master inspect: cannot write the output: {error}");
            InspectStatus::Unusable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two nodes; 100 in transit on 2 -> 1 as two transfers.
    fn two_nodes() -> SavedSnapshot {
        SavedSnapshot {
            snapshot: SnapshotId {
                initiator: NodeId(1),
                seq: 0,
            },
            total: 1500,
            nodes: vec![
                SavedNode {
                    id: NodeId(1),
                    balance: 300,
                },
                SavedNode {
                    id: NodeId(2),
                    balance: 1100,
                },
            ],
            channels: vec![
                SavedChannel {
                    from: NodeId(1),
                    to: NodeId(2),
                    amount: 0,
                    transfers: vec![],
                    sent: 4,
                    received: 4,
                },
                SavedChannel {
                    from: NodeId(2),
                    to: NodeId(1),
                    amount: 100,
                    transfers: vec![60, 40],
                    sent: 7,
                    received: 5,
                },
            ],
            stats: Stats::default(),
        }
    }

    #[test]
    fn unknown_figures_are_left_out_of_json_and_kept_in_postcard() {
        let mut saved = two_nodes();
        assert!(to_json_line(&saved).ends_with(r#""stats":{}}"#));
        saved.stats = Stats {
            taken_at_ms: Some(1),
            latency_us: None,
            start_delay_us: Some(3),
            markers: Some(4),
            messages_in_transit: None,
            bytes_in_transit: Some(6),
        };
        let json = to_json_line(&saved);
        assert!(
            json.ends_with(
                r#""stats":{"taken_at_ms":1,"start_delay_us":3,"markers":4,"bytes_in_transit":6}}"#
            ),
            "{json}"
        );
        assert_eq!(decode(json.as_bytes(), Encoding::Json).unwrap(), saved);
        let bytes = postcard::to_allocvec(&saved).unwrap();
        assert_eq!(decode(&bytes, Encoding::Postcard).unwrap(), saved);
    }

    #[test]
    fn json_without_stats_has_none() {
        let json = to_json_line(&two_nodes()).replace(r#","stats":{}"#, "");
        assert_eq!(
            decode(json.as_bytes(), Encoding::Json).unwrap(),
            two_nodes()
        );
    }

    #[test]
    fn postcard_with_bytes_after_the_snapshot_is_refused() {
        let mut bytes = postcard::to_allocvec(&two_nodes()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode(&bytes, Encoding::Postcard),
            Err(DecodeError::Trailing(1))
        ));
    }

    #[test]
    fn the_encoding_goes_by_extension_then_by_content() {
        let json = Path::new("a.JSON");
        let postcard = Path::new("a.postcard");
        let other = Path::new("a.snap");
        assert_eq!(Encoding::of(json, b"\x00"), Encoding::Json);
        assert_eq!(Encoding::of(postcard, b"{"), Encoding::Postcard);
        assert_eq!(Encoding::of(other, b" \n\t{"), Encoding::Json);
        assert_eq!(Encoding::of(other, b"\x01{"), Encoding::Postcard);
        assert_eq!(Encoding::of(other, b""), Encoding::Postcard);
    }

    #[test]
    fn a_bank_snapshot_saved_and_turned_back_is_the_same() {
        let saved = two_nodes();
        check(&saved).unwrap();
        let bank = saved.to_bank().unwrap();
        bank.check_cut().unwrap();
        assert_eq!(
            SavedSnapshot::from_bank(&bank, 1500, Stats::default()).unwrap(),
            saved
        );
        assert_eq!(
            format_snapshot(&bank),
            "---Node states\nnode 1 = 300\nnode 2 = 1100\n---Channel states\n\
             channel (1 -> 2) = 0\nchannel (2 -> 1) = 100\n"
        );
    }

    #[test]
    fn a_channel_known_to_one_end_only_is_not_saved() {
        let mut bank = two_nodes().to_bank().unwrap();
        let mut locals: Vec<_> = bank.nodes().cloned().collect();
        locals[0].sent.clear();
        bank = GlobalSnapshot::from_locals(bank.id(), locals).unwrap();
        assert_eq!(
            SavedSnapshot::from_bank(&bank, 1500, Stats::default()),
            Err(FromBankError::Unrecorded {
                from: NodeId(1),
                to: NodeId(2),
                what: "its sender recorded no count of transfers sent",
            })
        );
    }

    #[test]
    fn a_missing_channel_is_named() {
        let mut saved = two_nodes();
        saved.channels.remove(0);
        assert_eq!(
            check_complete(&saved),
            Err(CheckError::MissingChannel {
                from: NodeId(1),
                to: NodeId(2)
            })
        );
        assert_eq!(check(&saved), Ok(()), "any topology holds");
        saved = two_nodes();
        saved.channels.pop();
        assert_eq!(
            check_complete(&saved),
            Err(CheckError::MissingChannel {
                from: NodeId(2),
                to: NodeId(1)
            })
        );
    }

    #[test]
    fn the_structure_is_checked_before_the_counts() {
        let mut saved = two_nodes();
        saved.nodes.swap(0, 1);
        assert_eq!(
            check(&saved),
            Err(CheckError::NodeOrder {
                node: NodeId(1),
                after: NodeId(2)
            })
        );
        saved = two_nodes();
        saved.channels.swap(0, 1);
        assert!(matches!(
            check(&saved),
            Err(CheckError::ChannelOrder { .. })
        ));
        saved = two_nodes();
        saved.channels[1].to = NodeId(2);
        assert_eq!(check(&saved), Err(CheckError::SelfChannel(NodeId(2))));
        saved = two_nodes();
        saved.snapshot.initiator = NodeId(9);
        assert_eq!(check(&saved), Err(CheckError::UnknownInitiator(NodeId(9))));
        saved = two_nodes();
        saved.nodes.clear();
        saved.channels.clear();
        assert_eq!(check(&saved), Err(CheckError::NoNodes));
        saved = two_nodes();
        saved.nodes.push(saved.nodes[0]);
        assert_eq!(check(&saved), Err(CheckError::DuplicateNode(NodeId(1))));
        saved = two_nodes();
        saved.channels.push(saved.channels[1].clone());
        assert_eq!(
            check(&saved),
            Err(CheckError::DuplicateChannel {
                from: NodeId(2),
                to: NodeId(1)
            })
        );
    }

    #[test]
    fn sums_past_u64_do_not_overflow() {
        let mut saved = two_nodes();
        saved.channels[1].transfers = vec![u64::MAX, u64::MAX];
        assert_eq!(
            check(&saved),
            Err(CheckError::Amount {
                from: NodeId(2),
                to: NodeId(1),
                amount: 100,
                sum: 2 * u128::from(u64::MAX),
            })
        );
        saved = two_nodes();
        saved.nodes[0].balance = u64::MAX;
        saved.nodes[1].balance = u64::MAX;
        assert!(matches!(check(&saved), Err(CheckError::MoneyMade { .. })));
    }

    #[test]
    fn a_snapshot_that_fails_its_check_is_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let mut saved = two_nodes();
        saved.total = 1;
        let (json, _) = save(dir.path(), &saved).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            inspect(&json, Format::Text, &mut out, &mut err),
            InspectStatus::Fails
        );
        assert!(out.is_empty());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            format!(
                "master inspect: {}: money made: the snapshot accounts for 1500 but the bank holds 1\n",
                json.display()
            )
        );
    }
}
