//! A branch under load: a free-running [`Node`] around an [`Account`] on a thread of
//! its own, moving money to its out-neighbours as fast as it can.
//!
//! Between `Start` and `Finish` the node sends transfers in batches: each to an
//! out-neighbour drawn at random, of a random amount from 1 to the run's largest
//! amount, never more than the balance (every transfer of a batch keeps at least 1
//! for each that follows it); a node whose balance is 0 waits for money. Between two
//! batches it takes in what has arrived, through the node, so that markers and the
//! coordinator's requests are handled as they come. On a run bounded by a number of
//! transfers, every batch is first claimed from the run's budget, shared by the
//! nodes, so that exactly that many are sent whoever sends them.

use crate::account::{Account, Transfer};
use crate::live::cluster::{DRIVER, NodeMain};
use crate::live::wire::{Control, Wire};
use crossbeam_channel::Receiver;
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;
use snapshot_core::restore::Restored;
use snapshot_core::{Endpoint, Event, Frame, Node, NodeError, NodeId, Transport, TransportError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a node with nothing to send waits for money before it looks again.
const IDLE_WAIT: Duration = Duration::from_micros(200);

/// How long a node that has finished sending waits between two looks at whether it
/// has taken in all it was sent.
const DRAIN_WAIT: Duration = Duration::from_millis(1);

/// What the nodes of a run share: the count of transfers sent, and the budget of a run
/// bounded by a number of transfers.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Transfers sent so far, all nodes together (added a batch at a time).
    pub sent: AtomicU64,
    /// Transfers still to send, on a run bounded by a number of them.
    pub budget: Option<AtomicU64>,
}

impl Shared {
    /// Claims up to `wanted` transfers of the budget: how many may be sent, and
    /// whether they are the last.
    fn claim(&self, wanted: u64) -> (u64, bool) {
        let Some(budget) = &self.budget else {
            return (wanted, false);
        };
        let mut left = budget.load(Ordering::Relaxed);
        loop {
            let take = wanted.min(left);
            if take == 0 {
                return (0, false);
            }
            match budget.compare_exchange_weak(
                left,
                left - take,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (take, take == left),
                Err(now) => left = now,
            }
        }
    }

    /// Whether the budget is spent.
    fn spent(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }
}

/// How a node begins: new, or restored from a snapshot with the transfers it puts
/// back.
pub(crate) enum Begin {
    /// A new node, its channels added, reporting to the driver.
    Fresh(Node<Account>),
    /// A node restored from a snapshot, reporting to the driver; it puts back what
    /// was in transit on its outgoing channels before anything else.
    Restored(Restored<Account>),
}

/// One node of a load, before its thread starts.
pub(crate) struct LoadNode {
    /// How it begins.
    pub begin: Begin,
    /// Its out-neighbours, in order.
    pub out: Vec<NodeId>,
    /// Its own generator, seeded from the run's seed.
    pub rng: ChaCha8Rng,
    /// Transfers per batch.
    pub batch: u64,
    /// The largest amount of a transfer.
    pub max_amount: u64,
    /// What the nodes share.
    pub shared: Arc<Shared>,
    /// A node frozen from `Start` until the sender of this channel goes.
    pub freeze: Option<Receiver<()>>,
    /// A node that fails once told to start.
    pub crash: bool,
}

/// How a node's thread ends: with its account, or with the error that stopped it.
pub(crate) type NodeResult = Result<Account, NodeError>;

impl NodeMain<Wire> for LoadNode {
    type Output = NodeResult;

    fn run<T: Transport<Wire> + Send + 'static>(self, mut t: T) -> NodeResult {
        let mut sent_to = vec![0u64; self.out.len()];
        let mut replayed = 0;
        let node = match self.begin {
            Begin::Fresh(node) => node,
            Begin::Restored(restored) => {
                for (to, _) in restored.replay() {
                    if let Some(at) = self.out.iter().position(|o| o == to) {
                        sent_to[at] += 1;
                    }
                    replayed += 1;
                }
                restored.resume(&mut t)?
            }
        };
        let mut worker = Worker {
            node,
            t,
            out: self.out,
            sent_to,
            replayed,
            rng: self.rng,
            batch: self.batch.max(1),
            max_amount: self.max_amount.max(1),
            shared: self.shared,
            freeze: self.freeze,
            crash: self.crash,
            started: false,
            finished: false,
            quiet: false,
            expected: None,
            drained: false,
        };
        loop {
            match worker.step() {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => match error {
                    // A peer has gone: the driver ends the run; nothing more is sent.
                    NodeError::Transport(TransportError::Disconnected(Endpoint::Node(_))) => {
                        worker.quiet = true;
                    }
                    // The driver has gone: the run is over.
                    NodeError::Transport(
                        TransportError::Disconnected(DRIVER) | TransportError::Closed,
                    ) => break,
                    other => return Err(other),
                },
            }
        }
        Ok(*worker.node.process())
    }
}

/// A node at work.
struct Worker<T> {
    node: Node<Account>,
    t: T,
    out: Vec<NodeId>,
    /// Transfers sent on each outgoing channel, in the order of `out`.
    sent_to: Vec<u64>,
    /// Of those, the transfers put back after a restore.
    replayed: u64,
    rng: ChaCha8Rng,
    batch: u64,
    max_amount: u64,
    shared: Arc<Shared>,
    freeze: Option<Receiver<()>>,
    crash: bool,
    started: bool,
    /// Told to finish: nothing more is sent.
    finished: bool,
    /// A peer has gone: nothing more is sent.
    quiet: bool,
    /// The transfers to take in before it says it has drained.
    expected: Option<u64>,
    drained: bool,
}

impl<T: Transport<Wire>> Worker<T> {
    /// Does one round of work and handles what comes meanwhile; `false` once told
    /// to stop.
    fn step(&mut self) -> Result<bool, NodeError> {
        if self.started
            && let Some(freeze) = self.freeze.take()
        {
            // Frozen: handles nothing until the run lets it go.
            let _ = freeze.recv();
        }
        if self.started && self.crash {
            return Err(TransportError::Protocol("made to fail (Hooks::crash)".to_string()).into());
        }
        let sending = self.started
            && !self.finished
            && !self.quiet
            && !self.out.is_empty()
            && !self.shared.spent();
        let event = if sending {
            let affordable = self.batch.min(self.node.process().balance);
            let (count, last) = self.shared.claim(affordable);
            if count > 0 {
                self.transfer(count)?;
                self.shared.sent.fetch_add(count, Ordering::Relaxed);
                if last {
                    self.report(Control::Spent)?;
                }
                if !self.take_in()? {
                    return Ok(false);
                }
                None
            } else {
                // Nothing to send with: waits for money.
                self.node.poll_event(&mut self.t, IDLE_WAIT)?
            }
        } else if self.finished && !self.drained {
            self.node.poll_event(&mut self.t, DRAIN_WAIT)?
        } else {
            Some(self.node.next_event(&mut self.t)?)
        };
        if let Some(event) = event
            && !self.on_event(event)?
        {
            return Ok(false);
        }
        self.check_drained()?;
        Ok(true)
    }

    /// Sends `count` transfers, each to a random out-neighbour, of a random amount
    /// that leaves at least 1 for each transfer after it. The balance covers `count`.
    fn transfer(&mut self, count: u64) -> Result<(), NodeError> {
        let width = self.out.len() as u64;
        for i in 0..count {
            let draw = self.rng.next_u64();
            // The high half picks the receiver, the low half the amount.
            let at = ((draw >> 32) * width) >> 32;
            let balance = self.node.process().balance;
            let most = self
                .max_amount
                .min(balance.saturating_sub(count - i - 1))
                .max(1);
            let amount = 1 + ((u128::from(draw as u32) * u128::from(most)) >> 32) as u64;
            let at = at as usize;
            let (Some(&to), true) = (self.out.get(at), self.node.process_mut().withdraw(amount))
            else {
                return Err(TransportError::Protocol(format!(
                    "{} cannot send {amount} out of {balance}",
                    self.node.id()
                ))
                .into());
            };
            self.node.send(&mut self.t, to, Transfer(amount))?;
            self.sent_to[at] += 1;
        }
        Ok(())
    }

    /// Takes in what has arrived since the last batch: up to twice a batch, so that
    /// the nodes keep pace with each other and a marker does not wait behind a
    /// backlog, in a bounded number of looks, so that frames coming without end do
    /// not keep the node from sending. `false` once told to stop.
    fn take_in(&mut self) -> Result<bool, NodeError> {
        let burst = Node::<Account>::POLL_BURST as u64;
        let limit = self.node.process().handled + 2 * self.batch;
        for _ in 0..2 * self.batch.div_ceil(burst) + 8 {
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
            if handled >= limit || (drained && handled - before < burst) {
                break;
            }
        }
        Ok(true)
    }

    fn report(&mut self, control: Control) -> Result<(), NodeError> {
        self.t.send(DRIVER, Frame::Control(control))?;
        Ok(self.t.flush()?)
    }

    /// Once told how many transfers are coming and all have come, says so, once.
    fn check_drained(&mut self) -> Result<(), NodeError> {
        let account = *self.node.process();
        if let Some(expected) = self.expected
            && !self.drained
            && account.handled >= expected
        {
            self.drained = true;
            self.report(Control::Drained {
                balance: account.balance,
                handled: account.handled,
            })?;
        }
        Ok(())
    }

    /// Acts on what the node handed over; `false` once told to stop.
    fn on_event(
        &mut self,
        event: Event<u64, crate::account::InTransit, Control>,
    ) -> Result<bool, NodeError> {
        match event {
            Event::Control { control, from } => match control {
                Control::Start => self.started = true,
                Control::Finish => {
                    self.finished = true;
                    let sent = self.out.iter().copied().zip(self.sent_to.iter().copied());
                    self.report(Control::Finished {
                        sent: sent.collect(),
                        replayed: self.replayed,
                    })?;
                }
                Control::Drain { expected } => self.expected = Some(expected),
                Control::Stop => {
                    // What could not be written now has nowhere to go.
                    let _ = self.t.flush();
                    return Ok(false);
                }
                Control::Spent | Control::Finished { .. } | Control::Drained { .. } => {
                    return Err(TransportError::Protocol(format!(
                        "{} was sent {control:?} by {from}, which only the driver takes",
                        self.node.id()
                    ))
                    .into());
                }
            },
            // Parts go to the driver, which the node reports to: none is handed over.
            Event::Completed(_) => {}
            // A node gone: the run is ending, so nothing more is sent.
            Event::Departed(Endpoint::Node(_)) => self.quiet = true,
            // The driver gone: the run is over.
            Event::Departed(_) => return Ok(false),
            Event::Aborted(_) => {}
        }
        Ok(true)
    }
}
