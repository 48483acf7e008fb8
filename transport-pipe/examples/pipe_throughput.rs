//! One-way throughput of the pipe transport between two threads, frames of 16 bytes,
//! beside a bare pipe moving the same bytes in 64 KiB writes; then round trips (one
//! frame each way, flushed), the pattern of a master driving a node, with the master
//! sleeping in `recv` and with it spinning for up to 200 us first.
//!
//! ```text
//! cargo run --release -p transport-pipe --example pipe_throughput [frames]
//! ```

use snapshot_core::{Endpoint, Incoming, NodeId, Transport};
use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};
use transport_pipe::PipeTransport;

/// A frame with a 16-byte body (postcard writes arrays as they are): 20 bytes on the
/// wire with the length prefix.
type Frame = [u8; 16];

fn frame(seq: u64) -> Frame {
    let mut f = [0; 16];
    f[..8].copy_from_slice(&seq.to_le_bytes());
    f
}

fn transport(frames: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().to_string_lossy().into_owned();
    let from = Endpoint::Node(NodeId(1));
    let mut receiver = PipeTransport::<Frame>::new(dir.path(), Endpoint::Role(0))?;
    let mut sender = PipeTransport::<Frame>::new(dir.path(), from)?;
    receiver.connect(from, &run)?;
    sender.connect(Endpoint::Role(0), &run)?;
    let start = Instant::now();
    let sending = thread::spawn(move || -> Result<_, snapshot_core::TransportError> {
        for seq in 0..frames {
            sender.send(Endpoint::Role(0), frame(seq))?;
        }
        sender.flush()?;
        Ok(sender)
    });
    for seq in 0..frames {
        if receiver.recv()? != Incoming::Frame(from, frame(seq)) {
            return Err(format!("frame {seq} out of order").into());
        }
    }
    let elapsed = start.elapsed();
    drop(sending.join().map_err(|_| "the sender panicked")??);
    Ok(elapsed)
}

fn bare_pipe(frames: u64) -> Result<Duration, Box<dyn std::error::Error>> {
    let bytes = frames * 20;
    let (mut rx, mut tx) = std::io::pipe()?;
    let start = Instant::now();
    let writing = thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![7u8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            tx.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let mut buffer = vec![0; 64 * 1024];
    let mut got = 0;
    while got < bytes {
        match rx.read(&mut buffer)? {
            0 => break,
            n => got += n as u64,
        }
    }
    let elapsed = start.elapsed();
    writing.join().map_err(|_| "the writer panicked")??;
    Ok(elapsed)
}

fn round_trips(rounds: u64, spin: Duration) -> Result<Duration, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().to_string_lossy().into_owned();
    let node = Endpoint::Node(NodeId(1));
    let mut master = PipeTransport::<Frame>::new(dir.path(), Endpoint::Role(1))?;
    master.set_spin(spin);
    let mut echo = PipeTransport::<Frame>::new(dir.path(), node)?;
    master.connect(node, &run)?;
    echo.connect(Endpoint::Role(1), &run)?;
    let echoing = thread::spawn(move || -> Result<_, snapshot_core::TransportError> {
        for _ in 0..rounds {
            match echo.recv()? {
                Incoming::Frame(from, f) => echo.send(from, f)?,
                Incoming::Departed(_) => break,
            }
        }
        echo.flush()?;
        Ok(echo)
    });
    let start = Instant::now();
    for seq in 0..rounds {
        master.send(node, frame(seq))?;
        if master.recv()? != Incoming::Frame(node, frame(seq)) {
            return Err(format!("round {seq}: wrong reply").into());
        }
    }
    let elapsed = start.elapsed();
    drop(echoing.join().map_err(|_| "the echo panicked")??);
    Ok(elapsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 20_000_000,
    };
    let rate = |d: Duration| frames as f64 / d.as_secs_f64() / 1e6;
    for round in 1..=3 {
        let bare = bare_pipe(frames)?;
        let pipe = transport(frames)?;
        println!(
            "round {round}: {frames} frames of 16 bytes: transport-pipe {:.1} M frames/s ({:.2} s), bare pipe {:.1} M frames/s, ratio {:.2}",
            rate(pipe),
            pipe.as_secs_f64(),
            rate(bare),
            rate(pipe) / rate(bare),
        );
    }
    let rounds = 100_000;
    for spin in [Duration::ZERO, Duration::from_micros(200)] {
        let rtt = round_trips(rounds, spin)?;
        println!(
            "{rounds} round trips, master spinning {spin:?}: {:.1} us each",
            rtt.as_secs_f64() * 1e6 / rounds as f64
        );
    }
    Ok(())
}
