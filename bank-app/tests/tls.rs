//! TLS for the bank: a run that starts its own nodes with `--tls` prints what plain
//! runs print and leaves nothing behind; `master certs` writes a cluster's
//! certificates; a cluster without its certificate files is a usage error.
//!
//! The runs of a cluster over TLS, on hosts of their own, are in `cluster.rs`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::{demo_script, run_master};
use transport_tcp::TlsIdentity;

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The processes whose environment holds `TMPDIR=dir`: those of a run given it.
fn processes_with_tmpdir(dir: &Path) -> Vec<String> {
    let needle = format!("TMPDIR={}", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_tls_run_prints_what_plain_runs_print_and_leaves_nothing() {
    let script = demo_script();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let run = |extra: &[&str]| {
        let mut args = vec!["--seed", "1"];
        args.extend_from_slice(extra);
        args.push(path_arg(&script));
        let mut command = support::master_command(&args);
        command.env("TMPDIR", tmp.path());
        let run = support::run_command(command, &args, b"");
        run.assert_code(0);
        run
    };
    let mem = run(&["--transport", "mem"]);
    let tcp = run(&["--transport", "tcp"]);
    let tls = run(&["--transport", "tcp", "--tls"]);
    assert!(!mem.out().is_empty());
    assert_eq!(tcp.out(), mem.out());
    assert_eq!(tls.out(), mem.out(), "stderr: {}", tls.err());
    assert_eq!(tls.err(), "");

    // Nothing of the runs is left: no file in their TMPDIR, no process.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read the TMPDIR")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let alive = processes_with_tmpdir(tmp.path());
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of the run still alive: {alive:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn tls_needs_tcp_and_a_run_of_its_own_nodes() {
    let script = demo_script();
    for transport in ["mem", "pipe"] {
        let run = run_master(&["--transport", transport, "--tls", path_arg(&script)], b"");
        run.assert_stdout(b"").assert_code(2);
        assert!(
            run.err().contains("--tls needs --transport tcp"),
            "{}",
            run.err()
        );
    }
    let run = run_master(
        &["--transport", "tcp", "--auth", "key", path_arg(&script)],
        b"",
    );
    run.assert_stdout(b"").assert_code(2);
    assert!(
        run.err().contains("--auth is for --cluster"),
        "{}",
        run.err()
    );
}

#[test]
fn master_certs_writes_a_cluster_and_refuses_to_overwrite_it() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let out = tmp.path().join("certs");
    let run = run_master(
        &[
            "certs",
            "--cluster",
            "lab",
            "--nodes",
            "1,2,30",
            "--out",
            path_arg(&out),
        ],
        b"",
    );
    run.assert_code(0);
    let names = [
        "ca.pem",
        "ca-key.pem",
        "master.pem",
        "master-key.pem",
        "node-1.pem",
        "node-1-key.pem",
        "node-2.pem",
        "node-2-key.pem",
        "node-30.pem",
        "node-30-key.pem",
    ];
    let listed: Vec<String> = names
        .iter()
        .map(|name| out.join(name).display().to_string())
        .collect();
    assert_eq!(run.out().lines().collect::<Vec<_>>(), listed);
    for name in names {
        let mode = std::fs::metadata(out.join(name))
            .expect("the file is written")
            .permissions()
            .mode();
        if name.ends_with("-key.pem") {
            assert_eq!(mode & 0o777, 0o600, "{name}");
        } else {
            assert_eq!(mode & 0o022, 0, "{name} is writable by others");
        }
    }
    let identity = |who: &str| {
        TlsIdentity::from_pem_files(
            out.join("ca.pem"),
            out.join(format!("{who}.pem")),
            out.join(format!("{who}-key.pem")),
        )
        .expect("the identity reads back")
    };
    assert_eq!(identity("node-1").names(), ["node-1.lab"]);
    assert_eq!(identity("node-30").names(), ["node-30.lab"]);
    // The observer runs in the master's process, with the master's identity.
    assert_eq!(identity("master").names(), ["master.lab", "role-1.lab"]);

    // A second run refuses to overwrite, names the files, and changes nothing.
    let before = std::fs::read(out.join("node-1.pem")).expect("read node-1.pem");
    let again = run_master(
        &[
            "certs",
            "--cluster",
            "lab",
            "--nodes",
            "1",
            "--out",
            path_arg(&out),
        ],
        b"",
    );
    again.assert_stdout(b"").assert_code(2);
    assert!(
        again.err().contains("refusing to overwrite"),
        "{}",
        again.err()
    );
    assert!(again.err().contains("node-1.pem"), "{}", again.err());
    assert_eq!(std::fs::read(out.join("node-1.pem")).expect("read"), before);

    // A cluster name that certificates cannot carry is a usage error.
    let bad = run_master(
        &[
            "certs",
            "--cluster",
            "two words",
            "--nodes",
            "1",
            "--out",
            path_arg(&tmp.path().join("bad")),
        ],
        b"",
    );
    bad.assert_stdout(b"").assert_code(2);
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn a_cluster_over_tls_without_its_certificate_files_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let file = tmp.path().join("cluster");
    std::fs::write(&file, "cluster lab\nnode 1 127.0.0.2:7000\n").expect("write");
    let master = run_master(
        &[
            "--transport",
            "tcp",
            "--cluster",
            path_arg(&file),
            "--listen",
            "127.0.0.1:0",
        ],
        b"StartMaster\nKillAll\n",
    );
    master.assert_stdout(b"").assert_code(2);
    assert!(
        master
            .err()
            .contains("--ca FILE, --cert FILE, --key-file FILE missing"),
        "{}",
        master.err()
    );
    let node = run_master(
        &[
            "node",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            "lab",
        ],
        b"",
    );
    node.assert_stdout(b"").assert_code(2);
    assert!(node.err().contains("--ca FILE"), "{}", node.err());
    // --auth key without a key is as clear.
    let mut command = support::master_command(&[]);
    command.env_remove("SNAPSHOT_RS_KEY");
    let args = [
        "node",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "key",
    ];
    command.args(args);
    let keyless = support::run_command(command, &args, b"");
    keyless.assert_code(2);
    assert!(
        keyless.err().contains("needs the shared key"),
        "{}",
        keyless.err()
    );
}
