//! Measures what TLS costs the TCP transport, between two endpoints of one process:
//!
//! - one-way throughput of the same frames, plain and over TLS, in runs that
//!   alternate (plain, TLS, plain, ...), with the median of each: 16-byte frames
//!   (20 bytes on the wire) and 1 KiB frames;
//! - the time one `connect` takes (TCP connection and handshake, until the server's
//!   welcome), plain and over TLS, on fresh endpoints: the median per connection;
//! - the time to create an endpoint, plain and with a TLS identity (whose
//!   certificate it checks).
//!
//! ```text
//! cargo run --release -p transport-tcp --example tls_throughput [runs] [frames] [connections]
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::time::{Duration, Instant};
use transport_tcp::{Ca, TcpConfig, TcpTransport, random_key};

const CLUSTER: &str = "throughput";
const SENDER: Endpoint = Endpoint::Node(NodeId(1));
const RECEIVER: Endpoint = Endpoint::Node(NodeId(2));

/// Plain endpoints share a key; TLS ones each get a certificate from `ca`.
fn config(ca: Option<&Ca>, endpoint: Endpoint) -> Result<TcpConfig, TransportError> {
    Ok(match ca {
        None => TcpConfig::new(CLUSTER, random_key()),
        Some(ca) => TcpConfig {
            tls: Some(ca.issue(endpoint)?),
            ..TcpConfig::new(CLUSTER, Vec::new())
        },
    })
}

/// The plain configuration of both ends: one key.
fn configs(ca: Option<&Ca>) -> Result<(TcpConfig, TcpConfig), TransportError> {
    match ca {
        None => {
            let config = config(None, SENDER)?;
            Ok((config.clone(), config))
        }
        Some(_) => Ok((config(ca, SENDER)?, config(ca, RECEIVER)?)),
    }
}

/// A frame of the throughput runs: a sequence number, and what it carries.
trait Frame: Serialize + DeserializeOwned + Send + 'static {
    fn new(seq: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Frame for [u8; 16] {
    fn new(seq: u64) -> Self {
        let mut frame = [0; 16];
        frame[..8].copy_from_slice(&seq.to_le_bytes());
        frame
    }
    fn seq(&self) -> u64 {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(&self[..8]);
        u64::from_le_bytes(bytes)
    }
}

/// 1 KiB: the sequence number, then filler.
#[derive(serde::Serialize, serde::Deserialize)]
struct Kib(u64, #[serde(with = "serde_bytes_array")] [u8; 1016]);

/// A fixed array as one run of bytes.
mod serde_bytes_array {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 1016], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 1016], D::Error> {
        let bytes = <&[u8]>::deserialize(d)?;
        bytes.try_into().map_err(D::Error::custom)
    }
}

impl Frame for Kib {
    fn new(seq: u64) -> Self {
        Kib(seq, [0x5a; 1016])
    }
    fn seq(&self) -> u64 {
        self.0
    }
}

fn next_frame<F>(t: &mut TcpTransport<F>) -> Result<(Endpoint, F), TransportError>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    match t.recv()? {
        Incoming::Frame(from, frame) => Ok((from, frame)),
        Incoming::Departed(peer) => Err(TransportError::Disconnected(peer)),
    }
}

/// `frames` frames from one endpoint to another, as fast as the sender can send them:
/// frames per second, from the first send to the last frame received.
fn one_way<F: Frame>(ca: Option<&Ca>, frames: u64) -> Result<f64, TransportError> {
    let (sender_config, receiver_config) = configs(ca)?;
    let mut a = TcpTransport::<F>::new(SENDER, sender_config)?;
    let mut b = TcpTransport::<F>::new(RECEIVER, receiver_config)?;
    a.connect(RECEIVER, &b.address())?;
    b.connect(SENDER, &a.address())?;
    let receiver = std::thread::spawn(move || -> Result<(), TransportError> {
        for n in 0..frames {
            let (from, frame) = next_frame(&mut b)?;
            assert_eq!((from, frame.seq()), (SENDER, n));
        }
        Ok(())
    });
    let start = Instant::now();
    for n in 0..frames {
        a.send(RECEIVER, F::new(n))?;
    }
    a.flush()?;
    receiver
        .join()
        .map_err(|_| TransportError::Protocol("the receiver panicked".into()))??;
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// The times of `connections` connects each way between fresh pairs of endpoints,
/// and of creating those endpoints.
fn handshakes(
    ca: Option<&Ca>,
    connections: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), TransportError> {
    let mut connects = Vec::with_capacity(2 * connections);
    let mut creations = Vec::with_capacity(2 * connections);
    for _ in 0..connections {
        let (sender_config, receiver_config) = configs(ca)?;
        let start = Instant::now();
        let mut a = TcpTransport::<u64>::new(SENDER, sender_config)?;
        creations.push(start.elapsed());
        let start = Instant::now();
        let mut b = TcpTransport::<u64>::new(RECEIVER, receiver_config)?;
        creations.push(start.elapsed());
        let start = Instant::now();
        a.connect(RECEIVER, &b.address())?;
        connects.push(start.elapsed());
        let start = Instant::now();
        b.connect(SENDER, &a.address())?;
        connects.push(start.elapsed());
    }
    Ok((connects, creations))
}

fn median_f64(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// `runs` runs of each, alternating: the medians, plain and TLS, in frames/s.
fn compare<F: Frame>(ca: &Ca, runs: usize, frames: u64) -> Result<(f64, f64), TransportError> {
    let (mut plain, mut tls) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(one_way::<F>(None, frames)?);
        tls.push(one_way::<F>(Some(ca), frames)?);
    }
    Ok((median_f64(&mut plain), median_f64(&mut tls)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| -> Result<u64, std::num::ParseIntError> {
        args.next().map_or(Ok(default), |a| a.parse())
    };
    let runs = arg(7)? as usize;
    let frames = arg(5_000_000)?;
    let connections = arg(200)? as usize;
    let ca = Ca::new(CLUSTER)?;

    println!("one way, {runs} runs each, alternating; medians:");
    let (plain, tls) = compare::<[u8; 16]>(&ca, runs, frames)?;
    println!(
        "  {frames} frames of 16 bytes: plain {:>6.2} M frames/s, TLS {:>6.2} M frames/s \
         ({:.0}% of plain)",
        plain / 1e6,
        tls / 1e6,
        100.0 * tls / plain
    );
    let kib_frames = (frames / 10).max(1);
    let (plain, tls) = compare::<Kib>(&ca, runs, kib_frames)?;
    println!(
        "  {kib_frames} frames of 1 KiB:   plain {:>6.0} k frames/s ({:.0} MB/s), TLS {:>6.0} k \
         frames/s ({:.0} MB/s, {:.0}% of plain)",
        plain / 1e3,
        plain * 1024.0 / 1e6,
        tls / 1e3,
        tls * 1024.0 / 1e6,
        100.0 * tls / plain
    );

    println!("{connections} pairs of fresh endpoints, each connecting to the other; medians:");
    // Alternating halves, so that neither kind has the machine to itself.
    let (mut plain_connects, mut plain_creations) = (Vec::new(), Vec::new());
    let (mut tls_connects, mut tls_creations) = (Vec::new(), Vec::new());
    let halves = connections.div_ceil(2).max(1);
    for _ in 0..2 {
        let (connects, creations) = handshakes(None, halves)?;
        plain_connects.extend(connects);
        plain_creations.extend(creations);
        let (connects, creations) = handshakes(Some(&ca), halves)?;
        tls_connects.extend(connects);
        tls_creations.extend(creations);
    }
    println!(
        "  connect (TCP connection and handshake): plain {:?}, TLS {:?}",
        median(&mut plain_connects),
        median(&mut tls_connects)
    );
    println!(
        "  creating an endpoint:                   plain {:?}, TLS {:?}",
        median(&mut plain_creations),
        median(&mut tls_creations)
    );
    Ok(())
}
