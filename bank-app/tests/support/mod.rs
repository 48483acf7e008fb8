//! What every integration test of `master` shares: the transports to run over, a way to
//! run `master` with a deadline (or, on mem, a `Master` in the test's process), a
//! seeded generator for test scripts, and a plain model of the bank's specification.
//!
//! Each test file includes this module with `mod support;` and uses only part of it.
#![allow(dead_code)]

pub mod live;
pub mod model;

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use wait_timeout::ChildExt;

/// Every transport the tests run over. Adding `"pipe"` and `"tcp"` here runs the whole
/// suite over them too.
pub const TRANSPORTS: &[&str] = &["mem", "pipe", "tcp"];

/// How long one `master` may run before the test kills it and fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The documented node limit of a transport, if the tests know it.
pub fn node_limit(transport: &str) -> Option<usize> {
    match transport {
        "mem" => Some(256),
        "pipe" | "tcp" => Some(64),
        _ => None,
    }
}

/// What one run of `master` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// What the run was (for failure messages).
    pub what: String,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// The exit code, or `None` if a signal ended the process.
    pub code: Option<i32>,
}

impl Run {
    /// Stdout as text (lossy), for messages and parsing.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Asserts the exit code, showing the whole run if it is wrong.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{}: exit status\n--- stdout\n{}--- stderr\n{}",
            self.what,
            self.out(),
            self.err()
        );
        self
    }

    /// Asserts stdout byte for byte.
    pub fn assert_stdout(&self, expected: &[u8]) -> &Self {
        assert!(
            self.stdout == expected,
            "{}: stdout differs\n--- expected\n{}--- actual\n{}--- stderr\n{}",
            self.what,
            String::from_utf8_lossy(expected),
            self.out(),
            self.err()
        );
        self
    }

    /// Asserts that nothing went to stderr.
    pub fn assert_quiet(&self) -> &Self {
        assert!(
            self.stderr.is_empty(),
            "{}: unexpected stderr\n{}",
            self.what,
            self.err()
        );
        self
    }

    /// The line numbers of the `line N: REASON` lines on stderr, in order. Panics on
    /// any other stderr line, or on a reason that is empty.
    pub fn rejected_lines(&self) -> Vec<u64> {
        let err = self.err();
        err.lines()
            .map(|line| {
                let parsed = line.strip_prefix("line ").and_then(|rest| {
                    let (number, reason) = rest.split_once(": ")?;
                    let n = number.parse::<u64>().ok()?;
                    (!reason.trim().is_empty() && !number.starts_with('0')).then_some(n)
                });
                parsed.unwrap_or_else(|| {
                    panic!(
                        "{}: stderr line {line:?} is not `line N: REASON`\n{err}",
                        self.what
                    )
                })
            })
            .collect()
    }
}

/// Writes, with `master certs`, the certificates of cluster `cluster` for nodes `ids`
/// into `dir`.
pub fn make_certs(dir: &Path, cluster: &str, ids: &[u32]) {
    let nodes = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let args = ["certs", "--cluster", cluster, "--nodes", &nodes, "--out"];
    let status = master_command(&args)
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run master certs");
    assert!(status.success(), "master certs: {status}");
}

/// `--ca`, `--cert` and `--key-file` for the endpoint whose files in `dir`, made by
/// [`make_certs`], are named `who` (`master`, `node-3`).
pub fn identity_args(dir: &Path, who: &str) -> Vec<String> {
    let file = |name: String| dir.join(name).display().to_string();
    vec![
        "--ca".to_string(),
        file("ca.pem".to_string()),
        "--cert".to_string(),
        file(format!("{who}.pem")),
        "--key-file".to_string(),
        file(format!("{who}-key.pem")),
    ]
}

/// Writes `dir/name`, an executable shell script that runs `body` and then `exec`s
/// `master` with its own arguments (keeping its pid): a `--role-program`.
pub fn master_wrapper(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let master = env!("CARGO_BIN_EXE_master");
    assert!(!master.contains('\''), "{master:?} cannot be quoted");
    let path = dir.join(name);
    let text = format!("#!/bin/sh\n{body}exec '{master}' \"$@\"\n");
    std::fs::write(&path, text).expect("the wrapper is written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("the wrapper is made executable");
    path
}

/// The bank's demo script, `scripts/demo.script`.
pub fn demo_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.script")
}

/// The `master` binary under test, with logs off whatever the environment says.
pub fn master_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_master"));
    command.args(args).env_remove("RUST_LOG");
    command
}

/// Runs `master ARGS` with `stdin` as its standard input and waits for it with
/// [`DEADLINE`]; kills it and fails the test past that.
pub fn run_master(args: &[&str], stdin: &[u8]) -> Run {
    run_command(master_command(args), args, stdin)
}

/// Like [`run_master`], for a command already set up (extra environment).
pub fn run_command(mut command: Command, args: &[&str], stdin: &[u8]) -> Run {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (what, mut child, writer) = start(command, args, stdin);
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_or_kill(&mut child, DEADLINE, &what);
    let code = status.code();
    let stdout = collect(out, &what, "stdout");
    let stderr = collect(err, &what, "stderr");
    let _ = writer.join();
    Run {
        what,
        stdout,
        stderr,
        code,
    }
}

/// Like [`run_command`], for a command whose stdout and stderr are already set up
/// (the [`Run`] holds neither).
pub fn run_command_with_output(command: Command, args: &[&str], stdin: &[u8]) -> Run {
    let (what, mut child, writer) = start(command, args, stdin);
    let status = wait_or_kill(&mut child, DEADLINE, &what);
    let _ = writer.join();
    Run {
        what,
        stdout: Vec::new(),
        stderr: Vec::new(),
        code: status.code(),
    }
}

/// Starts `command` (`master ARGS`) and feeds it `stdin` from a thread of its own.
fn start(mut command: Command, args: &[&str], stdin: &[u8]) -> (String, Child, JoinHandle<()>) {
    let what = format!("master {}", args.join(" "));
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let input = stdin.to_vec();
    let mut pipe_in = child.stdin.take().expect("stdin is piped");
    // The master may stop reading (KillAll, a usage error): a broken pipe is expected.
    let writer = thread::spawn(move || {
        let _ = pipe_in.write_all(&input);
    });
    (what, child, writer)
}

/// Writes `text` to a running master's standard input, which must still be open.
pub fn feed(stdin: Option<&mut std::process::ChildStdin>, text: &str, what: &str) {
    let stdin = stdin.expect("stdin is open");
    stdin
        .write_all(text.as_bytes())
        .and_then(|()| stdin.flush())
        .unwrap_or_else(|e| panic!("{what}: cannot write {text:?}: {e}"));
}

/// Sends the lines of `pipe` (a master's stdout) as they come, from a thread of its
/// own, until it ends or nobody listens.
pub fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Reads `pipe` to its end on a thread of its own.
pub fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// What a [`drain`] read, once the process has exited. A pipe still open a while after
/// the master exited means something it started outlived it.
pub fn collect(rx: mpsc::Receiver<Vec<u8>>, what: &str, name: &str) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what}: {name} still open after the master exited"))
}

/// Waits for `child` at most `deadline`; past that kills it, reaps it, and fails.
pub fn wait_or_kill(child: &mut Child, deadline: Duration, what: &str) -> ExitStatus {
    match child.wait_timeout(deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {deadline:?}; killed it");
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: cannot wait: {e}");
        }
    }
}

/// How the script reaches `master`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `master SCRIPT`.
    File,
    /// `master`, script on stdin.
    Stdin,
    /// `master -`, script on stdin.
    Dash,
}

/// All the ways a script reaches `master`.
pub const VIAS: [Via; 3] = [Via::File, Via::Stdin, Via::Dash];

/// The arguments for `transport` and `seed`, before the script.
pub fn base_args(transport: &str, seed: Option<u64>) -> Vec<String> {
    let mut args = vec!["--transport".to_string(), transport.to_string()];
    if let Some(seed) = seed {
        args.push("--seed".to_string());
        args.push(seed.to_string());
    }
    args
}

/// Runs `script` on `transport` with `seed`, reaching `master` as `via` says.
pub fn run_script_via(transport: &str, seed: Option<u64>, script: &[u8], via: Via) -> Run {
    let mut args = base_args(transport, seed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut stdin: &[u8] = b"";
    match via {
        Via::File => {
            let path = dir.path().join("bank.script");
            std::fs::write(&path, script).expect("write the script");
            args.push(path_arg(&path));
        }
        Via::Stdin => stdin = script,
        Via::Dash => {
            args.push("-".to_string());
            stdin = script;
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = run_master(&args, stdin);
    run.what = format!("{} ({via:?})", run.what);
    run
}

/// Runs `script` on `transport` with `seed`: piped on the stdin of `master` for a
/// transport whose roles are processes, and with a [`Master`](bank_app::master::Master)
/// of this test process for `mem`, whose roles are threads anyway.
pub fn run_script(transport: &str, seed: Option<u64>, script: &[u8]) -> Run {
    match transport {
        "mem" => run_in_process(seed, script),
        _ => run_script_via(transport, seed, script, Via::Stdin),
    }
}

/// Runs `script` with `seed` as `master --transport mem` would, but in this process:
/// a [`Master`](bank_app::master::Master) over the threads of a
/// [`MemSystem`](bank_app::systems::threads::MemSystem), printing into memory. Fails
/// past [`DEADLINE`].
pub fn run_in_process(seed: Option<u64>, script: &[u8]) -> Run {
    use bank_app::master::{Master, run_script};
    use bank_app::systems::threads::MemSystem;
    let what = match seed {
        Some(seed) => format!("Master on mem, in process, seed {seed}"),
        None => "Master on mem, in process".to_string(),
    };
    let seed = seed.unwrap_or_else(bank_app::choice::fresh_seed);
    let input = std::io::Cursor::new(script.to_vec());
    let (done, result) = mpsc::channel();
    // A thread of its own, so that a master that hangs fails the test rather than
    // hang it.
    thread::spawn(move || {
        let system = Box::new(MemSystem::default());
        let mut master = Master::new(system, Vec::new(), seed, Duration::from_secs(30));
        let mut stderr = Vec::new();
        let status = run_script(&mut master, input, &mut stderr);
        let _ = done.send((master.output().clone(), stderr, status as i32));
    });
    let (stdout, stderr, code) = result
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: still running after {DEADLINE:?}"));
    Run {
        what,
        stdout,
        stderr,
        code: Some(code),
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_string()
}

/// A small, fixed pseudo-random generator (SplitMix64) for generating test scripts:
/// its stream depends on nothing but its seed.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the tiny bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `0..=n`.
    pub fn up_to(&mut self, n: u64) -> u64 {
        if n == u64::MAX {
            self.next_u64()
        } else {
            self.below(n + 1)
        }
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Node ids of many widths, including both ends of the range.
pub const ID_POOL: &[u32] = &[
    0,
    1,
    2,
    7,
    8,
    9,
    10,
    15,
    42,
    99,
    100,
    230,
    1000,
    4096,
    65535,
    65536,
    123_456_789,
    4_294_967_294,
    4_294_967_295,
];

/// The `PrintSnapshot` blocks of a run's stdout: each node's state, and each channel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `(id, state)` in printed order.
    pub nodes: Vec<(u32, u64)>,
    /// `(from, to, state)` in printed order.
    pub channels: Vec<(u32, u32, u64)>,
}

impl Block {
    /// All the money the block accounts for.
    pub fn money(&self) -> u128 {
        let held: u128 = self.nodes.iter().map(|&(_, s)| u128::from(s)).sum();
        let moving: u128 = self.channels.iter().map(|&(_, _, s)| u128::from(s)).sum();
        held + moving
    }

    /// Why the block is not a well-formed snapshot of a bank holding `total`, if it is
    /// not: sorted nodes, every channel between them once in order, and the money adds
    /// up.
    pub fn check(&self, total: u64) -> Result<(), String> {
        let ids: Vec<u32> = self.nodes.iter().map(|&(id, _)| id).collect();
        if !ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("nodes not in ascending order: {ids:?}"));
        }
        let expected: Vec<(u32, u32)> = ids
            .iter()
            .flat_map(|&a| ids.iter().filter(move |&&b| b != a).map(move |&b| (a, b)))
            .collect();
        let channels: Vec<(u32, u32)> = self.channels.iter().map(|&(a, b, _)| (a, b)).collect();
        if channels != expected {
            return Err(format!("channels {channels:?}, expected {expected:?}"));
        }
        if self.money() != u128::from(total) {
            return Err(format!(
                "accounts for {} but the bank holds {total}",
                self.money()
            ));
        }
        Ok(())
    }
}

/// Every `PrintSnapshot` block in `stdout`, skipping the other lines. Panics on a
/// block that is malformed.
pub fn parse_blocks(stdout: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        if line != "---Node states" {
            continue;
        }
        let mut block = Block {
            nodes: Vec::new(),
            channels: Vec::new(),
        };
        loop {
            let line = lines.next().expect("a block ends with its channel states");
            if line == "---Channel states" {
                break;
            }
            let (id, state) = line
                .strip_prefix("node ")
                .and_then(|rest| rest.split_once(" = "))
                .unwrap_or_else(|| panic!("bad node line {line:?}"));
            block.nodes.push((number(id), number(state)));
        }
        while let Some(line) = lines.peek() {
            let Some(rest) = line.strip_prefix("channel (") else {
                break;
            };
            let (pair, state) = rest
                .split_once(") = ")
                .unwrap_or_else(|| panic!("bad channel line {line:?}"));
            let (from, to) = pair
                .split_once(" -> ")
                .unwrap_or_else(|| panic!("bad channel line {line:?}"));
            block
                .channels
                .push((number(from), number(to), number(state)));
            lines.next();
        }
        blocks.push(block);
    }
    blocks
}

fn number<T: std::str::FromStr>(text: &str) -> T {
    assert!(
        text == "0" || (!text.starts_with('0') && text.bytes().all(|b| b.is_ascii_digit())),
        "{text:?} is not printed as a plain decimal"
    );
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is out of range"))
}

/// The processes and TCP sockets of the machine, read from `/proc` (Linux): how the
/// lifecycle tests find every process of a run and the sockets it holds.
pub mod procfs {
    use std::collections::{BTreeSet, HashMap};
    use std::fs;

    /// A TCP socket's state as `/proc/net/tcp` writes it.
    pub const ESTABLISHED: u8 = 0x01;
    /// See [`ESTABLISHED`].
    pub const LISTEN: u8 = 0x0A;

    /// One process, as `/proc/PID` shows it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Proc {
        pub pid: i32,
        pub ppid: i32,
        /// `R`, `S`, `Z` (a zombie), …
        pub state: char,
        /// The command line, one element per argument.
        pub args: Vec<String>,
    }

    impl Proc {
        /// Whether it is a zombie (or dead): it has exited, only its entry remains.
        pub fn exited(&self) -> bool {
            matches!(self.state, 'Z' | 'X' | 'x')
        }

        /// The argument after `flag`, if there is one.
        pub fn arg(&self, flag: &str) -> Option<&str> {
            let at = self.args.iter().position(|a| a == flag)?;
            self.args.get(at + 1).map(String::as_str)
        }
    }

    /// The process `pid`, if it exists and can be read.
    pub fn process(pid: i32) -> Option<Proc> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `PID (COMM) STATE PPID …`, where COMM may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(Proc {
            pid,
            ppid,
            state,
            args,
        })
    }

    /// Every process there is now.
    pub fn processes() -> Vec<Proc> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(process)
            .collect()
    }

    /// The processes of the run whose master is `master`: every process whose command
    /// line carries the run's id (`--run-id MASTER-…`), which finds them after the
    /// master has gone too, and, while the master is not reaped (`reaped` false), its
    /// children (one just forked has not taken its command line yet). Zombies
    /// included.
    pub fn run_processes(master: i32, reaped: bool) -> Vec<Proc> {
        let prefix = format!("{master}-");
        processes()
            .into_iter()
            .filter(|p| {
                let carries_id = p.arg("--run-id").is_some_and(|id| id.starts_with(&prefix));
                p.pid != master && (carries_id || (!reaped && p.ppid == master))
            })
            .collect()
    }

    /// The inodes of the sockets process `pid` holds open.
    pub fn socket_inodes(pid: i32) -> BTreeSet<u64> {
        let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return BTreeSet::new();
        };
        entries
            .filter_map(|e| {
                let target = fs::read_link(e.ok()?.path()).ok()?;
                let target = target.to_str()?;
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// Which process holds each socket inode, over every process there is.
    pub fn socket_owners() -> HashMap<u64, i32> {
        let mut owners = HashMap::new();
        for p in processes() {
            for inode in socket_inodes(p.pid) {
                owners.insert(inode, p.pid);
            }
        }
        owners
    }

    /// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TcpSocket {
        pub local_port: u16,
        pub remote_port: u16,
        pub state: u8,
        /// 0 for a socket no process holds any more (`TIME_WAIT`, orphans).
        pub inode: u64,
    }

    /// Every TCP socket, IPv4 and IPv6.
    pub fn tcp_sockets() -> Vec<TcpSocket> {
        let port = |address: &str| {
            let (_, port) = address.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        };
        let mut sockets = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = fs::read_to_string(table).unwrap_or_default();
            for line in text.lines().skip(1) {
                // `sl local remote st tx:rx tr:when retrnsmt uid timeout inode …`
                let fields: Vec<&str> = line.split_whitespace().collect();
                let parsed = (|| {
                    Some(TcpSocket {
                        local_port: port(fields.get(1)?)?,
                        remote_port: port(fields.get(2)?)?,
                        state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
                        inode: fields.get(9)?.parse().ok()?,
                    })
                })();
                sockets.extend(parsed);
            }
        }
        sockets
    }

    /// The ports process `pid` listens on.
    pub fn listening_ports(pid: i32) -> BTreeSet<u16> {
        let inodes = socket_inodes(pid);
        tcp_sockets()
            .into_iter()
            .filter(|s| s.state == LISTEN && inodes.contains(&s.inode))
            .map(|s| s.local_port)
            .collect()
    }
}
