//! The roles of the bank around the master: the nodes (branches) and the observer.
//! Each runs over any [`Transport`], in a thread or in a process of its own.

use crate::account::{Account, Transfer};
use crate::check::{CheckError, check};
use crate::protocol::{BankLocal, BankSnapshot, Control, Peer, Taken, Wire};
use crate::protocol::{MASTER, OBSERVER, ToMaster, ToNode, ToObserver};
use crate::protocol::{to_master, to_node, to_observer};
use serde::{Deserialize, Serialize};
use snapshot_core::{
    Endpoint, Envelope, Frame, GlobalSnapshot, Incoming, Node, NodeError, NodeId, SnapshotEngine,
    Transport, TransportError,
};
use std::collections::BTreeSet;
use thiserror::Error;

/// Which role a process or thread plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The observer, which starts and collects snapshots.
    Observer,
    /// A bank branch.
    Node(NodeId),
}

impl Role {
    /// The role's endpoint on the transport.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Role::Observer => OBSERVER,
            Role::Node(id) => Endpoint::Node(id),
        }
    }
}

/// Why a role stopped before it was told to.
#[derive(Debug, Error)]
pub enum RoleError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The snapshot protocol refused an input.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A peer sent something this role does not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The master has gone: the run is over.
    #[error("the master has gone")]
    MasterGone,
    /// The connection from a peer node closed before the message this node waits for
    /// arrived, which therefore never will; with why, when the transport knows.
    #[error(
        "{}'s connection closed while this node waited for its message{}",
        Endpoint::Node(*.0),
        .1.as_ref().map(|cause| format!(": {cause}")).unwrap_or_default()
    )]
    PeerClosed(NodeId, Option<String>),
}

impl RoleError {
    /// The peer (node or observer) whose departure made the role fail, if that is why
    /// it failed.
    pub fn gone_peer(&self) -> Option<Endpoint> {
        let error = match self {
            RoleError::Transport(error) | RoleError::Node(NodeError::Transport(error)) => error,
            _ => return None,
        };
        match error {
            TransportError::Disconnected(peer) if *peer != MASTER => Some(*peer),
            _ => None,
        }
    }
}

/// After a role could not go on, waits for the master to stop it (or to go), taking
/// in and dropping whatever else arrives. Says whether it ended that way.
pub fn wait_for_stop(transport: &mut dyn Transport<Wire>) -> bool {
    loop {
        match transport.recv() {
            Ok(Incoming::Frame(MASTER, Frame::Control(control))) if is_stop(&control) => {
                return true;
            }
            Ok(Incoming::Departed(MASTER)) | Err(TransportError::Closed) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Whether `control` tells its role to exit.
fn is_stop(control: &Control) -> bool {
    matches!(
        control,
        Control::ToNode(ToNode::Stop) | Control::ToObserver(ToObserver::Stop)
    )
}

/// Runs `role` on `transport` until the master says stop or goes away.
pub fn run(role: Role, transport: &mut dyn Transport<Wire>) -> Result<(), RoleError> {
    let address = Some(transport.address());
    to_master(transport, ToMaster::Hello { address })?;
    let result = match role {
        Role::Node(id) => Branch::new(id).run(transport),
        Role::Observer => Observer::default().run(transport),
    };
    match result {
        // A role outlives its master only by accident (the master was killed): it
        // ends quietly, like a stop.
        Err(RoleError::MasterGone) => Ok(()),
        other => other,
    }
}

/// The next frame for this role. A peer node that has gone is passed over (the master
/// notices deaths and ends the run); the master gone ends the role.
fn next(t: &mut dyn Transport<Wire>) -> Result<(Endpoint, Wire), RoleError> {
    loop {
        if let Incoming::Frame(from, frame) = arrival(t)? {
            return Ok((from, frame));
        }
    }
}

/// The next frame for this role, or a peer that has gone; the master gone ends the
/// role.
fn arrival(t: &mut dyn Transport<Wire>) -> Result<Incoming<Wire>, RoleError> {
    match t.recv() {
        Ok(Incoming::Departed(MASTER)) | Err(TransportError::Closed) => Err(RoleError::MasterGone),
        Ok(Incoming::Departed(peer)) => {
            tracing::debug!(%peer, "peer gone");
            Ok(Incoming::Departed(peer))
        }
        Ok(frame) => Ok(frame),
        Err(error) => Err(error.into()),
    }
}

fn unexpected(from: Endpoint, what: &impl std::fmt::Debug) -> RoleError {
    RoleError::Protocol(format!("unexpected {what:?} from {from}"))
}

/// A bank branch: an [`Account`] driven by snapshot-core's [`Node`].
///
/// Node-to-node traffic is held as it arrives, and handled only when the master says
/// `Take`: that is how the bank simulates delay and reordering.
struct Branch {
    node: Node<Account>,
    /// The local part of the open snapshot, once complete, until the observer collects
    /// it.
    completed: Option<BankLocal>,
    /// The peer nodes whose connection has closed: what they sent has all arrived.
    departed: BTreeSet<NodeId>,
}

impl Branch {
    fn new(id: NodeId) -> Self {
        Branch {
            node: Node::new(id, Account::default()),
            completed: None,
            departed: BTreeSet::new(),
        }
    }

    fn run(mut self, t: &mut dyn Transport<Wire>) -> Result<(), RoleError> {
        loop {
            let Incoming::Frame(from, frame) = self.next(t)? else {
                continue;
            };
            match (from, frame) {
                (Endpoint::Node(peer), Frame::Peer(envelope)) => self.node.hold(peer, envelope),
                (MASTER, Frame::Control(Control::ToNode(ToNode::Stop))) => return Ok(()),
                (MASTER, Frame::Control(Control::ToNode(message))) => {
                    self.on_master(t, message)?;
                }
                (OBSERVER, Frame::Control(Control::ToNode(message))) => {
                    self.on_observer(t, message)?;
                }
                (from, frame) => return Err(unexpected(from, &frame)),
            }
        }
    }

    /// [`arrival`], noting the peer nodes that have gone.
    fn next(&mut self, t: &mut dyn Transport<Wire>) -> Result<Incoming<Wire>, RoleError> {
        let arrival = arrival(t)?;
        if let Incoming::Departed(Endpoint::Node(peer)) = arrival {
            self.departed.insert(peer);
        }
        Ok(arrival)
    }

    fn on_master(&mut self, t: &mut dyn Transport<Wire>, message: ToNode) -> Result<(), RoleError> {
        let answer = match message {
            ToNode::Join {
                balance,
                epoch,
                observer,
                peers,
            } => {
                let account = Account {
                    balance,
                    handled: 0,
                };
                let engine = SnapshotEngine::with_epoch(self.node.id(), epoch);
                self.node = Node::with_engine(engine, account);
                // The observer and every peer at once: over tcp their handshakes
                // overlap.
                let mut to_connect: Vec<(Endpoint, &str)> = Vec::with_capacity(peers.len() + 1);
                if let Some(observer) = &observer {
                    to_connect.push((OBSERVER, observer));
                }
                for peer in &peers {
                    if let Some(address) = &peer.address {
                        to_connect.push((Endpoint::Node(peer.node), address));
                    }
                }
                t.connect_all(&to_connect)?;
                for peer in peers {
                    self.node.add_peer(peer.node).map_err(NodeError::from)?;
                }
                ToMaster::Joined
            }
            ToNode::Connect(peer) => {
                self.connect(t, peer)?;
                ToMaster::Joined
            }
            ToNode::Pay { to, amount } => {
                if self.node.process_mut().withdraw(amount) {
                    self.node.send(t, to, Transfer(amount))?;
                    ToMaster::Paid
                } else {
                    ToMaster::Insufficient
                }
            }
            ToNode::Take { from } => self.take(t, from)?,
            ToNode::PutBack { to, transfers } => {
                for transfer in transfers {
                    self.node.send(t, to, transfer)?;
                }
                ToMaster::PutBack
            }
            // Every frame that had arrived was held on the way to this one.
            ToNode::Settle => ToMaster::Settled,
            other => return Err(unexpected(MASTER, &other)),
        };
        Ok(to_master(t, answer)?)
    }

    fn on_observer(
        &mut self,
        t: &mut dyn Transport<Wire>,
        message: ToNode,
    ) -> Result<(), RoleError> {
        let answer = match message {
            ToNode::TakeSnapshot => {
                let (_, outcome) = self.node.initiate(t)?;
                self.keep(outcome.completed);
                ToObserver::Started {
                    markers: outcome.markers,
                }
            }
            ToNode::Report => ToObserver::Local(self.completed.take().map(Box::new)),
            other => return Err(unexpected(OBSERVER, &other)),
        };
        Ok(to_observer(t, answer)?)
    }

    fn connect(&mut self, t: &mut dyn Transport<Wire>, peer: Peer) -> Result<(), RoleError> {
        if let Some(address) = &peer.address {
            t.connect(Endpoint::Node(peer.node), address)?;
        }
        self.node.add_peer(peer.node).map_err(NodeError::from)?;
        Ok(())
    }

    /// Handles the head message of the channel `from -> self`, waiting for it if it is
    /// still on its way: the master only asks for messages it knows were sent. Fails at
    /// once if `from`'s connection closed without it, rather than let the master wait.
    fn take(&mut self, t: &mut dyn Transport<Wire>, from: NodeId) -> Result<ToMaster, RoleError> {
        let envelope = loop {
            if let Some(envelope) = self.node.take_held(from) {
                break envelope;
            }
            if self.departed.contains(&from) {
                let cause = t.departure_cause(Endpoint::Node(from));
                return Err(RoleError::PeerClosed(from, cause));
            }
            match self.next(t)? {
                Incoming::Frame(Endpoint::Node(peer), Frame::Peer(envelope)) => {
                    self.node.hold(peer, envelope);
                }
                Incoming::Frame(from, frame) => return Err(unexpected(from, &frame)),
                Incoming::Departed(_) => {}
            }
        };
        let what = match &envelope {
            Envelope::App(Transfer(amount)) => Taken::Transfer(*amount),
            Envelope::Marker(_) => Taken::Marker,
        };
        let outcome = self.node.deliver(t, from, envelope)?;
        self.keep(outcome.completed);
        Ok(ToMaster::Took {
            what,
            markers: outcome.markers,
        })
    }

    fn keep(&mut self, completed: Option<BankLocal>) {
        if completed.is_some() {
            self.completed = completed;
        }
    }
}

/// The observer: starts snapshots at the master's request, collects the nodes' local
/// snapshots into a global one, and checks it before keeping it.
#[derive(Default)]
struct Observer {
    nodes: BTreeSet<NodeId>,
    /// All the money in the bank: every snapshot must account for exactly this much.
    total: u64,
    last: Option<BankSnapshot>,
}

impl Observer {
    fn run(mut self, t: &mut dyn Transport<Wire>) -> Result<(), RoleError> {
        loop {
            let (from, frame) = next(t)?;
            let message = match (from, frame) {
                (MASTER, Frame::Control(Control::ToObserver(ToObserver::Stop))) => return Ok(()),
                (MASTER, Frame::Control(Control::ToObserver(message))) => message,
                (from, frame) => return Err(unexpected(from, &frame)),
            };
            let answer = match message {
                ToObserver::AddNode { peer, balance } => {
                    if let Some(address) = &peer.address {
                        t.connect(Endpoint::Node(peer.node), address)?;
                    }
                    self.nodes.insert(peer.node);
                    self.total = self.total.saturating_add(balance);
                    ToMaster::Added
                }
                ToObserver::PutBack { amount } => {
                    self.total = self.total.saturating_add(amount);
                    ToMaster::Added
                }
                ToObserver::Begin(node) => {
                    to_node(t, node, ToNode::TakeSnapshot)?;
                    match expect_from(t, node)? {
                        ToObserver::Started { markers } => ToMaster::Begun { markers },
                        other => return Err(unexpected(Endpoint::Node(node), &other)),
                    }
                }
                ToObserver::Collect => match self.collect(t)? {
                    Ok(snapshot) => {
                        self.last = Some(snapshot);
                        ToMaster::Collected
                    }
                    Err(reason) => ToMaster::Invalid(reason),
                },
                ToObserver::Print => ToMaster::Snapshot(self.last.clone()),
                other => return Err(unexpected(MASTER, &other)),
            };
            to_master(t, answer)?;
        }
    }

    /// Asks every node for its local snapshot and assembles them. The outer error is a
    /// failure of the system; the inner one a snapshot that does not hold together.
    fn collect(
        &self,
        t: &mut dyn Transport<Wire>,
    ) -> Result<Result<BankSnapshot, String>, RoleError> {
        for &node in &self.nodes {
            to_node(t, node, ToNode::Report)?;
        }
        let mut locals = Vec::with_capacity(self.nodes.len());
        let mut missing = Vec::new();
        for _ in 0..self.nodes.len() {
            match next(t)? {
                (
                    Endpoint::Node(node),
                    Frame::Control(Control::ToObserver(ToObserver::Local(local))),
                ) => match local {
                    Some(local) => locals.push(*local),
                    None => missing.push(node),
                },
                (from, frame) => return Err(unexpected(from, &frame)),
            }
        }
        if !missing.is_empty() {
            return Ok(Err(format!(
                "nodes {missing:?} have no completed local snapshot"
            )));
        }
        let Some(id) = locals.first().map(|local| local.id) else {
            return Ok(Err("there are no nodes to collect from".to_string()));
        };
        let snapshot = match GlobalSnapshot::from_locals(id, locals) {
            Ok(snapshot) => snapshot,
            Err(error) => return Ok(Err(error.to_string())),
        };
        match check(&snapshot, self.total) {
            Ok(()) => {}
            // The cut's own error says which snapshot and channel.
            Err(CheckError::Cut { source, .. }) => return Ok(Err(source.to_string())),
            Err(error) => return Ok(Err(error.to_string())),
        }
        Ok(Ok(snapshot))
    }
}

/// The observer's next message, which must come from `node`.
fn expect_from(t: &mut dyn Transport<Wire>, node: NodeId) -> Result<ToObserver, RoleError> {
    match next(t)? {
        (Endpoint::Node(from), Frame::Control(Control::ToObserver(message))) if from == node => {
            Ok(message)
        }
        (from, frame) => Err(unexpected(from, &frame)),
    }
}
