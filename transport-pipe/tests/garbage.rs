//! Bytes that are not frames, written straight into a FIFO by the test: the peer is
//! dropped and reported as departed, after the frames it sent before; nothing
//! crashes, and the others go on.

mod common;

use common::{address, assert_empty, recv};
use serde::{Deserialize, Serialize};
use snapshot_core::codec;
use snapshot_core::{Endpoint, Incoming, NodeId, Transport, TransportError};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::time::Duration;
use transport_pipe::{PipeOptions, PipeTransport, fifo_path};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Frame {
    seq: u32,
    text: String,
}

const INTRUDER: Endpoint = Endpoint::Node(NodeId(9));
const HONEST: Endpoint = Endpoint::Node(NodeId(1));

fn frame(seq: u32) -> Frame {
    Frame {
        seq,
        text: format!("frame {seq}"),
    }
}

/// The observer, connected to an honest node and to an intruder whose FIFO the test
/// writes by hand.
struct Setup {
    dir: tempfile::TempDir,
    observer: PipeTransport<Frame>,
    honest: PipeTransport<Frame>,
    intruder: File,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let run = address(dir.path());
    let options = PipeOptions::default().with_max_frame(1024);
    let mut observer =
        PipeTransport::with_options(dir.path(), Endpoint::Role(0), options.clone()).unwrap();
    observer.connect(HONEST, &run).unwrap();
    observer.connect(INTRUDER, &run).unwrap();
    let mut honest = PipeTransport::with_options(dir.path(), HONEST, options).unwrap();
    honest.connect(Endpoint::Role(0), &run).unwrap();
    // The observer is reading, so this blocking open returns at once.
    let intruder = OpenOptions::new()
        .write(true)
        .open(fifo_path(dir.path(), INTRUDER, Endpoint::Role(0)))
        .unwrap();
    Setup {
        dir,
        observer,
        honest,
        intruder,
    }
}

fn encoded(frames: &[Frame]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for f in frames {
        codec::encode_into(f, &mut bytes, 1024).unwrap();
    }
    bytes
}

/// Writes `bad` after two good frames, and checks what the observer makes of it.
fn intruder_writes(bad: &[u8]) {
    let Setup {
        dir,
        mut observer,
        mut honest,
        mut intruder,
    } = setup();
    let mut bytes = encoded(&[frame(0), frame(1)]);
    bytes.extend_from_slice(bad);
    intruder.write_all(&bytes).unwrap();

    assert_eq!(
        recv(&mut observer).unwrap(),
        Incoming::Frame(INTRUDER, frame(0))
    );
    assert_eq!(
        recv(&mut observer).unwrap(),
        Incoming::Frame(INTRUDER, frame(1))
    );
    assert_eq!(
        recv(&mut observer).unwrap(),
        Incoming::Departed(INTRUDER),
        "the intruder is dropped as departed"
    );
    // Its FIFO is closed: more bytes go nowhere.
    let more = intruder.write_all(&encoded(&[frame(2)]));
    assert_eq!(more.unwrap_err().kind(), ErrorKind::BrokenPipe);
    // The honest node is not affected.
    honest.send(Endpoint::Role(0), frame(7)).unwrap();
    honest.flush().unwrap();
    assert_eq!(
        recv(&mut observer).unwrap(),
        Incoming::Frame(HONEST, frame(7))
    );
    assert_eq!(
        observer.recv_timeout(Duration::from_millis(20)).unwrap(),
        None,
        "the intruder is reported once"
    );
    assert!(
        matches!(observer.send(INTRUDER, frame(8)), Err(TransportError::Disconnected(p)) if p == INTRUDER),
        "and sends to it fail"
    );
    drop((observer, honest, intruder));
    assert_empty(dir.path());
}

#[test]
fn a_frame_that_does_not_decode_drops_the_peer() {
    // A 5-byte body that is no Frame: a u32 varint that never ends.
    intruder_writes(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn an_oversized_length_prefix_drops_the_peer() {
    intruder_writes(&u32::MAX.to_le_bytes());
    intruder_writes(&1025u32.to_le_bytes());
}

#[test]
fn a_frame_cut_short_at_the_end_of_the_stream_is_a_departure() {
    let Setup {
        dir,
        mut observer,
        honest,
        mut intruder,
    } = setup();
    let bytes = encoded(&[frame(0), frame(1)]);
    intruder.write_all(&bytes[..bytes.len() - 3]).unwrap();
    drop(intruder);
    assert_eq!(
        recv(&mut observer).unwrap(),
        Incoming::Frame(INTRUDER, frame(0))
    );
    assert_eq!(recv(&mut observer).unwrap(), Incoming::Departed(INTRUDER));
    drop((observer, honest));
    assert_empty(dir.path());
}

/// Random bytes (a fixed seed, so the run is repeatable), a lot of them.
#[test]
fn random_bytes_do_not_crash_the_receiver() {
    for seed in 1..=20u64 {
        let Setup {
            dir,
            mut observer,
            mut honest,
            mut intruder,
        } = setup();
        let mut state = seed;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        // More than a pipe holds: written while the observer receives, and then
        // closed. The receiver may drop the FIFO before all of it is written.
        let writing = std::thread::spawn(move || {
            let written = intruder.write_all(&noise);
            drop(intruder);
            written
        });
        // Whatever happened to decode is delivered; then the intruder is gone.
        loop {
            match recv(&mut observer) {
                Ok(Incoming::Frame(from, _)) => assert_eq!(from, INTRUDER),
                Ok(Incoming::Departed(p)) if p == INTRUDER => break,
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
        match writing.join().unwrap() {
            Ok(()) => {}
            Err(error) => assert_eq!(error.kind(), ErrorKind::BrokenPipe),
        }
        honest.send(Endpoint::Role(0), frame(3)).unwrap();
        honest.flush().unwrap();
        assert_eq!(
            recv(&mut observer).unwrap(),
            Incoming::Frame(HONEST, frame(3))
        );
        drop((observer, honest));
        assert_empty(dir.path());
    }
}

/// A file that is not a FIFO where one should be is refused, not read.
#[test]
fn a_regular_file_in_place_of_a_fifo_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = fifo_path(dir.path(), HONEST, Endpoint::Role(0));
    File::create(&path).unwrap();
    let mut observer = PipeTransport::<Frame>::new(dir.path(), Endpoint::Role(0)).unwrap();
    assert!(matches!(
        observer.connect(HONEST, &address(dir.path())),
        Err(TransportError::Io { .. })
    ));
    drop(observer);
    assert!(Path::new(&path).exists(), "what is not ours is left alone");
}
