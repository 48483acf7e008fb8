//! Measures the TCP transport between two endpoints of one process, beside bare TCP
//! moving the same bytes:
//!
//! - one-way throughput of 16-byte frames (20 bytes on the wire), batched;
//! - the round trip of a request and its reply through the synchronous wrapper.
//!
//! ```text
//! cargo run --release -p transport-tcp --example tcp_throughput [frames] [round-trips]
//! ```

use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use transport_tcp::{TcpConfig, TcpTransport, random_key};

type Frame = [u8; 16];

fn frame(seq: u64) -> Frame {
    let mut frame = [0; 16];
    frame[..8].copy_from_slice(&seq.to_le_bytes());
    frame
}

fn seq(frame: &Frame) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&frame[..8]);
    u64::from_le_bytes(bytes)
}

/// Bare TCP on loopback: 20-byte length-prefixed frames, written 64 KiB at a time,
/// read and counted at the other end. The ceiling the transport is measured against.
fn bare(frames: u64) -> std::io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut chunk = vec![0; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            match stream.read(&mut chunk)? {
                0 => return Ok(bytes / 20),
                n => bytes += n as u64,
            }
        }
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let start = Instant::now();
    let mut buffer = Vec::with_capacity(64 * 1024 + 20);
    for n in 0..frames {
        buffer.extend_from_slice(&16u32.to_le_bytes());
        buffer.extend_from_slice(&frame(n));
        if buffer.len() >= 64 * 1024 {
            stream.write_all(&buffer)?;
            buffer.clear();
        }
    }
    stream.write_all(&buffer)?;
    drop(stream);
    let received = reader
        .join()
        .map_err(|_| std::io::Error::other("the reader panicked"))??;
    assert_eq!(received, frames);
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// Request and reply over bare blocking TCP, `count` times: the sorted round trips.
fn bare_round_trips(count: usize) -> std::io::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut frame = [0; 20];
        while stream.read_exact(&mut frame).is_ok() {
            stream.write_all(&frame)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut frame = [0; 20];
    let mut times = Vec::with_capacity(count);
    for n in 0..count + 1000 {
        let start = Instant::now();
        stream.write_all(&frame)?;
        stream.read_exact(&mut frame)?;
        if n >= 1000 {
            times.push(start.elapsed());
        }
    }
    drop(stream);
    echo.join()
        .map_err(|_| std::io::Error::other("the echo panicked"))??;
    times.sort();
    Ok(times)
}

fn summary(times: &[Duration]) -> String {
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    format!(
        "median {:?}, p90 {:?}, p99 {:?}",
        at(0.5),
        at(0.9),
        at(0.99)
    )
}

/// Two endpoints, each connected to the other.
fn pair() -> Result<(TcpTransport<Frame>, TcpTransport<Frame>), TransportError> {
    let config = TcpConfig::new("throughput", random_key());
    let mut a = TcpTransport::new(Endpoint::Node(NodeId(1)), config.clone())?;
    let mut b = TcpTransport::new(Endpoint::Node(NodeId(2)), config)?;
    a.connect(b.local(), &b.address())?;
    b.connect(a.local(), &a.address())?;
    Ok((a, b))
}

/// The next frame; the other side leaving is an error here.
fn next_frame(t: &mut TcpTransport<Frame>) -> Result<(Endpoint, Frame), TransportError> {
    match t.recv()? {
        Incoming::Frame(from, frame) => Ok((from, frame)),
        Incoming::Departed(peer) => Err(TransportError::Disconnected(peer)),
    }
}

/// `frames` frames from a to b, as fast as a can send them.
fn one_way(frames: u64) -> Result<f64, TransportError> {
    let (mut a, mut b) = pair()?;
    let receiver = std::thread::spawn(move || -> Result<(), TransportError> {
        for n in 0..frames {
            let (from, frame) = next_frame(&mut b)?;
            assert_eq!((from, seq(&frame)), (Endpoint::Node(NodeId(1)), n));
        }
        Ok(())
    });
    let start = Instant::now();
    for n in 0..frames {
        a.send(Endpoint::Node(NodeId(2)), frame(n))?;
    }
    a.flush()?;
    receiver
        .join()
        .map_err(|_| TransportError::Protocol("the receiver panicked".into()))??;
    Ok(frames as f64 / start.elapsed().as_secs_f64())
}

/// Request and reply between two threads, `count` times; the sorted round trips.
fn round_trips(count: usize, spin: Duration) -> Result<Vec<Duration>, TransportError> {
    let (mut a, mut b) = pair()?;
    a.set_spin(spin);
    b.set_spin(spin);
    let echo = std::thread::spawn(move || -> Result<(), TransportError> {
        loop {
            let (from, frame) = next_frame(&mut b)?;
            if seq(&frame) == u64::MAX {
                return Ok(());
            }
            b.send(from, frame)?;
            b.flush()?;
        }
    });
    let peer = Endpoint::Node(NodeId(2));
    let mut times = Vec::with_capacity(count);
    for n in 0..count as u64 + 1000 {
        let start = Instant::now();
        a.send(peer, frame(n))?;
        let (_, reply) = next_frame(&mut a)?;
        let elapsed = start.elapsed();
        assert_eq!(seq(&reply), n);
        if n >= 1000 {
            // The first thousand warm up.
            times.push(elapsed);
        }
    }
    a.send(peer, frame(u64::MAX))?;
    a.flush()?;
    echo.join()
        .map_err(|_| TransportError::Protocol("the echo panicked".into()))??;
    times.sort();
    Ok(times)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let frames: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000_000);
    let trips: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);

    println!("one way, {frames} frames of 16 bytes (20 on the wire), batched:");
    let ceiling = bare(frames)?;
    println!("  bare TCP          {:>8.2} M frames/s", ceiling / 1e6);
    let ours = one_way(frames)?;
    println!(
        "  TcpTransport      {:>8.2} M frames/s ({:.0}% of bare TCP)",
        ours / 1e6,
        100.0 * ours / ceiling
    );

    println!("round trip of a 16-byte request and its reply, {trips} times:");
    println!(
        "  bare blocking TCP        {}",
        summary(&bare_round_trips(trips)?)
    );
    for spin in [Duration::ZERO, Duration::from_micros(50)] {
        let times = round_trips(trips, spin)?;
        println!(
            "  TcpTransport, spin {:>5}  {}",
            format!("{spin:?}"),
            summary(&times)
        );
    }
    Ok(())
}
