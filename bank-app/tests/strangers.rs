//! Strangers on the ports of a TCP run change nothing in what it prints.
//!
//! A seeded bank script runs over `--transport tcp`, fed a line at a time. Once some
//! nodes are up, the test looks up every port the run listens on (the ports of the
//! run's processes in `/proc/net/tcp`) and connects strangers to each: one sends random
//! bytes, one a random frame under the handshake's bound, one a length prefix
//! announcing a frame over 16 MiB, one half a handshake, and one nothing at all; the
//! last two stay open until the run ends. Then the script goes on, with a node that
//! joins while the strangers hang on (it must connect to the nodes already there), and
//! its output must be, byte for byte, what the same script and seed print on mem.

mod support;

use rustix::process::{Pid, Signal, kill_process};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use support::procfs;
use support::{DEADLINE, TestRng, collect, drain, master_command, run_script, wait_or_kill};

const SEED: u64 = 11;

/// Lines the master answers with `ERR_SEND` once it has handled every line before:
/// no node ever holds this much.
const SYNC_1: &str = "Send 1 2 18446744073709551615\n";
const SYNC_3: &str = "Send 3 1 18446744073709551615\n";

/// The script, in the parts between which strangers come.
const OPENING: &str = "StartMaster\nCreateNode 1 1000\nCreateNode 2 500\n";
/// Node 3 joins while the strangers on nodes 1 and 2 hang on.
const JOINING: &str = "CreateNode 3 250\n";
const MIDDLE: &str = "Send 1 2 100
Send 2 3 50
Send 3 1 25
Send 1 3 10
Receive 2
BeginSnapshot 1
Send 2 1 5
Receive 3
Receive 1
ReceiveAll
CollectState
PrintSnapshot
Send 2 1 7
Send 3 2 1
Receive 1
Receive 2 3
";
const END: &str = "KillAll\n";

/// The bound on a frame (snapshot-core's `DEFAULT_MAX_FRAME`).
const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// The whole script, as the mem run gets it.
fn script() -> String {
    [OPENING, SYNC_1, JOINING, SYNC_3, MIDDLE, END].concat()
}

/// The master of a TCP run, fed a line at a time; on drop, it and every process of
/// its run are killed.
struct Master {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: String,
    stderr: Option<mpsc::Receiver<Vec<u8>>>,
    waited: bool,
}

impl Master {
    fn start() -> Master {
        let mut child = master_command(&["--transport", "tcp", "--seed", &SEED.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the master");
        let pid = i32::try_from(child.id()).expect("a pid fits an i32");
        let lines = support::lines(child.stdout.take().expect("stdout is piped"));
        let stderr = Some(drain(child.stderr.take().expect("stderr is piped")));
        Master {
            stdin: child.stdin.take(),
            child,
            pid,
            lines,
            stdout: String::new(),
            stderr,
            waited: false,
        }
    }

    fn feed(&mut self, text: &str) {
        support::feed(self.stdin.as_mut(), text, "the master");
    }

    /// Feeds `sync`, a line answered with `ERR_SEND`, and waits for the answer.
    fn sync(&mut self, sync: &str, deadline: Instant) {
        self.feed(sync);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "no ERR_SEND for {sync:?} ({e}); stdout so far:\n{}",
                    self.stdout
                )
            });
            self.stdout.push_str(&line);
            self.stdout.push('\n');
            if line == "ERR_SEND" {
                return;
            }
        }
    }

    /// Every port the run listens on, by who listens: `master`, `observer`, `node N`.
    fn ports(&self, nodes: usize) -> BTreeMap<String, u16> {
        let mut ports = BTreeMap::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            ports.clear();
            let mut found = vec![("master".to_string(), self.pid)];
            for p in procfs::run_processes(self.pid, false) {
                if p.exited() {
                    continue;
                }
                let name = match p.arg("--id") {
                    Some(id) => format!("node {id}"),
                    None => "observer".to_string(),
                };
                found.push((name, p.pid));
            }
            for (name, pid) in found {
                if let Some(&port) = procfs::listening_ports(pid).first() {
                    ports.insert(name, port);
                }
            }
            if ports.len() == nodes + 2 {
                return ports;
            }
            assert!(
                Instant::now() < deadline,
                "the run's listeners: expected the master, the observer and {nodes} \
                 nodes, found {ports:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the master to exit, until `deadline`; returns its status code,
    /// stdout and stderr.
    fn finish(&mut self, deadline: Instant) -> (Option<i32>, String, String) {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait_or_kill(&mut self.child, left, "the tcp master");
        self.waited = true;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        let stderr = self
            .stderr
            .take()
            .map(|rx| collect(rx, "the tcp master", "stderr"))
            .unwrap_or_default();
        (
            status.code(),
            self.stdout.clone(),
            String::from_utf8_lossy(&stderr).into_owned(),
        )
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.stdin = None;
        if !self.waited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The master is reaped: only the run's id tells its processes now.
        for p in procfs::run_processes(self.pid, true) {
            // A live process that carries this run's id.
            if !p.exited()
                && let Some(pid) = Pid::from_raw(p.pid)
            {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

/// The strangers on one port.
struct Strangers {
    at: String,
    /// Those that sent something the endpoint must refuse: it closes them.
    refused: Vec<(&'static str, TcpStream)>,
    /// Those that stay open until the run ends.
    _lingering: Vec<TcpStream>,
}

/// Connects the strangers to `port` of `at`, with `rng` for their bytes.
fn strangers(at: &str, port: u16, rng: &mut TestRng) -> Strangers {
    let connect = || {
        TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to {at} on {port}: {e}"))
    };
    // Writes may fail if the endpoint has already refused the connection: whatever it
    // took is enough.
    let send = |stream: &mut TcpStream, bytes: &[u8]| {
        let _ = stream.write_all(bytes).and_then(|()| stream.flush());
    };
    let random =
        |rng: &mut TestRng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.next_u64() as u8).collect() };

    let mut refused = Vec::new();

    let mut noise = connect();
    send(&mut noise, &random(rng, 4096));
    refused.push(("random bytes", noise));

    let mut garbage = connect();
    let size = 200u32;
    let mut frame = size.to_le_bytes().to_vec();
    frame.extend(random(rng, size as usize));
    send(&mut garbage, &frame);
    refused.push(("a random frame", garbage));

    let mut oversized = connect();
    let mut frame = (MAX_FRAME + 1).to_le_bytes().to_vec();
    frame.extend(random(rng, 1024));
    send(&mut oversized, &frame);
    refused.push(("an oversized frame", oversized));

    // Half a hello: a length prefix, the magic, the version, and no more.
    let mut half = connect();
    let mut hello = 80u32.to_le_bytes().to_vec();
    hello.extend_from_slice(b"snap-tcp");
    hello.push(1);
    send(&mut half, &hello);

    let silent = connect();

    Strangers {
        at: at.to_string(),
        refused,
        _lingering: vec![half, silent],
    }
}

impl Strangers {
    /// Asserts that the endpoint has closed every connection it had to refuse (it
    /// read them, then hung up), waiting up to `deadline`.
    fn assert_refused(&mut self, deadline: Instant) {
        for (what, stream) in &mut self.refused {
            let _ = stream.shutdown(Shutdown::Write);
            let mut buffer = [0; 4096];
            let closed = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break false;
                }
                stream
                    .set_read_timeout(Some(left))
                    .expect("set a read timeout");
                match stream.read(&mut buffer) {
                    Ok(0) => break true,
                    // Nothing is ever sent to a stranger before the hello is checked.
                    Ok(n) => panic!("{} sent {n} bytes to a stranger with {what}", self.at),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break false;
                    }
                    // Reset: the endpoint closed it with our bytes unread.
                    Err(_) => break true,
                }
            };
            assert!(closed, "{} did not close a stranger with {what}", self.at);
        }
    }
}

#[test]
fn strangers_on_the_ports_of_a_tcp_run_change_nothing() {
    let expected = run_script("mem", Some(SEED), script().as_bytes());
    expected.assert_code(0).assert_quiet();
    assert!(
        expected.out().contains("---Node states"),
        "the script prints a snapshot:\n{}",
        expected.out()
    );

    // The whole run, strangers and all, has the deadline of any run.
    let deadline = Instant::now() + DEADLINE;
    let mut rng = TestRng::new(SEED);
    let mut master = Master::start();
    let mut all = Vec::new();

    master.feed(OPENING);
    master.sync(SYNC_1, deadline);
    let ports = master.ports(2);
    for (at, &port) in &ports {
        all.push(strangers(at, port, &mut rng));
    }

    master.feed(JOINING);
    master.sync(SYNC_3, deadline);
    let port = master.ports(3)["node 3"];
    all.push(strangers("node 3", port, &mut rng));

    master.feed(MIDDLE);
    for strangers in &mut all {
        strangers.assert_refused(deadline);
    }
    master.feed(END);
    let (code, stdout, stderr) = master.finish(deadline);

    assert_eq!(code, Some(0), "exit status; stderr:\n{stderr}");
    assert_eq!(stderr, "", "stderr");
    assert!(
        stdout == expected.out(),
        "stdout differs from mem's\n--- mem\n{}--- tcp\n{stdout}",
        expected.out()
    );
    // The lingering strangers stayed open to the end of the run.
    drop(all);
}
