//! A run on mem keeps its master's core to itself: the system `master` builds for mem
//! ([`systems::build`], a `MemSystem::with_master_core`) pins the master's thread to
//! the core it runs on while every role thread runs on the others, and gives the
//! master's thread its cores back at shutdown. With a single core, or where a thread
//! may not choose its cores, nothing is pinned.

use bank_app::master::{Flow, Master};
use bank_app::script::Command;
use bank_app::systems::{self, Options, TransportKind};
use rustix::process::Pid;
use rustix::thread::CpuSet;
use snapshot_core::NodeId;
use std::time::Duration;

/// The cores the thread of this process named `name` may use.
fn cores_of_thread(name: &str) -> Option<CpuSet> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    tasks.flatten().find_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let tid = task.file_name().to_str()?.parse::<i32>().ok()?;
        rustix::thread::sched_getaffinity(Some(Pid::from_raw(tid)?)).ok()
    })
}

#[test]
fn a_run_pins_its_master_and_keeps_roles_off_its_core_until_shutdown() {
    let before = rustix::thread::sched_getaffinity(None).expect("this thread's cores");
    // Whether this thread may set its cores at all (to those it has).
    let may_pin = rustix::thread::sched_setaffinity(None, &before).is_ok();
    let system = systems::build(TransportKind::Mem, &Options::default()).expect("a mem system");
    let mut master = Master::new(system, std::io::sink(), 1, Duration::from_secs(10));
    let node = NodeId(7001);
    for command in [
        Command::StartMaster,
        Command::CreateNode { node, amount: 5 },
    ] {
        assert_eq!(
            master.execute(command).expect("the bank starts"),
            Flow::Continue
        );
    }
    let during = rustix::thread::sched_getaffinity(None).expect("this thread's cores");
    let role = cores_of_thread("node-7001").expect("the node's thread");
    if before.count() >= 2 && may_pin {
        assert_eq!(during.count(), 1, "the master's thread is pinned");
        let master_core = (0..CpuSet::MAX_CPU)
            .find(|&cpu| during.is_set(cpu))
            .expect("one core");
        assert!(
            !role.is_set(master_core),
            "the node runs off the master's core"
        );
        assert_eq!(role.count(), before.count() - 1);
    } else {
        assert_eq!(
            during, before,
            "one core, or no right to pin: nothing pinned"
        );
        assert_eq!(role, before);
    }
    master.shutdown().expect("the bank stops");
    let after = rustix::thread::sched_getaffinity(None).expect("this thread's cores");
    assert_eq!(
        after, before,
        "shutdown gives the master's thread its cores back"
    );
}
