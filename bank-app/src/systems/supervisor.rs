//! The child processes of a run, from their start to their end: what the system that
//! started them knows about them, and nobody else holds.
//!
//! Each child gets two pipes from the master besides its command line:
//! - its standard input, a **lifeline** the master holds open and never writes to: the
//!   child reads it to its end, which comes when the master has gone, however it went
//!   (see [`super::child`]);
//! - its standard output, where a child that fails says why before it exits (the
//!   **report**), so that the master, and nobody else, tells the user.
//!
//! A thread per child waits for it to exit. A child that exits while the run is not
//! stopping is a [`Departure`], sent to the master with the reason the supervisor
//! knows: what the child reported, or how it exited ("the process died (signal 9)").

use crate::role::Role;
use crate::system::Departure;
use crossbeam_channel::{Receiver, Sender};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, WaitOptions, WaitStatus};
use snapshot_core::Endpoint;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The most of a child's report that is kept.
const REPORT_LIMIT: u64 = 4096;

/// The children of one run, and its directory.
pub struct Supervisor {
    shared: Arc<Shared>,
    departures: Receiver<Departure>,
}

struct Shared {
    run: Mutex<Run>,
    /// Signalled whenever a child is marked as exited.
    exited: Condvar,
    departures: Sender<Departure>,
}

struct Run {
    children: Vec<Child>,
    dir: Option<PathBuf>,
    /// Children exiting now are expected to.
    stopping: bool,
}

struct Child {
    who: Endpoint,
    pid: Pid,
    /// The write end of the child's standard input, never written to.
    lifeline: Option<ChildStdin>,
    /// How the child ended, set, under the lock, before it is reaped: until then its
    /// pid cannot be reused, so signalling a child that has not ended never hits a
    /// stranger.
    ended: Option<String>,
}

impl Run {
    /// The child started last to play `who`.
    fn last(&self, who: Endpoint) -> Option<&Child> {
        self.children.iter().rev().find(|c| c.who == who)
    }
}

impl Child {
    /// Whether it is stopped (by SIGSTOP, a terminal, a debugger), and so cannot
    /// answer. A child that has ended is not.
    fn is_stopped(&self) -> bool {
        // Not reaped (it has not ended), so the pid is still the child's.
        self.ended.is_none() && matches!(process_state(self.pid), Some('T' | 't'))
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        let (tell, departures) = crossbeam_channel::unbounded();
        Supervisor {
            shared: Arc::new(Shared {
                run: Mutex::new(Run {
                    children: Vec::new(),
                    dir: None,
                    stopping: false,
                }),
                exited: Condvar::new(),
                departures: tell,
            }),
            departures,
        }
    }
}

impl Supervisor {
    /// Records the run's directory, removed with everything in it at the end.
    pub fn track_dir(&self, dir: PathBuf) {
        self.shared.lock().dir = Some(dir);
    }

    /// Takes charge of `child`, playing `role`, started with its standard input and
    /// output piped: keeps the one, reads the other, and watches the child until it
    /// exits.
    pub fn adopt(&self, role: Role, mut child: std::process::Child) -> io::Result<()> {
        let pid = Pid::from_child(&child);
        let who = role.endpoint();
        let report = child.stdout.take();
        self.shared.lock().children.push(Child {
            who,
            pid,
            lifeline: child.stdin.take(),
            ended: None,
        });
        // The watcher reaps the child itself; the handle is not needed any more.
        drop(child);
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(format!("watch-{pid}"))
            .stack_size(64 * 1024)
            .spawn(move || shared.watch(who, pid, report))?;
        Ok(())
    }

    /// Where the children that exit while the run is not stopping are told of.
    pub fn departures(&self) -> Receiver<Departure> {
        self.departures.clone()
    }

    /// Why the child playing `who` has gone, once it has exited; waits up to `grace`
    /// for that. `None` if it is still running then, or is not a child of this run.
    pub fn why_gone(&self, who: Endpoint, grace: Duration) -> Option<String> {
        let run = self.shared.wait_while(grace, |run| {
            run.last(who).is_some_and(|c| c.ended.is_none())
        });
        run.last(who)?.ended.clone()
    }

    /// Why the child playing `who` cannot answer, if it cannot: it is stopped (by
    /// SIGSTOP, a terminal, a debugger).
    pub fn unresponsive(&self, who: Endpoint) -> Option<String> {
        let run = self.shared.lock();
        run.last(who)?
            .is_stopped()
            .then(|| "the process is stopped".to_string())
    }

    /// From now on, children that exit are expected to.
    pub fn stopping(&self) {
        self.shared.lock().stopping = true;
    }

    /// Kills the children that are stopped: they cannot act on being told to stop.
    pub fn kill_stopped(&self) {
        let run = self.shared.lock();
        for child in run.children.iter().filter(|c| c.is_stopped()) {
            // A child that has not ended is not reaped, so its pid is still ours.
            let _ = rustix::process::kill_process(child.pid, Signal::KILL);
        }
    }

    /// Waits up to `grace` for every child to exit; says whether they all did.
    pub fn wait_all(&self, grace: Duration) -> bool {
        let all_ended = |run: &Run| run.children.iter().all(|c| c.ended.is_some());
        all_ended(&self.shared.wait_while(grace, |run| !all_ended(run)))
    }

    /// Kills every child still running and removes the run's directory; says why
    /// it could not, if it could not.
    pub fn end(&self) -> Result<(), String> {
        self.shared.end()
    }

    /// A handle that [ends](Self::end) the run from another thread.
    pub fn teardown(&self) -> crate::system::Teardown {
        let shared = Arc::clone(&self.shared);
        Box::new(move || shared.end())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Err(problem) = self.shared.end() {
            tracing::error!(%problem, "the run's directory is left behind");
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits, for up to `grace`, while `pending` holds of the run (looking again each
    /// time a child exits); returns the run as it is then.
    fn wait_while(
        &self,
        grace: Duration,
        mut pending: impl FnMut(&Run) -> bool,
    ) -> MutexGuard<'_, Run> {
        let deadline = Instant::now() + grace;
        let mut run = self.lock();
        while pending(&run) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            run = self
                .exited
                .wait_timeout(run, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        run
    }

    /// Reads the child's report, waits for it to exit, and marks it as exited.
    fn watch(&self, who: Endpoint, pid: Pid, report: Option<ChildStdout>) {
        // The report ends when the child closes its output, at its exit at the latest.
        let said = report.map(read_report).unwrap_or_default();
        let status = wait_unreaped(pid);
        let mut run = self.lock();
        let Some(child) = run.children.iter_mut().find(|c| c.pid == pid) else {
            return;
        };
        let exit = match status {
            Ok(()) => {
                // Reaps our own child, which has exited and is not reaped yet; nobody
                // signals it once `ended` is set, which happens under this same lock.
                let reaped = rustix::process::waitpid(Some(pid), WaitOptions::empty());
                describe_exit(reaped.ok().flatten().map(|(_, status)| status))
            }
            Err(error) => format!("the process cannot be watched: {error}"),
        };
        let cause = if said.is_empty() { exit } else { said };
        child.ended = Some(cause.clone());
        child.lifeline = None;
        let stopping = run.stopping;
        drop(run);
        self.exited.notify_all();
        if !stopping {
            let _ = self.departures.send(Departure { who, cause });
        }
    }

    fn end(&self) -> Result<(), String> {
        let mut run = self.lock();
        run.stopping = true;
        for child in run.children.iter().filter(|c| c.ended.is_none()) {
            // A child that has not ended is not reaped, so its pid is still ours.
            let _ = rustix::process::kill_process(child.pid, Signal::KILL);
        }
        // Removed under the lock: a thread that exits the process after its own
        // teardown (a signal) waits for this removal rather than cut it short.
        match run
            .dir
            .take()
            .map(|dir| (std::fs::remove_dir_all(&dir), dir))
        {
            Some((Err(error), dir)) if error.kind() != io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {error}", dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// What a child says on its standard output before it exits, trimmed.
fn read_report(mut out: ChildStdout) -> String {
    let mut said = Vec::new();
    let _ = (&mut out).take(REPORT_LIMIT).read_to_end(&mut said);
    // The rest, if any, is read and dropped, so that the child never blocks on it.
    let _ = io::copy(&mut out, &mut io::sink());
    String::from_utf8_lossy(&said).trim_end().to_string()
}

/// Waits for the child `pid` to exit, without reaping it.
fn wait_unreaped(pid: Pid) -> io::Result<()> {
    loop {
        // NOWAIT leaves the child unreaped.
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// How a child ended, from the status it was reaped with; one that could not be
/// reaped is described as having exited with status 0.
fn describe_exit(status: Option<WaitStatus>) -> String {
    match status.and_then(WaitStatus::terminating_signal) {
        Some(signal) => format!("the process died (signal {signal})"),
        None => format!(
            "the process exited unexpectedly (status {})",
            status.and_then(WaitStatus::exit_status).unwrap_or(0)
        ),
    }
}

/// The state letter of process `pid` in `/proc/PID/stat` (`R`, `S`, `T` …).
fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE …`, where COMM may hold spaces and parentheses.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_core::NodeId;
    use std::process::{Command, Stdio};

    const NODE_3: Endpoint = Endpoint::Node(NodeId(3));
    const PATIENCE: Duration = Duration::from_secs(20);

    /// `sh -c SCRIPT`, piped as the system pipes a role's process; and its pid.
    fn adopt(supervisor: &Supervisor, script: &str) -> Pid {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let pid = Pid::from_child(&child);
        supervisor
            .adopt(Role::Node(NodeId(3)), child)
            .expect("the child is watched");
        pid
    }

    #[test]
    fn a_child_that_fails_departs_with_what_it_reported() {
        let supervisor = Supervisor::default();
        adopt(&supervisor, "echo 'cannot open: no room'; exit 2");
        let departure = supervisor.departures().recv_timeout(PATIENCE);
        let cause = "cannot open: no room".to_string();
        assert_eq!(departure, Ok(Departure { who: NODE_3, cause }));
    }

    #[test]
    fn a_killed_child_departs_with_its_signal() {
        let supervisor = Supervisor::default();
        let pid = adopt(&supervisor, "exec sleep 60");
        // Our child, which cannot be reaped before its watcher marks it.
        assert_eq!(rustix::process::kill_process(pid, Signal::KILL), Ok(()));
        let cause = "the process died (signal 9)".to_string();
        let departure = supervisor.departures().recv_timeout(PATIENCE);
        assert_eq!(
            departure,
            Ok(Departure {
                who: NODE_3,
                cause: cause.clone()
            })
        );
        assert_eq!(supervisor.why_gone(NODE_3, Duration::ZERO), Some(cause));
    }

    #[test]
    fn a_child_that_exits_while_the_run_stops_is_no_departure() {
        let supervisor = Supervisor::default();
        supervisor.stopping();
        adopt(&supervisor, "exit 0");
        assert!(supervisor.wait_all(PATIENCE));
        assert!(supervisor.departures().try_recv().is_err());
        let cause = "the process exited unexpectedly (status 0)".to_string();
        assert_eq!(supervisor.why_gone(NODE_3, Duration::ZERO), Some(cause));
    }

    #[test]
    fn a_stopped_child_is_seen_not_to_answer_and_its_end_kills_it() {
        let supervisor = Supervisor::default();
        let pid = adopt(&supervisor, "exec sleep 60");
        assert_eq!(supervisor.unresponsive(NODE_3), None);
        // As above.
        assert_eq!(rustix::process::kill_process(pid, Signal::STOP), Ok(()));
        // The stop is delivered asynchronously: look until it shows.
        let deadline = Instant::now() + PATIENCE;
        while supervisor.unresponsive(NODE_3).is_none() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let stopped = Some("the process is stopped".to_string());
        assert_eq!(supervisor.unresponsive(NODE_3), stopped);
        assert_eq!(supervisor.end(), Ok(()));
        assert!(supervisor.wait_all(PATIENCE));
        assert!(supervisor.departures().try_recv().is_err());
    }
}
