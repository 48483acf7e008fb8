//! A system that cannot start: `master` exits with status 3 (the system failed), not
//! 2 (a usage error), and the cause is reported once, by the master alone.
//!
//! These run `master` itself: what matters is its exit status, and what its child
//! processes write to the stderr they share with it.

mod support;

use std::path::{Path, PathBuf};
use support::{master_command, run_command};

const SCRIPT: &[u8] = b"StartMaster\nCreateNode 1 10\nKillAll\n";

/// Runs [`SCRIPT`] on pipe with `tmpdir` as `TMPDIR`.
fn on_pipe_with_tmpdir(tmpdir: &Path) -> support::Run {
    let args = ["--transport", "pipe", "--seed", "1"];
    let mut command = master_command(&args);
    command.env("TMPDIR", tmpdir);
    let mut run = run_command(command, &args, SCRIPT);
    run.what = format!("{} with TMPDIR={}", run.what, tmpdir.display());
    run
}

#[test]
fn a_system_that_cannot_start_exits_3() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").expect("a file");
    for tmpdir in [tmp.path().join("missing"), file] {
        let run = on_pipe_with_tmpdir(&tmpdir);
        run.assert_code(3).assert_stdout(b"");
        let err = run.err();
        assert!(
            err.starts_with("master: cannot create ") && err.lines().count() == 1,
            "{}: {err}",
            run.what
        );
    }
}

/// A directory under `base` whose path is `length` bytes long.
fn long_dir(base: &Path, length: usize) -> PathBuf {
    let mut dir = base.to_path_buf();
    while dir.as_os_str().len() + 1 + 200 < length {
        dir.push("d".repeat(200));
    }
    let left = length - dir.as_os_str().len() - 1;
    dir.push("e".repeat(left));
    std::fs::create_dir_all(&dir).expect("a long directory");
    dir
}

/// Long enough that the run's directory can be made in it (`PATH_MAX` is 4096) but
/// not its FIFOs (`File name too long`), in the master or in the observer.
#[test]
fn a_cause_is_reported_once_and_by_the_master_alone() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let tmpdir = long_dir(tmp.path(), 4060);
    let run = on_pipe_with_tmpdir(&tmpdir);
    run.assert_code(3).assert_stdout(b"");
    let err = run.err();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{}: not one line:\n{err}", run.what);
    assert!(
        lines[0].starts_with("observer: ") || lines[0].starts_with("master: "),
        "{}: not the master's report: {err}",
        run.what
    );
    assert_eq!(
        err.matches("File name too long").count(),
        1,
        "{}: the cause is not said once: {err}",
        run.what
    );
    let left = std::fs::read_dir(&tmpdir)
        .expect("the long directory")
        .count();
    assert_eq!(left, 0, "{}: the run left files behind", run.what);
}
