//! The application side of a node: what the snapshot protocol needs to know about it.

use crate::NodeId;

/// Messages an application wants to send, collected while it handles one message.
///
/// The driver drains it after every call to [`Process::handle`] and sends its contents
/// in order, counting each one so that snapshots can account for it.
#[derive(Debug)]
pub struct Outbox<M> {
    messages: Vec<(NodeId, M)>,
}

impl<M> Default for Outbox<M> {
    fn default() -> Self {
        Outbox {
            messages: Vec::new(),
        }
    }
}

impl<M> Outbox<M> {
    /// Queues `message` for the outgoing channel to `to`.
    pub fn send(&mut self, to: NodeId, message: M) {
        self.messages.push((to, message));
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Takes the queued messages, oldest first, leaving the outbox empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, (NodeId, M)> {
        self.messages.drain(..)
    }
}

/// An application process whose global state is captured by snapshots.
///
/// A `Process` handles the application messages that arrive on its incoming channels,
/// can describe its own state at any moment, and says how a message caught in transit
/// during a snapshot is written into that channel's record. Recording whole messages
/// is one choice (`Record = Vec<Message>`); folding them is another (a bank keeps only
/// the sum of the money in transit).
///
/// The choice decides whether a snapshot can be [restored](crate::restore): a record
/// that keeps the messages, in order, can put them back on their channel
/// ([`Replay`](crate::Replay)); one that folds them cannot. A process that can be
/// rebuilt from its state implements [`Restore`](crate::Restore).
pub trait Process {
    /// The application messages exchanged between nodes.
    type Message;
    /// What a local snapshot stores of the process itself.
    type State;
    /// What a local snapshot stores of one incoming channel: the messages that were in
    /// transit on it, in whatever form the application wants them.
    type Record: Default;

    /// Handles `message`, taken from the channel `from -> self`. Messages the process
    /// wants to send in reply go into `outbox`.
    fn handle(&mut self, from: NodeId, message: Self::Message, outbox: &mut Outbox<Self::Message>);

    /// Captures the process's state, as of now, for a local snapshot.
    fn capture(&self) -> Self::State;

    /// Adds `message`, caught in transit on the channel `from -> self`, to that
    /// channel's record.
    fn record(&self, record: &mut Self::Record, from: NodeId, message: &Self::Message);
}
