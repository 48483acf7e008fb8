//! What a run leaves on the machine (child processes, its directory), and its removal
//! however the run ends: `KillAll`, end of input, a failure, or a signal.
//!
//! The state is process-wide because the ways out are on different threads: the main
//! thread, the signal thread, and the threads that watch the children.

use crate::protocol::Who;
use crate::role::Role;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

struct Child {
    pid: libc::pid_t,
    /// Set, under the lock, before the child is reaped: until then its pid cannot be
    /// reused, so signalling an unmarked child never hits a stranger.
    exited: bool,
}

struct Run {
    children: Vec<Child>,
    dir: Option<PathBuf>,
    /// Children exiting now are expected to.
    stopping: bool,
    /// A thread has reported how the run ends and is ending the process: nobody else
    /// reports anything.
    exiting: bool,
}

static RUN: Mutex<Run> = Mutex::new(Run {
    children: Vec::new(),
    dir: None,
    stopping: false,
    exiting: false,
});

/// Signalled whenever a child is marked as exited.
static EXITED: Condvar = Condvar::new();

fn run() -> MutexGuard<'static, Run> {
    RUN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Records the run's directory, removed with everything in it at the end.
pub fn track_dir(dir: PathBuf) {
    run().dir = Some(dir);
}

/// Records a child process playing `role`, and watches it: if it exits while the run
/// is not stopping, the run fails with status 3, naming the role.
pub fn track_child(role: Role, child: std::process::Child) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // The watcher reaps the child itself; the handle is not needed any more.
    drop(child);
    run().children.push(Child { pid, exited: false });
    std::thread::Builder::new()
        .name(format!("watch-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || watch(role, pid))?;
    Ok(())
}

/// Waits for the child to exit, without reaping it until it is marked as exited.
fn watch(role: Role, pid: libc::pid_t) {
    // SAFETY: `info` is a plain C struct that waitid fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; WNOWAIT leaves it unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
    let mut status = 0;
    let unexpected = {
        let mut run = run();
        if let Some(child) = run.children.iter_mut().find(|c| c.pid == pid) {
            child.exited = true;
        }
        // SAFETY: reaps our own child, now marked so that nobody signals its pid.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        EXITED.notify_all();
        // Claimed under the lock: a failure the main thread is reporting, or a signal,
        // or another child's death, is the one reported, not this one as well.
        let unexpected = !run.stopping;
        if unexpected {
            run.stopping = true;
            run.exiting = true;
        }
        unexpected
    };
    if unexpected {
        let _ = crate::output::flush();
        eprintln!("{}: {}", Who(role.endpoint()), describe_exit(status));
        exit(crate::master::Status::Failed as i32);
    }
}

fn describe_exit(status: libc::c_int) -> String {
    if libc::WIFSIGNALED(status) {
        format!("the process died (signal {})", libc::WTERMSIG(status))
    } else {
        format!(
            "the process exited unexpectedly (status {})",
            libc::WEXITSTATUS(status)
        )
    }
}

/// From now on, children that exit are expected to.
pub fn stopping() {
    run().stopping = true;
}

/// Claims the report of a failure for the calling thread: from now on, children that
/// exit are expected to. Says `false` if another thread is already ending the process
/// with a report of its own (a child that died, a signal): the caller then reports
/// nothing more, and should [wait for the end](wait_for_exit).
///
/// Without it, a child killed by another thread's ending would be reported as well, as
/// if it had failed.
pub fn claim_failure() -> bool {
    let mut run = run();
    run.stopping = true;
    !run.exiting
}

/// Waits for the thread that is ending the process.
pub fn wait_for_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// Waits up to `grace` for every tracked child to exit; says whether they all did.
pub fn wait_for_children(grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    let mut run = run();
    while !run.children.iter().all(|c| c.exited) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        run = EXITED
            .wait_timeout(run, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    true
}

/// Kills every child still running and removes the run's directory.
pub fn clean_up() {
    let mut run = run();
    run.stopping = true;
    for child in run.children.iter().filter(|c| !c.exited) {
        // SAFETY: an unmarked child is not reaped, so its pid is still ours.
        unsafe { libc::kill(child.pid, libc::SIGKILL) };
    }
    // Removed under the lock: a thread that exits the process after its own clean-up
    // (a signal) waits for this removal rather than cut it short.
    if let Some(dir) = run.dir.take()
        && let Err(error) = std::fs::remove_dir_all(&dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("master: cannot remove {}: {error}", dir.display());
    }
}

/// Cleans up and exits the process with `code`, after what it printed.
pub fn exit(code: i32) -> ! {
    let _ = crate::output::flush();
    {
        let mut run = run();
        run.stopping = true;
        run.exiting = true;
    }
    clean_up();
    std::process::exit(code)
}
