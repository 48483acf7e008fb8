//! Dropping the synchronous transport leaves no thread behind. Alone in its binary,
//! so that no other test's threads come and go meanwhile.

mod common;

use common::{endpoint, frame, node, pair_up};
use snapshot_core::Transport;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn dropping_the_transports_joins_their_threads() {
    let before = threads();
    let mut a = endpoint::<u32>(node(1));
    let mut b = endpoint::<u32>(node(2));
    pair_up(&mut a, &mut b);
    a.send(node(2), 1).unwrap();
    a.flush().unwrap();
    assert_eq!(frame(&mut b), (node(1), 1));
    assert!(
        threads() > before,
        "each transport runs a thread of its own"
    );
    drop(a);
    drop(b);
    assert_eq!(threads(), before, "no thread is left once both are dropped");
}
