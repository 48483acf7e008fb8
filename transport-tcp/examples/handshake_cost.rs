//! The cost of opening one connection, with the HMAC hello and with TLS 1.3: from
//! `connect` to the first frame received at the other end (TCP connection, the
//! handshake, the peer's welcome, one 8-byte frame sent, flushed and received).
//!
//! Each sample is a fresh pair of endpoints (made, and connected the other way, before
//! the clock starts): `connect` from one to the other, `send`, `flush`, and `recv` at
//! the other. The two kinds alternate in rounds (`hmac`, `tls`, `hmac`, `tls`, ...),
//! so that both see the same load. Prints the median and the 10th and 90th
//! percentiles of each, and the ratio of the medians.
//!
//! ```text
//! cargo run --release -p transport-tcp --example handshake_cost [rounds] [per-round]
//! ```

use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::time::{Duration, Instant};
use transport_tcp::{Ca, TcpConfig, TcpTransport, random_key};

const CLUSTER: &str = "handshake";
const CLIENT: Endpoint = Endpoint::Node(NodeId(1));
const SERVER: Endpoint = Endpoint::Node(NodeId(2));

/// The configurations of both ends: one key, or a certificate each from `ca`.
fn configs(ca: Option<&Ca>) -> Result<(TcpConfig, TcpConfig), TransportError> {
    Ok(match ca {
        None => {
            let config = TcpConfig::new(CLUSTER, random_key());
            (config.clone(), config)
        }
        Some(ca) => {
            let tls = |e| -> Result<TcpConfig, TransportError> {
                Ok(TcpConfig {
                    tls: Some(ca.issue(e)?),
                    ..TcpConfig::new(CLUSTER, Vec::new())
                })
            };
            (tls(CLIENT)?, tls(SERVER)?)
        }
    })
}

/// One connection: from `connect` to its first frame received.
fn one(ca: Option<&Ca>) -> Result<Duration, TransportError> {
    let (client_config, server_config) = configs(ca)?;
    let mut client = TcpTransport::<u64>::new(CLIENT, client_config)?;
    let mut server = TcpTransport::<u64>::new(SERVER, server_config)?;
    server.connect(CLIENT, &client.address())?;
    let address = server.address();
    let start = Instant::now();
    client.connect(SERVER, &address)?;
    client.send(SERVER, 7)?;
    client.flush()?;
    match server.recv()? {
        Incoming::Frame(CLIENT, 7) => Ok(start.elapsed()),
        other => Err(TransportError::Protocol(format!("received {other:?}"))),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut arg = |default: usize| -> Result<usize, std::num::ParseIntError> {
        args.next().map_or(Ok(default), |a| a.parse())
    };
    let rounds = arg(10)?.max(1);
    let per_round = arg(50)?.max(1);
    let ca = Ca::new(CLUSTER)?;
    let (mut hmac, mut tls) = (Vec::new(), Vec::new());
    // A round of each first, not timed: the first connections pay for what is made
    // once (the runtime's threads, the certificates' parsing).
    for _ in 0..per_round.min(10) {
        one(None)?;
        one(Some(&ca))?;
    }
    for _ in 0..rounds {
        for _ in 0..per_round {
            hmac.push(one(None)?);
        }
        for _ in 0..per_round {
            tls.push(one(Some(&ca))?);
        }
    }
    hmac.sort();
    tls.sort();
    println!(
        "{} connections of each kind, in {rounds} alternating rounds; connect to first frame:",
        hmac.len()
    );
    for (name, times) in [("handshake/tcp-hmac", &hmac), ("handshake/tcp-tls", &tls)] {
        println!(
            "  {name:<20} median {:>8.1} µs   (p10 {:>7.1} µs, p90 {:>7.1} µs)",
            percentile(times, 50).as_secs_f64() * 1e6,
            percentile(times, 10).as_secs_f64() * 1e6,
            percentile(times, 90).as_secs_f64() * 1e6,
        );
    }
    println!(
        "  tls ÷ hmac, medians: {:.2}",
        percentile(&tls, 50).as_secs_f64() / percentile(&hmac, 50).as_secs_f64()
    );
    Ok(())
}
