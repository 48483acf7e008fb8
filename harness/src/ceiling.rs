//! The ceilings: the frames of the transfers over the bare medium, without
//! snapshot-core.

use crate::TransportKind;
use crate::wire::{Wire, transfer_frame};
use snapshot_core::codec::{DEFAULT_MAX_FRAME, encode_into};
use snapshot_core::{Endpoint, NodeId, TransportError};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The bytes of one transfer frame on pipe and tcp: the length prefix and the
/// postcard encoding of [`transfer_frame`], as the transports write it.
pub fn encoded_transfer() -> Result<Vec<u8>, TransportError> {
    let mut bytes = Vec::new();
    encode_into(&transfer_frame(), &mut bytes, DEFAULT_MAX_FRAME).map_err(|error| {
        TransportError::Codec {
            context: "a transfer".to_string(),
            reason: error.to_string(),
        }
    })?;
    Ok(bytes)
}

/// The size of the buffers the ceilings write through.
pub const CEILING_BUFFER: usize = 64 * 1024;

fn io_error(context: &str) -> impl Fn(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io {
        context: context.to_string(),
        source,
    }
}

/// The raw ceiling of `medium`: how long the bare medium takes to move `frames`
/// transfer frames one way between two threads, without snapshot-core.
///
/// - mem: an unbounded crossbeam channel carrying `(Endpoint, Wire)` items, one
///   frame per `send`;
/// - pipe: an anonymous pipe (the same kernel object as a FIFO), and tcp: a loopback
///   socket with `TCP_NODELAY`, both written through [`CEILING_BUFFER`]-byte
///   buffers holding the transports' encoding of the same frames
///   ([`encoded_transfer`]), and read 64 KiB at a time and counted, not decoded.
pub fn ceiling(medium: TransportKind, frames: u64) -> Result<Duration, TransportError> {
    match medium {
        TransportKind::Mem => {
            let (tx, rx) = crossbeam_channel::unbounded::<(Endpoint, Wire)>();
            let reader = std::thread::spawn(move || {
                let mut count = 0u64;
                while count < frames && rx.recv().is_ok() {
                    count += 1;
                }
                count
            });
            let start = Instant::now();
            let from = Endpoint::Node(NodeId(1));
            for _ in 0..frames {
                tx.send((from, transfer_frame()))
                    .map_err(|_| TransportError::Disconnected(Endpoint::Node(NodeId(2))))?;
            }
            let count = reader
                .join()
                .map_err(|_| TransportError::Protocol("the reader panicked".to_string()))?;
            let elapsed = start.elapsed();
            if count != frames {
                return Err(TransportError::Protocol(format!(
                    "{count} of {frames} frames arrived"
                )));
            }
            Ok(elapsed)
        }
        TransportKind::Pipe => {
            let (rx, tx) = std::io::pipe().map_err(io_error("opening a pipe"))?;
            bare_stream(frames, rx, tx)
        }
        TransportKind::Tcp => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(io_error("binding a listener"))?;
            let address = listener
                .local_addr()
                .map_err(io_error("binding a listener"))?;
            let tx = std::net::TcpStream::connect(address).map_err(io_error("connecting"))?;
            tx.set_nodelay(true)
                .map_err(io_error("setting TCP_NODELAY"))?;
            let (rx, _) = listener.accept().map_err(io_error("accepting"))?;
            bare_stream(frames, rx, tx)
        }
    }
}

/// `frames` encoded transfer frames from `tx` to `rx`, the reader in a thread of its
/// own: the time from the first write to the last byte read.
fn bare_stream<R, W>(frames: u64, mut rx: R, mut tx: W) -> Result<Duration, TransportError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let frame = encoded_transfer()?;
    let bytes = frames * frame.len() as u64;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut chunk = vec![0; 64 * 1024];
        let mut got = 0u64;
        while got < bytes {
            match rx.read(&mut chunk)? {
                0 => break,
                n => got += n as u64,
            }
        }
        Ok(got)
    });
    let start = Instant::now();
    let mut buffer = Vec::with_capacity(CEILING_BUFFER + frame.len());
    for _ in 0..frames {
        buffer.extend_from_slice(&frame);
        if buffer.len() + frame.len() > CEILING_BUFFER {
            tx.write_all(&buffer).map_err(io_error("writing"))?;
            buffer.clear();
        }
    }
    tx.write_all(&buffer).map_err(io_error("writing"))?;
    drop(tx);
    let got = reader
        .join()
        .map_err(|_| TransportError::Protocol("the reader panicked".to_string()))?
        .map_err(io_error("reading"))?;
    let elapsed = start.elapsed();
    if got != bytes {
        return Err(TransportError::Protocol(format!(
            "{got} of {bytes} bytes arrived"
        )));
    }
    Ok(elapsed)
}
