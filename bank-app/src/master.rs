//! The master: runs a script's commands, one at a time, against the roles of a
//! [`System`], and prints what the bank specification says.
//!
//! The master keeps no balances and computes no snapshot. It knows which nodes exist,
//! the money created, and how many messages sit in each channel (it learns of every
//! enqueue from an acknowledgement), which is all it needs to check a command before
//! sending it and to make the random choices.

use crate::channels::ChannelCounts;
use crate::choice::Chooser;
use crate::input::Lines;
use crate::protocol::{Control, MASTER, OBSERVER, Peer, Taken, Who, Wire};
use crate::protocol::{ToMaster, ToNode, ToObserver};
use crate::role::Role;
use crate::saved::{self, Format, SavedSnapshot, Stats, format_snapshot};
use crate::script::Command;
use crate::system::{Departure, System};
use crossbeam_channel::Receiver;
use snapshot_core::{Endpoint, Frame, Incoming, NodeId, Transport, TransportError};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// While it waits for an answer, how often the master looks: for departures the
/// system tells of (a process that exited before it ever spoke, whose transport
/// cannot tell), and at the clock, to notice time it did not run.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// A look this much later than it could have come means that the master did not run
/// meanwhile: it was stopped (SIGSTOP, a debugger, a suspended job).
const STALL: Duration = Duration::from_millis(500);

/// How long the master waits for the system to say why a role whose connections
/// closed has gone (its process is seen to exit right after).
const WHY_GONE_GRACE: Duration = Duration::from_secs(1);

/// How long a join waits to learn whether the newcomer has gone, when another role
/// fails meanwhile (its connection to the newcomer may have failed because of it).
const NEWCOMER_GRACE: Duration = Duration::from_millis(200);

/// How many transfers a restored bank puts back on a channel at a time: fewer than
/// a bounded in-memory channel holds (`transport_mem::DEFAULT_CAPACITY`).
const PUT_BACK_PART: usize = 256;

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The command is not valid now: it had no effect and the run goes on.
    #[error("{0}")]
    Rejected(String),
    /// The system failed: a role died, stopped answering, or broke the protocol.
    #[error("{}: {}", Who(*.who), crate::cause::chain(.cause))]
    Failed {
        /// Who failed.
        who: Endpoint,
        /// Why.
        cause: Failure,
    },
    /// Standard output is closed: the run ends quietly.
    #[error("standard output is closed")]
    OutputClosed,
    /// Standard output is there but cannot be written (a full disk, a device that
    /// fails): the run fails, as its output is lost.
    #[error("master: cannot write the output: {0}")]
    OutputFailed(std::io::Error),
}

impl Refusal {
    /// What a failed write of the output means: a closed output ends the run
    /// quietly, any other failure fails it.
    pub fn of_output(error: std::io::Error) -> Refusal {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            Refusal::OutputClosed
        } else {
            Refusal::OutputFailed(error)
        }
    }
}

/// Why a role, or the system, failed. Written with its sources
/// ([`cause::chain`](crate::cause::chain)) where the user sees it.
#[derive(Debug)]
pub enum Failure {
    /// What the role said of its failure, or what the master or the system sees of
    /// it ("no answer within 2 s", "the process died (signal 9)").
    Said(String),
    /// The master's endpoint failed on its way to the role.
    Transport(TransportError),
    /// The system could not make what the master asked for: its own endpoint, or
    /// (`starting`) the role's process or thread.
    System {
        /// Whether it was starting the role.
        starting: bool,
        /// What went wrong.
        source: anyhow::Error,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Said(text) => f.write_str(text),
            // Its message is its source's (below), after what was being done.
            Failure::Transport(error) => error.fmt(f),
            Failure::System { starting: true, .. } => f.write_str("cannot start"),
            Failure::System { source, .. } => source.fmt(f),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Said(_) => None,
            Failure::Transport(error) => error.source(),
            Failure::System { starting, source } => {
                let error: &(dyn std::error::Error + 'static) = source.as_ref();
                if *starting {
                    Some(error)
                } else {
                    error.source()
                }
            }
        }
    }
}

impl From<String> for Failure {
    fn from(text: String) -> Self {
        Failure::Said(text)
    }
}

/// What to do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// `KillAll`: stop reading.
    Stop,
}

fn rejected<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Rejected(reason.into()))
}

/// The master of one run.
pub struct Master<W: Write> {
    system: Box<dyn System>,
    /// Where the system tells of roles that have gone, if it can tell.
    departures: Option<Receiver<Departure>>,
    transport: Option<Box<dyn Transport<Wire>>>,
    out: W,
    chooser: Chooser,
    ack_timeout: Duration,
    /// Every role started, in order, whether or not it finished joining.
    launched: Vec<Endpoint>,
    /// The roles started that have said hello.
    greeted: BTreeSet<Endpoint>,
    /// Where the observer listens, for transports that need to be told.
    observer_address: Option<String>,
    /// Every node, with its transport address.
    nodes: BTreeMap<NodeId, Option<String>>,
    /// The sequence number of the next snapshot each node starts.
    next_seq: BTreeMap<NodeId, u64>,
    /// All the money created.
    total: u64,
    /// The number of messages in each channel.
    queued: ChannelCounts,
    markers_in_transit: u64,
    snapshot_open: bool,
    collected: bool,
    /// How `PrintSnapshot` prints.
    format: Format,
    /// Where `CollectState` saves each snapshot, if anywhere.
    save: Option<PathBuf>,
}

impl<W: Write> Master<W> {
    /// A master that will run roles on `system`, print to `out`, and draw its choices
    /// from `seed`.
    pub fn new(system: Box<dyn System>, out: W, seed: u64, ack_timeout: Duration) -> Self {
        Master {
            departures: system.departures(),
            system,
            transport: None,
            launched: Vec::new(),
            greeted: BTreeSet::new(),
            observer_address: None,
            out,
            chooser: Chooser::new(seed),
            ack_timeout,
            nodes: BTreeMap::new(),
            next_seq: BTreeMap::new(),
            total: 0,
            queued: ChannelCounts::default(),
            markers_in_transit: 0,
            snapshot_open: false,
            collected: false,
            format: Format::Text,
            save: None,
        }
    }

    /// Prints snapshots in `format` (the specification's text by default).
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// Saves every snapshot collected into `dir` (see [`saved::save`]).
    pub fn with_save(mut self, dir: PathBuf) -> Self {
        self.save = Some(dir);
        self
    }

    /// Starts the bank from a saved snapshot, as if `StartMaster` and a `CreateNode`
    /// per node, with its saved balance, had run; then puts back on each channel the
    /// transfers the snapshot caught in transit on it, in their order, for `Receive`
    /// to take. A snapshot taken before any of them is received is the saved one.
    ///
    /// Refused (with nothing started) when the snapshot does not hold or its topology
    /// is not complete: the script's commands suppose a channel each way between every
    /// two nodes.
    pub fn restore(&mut self, snapshot: &SavedSnapshot) -> Result<(), Refusal> {
        if self.transport.is_some() {
            return rejected("the master is already started");
        }
        saved::check(snapshot).map_err(|error| Refusal::Rejected(error.to_string()))?;
        saved::check_complete(snapshot).map_err(|error| Refusal::Rejected(error.to_string()))?;
        let bank = snapshot
            .to_bank()
            .map_err(|error| Refusal::Rejected(error.to_string()))?;
        let epoch = snapshot_core::restore::epoch(&bank)
            .map_err(|error| Refusal::Rejected(error.to_string()))?;
        self.start()?;
        for node in &snapshot.nodes {
            self.join(node.id, node.balance, epoch)?;
        }
        for (&(from, to), transfers) in &snapshot.in_flight() {
            if transfers.is_empty() {
                continue;
            }
            // The check above has counted it all within the saved total.
            let amount = transfers
                .iter()
                .try_fold(0, |sum: u64, t| sum.checked_add(t.0));
            let Some((amount, total)) =
                amount.and_then(|amount| Some((amount, self.total.checked_add(amount)?)))
            else {
                return rejected(format!("the bank's total would pass {}", u64::MAX));
            };
            // In parts that a bounded channel holds, each taken in by its receiver
            // before the next is sent.
            for part in transfers.chunks(PUT_BACK_PART) {
                let put_back = ToNode::PutBack {
                    to,
                    transfers: part.to_vec(),
                };
                self.ask_node(from, put_back, |c| matches!(c, ToMaster::PutBack))?;
                self.ask_node(to, ToNode::Settle, |c| matches!(c, ToMaster::Settled))?;
                for _ in part {
                    self.queued.push(from, to);
                }
            }
            self.ask_observer(ToObserver::PutBack { amount }, |c| {
                matches!(c, ToMaster::Added)
            })?;
            self.total = total;
        }
        Ok(())
    }

    /// Runs one command to completion.
    pub fn execute(&mut self, command: Command) -> Result<Flow, Refusal> {
        if self.transport.is_none() {
            return match command {
                Command::StartMaster => self.start().map(|()| Flow::Continue),
                _ => rejected("the master is not started (StartMaster comes first)"),
            };
        }
        match command {
            Command::StartMaster => rejected("the master is already started"),
            Command::CreateNode { node, amount } => self.create_node(node, amount),
            Command::Send { from, to, amount } => self.send(from, to, amount),
            Command::Receive { to, from } => self.receive(to, from),
            Command::ReceiveAll => self.receive_all(),
            Command::BeginSnapshot(node) => self.begin_snapshot(node),
            Command::CollectState => self.collect_state(),
            Command::PrintSnapshot => self.print_snapshot(),
            Command::KillAll => return Ok(Flow::Stop),
        }
        .map(|()| Flow::Continue)
    }

    /// Sends node `node` a message that it answers at once, doing nothing else, and
    /// waits for the answer: the bare round trip master -> node -> master that every
    /// command costs at least, for measuring the bank against it. Prints nothing and
    /// changes nothing.
    pub fn round_trip(&mut self, node: NodeId) -> Result<(), Refusal> {
        self.check_node(node)?;
        self.ask_node(node, ToNode::Settle, |c| matches!(c, ToMaster::Settled))?;
        Ok(())
    }

    /// Tells every role to stop, waits for them, and removes what the run created;
    /// says what it could not remove.
    pub fn shutdown(&mut self) -> Result<(), String> {
        self.system.stopping();
        // A role that has not said hello may not have opened its end of the master's
        // channel to it yet, and telling it waits for that (over pipes, up to the
        // transport's open timeout): it never comes if the system sees the role gone
        // or stopped, and the system ends such a role anyway.
        let (system, greeted) = (&mut self.system, &self.greeted);
        let to_tell: Vec<Endpoint> = self
            .launched
            .iter()
            .copied()
            .filter(|&who| {
                greeted.contains(&who)
                    || (system.why_gone(who, Duration::ZERO).is_none()
                        && system.unresponsive(who).is_none())
            })
            .collect();
        if let Some(transport) = self.transport.as_mut() {
            for endpoint in to_tell {
                let stop = match endpoint {
                    Endpoint::Node(_) => Control::ToNode(ToNode::Stop),
                    _ => Control::ToObserver(ToObserver::Stop),
                };
                // A role that is already gone needs no telling.
                let _ = transport.send(endpoint, Frame::Control(stop));
            }
            let _ = transport.flush();
        }
        self.system.shutdown()
    }

    fn start(&mut self) -> Result<(), Refusal> {
        let transport = self.system.master().map_err(|source| Refusal::Failed {
            who: MASTER,
            cause: Failure::System {
                starting: false,
                source,
            },
        })?;
        self.transport = Some(transport);
        self.observer_address = self.launch(Role::Observer)?;
        Ok(())
    }

    /// Starts `role`, connects to it, and waits for its hello; returns its address.
    fn launch(&mut self, role: Role) -> Result<Option<String>, Refusal> {
        let who = role.endpoint();
        let started = self.system.start(role).map_err(|source| Refusal::Failed {
            who,
            cause: Failure::System {
                starting: true,
                source,
            },
        })?;
        self.launched.push(who);
        if let Some(address) = &started.address {
            self.transport()?
                .connect(who, address)
                .map_err(|error| failed(who, error))?;
        }
        if started.attach {
            let master = self.transport()?.address();
            self.post(who, Control::Attach { master })?;
        }
        let address = match self.expect(who, |c| matches!(c, ToMaster::Hello { .. }))? {
            ToMaster::Hello { address } => address,
            other => return Err(protocol_error(who, &other)),
        };
        self.greeted.insert(who);
        if started.address.is_none()
            && let Some(address) = &address
        {
            self.transport()?
                .connect(who, address)
                .map_err(|error| failed(who, error))?;
        }
        // Peers reach a role where the system started it, as the master does: a node
        // announces the address it listens on, which may be one for every interface
        // (`0.0.0.0:7000`), where a peer would find itself, or under another name
        // than its certificate's.
        Ok(started.address.or(address))
    }

    fn create_node(&mut self, node: NodeId, amount: u64) -> Result<(), Refusal> {
        self.join(node, amount, 0)
    }

    /// Starts node `node` with `amount`, its snapshots numbered from `epoch`, and
    /// connects it to the others.
    fn join(&mut self, node: NodeId, amount: u64, epoch: u64) -> Result<(), Refusal> {
        if self.nodes.contains_key(&node) {
            return rejected(format!("node {node} already exists"));
        }
        if self.snapshot_open {
            return rejected("cannot create a node while a snapshot is open");
        }
        let Some(total) = self.total.checked_add(amount) else {
            return rejected(format!(
                "the bank's total money would pass {} (it holds {})",
                u64::MAX,
                self.total
            ));
        };
        if self.nodes.len() >= self.system.max_nodes() {
            return rejected(format!(
                "this transport runs at most {} nodes",
                self.system.max_nodes()
            ));
        }
        if let Some(reason) = self.system.refuses(node) {
            return rejected(reason);
        }
        let address = self.launch(Role::Node(node))?;
        let peers: Vec<Peer> = self
            .nodes
            .iter()
            .map(|(&node, address)| Peer {
                node,
                address: address.clone(),
            })
            .collect();
        let newcomer = Peer { node, address };
        // Everyone at once: the newcomer connects to the observer and its peers while
        // they connect to it, so that over tcp the handshakes of both directions
        // overlap. Nothing travels on those connections before the master's next
        // command, which waits for every answer.
        let to = Endpoint::Node(node);
        self.post(
            to,
            ToNode::Join {
                balance: amount,
                epoch,
                observer: self.observer_address.clone(),
                peers: peers.clone(),
            }
            .into(),
        )?;
        for peer in &peers {
            self.post(
                Endpoint::Node(peer.node),
                ToNode::Connect(newcomer.clone()).into(),
            )?;
        }
        self.post(
            OBSERVER,
            ToObserver::AddNode {
                peer: newcomer.clone(),
                balance: amount,
            }
            .into(),
        )?;
        let mut waiting: BTreeSet<Endpoint> =
            peers.iter().map(|p| Endpoint::Node(p.node)).collect();
        waiting.insert(to);
        waiting.insert(OBSERVER);
        while !waiting.is_empty() {
            // A silence is blamed on the newcomer while it has not answered, then on
            // a peer that has not: the observer sorts after every node.
            let blame = if waiting.contains(&to) {
                to
            } else {
                waiting.first().copied().unwrap_or(OBSERVER)
            };
            let (who, answer) = match self.await_any(|who| waiting.contains(&who), blame, None) {
                Ok(answered) => answered,
                // Connections to a newcomer that has gone fail: while it has not
                // answered, a failure of another is blamed on it if it has gone.
                Err(Refusal::Failed { who, cause }) if who != to && waiting.contains(&to) => {
                    return Err(match self.system.why_gone(to, NEWCOMER_GRACE) {
                        Some(_) => self.gone(to),
                        None => Refusal::Failed { who, cause },
                    });
                }
                Err(refusal) => return Err(refusal),
            };
            let fits = match who {
                OBSERVER => matches!(answer, ToMaster::Added),
                _ => matches!(answer, ToMaster::Joined),
            };
            if !fits {
                return Err(protocol_error(who, &answer));
            }
            waiting.remove(&who);
        }
        self.nodes.insert(node, newcomer.address);
        self.next_seq.insert(node, epoch);
        self.queued.add_node(node);
        self.total = total;
        Ok(())
    }

    fn check_node(&self, node: NodeId) -> Result<(), Refusal> {
        if self.nodes.contains_key(&node) {
            Ok(())
        } else {
            rejected(format!("unknown node {node}"))
        }
    }

    fn check_channel(&self, from: NodeId, to: NodeId) -> Result<(), Refusal> {
        self.check_node(from)?;
        self.check_node(to)?;
        if from == to {
            return rejected(format!("there is no channel ({from} -> {to})"));
        }
        Ok(())
    }

    fn send(&mut self, from: NodeId, to: NodeId, amount: u64) -> Result<(), Refusal> {
        self.check_channel(from, to)?;
        match self.ask_node(from, ToNode::Pay { to, amount }, |c| {
            matches!(c, ToMaster::Paid | ToMaster::Insufficient)
        })? {
            ToMaster::Paid => {
                self.queued.push(from, to);
                Ok(())
            }
            _ => self.print("ERR_SEND\n"),
        }
    }

    fn receive(&mut self, to: NodeId, from: Option<NodeId>) -> Result<(), Refusal> {
        let from = match from {
            Some(from) => {
                self.check_channel(from, to)?;
                if self.queued.count(from, to) == 0 {
                    return rejected(format!("channel ({from} -> {to}) is empty"));
                }
                from
            }
            None => {
                self.check_node(to)?;
                let candidates = self.queued.nonempty_into(to);
                if candidates.is_empty() {
                    return rejected(format!("every channel into node {to} is empty"));
                }
                candidates[self.chooser.pick(candidates.len())]
            }
        };
        let taken = self.take(from, to)?;
        self.out
            .write_all(ReceivedLine::new(from, taken).as_bytes())
            .map_err(Refusal::of_output)
    }

    fn receive_all(&mut self) -> Result<(), Refusal> {
        while self.queued.nonempty() > 0 {
            let pick = self.chooser.pick(self.queued.nonempty());
            let Some((from, to)) = self.queued.nth_nonempty(pick) else {
                break;
            };
            self.take(from, to)?;
        }
        Ok(())
    }

    /// Has `to` handle the head message of the channel `from -> to`, which the master
    /// knows is not empty, and accounts for what that did to the channels.
    fn take(&mut self, from: NodeId, to: NodeId) -> Result<Taken, Refusal> {
        let (what, markers) = match self.ask_node(to, ToNode::Take { from }, |c| {
            matches!(c, ToMaster::Took { .. })
        })? {
            ToMaster::Took { what, markers } => (what, markers),
            other => return Err(protocol_error(Endpoint::Node(to), &other)),
        };
        self.queued.pop(from, to);
        if what == Taken::Marker {
            self.markers_in_transit = self.markers_in_transit.saturating_sub(1);
        }
        self.markers_sent(to, &markers);
        Ok(what)
    }

    /// `node` has recorded its state and sent a marker to each of `markers`, as its
    /// snapshot engine says.
    fn markers_sent(&mut self, node: NodeId, markers: &[NodeId]) {
        for &to in markers {
            self.queued.push(node, to);
            self.markers_in_transit += 1;
        }
    }

    fn begin_snapshot(&mut self, node: NodeId) -> Result<(), Refusal> {
        self.check_node(node)?;
        if self.snapshot_open {
            return rejected("a snapshot is already open (CollectState closes it)");
        }
        // A node restored from a snapshot numbered near the end starts few.
        let seq = self.next_seq.get(&node).copied().unwrap_or(0);
        if seq == u64::MAX {
            return rejected(format!(
                "node {node} has started its last snapshot: no sequence number is left"
            ));
        }
        let markers = match self.ask_observer(ToObserver::Begin(node), |c| {
            matches!(c, ToMaster::Begun { .. })
        })? {
            ToMaster::Begun { markers } => markers,
            other => return Err(protocol_error(OBSERVER, &other)),
        };
        self.next_seq.insert(node, seq + 1);
        self.snapshot_open = true;
        self.markers_sent(node, &markers);
        self.print(&format!("Started by Node {node}\n"))
    }

    fn collect_state(&mut self) -> Result<(), Refusal> {
        if !self.snapshot_open {
            return rejected("no snapshot is open (BeginSnapshot opens one)");
        }
        if self.markers_in_transit > 0 {
            return rejected(format!(
                "{} marker(s) of the snapshot have not been received yet",
                self.markers_in_transit
            ));
        }
        match self.ask_observer(ToObserver::Collect, |c| {
            matches!(c, ToMaster::Collected | ToMaster::Invalid(_))
        })? {
            ToMaster::Invalid(reason) => Err(Refusal::Failed {
                who: OBSERVER,
                cause: format!("the collected snapshot is not valid: {reason}").into(),
            }),
            _ => {
                self.snapshot_open = false;
                self.collected = true;
                match self.save.clone() {
                    Some(dir) => self.save_snapshot(dir),
                    None => Ok(()),
                }
            }
        }
    }

    /// The snapshot collected last, with what the master knows of the bank.
    fn collected(&mut self) -> Result<SavedSnapshot, Refusal> {
        let snapshot = match self.ask_observer(ToObserver::Print, |c| {
            matches!(c, ToMaster::Snapshot(Some(_)))
        })? {
            ToMaster::Snapshot(Some(snapshot)) => snapshot,
            other => return Err(protocol_error(OBSERVER, &other)),
        };
        SavedSnapshot::from_bank(&snapshot, self.total, Stats::default()).map_err(|error| {
            Refusal::Failed {
                who: OBSERVER,
                cause: format!("the collected snapshot cannot be written down: {error}").into(),
            }
        })
    }

    /// Saves the snapshot collected last into `dir`.
    fn save_snapshot(&mut self, dir: PathBuf) -> Result<(), Refusal> {
        let snapshot = self.collected()?;
        saved::save(&dir, &snapshot).map_err(|error| Refusal::Failed {
            who: MASTER,
            cause: Failure::System {
                starting: false,
                source: anyhow::Error::new(error),
            },
        })?;
        Ok(())
    }

    fn print_snapshot(&mut self) -> Result<(), Refusal> {
        if !self.collected {
            return rejected("no snapshot has been collected yet");
        }
        let block = match self.format {
            Format::Text => {
                let snapshot = match self.ask_observer(ToObserver::Print, |c| {
                    matches!(c, ToMaster::Snapshot(Some(_)))
                })? {
                    ToMaster::Snapshot(Some(snapshot)) => snapshot,
                    other => return Err(protocol_error(OBSERVER, &other)),
                };
                format_snapshot(&snapshot)
            }
            Format::Json => saved::to_json_line(&self.collected()?) + "\n",
            Format::Dot => saved::to_dot(&self.collected()?),
        };
        self.print(&block)
    }

    fn print(&mut self, text: &str) -> Result<(), Refusal> {
        self.out
            .write_all(text.as_bytes())
            .map_err(Refusal::of_output)
    }

    /// Writes out what the master has printed and its output still holds.
    pub fn flush_output(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// Where the master prints.
    pub fn output(&self) -> &W {
        &self.out
    }

    fn transport(&mut self) -> Result<&mut Box<dyn Transport<Wire>>, Refusal> {
        self.transport.as_mut().ok_or_else(no_transport)
    }

    /// Sends `control` to `to` without waiting.
    fn post(&mut self, to: Endpoint, control: Control) -> Result<(), Refusal> {
        match self.transport()?.send(to, Frame::Control(control)) {
            Ok(()) => Ok(()),
            Err(TransportError::Disconnected(peer)) => Err(self.gone(peer)),
            Err(error) => Err(failed(to, error)),
        }
    }

    /// Sends `message` to `node` and waits for an answer that `fits`.
    fn ask_node(
        &mut self,
        node: NodeId,
        message: ToNode,
        fits: impl Fn(&ToMaster) -> bool,
    ) -> Result<ToMaster, Refusal> {
        // The node paid (whose channel may be full), or the node whose message is
        // taken (it may still be on its way).
        let waits_on = match message {
            ToNode::Pay { to, .. } => Some(to),
            ToNode::Take { from } => Some(from),
            _ => None,
        };
        let to = Endpoint::Node(node);
        self.post(to, message.into())?;
        self.expect_waiting_on(to, fits, waits_on)
    }

    /// Sends `message` to the observer and waits for an answer that `fits`.
    fn ask_observer(
        &mut self,
        message: ToObserver,
        fits: impl Fn(&ToMaster) -> bool,
    ) -> Result<ToMaster, Refusal> {
        // The node that starts a snapshot.
        let waits_on = match message {
            ToObserver::Begin(node) => Some(node),
            _ => None,
        };
        self.post(OBSERVER, message.into())?;
        self.expect_waiting_on(OBSERVER, fits, waits_on)
    }

    fn expect(
        &mut self,
        from: Endpoint,
        fits: impl Fn(&ToMaster) -> bool,
    ) -> Result<ToMaster, Refusal> {
        self.expect_waiting_on(from, fits, None)
    }

    /// Waits for an answer from `from` that `fits`; `from` may be waiting on the node
    /// `waits_on` to answer.
    fn expect_waiting_on(
        &mut self,
        from: Endpoint,
        fits: impl Fn(&ToMaster) -> bool,
        waits_on: Option<NodeId>,
    ) -> Result<ToMaster, Refusal> {
        let (_, answer) = self.await_any(|who| who == from, from, waits_on)?;
        if fits(&answer) {
            Ok(answer)
        } else {
            Err(protocol_error(from, &answer))
        }
    }

    /// Waits for the next control message from an endpoint that `from` accepts; a
    /// silence is blamed on `first`. Anything else is a failure of the system: one
    /// command is in flight at a time, so nobody else may speak.
    fn await_any(
        &mut self,
        from: impl Fn(Endpoint) -> bool,
        first: Endpoint,
        waits_on: Option<NodeId>,
    ) -> Result<(Endpoint, ToMaster), Refusal> {
        let answer = match self.next_answer(first)? {
            None => return Err(self.silence(first, waits_on)),
            // Whoever has gone takes the blame, not the endpoint waited for.
            Some(Incoming::Departed(peer)) => return Err(self.gone(peer)),
            Some(Incoming::Frame(who, Frame::Control(Control::ToMaster(answer)))) => (who, answer),
            Some(Incoming::Frame(who, frame)) => {
                return Err(Refusal::Failed {
                    who,
                    cause: format!("protocol error: unexpected {frame:?}").into(),
                });
            }
        };
        match answer {
            (who, ToMaster::Failure(cause)) => Err(Refusal::Failed {
                who,
                cause: cause.into(),
            }),
            (_, ToMaster::PeerGone(peer)) => Err(self.gone(peer)),
            (who, answer) if from(who) => Ok((who, answer)),
            (who, answer) => Err(protocol_error(who, &answer)),
        }
    }

    /// What the transport brings within the answer timeout (`None`: nothing), unless
    /// the system tells meanwhile of a role that has gone. A transport error is
    /// blamed on `waited`. Time the master itself did not run (a look [`STALL`] late
    /// or more) is not counted: the roles may have been waiting for it.
    fn next_answer(&mut self, waited: Endpoint) -> Result<Option<Incoming<Wire>>, Refusal> {
        let mut deadline = Instant::now() + self.ack_timeout;
        let Some(transport) = self.transport.as_mut() else {
            return Err(no_transport());
        };
        // When the master last looked, and how long that look could take.
        let (mut looked, mut could_take) = (Instant::now(), Duration::ZERO);
        loop {
            if let Some(departure) = self.departures.as_ref().and_then(|d| d.try_recv().ok()) {
                return Err(departed(departure));
            }
            let now = Instant::now();
            let late = now
                .saturating_duration_since(looked)
                .saturating_sub(could_take);
            if late >= STALL {
                deadline += late;
            }
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Ok(None);
            }
            let wait = left.min(LOOK_EVERY);
            (looked, could_take) = (now, wait);
            match transport.recv_timeout(wait) {
                Ok(Some(incoming)) => return Ok(Some(incoming)),
                Ok(None) => {}
                Err(error) => return Err(failed(waited, error)),
            }
        }
    }

    /// No answer came from `waited` in time: blames the role the system sees cannot
    /// answer, if it sees one (the one waited for, the node it waits on, or any
    /// other), and otherwise the one waited for, saying which node it waits on.
    fn silence(&self, waited: Endpoint, waits_on: Option<NodeId>) -> Refusal {
        let within = format!("no answer within {} s", self.ack_timeout.as_secs_f64());
        let suspects = [waited]
            .into_iter()
            .chain(waits_on.map(Endpoint::Node))
            .chain(self.launched.iter().copied());
        for who in suspects {
            if let Some(why) = self.system.unresponsive(who) {
                return Refusal::Failed {
                    who,
                    cause: format!("{why} ({within})").into(),
                };
            }
        }
        let cause = match waits_on {
            Some(node) => format!("{within} (it waits on {})", Who(Endpoint::Node(node))),
            None => within,
        };
        Refusal::Failed {
            who: waited,
            cause: cause.into(),
        }
    }

    /// `who` has gone: its connections closed (it exited, was killed, or its host
    /// went). The system may know why.
    fn gone(&mut self, who: Endpoint) -> Refusal {
        let cause = self
            .system
            .why_gone(who, WHY_GONE_GRACE)
            .unwrap_or_else(|| "gone: its connections have closed".to_string());
        Refusal::Failed {
            who,
            cause: cause.into(),
        }
    }

    /// The next line of the script, or a role that has gone meanwhile.
    fn next_line(&self, lines: &mut Lines) -> Next {
        if let Some(line) = lines.next_read() {
            return Next::Line(Some(Ok(line)));
        }
        let batch = match &self.departures {
            None => lines.batches().recv(),
            Some(departures) => {
                if let Ok(departure) = departures.try_recv() {
                    return Next::Departed(departure);
                }
                crossbeam_channel::select! {
                    recv(lines.batches()) -> batch => batch,
                    recv(departures) -> departure => match departure {
                        Ok(departure) => return Next::Departed(departure),
                        // Nobody will tell of departures any more: only lines are left.
                        Err(_) => lines.batches().recv(),
                    },
                }
            }
        };
        Next::Line(match batch {
            Ok(Ok(batch)) => lines.take(batch).map(Ok),
            Ok(Err(error)) => Some(Err(error)),
            // The end of the input.
            Err(_) => None,
        })
    }
}

/// What the master waits for between commands.
enum Next {
    /// A line of the script, or an error reading it; `None` at its end.
    Line(Option<io::Result<Vec<u8>>>),
    /// A role that has gone, as the system tells.
    Departed(Departure),
}

fn no_transport() -> Refusal {
    Refusal::Failed {
        who: MASTER,
        cause: Failure::Said("the master has no transport".to_string()),
    }
}

fn departed(departure: Departure) -> Refusal {
    Refusal::Failed {
        who: departure.who,
        cause: departure.cause.into(),
    }
}

/// The line `Receive` prints for what it took: `{from} Transfer {amount}` or
/// `{from} SnapshotToken -1`. Made on the stack, digit by digit: it is most of the
/// master's own work for the most common command, which waits on it.
struct ReceivedLine {
    bytes: [u8; Self::ROOM],
    len: usize,
}

impl ReceivedLine {
    /// The longest line: a `u32` node, " Transfer ", a `u64` amount, a newline.
    const ROOM: usize = 10 + 10 + 20 + 1;

    fn new(from: NodeId, taken: Taken) -> Self {
        let mut line = ReceivedLine {
            bytes: [0; Self::ROOM],
            len: 0,
        };
        line.push_number(u64::from(from.0));
        match taken {
            Taken::Transfer(amount) => {
                line.push(b" Transfer ");
                line.push_number(amount);
                line.push(b"\n");
            }
            Taken::Marker => line.push(b" SnapshotToken -1\n"),
        }
        line
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn failed(who: Endpoint, error: TransportError) -> Refusal {
    Refusal::Failed {
        who,
        cause: Failure::Transport(error),
    }
}

fn protocol_error(who: Endpoint, answer: &ToMaster) -> Refusal {
    Refusal::Failed {
        who,
        cause: format!("protocol error: unexpected {answer:?}").into(),
    }
}

/// How a run ended, as its exit status (`bank-app/README.md`, "Errors and exit status").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every line was accepted.
    Accepted = 0,
    /// Some line was rejected.
    Rejected = 1,
    /// A usage error, or a script that cannot be read.
    Usage = 2,
    /// The system failed.
    Failed = 3,
}

/// Runs the script on `input` line by line, reporting rejected lines and the failure
/// that ends the run, if one does, on `err`, and shuts the system down at `KillAll`,
/// at the end of input, or on a failure.
///
/// The script is read on a thread of its own, so that a role that goes while the
/// master waits for a line is noticed at once.
pub fn run_script<W: Write>(
    master: &mut Master<W>,
    input: impl Read + Send + 'static,
    err: &mut dyn Write,
) -> Status {
    let lines = match Lines::read(input) {
        Ok(lines) => lines,
        Err(error) => {
            let _ = writeln!(err, "master: cannot read the script: {error}");
            shut_down(master, err);
            return Status::Failed;
        }
    };
    run_lines(master, lines, err)
}

/// [`run_script`] on lines already being read: for a caller that starts reading the
/// script before it has the master start anything.
pub fn run_lines<W: Write>(
    master: &mut Master<W>,
    mut lines: Lines,
    err: &mut dyn Write,
) -> Status {
    let mut status = Status::Accepted;
    let mut number = 0u64;
    loop {
        let line = match master.next_line(&mut lines) {
            Next::Line(None) => break,
            Next::Line(Some(Ok(line))) => line,
            Next::Line(Some(Err(error))) => {
                let _ = master.flush_output();
                let _ = writeln!(
                    err,
                    "master: cannot read the script after line {number}: {error}"
                );
                shut_down(master, err);
                return Status::Usage;
            }
            Next::Departed(departure) => return fail(master, departed(departure), err),
        };
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let command = match crate::script::parse_line(text) {
            Ok(Some(command)) => command,
            Ok(None) => continue,
            Err(error) => {
                let _ = master.flush_output();
                let _ = writeln!(err, "line {number}: {error}");
                status = Status::Rejected;
                continue;
            }
        };
        match master.execute(command) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Stop) => break,
            Err(Refusal::Rejected(reason)) => {
                let _ = master.flush_output();
                let _ = writeln!(err, "line {number}: {reason}");
                status = Status::Rejected;
            }
            Err(Refusal::OutputClosed) => break,
            Err(failure @ (Refusal::Failed { .. } | Refusal::OutputFailed(_))) => {
                return fail(master, failure, err);
            }
        }
    }
    // What the output still holds goes out before the system is taken down.
    let flushed = master.flush_output().map_err(Refusal::of_output);
    shut_down(master, err);
    match flushed {
        Err(failure @ Refusal::OutputFailed(_)) => {
            let _ = writeln!(err, "{failure}");
            Status::Failed
        }
        _ => status,
    }
}

/// Reports the failure that ends the run, after what the master has printed, and
/// shuts the system down.
fn fail<W: Write>(master: &mut Master<W>, failure: Refusal, err: &mut dyn Write) -> Status {
    let _ = master.flush_output();
    let _ = writeln!(err, "{failure}");
    shut_down(master, err);
    Status::Failed
}

/// Shuts the system down, and reports what it left behind.
fn shut_down<W: Write>(master: &mut Master<W>, err: &mut dyn Write) {
    if let Err(problem) = master.shutdown() {
        let _ = writeln!(err, "master: {problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn a_received_line_reads_as_formatting_writes_it() {
        for node in [0, 1, 9, 10, 4_294_967_295] {
            for amount in [0, 7, 10, 1_000_000, 18_446_744_073_709_551_615] {
                let line = ReceivedLine::new(NodeId(node), Taken::Transfer(amount));
                assert_eq!(
                    line.as_bytes(),
                    format!("{node} Transfer {amount}\n").as_bytes()
                );
            }
            let line = ReceivedLine::new(NodeId(node), Taken::Marker);
            assert_eq!(
                line.as_bytes(),
                format!("{node} SnapshotToken -1\n").as_bytes()
            );
        }
    }

    fn io_error() -> TransportError {
        TransportError::Io {
            context: "opening role-0-to-node-2".to_string(),
            source: io::Error::from_raw_os_error(36),
        }
    }

    #[test]
    fn a_failure_is_written_with_its_sources_once() {
        let failure = Refusal::Failed {
            who: Endpoint::Node(NodeId(2)),
            cause: Failure::Transport(io_error()),
        };
        assert_eq!(
            failure.to_string(),
            "node 2: opening role-0-to-node-2: File name too long (os error 36)"
        );
        let starting = Refusal::Failed {
            who: OBSERVER,
            cause: Failure::System {
                starting: true,
                source: anyhow::Error::new(io_error()).context("spawning the observer"),
            },
        };
        assert_eq!(
            starting.to_string(),
            "observer: cannot start: spawning the observer: opening role-0-to-node-2: \
             File name too long (os error 36)"
        );
        let own = Refusal::Failed {
            who: MASTER,
            cause: Failure::System {
                starting: false,
                source: anyhow::Error::new(io_error()),
            },
        };
        assert_eq!(
            own.to_string(),
            "master: opening role-0-to-node-2: File name too long (os error 36)"
        );
    }

    #[test]
    fn the_cause_keeps_its_source() {
        let cause = Failure::Transport(io_error());
        let source = std::error::Error::source(&cause).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("File name too long (os error 36)"));
        assert!(std::error::Error::source(&Failure::Said("gone".to_string())).is_none());
    }
}
