//! The rules that harden [`SnapshotEngine`] against inputs a correct peer never sends
//! and against unbounded growth, each with tests that fail on the engine before them:
//!
//! - a marker that names this node as the initiator of a snapshot it never started (a
//!   sequence number not issued yet, or below its epoch) is refused with
//!   [`EngineError::ForgedSnapshot`], instead of starting a recording nobody asked for
//!   that could block the real snapshot of that id;
//! - a node records at most `max_in_flight` snapshots at once (64 by default):
//!   `initiate` and a marker that would start one more are refused with
//!   [`EngineError::TooManyInFlight`];
//! - the sequence numbers of a node's snapshots start at its epoch, so a restarted node's
//!   new snapshots do not collide with its earlier ones: its peers accept them, still
//!   refuse repeated markers of the old ones, and remember both compactly;
//! - the engine is `Clone` and `Eq`: a clone fed the same inputs stays equal.
//!
//! Every refusal is checked to leave the engine exactly as it was (`==` on a clone
//! taken before the input).

use snapshot_core::{
    Action, EngineError, LocalSnapshot, NodeId, Outbox, Process, SnapshotEngine, SnapshotId,
};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

/// A process holding some money; a channel's record is every amount caught on it, in
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Money(u64);

impl Process for Money {
    type Message = u64;
    type State = u64;
    type Record = Vec<u64>;

    fn handle(&mut self, _from: NodeId, amount: u64, _outbox: &mut Outbox<u64>) {
        self.0 += amount;
    }
    fn capture(&self) -> u64 {
        self.0
    }
    fn record(&self, record: &mut Vec<u64>, _from: NodeId, amount: &u64) {
        record.push(*amount);
    }
}

type Engine = SnapshotEngine<Money>;
type Act = Action<u64, Vec<u64>>;
type Local = LocalSnapshot<u64, Vec<u64>>;

fn n(id: u32) -> NodeId {
    NodeId(id)
}

fn sid(initiator: u32, seq: u64) -> SnapshotId {
    SnapshotId {
        initiator: n(initiator),
        seq,
    }
}

/// `engine` with the given incoming and outgoing channels.
fn wired(mut engine: Engine, incoming: &[u32], outgoing: &[u32]) -> Engine {
    for &from in incoming {
        engine.add_incoming(n(from)).unwrap();
    }
    for &to in outgoing {
        engine.add_outgoing(n(to)).unwrap();
    }
    engine
}

/// A new engine for node `me` with the given channels.
fn engine(me: u32, incoming: &[u32], outgoing: &[u32]) -> Engine {
    wired(SnapshotEngine::new(n(me)), incoming, outgoing)
}

/// The actions that start snapshot `id` at a node with outgoing channels `to`.
fn started(id: SnapshotId, to: &[u32]) -> Vec<Act> {
    let mut actions = vec![Action::Recorded { id }];
    actions.extend(to.iter().map(|&to| Action::SendMarker { to: n(to), id }));
    actions
}

/// The local snapshot out of actions that must end with `Complete`.
fn completed(mut actions: Vec<Act>) -> Local {
    match actions.pop() {
        Some(Action::Complete(local)) => local,
        other => panic!("expected the actions to end with Complete, got {other:?}"),
    }
}

fn in_flight(engine: &Engine) -> Vec<SnapshotId> {
    engine.in_flight().collect()
}

/// Feeds `input` to `engine`, which must refuse it and stay exactly as it was; returns
/// the error.
fn refuse<T: Debug>(
    engine: &mut Engine,
    input: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
) -> EngineError {
    let before = engine.clone();
    let error = input(engine).expect_err("the input must be refused");
    assert_eq!(*engine, before, "refusing {error:?} changed the engine");
    error
}

fn forged(id: SnapshotId, from: u32) -> EngineError {
    EngineError::ForgedSnapshot { id, from: n(from) }
}

fn too_many(node: u32, limit: usize, id: Option<SnapshotId>) -> EngineError {
    EngineError::TooManyInFlight {
        node: n(node),
        limit,
        id,
    }
}

fn duplicate(id: SnapshotId, from: u32, to: u32) -> EngineError {
    EngineError::DuplicateMarker {
        id,
        from: n(from),
        to: n(to),
    }
}

// ---------------------------------------------------------------------------------
// 1. Forged markers of this node's own snapshots.
// ---------------------------------------------------------------------------------

#[test]
fn a_marker_of_an_own_snapshot_not_issued_yet_is_refused_and_changes_nothing() {
    let mut e = engine(1, &[2, 3], &[2, 3]);
    let p = Money(10);
    // Node 1 has started no snapshot: 1#0 is not one of its snapshots.
    let error = refuse(&mut e, |e| e.on_marker(n(2), sid(1, 0), &p));
    assert_eq!(error, forged(sid(1, 0), 2));
    assert!(in_flight(&e).is_empty());
    let message = error.to_string();
    assert!(
        message.contains("1#0") && message.contains("never started"),
        "{message}"
    );

    // Its first snapshot is 1#0, and markers of it are accepted ...
    let (own, actions) = e.initiate(&p).unwrap();
    assert_eq!(own, sid(1, 0));
    assert_eq!(actions, started(own, &[2, 3]));
    assert_eq!(e.on_marker(n(2), own, &p), Ok(vec![]));
    // ... but not of the ones it has yet to issue, however far.
    for seq in [1, 2, 1000, u64::MAX] {
        let id = sid(1, seq);
        assert_eq!(refuse(&mut e, |e| e.on_marker(n(3), id, &p)), forged(id, 3));
    }
    assert_eq!(in_flight(&e), [own]);

    // Markers of peers' snapshots are not affected.
    assert_eq!(
        e.on_marker(n(3), sid(3, 5), &p),
        Ok(started(sid(3, 5), &[2, 3]))
    );
    // The next own snapshot is 1#1, recorded from scratch: both channels open, the
    // state of now.
    let (next, actions) = e.initiate(&Money(20)).unwrap();
    assert_eq!(next, sid(1, 1));
    assert_eq!(actions, started(next, &[2, 3]));
    assert_eq!(e.on_marker(n(3), next, &p), Ok(vec![]));
    let local = completed(e.on_marker(n(2), next, &p).unwrap());
    assert_eq!((local.id, local.state), (next, 20));
}

#[test]
fn a_forged_marker_cannot_block_the_snapshot_it_names() {
    // With one incoming channel, a forged marker of 1#0 would record and complete at
    // once, so 1#0 would count as finished here: when node 1 then took its real 1#0,
    // the real marker coming back would be refused as a duplicate and 1#0 would never
    // complete.
    let mut e = engine(1, &[2], &[2]);
    let p = Money(7);
    assert_eq!(
        refuse(&mut e, |e| e.on_marker(n(2), sid(1, 0), &p)),
        forged(sid(1, 0), 2)
    );
    let (id, _) = e.initiate(&p).unwrap();
    assert_eq!(id, sid(1, 0));
    let local = completed(e.on_marker(n(2), id, &p).unwrap());
    assert_eq!((local.id, local.state), (id, 7));
    // Once finished, a repeated marker of it is a duplicate, not a forgery.
    assert_eq!(
        refuse(&mut e, |e| e.on_marker(n(2), id, &p)),
        duplicate(id, 2, 1)
    );
}

#[test]
fn a_marker_of_an_own_snapshot_below_the_epoch_is_refused() {
    let mut e = wired(SnapshotEngine::with_epoch(n(1), 10), &[2], &[2]);
    let p = Money(0);
    assert_eq!((e.epoch(), e.next_seq()), (10, 10));
    // Below the epoch (a leftover of an earlier life of node 1, or forged), and the
    // epoch itself before it is issued.
    for seq in [0, 9, 10] {
        let id = sid(1, seq);
        assert_eq!(refuse(&mut e, |e| e.on_marker(n(2), id, &p)), forged(id, 2));
    }
    let (id, _) = e.initiate(&p).unwrap();
    assert_eq!(id, sid(1, 10));
    assert_eq!(e.next_seq(), 11);
    completed(e.on_marker(n(2), id, &p).unwrap());
    assert_eq!(
        refuse(&mut e, |e| e.on_marker(n(2), id, &p)),
        duplicate(id, 2, 1)
    );
    for seq in [9, 11] {
        let id = sid(1, seq);
        assert_eq!(refuse(&mut e, |e| e.on_marker(n(2), id, &p)), forged(id, 2));
    }
}

// ---------------------------------------------------------------------------------
// 2. Bounded snapshots in flight.
// ---------------------------------------------------------------------------------

#[test]
fn at_most_64_snapshots_are_in_flight_by_default() {
    assert_eq!(Engine::DEFAULT_MAX_IN_FLIGHT, 64);
    let mut e = engine(1, &[2], &[2]);
    assert_eq!(e.max_in_flight(), 64);
    let p = Money(0);
    for seq in 0..64 {
        assert_eq!(e.initiate(&p).unwrap().0, sid(1, seq));
    }
    let error = refuse(&mut e, |e| e.initiate(&p));
    assert_eq!(error, too_many(1, 64, None));
    assert!(error.to_string().contains("64"), "{error}");
    // A peer's snapshot cannot start either.
    assert_eq!(
        refuse(&mut e, |e| e.on_marker(n(2), sid(2, 0), &p)),
        too_many(1, 64, Some(sid(2, 0)))
    );
    assert_eq!(in_flight(&e).len(), 64);
}

#[test]
fn initiate_beyond_the_limit_is_refused_and_uses_up_no_sequence_number() {
    let mut e = engine(1, &[2], &[2]).with_max_in_flight(2);
    assert_eq!(e.max_in_flight(), 2);
    let p = Money(0);
    let (a, _) = e.initiate(&p).unwrap();
    let (b, _) = e.initiate(&p).unwrap();
    assert_eq!((a, b), (sid(1, 0), sid(1, 1)));
    assert_eq!(refuse(&mut e, |e| e.initiate(&p)), too_many(1, 2, None));
    assert_eq!(e.next_seq(), 2);
    // Once one completes there is room again, and the next id follows on.
    completed(e.on_marker(n(2), a, &p).unwrap());
    let (c, actions) = e.initiate(&p).unwrap();
    assert_eq!(c, sid(1, 2));
    assert_eq!(actions, started(c, &[2]));
    assert_eq!(in_flight(&e), [b, c]);

    // A limit of 0 refuses every snapshot.
    let mut none = engine(1, &[2], &[2]).with_max_in_flight(0);
    assert_eq!(refuse(&mut none, |e| e.initiate(&p)), too_many(1, 0, None));
    assert_eq!(
        refuse(&mut none, |e| e.on_marker(n(2), sid(2, 0), &p)),
        too_many(1, 0, Some(sid(2, 0)))
    );
}

#[test]
fn a_marker_that_would_start_a_recording_beyond_the_limit_is_refused() {
    let mut e = engine(1, &[2, 3], &[2]).with_max_in_flight(1);
    let p = Money(5);
    let (a, b) = (sid(2, 0), sid(3, 0));
    assert_eq!(e.on_marker(n(2), a, &p), Ok(started(a, &[2])));
    // The first marker of another snapshot: refused, and it says which one.
    let error = refuse(&mut e, |e| e.on_marker(n(3), b, &p));
    assert_eq!(error, too_many(1, 1, Some(b)));
    let message = error.to_string();
    assert!(
        message.contains("3#0") && message.contains("cannot complete"),
        "{message}"
    );
    // Markers of the snapshot in flight still close their channels.
    let local = completed(e.on_marker(n(3), a, &p).unwrap());
    assert_eq!(local.id, a);
    // With room again, the refused snapshot's marker is accepted like a first one.
    assert_eq!(e.on_marker(n(3), b, &p), Ok(started(b, &[2])));
    assert_eq!(refuse(&mut e, |e| e.initiate(&p)), too_many(1, 1, None));
}

// ---------------------------------------------------------------------------------
// 3. Sequence numbers from an epoch, and a restarted node.
// ---------------------------------------------------------------------------------

/// Engines on a complete graph with FIFO queues of markers as channels.
struct Net {
    procs: BTreeMap<NodeId, Money>,
    engines: BTreeMap<NodeId, Engine>,
    queues: BTreeMap<(NodeId, NodeId), VecDeque<SnapshotId>>,
    done: Vec<(NodeId, SnapshotId)>,
}

impl Net {
    fn complete(ids: &[u32]) -> Self {
        let mut net = Net {
            procs: BTreeMap::new(),
            engines: BTreeMap::new(),
            queues: BTreeMap::new(),
            done: Vec::new(),
        };
        for &me in ids {
            let peers: Vec<_> = ids.iter().copied().filter(|&p| p != me).collect();
            net.procs.insert(n(me), Money(100));
            net.engines.insert(n(me), engine(me, &peers, &peers));
            for peer in peers {
                net.queues.insert((n(me), n(peer)), VecDeque::new());
            }
        }
        net
    }

    /// Node `me` restarts: a fresh engine at `epoch`, on the same channels.
    fn restart(&mut self, me: u32, epoch: u64) {
        let old = &self.engines[&n(me)];
        let (incoming, outgoing): (Vec<_>, Vec<_>) = (
            old.incoming().map(|p| p.0).collect(),
            old.outgoing().map(|p| p.0).collect(),
        );
        let fresh = wired(
            SnapshotEngine::with_epoch(n(me), epoch),
            &incoming,
            &outgoing,
        );
        self.engines.insert(n(me), fresh);
    }

    fn carry_out(&mut self, from: NodeId, actions: Vec<Act>) {
        for action in actions {
            match action {
                Action::Recorded { .. } => {}
                Action::SendMarker { to, id } => {
                    self.queues.get_mut(&(from, to)).unwrap().push_back(id);
                }
                Action::Complete(local) => self.done.push((from, local.id)),
            }
        }
    }

    fn initiate(&mut self, node: u32) -> SnapshotId {
        let engine = self.engines.get_mut(&n(node)).unwrap();
        let (id, actions) = engine.initiate(&self.procs[&n(node)]).unwrap();
        self.carry_out(n(node), actions);
        id
    }

    /// Delivers every marker; every one must be accepted.
    fn drain(&mut self) {
        while let Some((&(from, to), _)) = self.queues.iter().find(|(_, q)| !q.is_empty()) {
            let id = self
                .queues
                .get_mut(&(from, to))
                .unwrap()
                .pop_front()
                .unwrap();
            let engine = self.engines.get_mut(&to).unwrap();
            let actions = engine
                .on_marker(from, id, &self.procs[&to])
                .unwrap_or_else(|e| panic!("{to} refused the marker of {id}: {e}"));
            self.carry_out(to, actions);
        }
    }

    /// Takes snapshot after snapshot at `node`, each to completion everywhere.
    fn snapshots(&mut self, node: u32, count: usize) -> Vec<SnapshotId> {
        (0..count)
            .map(|_| {
                let id = self.initiate(node);
                self.drain();
                let nodes = self.engines.len();
                assert_eq!(
                    self.done.iter().filter(|(_, done)| *done == id).count(),
                    nodes,
                    "{id} did not complete everywhere"
                );
                id
            })
            .collect()
    }
}

#[test]
fn a_restarted_node_numbers_from_its_epoch_and_peers_accept_it() {
    let mut net = Net::complete(&[1, 2]);
    let p = Money(0);
    let old = net.snapshots(1, 3);
    assert_eq!(old, [sid(1, 0), sid(1, 1), sid(1, 2)]);
    let persisted = net.engines[&n(1)].next_seq();
    assert_eq!(persisted, 3);

    // What goes wrong without an epoch: a node that restarts from 0 reuses 1#0, which
    // its peer has finished and refuses.
    let mut naive = engine(1, &[2], &[2]);
    let (reused, _) = naive.initiate(&p).unwrap();
    assert_eq!(reused, sid(1, 0));
    let peer = net.engines.get_mut(&n(2)).unwrap();
    assert_eq!(
        refuse(peer, |e| e.on_marker(n(1), reused, &p)),
        duplicate(reused, 1, 2)
    );

    // Restarted at epoch 3 (the persisted counter): its next snapshot is 1#3, and the
    // peer takes part in it.
    net.restart(1, persisted);
    assert_eq!(net.snapshots(1, 1), [sid(1, 3)]);

    // The peer still refuses repeated markers of the old snapshots, and of the new.
    let peer = net.engines.get_mut(&n(2)).unwrap();
    for id in [sid(1, 0), sid(1, 1), sid(1, 2), sid(1, 3)] {
        assert_eq!(
            refuse(peer, |e| e.on_marker(n(1), id, &p)),
            duplicate(id, 1, 2)
        );
    }
}

#[test]
fn after_a_restart_at_a_far_epoch_peers_remember_snapshots_compactly() {
    let mut net = Net::complete(&[1, 2, 3]);
    let p = Money(0);
    net.snapshots(1, 4);
    // Node 1 restarts with an epoch far past everything (a coarse persisted counter).
    net.restart(1, 1000);
    let new = net.snapshots(1, 200);
    assert_eq!(new.first(), Some(&sid(1, 1000)));
    assert_eq!(new.last(), Some(&sid(1, 1199)));
    // Node 2 takes part too, and is numbered independently.
    assert_eq!(net.snapshots(2, 2), [sid(2, 0), sid(2, 1)]);

    for peer in [2, 3] {
        let engine = net.engines.get_mut(&n(peer)).unwrap();
        for id in [
            sid(1, 0),
            sid(1, 3),
            sid(1, 1000),
            sid(1, 1100),
            sid(1, 1199),
        ] {
            assert_eq!(
                refuse(engine, |e| e.on_marker(n(1), id, &p)),
                duplicate(id, 1, peer)
            );
        }
        // The peer remembers node 1's 204 snapshots as two runs, one per life of
        // node 1, not as one entry per snapshot above the gap (the Debug output shows
        // what the engine keeps).
        let shown = format!("{engine:?}");
        assert!(shown.contains("[0..=3, 1000..=1199]"), "{shown}");
    }
    // And the restarted node itself refuses markers claiming its old life's snapshots.
    let restarted = net.engines.get_mut(&n(1)).unwrap();
    assert_eq!(
        refuse(restarted, |e| e.on_marker(n(2), sid(1, 3), &p)),
        forged(sid(1, 3), 2)
    );
}

#[test]
fn the_last_sequence_number_is_never_issued() {
    let mut e = wired(SnapshotEngine::with_epoch(n(1), u64::MAX - 1), &[2], &[2]);
    let p = Money(0);
    let (id, _) = e.initiate(&p).unwrap();
    assert_eq!(id, sid(1, u64::MAX - 1));
    assert_eq!(
        refuse(&mut e, |e| e.initiate(&p)),
        EngineError::SequenceExhausted { node: n(1) }
    );
    assert_eq!(
        refuse(&mut e, |e| e.on_marker(n(2), sid(1, u64::MAX), &p)),
        forged(sid(1, u64::MAX), 2)
    );
    completed(e.on_marker(n(2), id, &p).unwrap());
}

// ---------------------------------------------------------------------------------
// 4. Clone and Eq.
// ---------------------------------------------------------------------------------

/// One input to an engine, with its effect on the process, as a driver would do it.
#[derive(Debug, Clone, Copy)]
enum Input {
    Initiate,
    Marker(u32, SnapshotId),
    /// An amount taken from the channel `from -> self` and handled.
    Message(u32, u64),
    /// An amount put on the channel `self -> to`.
    Send(u32, u64),
}

fn apply(engine: &mut Engine, process: &mut Money, input: Input) -> Result<Vec<Act>, EngineError> {
    match input {
        Input::Initiate => engine.initiate(process).map(|(_, actions)| actions),
        Input::Marker(from, id) => engine.on_marker(n(from), id, process),
        Input::Message(from, amount) => {
            engine.on_message(n(from), &amount, process)?;
            process.handle(n(from), amount, &mut Outbox::default());
            Ok(Vec::new())
        }
        Input::Send(to, amount) => {
            engine.on_send(n(to))?;
            process.0 -= amount;
            Ok(Vec::new())
        }
    }
}

#[test]
fn a_clone_taken_mid_snapshot_stays_equal_under_the_same_inputs() {
    fn clone_and_eq<T: Clone + Eq>() {}
    clone_and_eq::<Engine>();

    let (own, peer) = (sid(1, 0), sid(2, 0));
    let mut a = engine(1, &[2, 3], &[2, 3]).with_max_in_flight(3);
    let mut p = Money(50);
    // Mid-snapshot: 1#0 and 2#0 in flight, money recorded in both.
    for input in [
        Input::Initiate,
        Input::Message(2, 4),
        Input::Marker(2, peer),
        Input::Send(3, 10),
        Input::Message(3, 6),
    ] {
        apply(&mut a, &mut p, input).unwrap();
    }
    assert_eq!(in_flight(&a), [own, peer]);
    let (mut b, mut q) = (a.clone(), p.clone());
    assert_eq!(a, b);

    let script = [
        Input::Message(2, 1),
        Input::Marker(3, own),
        Input::Marker(2, peer),      // refused: duplicate
        Input::Marker(2, sid(1, 5)), // refused: forged
        Input::Initiate,
        Input::Marker(3, sid(3, 0)), // refused: a fourth one in flight
        Input::Send(2, 3),
        Input::Marker(3, peer), // 2#0 complete
        Input::Marker(2, own),  // 1#0 complete
        Input::Marker(3, sid(3, 0)),
        Input::Message(3, 2),
        Input::Marker(2, sid(1, 1)),
        Input::Marker(3, sid(1, 1)), // 1#1 complete
        Input::Marker(2, sid(3, 0)), // 3#0 complete
    ];
    let mut refused = 0;
    for (step, input) in script.into_iter().enumerate() {
        let got_a = apply(&mut a, &mut p, input);
        let got_b = apply(&mut b, &mut q, input);
        assert_eq!(got_a, got_b, "script[{step}] = {input:?}");
        assert_eq!(a, b, "script[{step}] = {input:?}");
        assert_eq!(p, q);
        refused += usize::from(got_a.is_err());
    }
    assert_eq!(refused, 3);
    assert!(in_flight(&a).is_empty());

    // Equality sees every difference that changes behaviour: one more message
    // counted, ...
    let mut c = a.clone();
    c.on_message(n(2), &1, &p).unwrap();
    assert_ne!(a, c);
    // ... a snapshot finished (nothing else differs, but only one of them would
    // refuse its marker), the limit, the epoch.
    let fresh = engine(1, &[2], &[2]);
    let mut finished = fresh.clone();
    completed(finished.on_marker(n(2), sid(2, 0), &p).unwrap());
    assert!(in_flight(&finished).is_empty());
    assert_ne!(fresh, finished);
    assert_ne!(fresh, fresh.clone().with_max_in_flight(8));
    assert_ne!(
        fresh,
        wired(SnapshotEngine::with_epoch(n(1), 1), &[2], &[2])
    );
    assert_eq!(fresh, engine(1, &[2], &[2]));
}
