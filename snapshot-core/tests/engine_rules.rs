//! One test (or a few) per rule of the Chandy-Lamport algorithm, driving
//! [`SnapshotEngine`] directly, and the checks of [`GlobalSnapshot`].
//!
//! The engine is fed by hand, one input at a time, with a tiny money process whose
//! channel record is the list of amounts caught in transit, so every assertion can
//! name the exact actions, states, records and counts the rules require:
//!
//! - initiating records the state, emits `Recorded` then a marker on every outgoing
//!   channel, and opens every incoming channel;
//! - the first marker of a snapshot records the state, records its own channel as
//!   empty, opens the others and sends markers; a later marker closes its channel;
//! - messages taken from an open channel are recorded (and counted), those from a
//!   closed channel are not, and every message is counted for the next snapshot;
//! - a local snapshot completes exactly when its last incoming channel closes, with
//!   the sent and received counts as of recording (at once with no incoming channel);
//! - concurrent snapshots (different initiators, or the same one twice) are
//!   independent;
//! - every refused input (duplicate marker, unknown channel, change of channels while
//!   a snapshot is in flight, channel to self) returns its error and leaves no trace:
//!   a twin engine that never saw it behaves identically afterwards.
//!
//! Then [`GlobalSnapshot`]: `check_cut` accepts a cut taken by the engines (in real
//! nodes, on the simulated network of `snapshot_core::sim`: feature `sim`) and rejects
//! every tampered variant, insertion refuses duplicates and foreign snapshots,
//! `channels()` orders by numeric node id, and the whole thing survives a serde round
//! trip.

use snapshot_core::{
    Action, ChannelRecord, EngineError, LocalSnapshot, NodeId, Outbox, Process, SnapshotEngine,
    SnapshotId,
};
use std::collections::BTreeMap;

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

/// An engine for node `me` with the given incoming and outgoing channels.
fn engine(me: u32, incoming: &[u32], outgoing: &[u32]) -> SnapshotEngine<Money> {
    let mut engine = SnapshotEngine::new(n(me));
    for &from in incoming {
        engine.add_incoming(n(from)).unwrap();
    }
    for &to in outgoing {
        engine.add_outgoing(n(to)).unwrap();
    }
    engine
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

fn channel(amounts: &[u64]) -> ChannelRecord<Vec<u64>> {
    ChannelRecord {
        record: amounts.to_vec(),
        messages: amounts.len() as u64,
    }
}

fn counts(pairs: &[(u32, u64)]) -> BTreeMap<NodeId, u64> {
    pairs
        .iter()
        .map(|&(node, count)| (n(node), count))
        .collect()
}

fn in_flight(engine: &SnapshotEngine<Money>) -> Vec<SnapshotId> {
    engine.in_flight().collect()
}

/// One input to an engine, with its effect on the process, as a driver would do it.
#[derive(Debug, Clone, Copy)]
enum Input {
    Initiate,
    Marker(u32, SnapshotId),
    /// An amount taken from the channel `from -> self` and handled.
    Message(u32, u64),
    /// An amount put on the channel `self -> to`.
    Send(u32, u64),
    AddIncoming(u32),
    AddOutgoing(u32),
}

fn apply(
    engine: &mut SnapshotEngine<Money>,
    process: &mut Money,
    input: Input,
) -> Result<Vec<Act>, EngineError> {
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
        Input::AddIncoming(from) => engine.add_incoming(n(from)).map(|()| Vec::new()),
        Input::AddOutgoing(to) => engine.add_outgoing(n(to)).map(|()| Vec::new()),
    }
}

/// Runs `script` on two engines built by `build`, one of which also gets each
/// `(position, input, error)` of `refused` just before `script[position]` and must
/// refuse it with exactly that error. The two must then be indistinguishable: the same
/// outputs for every scripted input, the same channels and snapshots in flight, and the
/// same counts in one more snapshot taken at the end. Returns the scripted outputs.
fn assert_refusals_leave_no_trace(
    build: impl Fn() -> SnapshotEngine<Money>,
    script: &[Input],
    refused: &[(usize, Input, EngineError)],
) -> Vec<Vec<Act>> {
    let (mut twin, mut twin_process) = (build(), Money(100));
    let (mut tested, mut tested_process) = (build(), Money(100));
    assert!(
        refused.iter().all(|(at, _, _)| *at <= script.len()),
        "refusal past the end of the script"
    );
    let refuse = |tested: &mut SnapshotEngine<Money>, process: &mut Money, position| {
        for (_, bad, error) in refused.iter().filter(|(at, _, _)| *at == position) {
            assert_eq!(
                apply(tested, process, *bad).as_ref(),
                Err(error),
                "input {bad:?} before script[{position}]"
            );
        }
    };
    let mut outputs = Vec::new();
    for (position, &input) in script.iter().enumerate() {
        refuse(&mut tested, &mut tested_process, position);
        let expected = apply(&mut twin, &mut twin_process, input);
        let got = apply(&mut tested, &mut tested_process, input);
        assert_eq!(got, expected, "script[{position}] = {input:?}");
        outputs.push(got.unwrap_or_else(|e| panic!("script[{position}] = {input:?}: {e}")));
    }
    refuse(&mut tested, &mut tested_process, script.len());
    assert_eq!(in_flight(&tested), in_flight(&twin));
    assert!(tested.incoming().eq(twin.incoming()));
    assert!(tested.outgoing().eq(twin.outgoing()));
    assert_eq!(tested_process, twin_process);
    // One more snapshot exposes the message counters.
    assert_eq!(
        tested.initiate(&tested_process).unwrap(),
        twin.initiate(&twin_process).unwrap()
    );
    outputs
}

// ---------------------------------------------------------------------------------
// Initiating.
// ---------------------------------------------------------------------------------

#[test]
fn initiate_records_state_then_sends_a_marker_on_every_outgoing_channel() {
    let mut e = engine(1, &[2, 3], &[4, 2]);
    let mut p = Money(50);
    let (id, actions) = e.initiate(&p).unwrap();
    assert_eq!(id, sid(1, 0));
    // Recorded first, then one marker per outgoing channel (by receiver), and nothing
    // else: two incoming channels are still open.
    assert_eq!(actions, started(id, &[2, 4]));
    assert_eq!(in_flight(&e), [id]);

    // The state is the one at initiation, whatever the process does afterwards.
    for input in [
        Input::Message(2, 5),
        Input::Send(4, 20),
        Input::Message(3, 7),
    ] {
        assert_eq!(apply(&mut e, &mut p, input), Ok(vec![]));
    }
    assert_eq!(apply(&mut e, &mut p, Input::Marker(3, id)), Ok(vec![]));
    let local = completed(apply(&mut e, &mut p, Input::Marker(2, id)).unwrap());
    assert_eq!(
        local,
        LocalSnapshot {
            id,
            node: n(1),
            state: 50,
            // Both incoming channels were open from the start.
            channels: [(n(2), channel(&[5])), (n(3), channel(&[7]))].into(),
            sent: counts(&[(2, 0), (4, 0)]),
            received: counts(&[(2, 0), (3, 0)]),
        }
    );
    assert_eq!(p, Money(42));
    assert!(in_flight(&e).is_empty());
}

#[test]
fn each_initiation_is_a_new_snapshot_numbered_from_zero() {
    let mut e = engine(7, &[2], &[2]);
    let p = Money(0);
    let ids: Vec<_> = (0..3).map(|_| e.initiate(&p).unwrap().0).collect();
    assert_eq!(ids, [sid(7, 0), sid(7, 1), sid(7, 2)]);
    assert_eq!(in_flight(&e), ids);
}

#[test]
fn node_without_incoming_channels_completes_on_initiate() {
    let mut e = engine(1, &[], &[3, 2]);
    let (id, actions) = e.initiate(&Money(9)).unwrap();
    let mut expected = started(id, &[2, 3]);
    expected.push(Action::Complete(LocalSnapshot {
        id,
        node: n(1),
        state: 9,
        channels: BTreeMap::new(),
        sent: counts(&[(2, 0), (3, 0)]),
        received: BTreeMap::new(),
    }));
    assert_eq!(actions, expected);
    assert!(in_flight(&e).is_empty());

    // An isolated node too: Recorded, then Complete.
    let mut alone = engine(5, &[], &[]);
    let (id, actions) = alone.initiate(&Money(1)).unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0], Action::Recorded { id });
    assert_eq!(completed(actions).state, 1);
}

// ---------------------------------------------------------------------------------
// Markers.
// ---------------------------------------------------------------------------------

#[test]
fn first_marker_records_state_and_its_channel_as_empty_and_opens_the_others() {
    let mut e = engine(1, &[2, 3, 4], &[3, 2]);
    let mut p = Money(10);
    let id = sid(2, 0);
    // Before any marker: counted, not recorded anywhere.
    apply(&mut e, &mut p, Input::Message(2, 1)).unwrap();
    apply(&mut e, &mut p, Input::Send(3, 4)).unwrap();

    assert_eq!(
        apply(&mut e, &mut p, Input::Marker(2, id)),
        Ok(started(id, &[2, 3]))
    );
    assert_eq!(in_flight(&e), [id]);
    // After the marker: 2 -> 1 is closed, 3 -> 1 and 4 -> 1 are open.
    for input in [
        Input::Message(2, 100),
        Input::Message(3, 30),
        Input::Message(4, 40),
        Input::Message(3, 31),
    ] {
        apply(&mut e, &mut p, input).unwrap();
    }
    assert_eq!(apply(&mut e, &mut p, Input::Marker(3, id)), Ok(vec![]));
    let local = completed(apply(&mut e, &mut p, Input::Marker(4, id)).unwrap());
    assert_eq!(
        local,
        LocalSnapshot {
            id,
            node: n(1),
            state: 10 + 1 - 4,
            channels: [
                (n(2), channel(&[])),
                (n(3), channel(&[30, 31])),
                (n(4), channel(&[40])),
            ]
            .into(),
            sent: counts(&[(2, 0), (3, 1)]),
            received: counts(&[(2, 1), (3, 0), (4, 0)]),
        }
    );
}

#[test]
fn later_marker_closes_only_its_own_channel() {
    let mut e = engine(1, &[2, 3, 4], &[2]);
    let mut p = Money(0);
    let id = sid(2, 0);
    let script = [
        Input::Marker(2, id),
        Input::Message(3, 1),
        Input::Message(4, 2),
        Input::Marker(3, id), // closes 3 -> 1 only
        Input::Message(3, 3), // not recorded
        Input::Message(4, 4), // still recorded
        Input::Message(2, 5), // closed since the first marker
    ];
    for input in script {
        let actions = apply(&mut e, &mut p, input).unwrap();
        assert!(
            actions.iter().all(|a| !matches!(a, Action::Complete(_))),
            "completed too early, at {input:?}"
        );
    }
    let local = completed(apply(&mut e, &mut p, Input::Marker(4, id)).unwrap());
    assert_eq!(local.channels[&n(2)], channel(&[]));
    assert_eq!(local.channels[&n(3)], channel(&[1]));
    assert_eq!(local.channels[&n(4)], channel(&[2, 4]));
    assert_eq!(local.state, 0);
}

#[test]
fn every_message_is_counted_but_only_open_channels_record_it() {
    let mut e = engine(1, &[2, 3], &[2]);
    let mut p = Money(0);
    let a = sid(2, 0);
    let script = [
        Input::Message(3, 1), // before: counted only
        Input::Marker(2, a),
        Input::Message(3, 2), // open: recorded and counted
        Input::Message(2, 3), // closed: counted only
        Input::Message(3, 4), // open: recorded and counted
        Input::Marker(3, a),
        Input::Message(3, 5), // after: counted only
        Input::Message(2, 6), // after: counted only
    ];
    let mut outputs = script.map(|input| apply(&mut e, &mut p, input).unwrap());
    let local = completed(std::mem::take(&mut outputs[5]));
    assert_eq!(
        local.channels,
        [(n(2), channel(&[])), (n(3), channel(&[2, 4]))].into()
    );
    assert_eq!(local.received, counts(&[(2, 0), (3, 1)]));
    assert_eq!(local.state, 1);

    // The next snapshot's counts include every message taken, recorded or not.
    let (b, actions) = e.initiate(&p).unwrap();
    assert_eq!(actions, started(b, &[2]));
    e.on_marker(n(2), b, &p).unwrap();
    let next = completed(e.on_marker(n(3), b, &p).unwrap());
    assert_eq!(next.received, counts(&[(2, 2), (3, 4)]));
    assert_eq!(next.state, 21);
}

#[test]
fn completes_exactly_when_the_last_incoming_channel_closes_with_counts_as_recorded() {
    let mut e = engine(1, &[2, 3, 4], &[2, 3]);
    let mut p = Money(100);
    for input in [
        Input::Send(2, 10),
        Input::Send(2, 10),
        Input::Send(3, 1),
        Input::Message(3, 7),
        Input::Message(3, 7),
        Input::Message(3, 7),
    ] {
        apply(&mut e, &mut p, input).unwrap();
    }
    let (id, actions) = e.initiate(&p).unwrap();
    assert_eq!(actions, started(id, &[2, 3]));
    // Traffic after recording is not in the counts.
    for input in [Input::Send(2, 5), Input::Send(3, 5), Input::Message(4, 9)] {
        apply(&mut e, &mut p, input).unwrap();
    }
    assert_eq!(e.on_marker(n(4), id, &p), Ok(vec![]));
    assert_eq!(in_flight(&e), [id]);
    assert_eq!(e.on_marker(n(2), id, &p), Ok(vec![]));
    assert_eq!(in_flight(&e), [id]);
    let actions = e.on_marker(n(3), id, &p).unwrap();
    assert_eq!(actions.len(), 1, "only Complete: {actions:?}");
    let local = completed(actions);
    assert_eq!(local.sent, counts(&[(2, 2), (3, 1)]));
    assert_eq!(local.received, counts(&[(2, 0), (3, 3), (4, 0)]));
    assert_eq!(local.channels[&n(4)], channel(&[9]));
    assert_eq!(local.state, 100 - 21 + 21);
    assert!(in_flight(&e).is_empty());
}

#[test]
fn first_marker_on_the_only_incoming_channel_completes_at_once() {
    let mut e = engine(1, &[2], &[3]);
    let id = sid(2, 4);
    let mut actions = e.on_marker(n(2), id, &Money(3)).unwrap();
    let local = completed(actions.split_off(actions.len() - 1));
    assert_eq!(actions, started(id, &[3]));
    assert_eq!(local.channels, [(n(2), channel(&[]))].into());
    assert!(in_flight(&e).is_empty());
}

// ---------------------------------------------------------------------------------
// Concurrent snapshots.
// ---------------------------------------------------------------------------------

#[test]
fn snapshots_of_different_initiators_are_independent() {
    let mut e = engine(1, &[2, 3], &[2, 3]);
    let mut p = Money(0);
    let (a, b) = (sid(2, 0), sid(3, 0));
    let script = [
        Input::Marker(2, a),  // 0: a records (state 0), a: 2 closed, 3 open
        Input::Message(3, 1), // 1: a records it
        Input::Marker(3, b),  // 2: b records (state 1), b: 3 closed, 2 open
        Input::Message(2, 2), // 3: b records it (a: closed)
        Input::Message(3, 4), // 4: a records it (b: closed)
        Input::Marker(3, a),  // 5: a complete
        Input::Message(2, 8), // 6: b records it
        Input::Marker(2, b),  // 7: b complete
    ];
    let outputs: Vec<_> = script
        .iter()
        .map(|&input| apply(&mut e, &mut p, input).unwrap())
        .collect();
    assert_eq!(outputs[0], started(a, &[2, 3]));
    assert_eq!(outputs[2], started(b, &[2, 3]));
    let local_a = completed(outputs[5].clone());
    let local_b = completed(outputs[7].clone());
    assert_eq!((local_a.id, local_a.state), (a, 0));
    assert_eq!((local_b.id, local_b.state), (b, 1));
    assert_eq!(
        local_a.channels,
        [(n(2), channel(&[])), (n(3), channel(&[1, 4]))].into()
    );
    assert_eq!(
        local_b.channels,
        [(n(2), channel(&[2, 8])), (n(3), channel(&[]))].into()
    );
    assert_eq!(local_b.received, counts(&[(2, 0), (3, 1)]));
    assert!(in_flight(&e).is_empty());
}

#[test]
fn two_snapshots_of_the_same_initiator_are_independent() {
    // Both started here.
    let mut e = engine(1, &[2], &[2]);
    let mut p = Money(50);
    let (a, _) = e.initiate(&p).unwrap();
    apply(&mut e, &mut p, Input::Message(2, 1)).unwrap(); // in a only
    let (b, actions) = e.initiate(&p).unwrap();
    assert_eq!((a, b), (sid(1, 0), sid(1, 1)));
    assert_eq!(actions, started(b, &[2]));
    assert_eq!(in_flight(&e), [a, b]);
    apply(&mut e, &mut p, Input::Message(2, 2)).unwrap(); // in both
    let local_a = completed(e.on_marker(n(2), a, &p).unwrap());
    apply(&mut e, &mut p, Input::Message(2, 4)).unwrap(); // in b only
    let local_b = completed(e.on_marker(n(2), b, &p).unwrap());
    assert_eq!((local_a.state, local_b.state), (50, 51));
    assert_eq!(local_a.channels[&n(2)], channel(&[1, 2]));
    assert_eq!(local_b.channels[&n(2)], channel(&[2, 4]));
    assert_eq!(local_b.received, counts(&[(2, 1)]));

    // Both started by a peer, and completed in the opposite order.
    let mut e = engine(1, &[2, 3], &[3]);
    let (a, b) = (sid(2, 0), sid(2, 1));
    let p = Money(0);
    assert_eq!(e.on_marker(n(2), a, &p), Ok(started(a, &[3])));
    assert_eq!(e.on_marker(n(2), b, &p), Ok(started(b, &[3])));
    e.on_message(n(3), &6, &p).unwrap();
    assert_eq!(completed(e.on_marker(n(3), b, &p).unwrap()).id, b);
    assert_eq!(in_flight(&e), [a]);
    let local_a = completed(e.on_marker(n(3), a, &p).unwrap());
    assert_eq!(local_a.channels[&n(3)], channel(&[6]));
}

// ---------------------------------------------------------------------------------
// Refused inputs.
// ---------------------------------------------------------------------------------

fn duplicate(id: SnapshotId, from: u32, to: u32) -> EngineError {
    EngineError::DuplicateMarker {
        id,
        from: n(from),
        to: n(to),
    }
}

fn unknown(node: u32, from: u32, to: u32) -> EngineError {
    EngineError::UnknownChannel {
        node: n(node),
        from: n(from),
        to: n(to),
    }
}

#[test]
fn second_marker_on_a_channel_is_refused_and_changes_nothing() {
    let a = sid(2, 0);
    let script = [
        Input::Marker(2, a),
        Input::Message(3, 1),
        Input::Marker(3, a),
        Input::Message(4, 2),
        Input::Marker(4, a),
    ];
    let outputs = assert_refusals_leave_no_trace(
        || engine(1, &[2, 3, 4], &[2]),
        &script,
        &[
            // The channel whose marker started the snapshot.
            (1, Input::Marker(2, a), duplicate(a, 2, 1)),
            // A channel closed later.
            (3, Input::Marker(3, a), duplicate(a, 3, 1)),
            (3, Input::Marker(2, a), duplicate(a, 2, 1)),
        ],
    );
    assert_eq!(
        completed(outputs[4].clone()).channels,
        [
            (n(2), channel(&[])),
            (n(3), channel(&[1])),
            (n(4), channel(&[2]))
        ]
        .into()
    );
}

#[test]
fn marker_of_a_completed_snapshot_is_refused_and_starts_nothing() {
    let (a, own) = (sid(2, 0), sid(1, 0));
    let script = [
        Input::Marker(2, a),
        Input::Marker(3, a),
        Input::Initiate,
        Input::Marker(2, own),
        Input::Marker(3, own),
        Input::Message(2, 1),
    ];
    let outputs = assert_refusals_leave_no_trace(
        || engine(1, &[2, 3], &[2, 3]),
        &script,
        &[
            (2, Input::Marker(2, a), duplicate(a, 2, 1)),
            (2, Input::Marker(3, a), duplicate(a, 3, 1)),
            // A snapshot this node initiated, after completion.
            (5, Input::Marker(3, own), duplicate(own, 3, 1)),
            (5, Input::Marker(2, own), duplicate(own, 2, 1)),
            (6, Input::Marker(2, a), duplicate(a, 2, 1)),
        ],
    );
    assert_eq!(completed(outputs[1].clone()).id, a);
    assert_eq!(completed(outputs[4].clone()).id, own);
}

#[test]
fn snapshots_completed_out_of_order_are_all_remembered() {
    // Snapshots 2#1 and 2#3 complete before 2#0 and 2#2: the engine must remember
    // each of them, not just "everything below the highest".
    const ORDER: [u64; 4] = [1, 3, 0, 2];
    let mut script: Vec<_> = ORDER
        .iter()
        .map(|&seq| Input::Marker(2, sid(2, seq)))
        .collect();
    script.push(Input::Marker(2, sid(2, 4)));
    // After each completion, every snapshot completed so far is refused.
    let mut refused = Vec::new();
    for done in 1..=ORDER.len() {
        for &seq in &ORDER[..done] {
            let id = sid(2, seq);
            refused.push((done, Input::Marker(2, id), duplicate(id, 2, 1)));
        }
    }
    let outputs = assert_refusals_leave_no_trace(|| engine(1, &[2], &[3]), &script, &refused);
    // Each marker, including the fresh 2#4 at the end, started and completed a
    // snapshot.
    for (input, actions) in script.iter().zip(outputs) {
        let Input::Marker(_, id) = *input else {
            unreachable!()
        };
        assert_eq!(actions[..2], started(id, &[3])[..]);
        assert_eq!(completed(actions).id, id);
    }
}

#[test]
fn unknown_channels_are_refused_and_change_nothing() {
    let (a, own) = (sid(2, 0), sid(1, 0));
    // Node 1 has the incoming channel 2 -> 1 and the outgoing channel 1 -> 3 only.
    let script = [
        Input::Message(2, 1),
        Input::Send(3, 1),
        Input::Marker(2, a),
        Input::Initiate,
        Input::Message(2, 2),
        Input::Marker(2, own),
    ];
    let refused = [
        Input::Marker(3, a),
        Input::Marker(9, a),
        Input::Marker(3, own),
        Input::Message(3, 50),
        Input::Message(9, 50),
        Input::Send(2, 50),
        Input::Send(9, 50),
    ];
    let error = |input: Input| match input {
        Input::Marker(from, _) | Input::Message(from, _) => unknown(1, from, 1),
        Input::Send(to, _) => unknown(1, 1, to),
        _ => unreachable!(),
    };
    // Every refused input at every point of the script.
    let refusals: Vec<_> = (0..script.len())
        .flat_map(|at| refused.iter().map(move |&input| (at, input, error(input))))
        .collect();
    let outputs = assert_refusals_leave_no_trace(|| engine(1, &[2], &[3]), &script, &refusals);
    let own_local = completed(outputs[5].clone());
    assert_eq!(own_local.channels, [(n(2), channel(&[2]))].into());
    assert_eq!(own_local.received, counts(&[(2, 1)]));
    assert_eq!(own_local.sent, counts(&[(3, 1)]));
}

#[test]
fn channels_cannot_change_while_a_snapshot_is_in_flight() {
    let a = sid(2, 0);
    let in_flight_error = |count| EngineError::SnapshotInFlight {
        node: n(1),
        in_flight: count,
    };
    let script = [
        Input::Initiate,
        Input::Marker(2, a),
        Input::Marker(2, sid(1, 0)),
        Input::Marker(3, a),
        Input::Marker(3, sid(1, 0)),
    ];
    assert_refusals_leave_no_trace(
        || engine(1, &[2, 3], &[2]),
        &script,
        &[
            (1, Input::AddIncoming(4), in_flight_error(1)),
            (1, Input::AddOutgoing(4), in_flight_error(1)),
            (2, Input::AddIncoming(4), in_flight_error(2)),
            (2, Input::AddOutgoing(3), in_flight_error(2)),
            // The channel that was refused does not exist.
            (2, Input::Marker(4, a), unknown(1, 4, 1)),
            (4, Input::AddOutgoing(4), in_flight_error(1)),
        ],
    );

    // Once nothing is in flight, the same changes are accepted and used.
    let mut e = engine(1, &[2], &[2]);
    let p = Money(0);
    let (id, _) = e.initiate(&p).unwrap();
    assert_eq!(e.add_incoming(n(3)), Err(in_flight_error(1)));
    completed(e.on_marker(n(2), id, &p).unwrap());
    assert_eq!(e.add_incoming(n(3)), Ok(()));
    assert_eq!(e.add_outgoing(n(3)), Ok(()));
    let (id, actions) = e.initiate(&p).unwrap();
    assert_eq!(actions, started(id, &[2, 3]));
    assert_eq!(e.on_marker(n(3), id, &p), Ok(vec![]));
    let local = completed(e.on_marker(n(2), id, &p).unwrap());
    assert_eq!(
        local.channels.keys().copied().collect::<Vec<_>>(),
        [n(2), n(3)]
    );
    assert_eq!(local.sent, counts(&[(2, 0), (3, 0)]));
}

#[test]
fn a_channel_to_itself_is_refused() {
    let mut e = engine(1, &[2], &[2]);
    assert_eq!(e.add_incoming(n(1)), Err(EngineError::SelfChannel(n(1))));
    assert_eq!(e.add_outgoing(n(1)), Err(EngineError::SelfChannel(n(1))));
    assert!(e.incoming().eq([n(2)]));
    assert!(e.outgoing().eq([n(2)]));
    // ... so a marker "from itself" is on an unknown channel.
    assert_eq!(
        e.on_marker(n(1), sid(1, 0), &Money(0)),
        Err(unknown(1, 1, 1))
    );
    assert!(in_flight(&e).is_empty());
}

#[test]
fn adding_a_channel_twice_keeps_its_counts() {
    let mut e = engine(1, &[2], &[2]);
    let p = Money(0);
    e.on_message(n(2), &1, &p).unwrap();
    e.on_send(n(2)).unwrap();
    e.on_send(n(2)).unwrap();
    e.add_incoming(n(2)).unwrap();
    e.add_outgoing(n(2)).unwrap();
    let (id, _) = e.initiate(&p).unwrap();
    let local = completed(e.on_marker(n(2), id, &p).unwrap());
    assert_eq!(local.received, counts(&[(2, 1)]));
    assert_eq!(local.sent, counts(&[(2, 2)]));
}

// ---------------------------------------------------------------------------------
// Global snapshots.
// ---------------------------------------------------------------------------------

#[cfg(feature = "sim")]
mod global_snapshots {
    use super::*;
    use snapshot_core::sim::{Kind, Sim};
    use snapshot_core::topology::Topology;
    use snapshot_core::{GlobalSnapshot, SnapshotError};

    type Global = GlobalSnapshot<u64, Vec<u64>>;

    /// The local snapshots of one snapshot of nodes 8, 15 and 100, each starting with 100,
    /// that caught money in transit on 8 -> 15 (one message of 3) and 15 -> 100 (one of 5):
    /// taken by real nodes, on a simulated network (the complete graph) whose deliveries
    /// this chooses one by one up to the cut, and leaves to the seeded generator after.
    fn taken_snapshot() -> (SnapshotId, Vec<Local>) {
        let mut sim =
            Sim::new(1, &Topology::complete([8, 15, 100].map(n)), |_| Money(100)).unwrap();
        let send = |sim: &mut Sim<Money>, from: u32, to: u32, amount: u64| {
            sim.process_mut(n(from)).unwrap().0 -= amount;
            sim.send(n(from), n(to), amount).unwrap();
        };
        send(&mut sim, 8, 15, 10);
        sim.deliver(n(8), n(15)).unwrap();
        send(&mut sim, 8, 15, 3);
        send(&mut sim, 15, 100, 5);
        let id = sim.initiate(n(100)).unwrap();
        // 15 records: 8 -> 15 open, 3 in transit.
        assert_eq!(sim.deliver(n(100), n(15)).unwrap().started, Some(id));
        assert_eq!(sim.deliver(n(8), n(15)).unwrap().kind, Kind::Message);
        send(&mut sim, 15, 8, 1); // after 15 recorded: not in the snapshot
        sim.run_until_quiet(100).unwrap();
        assert_eq!(sim.in_transit(), 0);
        assert!(
            sim.nodes()
                .all(|node| node.engine().in_flight().next().is_none())
        );
        let [global] = <[Global; 1]>::try_from(sim.take_completed()).expect("one snapshot");
        assert_eq!(global.id(), id);
        let locals: Vec<Local> = global.nodes().cloned().collect();
        assert_eq!(locals.len(), 3);
        (id, locals)
    }

    #[test]
    fn check_cut_accepts_a_cut_taken_by_the_engines() {
        let (id, locals) = taken_snapshot();
        let global = Global::from_locals(id, locals).unwrap();
        assert_eq!(global.id(), id);
        assert_eq!(global.check_cut(), Ok(()));
        let states: u64 = global.nodes().map(|l| l.state).sum();
        let in_transit: u64 = global
            .channels()
            .iter()
            .flat_map(|(_, _, ch)| ch.record.iter())
            .sum();
        assert_eq!(states + in_transit, 300);
        assert_eq!(global.node(n(15)).unwrap().channels[&n(8)], channel(&[3]));
        assert_eq!(global.node(n(100)).unwrap().channels[&n(15)], channel(&[5]));
    }

    #[test]
    fn check_cut_rejects_tampered_counts() {
        let (id, locals) = taken_snapshot();
        let position = |node: u32| locals.iter().position(|l| l.node == n(node)).unwrap();
        let (i8, i15) = (position(8), position(15));
        // On 8 -> 15: 2 sent before the cut, 1 received before it, 1 in transit.
        let inconsistent = |sent, received, recorded| {
            Err(SnapshotError::InconsistentCut {
                from: n(8),
                to: n(15),
                sent,
                received,
                recorded,
            })
        };
        let check = |tamper: &dyn Fn(&mut Vec<Local>)| {
            let mut locals = locals.clone();
            tamper(&mut locals);
            Global::from_locals(id, locals).unwrap().check_cut()
        };

        assert_eq!(check(&|_| {}), Ok(()));
        assert_eq!(
            check(&|l| *l[i8].sent.get_mut(&n(15)).unwrap() += 1),
            inconsistent(3, 1, 1)
        );
        assert_eq!(
            check(&|l| *l[i8].sent.get_mut(&n(15)).unwrap() -= 1),
            inconsistent(1, 1, 1)
        );
        assert_eq!(
            check(&|l| *l[i15].received.get_mut(&n(8)).unwrap() += 1),
            inconsistent(2, 2, 1)
        );
        assert_eq!(
            check(&|l| l[i15].channels.get_mut(&n(8)).unwrap().messages = 0),
            inconsistent(2, 1, 0)
        );
        assert_eq!(
            check(&|l| *l[i15].received.get_mut(&n(8)).unwrap() = u64::MAX),
            inconsistent(2, u64::MAX, 1),
            "no overflow"
        );
        // A channel known to only one of its ends.
        let unmatched = Err(SnapshotError::UnmatchedChannel {
            from: n(8),
            to: n(15),
        });
        assert_eq!(
            check(&|l| {
                l[i15].received.remove(&n(8));
            }),
            unmatched
        );
        assert_eq!(
            check(&|l| {
                l[i15].channels.remove(&n(8));
            }),
            unmatched
        );
        assert_eq!(
            check(&|l| {
                l[i8].sent.remove(&n(15));
            }),
            unmatched
        );
    }

    #[test]
    fn check_cut_reports_a_missing_node() {
        let (id, mut locals) = taken_snapshot();
        locals.retain(|l| l.node != n(100));
        let global = Global::from_locals(id, locals).unwrap();
        assert_eq!(
            global.check_cut(),
            Err(SnapshotError::MissingNode {
                from: n(8),
                to: n(100),
            })
        );

        // Missing at the sending end of a one-way channel 8 -> 15.
        let receiver = LocalSnapshot {
            id,
            node: n(15),
            state: 0,
            channels: [(n(8), channel(&[]))].into(),
            sent: BTreeMap::new(),
            received: counts(&[(8, 0)]),
        };
        let global = Global::from_locals(id, [receiver]).unwrap();
        assert_eq!(
            global.check_cut(),
            Err(SnapshotError::MissingNode {
                from: n(8),
                to: n(15),
            })
        );
    }

    #[test]
    fn insert_refuses_duplicates_and_other_snapshots() {
        let (id, locals) = taken_snapshot();
        let mut global = Global::new(id);
        global.insert(locals[0].clone()).unwrap();
        assert_eq!(
            global.insert(locals[0].clone()),
            Err(SnapshotError::Duplicate(locals[0].node))
        );
        let other = SnapshotId { seq: 1, ..id };
        let mut foreign = locals[1].clone();
        foreign.id = other;
        assert_eq!(
            global.insert(foreign),
            Err(SnapshotError::WrongSnapshot {
                node: locals[1].node,
                expected: id,
                found: other,
            })
        );
        // Neither refusal changed it.
        assert_eq!(global.nodes().count(), 1);
        assert_eq!(global.node(locals[0].node), Some(&locals[0]));
        assert_eq!(global.node(locals[1].node), None);

        // from_locals stops at the first bad one.
        let mut twice = locals.clone();
        twice.push(locals[2].clone());
        assert_eq!(
            Global::from_locals(id, twice),
            Err(SnapshotError::Duplicate(locals[2].node))
        );
    }

    #[test]
    fn nodes_and_channels_are_ordered_by_numeric_node_id() {
        let (id, mut locals) = taken_snapshot();
        locals.reverse();
        let global = Global::from_locals(id, locals).unwrap();
        assert_eq!(
            global.nodes().map(|l| l.node).collect::<Vec<_>>(),
            [n(8), n(15), n(100)]
        );
        let order: Vec<_> = global
            .channels()
            .iter()
            .map(|&(from, to, _)| (from.0, to.0))
            .collect();
        assert_eq!(
            order,
            [(8, 15), (8, 100), (15, 8), (15, 100), (100, 8), (100, 15)]
        );
    }

    #[test]
    fn global_snapshot_survives_a_serde_round_trip() {
        let (id, locals) = taken_snapshot();
        let global = Global::from_locals(id, locals).unwrap();
        let bytes = postcard::to_allocvec(&global).unwrap();
        let back: Global = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, global);
        assert_eq!(back.check_cut(), Ok(()));
        // And a truncated encoding is an error, not a different snapshot.
        assert!(postcard::from_bytes::<Global>(&bytes[..bytes.len() - 1]).is_err());
    }
}
