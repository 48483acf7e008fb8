//! A load run: the branches started on their threads, the driver taking and checking
//! snapshots while they move money, and the end, where every transfer arrives and the
//! money is counted once more.

use crate::account::{Account, InTransit};
use crate::cause::chain;
use crate::check::check;
use crate::choice::Chooser;
use crate::live::cluster::{Cluster, DRIVER, batch};
use crate::live::layout::{Layout, MAX_NODES};
use crate::live::node::{Begin, LoadNode, NodeResult, Shared};
use crate::live::progress::{self, Figures, Progress};
use crate::live::report::{Latencies, Report};
use crate::live::wire::{Control, Wire, stop_frame};
use crate::protocol::BankSnapshot;
use crate::saved::{self, SavedSnapshot, Stats};
use crate::systems::TransportKind;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use snapshot_core::restore::{self, Restore};
use snapshot_core::topology::Topology;
use snapshot_core::{
    Coordinator, CoordinatorError, CoordinatorEvent, Endpoint, Frame, Node, NodeId, SnapshotEngine,
    SnapshotId, TakenSnapshot, TransportError,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The longest the driver waits without looking at the clock and at signals.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// How long the nodes have, past the snapshots' deadlines, to stop sending and to take
/// in every transfer sent to them, before the run is declared failed.
const END_PATIENCE: Duration = Duration::from_secs(30);

/// How long the thread of a node seen gone has to end, for what it returned to say
/// why the run failed.
const ENDING: Duration = Duration::from_secs(2);

/// How many reasons of failed checks a report keeps.
const FAILURES_KEPT: usize = 10;

/// What the bank opens with.
#[derive(Debug, Clone)]
pub enum Opening {
    /// Branches with their opening balances, on a topology.
    Fresh(Layout),
    /// The bank a saved snapshot recorded: every branch with its recorded balance,
    /// every channel of the snapshot a link, and what was in transit put back on it.
    Restored {
        /// The snapshot.
        snapshot: Box<BankSnapshot>,
        /// All the money of the bank it was taken of.
        total: u64,
    },
}

impl Opening {
    /// The channels the bank runs on.
    pub fn topology(&self) -> Topology {
        match self {
            Opening::Fresh(layout) => layout.topology.clone(),
            Opening::Restored { snapshot, .. } => restore::topology(snapshot),
        }
    }

    /// All the money of the bank.
    pub fn total(&self) -> u64 {
        match self {
            Opening::Fresh(layout) => layout.total(),
            Opening::Restored { total, .. } => *total,
        }
    }
}

/// When the nodes stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// After this long.
    After(Duration),
    /// Once this many transfers have been sent, all nodes together.
    Transfers(u64),
}

/// Ways to make a run misbehave, to show what it does then.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    /// A node that stops handling frames once told to start, until the nodes stop
    /// sending: its parts of snapshots never come in time.
    pub freeze: Option<NodeId>,
    /// Changes every snapshot assembled before it is checked.
    pub tamper: Option<fn(&mut BankSnapshot)>,
    /// A node whose thread fails once told to start, as a node that meets an error.
    pub crash: Option<NodeId>,
}

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The medium.
    pub transport: TransportKind,
    /// What the bank opens with.
    pub opening: Opening,
    /// The topology's name in the summary.
    pub topology_name: String,
    /// When the nodes stop sending.
    pub end: End,
    /// How often a snapshot is started.
    pub snapshot_every: Duration,
    /// The most snapshots in flight at once; a snapshot due beyond it is skipped.
    pub max_concurrent: usize,
    /// How long a snapshot has, from its request to its last part, before it is
    /// aborted.
    pub timeout: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// Where every snapshot assembled is saved, if anywhere.
    pub save: Option<PathBuf>,
    /// Whether the progress line is drawn on standard error.
    pub progress: bool,
    /// Set to a signal's number, ends the run early, as its end would.
    pub interrupt: Option<Arc<AtomicUsize>>,
    /// Ways to make the run misbehave.
    pub hooks: Hooks,
}

impl LoadConfig {
    /// A run of `opening` with the defaults of `master load`: mem, 10 s, a snapshot
    /// every 100 ms, 4 at most in flight, a timeout of 5 s, seed 0, nothing saved, no
    /// progress line.
    pub fn new(opening: Opening, topology_name: impl Into<String>) -> LoadConfig {
        LoadConfig {
            transport: TransportKind::Mem,
            opening,
            topology_name: topology_name.into(),
            end: End::After(Duration::from_secs(10)),
            snapshot_every: Duration::from_millis(100),
            max_concurrent: 4,
            timeout: Duration::from_secs(5),
            seed: 0,
            save: None,
            progress: false,
            interrupt: None,
            hooks: Hooks::default(),
        }
    }
}

/// Why a load did not run to its end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoadError {
    /// The configuration cannot run (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The system failed: a node's thread or the driver (exit status 3).
    #[error("{0}")]
    System(String),
}

impl LoadError {
    /// The exit status: 2 for a usage error, 3 for a failure of the system.
    pub fn status(&self) -> u8 {
        match self {
            LoadError::Usage(_) => 2,
            LoadError::System(_) => 3,
        }
    }
}

/// Runs a load: starts a thread per branch on `config.transport`, lets them move money
/// until the end, starting a snapshot every `snapshot_every` at a random node and
/// checking each one assembled, then stops them and counts the money once more.
///
/// Every thread is joined and every file of the run removed before it returns, however
/// it ends.
pub fn run(config: LoadConfig) -> Result<Report, LoadError> {
    validate(&config)?;
    if let Some(dir) = &config.save {
        std::fs::create_dir_all(dir).map_err(|error| {
            LoadError::Usage(format!("cannot create {}: {error}", dir.display()))
        })?;
    }
    let topology = config.opening.topology();
    let nodes: Vec<NodeId> = topology.nodes().collect();
    let total = config.opening.total();
    let mut begins = begin(&config, &topology)?;
    // Where every node's snapshots are numbered from (`begin` checked the epoch).
    let epoch = match &config.opening {
        Opening::Fresh(_) => 0,
        Opening::Restored { snapshot, .. } => restore::epoch(snapshot).unwrap_or(u64::MAX),
    };
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        budget: match config.end {
            End::Transfers(n) => Some(AtomicU64::new(n)),
            End::After(_) => None,
        },
    });
    // Each transfer carries up to a 256th of an average balance, so that a node
    // holding one can send 256 transfers (a batch, on mem) before it needs money back.
    let max_amount = (total / nodes.len() as u64 / 256).max(1);
    let (thaw_tx, thaw_rx) = crossbeam_channel::bounded::<()>(0);
    let mut cluster: Cluster<Wire, NodeResult> =
        Cluster::spawn(config.transport, &topology, stop_frame, |id| LoadNode {
            begin: begins
                .remove(&id)
                .unwrap_or_else(|| Begin::Fresh(Node::new(id, Account::default()))),
            out: topology.outgoing(id).collect(),
            rng: ChaCha8Rng::seed_from_u64(node_seed(config.seed, id)),
            batch: batch(config.transport),
            max_amount,
            shared: Arc::clone(&shared),
            freeze: (config.hooks.freeze == Some(id)).then(|| thaw_rx.clone()),
            crash: config.hooks.crash == Some(id),
        })
        .map_err(|error| LoadError::System(format!("cannot start the nodes: {}", chain(&error))))?;
    drop(thaw_rx);
    // The driver lets the frozen node go at the end, and drops this before the
    // cluster is dropped (which joins every node) however the run ends.
    let thaw = Some(thaw_tx);
    let mut driver = Driver {
        coordinator: Coordinator::new(nodes.iter().copied()).with_timeout(config.timeout),
        config: &config,
        total,
        tally: Tally::default(),
        next_seq: nodes.iter().map(|&node| (node, epoch)).collect(),
    };
    let outcome = driver.drive(&mut cluster, &shared, thaw, &nodes);
    let (elapsed, transfers, final_balance) = match outcome {
        Ok(figures) => figures,
        Err(failure) => return Err(blame(&mut cluster, failure)),
    };
    for (id, result) in cluster.stop() {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                return Err(LoadError::System(format!("node {id}: {}", chain(&error))));
            }
            Err(_) => return Err(LoadError::System(format!("node {id} panicked"))),
        }
    }
    let tally = driver.tally;
    Ok(Report {
        seed: config.seed,
        transport: config.transport,
        nodes: nodes.len(),
        topology: config.topology_name.clone(),
        total,
        restored_from: restored_id(&config.opening),
        elapsed,
        transfers,
        completed: tally.completed,
        failed: tally.failed,
        aborted: tally.aborted,
        skipped: tally.skipped,
        saved: tally.saved,
        latencies: tally.latencies,
        failures: tally.failures,
        final_balance,
        signal: config
            .interrupt
            .as_ref()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&s| s != 0)
            .and_then(|s| i32::try_from(s).ok()),
    })
}

/// Refuses what cannot run.
fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    let usage = |reason: &str| Err(LoadError::Usage(reason.to_string()));
    if config.snapshot_every.is_zero() {
        return usage("--snapshot-every must be more than 0");
    }
    if config.timeout.is_zero() {
        return usage("--timeout must be more than 0");
    }
    if !(1..=MAX_CONCURRENT).contains(&config.max_concurrent) {
        return Err(LoadError::Usage(format!(
            "--max-concurrent must be from 1 to {MAX_CONCURRENT}"
        )));
    }
    match config.end {
        End::After(d) if d.is_zero() => return usage("--duration must be more than 0"),
        End::Transfers(0) => return usage("--transfers must be more than 0"),
        End::Transfers(_) if config.opening.total() == 0 => {
            return usage("the bank holds no money, so no transfer can be sent");
        }
        _ => {}
    }
    // A layout is checked as it is made; a restored snapshot's channels are checked
    // here.
    let topology = config.opening.topology();
    let nodes = topology.nodes().count();
    if nodes < 2 {
        return usage("a bank needs 2 nodes or more");
    }
    if nodes > MAX_NODES {
        return Err(LoadError::Usage(format!(
            "a load runs at most {MAX_NODES} nodes, not {nodes}"
        )));
    }
    topology.check().map_err(|error| {
        LoadError::Usage(format!(
            "the graph is not strongly connected, so a snapshot could not complete on it: {error}"
        ))
    })?;
    for node in [config.hooks.freeze, config.hooks.crash]
        .into_iter()
        .flatten()
    {
        if !topology.nodes().any(|n| n == node) {
            return Err(LoadError::Usage(format!("node {node} is not in the bank")));
        }
    }
    Ok(())
}

/// The most snapshots a run lets be in flight at once.
pub const MAX_CONCURRENT: usize = 1024;

/// How every node begins: new with its balance, or restored from the snapshot.
fn begin(config: &LoadConfig, topology: &Topology) -> Result<BTreeMap<NodeId, Begin>, LoadError> {
    // Room for the snapshots being aborted besides those in flight.
    let limit = SnapshotEngine::<Account>::DEFAULT_MAX_IN_FLIGHT.max(4 * config.max_concurrent);
    let mut begins = BTreeMap::new();
    for id in topology.nodes() {
        let begin = match &config.opening {
            Opening::Fresh(layout) => {
                let balance = layout.balances.get(&id).copied().unwrap_or(0);
                let engine = SnapshotEngine::new(id).with_max_in_flight(limit);
                let mut node = Node::with_engine(
                    engine,
                    Account {
                        balance,
                        handled: 0,
                    },
                );
                topology
                    .join(&mut node)
                    .map_err(|error| LoadError::Usage(format!("node {id}: {}", chain(&error))))?;
                node.report_to(DRIVER);
                Begin::Fresh(node)
            }
            Opening::Restored { snapshot, .. } => {
                let cannot = |error: &(dyn std::error::Error + 'static)| {
                    LoadError::Usage(format!(
                        "cannot restore node {id} from snapshot {}: {}",
                        snapshot.id(),
                        chain(error)
                    ))
                };
                let epoch = restore::epoch(snapshot).map_err(|e| cannot(&e))?;
                let engine = SnapshotEngine::with_epoch(id, epoch).with_max_in_flight(limit);
                let state = snapshot.node(id).map_or(0, |local| local.state);
                let mut restored =
                    Node::restore_with(snapshot, engine, Account::restore(id, &state))
                        .map_err(|e| cannot(&e))?;
                restored.report_to(DRIVER);
                Begin::Restored(restored)
            }
        };
        begins.insert(id, begin);
    }
    Ok(begins)
}

/// The seed of node `id`'s generator, from the run's.
fn node_seed(seed: u64, id: NodeId) -> u64 {
    seed ^ (u64::from(id.0) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// What ended a run before its end: a node (whose thread says why), or the driver.
enum Failure {
    /// A node left, or could not be reached.
    Node(NodeId, String),
    /// The driver failed.
    Driver(String),
}

impl From<CoordinatorError> for Failure {
    fn from(error: CoordinatorError) -> Self {
        match &error {
            CoordinatorError::Transport(TransportError::Disconnected(Endpoint::Node(id))) => {
                Failure::Node(*id, format!("node {id} left the run"))
            }
            _ => Failure::Driver(format!("driver: {}", chain(&error))),
        }
    }
}

impl From<TransportError> for Failure {
    fn from(error: TransportError) -> Self {
        CoordinatorError::Transport(error).into()
    }
}

/// The failure of a run, said by whoever caused it: a node whose thread ended says
/// why, better than the driver, which only saw it go.
fn blame(cluster: &mut Cluster<Wire, NodeResult>, failure: Failure) -> LoadError {
    let (suspects, otherwise) = match failure {
        Failure::Node(id, what) => (vec![id], what),
        Failure::Driver(what) => (cluster.ended(), what),
    };
    for id in suspects {
        // A node seen gone is ending: its thread is given a moment to.
        let since = Instant::now();
        while !cluster.ended().contains(&id) && since.elapsed() < ENDING {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !cluster.ended().contains(&id) {
            continue;
        }
        match cluster.join(id) {
            Some(Ok(Err(error))) => {
                return LoadError::System(format!("node {id}: {}", chain(&error)));
            }
            Some(Err(_)) => return LoadError::System(format!("node {id} panicked")),
            _ => {}
        }
    }
    LoadError::System(otherwise)
}

/// What the driver counts.
#[derive(Debug, Default)]
struct Tally {
    completed: u64,
    failed: u64,
    aborted: u64,
    skipped: u64,
    saved: u64,
    latencies: Latencies,
    failures: Vec<String>,
    /// A node sent the last transfer of the run's budget.
    spent: bool,
    /// What each node said it sent, once told to finish, and how many of those it
    /// put back after a restore.
    finished: BTreeMap<NodeId, (Vec<(NodeId, u64)>, u64)>,
    /// Each node's balance and transfers taken in, once it has taken all.
    drained: BTreeMap<NodeId, (u64, u64)>,
}

/// The driver: the coordinator and what it counts.
struct Driver<'a> {
    coordinator: Coordinator<u64, InTransit>,
    config: &'a LoadConfig,
    total: u64,
    tally: Tally,
    /// The sequence number of the next snapshot each node starts: a node restored
    /// near the last one has few left, and one due at a node with none is skipped.
    next_seq: BTreeMap<NodeId, u64>,
}

impl Driver<'_> {
    /// Starts the nodes, takes snapshots until the end, and winds the run down:
    /// returns how long the nodes sent, how many transfers, and the balances at the
    /// end, all together.
    fn drive(
        &mut self,
        cluster: &mut Cluster<Wire, NodeResult>,
        shared: &Shared,
        mut thaw: Option<crossbeam_channel::Sender<()>>,
        nodes: &[NodeId],
    ) -> Result<(Duration, u64, u64), Failure> {
        let config = self.config;
        let mut chooser = Chooser::new(config.seed);
        let mut progress = Progress::new(config.progress);
        for &node in nodes {
            cluster.tell(node, Frame::Control(Control::Start))?;
        }
        cluster.driver()?.flush()?;
        let start = Instant::now();
        let deadline = match config.end {
            End::After(d) => start.checked_add(d),
            End::Transfers(_) => None,
        };
        let every = config.snapshot_every;
        let mut next_tick = start.checked_add(every);
        let mut next_draw = start;
        loop {
            let now = Instant::now();
            if now >= next_draw {
                self.show(&mut progress, shared);
                next_draw = now + progress::EVERY;
            }
            if self.tally.spent || deadline.is_some_and(|d| now >= d) || self.interrupted() {
                break;
            }
            if let Some(tick) = next_tick
                && now >= tick
            {
                if self.coordinator.in_flight() < config.max_concurrent {
                    if let Some(&node) = nodes.get(chooser.pick(nodes.len())) {
                        match self.next_seq.get_mut(&node) {
                            Some(seq) if *seq < u64::MAX => {
                                self.coordinator.initiate(cluster.driver()?, node)?;
                                *seq += 1;
                            }
                            _ => self.tally.skipped += 1,
                        }
                    }
                } else {
                    self.tally.skipped += 1;
                }
                // A driver that has fallen behind does not catch up in a burst.
                next_tick = tick
                    .checked_add(every)
                    .map(|next| if next <= now { now + every } else { next });
            }
            let mut wake = now + LOOK_EVERY;
            for at in [next_tick, deadline, Some(next_draw)].into_iter().flatten() {
                wake = wake.min(at);
            }
            let wait = wake.saturating_duration_since(now);
            if let Some(event) = self.coordinator.next_event(cluster.driver()?, wait)? {
                self.take(event)?;
            }
        }
        let elapsed = start.elapsed();
        // The frozen node, if any, goes on.
        drop(thaw.take());

        // Nothing more is sent; snapshots in flight have until their deadline.
        for &node in nodes {
            cluster.tell(node, Frame::Control(Control::Finish))?;
        }
        cluster.driver()?.flush()?;
        let patience = Instant::now() + config.timeout.saturating_mul(2) + END_PATIENCE;
        while self.tally.finished.len() < nodes.len() || self.coordinator.next_deadline().is_some()
        {
            self.wait_until(
                cluster,
                patience,
                "say what they sent",
                |t| &t.finished,
                nodes,
            )?;
        }
        // Every transfer sent arrives.
        let mut expected: BTreeMap<NodeId, u64> = nodes.iter().map(|&n| (n, 0)).collect();
        let mut transfers = 0u64;
        for (sent, replayed) in self.tally.finished.values() {
            for &(to, count) in sent {
                *expected.entry(to).or_default() += count;
                transfers += count;
            }
            transfers = transfers.saturating_sub(*replayed);
        }
        for (&node, &expected) in &expected {
            cluster.tell(node, Frame::Control(Control::Drain { expected }))?;
        }
        cluster.driver()?.flush()?;
        let patience = Instant::now() + END_PATIENCE;
        while self.tally.drained.len() < nodes.len() {
            self.wait_until(
                cluster,
                patience,
                "take in what was sent to them",
                |t| &t.drained,
                nodes,
            )?;
        }
        self.show(&mut progress, shared);
        progress.finish();
        for (node, &(_, handled)) in &self.tally.drained {
            let sent = expected.get(node).copied().unwrap_or(0);
            if handled != sent {
                return Err(Failure::Node(
                    *node,
                    format!("node {node} took in {handled} transfers, but {sent} were sent to it"),
                ));
            }
        }
        let balance = self
            .tally
            .drained
            .values()
            .fold(0u64, |sum, &(balance, _)| sum.saturating_add(balance));
        Ok((elapsed, transfers, balance))
    }

    /// Takes in what comes until `until`; past it, fails naming the nodes missing
    /// from what `answered` picks of the tally.
    fn wait_until<V>(
        &mut self,
        cluster: &mut Cluster<Wire, NodeResult>,
        until: Instant,
        what: &str,
        answered: fn(&Tally) -> &BTreeMap<NodeId, V>,
        nodes: &[NodeId],
    ) -> Result<(), Failure> {
        let now = Instant::now();
        if now >= until {
            let missing: Vec<String> = nodes
                .iter()
                .filter(|n| !answered(&self.tally).contains_key(n))
                .map(|n| n.to_string())
                .collect();
            return Err(Failure::Driver(format!(
                "nodes {} did not {what} in time",
                missing.join(", ")
            )));
        }
        let wait = until.saturating_duration_since(now).min(LOOK_EVERY);
        if let Some(event) = self.coordinator.next_event(cluster.driver()?, wait)? {
            self.take(event)?;
        }
        Ok(())
    }

    fn interrupted(&self) -> bool {
        self.config
            .interrupt
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed) != 0)
    }

    fn show(&self, progress: &mut Progress, shared: &Shared) {
        progress.show(&Figures {
            transfers: shared.sent.load(Ordering::Relaxed),
            completed: self.tally.completed,
            failed: self.tally.failed,
            aborted: self.tally.aborted,
            in_flight: self.coordinator.in_flight(),
            latencies: &self.tally.latencies,
        });
    }

    /// Acts on what the coordinator handed over.
    fn take(&mut self, event: CoordinatorEvent<u64, InTransit, Control>) -> Result<(), Failure> {
        match event {
            CoordinatorEvent::Started { .. } => {}
            CoordinatorEvent::Completed(taken) => self.completed(taken)?,
            CoordinatorEvent::Aborted(aborted) => {
                self.tally.aborted += 1;
                tracing::info!(%aborted, "snapshot aborted");
            }
            CoordinatorEvent::Control {
                from: Endpoint::Node(node),
                control,
            } => match control {
                Control::Spent => self.tally.spent = true,
                Control::Finished { sent, replayed } => {
                    self.tally.finished.insert(node, (sent, replayed));
                }
                Control::Drained { balance, handled } => {
                    self.tally.drained.insert(node, (balance, handled));
                }
                other => {
                    return Err(Failure::Driver(format!(
                        "driver: node {node} sent {other:?}, which only nodes take"
                    )));
                }
            },
            CoordinatorEvent::Control { from, control } => {
                return Err(Failure::Driver(format!("driver: {from} sent {control:?}")));
            }
            CoordinatorEvent::Departed(Endpoint::Node(node)) => {
                return Err(Failure::Node(node, format!("node {node} left the run")));
            }
            CoordinatorEvent::Departed(_) => {}
        }
        Ok(())
    }

    /// Checks a snapshot assembled, counts it, and saves it if asked.
    fn completed(&mut self, taken: TakenSnapshot<u64, InTransit>) -> Result<(), Failure> {
        let TakenSnapshot {
            mut snapshot,
            stats,
        } = taken;
        if let Some(tamper) = self.config.hooks.tamper {
            tamper(&mut snapshot);
        }
        self.tally.completed += 1;
        self.tally.latencies.record(stats.duration);
        let checked = check(&snapshot, self.total);
        if let Err(error) = &checked {
            self.tally.failed += 1;
            tracing::warn!(%error, "a snapshot failed its check");
            if self.tally.failures.len() < FAILURES_KEPT {
                self.tally.failures.push(error.to_string());
            }
        }
        let Some(dir) = &self.config.save else {
            return Ok(());
        };
        let stats = Stats {
            taken_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|d| u64::try_from(d.as_millis()).ok()),
            ..Stats::from(&stats)
        };
        match SavedSnapshot::from_bank(&snapshot, self.total, stats) {
            Ok(saved) => {
                saved::save(dir, &saved).map_err(|error| {
                    Failure::Driver(format!(
                        "cannot save snapshot {}: {}",
                        snapshot.id(),
                        chain(&error)
                    ))
                })?;
                self.tally.saved += 1;
            }
            // Its check has failed already, and says why.
            Err(_) if checked.is_err() => {}
            Err(error) => {
                return Err(Failure::Driver(format!(
                    "cannot save snapshot {}: {error}",
                    snapshot.id()
                )));
            }
        }
        Ok(())
    }
}

/// The id of the snapshot a run was restored from, for its summary.
fn restored_id(opening: &Opening) -> Option<SnapshotId> {
    match opening {
        Opening::Restored { snapshot, .. } => Some(snapshot.id()),
        Opening::Fresh(_) => None,
    }
}
