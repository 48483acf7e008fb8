//! Helpers shared by the tests: endpoints, configurations, waiting with a deadline, and
//! the warnings the transport logs.

#![allow(dead_code)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::io::{self, Read};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport};

/// How long a test waits for something that should happen at once before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn node(id: u32) -> Endpoint {
    Endpoint::Node(NodeId(id))
}

/// The configuration every test endpoint shares, unless a test says otherwise.
pub fn config() -> TcpConfig {
    TcpConfig::new("test-cluster", b"a key that only the tests know!!".to_vec())
}

pub fn endpoint<F>(local: Endpoint) -> TcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    TcpTransport::new(local, config()).unwrap()
}

pub fn address<F>(t: &TcpTransport<F>) -> String
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    t.address()
}

/// Connects `a` to `b` and `b` to `a`, as the contract asks before traffic.
pub fn pair_up<F>(a: &mut TcpTransport<F>, b: &mut TcpTransport<F>)
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    a.connect(b.local(), &address(b)).unwrap();
    b.connect(a.local(), &address(a)).unwrap();
}

/// The next frame or departure, failing the test if none comes in time.
pub fn recv<F>(t: &mut TcpTransport<F>) -> Result<Incoming<F>, TransportError>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    match t.recv_timeout(PATIENCE)? {
        Some(item) => Ok(item),
        None => panic!("{} received nothing within {PATIENCE:?}", t.local()),
    }
}

/// The next frame and its sender, failing the test if anything else comes, or
/// nothing in time.
pub fn frame<F>(t: &mut TcpTransport<F>) -> (Endpoint, F)
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    match recv(t) {
        Ok(Incoming::Frame(from, frame)) => (from, frame),
        Ok(Incoming::Departed(peer)) => panic!("{}: {peer} departed", t.local()),
        Err(error) => panic!("{}: {error}", t.local()),
    }
}

/// Whether `received` is the departure of `who`.
pub fn departed<F>(received: Result<Incoming<F>, TransportError>, who: Endpoint) -> bool {
    matches!(received, Ok(Incoming::Departed(p)) if p == who)
}

/// Whether `result` is [`TransportError::Disconnected`] for `who`.
pub fn is_gone<T>(result: Result<T, TransportError>, who: Endpoint) -> bool {
    matches!(result, Err(TransportError::Disconnected(p)) if p == who)
}

/// Waits for the other side to close `stream` (end of stream or reset), up to
/// `within`; says whether it did. Bytes the other side sends meanwhile are skipped.
pub fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buffer = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("reading from the stranger's socket: {e}"),
        }
    }
}

/// Whether `stream` is still open: nothing to read, no end of stream, right now.
pub fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0; 1];
    let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Captured> = OnceLock::new();

/// Starts keeping every warning logged by this test binary, to be read with
/// [`warnings`]. Idempotent.
pub fn capture_warnings() {
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .init();
        captured
    });
}

/// The warnings logged so far whose line mentions `needle`.
pub fn warnings(needle: &str) -> Vec<String> {
    let logs = LOGS.get().expect("capture_warnings() first");
    let bytes = logs.0.lock().unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains("WARN") && line.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Waits up to [`PATIENCE`] for a warning that mentions every one of `needles`, for
/// what the transport logs after the call that caused it has returned.
pub fn wait_for_warning(needles: &[&str]) -> Option<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = warnings(needles[0])
            .into_iter()
            .find(|line| needles.iter().all(|needle| line.contains(needle)));
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
