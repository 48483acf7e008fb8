//! The harness on every medium, at sizes that run in a moment: transfers arrive,
//! snapshots taken meanwhile are consistent, the ceilings move what they are given,
//! and clusters stop cleanly.

use snapshot_benches::BACKGROUND;
use snapshot_core::NodeId;
use snapshot_harness::{
    Cluster, Medium, Topology, TransportKind, Work, ceiling, check, encoded_transfer, run_transfers,
};

#[test]
fn transfers_arrive_and_snapshots_meanwhile_are_consistent() {
    for &medium in TransportKind::all() {
        let one_way = run_transfers(medium, Topology::OneWay, 10_000, 0).unwrap();
        assert_eq!(one_way.transfers, 10_000, "{medium:?}");
        let ring = run_transfers(medium, Topology::Ring(4), 100_000, 1_000).unwrap();
        assert_eq!(ring.transfers, 100_000, "{medium:?}");
        assert!(ring.snapshots > 0, "{medium:?}: snapshots were assembled");
        // One snapshot a second, over a run of milliseconds: the first, taken at the
        // start, is assembled all the same.
        let slow = run_transfers(medium, Topology::Ring(4), 10_000, 1).unwrap();
        assert!(slow.snapshots >= 1, "{medium:?}: the first snapshot");
    }
}

#[test]
fn snapshots_of_idle_and_loaded_rings_are_consistent() {
    for &medium in TransportKind::all() {
        for work in [Work::Idle, BACKGROUND] {
            let mut cluster = Cluster::spawn(medium, Topology::Ring(5), |_| work).unwrap();
            cluster.start().unwrap();
            for node in 1..=5 {
                let (_, global) = cluster.snapshot(NodeId(node)).unwrap();
                check(&global).unwrap();
                assert_eq!(global.nodes().count(), 5);
            }
            let accounts = cluster.stop().unwrap();
            assert_eq!(accounts.len(), 5);
            if work == Work::Idle {
                assert!(accounts.iter().all(|a| a.handled == 0));
            }
        }
    }
}

#[test]
fn ceilings_move_every_frame() {
    assert_eq!(encoded_transfer().unwrap().len(), 4 + 2 + 16);
    for &medium in TransportKind::all() {
        ceiling(medium, 100_000).unwrap();
    }
}

#[test]
fn a_run_of_fewer_than_two_nodes_is_refused() {
    assert!(Cluster::spawn(TransportKind::Mem, Topology::Ring(1), |_| Work::Idle).is_err());
    assert!(Topology::Ring(4).neighbours(5).is_empty());
    assert!(Topology::OneWay.neighbours(3).is_empty());
}
