//! The native asynchronous form, used from tokio directly.

mod common;

use common::{config, node};
use snapshot_core::{Endpoint, TransportError};
use std::time::Duration;
use transport_tcp::{AsyncTcpTransport, AsyncTransport};

#[tokio::test]
async fn frames_go_both_ways_on_the_callers_runtime() {
    let mut master = AsyncTcpTransport::<String>::bind(Endpoint::Master, config())
        .await
        .unwrap();
    let mut worker = AsyncTcpTransport::<String>::bind(node(1), config())
        .await
        .unwrap();
    let (m, w) = (master.address().unwrap(), worker.address().unwrap());
    master.connect(node(1), &w).await.unwrap();
    worker.connect(Endpoint::Master, &m).await.unwrap();

    for n in 0..1000 {
        master.send(node(1), format!("job {n}")).await.unwrap();
    }
    master.flush().await.unwrap();
    for n in 0..1000 {
        let (from, job) = worker.recv().await.unwrap();
        assert_eq!((from, job), (Endpoint::Master, format!("job {n}")));
        worker
            .send(Endpoint::Master, format!("done {n}"))
            .await
            .unwrap();
    }
    // recv flushes the replies before it waits.
    assert_eq!(
        worker
            .recv_timeout(Duration::from_millis(20))
            .await
            .unwrap(),
        None
    );
    for n in 0..1000 {
        assert_eq!(master.recv().await.unwrap(), (node(1), format!("done {n}")));
    }

    // close waits until everything sent is written, then the peer sees it go.
    worker.send(Endpoint::Master, "bye".into()).await.unwrap();
    worker.close().await.unwrap();
    assert_eq!(master.recv().await.unwrap(), (node(1), "bye".to_string()));
    assert!(matches!(
        master.recv().await,
        Err(TransportError::Disconnected(p)) if p == node(1)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxed_transport_can_be_picked_at_run_time_and_recv_is_cancel_safe() {
    let mut a: Box<dyn AsyncTransport<u64>> = Box::new(
        AsyncTcpTransport::<u64>::bind(node(1), config())
            .await
            .unwrap(),
    );
    let mut b: Box<dyn AsyncTransport<u64>> = Box::new(
        AsyncTcpTransport::<u64>::bind(node(2), config())
            .await
            .unwrap(),
    );
    a.connect(node(2), &b.address().unwrap()).await.unwrap();
    assert_eq!(a.local(), node(1));

    // A receive cancelled by a timeout loses nothing.
    let cancelled = tokio::time::timeout(Duration::from_millis(10), b.recv()).await;
    assert!(cancelled.is_err());
    let sender = tokio::spawn(async move {
        for n in 0..10_000u64 {
            a.send(node(2), n).await.unwrap();
        }
        a.flush().await.unwrap();
        a
    });
    let mut n = 0;
    while n < 10_000 {
        tokio::select! {
            got = b.recv() => {
                assert_eq!(got.unwrap(), (node(1), n));
                n += 1;
            }
            // Races with recv all along: whichever wins, no frame is lost.
            () = tokio::task::yield_now() => {}
        }
    }
    drop(sender.await.unwrap());
}
