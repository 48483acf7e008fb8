//! The native asynchronous form, used from tokio directly.

mod common;

use common::{config, node};
use snapshot_core::{Endpoint, Incoming, TransportError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use transport_tcp::{AsyncTcpTransport, AsyncTransport, TcpConfig};

const PATIENCE: Duration = common::PATIENCE;

async fn bind<F>(local: Endpoint, config: TcpConfig) -> AsyncTcpTransport<F>
where
    F: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    AsyncTcpTransport::bind(local, config).await.unwrap()
}

/// Connects `a` to `b` and `b` to `a`.
async fn pair_up<F>(a: &mut impl AsyncTransport<F>, b: &mut impl AsyncTransport<F>)
where
    F: Send + 'static,
{
    a.connect(b.local(), &b.address()).await.unwrap();
    b.connect(a.local(), &a.address()).await.unwrap();
}

/// The next frame or departure, failing the test if nothing comes in time.
async fn recv<F: Send + 'static>(
    t: &mut (impl AsyncTransport<F> + ?Sized),
) -> Result<Incoming<F>, TransportError> {
    match t.recv_timeout(PATIENCE).await? {
        Some(incoming) => Ok(incoming),
        None => panic!("{} received nothing within {PATIENCE:?}", t.local()),
    }
}

/// The next frame and its sender.
async fn frame<F: Send + 'static + std::fmt::Debug>(
    t: &mut (impl AsyncTransport<F> + ?Sized),
) -> (Endpoint, F) {
    match recv(t).await {
        Ok(Incoming::Frame(from, frame)) => (from, frame),
        other => panic!("{}: expected a frame, got {other:?}", t.local()),
    }
}

#[tokio::test]
async fn frames_go_both_ways_on_the_callers_runtime() {
    let mut master = bind::<String>(Endpoint::Role(1), config()).await;
    let mut worker = bind::<String>(node(1), config()).await;
    pair_up(&mut master, &mut worker).await;

    for n in 0..1000 {
        master.send(node(1), format!("job {n}")).await.unwrap();
    }
    master.flush().await.unwrap();
    for n in 0..1000 {
        assert_eq!(
            frame(&mut worker).await,
            (Endpoint::Role(1), format!("job {n}"))
        );
        worker
            .send(Endpoint::Role(1), format!("done {n}"))
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
        assert_eq!(frame(&mut master).await, (node(1), format!("done {n}")));
    }

    // close waits until everything sent is written, then the peer sees it go: once,
    // after its last frame, and then nobody is left.
    worker.send(Endpoint::Role(1), "bye".into()).await.unwrap();
    worker.close().await.unwrap();
    assert_eq!(frame(&mut master).await, (node(1), "bye".to_string()));
    assert_eq!(
        recv(&mut master).await.unwrap(),
        Incoming::Departed(node(1))
    );
    assert!(matches!(
        recv(&mut master).await,
        Err(TransportError::Closed)
    ));
    assert!(matches!(
        master.send(node(1), "anyone?".into()).await,
        Err(TransportError::Disconnected(p)) if p == node(1)
    ));
    master.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boxed_transport_can_be_picked_at_run_time_and_recv_is_cancel_safe() {
    let mut a: Box<dyn AsyncTransport<u64>> = Box::new(bind::<u64>(node(1), config()).await);
    let mut b: Box<dyn AsyncTransport<u64>> = Box::new(bind::<u64>(node(2), config()).await);
    a.connect(node(2), &b.address()).await.unwrap();
    b.connect(node(1), &a.address()).await.unwrap();
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
                assert_eq!(got.unwrap(), Incoming::Frame(node(1), n));
                n += 1;
            }
            // Races with recv all along: whichever wins, no frame is lost.
            () = tokio::task::yield_now() => {}
        }
    }
    drop(sender.await.unwrap());
}

/// The peer closes the connection this endpoint writes on while frames it sent are
/// still to be read: the departure comes after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_noticed_by_the_writer_waits_for_the_frames_still_to_be_read() {
    const FRAMES: u32 = 5_000;
    let mut a = bind::<u32>(node(1), config()).await;
    let mut b = bind::<u32>(node(2), config()).await;
    pair_up(&mut a, &mut b).await;
    a.send(node(2), 0).await.unwrap();
    a.flush().await.unwrap();
    for n in 0..FRAMES {
        b.send(node(1), n).await.unwrap();
    }
    b.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for n in 0..FRAMES {
        assert_eq!(frame(&mut a).await, (node(2), n));
    }
    assert_eq!(recv(&mut a).await.unwrap(), Incoming::Departed(node(2)));
    assert!(matches!(recv(&mut a).await, Err(TransportError::Closed)));
}

/// A peer that never wrote departs as soon as the connection to it breaks.
#[tokio::test]
async fn a_peer_that_never_wrote_departs_when_the_connection_to_it_breaks() {
    let mut a = bind::<u32>(node(1), config()).await;
    assert_eq!(
        a.recv_timeout(Duration::from_millis(20)).await.unwrap(),
        None,
        "no peer yet: recv waits"
    );
    let b = bind::<u32>(node(2), config()).await;
    a.connect(node(2), &b.address()).await.unwrap();
    drop(b);
    assert_eq!(recv(&mut a).await.unwrap(), Incoming::Departed(node(2)));
    assert!(matches!(
        a.send(node(2), 1).await,
        Err(TransportError::Disconnected(_))
    ));
    a.flush().await.unwrap();
    assert!(matches!(recv(&mut a).await, Err(TransportError::Closed)));
}

/// An endpoint that does not receive holds a bounded amount: its readers stop
/// reading once its inbox is full, the sockets fill, and the sender waits. Once it
/// receives, everything arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_does_not_receive_holds_the_sender_back() {
    const SIZE: usize = 64 * 1024;
    const FRAMES: u64 = 2_000; // 128 MiB: far more than the bound
    let small = TcpConfig {
        inbox: 2,
        ..config()
    };
    let mut receiver = bind::<(u64, Vec<u8>)>(Endpoint::Role(0), small).await;
    let mut sender = bind::<(u64, Vec<u8>)>(node(1), config()).await;
    pair_up(&mut receiver, &mut sender).await;
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&sent);
    let sending = tokio::spawn(async move {
        for n in 0..FRAMES {
            sender
                .send(Endpoint::Role(0), (n, vec![n as u8; SIZE]))
                .await
                .unwrap();
            progress.store(n + 1, Ordering::Release);
        }
        sender.flush().await.unwrap();
        sender
    });
    // Let the sender go as far as it can.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::Acquire);
        if now == last {
            break;
        }
        last = now;
    }
    let held = last * SIZE as u64;
    assert!(
        held < 64 << 20,
        "the sender got {held} bytes out to a receiver that does not receive"
    );
    for n in 0..FRAMES {
        let (from, (got, payload)) = frame(&mut receiver).await;
        assert_eq!((from, got), (node(1), n));
        assert_eq!(payload.len(), SIZE);
    }
    drop(sending.await.unwrap());
}

/// Each side sends far more than the sockets, the writer queues and the inboxes hold
/// before it receives anything: a send that waits takes in what comes meanwhile, so
/// neither waits for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_flooding_each_other_do_not_deadlock() {
    const FRAMES: u64 = 20_000; // 20 MB each way
    let small = TcpConfig {
        inbox: 1,
        ..config()
    };
    let mut a = bind::<(u64, Vec<u8>)>(node(1), small.clone()).await;
    let mut b = bind::<(u64, Vec<u8>)>(node(2), small).await;
    pair_up(&mut a, &mut b).await;
    let run = |mut t: AsyncTcpTransport<(u64, Vec<u8>)>, peer| async move {
        for n in 0..FRAMES {
            t.send(peer, (n, vec![n as u8; 1000])).await.unwrap();
        }
        t.flush().await.unwrap();
        for n in 0..FRAMES {
            let (from, (got, payload)) = frame(&mut t).await;
            assert_eq!((from, got), (peer, n));
            assert_eq!(payload, vec![n as u8; 1000]);
        }
        t
    };
    let both = async { tokio::join!(run(a, node(2)), run(b, node(1))) };
    let (a, b) = tokio::time::timeout(PATIENCE, both)
        .await
        .expect("the two endpoints deadlocked");
    drop((a, b));
}

#[tokio::test]
async fn an_empty_key_or_inbox_is_a_configuration_error() {
    let refused = AsyncTcpTransport::<u32>::bind(node(1), TcpConfig::new("c", Vec::new())).await;
    assert!(matches!(refused, Err(TransportError::Config(_))));
    let refused = AsyncTcpTransport::<u32>::bind(
        node(1),
        TcpConfig {
            inbox: 0,
            ..config()
        },
    )
    .await;
    assert!(matches!(refused, Err(TransportError::Config(_))));
}
