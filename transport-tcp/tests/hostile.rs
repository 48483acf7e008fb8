//! Hostile peers on an endpoint's port: each is refused, with a warning, while a
//! legitimate pair of endpoints goes on exchanging frames, the same frames in the same
//! order. And a hostile member, past the handshake: a forged marker is refused by the
//! node's engine and changes nothing.

mod common;

use common::{
    PATIENCE, address, capture_warnings, closed_within, config, endpoint, frame, node, still_open,
    wait_for_warning, warnings,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use snapshot_core::{
    Endpoint, EngineError, Envelope, Event, Frame, Node, NodeError, NodeId, SnapshotId, Transport,
    TransportError,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use transport_tcp::{DEFAULT_MAX_HANDSHAKES, TcpConfig, TcpTransport};

/// How the endpoint `server` names the connection from `stream` in its log: itself,
/// then the stream's local address. Naming the server keeps a warning about an earlier
/// test's connection from the same port, now reused, from matching.
fn remote_tag(server: Endpoint, stream: &TcpStream) -> String {
    format!("local={server} remote={}", stream.local_addr().unwrap())
}

/// Two endpoints exchanging numbered frames both ways: `server`, which the hostile
/// peers connect to, and `peer`. Every frame received is checked against the next
/// number its sender sent.
struct Pair {
    server: TcpTransport<u64>,
    peer: TcpTransport<u64>,
    /// The next frame each way: server to peer, peer to server.
    next: (u64, u64),
}

impl Pair {
    /// `server` and a peer (node 1), connected both ways, with `config`.
    fn new(server: Endpoint, config: TcpConfig) -> Self {
        let mut server = TcpTransport::new(server, config.clone()).unwrap();
        let mut peer = TcpTransport::new(node(1), config).unwrap();
        peer.connect(server.local(), &address(&server)).unwrap();
        server.connect(peer.local(), &address(&peer)).unwrap();
        let mut pair = Pair {
            server,
            peer,
            next: (0, 0),
        };
        pair.exchange(10);
        pair
    }

    /// The server's address, for the strangers.
    fn at(&self) -> String {
        address(&self.server)
    }

    /// `rounds` round trips, each a burst of three frames from the peer answered by
    /// two from the server; every frame is the next in its sender's sequence.
    fn exchange(&mut self, rounds: usize) {
        let (server, peer) = (self.server.local(), self.peer.local());
        for _ in 0..rounds {
            let first = self.next.1;
            for n in first..first + 3 {
                self.peer.send(server, n).unwrap();
            }
            self.peer.flush().unwrap();
            for n in first..first + 3 {
                assert_eq!(frame(&mut self.server), (peer, n), "peer to server");
            }
            self.next.1 += 3;
            let first = self.next.0;
            for n in first..first + 2 {
                self.server.send(peer, n).unwrap();
            }
            self.server.flush().unwrap();
            for n in first..first + 2 {
                assert_eq!(frame(&mut self.peer), (server, n), "server to peer");
            }
            self.next.0 += 2;
        }
    }

    /// Nothing else is waiting for either side: no stray frame, no departure.
    fn quiet(&mut self) {
        assert_eq!(
            self.server.recv_timeout(Duration::from_millis(20)).unwrap(),
            None
        );
        assert_eq!(
            self.peer.recv_timeout(Duration::from_millis(20)).unwrap(),
            None
        );
    }
}

/// Whether the other side has closed `stream`, right now: end of stream or reset.
fn closed_now(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// More idle connections than the cap on handshakes in progress: the oldest beyond
/// the cap are closed at once, without waiting for their hello timeout, a legitimate
/// peer still connects and exchanges frames, and the idle connections within the cap
/// are closed when their hello timeout expires.
#[test]
fn idle_connections_beyond_the_cap_are_closed_at_once_and_delay_no_peer() {
    const CAP: usize = DEFAULT_MAX_HANDSHAKES;
    const BEYOND: usize = 8;
    capture_warnings();
    let hello_timeout = Duration::from_secs(5);
    let config = TcpConfig {
        hello_timeout,
        ..config()
    };
    let mut server = TcpTransport::<u64>::new(Endpoint::Role(20), config.clone()).unwrap();
    let at = address(&server);
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..CAP + BEYOND)
        .map(|_| TcpStream::connect(&at).unwrap())
        .collect();

    // A legitimate peer connects while the idle ones hold every slot, and its
    // frames flow both ways.
    let mut peer = TcpTransport::<u64>::new(node(1), config).unwrap();
    peer.connect(server.local(), &at).unwrap();
    server.connect(node(1), &address(&peer)).unwrap();
    for n in 0..50 {
        peer.send(server.local(), n).unwrap();
        peer.flush().unwrap();
        assert_eq!(frame(&mut server), (node(1), n));
        server.send(node(1), n + 1).unwrap();
        server.flush().unwrap();
        assert_eq!(frame(&mut peer), (server.local(), n + 1));
    }

    // The connections beyond the cap (and one more, for the peer's) are closed
    // before any hello timeout expires.
    let deadline = Instant::now() + PATIENCE;
    let closed = loop {
        let closed: Vec<bool> = idle.iter().map(closed_now).collect();
        if closed.iter().filter(|&&c| c).count() > BEYOND || Instant::now() > deadline {
            break closed;
        }
        thread::sleep(Duration::from_millis(5));
    };
    // Read after the check: if the clock says the timeout has not expired, it had
    // not when they were checked either.
    let elapsed = opened.elapsed();
    let evicted = closed.iter().filter(|&&c| c).count();
    assert!(
        elapsed < hello_timeout,
        "{evicted} idle connections closed after {elapsed:?}: they waited for the hello \
         timeout ({hello_timeout:?})"
    );
    assert_eq!(
        evicted,
        BEYOND + 1,
        "the connections beyond the cap, and one for the peer"
    );
    for (stream, _) in idle.iter().zip(&closed).filter(|(_, c)| **c) {
        let logged = warnings(&remote_tag(Endpoint::Role(20), stream));
        assert!(
            logged
                .iter()
                .any(|line| line.contains("too many handshakes in progress")),
            "{logged:?}"
        );
    }

    // The others are dropped at their hello timeout.
    for mut stream in idle {
        assert!(closed_within(&mut stream, PATIENCE));
    }
    assert!(opened.elapsed() >= hello_timeout);
    peer.send(server.local(), 1000).unwrap();
    peer.flush().unwrap();
    assert_eq!(frame(&mut server), (node(1), 1000));
}

/// A fake server that answers every connection with an HTTP error, as a web server
/// would answer a hello; it serves `connections` connections and stops.
fn http_server(connections: usize) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = listener.local_addr().unwrap().to_string();
    let serving = thread::spawn(move || {
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut request = [0; 1024];
            // The request is whatever came first; a web server would not parse it.
            let _ = stream.read(&mut request);
            stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                .unwrap();
            let _ = stream.shutdown(Shutdown::Write);
            // Until the client hangs up (or the read times out).
            while matches!(stream.read(&mut request), Ok(n) if n > 0) {}
        }
    });
    (at, serving)
}

/// A "peer" that answers the hello in HTTP is named as what it is: not a
/// snapshot-rs endpoint, with the bytes it sent; not a handshake of some absurd size.
#[test]
fn a_peer_answering_in_http_is_reported_as_not_speaking_the_protocol() {
    let (at, serving) = http_server(1);
    let mut client = TcpTransport::<u64>::new(node(1), config()).unwrap();
    let refused = client.connect(node(2), &at);
    serving.join().unwrap();
    let Err(TransportError::Protocol(why)) = &refused else {
        panic!("expected a protocol error, got {refused:?}");
    };
    assert!(
        why.contains(
            r#"the peer does not speak the snapshot-rs protocol (it sent "HTTP/1.1 400 Bad Request\r\n\r\n")"#
        ),
        "{why}"
    );
    assert!(
        !why.contains("1347703880") && !why.contains("bound"),
        "{why}"
    );
}

/// A client of another protocol is refused with a warning that says so.
#[test]
fn a_client_speaking_http_is_refused_as_not_speaking_the_protocol() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(21), config());
    let mut stranger = TcpStream::connect(pair.at()).unwrap();
    stranger
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    pair.exchange(20);
    assert!(closed_within(&mut stranger, PATIENCE));
    let logged = wait_for_warning(&[
        &remote_tag(Endpoint::Role(21), &stranger),
        r#"the peer does not speak the snapshot-rs protocol (it sent "GET / HTTP/1.1\r\nHost: "#,
    ]);
    assert!(
        logged.is_some(),
        "{:?}",
        warnings(&remote_tag(Endpoint::Role(21), &stranger))
    );
    pair.exchange(20);
    pair.quiet();
}

/// Seeded random bytes instead of a hello.
#[test]
fn random_bytes_are_refused() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(22), config());
    let mut bytes = vec![0; 4096];
    ChaCha8Rng::seed_from_u64(0x5eed_0001).fill_bytes(&mut bytes);
    let mut stranger = TcpStream::connect(pair.at()).unwrap();
    // The endpoint may close it before it has taken everything.
    let _ = stranger.write_all(&bytes);
    pair.exchange(20);
    assert!(closed_within(&mut stranger, PATIENCE));
    assert!(
        wait_for_warning(&[
            &remote_tag(Endpoint::Role(22), &stranger),
            "the peer does not speak the snapshot-rs protocol"
        ])
        .is_some(),
        "{:?}",
        warnings(&remote_tag(Endpoint::Role(22), &stranger))
    );
    pair.exchange(20);
    pair.quiet();
}

/// A hello that opens as it should and announces a message over the 1 KiB bound.
#[test]
fn a_hello_announcing_a_handshake_over_the_bound_is_refused() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(23), config());
    let mut stranger = TcpStream::connect(pair.at()).unwrap();
    let mut hello = (1u32 << 20).to_le_bytes().to_vec();
    hello.extend_from_slice(b"snap-tcp");
    hello.extend_from_slice(&[0; 64]);
    let _ = stranger.write_all(&hello);
    pair.exchange(20);
    assert!(closed_within(&mut stranger, PATIENCE));
    assert!(
        wait_for_warning(&[
            &remote_tag(Endpoint::Role(23), &stranger),
            "a handshake message of 1048576 bytes, over the 1024-byte bound"
        ])
        .is_some(),
        "{:?}",
        warnings(&remote_tag(Endpoint::Role(23), &stranger))
    );
    pair.exchange(20);
    pair.quiet();
}

/// A connection that sends nothing is closed when the hello timeout expires; the
/// pair's frames flow while it is still open.
#[test]
fn a_half_open_connection_is_closed_at_the_hello_timeout() {
    capture_warnings();
    let hello_timeout = Duration::from_millis(500);
    let config = TcpConfig {
        hello_timeout,
        ..config()
    };
    let mut pair = Pair::new(Endpoint::Role(24), config);
    let opened = Instant::now();
    let mut stranger = TcpStream::connect(pair.at()).unwrap();
    pair.exchange(20);
    let open_meanwhile = still_open(&stranger);
    let exchanged = opened.elapsed();
    assert!(
        open_meanwhile || exchanged >= hello_timeout,
        "closed before its hello timeout"
    );
    assert!(closed_within(&mut stranger, PATIENCE));
    assert!(opened.elapsed() >= hello_timeout);
    assert!(
        wait_for_warning(&[
            &remote_tag(Endpoint::Role(24), &stranger),
            "no handshake in time"
        ])
        .is_some(),
        "{:?}",
        warnings(&remote_tag(Endpoint::Role(24), &stranger))
    );
    pair.exchange(20);
    pair.quiet();
}

/// A hello that comes one byte a second: the connection is closed when the hello
/// timeout expires, and the pair's exchange completes while it trickles.
#[test]
fn a_slow_sender_is_closed_at_the_hello_timeout() {
    capture_warnings();
    let hello_timeout = Duration::from_secs(2);
    let config = TcpConfig {
        hello_timeout,
        ..config()
    };
    let mut pair = Pair::new(Endpoint::Role(25), config);
    // The endpoint's clock starts when it accepts: before the thread below runs,
    // which on a loaded machine can be a while later.
    let opened = Instant::now();
    let stranger = TcpStream::connect(pair.at()).unwrap();
    let tag = remote_tag(Endpoint::Role(25), &stranger);
    // The start of a plausible hello: a length, then the magic.
    let mut hello = 60u32.to_le_bytes().to_vec();
    hello.extend_from_slice(b"snap-tcp");
    let trickle = thread::spawn(move || {
        let mut stranger = stranger;
        let start = opened;
        let mut sent = 0;
        for byte in &hello {
            if stranger.write_all(&[*byte]).is_err() {
                return (sent, true, start.elapsed());
            }
            sent += 1;
            // A second between bytes, unless the endpoint hangs up first.
            if closed_within(&mut stranger, Duration::from_secs(1)) {
                return (sent, true, start.elapsed());
            }
        }
        (sent, false, start.elapsed())
    });
    pair.exchange(30);
    assert!(
        !trickle.is_finished(),
        "the exchange completed while the slow sender was still sending"
    );
    let (sent, closed, elapsed) = trickle.join().unwrap();
    assert!(closed, "closed before it sent its {sent} bytes");
    assert!((1..12).contains(&sent), "{sent} bytes sent");
    assert!(elapsed >= hello_timeout, "closed after {elapsed:?}");
    assert!(
        wait_for_warning(&[&tag, "no handshake in time"]).is_some(),
        "{:?}",
        warnings(&tag)
    );
    pair.exchange(20);
    pair.quiet();
}

/// Two hundred connections at once, more than the listener runs handshakes for: those
/// beyond the limit are closed at once, the others at the hello timeout, each with a
/// warning, and the pair's frames flow meanwhile.
#[test]
fn two_hundred_connections_at_once_are_refused() {
    const CONNECTIONS: usize = 200;
    capture_warnings();
    // Long enough that the 200 connections are all made and accepted, on a loaded
    // machine too, before the first handshakes time out: a handshake that times out
    // first makes room, and one fewer is evicted. 5 s once fell short by one under a
    // full parallel test run on 2 cores; the strangers left after the evictions wait
    // this long to be closed, well within PATIENCE.
    let config = TcpConfig {
        hello_timeout: Duration::from_secs(10),
        ..config()
    };
    let mut pair = Pair::new(Endpoint::Role(26), config);
    let at = pair.at();
    let mut strangers: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(&at).unwrap())
        .collect();
    pair.exchange(30);
    for stranger in &mut strangers {
        assert!(closed_within(stranger, PATIENCE));
    }
    let mut evicted = 0;
    for stranger in &strangers {
        let tag = remote_tag(Endpoint::Role(26), stranger);
        let why = wait_for_warning(&[&tag, "refused a connection"])
            .unwrap_or_else(|| panic!("no warning for {tag}"));
        if why.contains("too many handshakes in progress") {
            evicted += 1;
        } else {
            assert!(why.contains("no handshake in time"), "{why}");
        }
    }
    assert!(
        evicted >= CONNECTIONS - DEFAULT_MAX_HANDSHAKES,
        "{evicted} closed for want of room"
    );
    pair.exchange(20);
    pair.quiet();
}

/// A client with the wrong key, speaking the handshake by hand so as to send a proof
/// the server has to check: refused, and the endpoint with the wrong key is refused
/// too.
#[test]
fn a_wrong_key_is_refused() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(27), config());
    let mut stranger = TcpStream::connect(pair.at()).unwrap();
    stranger.set_read_timeout(Some(PATIENCE)).unwrap();
    let hello = postcard::to_allocvec(&(
        *b"snap-tcp",
        1u16,
        "test-cluster",
        node(5),
        Endpoint::Role(27),
        [7u8; 32],
    ))
    .unwrap();
    stranger
        .write_all(&(hello.len() as u32).to_le_bytes())
        .unwrap();
    stranger.write_all(&hello).unwrap();
    // The server's challenge: a length, a nonce and a MAC, which this client cannot
    // check and does not.
    let mut challenge = [0; 4 + 64];
    stranger.read_exact(&mut challenge).unwrap();
    assert_eq!(challenge[..4], 64u32.to_le_bytes());
    let mut proof = 32u32.to_le_bytes().to_vec();
    proof.extend_from_slice(&[9; 32]);
    stranger.write_all(&proof).unwrap();
    pair.exchange(20);
    assert!(closed_within(&mut stranger, PATIENCE));
    assert!(
        wait_for_warning(&[
            &remote_tag(Endpoint::Role(27), &stranger),
            "the other side failed to prove it knows the cluster key"
        ])
        .is_some(),
        "{:?}",
        warnings(&remote_tag(Endpoint::Role(27), &stranger))
    );

    let mut impostor = TcpTransport::<u64>::new(
        node(6),
        TcpConfig {
            key: b"not the key".to_vec(),
            ..config()
        },
    )
    .unwrap();
    let refused = impostor.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("failed to prove it knows the cluster key")),
        "{refused:?}"
    );
    assert!(
        wait_for_warning(&[
            "local=role 27",
            "the other side closed the connection during the handshake"
        ])
        .is_some()
    );
    pair.exchange(20);
    pair.quiet();
}

/// A second endpoint claiming the peer's name, with the right key, while the peer is
/// connected: refused, and the peer's connection is untouched.
#[test]
fn an_id_already_in_use_is_refused() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(28), config());
    let mut twin = TcpTransport::<u64>::new(pair.peer.local(), config()).unwrap();
    let refused = twin.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("already connected there")),
        "{refused:?}"
    );
    assert!(
        wait_for_warning(&[
            "local=role 28",
            "node 1 is already connected, or has been and gone"
        ])
        .is_some()
    );
    pair.exchange(20);
    pair.quiet();
}

/// An endpoint of another cluster, with the right key: refused.
#[test]
fn a_hello_for_another_cluster_is_refused() {
    capture_warnings();
    let mut pair = Pair::new(Endpoint::Role(29), config());
    let mut outsider = TcpTransport::<u64>::new(
        node(7),
        TcpConfig {
            cluster: "another-cluster".into(),
            ..config()
        },
    )
    .unwrap();
    let refused = outsider.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(_))),
        "{refused:?}"
    );
    assert!(
        wait_for_warning(&["local=role 29", "a hello for cluster \"another-cluster\""]).is_some()
    );
    pair.exchange(20);
    pair.quiet();
}

/// Counts what it is given: the process of the nodes below.
struct Counter(u64);

impl snapshot_core::Process for Counter {
    type Message = u64;
    type State = u64;
    type Record = u64;
    fn handle(&mut self, _: NodeId, n: u64, _: &mut snapshot_core::Outbox<u64>) {
        self.0 += n;
    }
    fn capture(&self) -> u64 {
        self.0
    }
    fn record(&self, in_transit: &mut u64, _: NodeId, n: &u64) {
        *in_transit += n;
    }
}

type CounterFrame = Frame<u64, u64, u64, ()>;

/// Polls `node` until its process has counted `total`, and returns what the engine
/// refused on the way, failing the test if that takes longer than [`PATIENCE`].
fn count_up_to(
    node: &mut Node<Counter>,
    t: &mut TcpTransport<CounterFrame>,
    total: u64,
) -> Vec<NodeError> {
    let deadline = Instant::now() + PATIENCE;
    let mut refused = Vec::new();
    while node.process().0 < total {
        assert!(
            Instant::now() < deadline,
            "counted {} of {total}",
            node.process().0
        );
        match node.poll_event::<(), _>(t, Duration::from_millis(50)) {
            Ok(None) => {}
            Ok(Some(event)) => panic!("unexpected {event:?}"),
            Err(error) => refused.push(error),
        }
    }
    refused
}

/// Polls `node` until it records snapshot `id`, failing the test if that takes longer
/// than [`PATIENCE`] or anything needs the application meanwhile.
fn until_recording(node: &mut Node<Counter>, t: &mut TcpTransport<CounterFrame>, id: SnapshotId) {
    let deadline = Instant::now() + PATIENCE;
    while !node.engine().in_flight().any(|s| s == id) {
        assert!(Instant::now() < deadline, "{id} never recorded");
        let polled = node.poll_event::<(), _>(t, Duration::from_millis(50));
        assert!(matches!(polled, Ok(None)), "{polled:?}");
    }
}

/// A member of the cluster (node 3, with the key) turned hostile: it sends node 2 a
/// marker of a snapshot that it says node 2 started, which node 2 never did. Node 2
/// refuses it, with an error that names the sender and the snapshot, and is unchanged
/// by it: it records nothing, the traffic from node 1 is counted in full, and a
/// snapshot node 1 starts afterwards is the same as without the forgery. A marker of
/// a snapshot that node 3 could have started is taken: the refusal is of the claim.
#[test]
fn a_forged_marker_is_refused_and_changes_nothing() {
    let (one, two, three) = (NodeId(1), NodeId(2), NodeId(3));
    let mut t2 = endpoint::<CounterFrame>(node(2));
    let mut t1 = endpoint::<CounterFrame>(node(1));
    let mut t3 = endpoint::<CounterFrame>(node(3));
    common::pair_up(&mut t1, &mut t2);
    common::pair_up(&mut t3, &mut t2);
    let mut n2 = Node::new(two, Counter(0));
    n2.add_peer(one).unwrap();
    n2.add_peer(three).unwrap();

    let forged = SnapshotId {
        initiator: two,
        seq: 41,
    };
    for n in [5, 7] {
        t1.send(node(2), Frame::Peer(Envelope::App(n))).unwrap();
    }
    t1.flush().unwrap();
    t3.send(node(2), Frame::Peer(Envelope::Marker(forged)))
        .unwrap();
    t3.flush().unwrap();
    t1.send(node(2), Frame::Peer(Envelope::App(11))).unwrap();
    t1.flush().unwrap();
    // Until the forgery has been seen and node 1's transfers counted.
    let mut refused = count_up_to(&mut n2, &mut t2, 23);
    let deadline = Instant::now() + PATIENCE;
    while refused.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the forged marker was never refused"
        );
        match n2.poll_event::<(), _>(&mut t2, Duration::from_millis(50)) {
            Ok(None) => {}
            Ok(Some(event)) => panic!("unexpected {event:?}"),
            Err(error) => refused.push(error),
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        matches!(
            &refused[0],
            NodeError::Engine(EngineError::ForgedSnapshot { id, from }) if *id == forged && *from == three
        ),
        "{:?}",
        refused[0]
    );
    assert_eq!(
        refused[0].to_string(),
        "node 2 never started snapshot 2#41, yet node 3 sent a marker of it"
    );
    assert_eq!(n2.engine().in_flight().count(), 0, "nothing recorded");
    assert_eq!(n2.process().0, 23);
    assert_eq!(n2.engine().next_seq(), 0, "no id of node 2's used up");

    // Node 1 starts a snapshot; node 3, honest again, sends 2 before its marker.
    let real = SnapshotId {
        initiator: one,
        seq: 0,
    };
    t1.send(node(2), Frame::Peer(Envelope::Marker(real)))
        .unwrap();
    t1.flush().unwrap();
    until_recording(&mut n2, &mut t2, real);
    for peer in [&mut t1, &mut t3] {
        assert_eq!(
            frame(peer),
            (node(2), Frame::Peer(Envelope::Marker(real))),
            "node 2 records and sends its markers"
        );
    }
    t3.send(node(2), Frame::Peer(Envelope::App(2))).unwrap();
    t3.send(node(2), Frame::Peer(Envelope::Marker(real)))
        .unwrap();
    t3.flush().unwrap();
    let completed = n2
        .next_event::<(), _>(&mut t2)
        .expect("node 2 completes the snapshot");
    let Event::Completed(local) = completed else {
        panic!("unexpected {completed:?}");
    };
    assert_eq!((local.id, local.node, local.state), (real, two, 23));
    assert_eq!(local.channels[&one].record, 0);
    assert_eq!(
        (
            local.channels[&three].record,
            local.channels[&three].messages
        ),
        (2, 1)
    );
    assert_eq!(local.received[&one], 3);
    assert_eq!(
        local.received[&three], 0,
        "the forged marker counted nothing"
    );

    // The control: a marker of a snapshot node 3 could have started is taken.
    let possible = SnapshotId {
        initiator: three,
        seq: 0,
    };
    t3.send(node(2), Frame::Peer(Envelope::Marker(possible)))
        .unwrap();
    t3.flush().unwrap();
    until_recording(&mut n2, &mut t2, possible);
    for peer in [&mut t1, &mut t3] {
        assert_eq!(
            frame(peer),
            (node(2), Frame::Peer(Envelope::Marker(possible)))
        );
    }
    assert_eq!(n2.engine().in_flight().collect::<Vec<_>>(), [possible]);
    assert_eq!(n2.process().0, 25);
}
