//! A plain sequential model of the bank's specification (`bank-app/README.md`):
//! balances, FIFO channels of transfers and markers, each node's recording state, the
//! collected snapshot and the print format, and the checks that reject a line.
//!
//! It draws its random choices with the crate's own [`Chooser`], listing candidates in
//! numeric `(source, destination)` order as the specification says, so that for a
//! seeded run it predicts `master`'s stdout exactly, random choices included.

use bank_app::choice::Chooser;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// A deliberate mistake, to show that comparing with the model catches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// The model as the specification says.
    None,
    /// Ids ordered as text (`15` before `7`).
    TextOrder,
    /// Nothing recorded in transit.
    NoChannelRecording,
    /// Every channel recorded from `BeginSnapshot` on, also at nodes that have not
    /// recorded their state yet.
    RecordFromBegin,
    /// Node states taken at `CollectState` instead of when each node recorded.
    StateAtCollect,
}

/// Every flaw, for tests that show each is caught.
pub const FLAWS: [Flaw; 4] = [
    Flaw::TextOrder,
    Flaw::NoChannelRecording,
    Flaw::RecordFromBegin,
    Flaw::StateAtCollect,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Transfer(u64),
    Marker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    StartMaster,
    CreateNode(u32, u64),
    Send(u32, u32, u64),
    Receive(u32, Option<u32>),
    ReceiveAll,
    Begin(u32),
    Collect,
    Print,
    KillAll,
}

/// What a whole script does, by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The exact stdout.
    pub stdout: Vec<u8>,
    /// The numbers of the rejected lines, in order.
    pub rejected: Vec<u64>,
    /// The exit status.
    pub code: i32,
}

/// The bank, as the specification describes it.
#[derive(Debug, Clone)]
pub struct Bank {
    flaw: Flaw,
    chooser: Chooser,
    started: bool,
    stopped: bool,
    balances: BTreeMap<u32, u64>,
    total: u64,
    /// Every channel `(from, to)` between existing nodes.
    channels: BTreeMap<(u32, u32), VecDeque<Msg>>,
    open: bool,
    /// The states the nodes recorded for the open snapshot.
    recorded: BTreeMap<u32, u64>,
    /// Channels being recorded.
    recording: BTreeSet<(u32, u32)>,
    /// Money recorded in transit on each channel in the open snapshot.
    records: BTreeMap<(u32, u32), u64>,
    last: Option<String>,
    stdout: Vec<u8>,
    rejected: Vec<u64>,
    lines: u64,
}

impl Bank {
    /// A bank before `StartMaster`, whose random choices come from `seed`.
    pub fn new(seed: u64, flaw: Flaw) -> Self {
        Bank {
            flaw,
            chooser: Chooser::new(seed),
            started: false,
            stopped: false,
            balances: BTreeMap::new(),
            total: 0,
            channels: BTreeMap::new(),
            open: false,
            recorded: BTreeMap::new(),
            recording: BTreeSet::new(),
            records: BTreeMap::new(),
            last: None,
            stdout: Vec::new(),
            rejected: Vec::new(),
            lines: 0,
        }
    }

    /// Runs a whole script.
    pub fn run(script: &[u8], seed: u64, flaw: Flaw) -> Outcome {
        let mut bank = Bank::new(seed, flaw);
        bank.feed(script);
        bank.outcome()
    }

    /// Feeds input bytes made of whole lines (the last may lack its `\n`).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() && !self.stopped {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            self.line(line);
            rest = next;
        }
    }

    /// What the run has done so far.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            stdout: self.stdout.clone(),
            rejected: self.rejected.clone(),
            code: if self.rejected.is_empty() { 0 } else { 1 },
        }
    }

    /// Handles one line (without its `\n`). Returns false if it was rejected.
    pub fn line(&mut self, line: &[u8]) -> bool {
        if self.stopped {
            return true;
        }
        self.lines += 1;
        let accepted = match parse(line) {
            Err(()) => false,
            Ok(None) => true,
            Ok(Some(cmd)) => self.execute(cmd).is_ok(),
        };
        if !accepted {
            self.rejected.push(self.lines);
        }
        accepted
    }

    /// Whether `KillAll` was accepted.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether `StartMaster` was accepted.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The nodes, ascending.
    pub fn nodes(&self) -> Vec<u32> {
        self.balances.keys().copied().collect()
    }

    /// A node's balance.
    pub fn balance(&self, node: u32) -> u64 {
        self.balances[&node]
    }

    /// All the money created.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether a snapshot is open.
    pub fn snapshot_open(&self) -> bool {
        self.open
    }

    /// Whether a snapshot was collected.
    pub fn collected(&self) -> bool {
        self.last.is_some()
    }

    /// The non-empty channels, ascending.
    pub fn busy_channels(&self) -> Vec<(u32, u32)> {
        self.channels
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&k, _)| k)
            .collect()
    }

    /// The empty channels, ascending.
    pub fn empty_channels(&self) -> Vec<(u32, u32)> {
        self.channels
            .iter()
            .filter(|(_, q)| q.is_empty())
            .map(|(&k, _)| k)
            .collect()
    }

    /// The channels holding a marker, ascending.
    pub fn channels_with_marker(&self) -> Vec<(u32, u32)> {
        self.channels
            .iter()
            .filter(|(_, q)| q.contains(&Msg::Marker))
            .map(|(&k, _)| k)
            .collect()
    }

    /// How many messages are in the channels into `node`, by sender.
    pub fn incoming_busy(&self, node: u32) -> Vec<u32> {
        self.busy_channels()
            .into_iter()
            .filter(|&(_, to)| to == node)
            .map(|(from, _)| from)
            .collect()
    }

    fn execute(&mut self, cmd: Cmd) -> Result<(), ()> {
        if !self.started {
            return match cmd {
                Cmd::StartMaster => {
                    self.started = true;
                    Ok(())
                }
                _ => Err(()),
            };
        }
        match cmd {
            Cmd::StartMaster => Err(()),
            Cmd::CreateNode(id, amount) => self.create(id, amount),
            Cmd::Send(from, to, amount) => {
                self.channel(from, to)?;
                let balance = self.balances.get_mut(&from).ok_or(())?;
                if amount > *balance {
                    self.print("ERR_SEND\n");
                } else {
                    *balance -= amount;
                    self.push(from, to, Msg::Transfer(amount));
                }
                Ok(())
            }
            Cmd::Receive(to, Some(from)) => {
                self.channel(from, to)?;
                if self.channels[&(from, to)].is_empty() {
                    return Err(());
                }
                self.take(from, to, true);
                Ok(())
            }
            Cmd::Receive(to, None) => {
                self.node(to)?;
                let candidates = self.incoming_busy(to);
                if candidates.is_empty() {
                    return Err(());
                }
                let from = candidates[self.chooser.pick(candidates.len())];
                self.take(from, to, true);
                Ok(())
            }
            Cmd::ReceiveAll => {
                loop {
                    let candidates = self.busy_channels();
                    if candidates.is_empty() {
                        break;
                    }
                    let (from, to) = candidates[self.chooser.pick(candidates.len())];
                    self.take(from, to, false);
                }
                Ok(())
            }
            Cmd::Begin(id) => {
                self.node(id)?;
                if self.open {
                    return Err(());
                }
                self.open = true;
                if self.flaw == Flaw::RecordFromBegin {
                    self.recording = self.channels.keys().copied().collect();
                }
                self.print(&format!("Started by Node {id}\n"));
                self.record(id);
                Ok(())
            }
            Cmd::Collect => {
                if !self.open || !self.channels_with_marker().is_empty() {
                    return Err(());
                }
                self.last = Some(self.block());
                self.open = false;
                self.recorded.clear();
                self.recording.clear();
                self.records.clear();
                Ok(())
            }
            Cmd::Print => {
                let block = self.last.clone().ok_or(())?;
                self.print(&block);
                Ok(())
            }
            Cmd::KillAll => {
                self.stopped = true;
                Ok(())
            }
        }
    }

    fn create(&mut self, id: u32, amount: u64) -> Result<(), ()> {
        if self.balances.contains_key(&id) || self.open {
            return Err(());
        }
        self.total = self.total.checked_add(amount).ok_or(())?;
        for &other in self.balances.keys() {
            self.channels.insert((id, other), VecDeque::new());
            self.channels.insert((other, id), VecDeque::new());
        }
        self.balances.insert(id, amount);
        Ok(())
    }

    fn node(&self, id: u32) -> Result<(), ()> {
        if self.balances.contains_key(&id) {
            Ok(())
        } else {
            Err(())
        }
    }

    fn channel(&self, from: u32, to: u32) -> Result<(), ()> {
        self.node(from)?;
        self.node(to)?;
        if from == to { Err(()) } else { Ok(()) }
    }

    fn push(&mut self, from: u32, to: u32, msg: Msg) {
        self.channels
            .get_mut(&(from, to))
            .expect("a channel between existing nodes")
            .push_back(msg);
    }

    /// `node` records its state, starts recording its incoming channels and sends a
    /// marker on every outgoing channel.
    fn record(&mut self, node: u32) {
        self.recorded.insert(node, self.balances[&node]);
        let incoming: Vec<(u32, u32)> = self
            .channels
            .keys()
            .copied()
            .filter(|&(_, to)| to == node)
            .collect();
        for channel in incoming {
            self.recording.insert(channel);
            self.records.entry(channel).or_insert(0);
        }
        let outgoing: Vec<(u32, u32)> = self
            .channels
            .keys()
            .copied()
            .filter(|&(from, _)| from == node)
            .collect();
        for (from, to) in outgoing {
            self.push(from, to, Msg::Marker);
        }
    }

    fn take(&mut self, from: u32, to: u32, print: bool) {
        let msg = self
            .channels
            .get_mut(&(from, to))
            .and_then(VecDeque::pop_front)
            .expect("a message in the channel");
        match msg {
            Msg::Transfer(amount) => {
                *self.balances.get_mut(&to).expect("an existing node") += amount;
                if self.recording.contains(&(from, to)) {
                    *self.records.entry((from, to)).or_insert(0) += amount;
                }
                if print {
                    self.print(&format!("{from} Transfer {amount}\n"));
                }
            }
            Msg::Marker => {
                if !self.recorded.contains_key(&to) {
                    self.record(to);
                }
                self.recording.remove(&(from, to));
                if print {
                    self.print(&format!("{from} SnapshotToken -1\n"));
                }
            }
        }
    }

    fn block(&self) -> String {
        let mut nodes: Vec<(u32, u64)> = self
            .recorded
            .iter()
            .map(|(&id, &state)| match self.flaw {
                Flaw::StateAtCollect => (id, self.balances[&id]),
                _ => (id, state),
            })
            .collect();
        let mut channels: Vec<(u32, u32, u64)> = self
            .channels
            .keys()
            .map(|&(from, to)| {
                let record = match self.flaw {
                    Flaw::NoChannelRecording => 0,
                    _ => self.records.get(&(from, to)).copied().unwrap_or(0),
                };
                (from, to, record)
            })
            .collect();
        if self.flaw == Flaw::TextOrder {
            nodes.sort_by_key(|&(id, _)| id.to_string());
            channels.sort_by_key(|&(from, to, _)| (from.to_string(), to.to_string()));
        }
        let mut block = String::from("---Node states\n");
        for (id, state) in nodes {
            block.push_str(&format!("node {id} = {state}\n"));
        }
        block.push_str("---Channel states\n");
        for (from, to, record) in channels {
            block.push_str(&format!("channel ({from} -> {to}) = {record}\n"));
        }
        block
    }

    fn print(&mut self, text: &str) {
        self.stdout.extend_from_slice(text.as_bytes());
    }
}

/// One line, by the rules of `bank-app/README.md`, "Reading the script": `Ok(None)`
/// for blank lines and comments, `Err` for a malformed line.
fn parse(line: &[u8]) -> Result<Option<Cmd>, ()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // A comment is skipped whatever its bytes.
    if line.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b'#') {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|_| ())?;
    let words: Vec<&str> = text.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let Some((&name, args)) = words.split_first() else {
        return Ok(None);
    };
    if name.starts_with('#') {
        return Ok(None);
    }
    let cmd = match (name, args) {
        ("StartMaster", []) => Cmd::StartMaster,
        ("CreateNode", [id, amount]) => Cmd::CreateNode(id_of(id)?, amount_of(amount)?),
        ("Send", [from, to, amount]) => Cmd::Send(id_of(from)?, id_of(to)?, amount_of(amount)?),
        ("Receive", [to]) => Cmd::Receive(id_of(to)?, None),
        ("Receive", [to, from]) => Cmd::Receive(id_of(to)?, Some(id_of(from)?)),
        ("ReceiveAll", []) => Cmd::ReceiveAll,
        ("BeginSnapshot", [id]) => Cmd::Begin(id_of(id)?),
        ("CollectState", []) => Cmd::Collect,
        ("PrintSnapshot", []) => Cmd::Print,
        ("KillAll", []) => Cmd::KillAll,
        _ => return Err(()),
    };
    Ok(Some(cmd))
}

fn decimal(text: &str) -> Result<u128, ()> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 20 {
        return Err(());
    }
    Ok(digits.parse::<u128>().unwrap_or(0))
}

fn id_of(text: &str) -> Result<u32, ()> {
    u32::try_from(decimal(text)?).map_err(|_| ())
}

fn amount_of(text: &str) -> Result<u64, ()> {
    u64::try_from(decimal(text)?).map_err(|_| ())
}
