//! A byte flipped on the wire between two nodes of a cluster over TLS is caught.
//!
//! Three nodes run `master node` with certificates from `master certs`, on 127.0.0.1.
//! The cluster file gives node 2's address as that of a TCP proxy in this test, which
//! forwards every connection made to it both ways to node 2, and follows the TLS
//! records going to node 2. Everyone reaches node 2 at the cluster file's address,
//! so through the proxy: the master, the observer, node 3, and node 1. The proxy
//! finds which process opened each connection from the socket tables of `/proc`,
//! and watches node 1's.
//!
//! Once the first part of the script has run (its output read back, so every
//! connection is up and quiet), the proxy is armed: the next application-data record
//! node 1 sends node 2 is the transfer of `Send 1 2 300`, and the proxy flips a bit
//! of its ciphertext.
//!
//! Node 2 must refuse the record, and the transfer never reaches it: node 2, told to
//! take it (`Receive 2 1`), fails at once, having seen node 1's connection close; the
//! master (with a short answer timeout, a bound on the failure should node 2 not say
//! so) exits with status 3 and one line on stderr that names node 2 and node 1, and
//! stdout is a prefix of what the correct run prints (the model's output), so that no
//! wrong balance is ever printed. The control runs the same cluster through the same proxy, armed the same
//! way, without the flip: the record goes through intact, the run prints the model's
//! output and exits 0.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use support::model::{Bank, Flaw};
use support::{collect, drain, feed, identity_args, lines, master_command, procfs, wait_or_kill};

const CLUSTER: &str = "lab";
const SEED: u64 = 5;
/// The master's answer timeout, in seconds: a failure that only silence shows is
/// reported this soon.
const ACK_TIMEOUT: u32 = 4;
const NODES: [u32; 3] = [1, 2, 3];

/// How long any one step may take: a line of output, a process's exit.
const STEP: Duration = Duration::from_secs(20);

/// Sets up the bank and moves money both ways between node 1 and node 2 before the
/// proxy is armed.
const SETUP: &str = "StartMaster
CreateNode 1 1000
CreateNode 2 500
CreateNode 3 250
Send 1 2 100
Send 2 1 40
Send 2 3 50
Receive 2 1
Receive 1 2
Receive 3 2
";

/// What `SETUP` prints: one line per `Receive`.
const SETUP_LINES: usize = 3;

/// Runs once the proxy is armed: the first thing node 1 sends node 2 is the transfer
/// of its first line (`Send 1 2 300`), whose record is tampered with.
const REST: &str = "Send 1 2 300
Receive 2 1
BeginSnapshot 1
Send 3 1 10
Send 2 3 20
ReceiveAll
CollectState
PrintSnapshot
Send 1 2 7
Receive 2 1
KillAll
";

/// The content type of a TLS record of application data (in TLS 1.3, every record
/// after the hellos).
const APPLICATION_DATA: u8 = 23;

/// Which byte of the armed record's body (its ciphertext) is flipped: one inside the
/// encrypted frame, before the authentication tag.
const FLIP_AT: usize = 3;

/// The proxy in front of node 2.
struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    listener: Option<JoinHandle<()>>,
}

struct Shared {
    /// Node 2's own address.
    target: SocketAddr,
    /// Whether the armed record is tampered with (false: the control).
    flip: bool,
    /// The process whose connections are watched: node 1's.
    watched: AtomicI32,
    /// Set by the test; the first application-data record of a watched connection
    /// after it takes it (and is flipped, when `flip`).
    armed: AtomicBool,
    /// How many records were taken while armed: 1 once the record has passed.
    taken: AtomicU32,
    /// Connections the watched process opened.
    watched_connections: AtomicU32,
    stop: AtomicBool,
    /// Every socket of the proxy, to shut down when it stops.
    sockets: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 to `target`, that flips the armed record if `flip`.
    fn start(target: SocketAddr, flip: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy listens");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            target,
            flip,
            watched: AtomicI32::new(0),
            armed: AtomicBool::new(false),
            taken: AtomicU32::new(0),
            watched_connections: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        let listener = std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                accepting.forward(client, address);
            }
        });
        Proxy {
            address,
            shared,
            listener: Some(listener),
        }
    }

    /// Watches the connections that process `pid` opens from now on.
    fn watch(&self, pid: u32) {
        let pid = i32::try_from(pid).expect("a pid");
        self.shared.watched.store(pid, Ordering::SeqCst);
    }

    fn arm(&self) {
        self.shared.armed.store(true, Ordering::SeqCst);
    }

    fn taken(&self) -> u32 {
        self.shared.taken.load(Ordering::SeqCst)
    }
}

/// Whether the connection that arrived from `peer` at the proxy's `local` address
/// was opened by process `pid`: its socket is one of the process's descriptors.
fn opened_by(pid: i32, peer: SocketAddr, local: SocketAddr) -> bool {
    let inodes = procfs::socket_inodes(pid);
    procfs::tcp_sockets().iter().any(|socket| {
        socket.local_port == peer.port()
            && socket.remote_port == local.port()
            && inodes.contains(&socket.inode)
    })
}

impl Shared {
    /// Connects to the target and forwards both ways, a thread each.
    fn forward(self: &Arc<Self>, client: TcpStream, local: SocketAddr) {
        let Ok(server) = TcpStream::connect(self.target) else {
            return;
        };
        let watched = client
            .peer_addr()
            .is_ok_and(|peer| opened_by(self.watched.load(Ordering::SeqCst), peer, local));
        if watched {
            self.watched_connections.fetch_add(1, Ordering::SeqCst);
        }
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client_back), Ok(server_back)) = clones else {
            return;
        };
        {
            let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
            for socket in [&client, &server] {
                if let Ok(socket) = socket.try_clone() {
                    sockets.push(socket);
                }
            }
        }
        let up = Arc::clone(self);
        let to_node = std::thread::spawn(move || up.to_node(client, server, watched));
        let down = std::thread::spawn(move || copy(server_back, client_back));
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.push(to_node);
        threads.push(down);
    }

    /// Forwards what goes to node 2, following its TLS records: 5 bytes of header
    /// (type, version, length), then the body. On a watched connection, the first
    /// application-data record after the proxy is armed is taken, and flipped.
    fn to_node(&self, mut from: TcpStream, mut to: TcpStream, watched: bool) {
        let mut header = Vec::with_capacity(5);
        let mut body_left = 0usize;
        let mut body_at = 0usize;
        let mut tamper = false;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for byte in &mut buf[..n] {
                if body_left == 0 {
                    header.push(*byte);
                    if header.len() == 5 {
                        body_left = usize::from(u16::from_be_bytes([header[3], header[4]]));
                        body_at = 0;
                        tamper = watched
                            && header[0] == APPLICATION_DATA
                            && self
                                .armed
                                .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
                                .is_ok();
                        if tamper {
                            self.taken.fetch_add(1, Ordering::SeqCst);
                        }
                        header.clear();
                    }
                    continue;
                }
                if tamper && self.flip && body_at == FLIP_AT {
                    *byte ^= 0x01;
                }
                body_at += 1;
                body_left -= 1;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Forwards what node 2 answers, as it is.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the listener, which sees `stop`.
        let _ = TcpStream::connect(self.address);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        let sockets = std::mem::take(
            &mut *self
                .shared
                .sockets
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The node processes: killed and reaped if still running when the test ends.
struct Nodes(Vec<(u32, Child, SocketAddr)>);

impl Nodes {
    fn node(&self, id: u32) -> &(u32, Child, SocketAddr) {
        self.0.iter().find(|(n, ..)| *n == id).expect("a node")
    }

    fn address(&self, id: u32) -> SocketAddr {
        self.node(id).2
    }

    fn pid(&self, id: u32) -> u32 {
        self.node(id).1.id()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, node, _) in &mut self.0 {
            if let Ok(None) = node.try_wait() {
                let _ = node.kill();
                let _ = node.wait();
            }
        }
    }
}

/// Starts node `id` on 127.0.0.1, on a port of the system's choice, and returns it
/// once it listens, with its address (from its log line `waiting for the master`).
fn start_node(certs: &Path, id: u32) -> (u32, Child, SocketAddr) {
    let args = [
        "node",
        "--id",
        &id.to_string(),
        "--listen",
        "127.0.0.1:0",
        "--cluster",
        CLUSTER,
    ];
    let mut child = master_command(&args)
        .args(identity_args(certs, &format!("node-{id}")))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a node");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let address = lines.by_ref().map_while(Result::ok).find_map(|line| {
        if !line.contains("waiting for the master") {
            return None;
        }
        line.split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
            .and_then(|address| address.parse::<SocketAddr>().ok())
    });
    let Some(address) = address else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {id} ended before it listened");
    };
    // Keeps draining its log, so that it never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    (id, child, address)
}

/// What a run through the proxy did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Records the armed proxy took: 1 if the record of the transfer reached it.
    taken: u32,
    /// Connections node 1 opened through the proxy.
    watched_connections: u32,
}

/// Runs `SETUP`, arms the proxy, runs `REST`, on a cluster of three nodes whose node
/// 2 the others reach through the proxy.
fn run_through_proxy(flip: bool) -> Outcome {
    let certs = tempfile::tempdir().expect("a temporary directory");
    support::make_certs(certs.path(), CLUSTER, &NODES);
    let mut nodes = Nodes(
        NODES
            .iter()
            .map(|&id| start_node(certs.path(), id))
            .collect(),
    );
    let proxy = Proxy::start(nodes.address(2), flip);
    // Before node 1 connects to anyone: at `CreateNode 2`, once fed.
    proxy.watch(nodes.pid(1));

    // Node 3 by name, to run a host name through too.
    let file = certs.path().join("cluster.txt");
    let text = format!(
        "cluster {CLUSTER}\nnode 1 {}\nnode 2 {}\nnode 3 localhost:{}\n",
        nodes.address(1),
        proxy.address,
        nodes.address(3).port()
    );
    std::fs::write(&file, text).expect("write the cluster file");
    let mut args: Vec<String> = [
        "--transport",
        "tcp",
        "--cluster",
        file.to_str().expect("a UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--seed",
        &SEED.to_string(),
        "--ack-timeout",
        &ACK_TIMEOUT.to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    args.extend(identity_args(certs.path(), "master"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut master = master_command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the master");
    let err = drain(master.stderr.take().expect("stderr is piped"));
    let out = lines(master.stdout.take().expect("stdout is piped"));
    let mut input: Option<ChildStdin> = master.stdin.take();

    // The first part, until its output is back: every connection is up, and quiet.
    feed(input.as_mut(), SETUP, "the master");
    let mut stdout = String::new();
    for _ in 0..SETUP_LINES {
        match out.recv_timeout(STEP) {
            Ok(line) => {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Err(_) => {
                let _ = master.kill();
                let _ = master.wait();
                panic!("the setup's output did not come: {stdout:?}");
            }
        }
    }
    proxy.arm();
    // The master may have stopped reading once the run failed.
    if let Some(mut stdin) = input.take() {
        let _ = stdin.write_all(REST.as_bytes());
    }
    let status = wait_or_kill(&mut master, STEP, "the master");
    while let Ok(line) = out.recv_timeout(STEP) {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let stderr = String::from_utf8_lossy(&collect(err, "the master", "stderr")).into_owned();
    // Every node ends with the master, at `KillAll` or when it has gone.
    for (id, node, _) in &mut nodes.0 {
        wait_or_kill(node, STEP, &format!("node {id}"));
    }
    drop(nodes);
    let taken = proxy.taken();
    let watched_connections = proxy.shared.watched_connections.load(Ordering::SeqCst);
    drop(proxy);
    Outcome {
        code: status.code(),
        stdout,
        stderr,
        taken,
        watched_connections,
    }
}

/// What the correct run prints: the model's output for the whole script.
fn expected() -> String {
    let script = format!("{SETUP}{REST}");
    let outcome = Bank::run(script.as_bytes(), SEED, Flaw::None);
    assert_eq!(outcome.code, 0, "the script is accepted");
    String::from_utf8(outcome.stdout).expect("UTF-8 output")
}

#[test]
fn the_same_proxy_without_the_flip_changes_nothing() {
    let run = run_through_proxy(false);
    assert_eq!(
        run.watched_connections, 1,
        "node 1 reaches node 2 through the proxy"
    );
    assert_eq!(
        run.taken, 1,
        "the record of the transfer of `Send 1 2 300` went through the armed proxy"
    );
    assert_eq!(run.stdout, expected(), "stderr: {}", run.stderr);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
}

#[test]
fn a_flipped_byte_between_two_nodes_fails_the_run_and_prints_no_wrong_balance() {
    let run = run_through_proxy(true);
    assert_eq!(
        run.watched_connections, 1,
        "node 1 reaches node 2 through the proxy"
    );
    assert_eq!(
        run.taken, 1,
        "the record of the transfer of `Send 1 2 300` was tampered with"
    );
    assert_eq!(
        run.code,
        Some(3),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    let expected = expected();
    assert!(
        expected.starts_with(&run.stdout),
        "printed what the correct run does not:\n{}\n--- the correct run:\n{expected}",
        run.stdout
    );
    // The setup's output, and not the transfer that was tampered with.
    assert_eq!(run.stdout.lines().count(), SETUP_LINES, "{}", run.stdout);
    let message: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(message.len(), 1, "one line on stderr: {}", run.stderr);
    assert!(
        message[0].starts_with("node 2: ") && message[0].contains("node 1"),
        "{}",
        run.stderr
    );
    assert!(
        message[0].contains("TLS records do not verify"),
        "the message says why: {}",
        run.stderr
    );
    eprintln!("{}", message[0]);
}
