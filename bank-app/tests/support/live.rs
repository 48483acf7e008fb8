//! A run of `master` watched while it runs, for the tests that disturb one (signals to
//! the master or to the processes it started, resource limits): its script fed a piece
//! at a time, its output read as it comes, its processes found in `/proc`, and, once
//! the master has exited, a check that nothing of the run is left (no live process,
//! no listening or established socket, nothing in the run's `TMPDIR`).
//!
//! Whatever happens, a [`LiveRun`] that is dropped kills the master, if it is still
//! running, and every process of the run it can find.

use super::procfs::{self, ESTABLISHED, LISTEN, Proc};
use super::{DEADLINE, master_command};
use rustix::process::{Pid, PidfdFlags, Signal};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long after the master's exit nothing of the run may be left.
pub const LEFT_BEHIND_GRACE: Duration = Duration::from_secs(2);

/// A line that node 1 cannot pay (nodes 1 and 2 exist): the master answers
/// `ERR_SEND` once it has handled every line before it.
pub const SYNC_LINE: &str = "Send 1 2 18446744073709551615";

/// How often a [`LiveRun`] looks at `/proc` while it waits for something.
pub const POLL: Duration = Duration::from_millis(5);

/// Polls `condition` every [`POLL`] until it holds or `deadline` passes; says whether
/// it held.
pub fn poll_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// The ports each of `pids` listens on, for those that listen on any: the TCP tables
/// read once for all of them.
pub fn listening_ports(pids: impl IntoIterator<Item = i32>) -> BTreeMap<i32, BTreeSet<u16>> {
    let owners: BTreeMap<u64, i32> = pids
        .into_iter()
        .flat_map(|pid| {
            procfs::socket_inodes(pid)
                .into_iter()
                .map(move |i| (i, pid))
        })
        .collect();
    let mut ports: BTreeMap<i32, BTreeSet<u16>> = BTreeMap::new();
    for socket in procfs::tcp_sockets() {
        if socket.state == LISTEN
            && let Some(&pid) = owners.get(&socket.inode)
        {
            ports.entry(pid).or_default().insert(socket.local_port);
        }
    }
    ports
}

/// Which process of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The `master` the test started.
    Master,
    /// The observer's process.
    Observer,
    /// Node ID's process.
    Node(u32),
}

impl Target {
    /// How the master names it at the start of a failure line: `observer: `,
    /// `node 7: `.
    pub fn prefix(self) -> String {
        match self {
            Target::Master => "master: ".to_string(),
            Target::Observer => "observer: ".to_string(),
            Target::Node(id) => format!("node {id}: "),
        }
    }

    /// The role a process of the run plays, from its command line.
    pub fn of(process: &Proc) -> Option<Target> {
        if process.args.iter().any(|a| a == "--observer") {
            return Some(Target::Observer);
        }
        process.arg("--id")?.parse().ok().map(Target::Node)
    }
}

/// One run of `master`, its input a pipe the test writes, watched through `/proc`.
pub struct LiveRun {
    /// What the run is, for failure messages.
    pub what: String,
    /// The transport the run uses.
    pub transport: String,
    master: Child,
    /// The master's pid.
    pub pid: i32,
    /// The run's `TMPDIR`, where pipe runs keep their FIFOs.
    pub tmp: tempfile::TempDir,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line of stdout read so far, each with its `\n`.
    pub stdout: String,
    err_lines: mpsc::Receiver<String>,
    /// Every line of stderr read so far, each with its `\n`.
    pub stderr: String,
    /// Every process of the run seen so far.
    seen: BTreeSet<i32>,
    /// Every port a process of the run was seen listening on, the master's included.
    ports: BTreeSet<u16>,
    /// When the master was seen to exit (it is reaped then).
    pub exited: Option<Instant>,
    /// Bytes read so far from stdout and stderr.
    read: Arc<AtomicU64>,
    /// Stdout and stderr, to ask how much waits in them.
    pipes: [OwnedFd; 2],
}

/// A pipe that counts the bytes read from it.
struct Counted<R>(R, Arc<AtomicU64>);

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

impl LiveRun {
    /// Starts `master --transport TRANSPORT --seed SEED MORE…`.
    pub fn start(transport: &str, seed: u64, more: &[&str]) -> LiveRun {
        let seed = seed.to_string();
        let mut args = vec!["--transport", transport, "--seed", &seed];
        args.extend_from_slice(more);
        let what = format!("master {}", args.join(" "));
        LiveRun::spawn(master_command(&args), transport, what)
    }

    /// Starts `command`, a `master` (or a program that becomes one by `exec`, keeping
    /// its pid), with a `TMPDIR` of its own and its three standard streams piped.
    pub fn spawn(mut command: Command, transport: &str, what: String) -> LiveRun {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let mut master = command
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        let pid = i32::try_from(master.id()).expect("a pid fits an i32");
        let read = Arc::new(AtomicU64::new(0));
        let stdout = master.stdout.take().expect("stdout is piped");
        let stderr = master.stderr.take().expect("stderr is piped");
        let pipes = [stdout.as_fd(), stderr.as_fd()].map(|fd| {
            fd.try_clone_to_owned()
                .expect("a pipe's descriptor duplicated")
        });
        let lines = super::lines(Counted(stdout, Arc::clone(&read)));
        let err_lines = super::lines(Counted(stderr, Arc::clone(&read)));
        LiveRun {
            read,
            pipes,
            what,
            transport: transport.to_string(),
            stdin: master.stdin.take(),
            master,
            pid,
            tmp,
            lines,
            stdout: String::new(),
            err_lines,
            stderr: String::new(),
            seen: BTreeSet::new(),
            ports: BTreeSet::new(),
            exited: None,
        }
    }

    /// Waits until the master has handled every line fed so far, once nodes 1 and 2
    /// exist: node 1 cannot pay [`SYNC_LINE`], and the master says so on stdout.
    pub fn sync(&mut self) {
        self.feed(&format!("{SYNC_LINE}\n"));
        let line = self.lines.recv_timeout(DEADLINE).unwrap_or_else(|e| {
            panic!(
                "{}: no ERR_SEND within {DEADLINE:?} ({e}); stdout so far:\n{}",
                self.what, self.stdout
            )
        });
        self.stdout.push_str(&line);
        self.stdout.push('\n');
        assert_eq!(line, "ERR_SEND", "{}: unexpected stdout line", self.what);
    }

    /// Waits until the master has handled every line fed so far, before any node
    /// exists: a `Receive` from an unknown node is rejected on stderr.
    pub fn sync_rejected(&mut self) {
        self.feed("Receive 4294967295\n");
        let line = self.err_lines.recv_timeout(DEADLINE).unwrap_or_else(|e| {
            panic!(
                "{}: no rejection within {DEADLINE:?} ({e}); stderr so far:\n{}",
                self.what, self.stderr
            )
        });
        self.stderr.push_str(&line);
        self.stderr.push('\n');
        assert!(
            line.ends_with("unknown node 4294967295"),
            "{}: unexpected stderr line {line:?}",
            self.what
        );
    }

    /// Takes the master's standard input, to write to it by hand.
    pub fn take_input(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Writes `text` to the master's standard input, which must be open.
    pub fn feed(&mut self, text: &str) {
        super::feed(self.stdin.as_mut(), text, &self.what);
    }

    /// Writes `text` to a master that may have gone already (a broken pipe is fine).
    pub fn feed_if_open(&mut self, text: &str) {
        if let Some(stdin) = self.stdin.as_mut()
            && !text.is_empty()
            && stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush())
                .is_err()
        {
            self.stdin = None;
        }
    }

    /// Closes the master's standard input: the end of the script.
    pub fn close_input(&mut self) {
        self.stdin = None;
    }

    /// Reads stdout until it holds `count` lines in all; fails past `deadline`.
    pub fn wait_for_lines(&mut self, count: usize, deadline: Instant) {
        while self.stdout.lines().count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                }
                Err(e) => panic!(
                    "{}: {} stdout lines, not {count}, by the deadline ({e}); stderr so far:\n{}",
                    self.what,
                    self.stdout.lines().count(),
                    self.stderr
                ),
            }
        }
    }

    /// How many bytes the master's stdout and stderr have been written, all
    /// together: those read and those waiting to be. Whatever the test has or has
    /// not read yet, this grows only when someone writes.
    pub fn written(&self) -> u64 {
        loop {
            let before = self.read.load(Ordering::SeqCst);
            let waiting: u64 = self
                .pipes
                .iter()
                .map(|fd| rustix::io::ioctl_fionread(fd).unwrap_or(0))
                .sum();
            // Bytes read meanwhile would be counted twice, or not at all: look again.
            if self.read.load(Ordering::SeqCst) == before {
                return before + waiting;
            }
        }
    }

    /// [`written`](Self::written), once it holds still for a [`POLL`]: a byte that a
    /// reader has taken out of a pipe but not counted yet is counted then.
    pub fn written_settled(&self) -> u64 {
        let mut last = self.written();
        loop {
            thread::sleep(POLL);
            let now = self.written();
            if now == last {
                return now;
            }
            last = now;
        }
    }

    /// The processes of the run alive now, zombies aside; remembers them.
    pub fn alive(&mut self) -> Vec<Proc> {
        let mut alive = procfs::run_processes(self.pid, self.exited.is_some());
        alive.retain(|p| !p.exited());
        self.seen.extend(alive.iter().map(|p| p.pid));
        alive
    }

    /// The process playing `target` among those alive now, if there is one.
    pub fn find(&mut self, target: Target) -> Option<Proc> {
        self.alive()
            .into_iter()
            .find(|p| Target::of(p) == Some(target))
    }

    /// Waits until the process playing `target` is alive; fails past `deadline`.
    pub fn wait_for(&mut self, target: Target, deadline: Instant) -> Proc {
        let mut found = None;
        let up = poll_until(deadline, || {
            found = self.find(target);
            found.is_some()
        });
        match found {
            Some(found) if up => found,
            _ => panic!("{}: no process for {target:?} by the deadline", self.what),
        }
    }

    /// Waits until the observer and `nodes` nodes are all up (and, over TCP, listening),
    /// and records the ports they listen on; on mem, records the master's.
    pub fn survey(&mut self, nodes: usize) {
        // On mem, the roles are threads of the master: no process of their own.
        let expected = if self.transport == "mem" {
            0
        } else {
            nodes + 1
        };
        let tcp = self.transport == "tcp";
        let mut found = Vec::new();
        let complete = poll_until(Instant::now() + DEADLINE, || {
            found = self.alive();
            found.len() == expected
                && (!tcp || {
                    let listening = listening_ports(found.iter().map(|p| p.pid));
                    found.iter().all(|p| listening.contains_key(&p.pid))
                })
        });
        assert!(
            complete,
            "{}: expected {expected} processes of the run, found {found:#?}",
            self.what
        );
        self.record_ports();
    }

    /// Records the ports that the master and the processes of the run alive now
    /// listen on, to look for them once the run is over.
    pub fn record_ports(&mut self) {
        let pids: Vec<i32> = self.alive().iter().map(|p| p.pid).collect();
        let listening = listening_ports(pids.into_iter().chain([self.pid]));
        self.ports.extend(listening.into_values().flatten());
    }

    /// The pid of node `id`'s process, which must be alive.
    pub fn node_pid(&mut self, id: u32) -> i32 {
        self.find(Target::Node(id))
            .unwrap_or_else(|| panic!("{}: no process for node {id}", self.what))
            .pid
    }

    /// Sends `signal` to `process`, a process of this run, if it is still alive and
    /// still the one found: through a pidfd, so that a pid reused meanwhile is never
    /// hit. Says whether the signal was sent.
    pub fn signal(&self, process: &Proc, signal: Signal) -> bool {
        let Some(pid) = Pid::from_raw(process.pid) else {
            return false;
        };
        let Ok(pidfd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else {
            return false;
        };
        // The pidfd holds on to the process found, if it is still the one with this
        // pid; the command line says it is.
        let same = procfs::process(process.pid)
            .is_some_and(|now| !now.exited() && now.args == process.args);
        same && rustix::process::pidfd_send_signal(&pidfd, signal).is_ok()
    }

    /// Sends `signal` to the master, which has not been reaped.
    pub fn signal_master(&self, signal: Signal) {
        let pid = Pid::from_raw(self.pid).expect("a pid is positive");
        let sent = rustix::process::kill_process(pid, signal);
        assert_eq!(sent, Ok(()), "{}: cannot signal the master", self.what);
    }

    /// The state letter of the master (`S`, `R`, `T` …).
    pub fn master_state(&self) -> Option<char> {
        procfs::process(self.pid).map(|p| p.state)
    }

    /// Whether the master has exited; reaps it if it has.
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        let status = self.master.try_wait().ok().flatten();
        if status.is_some() && self.exited.is_none() {
            self.exited = Some(Instant::now());
        }
        status
    }

    /// Waits for the master to exit, at most `deadline`; kills it and fails past it.
    pub fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let status = super::wait_or_kill(&mut self.master, deadline, &self.what);
        self.exited.get_or_insert_with(Instant::now);
        status
    }

    /// Reads what is left of stdout and stderr, once the master has exited; fails if
    /// either is still open 5 s after (something the master started holds it).
    pub fn output(&mut self) -> (String, String) {
        let reads = [
            (&self.lines, &mut self.stdout, "stdout"),
            (&self.err_lines, &mut self.stderr, "stderr"),
        ];
        for (lines, text, name) in reads {
            loop {
                match lines.recv_timeout(Duration::from_secs(5)) {
                    Ok(line) => {
                        text.push_str(&line);
                        text.push('\n');
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        panic!("{}: {name} still open after the master exited", self.what)
                    }
                }
            }
        }
        (self.stdout.clone(), self.stderr.clone())
    }

    /// What is left of the run now: live processes, sockets, files in its `TMPDIR`.
    pub fn leftovers(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for p in self.alive() {
            left.push(format!("process {} ({}) {:?}", p.pid, p.state, p.args));
        }
        let sockets: Vec<_> = procfs::tcp_sockets()
            .into_iter()
            .filter(|s| {
                matches!(s.state, LISTEN | ESTABLISHED)
                    && (self.ports.contains(&s.local_port) || self.ports.contains(&s.remote_port))
            })
            .collect();
        if !sockets.is_empty() {
            // A port the run used may have been taken since by a process of another
            // test: only a socket held by the run, or by nobody, is the run's.
            let owners = procfs::socket_owners();
            for socket in sockets {
                let owner = owners.get(&socket.inode).copied();
                let strange = owner.is_some_and(|pid| {
                    !self.seen.contains(&pid)
                        && pid != self.pid
                        && procfs::process(pid).is_some_and(|p| !p.exited())
                });
                if !strange {
                    left.push(format!("socket {socket:?} held by {owner:?}"));
                }
            }
        }
        match std::fs::read_dir(self.tmp.path()) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    left.push(format!("file {}", entry.path().display()));
                }
            }
            Err(e) => left.push(format!("cannot read {}: {e}", self.tmp.path().display())),
        }
        left
    }

    /// Asserts that nothing of the run is left [`LEFT_BEHIND_GRACE`] after the
    /// master's exit.
    pub fn assert_nothing_left(&mut self) {
        let exited = self.exited.expect("the master has exited");
        let mut left = Vec::new();
        let clean = poll_until(exited + LEFT_BEHIND_GRACE, || {
            left = self.leftovers();
            left.is_empty()
        });
        assert!(
            clean,
            "{}: left behind {LEFT_BEHIND_GRACE:?} after the master exited:\n{}",
            self.what,
            left.join("\n")
        );
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        self.stdin = None;
        if self.exited.is_none() {
            let _ = self.master.kill();
            let _ = self.master.wait();
            self.exited = Some(Instant::now());
        }
        for p in self.alive() {
            // A live process whose command line carries this run's id: nobody else's.
            let _ = self.signal(&p, Signal::KILL);
        }
    }
}
