//! `master load`: the bank running free while snapshots are taken, on every transport
//! and topology; topology files and their refusals; snapshots aborted at a frozen
//! node; a broken snapshot caught by the check; a node that fails; restoring a saved
//! snapshot and running on from it.
//!
//! Runs that only the library can shape (a frozen or failing node, a tampered
//! snapshot) run in this process through `bank_app::live::run`; the rest run the
//! `master` binary, for its exit statuses and output. Every run is bounded, by a
//! number of transfers or a short duration.

mod support;

use bank_app::live::{End, Hooks, Layout, LoadConfig, LoadError, Opening, Report, cluster, wire};
use bank_app::protocol::BankSnapshot;
use snapshot_core::topology::Topology;
use snapshot_core::{GlobalSnapshot, NodeId};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::{Run, master_command, run_command, run_master};

/// The `name: value` lines of a text summary.
fn summary(run: &Run) -> BTreeMap<String, String> {
    run.out()
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The fields every text summary has.
const FIELDS: [&str; 17] = [
    "seed",
    "transport",
    "nodes",
    "topology",
    "total",
    "duration",
    "transfers",
    "transfers/s",
    "snapshots completed",
    "snapshots failed",
    "snapshots aborted",
    "snapshots skipped",
    "snapshots saved",
    "latency p50",
    "latency p99",
    "latency max",
    "final balance",
];

fn number(fields: &BTreeMap<String, String>, name: &str) -> u64 {
    let value = &fields[name];
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {value:?} is not a number"))
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.out())
        .unwrap_or_else(|e| panic!("{}: not one JSON document: {e}\n{}", run.what, run.out()))
}

#[test]
fn a_load_runs_on_every_transport_and_prints_its_summary() {
    for transport in ["mem", "pipe", "tcp"] {
        let args = [
            "load",
            "--transport",
            transport,
            "--nodes",
            "4",
            "--duration",
            "300ms",
            "--snapshot-every",
            "10ms",
            "--seed",
            "5",
        ];
        let run = run_master(&args, b"");
        run.assert_code(0);
        let fields = summary(&run);
        for field in FIELDS {
            assert!(
                fields.contains_key(field),
                "{}: no {field}\n{}",
                run.what,
                run.out()
            );
        }
        assert_eq!(fields["seed"], "5");
        assert_eq!(fields["transport"], transport);
        assert_eq!(fields["nodes"], "4");
        assert_eq!(fields["topology"], "complete");
        assert_eq!(number(&fields, "total"), 4000);
        assert!(number(&fields, "transfers") > 0, "{}", run.out());
        assert!(number(&fields, "snapshots completed") > 0, "{}", run.out());
        assert_eq!(number(&fields, "snapshots failed"), 0);
        assert!(fields["latency p50"].ends_with("ms"), "{}", run.out());
        assert_eq!(fields["final balance"], "4000 (all the money)");

        // The same, bounded by transfers, as one JSON document.
        let args = [
            "load",
            "--transport",
            transport,
            "--nodes",
            "3",
            "--transfers",
            "100000",
            "--snapshot-every",
            "1ms",
            "--seed",
            "6",
            "--json",
        ];
        let run = run_master(&args, b"");
        run.assert_code(0);
        let doc = json(&run);
        assert_eq!(doc["seed"], 6);
        assert_eq!(doc["transport"], transport);
        assert_eq!(doc["nodes"], 3);
        assert_eq!(doc["transfers"], 100_000);
        assert!(doc["transfers_per_s"].as_f64().unwrap() > 0.0);
        assert!(doc["duration_s"].as_f64().unwrap() > 0.0);
        assert!(doc["snapshots"]["completed"].as_u64().unwrap() > 0, "{doc}");
        for field in ["failed", "aborted", "skipped", "saved"] {
            assert!(doc["snapshots"][field].is_u64(), "{field}: {doc}");
        }
        for field in ["p50", "p99", "max"] {
            assert!(doc["latency_ms"][field].as_f64().unwrap() >= 0.0, "{doc}");
        }
        assert_eq!(doc["total"], 3000);
        assert_eq!(doc["final_balance"], 3000);
        assert_eq!(doc["status"], 0);
    }
}

#[test]
fn an_unseeded_run_prints_its_seed() {
    let run = run_master(&["load", "--nodes", "2", "--transfers", "1000"], b"");
    run.assert_code(0);
    let seed = number(&summary(&run), "seed");
    // Replayed with it.
    let again = run_master(
        &[
            "load",
            "--nodes",
            "2",
            "--transfers",
            "1000",
            "--seed",
            &seed.to_string(),
        ],
        b"",
    );
    again.assert_code(0);
    assert_eq!(number(&summary(&again), "seed"), seed);
}

#[test]
fn a_ring_sends_one_way() {
    let run = run_master(
        &[
            "load",
            "--topology",
            "ring",
            "--nodes",
            "5",
            "--transfers",
            "50000",
            "--seed",
            "1",
        ],
        b"",
    );
    run.assert_code(0);
    let fields = summary(&run);
    assert_eq!(fields["topology"], "ring");
    assert_eq!(number(&fields, "transfers"), 50_000);

    // In this process: every branch took in transfers from its predecessor only, and
    // the money is all there.
    let mut config = LoadConfig::new(Opening::Fresh(Layout::ring(5, 1000).unwrap()), "ring");
    config.end = End::Transfers(50_000);
    config.snapshot_every = Duration::from_millis(1);
    let report = bank_app::live::run(config).unwrap();
    assert_eq!(report.transfers, 50_000);
    assert!(report.completed > 0);
    assert_eq!((report.failed, report.final_balance), (0, 5000));
}

/// A topology file in `dir`.
fn topology_file(dir: &Path, text: &str) -> String {
    let path = dir.join("topology.txt");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Ids from 10, one branch with nothing, channels one way around and one back.
const FILE: &str = "\
# three branches
node 10 600
node 20 0      # pays nothing until paid
node 30 300

link 10 20
link 20 30
link 30 10
link 20 10
";

#[test]
fn a_topology_file_names_the_nodes_their_balances_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let file = topology_file(dir.path(), FILE);
    for transport in ["mem", "pipe"] {
        let run = run_master(
            &[
                "load",
                "--topology",
                &file,
                "--transport",
                transport,
                "--transfers",
                "20000",
                "--snapshot-every",
                "1ms",
                "--seed",
                "2",
            ],
            b"",
        );
        run.assert_code(0);
        let fields = summary(&run);
        assert_eq!(fields["topology"], file);
        assert_eq!(number(&fields, "nodes"), 3);
        assert_eq!(number(&fields, "total"), 900);
        assert_eq!(number(&fields, "transfers"), 20_000);
        assert!(number(&fields, "snapshots completed") > 0);
        assert_eq!(fields["final balance"], "900 (all the money)");
    }
    // --nodes that agrees is accepted; one that does not, refused.
    let args = |nodes: &'static str| {
        [
            "load",
            "--topology",
            &file,
            "--nodes",
            nodes,
            "--transfers",
            "100",
        ]
        .map(str::to_string)
    };
    let agree = args("3");
    run_master(&agree.each_ref().map(String::as_str), b"").assert_code(0);
    let disagree = args("4");
    let run = run_master(&disagree.each_ref().map(String::as_str), b"");
    run.assert_code(2);
    assert!(run.err().contains("--nodes 4 disagrees"), "{}", run.err());

    // In this process: snapshots of the file's bank account for its 900.
    let layout = Layout::read(Path::new(&file)).unwrap();
    assert_eq!(
        layout.topology.nodes().collect::<Vec<_>>(),
        [NodeId(10), NodeId(20), NodeId(30)]
    );
    let mut config = LoadConfig::new(Opening::Fresh(layout), file.clone());
    config.end = End::Transfers(20_000);
    config.snapshot_every = Duration::from_millis(1);
    let report = bank_app::live::run(config).unwrap();
    assert!(report.completed > 0);
    assert_eq!((report.failed, report.final_balance), (0, 900));
}

#[test]
fn a_file_that_is_not_strongly_connected_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = topology_file(
        dir.path(),
        "node 1 10\nnode 2 10\nnode 3 10\nlink 1 2\nlink 2 3\n",
    );
    let run = run_master(&["load", "--topology", &file, "--transfers", "100"], b"");
    run.assert_code(2);
    let err = run.err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("master load: topology {file}: ")),
        "{err}"
    );
    assert!(err.contains("not strongly connected"), "{err}");
    assert!(err.contains("would never complete"), "{err}");
    assert!(run.stdout.is_empty());
}

#[test]
fn a_file_with_a_syntax_error_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, reason) in [
        (
            "node 1 10\nnode 2 10\n\nlnk 1 2\n",
            4,
            "unknown keyword \"lnk\"",
        ),
        ("node 1 ten\n", 1, "\"ten\" is not a balance"),
        (
            "node 1 10\nnode 2 10\nlink 1 3\n",
            3,
            "node 3 is not declared",
        ),
        (
            "node 1 10\n# again\nnode 1 5\n",
            3,
            "node 1 is declared twice",
        ),
        ("node 1 10\nlink 1 1\n", 2, "joins a node to itself"),
    ] {
        let file = topology_file(dir.path(), text);
        let run = run_master(&["load", "--topology", &file], b"");
        run.assert_code(2);
        let expected = format!("master load: topology {file} line {line}: ");
        assert!(run.err().starts_with(&expected), "{text:?}: {}", run.err());
        assert!(run.err().contains(reason), "{text:?}: {}", run.err());
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["load", "--transport", "carrier-pigeon"][..],
        &["load", "--duration", "3"],
        &["load", "--duration", "1s", "--transfers", "5"],
        &["load", "--snapshot-every", "0ms"],
        &["load", "--max-concurrent", "0"],
        &["load", "--nodes", "1"],
        &["load", "--topology", "/nonexistent/topology.txt"],
        &["load", "--restore", "/nonexistent/1-0.json"],
        &["load", "--timeout", "10000000000000000000s"],
        &["load", "--duration", "87601h"],
        &["load", "--snapshot-every", "100000h"],
        &["load", "--nodes", "257"],
        &["load", "--nodes", "4294967295", "--topology", "ring"],
    ] {
        let run = run_master(args, b"");
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "{}", run.what);
    }
}

/// A complete bank of 4 branches holding `balance` each.
fn complete(balance: u64) -> LoadConfig {
    LoadConfig::new(
        Opening::Fresh(Layout::complete(4, balance).unwrap()),
        "complete",
    )
}

#[test]
fn snapshots_that_a_frozen_node_holds_up_are_aborted_and_the_run_passes() {
    // Little money, so that what the others send the frozen node (at least 1 each)
    // stays far below what its queue holds while it handles nothing.
    let mut config = complete(100);
    config.end = End::After(Duration::from_millis(600));
    config.snapshot_every = Duration::from_millis(20);
    config.timeout = Duration::from_millis(100);
    config.hooks = Hooks {
        freeze: Some(NodeId(2)),
        ..Hooks::default()
    };
    let report = bank_app::live::run(config).unwrap();
    assert!(report.aborted > 0, "{report:?}");
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert_eq!(report.final_balance, 400);
    assert_eq!(report.status(), 0);
    assert!(
        report
            .text()
            .contains(&format!("snapshots aborted: {}\n", report.aborted))
    );
}

#[test]
fn a_snapshot_that_loses_money_fails_its_check_and_the_run_exits_1() {
    fn lose_a_unit(snapshot: &mut BankSnapshot) {
        let mut locals: Vec<_> = snapshot.nodes().cloned().collect();
        if let Some(rich) = locals.iter_mut().find(|l| l.state > 0) {
            rich.state -= 1;
        }
        *snapshot = GlobalSnapshot::from_locals(snapshot.id(), locals).unwrap();
    }
    let mut config = complete(1000);
    config.end = End::Transfers(20_000);
    config.snapshot_every = Duration::from_millis(1);
    config.hooks = Hooks {
        tamper: Some(lose_a_unit),
        ..Hooks::default()
    };
    let report: Report = bank_app::live::run(config).unwrap();
    assert!(report.completed > 0);
    assert_eq!(
        report.failed, report.completed,
        "every snapshot lost a unit"
    );
    assert!(
        report.failures[0].contains("but the bank holds 4000"),
        "{:?}",
        report.failures
    );
    assert_eq!(report.status(), 1);
    assert_eq!(report.final_balance, 4000, "the bank itself lost nothing");
}

#[test]
fn a_node_that_fails_ends_the_run_with_its_reason() {
    for transport in [
        bank_app::systems::TransportKind::Mem,
        bank_app::systems::TransportKind::Pipe,
    ] {
        let mut config = complete(1000);
        config.transport = transport;
        config.end = End::After(Duration::from_secs(30));
        config.hooks = Hooks {
            crash: Some(NodeId(3)),
            ..Hooks::default()
        };
        let error = bank_app::live::run(config).unwrap_err();
        assert!(matches!(error, LoadError::System(_)), "{error:?}");
        assert_eq!(error.status(), 3);
        assert!(
            error.to_string().starts_with("node 3: "),
            "{transport:?}: {error}"
        );
    }
}

#[test]
fn a_cluster_removes_its_fifos_once_its_nodes_have_gone() {
    /// A node that waits for the driver to go.
    struct Idle;
    impl cluster::NodeMain<wire::Wire> for Idle {
        type Output = ();
        fn run<T: snapshot_core::Transport<wire::Wire> + Send + 'static>(self, mut t: T) {
            while let Ok(snapshot_core::Incoming::Frame(..)) = t.recv() {}
        }
    }
    let topology = Topology::ring([NodeId(7), NodeId(9)]);
    let cluster = cluster::Cluster::spawn(
        bank_app::systems::TransportKind::Pipe,
        &topology,
        wire::stop_frame,
        |_| Idle,
    )
    .unwrap();
    let dir = cluster.dir().unwrap().to_path_buf();
    assert!(dir.is_dir());
    assert_eq!(cluster.nodes(), [NodeId(7), NodeId(9)]);
    let ended = cluster.stop();
    assert_eq!(ended.len(), 2);
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn a_pipe_run_leaves_nothing_in_the_temporary_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "load",
        "--transport",
        "pipe",
        "--nodes",
        "3",
        "--transfers",
        "10000",
    ];
    let mut command = master_command(&args);
    command.env("TMPDIR", tmp.path());
    run_command(command, &args, b"").assert_code(0);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The saved snapshots in `dir`, by file name.
fn saved_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A load of 3 branches that saves a snapshot every millisecond into `saved`.
fn load_saving(saved: &Path) -> Run {
    let saved = saved.display().to_string();
    let run = run_master(
        &[
            "load",
            "--nodes",
            "3",
            "--transfers",
            "100000",
            "--snapshot-every",
            "1ms",
            "--seed",
            "8",
            "--save",
            &saved,
        ],
        b"",
    );
    run.assert_code(0);
    run
}

#[test]
fn a_saved_snapshot_restores_the_bank_which_runs_on_with_all_its_money() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    let run = load_saving(&saved);
    let files = saved_in(&saved);
    let fields = summary(&run);
    assert_eq!(files.len() as u64, number(&fields, "snapshots saved"));
    assert_eq!(files.len() as u64, number(&fields, "snapshots completed"));
    // The snapshot with the most money in transit: restoring it puts that back.
    let in_transit = |path: &Path| {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let amount: u64 = doc["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["amount"].as_u64().unwrap())
            .sum();
        (amount, doc)
    };
    let (file, (amount, doc)) = files
        .iter()
        .map(|f| (f, in_transit(f)))
        .max_by_key(|(_, (amount, _))| *amount)
        .unwrap();
    assert!(amount > 0, "no snapshot caught money in transit");
    assert_eq!(doc["total"], 3000);
    let seq = doc["snapshot"]["seq"].as_u64().unwrap();

    let again = dir.path().join("again");
    let again_arg = again.display().to_string();
    let file_arg = file.display().to_string();
    let run = run_master(
        &[
            "load",
            "--restore",
            &file_arg,
            "--transfers",
            "50000",
            "--snapshot-every",
            "1ms",
            "--seed",
            "9",
            "--save",
            &again_arg,
            "--json",
        ],
        b"",
    );
    run.assert_code(0);
    let summary = json(&run);
    assert_eq!(summary["topology"], "restored");
    assert_eq!(summary["nodes"], 3);
    assert_eq!(summary["total"], 3000);
    assert_eq!(summary["restored_from"], doc["snapshot"]);
    assert_eq!(
        summary["final_balance"], 3000,
        "what was in transit came back"
    );
    assert!(summary["snapshots"]["completed"].as_u64().unwrap() > 0);
    // The snapshots after the restore are numbered past the one restored.
    for path in saved_in(&again) {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(
            doc["snapshot"]["seq"].as_u64().unwrap() > seq,
            "{}",
            path.display()
        );
    }
    // The options that the snapshot decides are refused with it.
    for extra in [
        &["--topology", "ring"][..],
        &["--balance", "5"],
        &["--nodes", "4"],
    ] {
        let mut args = vec!["load", "--restore", &file_arg, "--transfers", "10"];
        args.extend_from_slice(extra);
        run_master(&args, b"").assert_code(2);
    }
}

#[test]
fn a_bank_restored_near_the_last_sequence_number_skips_the_snapshots_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    load_saving(&saved);
    let file = saved_in(&saved).pop().expect("a saved snapshot");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // Each of the 3 branches starts two more snapshots (u64::MAX - 1 is the last).
    doc["snapshot"]["seq"] = (u64::MAX - 3).into();
    let near = dir.path().join("near.json");
    std::fs::write(&near, serde_json::to_vec(&doc).unwrap()).unwrap();
    let near_arg = near.display().to_string();
    let run = run_master(
        &[
            "load",
            "--restore",
            &near_arg,
            "--duration",
            "300ms",
            "--snapshot-every",
            "1ms",
            "--seed",
            "9",
        ],
        b"",
    );
    run.assert_code(0);
    let fields = summary(&run);
    let started = ["completed", "failed", "aborted"]
        .map(|what| number(&fields, &format!("snapshots {what}")))
        .iter()
        .sum::<u64>();
    assert!(started <= 6, "{}", run.out());
    assert!(number(&fields, "snapshots skipped") > 0, "{}", run.out());
    // From u64::MAX - 2, no snapshot could start: the file is refused.
    doc["snapshot"]["seq"] = (u64::MAX - 1).into();
    std::fs::write(&near, serde_json::to_vec(&doc).unwrap()).unwrap();
    let run = run_master(&["load", "--restore", &near_arg, "--duration", "10ms"], b"");
    run.assert_code(2);
    assert!(run.err().contains("last sequence number"), "{}", run.err());
}
