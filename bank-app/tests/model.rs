//! Generated scripts whose output no random choice can change, run through `master`
//! and compared byte for byte with a plain model of the specification
//! (`support/model.rs`).
//!
//! The generator keeps a model alongside the script it writes, so it knows the
//! channels' contents and writes only lines whose output is fixed: `Receive TO FROM`,
//! `Receive TO` when only one channel into TO holds anything, and `ReceiveAll` only
//! with no snapshot open (no marker anywhere, nothing recorded, so the order it takes
//! messages in changes nothing that is printed).

mod support;

use support::model::{Bank, FLAWS, Flaw, Outcome};
use support::{ID_POOL, TRANSPORTS, TestRng, run_script};

/// How many scripts, and how long they are.
const SCRIPTS: u64 = 60;
const MIN_LINES: u64 = 50;
const MAX_LINES: u64 = 400;

/// The script generator's own seed; each script's is derived from it.
const GENERATOR_SEED: u64 = 0x00C0_FFEE_BA4C_0001;

/// Writes a script, feeding every line to a model as it goes.
struct Writer {
    rng: TestRng,
    bank: Bank,
    text: Vec<u8>,
    lines: u64,
    crlf: bool,
    /// Whether this script also gets lines that are rejected.
    with_rejections: bool,
    unused_ids: Vec<u32>,
}

impl Writer {
    fn new(case: u64) -> Self {
        let mut rng = TestRng::new(GENERATOR_SEED ^ case.wrapping_mul(0x9E37_79B9));
        let mut unused_ids = ID_POOL.to_vec();
        rng.shuffle(&mut unused_ids);
        Writer {
            crlf: rng.percent(20),
            with_rejections: rng.percent(50),
            rng,
            bank: Bank::new(0, Flaw::None),
            text: Vec::new(),
            lines: 0,
            unused_ids,
        }
    }

    /// A number as a script may write it: now and then with leading zeros.
    fn num(&mut self, n: u64) -> String {
        if self.rng.percent(5) {
            format!("{}{n}", "0".repeat(1 + self.rng.below(3) as usize))
        } else {
            n.to_string()
        }
    }

    /// Writes one line from its words, with varied spacing and line ends.
    fn emit(&mut self, words: &[String]) {
        let mut line = String::new();
        if self.rng.percent(4) {
            let lead = *self.rng.pick(&[" ", "\t", "  \t"]);
            line.push_str(lead);
        }
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                let gap = if self.rng.percent(90) {
                    " "
                } else {
                    *self.rng.pick(&["  ", "\t", " \t ", "\t\t"])
                };
                line.push_str(gap);
            }
            line.push_str(word);
        }
        if self.rng.percent(4) {
            let trail = *self.rng.pick(&[" ", "\t", " \t"]);
            line.push_str(trail);
        }
        let crlf = self.crlf != self.rng.percent(5);
        self.raw(line.as_bytes(), crlf);
    }

    fn raw(&mut self, line: &[u8], crlf: bool) {
        let mut bytes = line.to_vec();
        if crlf {
            bytes.push(b'\r');
        }
        self.bank.line(&bytes);
        bytes.push(b'\n');
        self.text.extend_from_slice(&bytes);
        self.lines += 1;
    }

    fn cmd(&mut self, name: &str, numbers: &[u64]) {
        let mut words = vec![name.to_string()];
        for &n in numbers {
            let word = self.num(n);
            words.push(word);
        }
        self.emit(&words);
    }

    fn amount(&mut self) -> u64 {
        match self.rng.below(10) {
            0 => 0,
            1..=5 => self.rng.below(1000),
            6..=8 => self.rng.below(1_000_000_000),
            _ => self.rng.below(1_000_000_000_000_000_000),
        }
    }

    fn create_node(&mut self) {
        let Some(id) = self.unused_ids.pop() else {
            return;
        };
        let amount = self.amount();
        self.cmd("CreateNode", &[u64::from(id), amount]);
    }

    fn send(&mut self) {
        let nodes = self.bank.nodes();
        let from = *self.rng.pick(&nodes);
        let others: Vec<u32> = nodes.iter().copied().filter(|&n| n != from).collect();
        let to = *self.rng.pick(&others);
        let balance = self.bank.balance(from);
        let amount = match self.rng.below(10) {
            // More than the balance: ERR_SEND.
            0 if balance < u64::MAX => {
                balance + 1 + self.rng.below(1000).min(u64::MAX - balance - 1)
            }
            1 => 0,
            2 => balance,
            _ => self.rng.up_to(balance / 2),
        };
        self.cmd("Send", &[u64::from(from), u64::from(to), amount]);
    }

    fn receive_from(&mut self, channels: &[(u32, u32)]) {
        let (from, to) = *self.rng.pick(channels);
        self.cmd("Receive", &[u64::from(to), u64::from(from)]);
    }

    /// `Receive TO` where only one channel into TO holds anything.
    fn receive_single(&mut self) -> bool {
        let lone: Vec<u32> = self
            .bank
            .nodes()
            .into_iter()
            .filter(|&n| self.bank.incoming_busy(n).len() == 1)
            .collect();
        if lone.is_empty() {
            return false;
        }
        let to = *self.rng.pick(&lone);
        self.cmd("Receive", &[u64::from(to)]);
        true
    }

    fn step(&mut self) {
        let roll = self.rng.below(100);
        if self.with_rejections && roll < 3 {
            self.rejected_line();
            return;
        }
        if roll < 5 {
            self.comment_or_blank();
            return;
        }
        if self.bank.snapshot_open() {
            self.step_open(roll);
        } else {
            self.step_closed(roll);
        }
    }

    fn step_open(&mut self, roll: u64) {
        let markers = self.bank.channels_with_marker();
        if markers.is_empty() && self.rng.percent(60) {
            self.cmd("CollectState", &[]);
            if self.rng.percent(60) {
                self.cmd("PrintSnapshot", &[]);
            }
            return;
        }
        let busy = self.bank.busy_channels();
        match roll {
            _ if roll < 50 && !markers.is_empty() => self.receive_from(&markers),
            _ if roll < 70 && !busy.is_empty() => self.receive_from(&busy),
            _ if roll < 74 && self.bank.collected() => self.cmd("PrintSnapshot", &[]),
            _ if roll < 77 && self.receive_single() => {}
            _ => self.send(),
        }
    }

    fn step_closed(&mut self, roll: u64) {
        let busy = self.bank.busy_channels();
        match roll {
            _ if roll < 40 => self.send(),
            _ if roll < 65 && !busy.is_empty() => self.receive_from(&busy),
            _ if roll < 72 && self.receive_single() => {}
            _ if roll < 75 => self.cmd("ReceiveAll", &[]),
            _ if roll < 86 => {
                let nodes = self.bank.nodes();
                let id = *self.rng.pick(&nodes);
                self.cmd("BeginSnapshot", &[u64::from(id)]);
            }
            _ if roll < 90 && self.bank.collected() => self.cmd("PrintSnapshot", &[]),
            _ if roll < 92 && self.bank.nodes().len() < 12 => self.create_node(),
            _ => self.send(),
        }
    }

    fn comment_or_blank(&mut self) {
        let line: &[u8] = match self.rng.below(4) {
            0 => b"",
            1 => b" \t ",
            2 => b"# a comment: Send 1 2 3",
            _ => b"\t# indented comment",
        };
        let crlf = self.crlf;
        self.raw(line, crlf);
    }

    /// A line the specification rejects (the model decides; most of these are).
    fn rejected_line(&mut self) {
        let nodes = self.bank.nodes();
        let some = u64::from(*self.rng.pick(&nodes));
        let unknown = u64::from(*self.rng.pick(&self.unused_ids.clone()).min(&u32::MAX));
        match self.rng.below(12) {
            0 => {
                let empty = self.bank.empty_channels();
                if !empty.is_empty() {
                    self.receive_from(&empty);
                }
            }
            1 => self.cmd("Send", &[some, some, 1]),
            2 => self.cmd("Receive", &[some, unknown]),
            3 => self.cmd("BeginSnapshot", &[unknown]),
            4 => self.cmd("CreateNode", &[some, 5]),
            5 => {
                let garbage = *self.rng.pick(&[
                    "send 1 2 3",
                    "Send 1 2",
                    "Receive",
                    "Send 1 2 -4",
                    "Hello",
                    "Send 0 1 3 # pay",
                    "CreateNode 4294967296 1",
                    "Send 0 1 18446744073709551616",
                    "KillAll please",
                    "ReceiveAll 3",
                    "CollectState#",
                ]);
                self.emit(&[garbage.to_string()]);
            }
            6 => self.cmd("CollectState", &[]),
            7 => self.cmd("BeginSnapshot", &[some]),
            8 => self.cmd("CreateNode", &[unknown, 1]),
            9 => self.cmd("CreateNode", &[unknown, u64::MAX]),
            10 => self.cmd("StartMaster", &[]),
            _ => {
                let idle: Vec<u64> = nodes
                    .iter()
                    .filter(|&&n| self.bank.incoming_busy(n).is_empty())
                    .map(|&n| u64::from(n))
                    .collect();
                if !idle.is_empty() {
                    let to = *self.rng.pick(&idle);
                    self.cmd("Receive", &[to]);
                }
            }
        }
    }

    /// Takes every marker and closes the snapshot, if one is open.
    fn close_snapshot(&mut self) {
        while self.bank.snapshot_open() {
            let markers = self.bank.channels_with_marker();
            if markers.is_empty() {
                self.cmd("CollectState", &[]);
            } else {
                self.receive_from(&markers);
            }
        }
    }
}

/// Script number `case`, the seed to run it with, and what the writer's model saw.
fn generate(case: u64) -> (Vec<u8>, u64, Outcome) {
    let mut w = Writer::new(case);
    let target = MIN_LINES + w.rng.below(MAX_LINES - MIN_LINES + 1);
    if w.with_rejections && w.rng.percent(30) {
        // Before StartMaster: rejected, and must not start anything.
        w.cmd("PrintSnapshot", &[]);
    }
    if w.rng.percent(50) {
        w.raw(b"# generated bank script", false);
    }
    w.cmd("StartMaster", &[]);
    // Mostly small banks, so that a run holds several snapshots; up to 12 nodes.
    let nodes = 2 + if w.rng.percent(40) {
        w.rng.below(11)
    } else {
        w.rng.below(4)
    };
    for _ in 0..nodes {
        w.create_node();
    }
    while w.lines < target {
        w.step();
    }
    w.close_snapshot();
    w.cmd("PrintSnapshot", &[]);
    match w.rng.below(4) {
        0 => {}
        1 => w.cmd("KillAll", &[]),
        2 => {
            w.cmd("KillAll", &[]);
            // Never read.
            w.text
                .extend_from_slice(b"Send 1 2\nnot a command\n\xff\xfe\n");
        }
        _ => {
            w.cmd("KillAll", &[]);
            w.text.pop();
        }
    }
    if w.rng.percent(25) && w.text.last() == Some(&b'\n') {
        w.text.pop();
    }
    let seed = w.rng.next_u64();
    let seen = w.bank.outcome();
    (w.text, seed, seen)
}

fn script_text(script: &[u8]) -> String {
    String::from_utf8_lossy(script).into_owned()
}

fn expect(script: &[u8], seed: u64) -> Outcome {
    Bank::run(script, seed, Flaw::None)
}

#[test]
fn generated_scripts_are_what_they_claim() {
    let mut total_lines = 0;
    let mut rejecting = 0;
    let mut snapshots = 0;
    let mut in_transit = 0;
    for case in 0..SCRIPTS {
        let (script, seed, seen) = generate(case);
        let outcome = expect(&script, seed);
        // Re-reading the bytes gives what the writer meant: the line ends, spacing and
        // what follows KillAll change nothing.
        assert_eq!(outcome, seen, "case {case}");
        // No random choice matters: other seeds give the same output.
        for other in [0, 1, u64::MAX] {
            assert_eq!(
                expect(&script, other),
                outcome,
                "case {case}: output depends on the seed\n{}",
                script_text(&script)
            );
        }
        let lines = script.split(|&b| b == b'\n').count() as u64;
        assert!(
            // Closing the last snapshot may take a marker from every channel.
            (MIN_LINES..=MAX_LINES + 200).contains(&lines),
            "case {case}: {lines} lines"
        );
        total_lines += lines;
        rejecting += u64::from(!outcome.rejected.is_empty());
        let blocks = support::parse_blocks(&String::from_utf8_lossy(&outcome.stdout));
        assert!(!blocks.is_empty(), "case {case}: prints no snapshot");
        snapshots += blocks.len();
        in_transit += blocks
            .iter()
            .flat_map(|b| &b.channels)
            .filter(|&&(_, _, money)| money > 0)
            .count();
    }
    assert!(
        (SCRIPTS / 4..SCRIPTS).contains(&rejecting),
        "{rejecting} scripts reject lines"
    );
    assert!(
        snapshots as u64 >= 2 * SCRIPTS,
        "only {snapshots} snapshots printed"
    );
    assert!(total_lines >= SCRIPTS * MIN_LINES);
    // Snapshots catch money in transit on many channels.
    assert!(
        in_transit as u64 >= 10 * SCRIPTS,
        "only {in_transit} channels with money"
    );
}

#[test]
fn master_prints_what_the_model_prints() {
    for &transport in TRANSPORTS {
        for case in 0..SCRIPTS {
            let (script, seed, _) = generate(case);
            let expected = expect(&script, seed);
            let run = run_script(transport, Some(seed), &script);
            let context = || {
                format!(
                    "case {case} on {transport}, script:\n{}",
                    script_text(&script)
                )
            };
            assert!(
                run.stdout == expected.stdout,
                "{}\n--- expected\n{}--- actual\n{}--- stderr\n{}",
                context(),
                String::from_utf8_lossy(&expected.stdout),
                run.out(),
                run.err()
            );
            assert_eq!(
                run.code,
                Some(expected.code),
                "{}\n{}",
                context(),
                run.err()
            );
            assert_eq!(run.rejected_lines(), expected.rejected, "{}", context());
        }
    }
}

#[test]
fn the_comparison_catches_a_flawed_bank() {
    // `master_prints_what_the_model_prints` compares master with the model: a master
    // that made any of these mistakes would differ from it on some generated script.
    for flaw in FLAWS {
        let caught = (0..SCRIPTS).filter(|&case| {
            let (script, seed, _) = generate(case);
            Bank::run(&script, seed, flaw).stdout != expect(&script, seed).stdout
        });
        assert!(
            caught.count() >= 3,
            "{flaw:?} is caught by fewer than 3 scripts"
        );
    }
}

#[test]
fn a_hand_checked_script_matches_the_model() {
    // The model itself, on a case worked out by hand: node 8 records 30 in transit on
    // (15 -> 8); node 15 took the 40 before its marker, so (8 -> 15) holds nothing.
    let script = b"StartMaster\nCreateNode 15 100\nCreateNode 8 60\nSend 8 15 40\n\
BeginSnapshot 8\nSend 15 8 30\nSend 8 15 5\nReceive 15 8\nReceive 8 15\nReceive 15 8\n\
Receive 15 8\nReceive 8 15\nCollectState\nPrintSnapshot\n";
    let expected = "Started by Node 8\n8 Transfer 40\n15 Transfer 30\n8 SnapshotToken -1\n\
8 Transfer 5\n15 SnapshotToken -1\n---Node states\nnode 8 = 20\nnode 15 = 110\n\
---Channel states\nchannel (8 -> 15) = 0\nchannel (15 -> 8) = 30\n";
    let outcome = expect(script, 9);
    assert_eq!(script_text(&outcome.stdout), expected);
    assert_eq!(outcome.code, 0);
    for flaw in FLAWS {
        assert_ne!(
            Bank::run(script, 9, flaw).stdout,
            outcome.stdout,
            "{flaw:?}"
        );
    }
}
