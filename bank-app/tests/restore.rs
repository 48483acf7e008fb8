//! The bank's branches restored from a snapshot: a snapshot taken right after the
//! restore, before anything new happens, is the one restored from, and the bank goes
//! on with every unit of money.

use bank_app::account::{Account, InTransit, Transfer};
use snapshot_core::sim::Sim;
use snapshot_core::topology::Topology;
use snapshot_core::{Endpoint, Envelope, Frame, GlobalSnapshot, NodeId, restore};

const COORDINATOR: Endpoint = Endpoint::Role(0);

fn ids() -> impl Iterator<Item = NodeId> {
    (1..=3).map(NodeId)
}

fn total(snapshot: &GlobalSnapshot<u64, InTransit>) -> u64 {
    let held: u64 = snapshot.nodes().map(|local| local.state).sum();
    let moving: u64 = snapshot
        .channels()
        .iter()
        .map(|(_, _, c)| c.record.sum())
        .sum();
    held + moving
}

/// Takes the next snapshot delivering markers and the coordinator's frames before
/// any transfer, so that every branch records before it takes a transfer that was
/// put back.
fn markers_first(sim: &mut Sim<Account>) {
    loop {
        let next = sim.ready().into_iter().find(|&(from, to)| {
            !matches!(
                sim.frames(from, to).next(),
                Some(Frame::Peer(Envelope::App(_)))
            )
        });
        let delivered = match next {
            Some((from, to)) => Some(sim.deliver(from, to).unwrap()),
            None => sim.step().unwrap(),
        };
        if delivered.is_none() {
            return;
        }
    }
}

#[test]
fn a_bank_restored_from_a_snapshot_takes_the_same_snapshot_again_and_goes_on() {
    for seed in 0..8 {
        let mut sim = Sim::<Account>::new(seed, &Topology::complete(ids()), |_| Account {
            balance: 100,
            handled: 0,
        })
        .unwrap();
        sim.add_coordinator(COORDINATOR).unwrap();
        // Transfers on every channel; those on 2 -> 1 and 3 -> 1 are held back, so the
        // snapshot catches them in transit.
        for (from, to) in [(1, 2), (2, 1), (2, 3), (3, 1), (3, 2), (1, 3)] {
            let (from, to) = (NodeId(from), NodeId(to));
            let amount = 1 + seed + u64::from(from.0);
            assert!(sim.process_mut(from).unwrap().withdraw(amount));
            sim.send(from, to, Transfer(amount)).unwrap();
        }
        sim.hold(NodeId(2), NodeId(1)).unwrap();
        sim.hold(NodeId(3), NodeId(1)).unwrap();
        sim.run(3).unwrap();
        sim.request_snapshot(NodeId(1)).unwrap();
        sim.run_until_quiet(10_000).unwrap();
        sim.release(NodeId(2), NodeId(1)).unwrap();
        sim.release(NodeId(3), NodeId(1)).unwrap();
        sim.run_until_quiet(10_000).unwrap();
        let taken = sim.completed()[0].clone();
        taken.check_cut().unwrap();
        assert_eq!(total(&taken), 300, "seed {seed}");
        let in_transit: usize = taken
            .channels()
            .iter()
            .map(|(_, _, c)| c.record.0.len())
            .sum();
        assert!(
            in_transit >= 2,
            "seed {seed}: the held transfers were caught"
        );

        // Saved, and restored from the bytes.
        let bytes = postcard::to_allocvec(&taken).unwrap();
        let saved: GlobalSnapshot<u64, InTransit> = postcard::from_bytes(&bytes).unwrap();
        let mut restored = Sim::<Account>::restore(seed, &saved).unwrap();
        for (from, to, channel) in saved.channels() {
            assert_eq!(restored.len(from, to), channel.record.0.len(), "put back");
        }
        restored.initiate(saved.id().initiator).unwrap();
        markers_first(&mut restored);
        let again = &restored.completed()[0];
        again.check_cut().unwrap();
        restore::compare(&saved, again).unwrap();
        assert_eq!(total(again), 300);
        // And the bank goes on: every transfer put back arrives.
        restored.run_until_quiet(10_000).unwrap();
        let held: u64 = restored.nodes().map(|node| node.process().balance).sum();
        assert_eq!(held, 300, "seed {seed}");
    }
}
