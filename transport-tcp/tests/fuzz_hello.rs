//! The handshake that opens every connection, fuzzed through the public surface: raw
//! sockets send arbitrary and mutated hellos, proofs and first frames to a real
//! `TcpTransport`'s listener, and a fake server answers a real `connect` with
//! arbitrary and mutated challenges and welcomes.
//!
//! Each case must end in a bounded time (the endpoint closes the connection, or
//! admits it when every byte of the handshake was right), nothing may panic on any
//! thread (a panic hook counts them), the endpoint must go on exchanging frames with a
//! legitimate peer, and no single allocation, on any thread, may come near a length a
//! peer announced (a counting allocator of this test binary measures the largest).
//!
//! The cases come from a seeded ChaCha generator: the same cases every run.

mod common;

use common::{PATIENCE, config, node};
use hmac::{Hmac, KeyInit, Mac};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use snapshot_core::codec::encode_into;
use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport};

/// Keeps the largest single allocation (or reallocation) asked for, by any thread.
struct Counting;

static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter is an atomic,
// which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most a case may allocate at once. The handshake's own buffers are at most
/// 1 KiB (its bound on a message) and the reading side's chunk 64 KiB, against the
/// up to 4 GiB a length prefix can announce.
const ALLOCATION_BOUND: usize = 128 * 1024;

/// Runs `f` and returns what it returned with the largest single allocation made
/// meanwhile by any thread of the process. The tests of this binary take turns
/// ([`serial`]), so nothing else runs meanwhile but the endpoints' own threads.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.store(0, Ordering::Relaxed);
    let result = f();
    (result, PEAK.load(Ordering::Relaxed))
}

/// The tests of this binary run one at a time: the allocation figures are global.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    count_panics();
    TEST_THREAD.with(|test| test.set(true));
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread runs a test, whose panics fail that test by themselves.
    static TEST_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Counts every panic of the process outside the tests' own threads (a panicking
/// task of the endpoints' runtime would otherwise go unnoticed), and reports it as
/// usual.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !TEST_THREAD.with(Cell::get) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            report(info);
        }));
    });
}

fn assert_no_panic() {
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a thread of the endpoints panicked"
    );
}

/// How long an endpoint under fuzz gives a peer for its handshake, where cases leave
/// connections open for it to close.
const HELLO_TIMEOUT: Duration = Duration::from_millis(300);

/// How long, where the test's own client must complete handshakes on a busy machine.
const PATIENT_HELLO: Duration = Duration::from_secs(2);

fn fuzz_config(hello_timeout: Duration) -> TcpConfig {
    TcpConfig {
        hello_timeout,
        ..config()
    }
}

// What the handshake sends, as `transport-tcp/src/handshake.rs` defines it.

const MAGIC: [u8; 8] = *b"snap-tcp";
const VERSION: u16 = 1;
const DOMAIN: &[u8] = b"snapshot-rs transport-tcp v1\0";
const HANDSHAKE_MAX: u32 = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    version: u16,
    cluster: String,
    from: Endpoint,
    to: Endpoint,
    nonce: [u8; 32],
}

#[derive(Serialize)]
struct Challenge {
    nonce: [u8; 32],
    mac: [u8; 32],
}

#[derive(Serialize)]
struct Proof {
    mac: [u8; 32],
}

/// The MAC one side sends, `role` being `b"server"` or `b"client"`.
fn mac(
    role: &[u8],
    client: Endpoint,
    server: Endpoint,
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
) -> [u8; 32] {
    let shared = config();
    let mut mac = Hmac::<Sha256>::new_from_slice(&shared.key).unwrap();
    mac.update(DOMAIN);
    mac.update(role);
    let transcript = postcard::to_allocvec(&(
        shared.cluster.as_str(),
        client,
        server,
        client_nonce,
        server_nonce,
    ))
    .unwrap();
    mac.update(&transcript);
    mac.finalize().into_bytes().into()
}

/// `message` as one handshake frame.
fn framed<T: Serialize>(message: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_into(message, &mut bytes, HANDSHAKE_MAX as usize).unwrap();
    bytes
}

/// The seeded source of every case.
struct Gen(ChaCha8Rng);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    fn percent(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.0.fill_bytes(&mut bytes);
        bytes
    }

    /// Up to `max - 1` random bytes.
    fn junk(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max);
        self.bytes(len)
    }

    fn nonce(&mut self) -> [u8; 32] {
        let mut nonce = [0; 32];
        self.0.fill_bytes(&mut nonce);
        nonce
    }

    /// A length prefix a hostile peer might send.
    fn length(&mut self, honest: usize) -> u32 {
        let honest = honest as u32;
        match self.below(10) {
            0 => u32::MAX,
            1 => 0x8000_0000,
            2 => HANDSHAKE_MAX + 1,
            3 => HANDSHAKE_MAX,
            4 => 0,
            5 => MAGIC.len() as u32 - 1,
            6 => honest.wrapping_add(1),
            7 => honest.saturating_sub(1),
            8 => 16 * 1024 * 1024 + 1,
            _ => self.0.next_u32(),
        }
    }

    /// `bytes` with one to four edits: bytes changed, flipped, inserted or deleted,
    /// the leading length prefix replaced, or the end cut off.
    fn mutate(&mut self, bytes: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            let len = bytes.len();
            match self.below(6) {
                0 if len > 0 => {
                    let at = self.below(len);
                    bytes[at] = self.0.next_u32() as u8;
                }
                1 if len > 0 => {
                    let at = self.below(len);
                    bytes[at] ^= 1 << self.below(8);
                }
                2 => {
                    let at = self.below(len + 1);
                    let inserted = self.junk(8);
                    let inserted = if inserted.is_empty() {
                        vec![0]
                    } else {
                        inserted
                    };
                    bytes.splice(at..at, inserted);
                }
                3 if len > 0 => {
                    let at = self.below(len);
                    let end = (at + 1 + self.below(8)).min(len);
                    bytes.drain(at..end);
                }
                4 if len >= 4 => {
                    let length = self.length(len - 4);
                    bytes[..4].copy_from_slice(&length.to_le_bytes());
                }
                5 => bytes.truncate(self.below(len + 1)),
                _ => {}
            }
        }
    }
}

/// A raw connection, as a stranger holds it.
struct Raw(TcpStream);

impl Raw {
    fn connect(at: &str) -> Raw {
        let stream = TcpStream::connect(at).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw(stream)
    }

    /// Writes `bytes`; the other side may have closed already.
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.0.write_all(bytes);
    }

    /// Reads exactly `n` bytes, or `None` if the other side closes first or nothing
    /// comes within [`PATIENCE`].
    fn receive(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut bytes = vec![0; n];
        self.0.set_read_timeout(Some(PATIENCE)).unwrap();
        self.0.read_exact(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Stops writing: the other side sees the end of the stream.
    fn hang_up(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }

    /// Whether the other side welcomes this client (rather than close the
    /// connection, which it must do by its hello timeout otherwise).
    fn welcome(&mut self) -> bool {
        let mut got = Vec::new();
        let mut buffer = [0; 4];
        self.0.set_read_timeout(Some(PATIENCE)).unwrap();
        while got.len() < 4 {
            match self.0.read(&mut buffer[got.len()..]) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("neither welcomed nor closed: {e}"),
            }
        }
        match got[..] {
            [] => false,
            [0, 0, 0, 0] => true,
            _ => panic!("neither a welcome nor the end of the stream: {got:?}"),
        }
    }

    /// Stops writing if `hang_up` (the other side sees the end of the stream), then
    /// waits for the other side to close; returns the bytes it sent meanwhile. A
    /// connection still open past the endpoint's hello timeout has been admitted: it
    /// stops writing then. Fails if the other side keeps it open past [`PATIENCE`].
    fn finish(mut self, hang_up: bool) -> Vec<u8> {
        let started = Instant::now();
        let mut hung_up = hang_up;
        if hang_up {
            let _ = self.0.shutdown(Shutdown::Write);
        }
        let mut got = Vec::new();
        let mut buffer = [0; 256];
        loop {
            let wait = if hung_up {
                PATIENCE.saturating_sub(started.elapsed())
            } else {
                (HELLO_TIMEOUT * 2).saturating_sub(started.elapsed())
            };
            if wait.is_zero() {
                assert!(!hung_up, "the other side kept the connection open");
                let _ = self.0.shutdown(Shutdown::Write);
                hung_up = true;
                continue;
            }
            self.0.set_read_timeout(Some(wait)).unwrap();
            match self.0.read(&mut buffer) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("waiting for the other side to close the connection: {e}"),
            }
        }
    }
}

/// The endpoint under fuzz and a legitimate peer of it, exchanging numbered frames
/// both ways; whatever else the endpoint receives is kept aside.
struct Bench {
    server: TcpTransport<u64>,
    peer: TcpTransport<u64>,
    /// The next frame each way: server to peer, peer to server.
    next: (u64, u64),
    /// What the server received from anyone but the peer.
    strays: Vec<Incoming<u64>>,
}

const SERVER: Endpoint = Endpoint::Role(20);
const PEER: Endpoint = Endpoint::Node(snapshot_core::NodeId(1));

impl Bench {
    /// The endpoint and its peer, each giving a handshake `hello_timeout`.
    fn new(hello_timeout: Duration) -> Bench {
        let mut server = TcpTransport::new(SERVER, fuzz_config(hello_timeout)).unwrap();
        let mut peer = TcpTransport::new(PEER, fuzz_config(hello_timeout)).unwrap();
        peer.connect(SERVER, &server.address()).unwrap();
        server.connect(PEER, &peer.address()).unwrap();
        let mut bench = Bench {
            server,
            peer,
            next: (0, 0),
            strays: Vec::new(),
        };
        bench.exchange(3);
        bench
    }

    fn at(&self) -> String {
        self.server.address()
    }

    /// The server's next event, failing if none comes within [`PATIENCE`].
    fn server_event(&mut self) -> Incoming<u64> {
        match self.server.recv_timeout(PATIENCE) {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the server received nothing within {PATIENCE:?}"),
            Err(error) => panic!("the server failed: {error}"),
        }
    }

    /// `rounds` round trips between the peer and the server, each frame the next in
    /// its sender's sequence.
    fn exchange(&mut self, rounds: usize) {
        for _ in 0..rounds {
            for n in self.next.1..self.next.1 + 3 {
                self.peer.send(SERVER, n).unwrap();
            }
            self.peer.flush().unwrap();
            for n in self.next.1..self.next.1 + 3 {
                loop {
                    match self.server_event() {
                        Incoming::Frame(PEER, got) => {
                            assert_eq!(got, n, "peer to server");
                            break;
                        }
                        Incoming::Departed(PEER) => panic!("the peer departed"),
                        other => self.strays.push(other),
                    }
                }
            }
            self.next.1 += 3;
            for n in self.next.0..self.next.0 + 2 {
                self.server.send(PEER, n).unwrap();
            }
            self.server.flush().unwrap();
            for n in self.next.0..self.next.0 + 2 {
                match self.peer.recv_timeout(PATIENCE) {
                    Ok(Some(Incoming::Frame(SERVER, got))) => assert_eq!(got, n, "server to peer"),
                    other => panic!("the peer expected frame {n}, got {other:?}"),
                }
            }
            self.next.0 += 2;
        }
    }

    /// Takes the server's events until `who` departs; returns the frames it sent.
    fn frames_until_departed(&mut self, who: Endpoint) -> Vec<u64> {
        let mut frames = Vec::new();
        let kept: Vec<Incoming<u64>> = std::mem::take(&mut self.strays);
        let mut events = kept.into_iter();
        loop {
            let event = match events.next() {
                Some(event) => event,
                None => self.server_event(),
            };
            match event {
                Incoming::Frame(from, n) if from == who => frames.push(n),
                Incoming::Departed(from) if from == who => break,
                Incoming::Frame(PEER, n) => panic!("a stray frame {n} from the peer"),
                Incoming::Departed(PEER) => panic!("the peer departed"),
                other => self.strays.push(other),
            }
        }
        self.strays.extend(events);
        frames
    }

    /// Asserts the server and its peer are well and have nothing unexpected waiting.
    fn check(&mut self) {
        self.exchange(5);
        assert_eq!(
            self.peer.recv_timeout(Duration::from_millis(10)).unwrap(),
            None
        );
        assert_no_panic();
    }
}

/// Figures of one fuzz test, printed at its end.
struct Tally {
    name: &'static str,
    cases: usize,
    peak: usize,
    started: Instant,
    /// How the cases ended, and how many ended so.
    outcomes: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn new(name: &'static str) -> Tally {
        Tally {
            name,
            cases: 0,
            peak: 0,
            started: Instant::now(),
            outcomes: BTreeMap::new(),
        }
    }

    /// Adds `n` to the count of `outcome`.
    fn add(&mut self, outcome: &'static str, n: usize) {
        *self.outcomes.entry(outcome).or_default() += n;
    }

    /// Counts a case whose largest allocation was `peak` bytes, which must be
    /// within [`ALLOCATION_BOUND`]; `case` says what the case was, if it is not.
    fn count(&mut self, peak: usize, case: impl FnOnce() -> String) {
        assert!(
            peak <= ALLOCATION_BOUND,
            "{}: an allocation of {peak} bytes, over {ALLOCATION_BOUND}, in case {}: {}",
            self.name,
            self.cases,
            case()
        );
        self.cases += 1;
        self.peak = self.peak.max(peak);
    }

    fn report(&self) {
        println!(
            "{}: {} cases in {:.2?}, largest allocation {} bytes; {:?}",
            self.name,
            self.cases,
            self.started.elapsed(),
            self.peak,
            self.outcomes
        );
    }
}

/// Bytes a stranger might open with: anything, or a length prefix and the magic
/// and then anything, so that the hello's own checks are reached.
fn opening(rng: &mut Gen) -> Vec<u8> {
    let len = if rng.percent(90) {
        rng.below(80)
    } else {
        rng.below(2000)
    };
    let mut bytes = rng.bytes(len);
    if rng.percent(50) {
        let mut head = rng.length(len).to_le_bytes().to_vec();
        head.extend_from_slice(&MAGIC[..rng.below(MAGIC.len() + 1)]);
        bytes.splice(0..0, head);
    }
    bytes
}

/// Arbitrary bytes, alone or behind a length prefix and the magic: each connection
/// is closed, and the endpoint goes on.
#[test]
fn arbitrary_openings_are_refused() {
    let _serial = serial();
    const CASES: usize = 300;
    let mut rng = Gen::new(0xF022_4E11_0000_0001);
    let mut bench = Bench::new(HELLO_TIMEOUT);
    let mut tally = Tally::new("arbitrary openings");
    for case in 0..CASES {
        let bytes = opening(&mut rng);
        let hang_up = rng.percent(90);
        let (answer, peak) = peak_of(|| {
            let mut raw = Raw::connect(&bench.at());
            raw.send(&bytes);
            raw.finish(hang_up)
        });
        // A hello whose magic and length pass may be answered with a challenge; no
        // welcome can follow without a proof.
        assert!(answer.is_empty() || answer.len() == 68, "{answer:?}");
        tally.add(
            if answer.is_empty() {
                "closed"
            } else {
                "challenged, then closed"
            },
            1,
        );
        tally.count(peak, || format!("{bytes:?}"));
        if case % 50 == 49 {
            bench.check();
        }
    }
    bench.check();
    assert!(bench.strays.is_empty(), "{:?}", bench.strays);
    tally.report();
}

/// A hello as a client of the endpoint would send it, from `from`.
fn hello(rng: &mut Gen, from: Endpoint) -> Hello {
    Hello {
        magic: MAGIC,
        version: VERSION,
        cluster: config().cluster,
        from,
        to: SERVER,
        nonce: rng.nonce(),
    }
}

/// Valid hellos with edits, then nothing, anything, or a well-formed proof: each
/// connection that does not carry a whole, right handshake is closed.
#[test]
fn mutated_hellos_are_refused() {
    let _serial = serial();
    const CASES: usize = 300;
    let mut rng = Gen::new(0xF022_4E11_0000_0002);
    let mut bench = Bench::new(HELLO_TIMEOUT);
    let mut tally = Tally::new("mutated hellos");
    for case in 0..CASES {
        let from = node(10_000 + case as u32);
        let mut hello = hello(&mut rng, from);
        match rng.below(8) {
            0 => hello.version = rng.0.next_u32() as u16,
            1 => hello.cluster = String::from_utf8_lossy(&rng.junk(40)).into(),
            2 => hello.to = node(rng.0.next_u32()),
            _ => {}
        }
        let mut bytes = framed(&hello);
        rng.mutate(&mut bytes);
        let follow_up = rng.below(3);
        let junk = rng.junk(64);
        let hang_up = rng.percent(90);
        let (outcome, peak) = peak_of(|| {
            let mut raw = Raw::connect(&bench.at());
            raw.send(&bytes);
            if follow_up < 2 {
                if follow_up == 1 {
                    raw.send(&junk);
                }
                // No proof: a challenge at most, and the connection closed.
                let answer = raw.finish(hang_up);
                assert!(answer.is_empty() || answer.len() == 68, "{answer:?}");
                return if answer.is_empty() {
                    "closed"
                } else {
                    "challenged, then closed"
                };
            }
            // A proof of the right form for the hello as it was before the edits, if
            // the endpoint answered with a challenge. Only a whole, right handshake
            // admits a client: an edit that changed nothing the endpoint checks
            // lets it in, and it departs as soon as it hangs up.
            let challenged = raw.receive(68).is_some_and(|challenge| {
                let server_nonce: [u8; 32] = challenge[4..36].try_into().unwrap();
                let proof = mac(b"client", from, SERVER, &hello.nonce, &server_nonce);
                raw.send(&framed(&Proof { mac: proof }));
                true
            });
            if hang_up {
                raw.hang_up();
            }
            let outcome = if raw.welcome() {
                raw.hang_up();
                assert_eq!(bench.frames_until_departed(from), Vec::<u64>::new());
                "admitted"
            } else if challenged {
                "challenged, then closed"
            } else {
                "closed"
            };
            assert!(raw.finish(true).is_empty());
            outcome
        });
        tally.add(outcome, 1);
        tally.count(peak, || format!("{bytes:?}, follow-up {follow_up}"));
        if case % 50 == 49 {
            bench.check();
        }
    }
    bench.check();
    tally.report();
}

/// A valid hello, then a proof with edits: the endpoint welcomes the client exactly
/// when the bytes it received open with the right proof, and closes the connection
/// otherwise; bytes after the proof are the first frame's.
#[test]
fn mutated_proofs_are_refused() {
    let _serial = serial();
    const CASES: usize = 150;
    let mut rng = Gen::new(0xF022_4E11_0000_0003);
    let mut bench = Bench::new(PATIENT_HELLO);
    let mut tally = Tally::new("mutated proofs");
    let mut welcomed = 0;
    for case in 0..CASES {
        let from = node(20_000 + case as u32);
        let hello = hello(&mut rng, from);
        let mut raw = Raw::connect(&bench.at());
        raw.send(&framed(&hello));
        let challenge = raw.receive(68).expect("a challenge");
        let server_nonce: [u8; 32] = challenge[4..36].try_into().unwrap();
        assert_eq!(
            challenge[36..],
            mac(b"server", from, SERVER, &hello.nonce, &server_nonce),
            "the endpoint proves it knows the key"
        );
        let proof = framed(&Proof {
            mac: mac(b"client", from, SERVER, &hello.nonce, &server_nonce),
        });
        let mut bytes = proof.clone();
        if rng.percent(90) {
            rng.mutate(&mut bytes);
        }
        let (admitted, peak) = peak_of(|| {
            raw.send(&bytes);
            raw.hang_up();
            let admitted = raw.welcome();
            if admitted {
                // Whatever followed the proof is read as frames, then the client
                // departs.
                bench.frames_until_departed(from);
            }
            assert!(raw.finish(true).is_empty());
            admitted
        });
        assert_eq!(admitted, bytes.starts_with(&proof), "{bytes:?}");
        welcomed += usize::from(admitted);
        tally.add(if admitted { "admitted" } else { "closed" }, 1);
        tally.count(peak, || format!("{bytes:?}"));
        if case % 50 == 49 {
            bench.check();
        }
    }
    bench.check();
    assert!(welcomed > 0, "some cases keep the proof intact");
    tally.report();
}

/// One stream of frames after a whole handshake, with edits: the frames before the
/// first edit arrive as sent, then the client departs; nothing is allocated for a
/// hostile length.
#[test]
fn mutated_first_frames_drop_only_their_sender() {
    let _serial = serial();
    const CASES: usize = 150;
    let mut rng = Gen::new(0xF022_4E11_0000_0004);
    let mut bench = Bench::new(PATIENT_HELLO);
    let mut tally = Tally::new("frames after the handshake");
    for case in 0..CASES {
        let from = node(30_000 + case as u32);
        let mut raw = admitted(&bench, &mut rng, from);

        let sent: Vec<u64> = (0..rng.below(20))
            .map(|_| rng.0.next_u64() >> rng.below(64))
            .collect();
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for n in &sent {
            encode_into(n, &mut bytes, 1024).unwrap();
            ends.push(bytes.len());
        }
        let original = bytes.clone();
        match rng.below(3) {
            0 => rng.mutate(&mut bytes),
            // A hostile length prefix in place of some frame's, or at the end.
            1 => {
                let at = if ends.is_empty() {
                    0
                } else {
                    ends[rng.below(ends.len())]
                };
                let length = rng.length(0).to_le_bytes();
                bytes.truncate(at);
                bytes.extend_from_slice(&length);
                bytes.extend_from_slice(&rng.junk(16));
            }
            _ => bytes.extend_from_slice(&rng.junk(64)),
        }
        let first = bytes
            .iter()
            .zip(&original)
            .position(|(a, b)| a != b)
            .unwrap_or(bytes.len().min(original.len()));
        let intact = ends.iter().filter(|&&end| end <= first).count();
        let (received, peak) = peak_of(|| {
            raw.send(&bytes);
            raw.hang_up();
            let received = bench.frames_until_departed(from);
            assert!(raw.finish(true).is_empty());
            received
        });
        assert!(received.len() >= intact, "{received:?} {sent:?}");
        tally.add("frames sent", sent.len());
        tally.add("frames intact before the first edit", intact);
        tally.add("frames received", received.len());
        assert_eq!(received[..intact], sent[..intact]);
        tally.count(peak, || format!("{bytes:?}"));
        if case % 50 == 49 {
            bench.check();
        }
    }
    bench.check();
    tally.report();
}

/// A fake server for `connect`: reads the hello, answers with what `answer` makes of
/// the right challenge, then, if the client sends a proof, with what `welcome` makes
/// of the right welcome; hangs up or keeps the connection open as `hang_up` says.
/// Returns whether the proof it received was right.
fn fake_server(
    listener: &TcpListener,
    answer: impl FnOnce(Vec<u8>) -> Vec<u8>,
    welcome: impl FnOnce(Vec<u8>) -> Vec<u8>,
    hang_up: bool,
    server_nonce: [u8; 32],
) -> bool {
    let (stream, _) = listener.accept().unwrap();
    stream.set_nodelay(true).unwrap();
    let mut raw = Raw(stream);
    let head = raw.receive(4).expect("a hello's length");
    let size = u32::from_le_bytes(head.try_into().unwrap()) as usize;
    let body = raw.receive(size).expect("a hello");
    let hello: Hello = postcard::from_bytes(&body).expect("a hello that decodes");
    let challenge = framed(&Challenge {
        nonce: server_nonce,
        mac: mac(b"server", hello.from, hello.to, &hello.nonce, &server_nonce),
    });
    raw.send(&answer(challenge));
    let right = framed(&Proof {
        mac: mac(b"client", hello.from, hello.to, &hello.nonce, &server_nonce),
    });
    raw.0.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut proof = vec![0; right.len()];
    let proved = raw.0.read_exact(&mut proof).is_ok() && proof == right;
    if proved {
        raw.send(&welcome(vec![0, 0, 0, 0]));
    }
    if hang_up {
        let _ = raw.0.shutdown(Shutdown::Write);
    }
    // Until the client gives up or the connection is dropped.
    let _ = raw.finish(false);
    proved
}

/// `connect` to a server that answers with arbitrary or mutated challenges and
/// welcomes: it succeeds exactly when both open with the right message, fails with a
/// protocol error or a closed connection otherwise, within its hello timeout, and
/// the endpoint goes on.
#[test]
fn connect_refuses_mutated_challenges_and_welcomes() {
    let _serial = serial();
    const CASES: usize = 150;
    let mut rng = Gen::new(0xF022_4E11_0000_0005);
    let mut bench = Bench::new(HELLO_TIMEOUT);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let mut tally = Tally::new("connect to mutated servers");
    let mut connected = 0;
    for case in 0..CASES {
        let target = node(40_000 + case as u32);
        let challenge_edit = rng.below(4);
        let welcome_edit = rng.below(3);
        let mut challenge_edits = Gen::new(rng.0.next_u64());
        let mut welcome_edits = Gen::new(rng.0.next_u64());
        let junk = rng.junk(100);
        let hang_up = rng.percent(90);
        let server_nonce = rng.nonce();
        let (outcome, peak) = peak_of(|| {
            thread::scope(|scope| {
                let serving = scope.spawn(|| {
                    let mut answered = Vec::new();
                    let mut welcomed = Vec::new();
                    let proved = fake_server(
                        &listener,
                        |mut challenge| {
                            match challenge_edit {
                                0 => {}
                                1 => challenge_edits.mutate(&mut challenge),
                                2 => challenge = junk.clone(),
                                _ => challenge.extend_from_slice(&junk),
                            }
                            answered = challenge.clone();
                            challenge
                        },
                        |mut welcome| {
                            match welcome_edit {
                                0 => {}
                                1 => welcome_edits.mutate(&mut welcome),
                                _ => welcome = junk.clone(),
                            }
                            welcomed = welcome.clone();
                            welcome
                        },
                        hang_up,
                        server_nonce,
                    );
                    (proved, answered, welcomed)
                });
                let started = Instant::now();
                let result = bench.server.connect(target, &at);
                let took = started.elapsed();
                // The fake server waits for the client to drop the connection: a
                // failed connect drops it at once, a successful one when its writer
                // sees the fake server hang up.
                let (proved, answered, welcomed) = serving.join().unwrap();
                (result, took, proved, answered, welcomed)
            })
        });
        let (result, took, proved, answered, welcomed) = outcome;
        assert!(
            took < HELLO_TIMEOUT + Duration::from_secs(5),
            "connect took {took:?}"
        );
        // The client reads exactly the messages it expects: bytes after them do not
        // matter to the handshake. It proves itself only after a right challenge.
        let after_challenge: Vec<u8> = answered.iter().skip(68).chain(&welcomed).copied().collect();
        let accepted = proved && after_challenge.starts_with(&[0, 0, 0, 0]);
        match &result {
            Ok(()) => {
                assert!(accepted, "{answered:?} {welcomed:?}");
                connected += 1;
                tally.add("connected", 1);
                // The fake server hung up: the endpoint hears of it as a departure,
                // which `check` and the strays take.
            }
            // A right handshake may still miss the deadline on a busy machine.
            Err(TransportError::Io { source, .. })
                if accepted && source.kind() == io::ErrorKind::TimedOut =>
            {
                tally.add("timed out", 1);
            }
            Err(TransportError::Protocol(_) | TransportError::Io { .. }) => {
                assert!(!accepted, "{result:?} {answered:?} {welcomed:?}");
                tally.add("refused", 1);
            }
            Err(other) => panic!("connect failed with {other:?}"),
        }
        tally.count(peak, || format!("{answered:?} {welcomed:?}"));
        if case % 50 == 49 {
            bench.check();
        }
    }
    bench.check();
    assert!(connected > 0, "some cases keep the handshake intact");
    tally.report();
}

/// Connects to the bench's server as `from` and completes the handshake by hand.
fn admitted(bench: &Bench, rng: &mut Gen, from: Endpoint) -> Raw {
    let hello = hello(rng, from);
    let mut raw = Raw::connect(&bench.at());
    raw.send(&framed(&hello));
    let challenge = raw.receive(68).expect("a challenge");
    let server_nonce: [u8; 32] = challenge[4..36].try_into().unwrap();
    raw.send(&framed(&Proof {
        mac: mac(b"client", from, SERVER, &hello.nonce, &server_nonce),
    }));
    assert_eq!(raw.receive(4), Some(vec![0, 0, 0, 0]), "a welcome");
    raw
}

/// The largest lengths a peer can announce, in a hello (behind the magic, so that
/// the length is read) and in a frame after the handshake: each is refused (or, within
/// the frame bound, waited for) with nothing allocated for it.
#[test]
fn hostile_lengths_are_refused_before_allocating() {
    let _serial = serial();
    let mut rng = Gen::new(0xF022_4E11_0000_0006);
    let mut bench = Bench::new(PATIENT_HELLO);
    for (i, length) in [
        u32::MAX,
        0x8000_0000,
        16 * 1024 * 1024 + 1,
        HANDSHAKE_MAX + 1,
    ]
    .into_iter()
    .enumerate()
    {
        let mut hello = length.to_le_bytes().to_vec();
        hello.extend_from_slice(&MAGIC);
        hello.extend_from_slice(&[0; 16]);
        let (answer, peak) = peak_of(|| {
            let mut raw = Raw::connect(&bench.at());
            raw.send(&hello);
            raw.finish(false)
        });
        assert!(answer.is_empty());
        assert!(
            peak <= 64 * 1024,
            "{peak} bytes allocated for a hello of {length}"
        );
        println!("a hello announcing {length} bytes: largest allocation {peak} bytes");

        let from = node(50_000 + i as u32);
        let mut raw = admitted(&bench, &mut rng, from);
        let mut frames = Vec::new();
        encode_into(&7u64, &mut frames, 1024).unwrap();
        frames.extend_from_slice(&length.to_le_bytes());
        frames.extend_from_slice(&[0; 16]);
        // A length within the frame bound is waited for, until the stream ends; one
        // over it drops the peer at once.
        let within = length as usize <= config().max_frame;
        let (received, peak) = peak_of(|| {
            raw.send(&frames);
            if within {
                raw.hang_up();
            }
            bench.frames_until_departed(from)
        });
        assert_eq!(received, [7], "the frame before the hostile one");
        raw.hang_up();
        assert!(raw.finish(true).is_empty());
        assert!(
            peak <= 64 * 1024,
            "{peak} bytes allocated for a frame of {length}"
        );
        println!("a frame announcing {length} bytes: largest allocation {peak} bytes");
    }
    bench.check();
}

/// The counting allocator sees every thread's allocations.
#[test]
fn the_allocation_counter_sees_large_allocations() {
    let _serial = serial();
    let (_, peak) = peak_of(|| {
        thread::spawn(|| std::hint::black_box(vec![1u8; 3 << 20]))
            .join()
            .unwrap()
    });
    assert!(peak >= 3 << 20, "{peak}");
}
