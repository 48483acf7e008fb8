//! `transport_throughput/{mem,pipe,tcp}`: transfers per second, one way from node 1
//! to node 2 through snapshot-core's `Node` driver, each node a thread of this process
//! over its own endpoint (real FIFOs and loopback sockets on pipe and tcp); beside
//! `transport_throughput/{mem,pipe,tcp}/ceiling`, the same frames over the bare
//! medium: a crossbeam channel, one frame per `send`; an OS pipe and a loopback TCP
//! socket, written through 64 KiB buffers.
//!
//! `transport_throughput/tcp-tls` is the `tcp` row's run with every connection TLS
//! 1.3, mutually authenticated by certificates of a CA made in memory (`Ca`): the
//! same endpoints (driver, node 1, node 2), connected pair by pair as the harness
//! connects them, the same nodes' loops (node 1 sends 4,096 transfers between two
//! looks at what has arrived, node 2 takes them in), timed from `Start` to the last
//! `Done`. `transport_throughput/tcp-tls/hmac` is that same loop with the HMAC hello
//! instead of TLS (what the `tcp` row runs, through the harness): the ratio of the two
//! is what TLS costs, and the `hmac` row beside `tcp` shows that the loops agree.
//!
//! ```text
//! cargo bench -p snapshot-benches --bench transport_throughput
//! ```

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use snapshot_benches::{CEILING_FRAMES, throughput_transfers};
use snapshot_core::{Endpoint, Event, Frame, Node, NodeError, NodeId, Transport, TransportError};
use snapshot_harness::{
    AMOUNT, Account, Control, Medium, OPENING, Topology, Transfer, TransportKind, Wire, ceiling,
    run_transfers,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport_tcp::{Ca, TcpConfig, TcpTransport, random_key};

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport_throughput");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &medium in TransportKind::all() {
        let count = throughput_transfers(medium);
        group.throughput(Throughput::Elements(count));
        group.bench_function(medium.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let run = run_transfers(medium, Topology::OneWay, count, 0)
                            .expect("the run completes");
                        assert_eq!(run.transfers, count);
                        run.elapsed
                    })
                    .sum()
            })
        });
        let frames = CEILING_FRAMES;
        group.throughput(Throughput::Elements(frames));
        group.bench_function(BenchmarkId::new(medium.name(), "ceiling"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| ceiling(medium, frames).expect("the bare medium works"))
                    .sum()
            })
        });
    }
    // TLS, and beside it the same loop with the HMAC hello: the same code but for
    // the connections' security, whose ratio is what TLS costs.
    let count = throughput_transfers(TransportKind::Tcp);
    let ca = Ca::new(TLS_CLUSTER).expect("a CA in memory");
    group.throughput(Throughput::Elements(count));
    for (name, ca) in [("tcp-tls", Some(&ca)), ("tcp-tls/hmac", None)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| one_way(ca, count).expect("the run completes"))
                    .sum()
            })
        });
    }
    group.finish();
}

/// The cluster name of the `tcp-tls` rows.
const TLS_CLUSTER: &str = "bench";

/// The driver's endpoint, as in the harness.
const DRIVER: Endpoint = Endpoint::Role(0);

const SENDER: NodeId = NodeId(1);
const RECEIVER: NodeId = NodeId(2);

/// `count` transfers from node 1 to node 2, over TLS with certificates of `ca`, or
/// with the HMAC hello and a key drawn for the run: the time from the driver's
/// `Start` to the last `Done`. Setting up (certificates, endpoints, handshakes) and
/// stopping are not part of it.
fn one_way(ca: Option<&Ca>, count: u64) -> Result<Duration, TransportError> {
    let key = random_key();
    let endpoint = |e: Endpoint| -> Result<TcpTransport<Wire>, TransportError> {
        let config = match ca {
            Some(ca) => TcpConfig {
                tls: Some(ca.issue(e)?),
                ..TcpConfig::new(TLS_CLUSTER, Vec::new())
            },
            None => TcpConfig::new(TLS_CLUSTER, key.clone()),
        };
        TcpTransport::new(e, config)
    };
    let mut driver = endpoint(DRIVER)?;
    let mut sender = endpoint(Endpoint::Node(SENDER))?;
    let mut receiver = endpoint(Endpoint::Node(RECEIVER))?;
    // Every pair that talks, both ways, as the harness's plan connects them.
    let (d, s, r) = (driver.address(), sender.address(), receiver.address());
    driver.connect(Endpoint::Node(SENDER), &s)?;
    sender.connect(DRIVER, &d)?;
    driver.connect(Endpoint::Node(RECEIVER), &r)?;
    receiver.connect(DRIVER, &d)?;
    sender.connect(Endpoint::Node(RECEIVER), &r)?;
    receiver.connect(Endpoint::Node(SENDER), &s)?;

    let batch = TransportKind::Tcp.batch();
    let threads: Vec<JoinHandle<Result<(), NodeError>>> = vec![
        std::thread::spawn(move || node_loop(SENDER, RECEIVER, count, 0, batch, sender)),
        std::thread::spawn(move || node_loop(RECEIVER, SENDER, 0, count, batch, receiver)),
    ];
    let start = Instant::now();
    let timed = (|| {
        for node in [SENDER, RECEIVER] {
            driver.send(Endpoint::Node(node), Frame::Control(Control::Start))?;
        }
        driver.flush()?;
        let mut done = 0;
        while done < 2 {
            match driver.recv_timeout(Duration::from_secs(60))? {
                Some(snapshot_core::Incoming::Frame(_, Frame::Control(Control::Done))) => done += 1,
                other => {
                    return Err(TransportError::Protocol(format!(
                        "the driver was sent {other:?}"
                    )));
                }
            }
        }
        Ok(start.elapsed())
    })();
    for node in [SENDER, RECEIVER] {
        let _ = driver.send(Endpoint::Node(node), Frame::Control(Control::Stop));
    }
    let _ = driver.flush();
    drop(driver);
    for thread in threads {
        thread
            .join()
            .map_err(|_| TransportError::Protocol("a node panicked".into()))?
            .map_err(|error| TransportError::Protocol(error.to_string()))?;
    }
    timed
}

/// A node of the `tcp-tls` rows, as the harness's `Work::Transfers`: after `Start`,
/// sends `send` transfers to `peer`, `batch` between two looks at what has arrived,
/// takes in `expected`, says `Done`, and waits for `Stop`.
fn node_loop(
    id: NodeId,
    peer: NodeId,
    send: u64,
    expected: u64,
    batch: u64,
    mut t: TcpTransport<Wire>,
) -> Result<(), NodeError> {
    let mut node = Node::new(
        id,
        Account {
            balance: OPENING,
            handled: 0,
        },
    );
    node.add_peer(peer)?;
    loop {
        match next_control(&mut node, &mut t)? {
            Some(Control::Start) => break,
            None => return Ok(()),
            Some(_) => {}
        }
    }
    let mut sent = 0;
    while sent < send {
        for _ in 0..batch.min(send - sent) {
            if !node.process_mut().withdraw(AMOUNT) {
                return Err(TransportError::Protocol(format!("{id} has no money left")).into());
            }
            node.send(&mut t, peer, Transfer(AMOUNT))?;
            sent += 1;
        }
        node.poll_event(&mut t, Duration::ZERO)?;
    }
    while node.process().handled < expected {
        node.poll_event(&mut t, Duration::from_millis(1))?;
    }
    t.send(DRIVER, Frame::Control(Control::Done))?;
    t.flush()?;
    // Until `Stop`, or the driver gone (an error then means that too).
    while let Ok(Some(control)) = next_control(&mut node, &mut t) {
        if control == Control::Stop {
            break;
        }
    }
    Ok(())
}

/// The next control frame for the node, handling what comes before it; `None` once
/// the driver has gone.
fn next_control(
    node: &mut Node<Account>,
    t: &mut TcpTransport<Wire>,
) -> Result<Option<Control>, NodeError> {
    loop {
        match node.next_event(t)? {
            Event::Control { control, .. } => return Ok(Some(control)),
            Event::Departed(DRIVER) => return Ok(None),
            _ => {}
        }
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
