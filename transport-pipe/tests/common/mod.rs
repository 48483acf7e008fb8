//! Helpers shared by the integration tests.

#![allow(dead_code)]

use snapshot_core::{Endpoint, Incoming, Transport, TransportError};
use std::path::Path;
use std::time::Duration;

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Receives one frame or departure (or error), failing the test if nothing comes in
/// time.
pub fn recv<F>(t: &mut impl Transport<F>) -> Result<Incoming<F>, TransportError> {
    match t.recv_timeout(PATIENCE) {
        Ok(Some(incoming)) => Ok(incoming),
        Ok(None) => panic!("{} waited {PATIENCE:?} for a frame", t.local()),
        Err(error) => Err(error),
    }
}

/// Receives one frame, failing the test if a departure, an error or nothing comes.
pub fn recv_frame<F: std::fmt::Debug>(t: &mut impl Transport<F>) -> (Endpoint, F) {
    let local = t.local();
    match recv(t) {
        Ok(Incoming::Frame(from, frame)) => (from, frame),
        other => panic!("{local} expected a frame, got {other:?}"),
    }
}

/// Asserts that `dir` holds nothing: no FIFO was left behind.
pub fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("the test directory is readable")
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .expect("the test directory is listable");
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the test directory is readable")
        .map(|entry| {
            entry
                .expect("the test directory is listable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The run directory as an address.
pub fn address(dir: &Path) -> String {
    dir.to_str().expect("temp dirs have UTF-8 paths").to_owned()
}
