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
            let (tx, rx) = loopback()?;
            bare_stream(frames, rx, tx)
        }
    }
}

/// A loopback TCP connection: its connecting end, with `TCP_NODELAY` as the
/// transport sets it, and its accepted end.
fn loopback() -> Result<(std::net::TcpStream, std::net::TcpStream), TransportError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_error("binding a listener"))?;
    let address = listener
        .local_addr()
        .map_err(io_error("binding a listener"))?;
    let tx = std::net::TcpStream::connect(address).map_err(io_error("connecting"))?;
    tx.set_nodelay(true)
        .map_err(io_error("setting TCP_NODELAY"))?;
    let (rx, _) = listener.accept().map_err(io_error("accepting"))?;
    Ok((tx, rx))
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

/// The latency ceiling: a chain of bare hops over a medium, each hop a thread that
/// sleeps until a frame comes and passes it on, without snapshot-core.
///
/// A snapshot on a ring of `n` idle nodes (`n` even) waits for at least `n / 2 + 3`
/// hops one after another ([`ring_hops`]), each of which wakes a sleeping thread. A
/// [`round`](HopChain::round) of the chain is that path alone: the driver sends one
/// transfer frame to the first thread, each thread passes it to the next, the last
/// back to the driver. It is what the medium costs at that point,
/// whatever runs on top of it: a snapshot's other messages (the wave the other way
/// round, each node's marker back and its part) only add to it.
///
/// The hops are what the transports' nodes wait on: an unbounded crossbeam channel
/// for mem, an anonymous pipe for pipe, a loopback socket with `TCP_NODELAY` for tcp,
/// the frame in the transports' encoding ([`encoded_transfer`]) on the last two.
/// Dropping the chain ends its threads and waits for them.
pub struct HopChain {
    first: Option<HopTx>,
    last: HopRx,
    frame: Vec<u8>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The hops one after another of a snapshot on a ring of `nodes` idle nodes (an even
/// number), each linked both ways to its two neighbours: the request to the
/// initiator; the `nodes / 2` markers of each wave, which meet at the node opposite
/// the initiator; the marker that node sends its neighbours, which is the last either
/// of them waits for; and the part of such a neighbour to the collector.
pub fn ring_hops(nodes: u32) -> u32 {
    nodes / 2 + 3
}

enum HopTx {
    Mem(crossbeam_channel::Sender<(Endpoint, Wire)>),
    Stream(Box<dyn Write + Send>),
}

enum HopRx {
    Mem(crossbeam_channel::Receiver<(Endpoint, Wire)>),
    Stream(Box<dyn Read + Send>),
}

/// What crosses a hop: the item on mem, the encoded frame's bytes on a stream.
enum Token {
    Item((Endpoint, Wire)),
    Bytes,
}

impl HopTx {
    /// Passes `token` on (the bytes in `frame` for a stream). False once the next
    /// hop has gone.
    fn send(&mut self, token: Token, frame: &[u8]) -> bool {
        match (self, token) {
            (HopTx::Mem(tx), Token::Item(item)) => tx.send(item).is_ok(),
            (HopTx::Stream(tx), Token::Bytes) => tx.write_all(frame).is_ok(),
            _ => false,
        }
    }
}

impl HopRx {
    /// Waits for the next token (read into `frame` from a stream); `None` once the hop
    /// before has gone.
    fn recv(&mut self, frame: &mut [u8]) -> Option<Token> {
        match self {
            HopRx::Mem(rx) => rx.recv().ok().map(Token::Item),
            HopRx::Stream(rx) => rx.read_exact(frame).ok().map(|()| Token::Bytes),
        }
    }
}

/// One hop over `medium`: its sending and its receiving end.
fn hop(medium: TransportKind) -> Result<(HopTx, HopRx), TransportError> {
    Ok(match medium {
        TransportKind::Mem => {
            let (tx, rx) = crossbeam_channel::unbounded();
            (HopTx::Mem(tx), HopRx::Mem(rx))
        }
        TransportKind::Pipe => {
            let (rx, tx) = std::io::pipe().map_err(io_error("opening a pipe"))?;
            (HopTx::Stream(Box::new(tx)), HopRx::Stream(Box::new(rx)))
        }
        TransportKind::Tcp => {
            let (tx, rx) = loopback()?;
            (HopTx::Stream(Box::new(tx)), HopRx::Stream(Box::new(rx)))
        }
    })
}

impl HopChain {
    /// A chain of `hops` hops (at least 1) over `medium`: `hops - 1` threads between
    /// the driver's two ends.
    pub fn new(medium: TransportKind, hops: u32) -> Result<Self, TransportError> {
        let frame = encoded_transfer()?;
        let (first, last) = hop(medium)?;
        // Made first, so that a failure part way drops it: the threads already
        // started end and are waited for.
        let mut chain = HopChain {
            first: Some(first),
            last,
            frame,
            threads: Vec::new(),
        };
        for at in 1..hops.max(1) {
            let (mut tx, next) = hop(medium)?;
            let mut from = std::mem::replace(&mut chain.last, next);
            let mut buffer = chain.frame.clone();
            let thread = std::thread::Builder::new()
                .name(format!("hop-{at}"))
                .spawn(move || {
                    while let Some(token) = from.recv(&mut buffer) {
                        if !tx.send(token, &buffer) {
                            break;
                        }
                    }
                })
                .map_err(io_error("starting a hop's thread"))?;
            chain.threads.push(thread);
        }
        Ok(chain)
    }

    /// One frame from the driver through every hop and back: the time it took.
    pub fn round(&mut self) -> Result<Duration, TransportError> {
        let broken = || TransportError::Protocol("a hop of the chain has gone".to_string());
        let token = match self.first {
            Some(HopTx::Mem(_)) => Token::Item((Endpoint::Node(NodeId(1)), transfer_frame())),
            _ => Token::Bytes,
        };
        let mut buffer = vec![0; self.frame.len()];
        let start = Instant::now();
        let first = self.first.as_mut().ok_or_else(broken)?;
        if !first.send(token, &self.frame) {
            return Err(broken());
        }
        self.last.recv(&mut buffer).ok_or_else(broken)?;
        let took = start.elapsed();
        if matches!(self.last, HopRx::Stream(_)) && buffer != self.frame {
            return Err(TransportError::Protocol(
                "the frame changed on the way".to_string(),
            ));
        }
        Ok(took)
    }
}

impl Drop for HopChain {
    fn drop(&mut self) {
        // The first hop's end closes, and each thread ends when the one before it has.
        drop(self.first.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medium::Medium;

    #[test]
    fn a_frame_goes_round_every_chain_and_the_threads_end() {
        for &medium in TransportKind::all() {
            for hops in [1, 3, 10] {
                let mut chain = HopChain::new(medium, hops).unwrap();
                assert_eq!(chain.threads.len(), hops as usize - 1);
                for _ in 0..3 {
                    chain.round().unwrap();
                }
                drop(chain);
            }
        }
        // Two nodes: the request to node 1, its marker to node 2, node 2's marker
        // back, node 1's part.
        assert_eq!(ring_hops(2), 4);
        assert_eq!(ring_hops(16), 11);
    }
}
