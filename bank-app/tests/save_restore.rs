//! A script's snapshots saved (`--save`), printed in other formats (`--format`), and
//! a bank restored from a saved one (`master restore`), on every transport: a
//! snapshot taken before any transfer put back is delivered prints the saved one
//! exactly, the money is the same, and a snapshot the script cannot run on is refused.

mod support;

use serde_json::Value;
use std::path::Path;
use support::{TRANSPORTS, run_master};

/// Three nodes; a snapshot from node 1 catches 10 on (2 -> 1) and 20 + 5 on (3 -> 1).
const TAKE: &[u8] = b"StartMaster
CreateNode 1 100
CreateNode 2 200
CreateNode 3 300
Send 2 1 10
Send 3 1 20
Send 3 1 5
Send 1 2 7
BeginSnapshot 1
Receive 2 1
Receive 3 1
Receive 1 2
Receive 1 3
Receive 1 3
Receive 1 3
ReceiveAll
CollectState
PrintSnapshot
";

/// On the restored bank: every node records before it takes a transfer put back
/// (node 1 at once, nodes 2 and 3 on node 1's marker, at the head of their channels).
const RETAKE: &[u8] = b"BeginSnapshot 1
Receive 2 1
Receive 3 1
ReceiveAll
CollectState
PrintSnapshot
";

/// The block a script printed last: from its last `---Node states` on.
fn last_block(stdout: &str) -> &str {
    let at = stdout
        .rfind("---Node states")
        .expect("a snapshot was printed");
    &stdout[at..]
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().expect("a UTF-8 path").to_string()
}

/// Runs [`TAKE`] on `transport`, saving into `dir`; returns its stdout.
fn take(transport: &str, dir: &Path) -> String {
    let save = path(dir, "saved");
    let run = run_master(
        &["--transport", transport, "--seed", "1", "--save", &save],
        TAKE,
    );
    run.assert_code(0);
    run.out()
}

#[test]
fn a_restored_bank_snapshotted_at_once_prints_the_saved_snapshot() {
    for &transport in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        let printed = take(transport, dir.path());
        let file = path(dir.path(), "saved/1-0.json");
        let inspected = run_master(&["inspect", &file], b"");
        inspected.assert_code(0);
        assert_eq!(inspected.out(), last_block(&printed), "{transport}");

        for (name, restored_from) in [
            ("json", &file),
            ("postcard", &path(dir.path(), "saved/1-0.postcard")),
        ] {
            let again = path(dir.path(), &format!("again-{name}"));
            let run = run_master(
                &[
                    "restore",
                    restored_from,
                    "--transport",
                    transport,
                    "--seed",
                    "1",
                    "--save",
                    &again,
                ],
                RETAKE,
            );
            run.assert_code(0);
            assert_eq!(
                last_block(&run.out()),
                last_block(&printed),
                "{transport}, from {name}"
            );
            // The new snapshot is numbered past the one restored from.
            let resaved: Value =
                serde_json::from_slice(&std::fs::read(Path::new(&again).join("1-1.json")).unwrap())
                    .unwrap();
            assert_eq!(resaved["total"], 600);
            assert_eq!(resaved["snapshot"]["seq"], 1);
        }
    }
}

#[test]
fn a_restored_bank_goes_on_with_all_its_money() {
    let dir = tempfile::tempdir().unwrap();
    take("mem", dir.path());
    let file = path(dir.path(), "saved/1-0.json");
    // The transfers put back arrive first on their channels; money moves on, and a
    // later snapshot still accounts for all 600.
    let script = b"Receive 1 2
Receive 1 3
Send 1 2 50
Send 2 3 100
ReceiveAll
BeginSnapshot 3
ReceiveAll
CollectState
PrintSnapshot
";
    for &transport in TRANSPORTS {
        let run = run_master(
            &["restore", &file, "--transport", transport, "--seed", "4"],
            script,
        );
        run.assert_code(0);
        let out = run.out();
        assert!(out.starts_with("2 Transfer 10\n3 Transfer 20\n"), "{out}");
        let blocks = support::parse_blocks(&out);
        assert_eq!(blocks.len(), 1, "{out}");
        blocks[0].check(600).unwrap();
        assert_eq!(blocks[0].money(), 600);
    }
}

#[test]
fn a_snapshot_whose_topology_is_not_complete_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    take("mem", dir.path());
    let mut snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saved/1-0.json")).unwrap()).unwrap();
    // (1 -> 3) carried nothing and counted nothing: without it the snapshot still holds,
    // on a graph that is not complete.
    let channels = snapshot["channels"].as_array_mut().unwrap();
    let at = channels
        .iter()
        .position(|c| c["from"] == 1 && c["to"] == 3)
        .unwrap();
    assert_eq!(channels[at]["sent"], 0);
    channels.remove(at);
    let file = path(dir.path(), "ring.json");
    std::fs::write(&file, serde_json::to_vec(&snapshot).unwrap()).unwrap();
    run_master(&["inspect", &file], b"").assert_code(0);

    let run = run_master(&["restore", &file, "--seed", "1"], RETAKE);
    run.assert_code(2);
    assert_eq!(run.out(), "");
    assert_eq!(
        run.err(),
        format!(
            "master restore: {file}: channel (1 -> 3) is missing: the topology is not \
             complete, and a script runs on a complete graph\n"
        )
    );
    // The same file, whole again, runs.
    let complete = path(dir.path(), "saved/1-0.json");
    run_master(&["restore", &complete, "--seed", "1"], RETAKE).assert_code(0);
}

#[test]
fn a_bank_restored_near_the_last_sequence_number_refuses_the_snapshots_past_it() {
    let dir = tempfile::tempdir().unwrap();
    take("mem", dir.path());
    let mut snapshot: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("saved/1-0.json")).unwrap()).unwrap();
    let numbered = |snapshot: &mut Value, seq: u64| {
        snapshot["snapshot"]["seq"] = seq.into();
        let file = path(dir.path(), &format!("{seq}.json"));
        std::fs::write(&file, serde_json::to_vec(&*snapshot).unwrap()).unwrap();
        file
    };
    // The last sequence number a node gives is u64::MAX - 1: from u64::MAX - 3, node 1
    // starts two snapshots, and the third is refused while the bank goes on.
    let file = numbered(&mut snapshot, u64::MAX - 3);
    let mut script = RETAKE.to_vec();
    script.extend_from_slice(RETAKE);
    script.extend_from_slice(b"BeginSnapshot 1\nBeginSnapshot 2\nReceiveAll\nCollectState\n");
    let run = run_master(&["restore", &file, "--seed", "1"], &script);
    run.assert_code(1);
    assert_eq!(support::parse_blocks(&run.out()).len(), 2, "{}", run.out());
    assert!(run.out().ends_with("Started by Node 2\n"), "{}", run.out());
    assert_eq!(
        run.err(),
        "line 13: node 1 has started its last snapshot: no sequence number is left\n"
    );
    // A snapshot after which no snapshot could start is not restored.
    for seq in [u64::MAX - 1, u64::MAX] {
        let file = numbered(&mut snapshot, seq);
        let run = run_master(&["restore", &file, "--seed", "1"], RETAKE);
        run.assert_code(2);
        assert!(run.err().contains("last sequence number"), "{}", run.err());
    }
}

#[test]
fn a_file_that_is_not_a_snapshot_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path(), "nonsense.json");
    std::fs::write(&file, b"{\"snapshot\": 3}").unwrap();
    let run = run_master(&["restore", &file], RETAKE);
    run.assert_code(2);
    assert!(
        run.err().starts_with(&format!("master restore: {file}")),
        "{}",
        run.err()
    );
    assert_eq!(run.out(), "");
}

#[test]
fn print_snapshot_in_json_is_the_saved_file_on_one_line() {
    for &transport in TRANSPORTS {
        let dir = tempfile::tempdir().unwrap();
        take(transport, dir.path());
        let saved: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("saved/1-0.json")).unwrap())
                .unwrap();
        let run = run_master(
            &["--transport", transport, "--seed", "1", "--format", "json"],
            TAKE,
        );
        run.assert_code(0);
        let out = run.out();
        let lines: Vec<&str> = out.lines().collect();
        // Every other line is as it was.
        assert_eq!(lines[0], "Started by Node 1");
        let printed: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(printed, saved, "{transport}");
        assert!(out.ends_with("}\n"));
    }
}

#[test]
fn print_snapshot_in_dot_is_a_digraph_of_balances_and_money_in_flight() {
    let run = run_master(&["--seed", "1", "--format", "dot"], TAKE);
    run.assert_code(0);
    let out = run.out();
    let graph = &out[out.find("digraph").expect("a digraph")..];
    for line in [
        "\"1\" [label=\"Node 1\\n93\"];",
        "\"3\" [label=\"Node 3\\n275\"];",
        "\"2\" -> \"1\" [label=\"10 (1 transfer)\", penwidth=2];",
        "\"3\" -> \"1\" [label=\"25 (2 transfers)\", penwidth=2];",
        "\"1\" -> \"2\" [color=gray70];",
    ] {
        assert!(graph.contains(line), "{line} is not in\n{graph}");
    }
    assert!(graph.ends_with("}\n"));
}

#[test]
fn a_directory_that_cannot_be_made_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = path(dir.path(), "a-file");
    std::fs::write(&file, b"").unwrap();
    let run = run_master(&["--seed", "1", "--save", &format!("{file}/sub")], TAKE);
    run.assert_code(3);
    let err = run.err();
    assert!(
        err.starts_with(&format!("master: cannot create the directory {file}/sub: ")),
        "{err}"
    );
    // Nothing after the failed CollectState ran.
    assert!(!run.out().contains("---Node states"));
}

#[test]
fn the_dot_output_renders_with_graphviz() {
    let dot = std::process::Command::new("dot").arg("-V").output();
    if dot.is_err() {
        // CI installs Graphviz (.ci/run): there, its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "Graphviz's `dot` is not installed"
        );
        eprintln!("skipped: Graphviz's `dot` is not installed");
        return;
    }
    let run = run_master(&["--seed", "1", "--format", "dot"], TAKE);
    run.assert_code(0);
    let out = run.out();
    let graph = &out[out.find("digraph").expect("a digraph")..];
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    support::feed(child.stdin.as_mut(), graph, "dot");
    drop(child.stdin.take());
    let rendered = child.wait_with_output().unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let svg = String::from_utf8(rendered.stdout).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    // Every node's balance and the money in flight are drawn.
    for text in ["Node 1", "93", "275", "10 (1 transfer)", "25 (2 transfers)"] {
        assert!(svg.contains(text), "{text} is not drawn");
    }
    // A graph Graphviz cannot read is caught.
    let mut broken = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::feed(broken.stdin.as_mut(), &graph.replace("->", "=>"), "dot");
    drop(broken.stdin.take());
    assert!(!broken.wait().unwrap().success());
}

#[test]
fn every_snapshot_a_load_saved_restores_with_all_its_money() {
    let dir = tempfile::tempdir().unwrap();
    let save = path(dir.path(), "load");
    let run = run_master(
        &[
            "load",
            "--nodes",
            "8",
            "--transport",
            "tcp",
            "--duration",
            "1s",
            "--snapshot-every",
            "50ms",
            "--save",
            &save,
            "--seed",
            "5",
        ],
        b"",
    );
    run.assert_code(0);
    let mut files: Vec<_> = std::fs::read_dir(&save)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "only {} snapshots saved", files.len());
    let script = b"BeginSnapshot 3\nReceiveAll\nCollectState\nPrintSnapshot\n";
    for (k, file) in files.iter().enumerate() {
        let saved: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let total = saved["total"].as_u64().unwrap();
        assert_eq!(total, 8000);
        // Every file on mem; a few on pipe and tcp too.
        let transports: &[&str] = if k < 2 { TRANSPORTS } else { &["mem"] };
        for &transport in transports {
            let file = file.to_str().unwrap();
            let run = run_master(
                &["restore", file, "--transport", transport, "--seed", "2"],
                script,
            );
            run.assert_code(0);
            let blocks = support::parse_blocks(&run.out());
            assert_eq!(blocks.len(), 1, "{file} on {transport}");
            blocks[0].check(total).unwrap();
        }
    }
}
