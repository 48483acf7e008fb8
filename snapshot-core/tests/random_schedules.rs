#![cfg(feature = "sim")]
//! Property test: on random schedules over random strongly connected topologies, every
//! snapshot the engines take is exactly the one Chandy and Lamport define.
//!
//! Each generated case has 2 to 8 nodes on a directed ring plus random extra edges
//! (sometimes the complete graph), and a schedule of steps: send money `i -> j` (if the
//! sender's balance covers it), deliver the head of a non-empty channel, start a
//! snapshot at any node (so several snapshots are in flight at once, and one node may
//! have several of its own in flight). At the end every channel is drained.
//!
//! The nodes are real [`Node`](snapshot_core::Node)s on the simulated network of
//! [`snapshot_core::sim`] (feature `sim`), whose every delivery the schedule chooses.
//! The test keeps a plain sequential model beside them: every message has a
//! unique id, the time it was sent and the time it was received, and every snapshot
//! has the time each node recorded for it. From that alone it knows what each snapshot
//! must contain, and checks every snapshot:
//!
//! - (a) [`GlobalSnapshot::check_cut`] accepts it;
//! - (b) money is conserved: the recorded balances plus the money recorded in transit
//!   equal the money in the system;
//! - (c) the record of each channel `i -> j` is exactly the messages sent on it before
//!   `i` recorded and received after `j` recorded, in order; each node's recorded
//!   balance and sent/received counts are those of the moment it recorded;
//! - (d) every initiated snapshot completes at every node, and nothing stays in
//!   flight.
//!
//! A second test proves the property is not vacuous: the same generator and checks
//! with a broken channel, on which a marker overtakes the messages ahead of it (not
//! FIFO: the simulation's `deliver_nth`, a fault injection), must find a
//! counterexample, and that counterexample must break (a), (b) and (c), while the
//! same schedule on FIFO channels passes.
//!
//! The seed is fixed and failures are not persisted, so runs are deterministic.
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` override the number of cases and the seed
//! for longer or different explorations.

use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestError, TestRunner};
use snapshot_core::sim::{Sim, SimError};
use snapshot_core::topology::Topology;
use snapshot_core::{
    Endpoint, Envelope, Frame, GlobalSnapshot, NodeId, Outbox, Process, SnapshotId,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

const SEED: u64 = 0x5eed_c4a2_d71a_3b01;
const MAX_NODES: usize = 8;
const INITIAL_BALANCE: u64 = 100;

fn config() -> ProptestConfig {
    // `default()` reads PROPTEST_CASES and PROPTEST_RNG_SEED; the seed is fixed unless
    // one is given.
    let mut config = ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        fork: false,
        timeout: 0,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

// ---------------------------------------------------------------------------------
// The application: a bank whose channel records list every message caught.
// ---------------------------------------------------------------------------------

/// A transfer, with the unique id the model knows it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transfer {
    id: usize,
    amount: u64,
}

struct Bank(u64);

impl Process for Bank {
    type Message = Transfer;
    type State = u64;
    /// `(message id, amount)` of every transfer caught in transit, in order.
    type Record = Vec<(usize, u64)>;

    fn handle(&mut self, _from: NodeId, transfer: Transfer, _outbox: &mut Outbox<Transfer>) {
        self.0 += transfer.amount;
    }
    fn capture(&self) -> u64 {
        self.0
    }
    fn record(&self, record: &mut Self::Record, _from: NodeId, transfer: &Transfer) {
        record.push((transfer.id, transfer.amount));
    }
}

type Global = GlobalSnapshot<u64, Vec<(usize, u64)>>;

// ---------------------------------------------------------------------------------
// Generated cases.
// ---------------------------------------------------------------------------------

/// One step of a schedule. Fields are raw choices, reduced modulo what exists when
/// the step runs (so every shrunk schedule is still valid); a step with nothing to do
/// (no money, no message in transit) is skipped.
#[derive(Debug, Clone, Copy)]
enum Step {
    Send { from: usize, to: usize, amount: u64 },
    Deliver { channel: usize },
    Initiate { node: usize },
}

#[derive(Debug, Clone)]
struct Case {
    nodes: usize,
    complete: bool,
    /// Edges added to the ring `0 -> 1 -> ... -> nodes-1 -> 0`.
    extra_edges: Vec<(usize, usize)>,
    steps: Vec<Step>,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..MAX_NODES, 0..MAX_NODES, 1..=40u64)
            .prop_map(|(from, to, amount)| Step::Send { from, to, amount }),
        5 => (0..64usize).prop_map(|channel| Step::Deliver { channel }),
        1 => (0..MAX_NODES).prop_map(|node| Step::Initiate { node }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        2..=MAX_NODES,
        prop::bool::weighted(0.2),
        prop::collection::vec((0..MAX_NODES, 0..MAX_NODES), 0..12),
        prop::collection::vec(step(), 0..160),
    )
        .prop_map(|(nodes, complete, extra_edges, steps)| Case {
            nodes,
            complete,
            extra_edges,
            steps,
        })
}

// ---------------------------------------------------------------------------------
// The simulation and its model.
// ---------------------------------------------------------------------------------

/// How a channel hands out its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The head, as the algorithm requires.
    Fifo,
    /// Broken on purpose: the first marker in the channel, if any, jumps ahead of the
    /// messages in front of it.
    MarkerOvertakes,
}

/// What the model knows of one message.
struct Sent {
    from: usize,
    to: usize,
    amount: u64,
    sent_at: u64,
    received_at: Option<u64>,
}

/// One event of a run, for failure reports.
enum Event {
    Send {
        from: NodeId,
        to: NodeId,
        id: usize,
        amount: u64,
    },
    Transfer {
        from: NodeId,
        to: NodeId,
        id: usize,
    },
    Marker {
        from: NodeId,
        to: NodeId,
        id: SnapshotId,
    },
    Initiate {
        node: NodeId,
        id: SnapshotId,
    },
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Send {
                from,
                to,
                id,
                amount,
            } => write!(f, "{from} sends transfer #{id} of {amount} to {to}"),
            Event::Transfer { from, to, id } => write!(f, "{to} takes transfer #{id} from {from}"),
            Event::Marker { from, to, id } => write!(f, "{to} takes marker {id} from {from}"),
            Event::Initiate { node, id } => write!(f, "{node} initiates {id}"),
        }
    }
}

/// What went wrong, by check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    /// (a) `check_cut`, or assembling the global snapshot.
    Cut,
    /// (b) money conservation.
    Money,
    /// (c) a channel's record.
    Channel,
    /// (c) a node's recorded balance or counts.
    Node,
    /// (d) a snapshot that did not complete everywhere.
    Completion,
    /// A node (its engine) refused an input, or the simulation failed.
    Engine,
}

struct Violation {
    check: Check,
    what: String,
}

impl fmt::Debug for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.check, self.what)
    }
}

/// What a run exercised, to show the generator covers what it claims to.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    snapshots: usize,
    /// Snapshots that caught at least one message in transit.
    caught_in_transit: usize,
    /// Most snapshots in flight at one node at once.
    max_in_flight: usize,
    /// Whether one node had two of its own snapshots in flight at once.
    same_initiator_concurrent: bool,
    skipped_sends: usize,
}

/// A run: real nodes on the simulated network, and the model beside them.
struct Harness {
    ids: Vec<NodeId>,
    index: BTreeMap<NodeId, usize>,
    /// Outgoing channels of each node, by receiver index.
    outgoing: Vec<Vec<usize>>,
    /// Every channel, by indices, in order.
    links: Vec<(usize, usize)>,
    sim: Sim<Bank>,
    delivery: Delivery,
    clock: u64,
    /// Every message, by id.
    sent: Vec<Sent>,
    /// When each node recorded, by snapshot.
    recorded_at: BTreeMap<SnapshotId, BTreeMap<usize, u64>>,
    initiated: Vec<SnapshotId>,
    trace: Vec<Event>,
    coverage: Coverage,
}

/// A failure of the nodes or the simulation, as a violation: a part that does not fit
/// its snapshot is (a); anything else is a refused input.
fn violation(error: SimError) -> Violation {
    let check = match error {
        SimError::Snapshot(_) => Check::Cut,
        _ => Check::Engine,
    };
    Violation {
        check,
        what: error.to_string(),
    }
}

impl Harness {
    fn new(case: &Case, delivery: Delivery) -> Self {
        let n = case.nodes;
        // Non-contiguous ids, so that numeric order matters (1, 8, 15, ...).
        let ids: Vec<_> = (0..n).map(|i| NodeId(7 * i as u32 + 1)).collect();
        let mut edges = BTreeSet::new();
        for i in 0..n {
            edges.insert((i, (i + 1) % n));
        }
        for &(a, b) in &case.extra_edges {
            edges.insert((a % n, b % n));
        }
        if case.complete {
            for i in 0..n {
                for j in 0..n {
                    edges.insert((i, j));
                }
            }
        }
        edges.retain(|&(i, j)| i != j);

        let mut topology = Topology::default();
        let mut outgoing = vec![Vec::new(); n];
        for &(i, j) in &edges {
            topology.link(ids[i], ids[j]);
            outgoing[i].push(j);
        }
        // The schedule chooses every delivery: the simulation's generator is unused.
        let sim = Sim::new(0, &topology, |_| Bank(INITIAL_BALANCE)).expect("a new simulation");
        Harness {
            index: ids.iter().enumerate().map(|(i, &id)| (id, i)).collect(),
            ids,
            outgoing,
            links: edges.into_iter().collect(),
            sim,
            delivery,
            clock: 0,
            sent: Vec::new(),
            recorded_at: BTreeMap::new(),
            initiated: Vec::new(),
            trace: Vec::new(),
            coverage: Coverage::default(),
        }
    }

    fn total(&self) -> u64 {
        INITIAL_BALANCE * self.ids.len() as u64
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Node `node` recorded its state for `id` at time `at`.
    fn recorded(&mut self, node: usize, at: u64, id: SnapshotId) {
        let first = self.recorded_at.entry(id).or_default().insert(node, at);
        assert!(first.is_none(), "{id} recorded twice at node {node}");
    }

    fn run_step(&mut self, step: Step) -> Result<(), SimError> {
        let n = self.ids.len();
        match step {
            Step::Send { from, to, amount } => {
                let from = from % n;
                let to = self.outgoing[from][to % self.outgoing[from].len()];
                let (sender, receiver) = (self.ids[from], self.ids[to]);
                if self.sim.process(sender)?.0 < amount {
                    self.coverage.skipped_sends += 1;
                    return Ok(());
                }
                let at = self.tick();
                let id = self.sent.len();
                self.sim.process_mut(sender)?.0 -= amount;
                self.sim.send(sender, receiver, Transfer { id, amount })?;
                self.sent.push(Sent {
                    from,
                    to,
                    amount,
                    sent_at: at,
                    received_at: None,
                });
                self.trace.push(Event::Send {
                    from: sender,
                    to: receiver,
                    id,
                    amount,
                });
            }
            Step::Deliver { channel } => {
                let busy = self.sim.ready();
                if !busy.is_empty() {
                    let (from, to) = busy[channel % busy.len()];
                    self.deliver(from, to)?;
                }
            }
            Step::Initiate { node } => {
                let node = node % n;
                let at = self.tick();
                let id = self.sim.initiate(self.ids[node])?;
                self.initiated.push(id);
                self.trace.push(Event::Initiate {
                    node: self.ids[node],
                    id,
                });
                self.recorded(node, at, id);
            }
        }
        self.observe_concurrency();
        Ok(())
    }

    fn deliver(&mut self, from: Endpoint, to: Endpoint) -> Result<(), SimError> {
        let (Endpoint::Node(sender), Endpoint::Node(receiver)) = (from, to) else {
            panic!("a channel between nodes: {from} -> {to}");
        };
        let is_marker = |frame: &&Frame<_, _, _>| matches!(frame, Frame::Peer(Envelope::Marker(_)));
        let position = match self.delivery {
            Delivery::Fifo => 0,
            Delivery::MarkerOvertakes => self
                .sim
                .frames(sender, receiver)
                .position(|frame| is_marker(&frame))
                .unwrap_or(0),
        };
        let event = match self.sim.frames(sender, receiver).nth(position) {
            Some(Frame::Peer(Envelope::App(transfer))) => Event::Transfer {
                from: sender,
                to: receiver,
                id: transfer.id,
            },
            Some(Frame::Peer(Envelope::Marker(id))) => Event::Marker {
                from: sender,
                to: receiver,
                id: *id,
            },
            other => panic!("only transfers and markers travel, not {other:?}"),
        };
        let received = match event {
            Event::Transfer { id, .. } => Some(id),
            _ => None,
        };
        self.trace.push(event);
        let at = self.tick();
        let delivered = match self.delivery {
            Delivery::Fifo => self.sim.deliver(sender, receiver)?,
            // Fault injection: the first marker jumps the messages ahead of it.
            Delivery::MarkerOvertakes => self.sim.deliver_nth(sender, receiver, position)?,
        };
        if let Some(id) = received {
            self.sent[id].received_at = Some(at);
        }
        if let Some(id) = delivered.started {
            self.recorded(self.index[&receiver], at, id);
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<(), SimError> {
        loop {
            let busy = self.sim.ready();
            if busy.is_empty() {
                return Ok(());
            }
            for (from, to) in busy {
                self.deliver(from, to)?;
            }
        }
    }

    fn observe_concurrency(&mut self) {
        for node in self.sim.nodes() {
            let in_flight: Vec<_> = node.engine().in_flight().collect();
            let c = &mut self.coverage;
            c.max_in_flight = c.max_in_flight.max(in_flight.len());
            c.same_initiator_concurrent |= in_flight
                .iter()
                .filter(|id| id.initiator == node.id())
                .count()
                >= 2;
        }
    }

    /// Runs `case` and checks every snapshot against the model.
    fn run(case: &Case, delivery: Delivery) -> (Harness, Vec<Violation>) {
        let mut run = Harness::new(case, delivery);
        let result = case
            .steps
            .iter()
            .try_for_each(|&step| run.run_step(step))
            .and_then(|()| run.drain());
        let violations = match result {
            Ok(()) => run.verify(),
            Err(error) => vec![violation(error)],
        };
        (run, violations)
    }

    fn verify(&mut self) -> Vec<Violation> {
        let mut violations = Vec::new();
        let mut fail = |check, what: String| violations.push(Violation { check, what });
        let n = self.ids.len();

        // The model: messages by channel, in the order they were sent.
        let mut by_channel: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (id, sent) in self.sent.iter().enumerate() {
            by_channel.entry((sent.from, sent.to)).or_default().push(id);
        }

        for node in self.sim.nodes() {
            let left: Vec<_> = node.engine().in_flight().collect();
            if !left.is_empty() {
                fail(
                    Check::Completion,
                    format!("node {} still has {left:?} in flight", node.id()),
                );
            }
        }
        let incomplete = self.sim.incomplete();
        if !incomplete.is_empty() {
            fail(
                Check::Completion,
                format!("parts of snapshots never assembled, missing: {incomplete:?}"),
            );
        }
        let completed: BTreeMap<SnapshotId, &Global> = self
            .sim
            .completed()
            .iter()
            .map(|global| (global.id(), global))
            .collect();
        if completed.len() != self.sim.completed().len() {
            fail(Check::Completion, "a snapshot was assembled twice".into());
        }
        if completed.keys().any(|id| !self.initiated.contains(id)) {
            fail(
                Check::Completion,
                "a snapshot nobody initiated completed".into(),
            );
        }

        for &id in &self.initiated {
            self.coverage.snapshots += 1;
            // Assembled by the simulation's collector: one part from each node.
            let Some(&global) = completed.get(&id) else {
                fail(Check::Completion, format!("{id}: not assembled"));
                continue;
            };
            debug_assert_eq!(global.nodes().count(), n);
            let recorded_at = &self.recorded_at[&id];

            // (a) The engines' own consistency check.
            if let Err(error) = global.check_cut() {
                fail(Check::Cut, format!("{id}: {error}"));
            }

            // (b) Money.
            let balances: u64 = global.nodes().map(|l| l.state).sum();
            let in_transit: u64 = global
                .channels()
                .iter()
                .flat_map(|(_, _, ch)| ch.record.iter().map(|&(_, amount)| amount))
                .sum();
            if balances + in_transit != self.total() {
                fail(
                    Check::Money,
                    format!(
                        "{id}: {balances} in balances + {in_transit} in transit != {}",
                        self.total()
                    ),
                );
            }
            if in_transit > 0 {
                self.coverage.caught_in_transit += 1;
            }

            // (c) Each channel, against the model.
            let channels: Vec<_> = global
                .channels()
                .iter()
                .map(|&(from, to, _)| (self.index[&from], self.index[&to]))
                .collect();
            let expected_channels = self.links.clone();
            if channels != expected_channels {
                fail(
                    Check::Channel,
                    format!("{id}: channels {channels:?}, expected {expected_channels:?}"),
                );
            }
            for (from, to, record) in global.channels() {
                let (i, j) = (self.index[&from], self.index[&to]);
                let expected: Vec<_> = by_channel
                    .get(&(i, j))
                    .into_iter()
                    .flatten()
                    .map(|&m| (m, &self.sent[m]))
                    .filter(|(_, s)| {
                        s.sent_at < recorded_at[&i]
                            && s.received_at.is_none_or(|r| r > recorded_at[&j])
                    })
                    .map(|(m, s)| (m, s.amount))
                    .collect();
                if record.record != expected || record.messages != expected.len() as u64 {
                    fail(
                        Check::Channel,
                        format!(
                            "{id}: channel ({from} -> {to}) recorded {:?} ({} messages), \
                             expected {expected:?}",
                            record.record, record.messages
                        ),
                    );
                }
            }

            // (c) Each node's balance and counts, as of the moment it recorded.
            for local in global.nodes() {
                let j = self.index[&local.node];
                let at = recorded_at[&j];
                let mut balance = INITIAL_BALANCE;
                let mut sent = BTreeMap::new();
                let mut received = BTreeMap::new();
                for &(a, b) in &self.links {
                    if a == j {
                        sent.insert(self.ids[b], 0);
                    }
                    if b == j {
                        received.insert(self.ids[a], 0);
                    }
                }
                for s in &self.sent {
                    if s.from == j && s.sent_at < at {
                        balance -= s.amount;
                        *sent.get_mut(&self.ids[s.to]).unwrap() += 1;
                    }
                    if s.to == j && s.received_at.is_some_and(|r| r < at) {
                        balance += s.amount;
                        *received.get_mut(&self.ids[s.from]).unwrap() += 1;
                    }
                }
                if (local.state, &local.sent, &local.received) != (balance, &sent, &received) {
                    fail(
                        Check::Node,
                        format!(
                            "{id}: node {} recorded balance {} sent {:?} received {:?}, \
                             expected {balance} {sent:?} {received:?}",
                            local.node, local.state, local.sent, local.received
                        ),
                    );
                }
            }
        }
        violations
    }
}

/// The property, as a proptest test case.
fn property(case: &Case, delivery: Delivery) -> Result<Coverage, TestCaseError> {
    let (sim, violations) = Harness::run(case, delivery);
    if violations.is_empty() {
        return Ok(sim.coverage);
    }
    Err(TestCaseError::fail(format!(
        "{} violation(s), first ones: {:#?}\nrun: {:#?}",
        violations.len(),
        &violations[..violations.len().min(5)],
        sim.trace
    )))
}

#[test]
fn every_snapshot_of_a_random_fifo_schedule_matches_the_model() {
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let totals = RefCell::new(Vec::new());
    let shapes = RefCell::new(BTreeSet::new());
    let result = runner.run(&case(), |case| {
        let coverage = property(&case, Delivery::Fifo)?;
        totals.borrow_mut().push(coverage);
        shapes.borrow_mut().insert((case.nodes, case.complete));
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }

    // The generator reaches what the property claims to cover.
    let totals = totals.into_inner();
    let shapes = shapes.into_inner();
    let sum = |f: fn(&Coverage) -> usize| totals.iter().map(f).sum::<usize>();
    let (snapshots, caught) = (sum(|c| c.snapshots), sum(|c| c.caught_in_transit));
    println!(
        "{} cases, {snapshots} snapshots, {caught} caught money in transit, shapes {shapes:?}",
        totals.len()
    );
    assert_eq!(totals.len(), cases as usize);
    if cases >= 128 {
        assert!(
            snapshots >= 4 * totals.len(),
            "too few snapshots: {snapshots}"
        );
        assert!(
            caught >= snapshots / 4,
            "too few snapshots caught money in transit"
        );
        assert!(totals.iter().any(|c| c.max_in_flight >= 4));
        assert!(totals.iter().any(|c| c.same_initiator_concurrent));
        assert!(totals.iter().any(|c| c.skipped_sends > 0));
        for nodes in 2..=MAX_NODES {
            assert!(shapes.contains(&(nodes, false)), "no ring of {nodes}");
        }
        assert!(shapes.iter().filter(|(_, complete)| *complete).count() >= 4);
    }
}

#[test]
fn the_checks_catch_a_marker_overtaking_a_message() {
    let mut runner = TestRunner::new(config());
    let result = runner.run(&case(), |case| {
        property(&case, Delivery::MarkerOvertakes).map(|_| ())
    });
    let minimal = match result {
        Err(TestError::Fail(_, minimal)) => minimal,
        other => panic!("non-FIFO channels went unnoticed: {other:?}"),
    };

    let (broken, violations) = Harness::run(&minimal, Delivery::MarkerOvertakes);
    println!("minimal counterexample: {:#?}", broken.trace);
    println!("violations: {violations:#?}");
    let checks: BTreeSet<_> = violations.iter().map(|v| v.check).collect();
    for check in [Check::Cut, Check::Money, Check::Channel] {
        assert!(
            checks.contains(&check),
            "{check:?} did not notice: {violations:#?}"
        );
    }
    // The engine itself cannot tell: it accepted every input and completed everything.
    assert!(!checks.contains(&Check::Engine));
    assert!(!checks.contains(&Check::Completion));
    // And the schedule is fine on FIFO channels: the reordering is the culprit.
    let (_, fifo) = Harness::run(&minimal, Delivery::Fifo);
    assert!(fifo.is_empty(), "{fifo:#?}");
}
