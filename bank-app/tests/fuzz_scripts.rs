//! Mutated scripts through a `Master` on mem, in this process: lines dropped,
//! duplicated and swapped, numbers made 0, huge, `u64::MAX`, too large or
//! zero-padded, garbage bytes inserted, the script cut short.
//!
//! Whatever the script, the master must end the run itself (no hang, no failure of
//! the system: exit status 0 or 1), report each refused line as `line N: REASON`
//! and nothing else on stderr, refuse every line that does not parse, and print only
//! snapshots that conserve money: each accounts, node by node and channel by channel,
//! for exactly the money that the accepted `CreateNode` lines had put in the bank
//! when it was collected. Each run is also compared, byte for byte, with the plain
//! model of the specification (`support/model.rs`) under the same seed.
//!
//! Seeded: the same scripts every run. `PROPTEST_CASES` changes how many; the
//! `#[ignore]`d test runs fifty times as many.

mod support;

use bank_app::script::{Command, parse_line};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, RngSeed, TestCaseError, TestRunner};
use std::cell::RefCell;
use std::time::Instant;
use support::model::{Bank, Flaw};
use support::{Run, parse_blocks, run_in_process};

/// The node ids scripts use: a few small ones, and both ends of the range.
const IDS: [u32; 7] = [1, 2, 3, 7, 42, 0, u32::MAX];

/// One step of a script before mutation.
#[derive(Debug, Clone)]
enum Step {
    Create(usize, u64),
    Send(usize, usize, u64),
    Receive(usize, Option<usize>),
    ReceiveAll,
    /// `BeginSnapshot`, the steps, then `ReceiveAll`, `CollectState` and, if asked,
    /// `PrintSnapshot`.
    Snapshot(usize, Vec<Step>, bool),
    Print,
    Comment,
    KillAll,
}

fn id() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..3usize, 1 => 0..IDS.len()]
}

fn opening_balance() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0..1000u64,
        2 => 0..1_000_000_000_000u64,
        1 => Just(u64::MAX),
        1 => (u64::MAX / 2)..=u64::MAX,
    ]
}

fn transfer() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..400u64, 1 => Just(0), 1 => any::<u64>()]
}

/// Two different nodes of the three the scripts open with, mostly; any two else.
fn pair() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        6 => (0..3usize, 1..3usize).prop_map(|(a, k)| (a, (a + k) % 3)),
        1 => (id(), id()),
    ]
}

/// A step that moves money or reads it, as a snapshot may hold inside.
fn inner_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (pair(), transfer()).prop_map(|((a, b), n)| Step::Send(a, b, n)),
        3 => (pair(), any::<bool>())
            .prop_map(|((to, from), named)| Step::Receive(to, named.then_some(from))),
        1 => Just(Step::ReceiveAll),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (id(), opening_balance()).prop_map(|(i, n)| Step::Create(i, n)),
        6 => inner_step(),
        3 => (id(), vec(inner_step(), 0..6), any::<bool>())
            .prop_map(|(i, steps, print)| Step::Snapshot(i, steps, print)),
        1 => Just(Step::Print),
        1 => Just(Step::Comment),
        1 => Just(Step::KillAll),
    ]
}

fn render(step: &Step, lines: &mut Vec<String>) {
    match step {
        Step::Create(i, n) => lines.push(format!("CreateNode {} {n}", IDS[*i])),
        Step::Send(a, b, n) => lines.push(format!("Send {} {} {n}", IDS[*a], IDS[*b])),
        Step::Receive(to, None) => lines.push(format!("Receive {}", IDS[*to])),
        Step::Receive(to, Some(from)) => {
            lines.push(format!("Receive {} {}", IDS[*to], IDS[*from]));
        }
        Step::ReceiveAll => lines.push("ReceiveAll".to_string()),
        Step::Snapshot(i, steps, print) => {
            lines.push(format!("BeginSnapshot {}", IDS[*i]));
            for step in steps {
                render(step, lines);
            }
            lines.push("ReceiveAll".to_string());
            lines.push("CollectState".to_string());
            if *print {
                lines.push("PrintSnapshot".to_string());
            }
        }
        Step::Print => lines.push("PrintSnapshot".to_string()),
        Step::Comment => lines.push("# a comment".to_string()),
        Step::KillAll => lines.push("KillAll".to_string()),
    }
}

/// Numbers as a hostile script might write them.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("0000000000000000000000000000000000000000000000001".to_string()),
        Just(u32::MAX.to_string()),
        Just((u64::from(u32::MAX) + 1).to_string()),
        Just(u64::MAX.to_string()),
        Just((u64::MAX - 1).to_string()),
        Just("18446744073709551616".to_string()),
        Just("340282366920938463463374607431768211456".to_string()),
        Just("-0".to_string()),
        (0..5usize, 0..1000u64).prop_map(|(zeros, n)| format!("{}{n}", "0".repeat(zeros))),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
}

/// One change to a script's lines, or to its bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Drop(usize),
    Duplicate(usize),
    Swap(usize, usize),
    /// Replaces a word of a line (not its first) with a number.
    Number(usize, usize, String),
    /// Inserts bytes into a line: any bytes, a line end among them perhaps.
    Garbage(usize, usize, Vec<u8>),
    /// Ends a line with `\r`.
    CarriageReturn(usize),
    /// Cuts the whole script at a byte.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => any::<usize>().prop_map(Mutation::Drop),
        2 => any::<usize>().prop_map(Mutation::Duplicate),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        4 => (any::<usize>(), any::<usize>(), number_text())
            .prop_map(|(l, w, text)| Mutation::Number(l, w, text)),
        2 => (any::<usize>(), any::<usize>(), prop_oneof![
                vec(any::<u8>(), 1..6),
                Just(b"\n".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                Just(" #".as_bytes().to_vec()),
                Just("\u{0}".as_bytes().to_vec()),
            ])
            .prop_map(|(l, at, bytes)| Mutation::Garbage(l, at, bytes)),
        1 => any::<usize>().prop_map(Mutation::CarriageReturn),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// A script: `StartMaster`, a few nodes, then the steps, with `mutations` made.
fn script(opening: &[Step], steps: &[Step], mutations: &[Mutation]) -> Vec<u8> {
    let mut lines = vec!["StartMaster".to_string()];
    for step in opening.iter().chain(steps) {
        render(step, &mut lines);
    }
    let mut lines: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    let mut cut = None;
    for mutation in mutations {
        let n = lines.len();
        if n == 0 {
            break;
        }
        match mutation {
            Mutation::Drop(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => lines.insert(i % n, lines[i % n].clone()),
            Mutation::Swap(a, b) => lines.swap(a % n, b % n),
            Mutation::Number(i, w, text) => {
                let line = &mut lines[i % n];
                let mut words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
                if words.len() > 1 {
                    let w = 1 + w % (words.len() - 1);
                    words[w] = text.as_bytes();
                    *line = words.join(&b' ');
                }
            }
            Mutation::Garbage(i, at, bytes) => {
                let line = &mut lines[i % n];
                let at = at % (line.len() + 1);
                line.splice(at..at, bytes.iter().copied());
            }
            Mutation::CarriageReturn(i) => lines[i % n].push(b'\r'),
            Mutation::Truncate(at) => cut = Some(*at),
        }
    }
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    if let Some(at) = cut {
        bytes.truncate(at % (bytes.len() + 1));
    }
    bytes
}

/// A script's bytes, shown as its lines (escaped) when a case fails.
#[derive(Clone)]
struct Script(Vec<u8>);

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "script of {} bytes:", self.0.len())?;
        for line in self.0.split_inclusive(|&b| b == b'\n') {
            writeln!(f, "    {}", line.escape_ascii())?;
        }
        Ok(())
    }
}

fn scripts() -> impl Strategy<Value = (Script, u64)> {
    (
        // Nodes 1, 2 and 3, and now and then another.
        (
            vec(opening_balance(), 3),
            vec((id(), opening_balance()), 0..2),
        )
            .prop_map(|(balances, more)| {
                let three = balances.into_iter().enumerate();
                three
                    .chain(more)
                    .map(|(i, n)| Step::Create(i, n))
                    .collect::<Vec<_>>()
            }),
        vec(step(), 0..32),
        vec(mutation(), 0..5),
        any::<u64>(),
    )
        .prop_map(|(opening, steps, mutations, seed)| {
            (Script(script(&opening, &steps, &mutations)), seed)
        })
}

/// What one run showed, for the figures.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    lines: usize,
    rejected: usize,
    snapshots: usize,
    /// Snapshots that caught money in transit.
    in_transit: usize,
}

/// The lines of `script` as the master numbers them: split at `\n`, the last one
/// counted only if it is not empty.
fn lines_of(script: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = script.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Checks a run of `script` against the rules in the module's documentation.
fn check(script: &[u8], seed: u64, run: &Run) -> Result<Figures, TestCaseError> {
    prop_assert!(
        matches!(run.code, Some(0 | 1)),
        "exit status {:?}\n--- stderr\n{}",
        run.code,
        run.err()
    );
    let rejected = run.rejected_lines();
    prop_assert_eq!(run.code == Some(1), !rejected.is_empty());
    prop_assert!(rejected.windows(2).all(|w| w[0] < w[1]), "{:?}", rejected);
    let lines = lines_of(script);
    // Walks the script as the master did: the money in the bank at each collect, and
    // what each printed snapshot must account for.
    let mut total: u128 = 0;
    let mut collected = None;
    let mut expected = Vec::new();
    let mut executed = 0;
    for (index, line) in lines.iter().enumerate() {
        let number = index as u64 + 1;
        executed = index + 1;
        let refused = rejected.binary_search(&number).is_ok();
        match parse_line(line) {
            Err(error) => {
                prop_assert!(refused, "line {number} ({error}) was not refused");
                continue;
            }
            _ if refused => continue,
            Ok(None) => {}
            Ok(Some(Command::CreateNode { amount, .. })) => total += u128::from(amount),
            Ok(Some(Command::CollectState)) => collected = Some(total),
            Ok(Some(Command::PrintSnapshot)) => {
                prop_assert!(
                    collected.is_some(),
                    "line {number}: printed before collecting"
                );
                expected.extend(collected);
            }
            Ok(Some(Command::KillAll)) => break,
            Ok(Some(_)) => {}
        }
    }
    prop_assert!(total <= u128::from(u64::MAX), "the bank holds {total}");
    prop_assert!(
        rejected.last().is_none_or(|&n| n as usize <= executed),
        "a line refused past the last one run: {:?}",
        rejected
    );
    let blocks = parse_blocks(&run.out());
    prop_assert_eq!(blocks.len(), expected.len(), "snapshots printed");
    let mut in_transit = 0;
    for (block, total) in blocks.iter().zip(&expected) {
        let total = u64::try_from(*total).unwrap_or(u64::MAX);
        if let Err(why) = block.check(total) {
            return Err(TestCaseError::fail(format!("{why}\n{block:?}")));
        }
        in_transit += usize::from(block.channels.iter().any(|&(_, _, n)| n > 0));
    }
    let model = Bank::run(script, seed, Flaw::None);
    prop_assert_eq!(&model.rejected, &rejected, "refused lines, by the model");
    prop_assert!(
        model.stdout == run.stdout,
        "stdout differs from the model's\n--- model\n{}--- master\n{}",
        String::from_utf8_lossy(&model.stdout),
        run.out()
    );
    Ok(Figures {
        lines: lines.len(),
        rejected: rejected.len(),
        snapshots: blocks.len(),
        in_transit,
    })
}

/// Runs `cases` mutated scripts (seeded) and prints the figures.
fn fuzz_scripts(cases: u32, seed: u64) {
    let mut config = ProptestConfig {
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        // Each failing script is shrunk: a few hundred runs at most.
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let mut runner = TestRunner::new(config);
    let sums = RefCell::new(Figures::default());
    let started = Instant::now();
    let result = runner.run(&scripts(), |(Script(script), seed)| {
        let run = run_in_process(Some(seed), &script);
        let figures = check(&script, seed, &run)?;
        let mut sums = sums.borrow_mut();
        sums.lines += figures.lines;
        sums.rejected += figures.rejected;
        sums.snapshots += figures.snapshots;
        sums.in_transit += figures.in_transit;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let sums = sums.into_inner();
    println!(
        "{} scripts in {:.2?}: {} lines, {} refused, {} snapshots printed and checked, \
         {} of them with money in transit",
        runner.config().cases,
        started.elapsed(),
        sums.lines,
        sums.rejected,
        sums.snapshots,
        sums.in_transit
    );
    assert!(sums.snapshots > 0 && sums.in_transit > 0 && sums.rejected > 0);
}

#[test]
fn mutated_scripts_conserve_money_and_match_the_model() {
    fuzz_scripts(2000, 0xF022_5C41_0000_0001);
}

/// Fifty times as many, from another seed: `cargo test -p bank-app --release --test
/// fuzz_scripts -- --ignored`.
#[test]
#[ignore = "a longer run: fifty times the default one, for the release profile"]
fn many_more_mutated_scripts() {
    fuzz_scripts(100_000, 0xF022_5C41_0000_0002);
}
