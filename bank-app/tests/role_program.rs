//! `--role-program`: the observer and the nodes run another program, which ends by
//! `exec`ing `master` with the arguments it was given. The run is the same run: the
//! same output for the same seed, and the program is started once for every role.

mod support;

use std::path::{Path, PathBuf};
use support::{demo_script, master_wrapper, run_master};

/// The transports whose roles are processes of their own.
const PROCESS_TRANSPORTS: [&str; 2] = ["pipe", "tcp"];

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A wrapper in a directory of its own that writes its arguments, a line each time it
/// runs, to `log` beside it, then `exec`s `master`.
struct Wrapper {
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Wrapper {
    fn new() -> Wrapper {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("log");
        let log = path_arg(&log);
        assert!(!log.contains('\''), "{log:?} cannot be quoted");
        let body = format!("echo \"$*\" >> '{log}'\n");
        let program = master_wrapper(dir.path(), "wrapper", &body);
        Wrapper { dir, program }
    }

    /// The arguments of each time it ran.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The value after `flag` in a line of arguments.
fn value_of<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = line.split(' ');
    words.find(|word| *word == flag)?;
    words.next()
}

#[test]
fn the_roles_run_under_the_program_and_the_output_is_the_same() {
    let script = demo_script();
    let text = std::fs::read_to_string(&script).expect("the demo script");
    let mut nodes: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("CreateNode "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .collect();
    nodes.sort();
    assert!(!nodes.is_empty(), "the demo script creates nodes");
    for transport in PROCESS_TRANSPORTS {
        let args = ["--transport", transport, "--seed", "1", path_arg(&script)];
        let plain = run_master(&args, b"");
        plain.assert_code(0).assert_quiet();
        let wrapper = Wrapper::new();
        let mut wrapped_args = vec!["--role-program", path_arg(&wrapper.program)];
        wrapped_args.extend(args);
        let wrapped = run_master(&wrapped_args, b"");
        wrapped
            .assert_code(0)
            .assert_quiet()
            .assert_stdout(&plain.stdout);
        let runs = wrapper.runs();
        let observers = runs.iter().filter(|line| line.contains("--observer"));
        assert_eq!(observers.count(), 1, "{transport}: {runs:#?}");
        let mut started: Vec<String> = runs
            .iter()
            .filter_map(|line| value_of(line, "--id"))
            .map(str::to_owned)
            .collect();
        started.sort();
        assert_eq!(started, nodes, "{transport}: {runs:#?}");
        assert!(
            runs.iter().all(|line| line.starts_with("node ")
                && value_of(line, "--transport") == Some(transport)),
            "{transport}: {runs:#?}"
        );
    }
}

#[test]
fn a_role_program_that_does_not_become_master_fails_the_run_clearly() {
    let script = demo_script();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("missing");
    for transport in PROCESS_TRANSPORTS {
        let args = [
            "--transport",
            transport,
            "--role-program",
            path_arg(&missing),
            path_arg(&script),
        ];
        let run = run_master(&args, b"");
        run.assert_code(3).assert_stdout(b"");
        assert!(
            run.err().starts_with("observer: cannot start")
                && run.err().contains("No such file or directory")
                && run.err().lines().count() == 1,
            "{transport}: {}",
            run.err()
        );
    }
}

#[test]
fn a_role_program_is_for_runs_that_start_their_own_processes() {
    let script = demo_script();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cluster = dir.path().join("cluster");
    std::fs::write(&cluster, "node 1 127.0.0.1:1\n").expect("the cluster file");
    let mem = ["--transport", "mem"];
    let cluster_run = [
        "--transport",
        "tcp",
        "--auth",
        "key",
        "--key",
        "k",
        "--cluster",
        path_arg(&cluster),
    ];
    for how in [&mem[..], &cluster_run[..]] {
        let mut args = how.to_vec();
        args.extend(["--role-program", "/bin/true", path_arg(&script)]);
        let run = run_master(&args, b"");
        run.assert_code(2).assert_stdout(b"");
        assert!(
            run.err()
                .contains("--role-program is for runs that start their own"),
            "{how:?}: {}",
            run.err()
        );
    }
}
