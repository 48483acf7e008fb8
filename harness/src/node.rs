//! What a node does ([`Work`]), and its loop: a free-running [`Node`] around an
//! [`Account`], on its own thread.
use bank_app::account::InTransit;
use bank_app::live::cluster::NodeMain;

use crate::money::{AMOUNT, OPENING};
use crate::wire::{Control, Wire};
use crate::{Account, Transfer};
use snapshot_core::{Endpoint, Event, Frame, Node, NodeError, NodeId, Transport, TransportError};
use std::time::{Duration, Instant};

/// What a node does besides reacting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Nothing: it handles what comes.
    Idle,
    /// After `Start`, sends `send` transfers, round robin over its neighbours, as fast
    /// as it can, looking at what has arrived every `batch` transfers; reports `Done`
    /// once it has sent them all and handled `expected`.
    Transfers {
        /// How many it sends.
        send: u64,
        /// How many it takes in before it is done.
        expected: u64,
        /// How many it sends between two looks at what has arrived.
        batch: u64,
    },
    /// After `Start`, sends `batch` transfers every `every`, round robin over its
    /// neighbours, until stopped, and handles what comes in between: a background
    /// load.
    Background {
        /// Transfers per round.
        batch: u32,
        /// The time between the starts of two rounds.
        every: Duration,
    },
}

/// How a node's loop ends: with its account, or with the error that stopped it.
pub(crate) type NodeResult = Result<Account, NodeError>;

/// What a node does with a failed step: a peer node that has gone means the run is
/// ending (it got `Stop` first), so the node stops sending and waits for its own;
/// the driver gone, or nothing left to receive, ends it at once.
enum Failure {
    Quiet,
    End,
    Fail(NodeError),
}

fn classify(error: NodeError) -> Failure {
    match error {
        NodeError::Transport(TransportError::Disconnected(Endpoint::Node(_))) => Failure::Quiet,
        NodeError::Transport(
            TransportError::Disconnected(Endpoint::Role(0)) | TransportError::Closed,
        ) => Failure::End,
        other => Failure::Fail(other),
    }
}

/// One node at work: a free-running [`Node`] and its transport, with where its
/// [`Work`] stands.
struct Worker<T> {
    node: Node<Account>,
    t: T,
    work: Work,
    neighbours: Vec<NodeId>,
    /// The neighbour the next transfer goes to.
    next: usize,
    sent: u64,
    started: bool,
    /// A peer has gone: the run is ending, so nothing more is sent.
    quiet: bool,
    done: bool,
    next_round: Instant,
}

impl<T: Transport<Wire>> Worker<T> {
    /// Sends `count` transfers, round robin.
    fn transfer(&mut self, count: u64) -> Result<(), NodeError> {
        for _ in 0..count {
            let Some(&to) = self.neighbours.get(self.next) else {
                return Ok(());
            };
            if !self.node.process_mut().withdraw(AMOUNT) {
                return Err(TransportError::Protocol(format!(
                    "{} has no money left to transfer",
                    self.node.id()
                ))
                .into());
            }
            self.node.send(&mut self.t, to, Transfer(AMOUNT))?;
            self.next = (self.next + 1) % self.neighbours.len();
            self.sent += 1;
        }
        Ok(())
    }

    fn report(&mut self, control: Control) -> Result<(), NodeError> {
        self.t.send(Endpoint::Role(0), Frame::Control(control))?;
        Ok(self.t.flush()?)
    }

    /// Does one round of work and handles what comes meanwhile; `false` once told
    /// to stop.
    fn step(&mut self) -> Result<bool, NodeError> {
        let event = match self.work {
            Work::Transfers { send, batch, .. }
                if self.started && !self.quiet && self.sent < send =>
            {
                self.transfer(batch.min(send - self.sent))?;
                // Takes in up to twice what it has just sent, so that the nodes keep
                // pace with each other and a marker does not wait behind a backlog;
                // a bounded number of looks, so that events coming without end
                // cannot keep it from sending either.
                let limit = self.node.process().handled + 2 * batch;
                for _ in 0..2 * batch.div_ceil(Node::<Account>::POLL_BURST as u64) + 8 {
                    let before = self.node.process().handled;
                    let event = self.node.poll_event(&mut self.t, Duration::ZERO)?;
                    let drained = event.is_none();
                    if let Some(event) = event
                        && !self.on_event(event)?
                    {
                        return Ok(false);
                    }
                    // Fewer than a burst and no event: nothing more had arrived.
                    let handled = self.node.process().handled;
                    if handled >= limit
                        || (drained && handled - before < Node::<Account>::POLL_BURST as u64)
                    {
                        break;
                    }
                }
                None
            }
            // Everything is sent: handles what comes, and looks again whether it is
            // done every millisecond at least.
            Work::Transfers { .. } if self.started && !self.done => self
                .node
                .poll_event(&mut self.t, Duration::from_millis(1))?,
            Work::Background { batch, every } if self.started && !self.quiet => {
                let now = Instant::now();
                if now >= self.next_round {
                    self.next_round = now + every;
                    self.transfer(u64::from(batch))?;
                }
                let wait = self.next_round.saturating_duration_since(now);
                self.node.poll_event(&mut self.t, wait)?
            }
            _ => Some(self.node.next_event(&mut self.t)?),
        };
        if let Some(event) = event
            && !self.on_event(event)?
        {
            return Ok(false);
        }
        if let Work::Transfers { send, expected, .. } = self.work
            && self.started
            && !self.done
            && self.sent == send
            && self.node.process().handled == expected
        {
            self.done = true;
            self.report(Control::Done)?;
        }
        Ok(true)
    }

    /// Acts on what the node handed over; `false` once told to stop.
    fn on_event(&mut self, event: Event<u64, InTransit, Control>) -> Result<bool, NodeError> {
        match event {
            Event::Control { control, .. } => match control {
                Control::Start => {
                    self.started = true;
                    self.next_round = Instant::now();
                }
                Control::Initiate => {
                    if let Some(local) = self.node.initiate(&mut self.t)?.1.completed {
                        self.report(Control::Local(Box::new(local)))?;
                    }
                }
                Control::Stop => {
                    // What could not be written now has nowhere to go.
                    let _ = self.t.flush();
                    return Ok(false);
                }
                Control::Local(_) | Control::Done => {
                    return Err(TransportError::Protocol(format!(
                        "{} was sent {control:?}, which only the driver takes",
                        self.node.id()
                    ))
                    .into());
                }
            },
            Event::Completed(local) => self.report(Control::Local(Box::new(local)))?,
            // A node gone: the run is ending, so nothing more is sent.
            Event::Departed(Endpoint::Node(_)) => self.quiet = true,
            // The driver gone: the run is over.
            Event::Departed(_) => return Ok(false),
            // The driver does not abort snapshots.
            Event::Aborted(_) => {}
        }
        Ok(true)
    }
}

/// A node of a run, before its thread starts: its id, its neighbours in the order it
/// sends to them, and its work.
pub(crate) struct NodeSpec {
    pub id: NodeId,
    pub neighbours: Vec<NodeId>,
    pub work: Work,
}

impl NodeMain<Wire> for NodeSpec {
    type Output = NodeResult;

    fn run<T: Transport<Wire> + Send + 'static>(self, transport: T) -> NodeResult {
        node_loop(self.id, self.neighbours, self.work, transport)
    }
}

/// One node's thread: the loop of [`Work`] around a free-running [`Node`].
fn node_loop<T: Transport<Wire>>(
    id: NodeId,
    neighbours: Vec<NodeId>,
    work: Work,
    t: T,
) -> NodeResult {
    let account = Account {
        balance: OPENING,
        handled: 0,
    };
    let mut node = Node::new(id, account);
    for &peer in &neighbours {
        node.add_peer(peer)?;
    }
    let mut worker = Worker {
        node,
        t,
        work,
        neighbours,
        next: 0,
        sent: 0,
        started: false,
        quiet: false,
        done: false,
        next_round: Instant::now(),
    };
    loop {
        match worker.step() {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => match classify(error) {
                Failure::Quiet => worker.quiet = true,
                Failure::End => break,
                Failure::Fail(error) => return Err(error),
            },
        }
    }
    Ok(std::mem::take(worker.node.process_mut()))
}
