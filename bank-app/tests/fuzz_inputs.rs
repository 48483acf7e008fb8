//! The bank's text inputs, fuzzed: a script's lines (`script::parse_line`), the
//! cluster file (`ClusterFile::parse`) and the topology file (`Layout::parse`), fed
//! arbitrary bytes and mutated valid text.
//!
//! None may panic. A script line that parses reads back, once written out again, as
//! the same command, and a refusal is one line of text. A file that is refused is
//! refused with the number of a line of the file, the one at fault.
//!
//! Seeded: the same cases every run. `PROPTEST_CASES` changes how many.

use bank_app::live::layout::{Layout, LayoutError};
use bank_app::script::{Command, SyntaxError, parse_line};
use bank_app::systems::cluster::ClusterFile;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseError, TestRunner};
use snapshot_core::NodeId;
use std::collections::BTreeMap;
use std::time::Instant;

/// The same cases every run (a fixed seed unless `PROPTEST_RNG_SEED` gives one, no
/// failures persisted), `cases` of them unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(0xF022_1A9B_0000_0001);
    }
    config
}

/// Runs `body` on `cases` values of `strategy`, each returning how its case ended;
/// prints how many cases ran, how long they took, and how many ended each way.
fn fuzz<S>(
    name: &str,
    cases: u32,
    strategy: S,
    body: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config(cases));
    let outcomes = std::cell::RefCell::new(BTreeMap::<&str, usize>::new());
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        let outcome = body(value)?;
        *outcomes.borrow_mut().entry(outcome).or_default() += 1;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{name}: {error}");
    }
    println!(
        "{name}: {} cases in {:.2?}; {:?}",
        runner.config().cases,
        started.elapsed(),
        outcomes.borrow()
    );
}

// ---------------------------------------------------------------------------------
// Script lines

/// Text made of `count` tokens at most, each drawn from `tokens`: the words, numbers,
/// blanks and separators of a language in any order.
fn tokens(tokens: &'static [&'static str], count: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(0..tokens.len(), 0..count)
        .prop_map(move |picks| picks.into_iter().flat_map(|i| tokens[i].bytes()).collect())
}

const SCRIPT_TOKENS: &[&str] = &[
    "StartMaster",
    "CreateNode",
    "Send",
    "Receive",
    "ReceiveAll",
    "BeginSnapshot",
    "CollectState",
    "PrintSnapshot",
    "KillAll",
    "startmaster",
    " ",
    " ",
    " ",
    "\t",
    "\r",
    "#",
    "0",
    "1",
    "007",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-",
    "+",
    "\u{ff11}",
    "\u{0}",
    "\x7f",
];

/// `command` written as a script line.
fn render(command: &Command) -> String {
    match *command {
        Command::StartMaster => "StartMaster".to_string(),
        Command::CreateNode { node, amount } => format!("CreateNode {node} {amount}"),
        Command::Send { from, to, amount } => format!("Send {from} {to} {amount}"),
        Command::Receive { to, from: None } => format!("Receive {to}"),
        Command::Receive {
            to,
            from: Some(from),
        } => format!("Receive {to} {from}"),
        Command::ReceiveAll => "ReceiveAll".to_string(),
        Command::BeginSnapshot(node) => format!("BeginSnapshot {node}"),
        Command::CollectState => "CollectState".to_string(),
        Command::PrintSnapshot => "PrintSnapshot".to_string(),
        Command::KillAll => "KillAll".to_string(),
    }
}

fn node_id() -> impl Strategy<Value = NodeId> {
    prop_oneof![0..10u32, Just(u32::MAX), any::<u32>()].prop_map(NodeId)
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![0..1000u64, Just(u64::MAX), any::<u64>()]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::StartMaster),
        (node_id(), amount()).prop_map(|(node, amount)| Command::CreateNode { node, amount }),
        (node_id(), node_id(), amount()).prop_map(|(from, to, amount)| Command::Send {
            from,
            to,
            amount
        }),
        (node_id(), proptest::option::of(node_id()))
            .prop_map(|(to, from)| Command::Receive { to, from }),
        Just(Command::ReceiveAll),
        node_id().prop_map(Command::BeginSnapshot),
        Just(Command::CollectState),
        Just(Command::PrintSnapshot),
        Just(Command::KillAll),
    ]
}

/// Numbers as a hostile script might write them.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("000000000000000000000000000000007".to_string()),
        Just(u32::MAX.to_string()),
        Just((u64::from(u32::MAX) + 1).to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_string()),
        Just("99999999999999999999999999999999999999".to_string()),
        Just("-1".to_string()),
        Just("+1".to_string()),
        Just("１".to_string()),
        Just(String::new()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0..4usize, any::<u64>()).prop_map(|(zeros, n)| format!("{}{n}", "0".repeat(zeros))),
    ]
}

/// What the number `text` parses to in a place whose largest value is `max`: the
/// value, or whether it is too large (`Err(true)`) or not a number (`Err(false)`).
fn expected_number(text: &str, max: u64) -> Result<u64, bool> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(false);
    }
    let digits = text.trim_start_matches('0');
    match digits.parse::<u128>() {
        _ if digits.is_empty() => Ok(0),
        Ok(n) if n <= u128::from(max) => Ok(n as u64),
        _ => Err(true),
    }
}

/// One edit of a line's bytes.
fn edit_line(line: &mut Vec<u8>, (at, byte, how): (usize, u8, u8)) {
    let at = at % (line.len() + 1);
    match how % 4 {
        0 if at < line.len() => line[at] = byte,
        1 => line.insert(at, byte),
        2 if at < line.len() => {
            line.remove(at);
        }
        _ => line.truncate(at),
    }
}

/// The properties every parse of a line must have, whatever the line.
fn check_line(line: &[u8]) -> Result<&'static str, TestCaseError> {
    let parsed = parse_line(line);
    match &parsed {
        Ok(Some(command)) => {
            let again = parse_line(render(command).as_bytes());
            prop_assert_eq!(&again, &Ok(Some(*command)), "{:?} re-rendered", command);
        }
        Ok(None) => {}
        Err(error) => {
            let reason = error.to_string();
            prop_assert!(!reason.is_empty());
            prop_assert!(
                !reason.contains(['\n', '\r']),
                "a refusal must be one line: {reason:?}"
            );
        }
    }
    // Blanks around a line do not count, nor does one `\r` at its end.
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(line);
    prop_assert_eq!(&parse_line(&padded), &parsed, "with blanks before");
    if !line.ends_with(b"\r") {
        let mut ended = line.to_vec();
        ended.extend_from_slice(b"\t \r");
        prop_assert_eq!(&parse_line(&ended), &parsed, "with blanks and \\r after");
    }
    Ok(match parsed {
        Ok(Some(_)) => "a command",
        Ok(None) => "skipped",
        Err(SyntaxError::InvalidUtf8) => "not UTF-8",
        Err(SyntaxError::UnknownCommand(_)) => "unknown command",
        Err(SyntaxError::Arity { .. }) => "wrong arity",
        Err(SyntaxError::NotANumber(_)) => "not a number",
        Err(SyntaxError::TooLarge { .. }) => "too large",
        Err(SyntaxError::TooLong) => "too long",
    })
}

#[test]
fn arbitrary_script_lines_parse_or_are_refused_in_one_line() {
    let strategy = prop_oneof![vec(any::<u8>(), 0..64), tokens(SCRIPT_TOKENS, 12),];
    fuzz("arbitrary script lines", 5000, strategy, |line| {
        check_line(&line)
    });
}

#[test]
fn mutated_script_lines_parse_or_are_refused_in_one_line() {
    let strategy = (command(), vec((any::<usize>(), any::<u8>(), 0..4u8), 1..4));
    fuzz(
        "mutated script lines",
        5000,
        strategy,
        |(command, edits)| {
            let mut line = render(&command).into_bytes();
            for edit in edits {
                edit_line(&mut line, edit);
            }
            check_line(&line)
        },
    );
}

/// A valid line with one number replaced: the command with that number if it fits
/// its place (a node id up to u32::MAX, an amount up to u64::MAX), refused as too
/// large or as not a number otherwise.
#[test]
fn numbers_of_any_size_parse_exactly_or_are_refused() {
    let strategy = (command(), any::<usize>(), number_text());
    fuzz(
        "script numbers",
        5000,
        strategy,
        |(command, which, text)| {
            let line = render(&command);
            let mut words: Vec<&str> = line.split(' ').collect();
            if words.len() == 1 {
                return check_line(line.as_bytes());
            }
            let at = 1 + which % (words.len() - 1);
            words[at] = &text;
            let mutated = words.join(" ");
            // The last word of these is an amount; every other number is a node id.
            let is_amount = matches!(command, Command::CreateNode { .. } | Command::Send { .. })
                && at == words.len() - 1;
            let max = if is_amount {
                u64::MAX
            } else {
                u64::from(u32::MAX)
            };
            let parsed = parse_line(mutated.as_bytes());
            match expected_number(&text, max) {
                Ok(value) => {
                    let expected = render(&command)
                        .split(' ')
                        .enumerate()
                        .map(|(i, w)| {
                            if i == at {
                                value.to_string()
                            } else {
                                w.to_string()
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    prop_assert_eq!(&parsed, &parse_line(expected.as_bytes()), "{}", mutated);
                    prop_assert!(matches!(parsed, Ok(Some(_))), "{mutated}: {parsed:?}");
                }
                Err(true) => prop_assert!(
                    matches!(&parsed, Err(SyntaxError::TooLarge { max: m, .. }) if *m == max),
                    "{mutated}: {parsed:?}"
                ),
                // An empty word is no word: the line has an argument fewer.
                Err(false) if text.is_empty() => {
                    prop_assert!(
                        matches!(parsed, Err(SyntaxError::Arity { .. }) | Ok(Some(_))),
                        "{mutated}: {parsed:?}"
                    )
                }
                Err(false) => prop_assert!(
                    matches!(parsed, Err(SyntaxError::NotANumber(_))),
                    "{mutated}: {parsed:?}"
                ),
            }
            check_line(mutated.as_bytes())
        },
    );
}

// ---------------------------------------------------------------------------------
// Files of lines

const CLUSTER_TOKENS: &[&str] = &[
    "node",
    "cluster",
    "nodes",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "#",
    "1",
    "2",
    "007",
    "4294967295",
    "4294967296",
    "-1",
    "+1",
    "10.0.0.1:7000",
    "[::1]:80",
    "127.0.0.1",
    ":99999",
    "host:1",
    "bank-east",
    "\u{e9}",
];

const TOPOLOGY_TOKENS: &[&str] = &[
    "node",
    "link",
    "lnk",
    " ",
    " ",
    " ",
    "\t",
    "\n",
    "\n",
    "\r\n",
    "#",
    "1",
    "2",
    "3",
    "007",
    "0",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "+1",
    "x",
    "\u{e9}",
];

/// Valid lines of a cluster file, with comments and blank lines.
fn cluster_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..20u32, 1..5u8, any::<u16>()).prop_map(|(id, host, port)| format!("node {id} 10.0.0.{host}:{port}")),
        1 => (0..20u32, any::<u16>()).prop_map(|(id, port)| format!("node {id} [::1]:{port}")),
        1 => "[a-z][a-z0-9-]{0,10}".prop_map(|name| format!("cluster {name}")),
        1 => Just(String::new()),
        1 => Just("# a comment".to_string()),
        1 => (0..20u32).prop_map(|id| format!("node {id} 127.0.0.1:7000   # trailing")),
    ]
}

/// A valid topology file, as lines in any order: two to six nodes on a one-way
/// ring, more links, comments and blank lines.
fn topology_file() -> impl Strategy<Value = Vec<String>> {
    (
        proptest::collection::btree_set(prop_oneof![0..10u32, Just(u32::MAX), any::<u32>()], 2..6),
        vec(
            prop_oneof![0..1000u64, any::<u64>().prop_map(|n| n >> 4)],
            6,
        ),
        vec((any::<usize>(), any::<usize>()), 0..6),
    )
        .prop_flat_map(|(ids, balances, extra)| {
            let ids: Vec<u32> = ids.into_iter().collect();
            let mut lines: Vec<String> = ids
                .iter()
                .zip(&balances)
                .map(|(id, balance)| format!("node {id} {balance}"))
                .collect();
            for (i, from) in ids.iter().enumerate() {
                let to = ids[(i + 1) % ids.len()];
                lines.push(format!("link {from} {to}"));
            }
            for (a, b) in extra {
                let (from, to) = (ids[a % ids.len()], ids[b % ids.len()]);
                if from != to {
                    lines.push(format!("link {from} {to}   # one way"));
                }
            }
            lines.push(String::new());
            lines.push("# a comment".to_string());
            Just(lines).prop_shuffle()
        })
}

/// Edits of a file's text: bytes changed, inserted, deleted, lines dropped,
/// duplicated or swapped, numbers made hostile.
#[derive(Debug, Clone)]
enum FileEdit {
    Byte(usize, u8, u8),
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Number(usize, usize, String),
}

fn file_edit() -> impl Strategy<Value = FileEdit> {
    prop_oneof![
        (any::<usize>(), any::<u8>(), 0..4u8).prop_map(|(at, b, how)| FileEdit::Byte(at, b, how)),
        any::<usize>().prop_map(FileEdit::Drop),
        any::<usize>().prop_map(FileEdit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| FileEdit::Swap(a, b)),
        (any::<usize>(), any::<usize>(), number_text())
            .prop_map(|(line, word, text)| FileEdit::Number(line, word, text)),
    ]
}

/// `lines` joined into a file, with `edits` made; as bytes, which may not be UTF-8.
fn edited_file(mut lines: Vec<String>, edits: &[FileEdit]) -> Vec<u8> {
    let mut byte_edits = Vec::new();
    for edit in edits {
        let n = lines.len();
        match edit {
            FileEdit::Drop(i) if n > 0 => {
                lines.remove(i % n);
            }
            FileEdit::Duplicate(i) if n > 0 => lines.insert(i % n, lines[i % n].clone()),
            FileEdit::Swap(a, b) if n > 0 => lines.swap(a % n, b % n),
            FileEdit::Number(i, w, text) if n > 0 => {
                let line = &mut lines[i % n];
                let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
                let w = w % words.len();
                words[w] = text.clone();
                *line = words.join(" ");
            }
            FileEdit::Byte(at, b, how) => byte_edits.push((*at, *b, *how)),
            _ => {}
        }
    }
    let mut bytes = lines.join("\n").into_bytes();
    bytes.push(b'\n');
    for edit in byte_edits {
        edit_line(&mut bytes, edit);
    }
    bytes
}

/// The line a file parser names in `reason` (`line N: …`, or `… line N: …`).
fn named_line(reason: &str) -> Option<usize> {
    let (_, rest) = reason.split_once("line ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].starts_with(':').then_some(())?;
    digits.parse().ok()
}

/// The first `n` lines of `text` (each with its line end).
fn first_lines(text: &str, n: usize) -> String {
    text.split_inclusive('\n').take(n).collect()
}

/// A cluster file either parses, or is refused naming the line at fault: the file
/// cut before that line parses, and cut after it does not.
fn check_cluster(bytes: &[u8]) -> Result<&'static str, TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    let Err(error) = ClusterFile::parse(&text) else {
        return Ok("parsed");
    };
    let reason = format!("{error:#}");
    prop_assert!(!reason.contains('\n'), "{reason:?}");
    let line = named_line(&reason);
    prop_assert!(line.is_some(), "no line named in {reason:?}");
    let line = line.unwrap_or_default();
    prop_assert!(
        (1..=text.lines().count()).contains(&line),
        "line {line} of {} in {reason:?}",
        text.lines().count()
    );
    prop_assert!(
        ClusterFile::parse(&first_lines(&text, line - 1)).is_ok(),
        "the lines before line {line} parse"
    );
    prop_assert!(
        ClusterFile::parse(&first_lines(&text, line)).is_err(),
        "line {line} is refused"
    );
    Ok("refused at its line")
}

/// A topology file either makes a layout, or is refused naming the line at fault
/// (a line that says something), or is refused as a whole (too small, money past a
/// u64, not strongly connected) for a file whose lines are each right.
fn check_topology(bytes: &[u8]) -> Result<&'static str, TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    match Layout::parse("t.txt", &text) {
        Ok(layout) => {
            prop_assert!(layout.balances.len() >= 2);
            Ok("parsed")
        }
        Err(LayoutError::Line { file, line, reason }) => {
            prop_assert_eq!(file, "t.txt");
            prop_assert!(!reason.contains('\n'), "{reason:?}");
            let lines: Vec<&str> = text.lines().collect();
            prop_assert!(
                (1..=lines.len()).contains(&line),
                "line {line} of {}: {reason}",
                lines.len()
            );
            let content = lines[line - 1].split('#').next().unwrap_or_default();
            prop_assert!(
                !content.trim().is_empty(),
                "line {line} says nothing: {:?} ({reason})",
                lines[line - 1]
            );
            Ok("refused at its line")
        }
        Err(LayoutError::Refused { what, reason }) => {
            prop_assert_eq!(what, "topology t.txt");
            prop_assert!(!reason.contains('\n'), "{reason:?}");
            Ok("refused as a whole")
        }
        Err(other @ LayoutError::Unreadable { .. }) => {
            Err(TestCaseError::fail(format!("parsing read a file: {other}")))
        }
    }
}

#[test]
fn arbitrary_cluster_files_parse_or_name_the_line_at_fault() {
    let strategy = prop_oneof![vec(any::<u8>(), 0..256), tokens(CLUSTER_TOKENS, 48)];
    fuzz("arbitrary cluster files", 3000, strategy, |bytes| {
        check_cluster(&bytes)
    });
}

#[test]
fn mutated_cluster_files_parse_or_name_the_line_at_fault() {
    let strategy = (vec(cluster_line(), 0..12), vec(file_edit(), 0..5));
    fuzz("mutated cluster files", 3000, strategy, |(lines, edits)| {
        check_cluster(&edited_file(lines, &edits))
    });
}

#[test]
fn arbitrary_topology_files_parse_or_name_the_line_at_fault() {
    let strategy = prop_oneof![vec(any::<u8>(), 0..256), tokens(TOPOLOGY_TOKENS, 48)];
    fuzz("arbitrary topology files", 3000, strategy, |bytes| {
        check_topology(&bytes)
    });
}

#[test]
fn mutated_topology_files_parse_or_name_the_line_at_fault() {
    let strategy = (topology_file(), vec(file_edit(), 0..5));
    fuzz(
        "mutated topology files",
        3000,
        strategy,
        |(lines, edits)| check_topology(&edited_file(lines, &edits)),
    );
}
