//! Endpoints in separate OS processes: this test binary re-executes itself as a node
//! (the `child` test, which does nothing unless the environment tells it to).

mod common;

use common::{PATIENCE, address, assert_empty, recv};
use serde::{Deserialize, Serialize};
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Set in a child's environment to the run directory.
const CHILD_DIR: &str = "TRANSPORT_PIPE_TEST_CHILD_DIR";
/// Set in a child's environment to its node id.
const CHILD_ID: &str = "TRANSPORT_PIPE_TEST_CHILD_ID";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Hello,
    Echo(u64),
    Bye,
}

/// The node's side: say hello to the master, echo what it sends, leave when told to
/// or when the master goes.
#[test]
fn child() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ID)) else {
        return; // not a child: nothing to do
    };
    let me = Endpoint::Node(NodeId(id.parse().unwrap()));
    let mut t = transport_pipe::PipeTransport::<Msg>::new(&dir, me).unwrap();
    t.connect(Endpoint::Role(1), &dir).unwrap();
    t.send(Endpoint::Role(1), Msg::Hello).unwrap();
    loop {
        match t.recv() {
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Echo(n))) => {
                t.send(Endpoint::Role(1), Msg::Echo(n)).unwrap()
            }
            Ok(Incoming::Frame(Endpoint::Role(1), Msg::Bye)) => break,
            Ok(Incoming::Departed(Endpoint::Role(1))) => break,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(error) => panic!("{error}"),
        }
    }
}

/// A child process, killed and reaped if the test fails before it is done with it.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn spawn(dir: &Path, id: u32) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["child", "--exact", "--test-threads=1", "--nocapture"])
            .env(CHILD_DIR, dir)
            .env(CHILD_ID, id.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        ChildGuard(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Waits for the child to exit, up to the tests' patience.
    fn wait(mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.0 = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn frames_go_both_ways_between_processes() {
    const FRAMES: u64 = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let node = Endpoint::Node(NodeId(1));
    let mut master =
        transport_pipe::PipeTransport::<Msg>::new(dir.path(), Endpoint::Role(1)).unwrap();
    // As the bank does: connect before spawning.
    master.connect(node, &run).unwrap();
    let child = ChildGuard::spawn(dir.path(), 1);
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node, Msg::Hello)
    );
    for n in 0..FRAMES {
        master.send(node, Msg::Echo(n)).unwrap();
    }
    for n in 0..FRAMES {
        assert_eq!(
            recv(&mut master).unwrap(),
            Incoming::Frame(node, Msg::Echo(n))
        );
    }
    master.send(node, Msg::Bye).unwrap();
    assert_eq!(recv(&mut master).unwrap(), Incoming::Departed(node));
    assert!(
        matches!(master.recv(), Err(TransportError::Closed)),
        "its only peer has gone"
    );
    assert!(child.wait().success(), "the child exits cleanly");
    drop(master);
    assert_empty(dir.path());
}

#[test]
fn a_killed_process_is_reported_departed() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let node = Endpoint::Node(NodeId(2));
    let mut master =
        transport_pipe::PipeTransport::<Msg>::new(dir.path(), Endpoint::Role(1)).unwrap();
    master.connect(node, &run).unwrap();
    let mut child = ChildGuard::spawn(dir.path(), 2);
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node, Msg::Hello)
    );
    master.send(node, Msg::Echo(1)).unwrap();
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node, Msg::Echo(1))
    );

    child.child().kill().unwrap();
    assert_eq!(recv(&mut master).unwrap(), Incoming::Departed(node));
    assert!(!child.wait().success());
    assert!(
        matches!(master.send(node, Msg::Echo(2)), Err(TransportError::Disconnected(p)) if p == node)
    );
    drop(master);
    assert_empty(dir.path());
}

/// The master goes first: the child notices and exits by itself.
#[test]
fn a_child_exits_when_the_master_goes() {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let node = Endpoint::Node(NodeId(3));
    let mut master =
        transport_pipe::PipeTransport::<Msg>::new(dir.path(), Endpoint::Role(1)).unwrap();
    master.connect(node, &run).unwrap();
    let child = ChildGuard::spawn(dir.path(), 3);
    assert_eq!(
        recv(&mut master).unwrap(),
        Incoming::Frame(node, Msg::Hello)
    );
    drop(master);
    assert!(child.wait().success());
    assert_empty(dir.path());
}
