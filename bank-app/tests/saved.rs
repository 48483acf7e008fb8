//! Saved snapshots: written and read back whole from both files, the JSON's shape,
//! the check catching each kind of broken file, decoders that never panic, the DOT
//! rendering, and `master inspect`.

mod support;

use bank_app::account::{Account, InTransit, Transfer};
use bank_app::saved::format_snapshot;
use bank_app::saved::{
    self, CheckError, Encoding, Format, LoadError, SavedChannel, SavedNode, SavedSnapshot, Stats,
};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed};
use serde_json::{Value, json};
use snapshot_core::sim::Sim;
use snapshot_core::topology::Topology;
use snapshot_core::{Endpoint, GlobalSnapshot, NodeId, SnapshotId};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use support::run_master;

/// A snapshot of a bank of three, taken while transfers on 2 -> 1 and 3 -> 1 are held
/// back, so that it catches them in transit.
fn taken_from_a_running_bank() -> GlobalSnapshot<u64, InTransit> {
    let ids = (1..=3).map(NodeId);
    let mut sim = Sim::<Account>::new(7, &Topology::complete(ids), |_| Account {
        balance: 100,
        handled: 0,
    })
    .unwrap();
    sim.add_coordinator(Endpoint::Role(0)).unwrap();
    for (from, to, amount) in [(1, 2, 5), (2, 1, 7), (2, 1, 8), (3, 1, 9), (3, 2, 1)] {
        let (from, to) = (NodeId(from), NodeId(to));
        assert!(sim.process_mut(from).unwrap().withdraw(amount));
        sim.send(from, to, Transfer(amount)).unwrap();
    }
    sim.hold(NodeId(2), NodeId(1)).unwrap();
    sim.hold(NodeId(3), NodeId(1)).unwrap();
    sim.run(2).unwrap();
    sim.request_snapshot(NodeId(1)).unwrap();
    sim.run_until_quiet(10_000).unwrap();
    sim.release(NodeId(2), NodeId(1)).unwrap();
    sim.release(NodeId(3), NodeId(1)).unwrap();
    sim.run_until_quiet(10_000).unwrap();
    let taken = sim.completed()[0].clone();
    taken.check_cut().unwrap();
    taken
}

fn node(id: u32, balance: u64) -> SavedNode {
    SavedNode {
        id: NodeId(id),
        balance,
    }
}

fn channel(from: u32, to: u32, transfers: &[u64], sent: u64, received: u64) -> SavedChannel {
    SavedChannel {
        from: NodeId(from),
        to: NodeId(to),
        amount: transfers.iter().sum(),
        transfers: transfers.to_vec(),
        sent,
        received,
    }
}

/// A bank of three holding 1000: 900 held, 100 in transit on 2 -> 1 (60 then 40)
/// and 0 on 3 -> 2 caught as one transfer of 0.
fn known() -> SavedSnapshot {
    SavedSnapshot {
        snapshot: SnapshotId {
            initiator: NodeId(2),
            seq: 3,
        },
        total: 1000,
        nodes: vec![node(1, 300), node(2, 500), node(3, 100)],
        channels: vec![
            channel(1, 2, &[], 4, 4),
            channel(1, 3, &[], 0, 0),
            channel(2, 1, &[60, 40], 7, 5),
            channel(2, 3, &[], 1, 1),
            channel(3, 1, &[], 2, 2),
            channel(3, 2, &[0], 3, 2),
        ],
        stats: Stats::default(),
    }
}

/// The names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes `bytes` to `name` in `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_snapshot_of_a_running_bank_is_saved_and_read_back_whole_from_either_file() {
    let taken = taken_from_a_running_bank();
    let stats = Stats {
        taken_at_ms: Some(1_700_000_000_000),
        latency_us: Some(250),
        markers: Some(6),
        ..Stats::default()
    };
    let saved = SavedSnapshot::from_bank(&taken, 300, stats).unwrap();
    saved::check(&saved).unwrap();
    let caught: usize = saved.channels.iter().map(|c| c.transfers.len()).sum();
    assert!(caught >= 2, "the held transfers were caught: {saved:?}");
    assert_eq!(saved.to_bank().unwrap(), taken, "the way back");

    let top = tempfile::tempdir().unwrap();
    let dir = top.path().join("not").join("there");
    let (json, postcard) = saved::save(&dir, &saved).unwrap();
    assert_eq!(json, dir.join("1-0.json"));
    assert_eq!(postcard, dir.join("1-0.postcard"));
    assert_eq!(
        entries(&dir),
        ["1-0.json", "1-0.postcard"],
        "no temporary file"
    );
    assert_eq!(saved::load(&json).unwrap(), saved);
    assert_eq!(saved::load(&postcard).unwrap(), saved);

    // Saved again, the files are replaced, and nothing else is left.
    let mut again = saved.clone();
    again.stats = Stats::default();
    saved::save(&dir, &again).unwrap();
    assert_eq!(entries(&dir), ["1-0.json", "1-0.postcard"]);
    assert_eq!(saved::load(&json).unwrap(), again);
    assert_eq!(saved::load(&postcard).unwrap(), again);

    // Either file, under another name, is told by what it holds.
    let other = top.path().join("copy.snap");
    std::fs::copy(&json, &other).unwrap();
    assert_eq!(saved::load(&other).unwrap(), again);
    std::fs::copy(&postcard, &other).unwrap();
    assert_eq!(saved::load(&other).unwrap(), again);
}

#[test]
fn what_a_restore_needs_comes_back_in_order() {
    let saved = known();
    let balances: Vec<_> = saved.balances().into_iter().collect();
    assert_eq!(
        balances,
        [(NodeId(1), 300), (NodeId(2), 500), (NodeId(3), 100)]
    );
    let in_flight = saved.in_flight();
    assert_eq!(in_flight.len(), 6, "every channel, empty ones too");
    assert_eq!(
        in_flight[&(NodeId(2), NodeId(1))],
        [Transfer(60), Transfer(40)]
    );
    assert_eq!(in_flight[&(NodeId(3), NodeId(2))], [Transfer(0)]);
    assert!(in_flight[&(NodeId(1), NodeId(2))].is_empty());
}

#[test]
fn the_json_file_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = saved::save(dir.path(), &known()).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(text.ends_with("}\n"));
    let value: Value = serde_json::from_str(&text).unwrap();
    let channel = |from: u32, to: u32, amount: u64, transfers: Value, sent: u64, received: u64| {
        json!({"from": from, "to": to, "amount": amount, "transfers": transfers,
               "sent": sent, "received": received})
    };
    let expected = json!({
        "snapshot": {"initiator": 2, "seq": 3},
        "total": 1000,
        "nodes": [
            {"id": 1, "balance": 300},
            {"id": 2, "balance": 500},
            {"id": 3, "balance": 100},
        ],
        "channels": [
            channel(1, 2, 0, json!([]), 4, 4),
            channel(1, 3, 0, json!([]), 0, 0),
            channel(2, 1, 100, json!([60, 40]), 7, 5),
            channel(2, 3, 0, json!([]), 1, 1),
            channel(3, 1, 0, json!([]), 2, 2),
            channel(3, 2, 0, json!([0]), 3, 2),
        ],
        "stats": {},
    });
    assert_eq!(value, expected);
    // The one line of JSON is the same document.
    let line = saved::to_json_line(&known());
    assert!(!line.contains('\n'));
    assert_eq!(serde_json::from_str::<Value>(&line).unwrap(), expected);
    assert!(line.starts_with(
        r#"{"snapshot":{"initiator":2,"seq":3},"total":1000,"nodes":[{"id":1,"balance":300},"#
    ));
}

/// The known snapshot as JSON, edited by `edit`, written to a file and loaded back.
fn broken(edit: impl FnOnce(&mut Value)) -> SavedSnapshot {
    let dir = tempfile::tempdir().unwrap();
    let mut value = serde_json::to_value(known()).unwrap();
    edit(&mut value);
    let path = write(dir.path(), "broken.json", value.to_string().as_bytes());
    saved::load(&path).unwrap()
}

#[test]
fn a_good_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (json, postcard) = saved::save(dir.path(), &known()).unwrap();
    saved::check(&saved::load(&json).unwrap()).unwrap();
    saved::check(&saved::load(&postcard).unwrap()).unwrap();
}

#[test]
fn a_file_that_makes_money_is_caught() {
    let saved = broken(|v| v["nodes"][0]["balance"] = json!(301));
    assert_eq!(
        saved::check(&saved),
        Err(CheckError::MoneyMade {
            counted: 1001,
            total: 1000
        })
    );
    // The money made may be in transit too.
    let saved = broken(|v| {
        v["channels"][0]["amount"] = json!(5);
        v["channels"][0]["transfers"] = json!([5]);
        v["channels"][0]["sent"] = json!(5);
    });
    assert!(matches!(
        saved::check(&saved),
        Err(CheckError::MoneyMade { counted: 1005, .. })
    ));
}

#[test]
fn a_file_that_loses_money_is_caught() {
    let saved = broken(|v| v["total"] = json!(1200));
    let error = saved::check(&saved).unwrap_err();
    assert_eq!(
        error,
        CheckError::MoneyLost {
            counted: 1000,
            total: 1200
        }
    );
    assert_eq!(
        error.to_string(),
        "money lost: the snapshot accounts for 1000 but the bank holds 1200"
    );
}

#[test]
fn an_inconsistent_cut_is_caught() {
    // More taken from 2 -> 1 than was put on it.
    let saved = broken(|v| v["channels"][2]["received"] = json!(8));
    let error = saved::check(&saved).unwrap_err();
    assert_eq!(
        error,
        CheckError::ReceivedMoreThanSent {
            from: NodeId(2),
            to: NodeId(1),
            sent: 7,
            received: 8
        }
    );
    assert_eq!(
        error.to_string(),
        "channel (2 -> 1): not a consistent cut: 8 transfers taken before the cut, but only 7 sent"
    );
    // A transfer counted both as taken and in transit.
    let saved = broken(|v| v["channels"][2]["received"] = json!(6));
    assert_eq!(
        saved::check(&saved),
        Err(CheckError::InTransit {
            from: NodeId(2),
            to: NodeId(1),
            sent: 7,
            received: 6,
            expected: 1,
            recorded: 2
        })
    );
}

#[test]
fn an_amount_that_is_not_the_sum_of_its_transfers_is_caught() {
    let saved = broken(|v| v["channels"][2]["amount"] = json!(90));
    let error = saved::check(&saved).unwrap_err();
    assert_eq!(
        error,
        CheckError::Amount {
            from: NodeId(2),
            to: NodeId(1),
            amount: 90,
            sum: 100
        }
    );
    assert_eq!(
        error.to_string(),
        "channel (2 -> 1): amount 90 is not the sum of its transfers, 100"
    );
}

#[test]
fn a_channel_to_an_unknown_node_is_caught() {
    let saved = broken(|v| v["channels"][5]["to"] = json!(4));
    let error = saved::check(&saved).unwrap_err();
    assert_eq!(
        error,
        CheckError::UnknownNode {
            from: NodeId(3),
            to: NodeId(4),
            node: NodeId(4)
        }
    );
    assert_eq!(
        error.to_string(),
        "channel (3 -> 4) names node 4, which is not listed"
    );
    assert!(saved.to_bank().is_err(), "nor made a bank snapshot of");
}

#[test]
fn a_file_that_is_not_a_saved_snapshot_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "x.json", br#"{"snapshot": {"initiator": 1}}"#);
    let error = saved::load(&path).unwrap_err();
    assert!(matches!(error, LoadError::Decode { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&path.display().to_string()));
    let error = saved::load(&dir.path().join("absent.json")).unwrap_err();
    assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    let error = saved::load(dir.path()).unwrap_err();
    assert!(
        matches!(error, LoadError::NotAFile { .. } | LoadError::Read { .. }),
        "{error:?}"
    );
}

#[test]
fn a_file_past_the_size_bound_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: no disk used.
    file.set_len(saved::MAX_FILE_SIZE + 1).unwrap();
    let error = saved::load(&path).unwrap_err();
    assert!(matches!(error, LoadError::TooLarge { .. }), "{error:?}");
}

#[test]
fn the_dot_graph_of_a_known_snapshot() {
    let expected = r#"digraph "snapshot 2-3" {
  label="snapshot 2-3 (initiator 2, seq 3): total 1000";
  node [shape=box];
  "1" [label="Node 1\n300"];
  "2" [label="Node 2\n500"];
  "3" [label="Node 3\n100"];
  "1" -> "2" [color=gray70];
  "1" -> "3" [color=gray70];
  "2" -> "1" [label="100 (2 transfers)", penwidth=2];
  "2" -> "3" [color=gray70];
  "3" -> "1" [color=gray70];
  "3" -> "2" [label="0 (1 transfer)", penwidth=2];
}
"#;
    assert_eq!(saved::to_dot(&known()), expected);
}

/// Valid files to mutate: the known snapshot with some figures, in both encodings,
/// as [`saved::save`] writes them.
fn valid_files() -> &'static [(Encoding, Vec<u8>)] {
    static FILES: OnceLock<Vec<(Encoding, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let mut saved = known();
        saved.stats.latency_us = Some(12);
        let dir = tempfile::tempdir().unwrap();
        let (json, postcard) = saved::save(dir.path(), &saved).unwrap();
        vec![
            (Encoding::Json, std::fs::read(json).unwrap()),
            (Encoding::Postcard, std::fs::read(postcard).unwrap()),
        ]
    })
}

/// Decodes `bytes` both ways, and checks and renders whatever decodes: none of it
/// may panic.
fn decode_everything(bytes: &[u8]) {
    for encoding in [Encoding::Json, Encoding::Postcard] {
        if let Ok(saved) = saved::decode(bytes, encoding) {
            let _ = saved::check(&saved);
            for format in [Format::Text, Format::Json, Format::Dot] {
                let _ = saved::render(&saved, format);
            }
        }
    }
}

/// A fixed seed (unless PROPTEST_RNG_SEED gives one) and no failures persisted: the
/// same cases every run. PROPTEST_CASES sets how many.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0x5a7e_d5a4_5407_0001);
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    #[test]
    fn mutated_files_never_panic_a_decoder(
        which in 0..2usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..8),
        cut in any::<Option<usize>>(),
    ) {
        let mut bytes = valid_files()[which].1.clone();
        for (at, byte, how) in edits {
            let at = at % (bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.push(byte),
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        decode_everything(&bytes);
    }
}

#[test]
fn mutated_files_on_disk_are_loaded_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (encoding, bytes) in valid_files() {
        let encoding = *encoding;
        let name = match encoding {
            Encoding::Json => "s.json",
            Encoding::Postcard => "s.postcard",
        };
        // Every prefix of the postcard file, and a sample of the JSON's.
        let step = if encoding == Encoding::Json { 7 } else { 1 };
        for len in (0..bytes.len()).step_by(step) {
            let path = write(dir.path(), name, &bytes[..len]);
            assert!(saved::load(&path).is_err(), "{name} cut at {len}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0xff;
            let path = write(dir.path(), name, &flipped);
            if let Ok(saved) = saved::load(&path) {
                let _ = saved::check(&saved);
            }
        }
    }
}

/// Runs `master inspect ARGS`.
fn inspect(args: &[&str]) -> support::Run {
    let mut all = vec!["inspect"];
    all.extend_from_slice(args);
    run_master(&all, b"")
}

#[test]
fn master_inspect_prints_a_snapshot_that_holds() {
    let dir = tempfile::tempdir().unwrap();
    let saved = known();
    let (json, postcard) = saved::save(dir.path(), &saved).unwrap();
    let text = "---Node states\nnode 1 = 300\nnode 2 = 500\nnode 3 = 100\n---Channel states\n\
                channel (1 -> 2) = 0\nchannel (1 -> 3) = 0\nchannel (2 -> 1) = 100\n\
                channel (2 -> 3) = 0\nchannel (3 -> 1) = 0\nchannel (3 -> 2) = 0\n";
    assert_eq!(format_snapshot(&saved.to_bank().unwrap()), text);
    for file in [&json, &postcard] {
        let file = file.to_str().unwrap();
        inspect(&[file])
            .assert_code(0)
            .assert_stdout(text.as_bytes())
            .assert_quiet();
        inspect(&[file, "--format", "text"])
            .assert_code(0)
            .assert_stdout(text.as_bytes());
        inspect(&["--format", "json", file])
            .assert_code(0)
            .assert_stdout(format!("{}\n", saved::to_json_line(&saved)).as_bytes())
            .assert_quiet();
        inspect(&["--format", "dot", file])
            .assert_code(0)
            .assert_stdout(saved::to_dot(&saved).as_bytes())
            .assert_quiet();
    }
}

#[test]
fn master_inspect_refuses_a_snapshot_that_fails_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut saved = known();
    saved.nodes[1].balance += 1;
    let (json, postcard) = saved::save(dir.path(), &saved).unwrap();
    for file in [json, postcard] {
        let run = inspect(&[file.to_str().unwrap()]);
        run.assert_code(1).assert_stdout(b"");
        assert_eq!(
            run.err(),
            format!(
                "master inspect: {}: money made: the snapshot accounts for 1001 but the bank holds 1000\n",
                file.display()
            )
        );
    }
}

#[test]
fn master_inspect_of_a_file_it_cannot_read_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.postcard", b"\xff\xff\xff");
    let not_json = write(dir.path(), "s.json", b"{\"snapshot\": 1}");
    let absent = dir.path().join("absent.json");
    for file in [&garbage, &not_json, &absent] {
        let run = inspect(&[file.to_str().unwrap()]);
        run.assert_code(2).assert_stdout(b"");
        let prefix = format!("master inspect: {}: ", file.display());
        assert!(run.err().starts_with(&prefix), "{}", run.err());
        assert_eq!(run.err().lines().count(), 1, "{}", run.err());
    }
    inspect(&[dir.path().to_str().unwrap()]).assert_code(2);
    inspect(&[]).assert_code(2);
    inspect(&["--format", "svg", garbage.to_str().unwrap()]).assert_code(2);
}
