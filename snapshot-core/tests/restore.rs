//! Restoring a snapshot (see `snapshot_core::restore`), for two processes: tokens
//! passed round a one-way ring, recorded as the messages themselves
//! (`Record = Vec<Tokens>`); and wallets on a complete graph that pay each other and
//! thank for each payment, recorded as a ledger of their own that keeps the messages
//! and the coins among them.
//!
//! The check, for both: a snapshot taken right after a restore, before any new
//! traffic, is the one restored from, state for state and channel for channel, on
//! the simulated network and over `transport-mem` with a thread per node. And the
//! restored system runs on to where the original would have gone.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use snapshot_core::restore::{self, Difference};
use snapshot_core::sim::{Order, Sim};
use snapshot_core::topology::Topology;
use snapshot_core::{
    ChannelRecord, Coordinator, CoordinatorEvent, Endpoint, Envelope, Event, Frame, GlobalSnapshot,
    Incoming, LocalSnapshot, Node, NodeError, NodeFrame, NodeId, Outbox, Process, Replay, Restore,
    RestoreError, SnapshotEngine, SnapshotId, Transport, TransportError,
};
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Debug;
use std::time::{Duration, Instant};
use transport_mem::MemNetwork;

// ---------------------------------------------------------------------------------
// The first process: tokens round a one-way ring.
// ---------------------------------------------------------------------------------

const RING: u32 = 4;
const TOKENS_EACH: u64 = 100;

fn ring_ids() -> impl Iterator<Item = NodeId> {
    (1..=RING).map(NodeId)
}

fn next(id: NodeId) -> NodeId {
    NodeId(id.0 % RING + 1)
}

/// Some tokens, and how many more hops they go before they are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tokens {
    count: u64,
    hops: u32,
}

/// A process of the ring: keeps the tokens whose hops have run out, passes the others
/// on. Its state is itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Passer {
    next: NodeId,
    held: u64,
}

impl Process for Passer {
    type Message = Tokens;
    type State = Passer;
    type Record = Vec<Tokens>;

    fn handle(&mut self, _: NodeId, tokens: Tokens, outbox: &mut Outbox<Tokens>) {
        match tokens.hops {
            0 => self.held += tokens.count,
            hops => outbox.send(
                self.next,
                Tokens {
                    hops: hops - 1,
                    ..tokens
                },
            ),
        }
    }
    fn capture(&self) -> Passer {
        self.clone()
    }
    fn record(&self, in_transit: &mut Vec<Tokens>, _: NodeId, tokens: &Tokens) {
        in_transit.push(tokens.clone());
    }
}

impl Restore for Passer {
    fn restore(_: NodeId, state: &Passer) -> Self {
        state.clone()
    }
}

/// Every token, held or in transit, exactly once.
fn ring_accounts(snapshot: &GlobalSnapshot<Passer, Vec<Tokens>>) {
    snapshot.check_cut().unwrap();
    let held: u64 = snapshot.nodes().map(|local| local.state.held).sum();
    let channels = snapshot.channels();
    let in_transit: u64 = channels
        .iter()
        .flat_map(|(_, _, c)| &c.record)
        .map(|t| t.count)
        .sum();
    assert_eq!(held + in_transit, u64::from(RING) * TOKENS_EACH);
}

/// A ring that has taken two snapshots at node 1, and a third, the one returned, that
/// catches tokens in transit on the channel into node 1 (the only channel of a one-way
/// ring whose record can hold anything: every other node records on the marker of its
/// only incoming channel). Also returns the ring's processes once it has run on to
/// the end, from that snapshot: where every token ends up.
fn ring_snapshot(seed: u64) -> (GlobalSnapshot<Passer, Vec<Tokens>>, Vec<Passer>) {
    let ring = Topology::ring(ring_ids());
    let mut sim = Sim::<Passer>::new(seed, &ring, |id| Passer {
        next: next(id),
        held: TOKENS_EACH,
    })
    .unwrap();
    for _ in 0..2 {
        sim.initiate(NodeId(1)).unwrap();
        sim.run_until_quiet(1_000).unwrap();
    }
    for id in ring_ids() {
        for k in 1..=5u32 {
            let count = u64::from(k);
            sim.process_mut(id).unwrap().held -= count;
            let hops = 2 * k + id.0;
            sim.send(id, next(id), Tokens { count, hops }).unwrap();
        }
    }
    // What comes to node 1 waits, until it has recorded.
    let last = NodeId(RING);
    sim.hold(last, NodeId(1)).unwrap();
    sim.run(7).unwrap();
    let id = sim.initiate(NodeId(1)).unwrap();
    sim.run_until_quiet(1_000).unwrap();
    sim.release(last, NodeId(1)).unwrap();
    sim.run_until_quiet(10_000).unwrap();
    let snapshot = sim.take_completed().pop().unwrap();
    assert_eq!(snapshot.id(), id);
    assert_eq!(
        id,
        SnapshotId {
            initiator: NodeId(1),
            seq: 2
        }
    );
    ring_accounts(&snapshot);
    for (from, to, channel) in snapshot.channels() {
        if to == NodeId(1) {
            assert!(channel.messages > 0, "tokens in transit on {from} -> 1");
        } else {
            assert_eq!(channel.messages, 0);
        }
    }
    let end = sim.nodes().map(|node| node.process().clone()).collect();
    (snapshot, end)
}

// ---------------------------------------------------------------------------------
// The second process: wallets that pay each other and say thanks.
// ---------------------------------------------------------------------------------

const WALLETS: u32 = 4;
const COINS_EACH: u64 = 1_000;

fn wallet_ids() -> impl Iterator<Item = NodeId> {
    (1..=WALLETS).map(NodeId)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Pay {
    /// A payment, by its id.
    Coins { id: u64, amount: u64 },
    /// The payee's thanks for a payment.
    Thanks { id: u64 },
}

/// A wallet: its coins, and its payments not yet thanked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Wallet {
    coins: u64,
    unthanked: BTreeSet<u64>,
    paid: u64,
}

impl Wallet {
    /// A payment of `amount` by the wallet of node `me`.
    fn pay(&mut self, me: NodeId, amount: u64) -> Pay {
        self.coins -= amount;
        self.paid += 1;
        let id = u64::from(me.0) * 1_000_000 + self.paid;
        self.unthanked.insert(id);
        Pay::Coins { id, amount }
    }
}

/// What a wallet records of a channel: the messages in transit on it, and the coins
/// among them. Another shape than the messages alone; it replays the messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Ledger {
    coins: u64,
    messages: Vec<Pay>,
}

impl Replay<Pay> for Ledger {
    fn messages(&self) -> impl Iterator<Item = Pay> {
        self.messages.iter().cloned()
    }
}

impl Process for Wallet {
    type Message = Pay;
    type State = Wallet;
    type Record = Ledger;

    fn handle(&mut self, from: NodeId, pay: Pay, outbox: &mut Outbox<Pay>) {
        match pay {
            Pay::Coins { id, amount } => {
                self.coins += amount;
                outbox.send(from, Pay::Thanks { id });
            }
            Pay::Thanks { id } => {
                self.unthanked.remove(&id);
            }
        }
    }
    fn capture(&self) -> Wallet {
        self.clone()
    }
    fn record(&self, ledger: &mut Ledger, _: NodeId, pay: &Pay) {
        if let Pay::Coins { amount, .. } = pay {
            ledger.coins += amount;
        }
        ledger.messages.push(pay.clone());
    }
}

impl Restore for Wallet {
    fn restore(_: NodeId, state: &Wallet) -> Self {
        state.clone()
    }
}

/// Every coin exactly once, and every payment not thanked for yet is in transit,
/// as coins or as thanks, exactly once.
fn wallets_account(snapshot: &GlobalSnapshot<Wallet, Ledger>) {
    snapshot.check_cut().unwrap();
    let held: u64 = snapshot.nodes().map(|local| local.state.coins).sum();
    let channels = snapshot.channels();
    let in_transit: u64 = channels.iter().map(|(_, _, c)| c.record.coins).sum();
    assert_eq!(held + in_transit, u64::from(WALLETS) * COINS_EACH);
    let unthanked: BTreeSet<u64> = snapshot
        .nodes()
        .flat_map(|local| local.state.unthanked.iter().copied())
        .collect();
    let moving: Vec<u64> = channels
        .iter()
        .flat_map(|(_, _, c)| &c.record.messages)
        .map(|pay| match pay {
            Pay::Coins { id, .. } | Pay::Thanks { id } => *id,
        })
        .collect();
    assert_eq!(moving.len(), unthanked.len(), "each payment once");
    assert_eq!(moving.into_iter().collect::<BTreeSet<_>>(), unthanked);
}

/// Four wallets that have taken two snapshots at node 1, and a third, the one
/// returned, that catches payments in transit both ways between nodes 2 and 3 (each
/// of them records on a marker from another node). Also returns the wallets once
/// they have run on to the end, from that snapshot.
fn wallets_snapshot(seed: u64) -> (GlobalSnapshot<Wallet, Ledger>, Vec<Wallet>) {
    let complete = Topology::complete(wallet_ids());
    let mut sim = Sim::<Wallet>::new(seed, &complete, |_| Wallet {
        coins: COINS_EACH,
        ..Wallet::default()
    })
    .unwrap();
    for _ in 0..2 {
        sim.initiate(NodeId(1)).unwrap();
        sim.run_until_quiet(1_000).unwrap();
    }
    for round in 1..=3 {
        for from in wallet_ids() {
            for to in wallet_ids().filter(|&to| to != from) {
                let amount = u64::from(round * from.0 + to.0);
                let pay = sim.process_mut(from).unwrap().pay(from, amount);
                sim.send(from, to, pay).unwrap();
            }
        }
        if round == 2 {
            sim.hold(NodeId(2), NodeId(3)).unwrap();
            sim.hold(NodeId(3), NodeId(2)).unwrap();
        }
        sim.run(5).unwrap();
    }
    let id = sim.initiate(NodeId(1)).unwrap();
    sim.run_until_quiet(10_000).unwrap();
    sim.release(NodeId(2), NodeId(3)).unwrap();
    sim.release(NodeId(3), NodeId(2)).unwrap();
    sim.run_until_quiet(10_000).unwrap();
    let snapshot = sim.take_completed().pop().unwrap();
    assert_eq!(snapshot.id(), id);
    assert_eq!(id.seq, 2);
    wallets_account(&snapshot);
    for (from, to) in [(2, 3), (3, 2)].map(|(a, b)| (NodeId(a), NodeId(b))) {
        let channel = &snapshot.node(to).unwrap().channels[&from];
        assert!(
            channel.messages > 0,
            "payments in transit on {from} -> {to}"
        );
    }
    let end = sim.nodes().map(|node| node.process().clone()).collect();
    (snapshot, end)
}

// ---------------------------------------------------------------------------------
// On the simulated network.
// ---------------------------------------------------------------------------------

/// Saved and loaded again, as an application would.
fn saved<S, R>(snapshot: &GlobalSnapshot<S, R>) -> GlobalSnapshot<S, R>
where
    S: Serialize + DeserializeOwned + PartialEq + Debug,
    R: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = postcard::to_allocvec(snapshot).unwrap();
    let loaded: GlobalSnapshot<S, R> = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(&loaded, snapshot);
    loaded
}

/// Delivers coordination and markers before any application message, for as long as
/// one can be delivered: no node takes a message put back on its channels while
/// another snapshot's marker could reach it first.
fn markers_first<P: Process>(sim: &mut Sim<P>) -> usize
where
    P::Message: Send,
    P::State: Send,
    P::Record: Send,
{
    let mut delivered = 0;
    loop {
        let not_app = sim.ready().into_iter().find(|&(from, to)| {
            !matches!(
                sim.frames(from, to).next(),
                Some(Frame::Peer(Envelope::App(_)))
            )
        });
        match not_app {
            Some((from, to)) => {
                sim.deliver(from, to).unwrap();
            }
            None => {
                if sim.step().unwrap().is_none() {
                    return delivered;
                }
            }
        }
        delivered += 1;
        assert!(delivered < 100_000, "the simulation does not go quiet");
    }
}

/// Restores `snapshot` on a simulation, takes a snapshot at once at its initiator,
/// markers first, and checks it is the one restored from; then runs on to the end.
/// Returns the processes at the end.
fn check_on_sim<P, R>(
    snapshot: &GlobalSnapshot<P, R>,
    accounts: fn(&GlobalSnapshot<P, R>),
) -> Vec<P>
where
    P: Restore<State = P, Record = R> + Clone + PartialEq + Debug + Send,
    P::Message: Send,
    R: Replay<P::Message> + Clone + PartialEq + Debug + Send,
{
    let mut sim = Sim::<P>::restore(5, snapshot).unwrap();
    let old = snapshot.id();
    for node in sim.nodes() {
        assert_eq!(node.engine().epoch(), old.seq + 1, "past the snapshot");
        assert_eq!(node.process(), &snapshot.node(node.id()).unwrap().state);
    }
    // What was in transit is back on its channels, and nothing else.
    for (from, to, channel) in snapshot.channels() {
        assert_eq!(sim.len(from, to), channel.messages as usize);
    }
    let id = sim.initiate(old.initiator).unwrap();
    assert_eq!(
        id,
        SnapshotId {
            initiator: old.initiator,
            seq: old.seq + 1
        }
    );
    markers_first(&mut sim);
    let after = &sim.completed()[0];
    assert_eq!(after.id(), id);
    after.check_cut().unwrap();
    restore::compare(snapshot, after).unwrap();
    accounts(after);
    // The counts start again at the restore: what was put back is all that was sent.
    for (from, to, channel) in after.channels() {
        assert_eq!(after.node(from).unwrap().sent[&to], channel.messages);
        assert_eq!(after.node(to).unwrap().received[&from], 0);
    }
    sim.run_until_quiet(100_000).unwrap();
    sim.nodes().map(|node| node.process().clone()).collect()
}

#[test]
fn a_snapshot_right_after_a_restore_is_the_one_restored_from_on_the_simulation_ring() {
    for seed in 0..8 {
        let (snapshot, end) = ring_snapshot(seed);
        let snapshot = saved(&snapshot);
        let restored_end = check_on_sim(&snapshot, ring_accounts);
        assert_eq!(restored_end, end, "every token ends where it would have");
        let held: u64 = end.iter().map(|p| p.held).sum();
        assert_eq!(held, u64::from(RING) * TOKENS_EACH);
    }
}

#[test]
fn a_snapshot_right_after_a_restore_is_the_one_restored_from_on_the_simulation_wallets() {
    for seed in 0..8 {
        let (snapshot, end) = wallets_snapshot(seed);
        let snapshot = saved(&snapshot);
        let restored_end = check_on_sim(&snapshot, wallets_account);
        assert_eq!(restored_end, end, "every wallet ends as it would have");
        assert!(end.iter().all(|w| w.unthanked.is_empty()));
        let coins: u64 = end.iter().map(|w| w.coins).sum();
        assert_eq!(coins, u64::from(WALLETS) * COINS_EACH);
    }
}

/// Whatever the schedule and whoever starts it, a snapshot after a restore is a
/// consistent cut that accounts for everything (it need not be the restored one: a
/// node may take a message put back before it records).
#[test]
fn any_snapshot_after_a_restore_is_consistent_whatever_the_schedule() {
    let orders = [
        Order::Random,
        Order::Arrival,
        Order::MarkersLast,
        Order::NewestFirst,
    ];
    for seed in 0..16u64 {
        let order = orders[seed as usize % orders.len()];
        let initiator = NodeId(1 + seed as u32 % 4);

        let (snapshot, end) = ring_snapshot(seed);
        let mut sim = Sim::<Passer>::restore(seed, &snapshot).unwrap();
        sim.set_order(order);
        sim.run(seed as usize % 5).unwrap();
        let id = sim.initiate(initiator).unwrap();
        assert!(id.seq > snapshot.id().seq);
        sim.run_until_quiet(100_000).unwrap();
        ring_accounts(&sim.completed()[0]);
        let restored_end: Vec<Passer> = sim.nodes().map(|n| n.process().clone()).collect();
        assert_eq!(restored_end, end);

        let (snapshot, end) = wallets_snapshot(seed);
        let mut sim = Sim::<Wallet>::restore(seed, &snapshot).unwrap();
        sim.set_order(order);
        sim.run(seed as usize % 5).unwrap();
        sim.initiate(initiator).unwrap();
        sim.run_until_quiet(100_000).unwrap();
        wallets_account(&sim.completed()[0]);
        let restored_end: Vec<Wallet> = sim.nodes().map(|n| n.process().clone()).collect();
        assert_eq!(restored_end, end);
    }
}

/// A snapshot that lets a node take a message put back before it records is
/// consistent, and `compare` says how it differs from the restored one.
#[test]
fn compare_tells_a_later_cut_from_the_restored_one() {
    let (snapshot, _) = ring_snapshot(3);
    let mut sim = Sim::<Passer>::restore(3, &snapshot).unwrap();
    // Node 1 takes the first tokens put back on 4 -> 1, then records.
    sim.deliver(NodeId(RING), NodeId(1)).unwrap();
    sim.initiate(NodeId(1)).unwrap();
    markers_first(&mut sim);
    let after = &sim.completed()[0];
    ring_accounts(after);
    let difference = restore::compare(&snapshot, after).unwrap_err();
    assert!(
        matches!(
            difference,
            Difference::State(_) | Difference::Record { .. } | Difference::InTransit { .. }
        ),
        "{difference}"
    );
}

// ---------------------------------------------------------------------------------
// What restoring refuses.
// ---------------------------------------------------------------------------------

/// Forgets the first message of each channel when it replays: a record that lies.
#[derive(Debug, Clone, Default, PartialEq)]
struct Forgetful(Vec<Tokens>);

impl Replay<Tokens> for Forgetful {
    fn messages(&self) -> impl Iterator<Item = Tokens> {
        self.0.iter().skip(1).cloned()
    }
}

struct Lossy(Passer);

impl Process for Lossy {
    type Message = Tokens;
    type State = Passer;
    type Record = Forgetful;
    fn handle(&mut self, from: NodeId, tokens: Tokens, outbox: &mut Outbox<Tokens>) {
        self.0.handle(from, tokens, outbox);
    }
    fn capture(&self) -> Passer {
        self.0.clone()
    }
    fn record(&self, in_transit: &mut Forgetful, _: NodeId, tokens: &Tokens) {
        in_transit.0.push(tokens.clone());
    }
}

impl Restore for Lossy {
    fn restore(_: NodeId, state: &Passer) -> Self {
        Lossy(state.clone())
    }
}

#[test]
fn a_record_that_replays_another_number_of_messages_is_refused() {
    let (snapshot, _) = ring_snapshot(1);
    let locals = snapshot.nodes().map(|local| LocalSnapshot {
        id: local.id,
        node: local.node,
        state: local.state.clone(),
        channels: local
            .channels
            .iter()
            .map(|(&from, c)| {
                let record = Forgetful(c.record.clone());
                (
                    from,
                    ChannelRecord {
                        record,
                        messages: c.messages,
                    },
                )
            })
            .collect(),
        sent: local.sent.clone(),
        received: local.received.clone(),
    });
    let lossy = GlobalSnapshot::from_locals(snapshot.id(), locals).unwrap();
    let recorded = snapshot.node(NodeId(1)).unwrap().channels[&NodeId(RING)].messages;
    match Node::<Lossy>::restore(&lossy, NodeId(RING)) {
        Err(RestoreError::Replay {
            from,
            to,
            recorded: r,
            replayed,
        }) => {
            assert_eq!((from, to), (NodeId(RING), NodeId(1)));
            assert_eq!((r, replayed), (recorded, recorded - 1));
        }
        other => panic!("{other:?}"),
    }
    // Node 2 puts nothing back: nothing of it is lost.
    assert!(Node::<Lossy>::restore(&lossy, NodeId(2)).is_ok());
    assert!(matches!(
        Sim::<Lossy>::restore(1, &lossy),
        Err(RestoreError::Replay { .. })
    ));
}

#[test]
fn an_unknown_node_an_inconsistent_cut_and_an_engine_not_past_the_snapshot_are_refused() {
    let (snapshot, _) = ring_snapshot(2);
    assert!(matches!(
        Node::<Passer>::restore(&snapshot, NodeId(9)),
        Err(RestoreError::UnknownNode {
            node: NodeId(9),
            ..
        })
    ));

    // Node 1 claims to have taken one more message than node 4 sent it.
    let locals = snapshot.nodes().cloned().map(|mut local| {
        if local.node == NodeId(1) {
            *local.received.get_mut(&NodeId(RING)).unwrap() += 1;
        }
        local
    });
    let broken = GlobalSnapshot::from_locals(snapshot.id(), locals).unwrap();
    assert!(matches!(
        Node::<Passer>::restore(&broken, NodeId(2)),
        Err(RestoreError::Inconsistent { .. })
    ));

    let state = snapshot.node(NodeId(1)).unwrap().state.clone();
    let old = SnapshotEngine::with_epoch(NodeId(1), snapshot.id().seq);
    assert!(matches!(
        Node::restore_with(&snapshot, old, state.clone()),
        Err(RestoreError::EpochNotPast { epoch: 2, .. })
    ));
    // A later epoch (a persisted next_seq) is taken as it is.
    let later = SnapshotEngine::with_epoch(NodeId(1), 40).with_max_in_flight(3);
    let restored = Node::restore_with(&snapshot, later, state.clone()).unwrap();
    assert_eq!(restored.node().engine().epoch(), 40);
    assert_eq!(restored.node().engine().max_in_flight(), 3);
    let mut used = SnapshotEngine::with_epoch(NodeId(1), 40);
    used.add_outgoing(NodeId(2)).unwrap();
    assert!(matches!(
        Node::restore_with(&snapshot, used, state),
        Err(RestoreError::EngineInUse(NodeId(1)))
    ));
}

#[test]
fn a_restored_node_knows_its_channels_and_what_it_puts_back() {
    let (snapshot, _) = ring_snapshot(4);
    assert_eq!(restore::topology(&snapshot), Topology::ring(ring_ids()));
    assert_eq!(restore::epoch(&snapshot).unwrap(), 3);
    for id in ring_ids() {
        let restored = Node::<Passer>::restore(&snapshot, id).unwrap();
        let engine = restored.node().engine();
        assert_eq!(
            engine.incoming().collect::<Vec<_>>(),
            [NodeId((id.0 + 2) % RING + 1)]
        );
        assert_eq!(engine.outgoing().collect::<Vec<_>>(), [next(id)]);
        assert_eq!(engine.sent_on(next(id)), Some(0));
        let record = &snapshot.node(next(id)).unwrap().channels[&id].record;
        let replay: Vec<_> = record.iter().map(|t| (next(id), t.clone())).collect();
        assert_eq!(restored.replay(), replay);
    }
}

// ---------------------------------------------------------------------------------
// Over transport-mem, a thread per node.
// ---------------------------------------------------------------------------------

const COORDINATOR: Endpoint = Endpoint::Role(0);
const WAIT: Duration = Duration::from_secs(20);

/// The schedule of the check on a real network: a node takes nothing from a channel
/// on which messages were put back until it has recorded (it has sent markers). What
/// comes on those channels meanwhile waits here, in order; the other channels go on.
/// (The simulation's `markers_first` is the same schedule.)
struct Gate<T, M, S, R> {
    inner: T,
    /// The senders whose channel to this node has messages put back on it.
    gated: BTreeSet<Endpoint>,
    recorded: bool,
    waiting: VecDeque<Incoming<Frame<M, S, R>>>,
}

impl<T, M, S, R> Transport<Frame<M, S, R>> for Gate<T, M, S, R>
where
    T: Transport<Frame<M, S, R>>,
    M: Send,
    S: Send,
    R: Send,
{
    fn local(&self) -> Endpoint {
        self.inner.local()
    }
    fn address(&self) -> String {
        self.inner.address()
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.inner.connect(peer, address)
    }
    fn send(&mut self, to: Endpoint, frame: Frame<M, S, R>) -> Result<(), TransportError> {
        self.recorded |= matches!(frame, Frame::Peer(Envelope::Marker(_)));
        self.inner.send(to, frame)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.inner.flush()
    }
    fn recv(&mut self) -> Result<Incoming<Frame<M, S, R>>, TransportError> {
        loop {
            if let Some(incoming) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(incoming);
            }
        }
    }
    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<Frame<M, S, R>>>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.recorded
                && let Some(incoming) = self.waiting.pop_front()
            {
                return Ok(Some(incoming));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(incoming) = self.inner.recv_timeout(left)? else {
                return Ok(None);
            };
            if !self.recorded && self.gated.contains(&incoming.peer()) {
                self.waiting.push_back(incoming);
            } else {
                return Ok(Some(incoming));
            }
        }
    }
}

/// A node's thread: resumes (puts back what it must), then runs free until told to
/// stop.
fn run<P, T>(restored: snapshot_core::Restored<P>, mut t: T) -> Result<Node<P>, NodeError>
where
    P: Process,
    T: Transport<NodeFrame<P>>,
{
    let mut node = restored.resume(&mut t)?;
    loop {
        if let Event::Control { .. } = node.next_event(&mut t)? {
            return Ok(node);
        }
    }
}

/// Asks the coordinator's initiator for a snapshot and waits for it.
fn take<S, R, M>(
    coordinator: &mut Coordinator<S, R>,
    control: &mut impl Transport<Frame<M, S, R>>,
    initiator: NodeId,
    ask: bool,
) -> GlobalSnapshot<S, R>
where
    S: Debug,
    R: Debug,
{
    if ask {
        coordinator.initiate(control, initiator).unwrap();
    }
    loop {
        match coordinator.next_event(control, WAIT).unwrap() {
            Some(CoordinatorEvent::Started { .. }) => {}
            Some(CoordinatorEvent::Completed(taken)) => return taken.snapshot,
            other => panic!("{other:?}; missing {:?}", coordinator.missing()),
        }
    }
}

/// Restores `snapshot` over transport-mem, a thread per node, with the initiator
/// asked for a snapshot before any node runs; the nodes are gated (see [`Gate`]) if
/// `gated`. Returns the snapshot taken right after the restore, and the processes
/// once the system has run on to the end.
fn restore_over_mem<P, R>(
    snapshot: &GlobalSnapshot<P, R>,
    gated: bool,
) -> (GlobalSnapshot<P, R>, Vec<P>)
where
    P: Restore<State = P, Record = R> + Clone + PartialEq + Debug + Send + 'static,
    P::Message: Send + 'static,
    R: Replay<P::Message> + Clone + Debug + Send + 'static,
{
    let ids: Vec<NodeId> = snapshot.nodes().map(|local| local.node).collect();
    let network = MemNetwork::<NodeFrame<P>>::new();
    let mut control = network.endpoint(COORDINATOR).unwrap();
    let mut transports: Vec<_> = ids
        .iter()
        .map(|&id| network.endpoint(Endpoint::Node(id)).unwrap())
        .collect();
    let addresses: Vec<(Endpoint, String)> = transports
        .iter()
        .map(|t| (t.local(), t.address()))
        .collect();
    for t in &mut transports {
        for (peer, address) in &addresses {
            if *peer != t.local() {
                t.connect(*peer, address).unwrap();
            }
        }
        t.connect(COORDINATOR, &control.address()).unwrap();
        control.connect(t.local(), &t.address()).unwrap();
    }

    // The snapshot is asked for before any node runs, so before anything is put back.
    let initiator = snapshot.id().initiator;
    let mut coordinator = Coordinator::new(ids.iter().copied());
    coordinator.initiate(&mut control, initiator).unwrap();

    let mut threads = Vec::new();
    for (&id, t) in ids.iter().zip(transports) {
        let mut restored = Node::<P>::restore(snapshot, id).unwrap();
        restored.report_to(COORDINATOR);
        let local = snapshot.node(id).unwrap();
        let gated: BTreeSet<Endpoint> = local
            .channels
            .iter()
            .filter(|(_, c)| gated && c.messages > 0)
            .map(|(&from, _)| Endpoint::Node(from))
            .collect();
        threads.push(std::thread::spawn(move || {
            if gated.is_empty() {
                run(restored, t)
            } else {
                let gate = Gate {
                    inner: t,
                    gated,
                    recorded: false,
                    waiting: VecDeque::new(),
                };
                run(restored, gate)
            }
        }));
    }

    let after = take(&mut coordinator, &mut control, initiator, false);
    assert_eq!(after.id().seq, snapshot.id().seq + 1);
    after.check_cut().unwrap();

    // Runs on until a snapshot finds nothing in transit: nothing moves any more.
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let taken = take(&mut coordinator, &mut control, initiator, true);
        taken.check_cut().unwrap();
        if taken.channels().iter().all(|(_, _, c)| c.messages == 0) {
            break taken;
        }
        assert!(
            Instant::now() < deadline,
            "the restored system never settles"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    for &id in &ids {
        control
            .send(Endpoint::Node(id), Frame::Control(()))
            .unwrap();
    }
    control.flush().unwrap();
    let end: Vec<P> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap().unwrap().process().clone())
        .collect();
    let settled: Vec<P> = last.nodes().map(|local| local.state.clone()).collect();
    assert_eq!(settled, end, "the last snapshot is where the nodes stopped");
    (after, end)
}

#[test]
fn a_snapshot_right_after_a_restore_is_the_one_restored_from_over_mem_ring() {
    for seed in 0..4 {
        let (snapshot, end) = ring_snapshot(seed);
        let snapshot = saved(&snapshot);
        // A one-way ring needs no gate: only the channel into the initiator has
        // messages put back, and the initiator is asked before any is.
        let (after, restored_end) = restore_over_mem(&snapshot, false);
        restore::compare(&snapshot, &after).unwrap();
        ring_accounts(&after);
        assert_eq!(restored_end, end, "every token ends where it would have");
    }
}

#[test]
fn a_snapshot_right_after_a_restore_is_the_one_restored_from_over_mem_wallets() {
    for seed in 0..4 {
        let (snapshot, end) = wallets_snapshot(seed);
        let snapshot = saved(&snapshot);
        let (after, restored_end) = restore_over_mem(&snapshot, true);
        restore::compare(&snapshot, &after).unwrap();
        wallets_account(&after);
        assert_eq!(restored_end, end, "every wallet ends as it would have");
    }
}

/// Without the gate the wallets take what was put back as it comes: the snapshot
/// after the restore is another cut, as consistent, and the run ends the same.
#[test]
fn a_restored_system_over_mem_runs_on_to_the_same_end_ungated() {
    let (snapshot, end) = wallets_snapshot(7);
    let (after, restored_end) = restore_over_mem(&snapshot, false);
    wallets_account(&after);
    assert_eq!(restored_end, end);
}

// ---------------------------------------------------------------------------------
// What resuming sends, sync and async.
// ---------------------------------------------------------------------------------

/// A transport that keeps what it is given to send.
#[derive(Default)]
struct Recorder(Vec<(Endpoint, NodeFrame<Passer>)>, bool);

impl Transport<NodeFrame<Passer>> for Recorder {
    fn local(&self) -> Endpoint {
        Endpoint::Node(NodeId(RING))
    }
    fn address(&self) -> String {
        String::new()
    }
    fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    fn send(&mut self, to: Endpoint, frame: NodeFrame<Passer>) -> Result<(), TransportError> {
        self.0.push((to, frame));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.1 = true;
        Ok(())
    }
    fn recv(&mut self) -> Result<Incoming<NodeFrame<Passer>>, TransportError> {
        Err(TransportError::Closed)
    }
    fn recv_timeout(
        &mut self,
        _: Duration,
    ) -> Result<Option<Incoming<NodeFrame<Passer>>>, TransportError> {
        Ok(None)
    }
}

#[async_trait::async_trait]
impl snapshot_core::AsyncTransport<NodeFrame<Passer>> for Recorder {
    fn local(&self) -> Endpoint {
        Transport::local(self)
    }
    fn address(&self) -> String {
        String::new()
    }
    async fn connect(&mut self, _: Endpoint, _: &str) -> Result<(), TransportError> {
        Ok(())
    }
    async fn send(&mut self, to: Endpoint, frame: NodeFrame<Passer>) -> Result<(), TransportError> {
        Transport::send(self, to, frame)
    }
    async fn flush(&mut self) -> Result<(), TransportError> {
        Transport::flush(self)
    }
    async fn recv(&mut self) -> Result<Incoming<NodeFrame<Passer>>, TransportError> {
        Err(TransportError::Closed)
    }
    async fn recv_timeout(
        &mut self,
        _: Duration,
    ) -> Result<Option<Incoming<NodeFrame<Passer>>>, TransportError> {
        Ok(None)
    }
}

/// Resuming sends what the receiver recorded, in its order, before anything else,
/// counted as sent; and flushes.
#[test]
fn resuming_sends_the_recorded_messages_in_order_and_counts_them() {
    let (snapshot, _) = ring_snapshot(6);
    let last = NodeId(RING);
    let recorded = snapshot.node(NodeId(1)).unwrap().channels[&last]
        .record
        .clone();
    let expected: Vec<(Endpoint, NodeFrame<Passer>)> = recorded
        .iter()
        .map(|t| {
            (
                Endpoint::Node(NodeId(1)),
                Frame::Peer(Envelope::App(t.clone())),
            )
        })
        .collect();

    let mut sync = Recorder::default();
    let node = Node::<Passer>::restore(&snapshot, last)
        .unwrap()
        .resume(&mut sync)
        .unwrap();
    assert_eq!(sync.0, expected);
    assert!(sync.1, "flushed");
    assert_eq!(
        node.engine().sent_on(NodeId(1)),
        Some(recorded.len() as u64)
    );

    let mut asynchronous = Recorder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let node = runtime
        .block_on(
            Node::<Passer>::restore(&snapshot, last)
                .unwrap()
                .resume_async(&mut asynchronous),
        )
        .unwrap();
    assert_eq!(asynchronous.0, expected);
    assert!(asynchronous.1, "flushed");
    assert_eq!(
        node.engine().sent_on(NodeId(1)),
        Some(recorded.len() as u64)
    );
}

#[test]
fn a_snapshot_restores_only_if_a_snapshot_can_start_after_it() {
    let alone = |seq| {
        let mut collector = snapshot_core::Collector::<u64, u64>::new([NodeId(1)]);
        collector
            .add(LocalSnapshot {
                id: SnapshotId {
                    initiator: NodeId(1),
                    seq,
                },
                node: NodeId(1),
                state: 5,
                channels: Default::default(),
                sent: Default::default(),
                received: Default::default(),
            })
            .unwrap()
            .expect("one node's part is the whole snapshot")
    };
    assert_eq!(restore::epoch(&alone(7)).unwrap(), 8);
    // The last sequence number an engine gives is u64::MAX - 1 (engine_hardening.rs):
    // an engine numbered from there starts one more snapshot, from u64::MAX none.
    assert_eq!(restore::epoch(&alone(u64::MAX - 2)).unwrap(), u64::MAX - 1);
    for seq in [u64::MAX - 1, u64::MAX] {
        assert!(
            matches!(
                restore::epoch(&alone(seq)),
                Err(RestoreError::SequenceExhausted(id)) if id.seq == seq
            ),
            "{seq}"
        );
    }
}
