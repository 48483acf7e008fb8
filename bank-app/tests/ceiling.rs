//! The ceiling of the script mode runs: a script's round trips, on roles started as
//! `master` starts them, end cleanly, and a round trip to a node the script never
//! created is refused rather than waited for.

use bank_app::ceiling::RoundTrips;
use bank_app::master::Master;
use bank_app::systems::threads::MemSystem;
use std::time::Duration;

fn master() -> Master<Vec<u8>> {
    Master::new(
        Box::new(MemSystem::default()),
        Vec::new(),
        1,
        Duration::from_secs(10),
    )
}

#[test]
fn a_scripts_round_trips_run_and_print_nothing() {
    let plan = RoundTrips::of(
        "StartMaster\nCreateNode 1 50\nCreateNode 2 50\n\
         Send 1 2 5\nReceive 2 1\nBeginSnapshot 1\nCollectState\nKillAll\n",
    );
    assert_eq!(plan.len(), 4);
    let mut master = master();
    plan.run(&mut master).expect("the round trips");
    master.shutdown().expect("the bank stops");
    assert!(master.output().is_empty(), "a round trip prints nothing");
}

#[test]
fn a_round_trip_to_a_node_never_created_is_refused() {
    let plan = RoundTrips::of("StartMaster\nCreateNode 1 50\nSend 9 1 5\n");
    let mut master = master();
    let error = plan.run(&mut master).expect_err("node 9 does not exist");
    master.shutdown().expect("the bank stops");
    assert!(
        format!("{error:#}").contains("node 9"),
        "the error names the node: {error:#}"
    );
}
