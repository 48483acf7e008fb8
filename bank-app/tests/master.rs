//! `Master` in this process, over a fake system whose node 2 dies, refuses to join or
//! falls silent, as a process does: what the master reports, and how it ends the run.
//!
//! The fake runs the observer and the other nodes as the real roles, on threads over
//! transport-mem, and node 2 as a stub that misbehaves as it joins the bank or after. Like
//! a system of processes, it tells the master of a death by itself (a departure) and
//! knows why a role has gone or cannot answer.

mod support;

use bank_app::master::{Master, Status, run_script};
use bank_app::protocol::{Control, MASTER, OBSERVER, ToMaster, ToNode, Wire, to_master};
use bank_app::role::Role;
use bank_app::system::{Departure, Started, System};
use bank_app::systems::run_role;
use crossbeam_channel::{Receiver, Sender};
use snapshot_core::{Endpoint, Frame, Incoming, NodeId, Transport};
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use support::DEADLINE;
use transport_mem::{MemNetwork, MemTransport};

/// The node that misbehaves.
const VICTIM: NodeId = NodeId(2);

/// Why the fake says the victim has gone.
const DEATH: &str = "the process died (signal 9)";

/// What a [`Fault::FailsToJoin`] victim answers its `Join` with.
const REFUSED: &str = "connecting to node 1: refused";

/// What the victim does once it has joined.
enum Fault {
    /// Dies when `cue` says so (or is dropped): its endpoint goes, and the system
    /// tells of it as of a process killed by SIGKILL.
    DiesOnCue(Receiver<()>),
    /// Dies as soon as it is asked anything.
    DiesWhenAsked,
    /// Never answers again. The system sees its process stopped if `seen`.
    Silent { seen: bool },
    /// Dies when told to join, without answering.
    DiesOnJoin,
    /// Answers its `Join` with a failure of its own, and lives on.
    FailsToJoin,
}

/// A system of threads whose node [`VICTIM`] misbehaves.
struct Fake {
    network: MemNetwork<Wire>,
    master: String,
    fault: Option<Fault>,
    seen_stopped: bool,
    /// Why the victim has gone, once it has.
    dead: Arc<Mutex<Option<String>>>,
    tell: Sender<Departure>,
    departures: Receiver<Departure>,
    threads: Vec<JoinHandle<()>>,
    /// Whether the master said it was stopping before it shut the system down.
    stopped_in_order: Arc<Mutex<bool>>,
    /// The node the system cannot start.
    cannot_start: Option<NodeId>,
}

impl Fake {
    fn new(fault: Fault) -> (Fake, Arc<Mutex<bool>>) {
        let (tell, departures) = crossbeam_channel::unbounded();
        let seen_stopped = matches!(fault, Fault::Silent { seen: true });
        let stopped_in_order = Arc::new(Mutex::new(false));
        let fake = Fake {
            network: MemNetwork::new(),
            master: String::new(),
            fault: Some(fault),
            seen_stopped,
            dead: Arc::new(Mutex::new(None)),
            tell,
            departures,
            threads: Vec::new(),
            stopped_in_order: Arc::clone(&stopped_in_order),
            cannot_start: None,
        };
        (fake, stopped_in_order)
    }
}

impl System for Fake {
    fn master(&mut self) -> anyhow::Result<Box<dyn Transport<Wire>>> {
        let master = self.network.endpoint(MASTER)?;
        self.master = master.address();
        Ok(Box::new(master))
    }

    fn start(&mut self, role: Role) -> anyhow::Result<Started> {
        if self
            .cannot_start
            .is_some_and(|node| role == Role::Node(node))
        {
            anyhow::bail!("no room for another process");
        }
        let mut transport = self.network.endpoint(role.endpoint())?;
        transport.connect(MASTER, &self.master)?;
        let address = transport.address();
        let thread = match (role, self.fault.take()) {
            (Role::Node(VICTIM), Some(fault)) => {
                let tell = self.tell.clone();
                let dead = Arc::clone(&self.dead);
                thread::spawn(move || stub(transport, fault, &tell, &dead))
            }
            (_, fault) => {
                self.fault = fault;
                thread::spawn(move || {
                    let _ = run_role(role, &mut transport);
                })
            }
        };
        self.threads.push(thread);
        Ok(Started {
            address: Some(address),
            attach: false,
        })
    }

    fn max_nodes(&self) -> usize {
        8
    }

    fn departures(&self) -> Option<Receiver<Departure>> {
        Some(self.departures.clone())
    }

    fn why_gone(&mut self, who: Endpoint, _grace: Duration) -> Option<String> {
        // The stub records its death before its endpoint goes: no need to wait.
        (who == Endpoint::Node(VICTIM))
            .then(|| {
                self.dead
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .flatten()
    }

    fn unresponsive(&self, who: Endpoint) -> Option<String> {
        (self.seen_stopped && who == Endpoint::Node(VICTIM))
            .then(|| "the process is stopped".to_string())
    }

    fn stopping(&mut self) {
        *self
            .stopped_in_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
    }

    fn shutdown(&mut self) -> Result<(), String> {
        for thread in self.threads.drain(..) {
            thread
                .join()
                .map_err(|_| "a role thread panicked".to_string())?;
        }
        Ok(())
    }
}

/// Node [`VICTIM`]: says hello, joins, then misbehaves as `fault` says.
fn stub(
    mut t: MemTransport<Wire>,
    fault: Fault,
    tell: &Sender<Departure>,
    dead: &Mutex<Option<String>>,
) {
    let me = Endpoint::Node(VICTIM);
    let address = Some(t.address());
    if to_master(&mut t, ToMaster::Hello { address }).is_err() {
        return;
    }
    let die = |t: MemTransport<Wire>| {
        *dead.lock().unwrap_or_else(PoisonError::into_inner) = Some(DEATH.to_string());
        drop(t);
        let _ = tell.send(Departure {
            who: me,
            cause: DEATH.to_string(),
        });
    };
    // It never sends to its peers: joining is only saying so.
    loop {
        match t.recv() {
            Ok(Incoming::Frame(MASTER, Frame::Control(Control::ToNode(ToNode::Join { .. })))) => {
                break;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
    match &fault {
        Fault::DiesOnJoin => return die(t),
        Fault::FailsToJoin => {
            let _ = to_master(&mut t, ToMaster::Failure(REFUSED.to_string()));
            // Lives on until the master stops it.
            while let Ok(incoming) = t.recv() {
                if matches!(
                    incoming,
                    Incoming::Frame(MASTER, Frame::Control(Control::ToNode(ToNode::Stop)))
                        | Incoming::Departed(MASTER)
                ) {
                    return;
                }
            }
            return;
        }
        _ => {}
    }
    if to_master(&mut t, ToMaster::Joined).is_err() {
        return;
    }
    match fault {
        Fault::DiesOnCue(cue) => {
            let _ = cue.recv();
            die(t);
        }
        Fault::DiesWhenAsked => loop {
            match t.recv() {
                Ok(Incoming::Frame(MASTER | OBSERVER, Frame::Control(_))) => return die(t),
                Ok(_) => {}
                Err(_) => return,
            }
        },
        Fault::DiesOnJoin | Fault::FailsToJoin => {}
        Fault::Silent { .. } => loop {
            match t.recv() {
                Ok(Incoming::Frame(MASTER, Frame::Control(Control::ToNode(ToNode::Stop))))
                | Ok(Incoming::Departed(MASTER))
                | Err(_) => return,
                Ok(_) => {}
            }
        },
    }
}

/// What a run printed and how it ended.
struct Ended {
    status: Status,
    stdout: String,
    stderr: String,
    stopped_in_order: bool,
}

/// Runs `script` (from memory, to its end) on a fake system with `fault`, answers
/// awaited `ack_timeout`.
fn run(fault: Fault, ack_timeout: Duration, script: &str) -> Ended {
    run_on(Fake::new(fault), ack_timeout, script)
}

fn run_on(
    (fake, stopped_in_order): (Fake, Arc<Mutex<bool>>),
    ack_timeout: Duration,
    script: &str,
) -> Ended {
    let mut master = Master::new(Box::new(fake), Vec::new(), 1, ack_timeout);
    let mut stderr = Vec::new();
    let input = std::io::Cursor::new(script.as_bytes().to_vec());
    let status = run_script(&mut master, input, &mut stderr);
    let stopped_in_order = *stopped_in_order
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Ended {
        status,
        stdout: String::from_utf8_lossy(master.output()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stopped_in_order,
    }
}

const TWO_NODES: &str = "StartMaster\nCreateNode 1 10\nCreateNode 2 10\n";

/// What the master writes, sent on as it writes it.
struct Lines(Sender<Vec<u8>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(bytes.to_vec())
            .map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_role_that_dies_while_the_master_waits_for_input_ends_the_run_at_once() {
    let (kill, cue) = crossbeam_channel::bounded(1);
    let (fake, stopped_in_order) = Fake::new(Fault::DiesOnCue(cue));
    let (input, mut script) = std::io::pipe().expect("a pipe");
    let (printed, out) = crossbeam_channel::unbounded();
    let master = thread::spawn(move || {
        let mut master = Master::new(Box::new(fake), Lines(printed), 1, DEADLINE);
        let mut stderr = Vec::new();
        let status = run_script(&mut master, input, &mut stderr);
        (status, String::from_utf8_lossy(&stderr).into_owned())
    });
    // ERR_SEND: the master has handled every line so far and waits for the next.
    writeln!(script, "{TWO_NODES}Send 1 2 11").expect("the script is written");
    let answer = out.recv_timeout(DEADLINE).expect("an answer");
    assert_eq!(answer, b"ERR_SEND\n");
    kill.send(()).expect("the stub waits for its cue");
    // The script is still open: only the death can have ended the run.
    let (status, stderr) = master.join().expect("the master's thread");
    drop(script);
    assert_eq!(status, Status::Failed);
    assert_eq!(stderr, format!("node 2: {DEATH}\n"));
    assert!(
        *stopped_in_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    );
}

#[test]
fn a_role_that_dies_during_a_command_is_named_with_the_reason_the_system_knows() {
    for (command, prints) in [
        ("Send 2 1 5\n", ""),
        ("Send 1 2 11\nBeginSnapshot 2\n", "ERR_SEND\n"),
    ] {
        let ended = run(
            Fault::DiesWhenAsked,
            DEADLINE,
            &format!("{TWO_NODES}{command}Send 1 2 1\n"),
        );
        assert_eq!(
            ended.status,
            Status::Failed,
            "{command:?}: {}",
            ended.stderr
        );
        assert_eq!(ended.stderr, format!("node 2: {DEATH}\n"), "{command:?}");
        assert_eq!(ended.stdout, prints, "{command:?}");
        assert!(ended.stopped_in_order);
    }
}

#[test]
fn a_role_the_system_sees_stopped_is_blamed_not_the_role_waiting_on_it() {
    let ack = Duration::from_millis(200);
    // The observer waits on node 2 to start the snapshot; the master waits on node 2
    // itself to pay.
    for command in ["BeginSnapshot 2\n", "Send 2 1 5\n"] {
        let ended = run(
            Fault::Silent { seen: true },
            ack,
            &format!("{TWO_NODES}{command}"),
        );
        assert_eq!(ended.status, Status::Failed);
        assert_eq!(
            ended.stderr, "node 2: the process is stopped (no answer within 0.2 s)\n",
            "{command:?}"
        );
    }
}

#[test]
fn a_role_waiting_on_a_silent_one_says_which() {
    let ended = run(
        Fault::Silent { seen: false },
        Duration::from_millis(200),
        &format!("{TWO_NODES}BeginSnapshot 2\n"),
    );
    assert_eq!(ended.status, Status::Failed);
    assert_eq!(
        ended.stderr,
        "observer: no answer within 0.2 s (it waits on node 2)\n"
    );
}

#[test]
fn what_was_printed_before_a_failure_comes_out_and_the_rest_is_not_run() {
    let ended = run(
        Fault::DiesWhenAsked,
        DEADLINE,
        &format!("{TWO_NODES}Send 1 2 11\nBeginSnapshot 1\nSend 2 1 1\nPrintSnapshot\n"),
    );
    assert_eq!(ended.status, Status::Failed);
    assert_eq!(ended.stdout, "ERR_SEND\nStarted by Node 1\n");
    assert_eq!(ended.stderr, format!("node 2: {DEATH}\n"));
}

#[test]
fn on_mem_the_master_prints_what_the_spec_says() {
    let run = support::run_in_process(
        Some(1),
        b"StartMaster\nCreateNode 2 50\nCreateNode 1 100\nSend 1 2 30\nBogus\n\
BeginSnapshot 2\nReceive 2 1\nReceive 1 2\nReceive 2\nCollectState\nPrintSnapshot\nKillAll\n\
Send 1 2 1\n",
    );
    run.assert_code(1).assert_stdout(
        b"Started by Node 2\n1 Transfer 30\n2 SnapshotToken -1\n1 SnapshotToken -1\n\
---Node states\nnode 1 = 70\nnode 2 = 50\n---Channel states\nchannel (1 -> 2) = 30\n\
channel (2 -> 1) = 0\n",
    );
    assert_eq!(run.err(), "line 5: unknown command \"Bogus\"\n");
}

#[test]
fn a_node_that_dies_joining_fails_the_run_before_a_later_line_is_refused() {
    // Whatever comes after the join, the death is what the run reports: a refused
    // line is not reported first, nor does the end of the script let the run end
    // well.
    for rest in [
        "CreateNode 2 10\n",
        "Bogus\n",
        "CreateNode 3 10\nSend 1 2 1\n",
        "Send 1 2 1\n",
        "",
    ] {
        let ended = run(Fault::DiesOnJoin, DEADLINE, &format!("{TWO_NODES}{rest}"));
        assert_eq!(ended.status, Status::Failed, "{rest:?}: {}", ended.stderr);
        assert_eq!(ended.stderr, format!("node 2: {DEATH}\n"), "{rest:?}");
        assert_eq!(ended.stdout, "", "{rest:?}");
        assert!(ended.stopped_in_order, "{rest:?}");
    }
}

#[test]
fn a_failed_join_is_reported_before_a_later_failure_to_start_a_node() {
    // Node 2 refuses its join and node 3 cannot be started: node 2's failure is the
    // run's, as it comes first.
    let (mut fake, stopped_in_order) = Fake::new(Fault::FailsToJoin);
    fake.cannot_start = Some(NodeId(3));
    let ended = run_on(
        (fake, stopped_in_order),
        DEADLINE,
        &format!("{TWO_NODES}CreateNode 3 10\nSend 1 2 1\n"),
    );
    assert_eq!(ended.status, Status::Failed, "{}", ended.stderr);
    assert_eq!(ended.stderr, format!("node 2: {REFUSED}\n"));
}

#[test]
fn a_failed_join_is_reported_before_a_later_read_error() {
    /// The script, then a read that fails.
    struct Breaks(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for Breaks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(std::io::Error::other("the disk went away")),
                n => Ok(n),
            }
        }
    }
    let (fake, _) = Fake::new(Fault::DiesOnJoin);
    let mut master = Master::new(Box::new(fake), Vec::new(), 1, DEADLINE);
    let mut stderr = Vec::new();
    let input = Breaks(std::io::Cursor::new(TWO_NODES.as_bytes().to_vec()));
    let status = run_script(&mut master, input, &mut stderr);
    assert_eq!(
        String::from_utf8_lossy(&stderr),
        format!("node 2: {DEATH}\n")
    );
    assert_eq!(status, Status::Failed);
}
