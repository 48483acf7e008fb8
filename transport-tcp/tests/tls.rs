//! TLS: endpoints with certificates from the cluster's authority talk; every other
//! peer is refused, with a warning that says why, while a legitimate pair goes on
//! exchanging frames; and a stream tampered with on the way is dropped without a
//! corrupt frame delivered.

mod common;

use common::{
    PATIENCE, address, capture_warnings, closed_within, departed, frame, is_gone, node, still_open,
    wait_for_warning, warnings,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use snapshot_core::{AsyncTransport, Endpoint, Incoming, Transport, TransportError};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};
use tokio::runtime::Runtime;
use transport_tcp::{AsyncTcpTransport, Ca, TcpConfig, TcpTransport, TlsIdentity, tls_name};

const CLUSTER: &str = "tls-test";

fn tls_config(ca: &Ca, endpoint: Endpoint) -> TcpConfig {
    TcpConfig {
        tls: Some(ca.issue(endpoint).unwrap()),
        ..TcpConfig::new(CLUSTER, Vec::new())
    }
}

/// The port of a connection's local end, as the server logs it.
fn remote_tag(stream: &TcpStream) -> String {
    format!("remote={}", stream.local_addr().unwrap())
}

/// Two TLS endpoints exchanging numbered frames both ways: `server`, which the
/// strangers connect to, and `peer` (node 1). Every frame received is checked against
/// the next number its sender sent.
struct Pair {
    server: TcpTransport<u64>,
    peer: TcpTransport<u64>,
    next: (u64, u64),
}

impl Pair {
    fn new(ca: &Ca, server: Endpoint) -> Self {
        Self::with(ca, server, |config| config)
    }

    /// With the server's configuration as `adjust` makes it.
    fn with(ca: &Ca, server: Endpoint, adjust: impl FnOnce(TcpConfig) -> TcpConfig) -> Self {
        let mut server = TcpTransport::new(server, adjust(tls_config(ca, server))).unwrap();
        let mut peer = TcpTransport::new(node(1), tls_config(ca, node(1))).unwrap();
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

    fn at(&self) -> String {
        address(&self.server)
    }

    /// `rounds` round trips: three frames from the peer, two from the server.
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

/// A client configuration of rustls's own, trusting `trust`'s certificate and
/// presenting `identity` (or no certificate).
fn client_config(trust: &Ca, identity: Option<&TlsIdentity>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(trust.certificate().clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
    match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// A hello of the snapshot-rs handshake, with its length prefix, from `from` to `to`
/// of the tests' cluster.
fn hello(from: Endpoint, to: Endpoint) -> Vec<u8> {
    let body = postcard::to_allocvec(&(*b"snap-tcp", 1u16, CLUSTER, from, to, [7u8; 32])).unwrap();
    let mut hello = (body.len() as u32).to_le_bytes().to_vec();
    hello.extend_from_slice(&body);
    hello
}

/// A TLS client spoken by hand, with rustls: completes the TLS handshake with the
/// server `server` at `at` (if the server lets it), sends a hello claiming to be
/// `from`, and returns the server's answer: `Ok` with the welcome's 4 bytes, or what
/// went wrong. Also the tag the server logs it under.
fn hand_made_client(
    at: &str,
    server: Endpoint,
    config: ClientConfig,
    from: Endpoint,
) -> (io::Result<Vec<u8>>, String) {
    let socket = TcpStream::connect(at).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let tag = remote_tag(&socket);
    let name = ServerName::try_from(tls_name(server, CLUSTER)).unwrap();
    let session = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = StreamOwned::new(session, socket);
    let answer = tls
        .write_all(&hello(from, server))
        .and_then(|()| tls.flush())
        .and_then(|()| {
            let mut welcome = vec![0; 4];
            tls.read_exact(&mut welcome).map(|()| welcome)
        });
    (answer, tag)
}

/// The welcome: an empty message, its length prefix alone.
const WELCOME: [u8; 4] = [0; 4];

#[test]
fn tls_endpoints_talk_and_a_hand_made_client_with_a_good_certificate_gets_in() {
    let ca = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(0));
    pair.exchange(50);
    // The same by hand: the handshake the tests below break, done right.
    let identity = ca.issue(node(9)).unwrap();
    let (answer, _) = hand_made_client(
        &pair.at(),
        Endpoint::Role(0),
        client_config(&ca, Some(&identity)),
        node(9),
    );
    assert_eq!(answer.unwrap(), WELCOME);
    // It was admitted, and has gone.
    assert!(departed(
        pair.server
            .recv_timeout(PATIENCE)
            .and_then(|incoming| incoming.ok_or(TransportError::Closed)),
        node(9)
    ));
    pair.exchange(10);
    pair.quiet();
}

#[test]
fn a_peer_without_a_certificate_is_refused() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(40));
    let (answer, tag) = hand_made_client(
        &pair.at(),
        Endpoint::Role(40),
        client_config(&ca, None),
        node(3),
    );
    assert!(answer.is_err(), "{answer:?}");
    pair.exchange(20);
    let logged = wait_for_warning(&[&tag, "refused a connection", "peer sent no certificates"]);
    assert!(logged.is_some(), "{:?}", warnings(&tag));
    pair.exchange(10);
    pair.quiet();
}

/// What rustls says of a certificate signed by another authority: none it knows by
/// that name, or one of the same name (another run's authority of the same cluster)
/// whose signature does not verify.
fn from_another_authority(why: &str) -> bool {
    why.contains("invalid peer certificate: UnknownIssuer")
        || why.contains("invalid peer certificate: BadSignature")
}

#[test]
fn a_certificate_from_another_authority_is_refused_both_ways() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let other = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(41));

    // A client that trusts the server, with a certificate the server does not trust.
    let stranger = other.issue(node(3)).unwrap();
    let (answer, tag) = hand_made_client(
        &pair.at(),
        Endpoint::Role(41),
        client_config(&ca, Some(&stranger)),
        node(3),
    );
    assert!(answer.is_err(), "{answer:?}");
    pair.exchange(20);
    let logged = wait_for_warning(&[&tag, "refused a connection", "invalid peer certificate"]);
    assert!(
        logged.as_deref().is_some_and(from_another_authority),
        "{:?}",
        warnings(&tag)
    );

    // An endpoint of the other authority: it does not trust the server either.
    let mut outsider = TcpTransport::<u64>::new(node(4), tls_config(&other, node(4))).unwrap();
    let refused = outsider.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if from_another_authority(why)),
        "{refused:?}"
    );
    pair.exchange(10);
    pair.quiet();
}

#[test]
fn a_certificate_cannot_be_dated_where_a_certificate_cannot_say() {
    let ca = Ca::new(CLUSTER).unwrap();
    let year = Duration::from_secs(365 * 24 * 60 * 60);
    let far = SystemTime::UNIX_EPOCH + 400_000 * year;
    let now = SystemTime::now();
    for (from, until) in [(now, far), (SystemTime::UNIX_EPOCH - 400_000 * year, now)] {
        let refused = ca.issue_valid(node(3), from, until);
        assert!(
            matches!(&refused, Err(TransportError::Config(why)) if why.contains("valid from or until")),
            "{:?}",
            refused.map(|_| ())
        );
    }
}

#[test]
fn an_expired_certificate_is_refused() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(42));
    let day = Duration::from_secs(24 * 60 * 60);
    let now = SystemTime::now();
    let expired = ca.issue_valid(node(3), now - 30 * day, now - day).unwrap();
    let (answer, tag) = hand_made_client(
        &pair.at(),
        Endpoint::Role(42),
        client_config(&ca, Some(&expired)),
        node(3),
    );
    assert!(answer.is_err(), "{answer:?}");
    pair.exchange(20);
    let logged = wait_for_warning(&[&tag, "refused a connection", "certificate expired"]);
    assert!(logged.is_some(), "{:?}", warnings(&tag));

    // An endpoint is not even made with one.
    let refused = TcpTransport::<u64>::new(
        node(3),
        TcpConfig {
            tls: Some(expired),
            ..TcpConfig::new(CLUSTER, Vec::new())
        },
    );
    assert!(
        matches!(&refused, Err(TransportError::Config(why)) if why.contains("expired")),
        "{refused:?}"
    );
    pair.exchange(10);
    pair.quiet();
}

#[test]
fn another_nodes_certificate_is_refused() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(43));

    // Node 2's certificate, valid, on a peer claiming to be node 3.
    let node_2 = ca.issue(node(2)).unwrap();
    let (answer, tag) = hand_made_client(
        &pair.at(),
        Endpoint::Role(43),
        client_config(&ca, Some(&node_2)),
        node(3),
    );
    assert!(answer.is_err() || answer.as_ref().is_ok_and(|a| a != &WELCOME));
    pair.exchange(20);
    let logged = wait_for_warning(&[
        &tag,
        "refused a connection",
        "the peer claims to be node 3, but its certificate names node-2.tls-test, not \
         node-3.tls-test",
    ]);
    assert!(logged.is_some(), "{:?}", warnings(&tag));

    // Nothing was admitted under node 3's name: the real node 3 gets in.
    let mut real = TcpTransport::<u64>::new(node(3), tls_config(&ca, node(3))).unwrap();
    real.connect(pair.server.local(), &pair.at()).unwrap();
    real.send(pair.server.local(), 7).unwrap();
    real.flush().unwrap();
    assert_eq!(frame(&mut pair.server), (node(3), 7));

    // And it is in: a second node 3, with a certificate of its own, is refused.
    let mut twin = TcpTransport::<u64>::new(node(3), tls_config(&ca, node(3))).unwrap();
    let refused = twin.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("already connected there")),
        "{refused:?}"
    );
    assert!(
        wait_for_warning(&[
            "local=role 43",
            "node 3 is already connected, or has been and gone"
        ])
        .is_some()
    );

    // The client checks the server's name: role 43's address given for role 44.
    let mut confused = TcpTransport::<u64>::new(node(5), tls_config(&ca, node(5))).unwrap();
    let refused = confused.connect(Endpoint::Role(44), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why))
            if why.contains("certificate not valid for name \"role-44.tls-test\"")),
        "{refused:?}"
    );
    pair.exchange(10);
    assert_eq!(
        pair.peer.recv_timeout(Duration::from_millis(20)).unwrap(),
        None
    );
}

#[test]
fn peers_that_speak_plain_text_are_refused_both_ways() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let mut pair = Pair::new(&ca, Endpoint::Role(45));
    let key = b"a key that only the tests know!!".to_vec();

    // The plain handshake (a hello for HMAC) to an endpoint that requires TLS.
    let mut plain =
        TcpTransport::<u64>::new(node(3), TcpConfig::new(CLUSTER, key.clone())).unwrap();
    let refused = plain.connect(pair.server.local(), &pair.at());
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("the peer speaks TLS")),
        "{refused:?}"
    );
    let logged = wait_for_warning(&[
        "local=role 45",
        "refused a connection",
        "the peer speaks plain text (a snapshot-rs hello without TLS), and this endpoint \
         requires TLS",
    ]);
    assert!(logged.is_some(), "{:?}", warnings("local=role 45"));
    pair.exchange(20);

    // A TLS client to an endpoint without TLS.
    let plain_server =
        TcpTransport::<u64>::new(Endpoint::Role(46), TcpConfig::new(CLUSTER, key)).unwrap();
    let mut tls = TcpTransport::<u64>::new(node(4), tls_config(&ca, node(4))).unwrap();
    let refused = tls.connect(plain_server.local(), &address(&plain_server));
    assert!(
        matches!(&refused, Err(TransportError::Protocol(why)) if why.contains("does not speak TLS 1.3")),
        "{refused:?}"
    );
    let logged = wait_for_warning(&[
        "local=role 46",
        "refused a connection",
        "the peer speaks TLS (it sent \"\\x16\\x03",
    ]);
    assert!(logged.is_some(), "{:?}", warnings("local=role 46"));
    pair.exchange(10);
    pair.quiet();
}

/// The first bytes of a real TLS ClientHello, for a peer that starts its handshake
/// and stops.
fn half_a_client_hello(ca: &Ca, server: Endpoint) -> Vec<u8> {
    let name = ServerName::try_from(tls_name(server, CLUSTER)).unwrap();
    let mut session = ClientConnection::new(Arc::new(client_config(ca, None)), name).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

#[test]
fn a_half_open_tls_peer_does_not_block_the_run_and_is_closed_at_the_deadline() {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let hello_timeout = Duration::from_millis(800);
    let mut pair = Pair::with(&ca, Endpoint::Role(47), |config| TcpConfig {
        hello_timeout,
        ..config
    });
    let opened = Instant::now();
    // One stops halfway through its ClientHello; one completes the TLS handshake and
    // never sends its hello.
    let mut halfway = TcpStream::connect(pair.at()).unwrap();
    halfway
        .write_all(&half_a_client_hello(&ca, Endpoint::Role(47)))
        .unwrap();
    let identity = ca.issue(node(3)).unwrap();
    let name = ServerName::try_from(tls_name(Endpoint::Role(47), CLUSTER)).unwrap();
    let mut session =
        ClientConnection::new(Arc::new(client_config(&ca, Some(&identity))), name).unwrap();
    let mut silent = TcpStream::connect(pair.at()).unwrap();
    silent.set_read_timeout(Some(PATIENCE)).unwrap();
    while session.is_handshaking() {
        session.complete_io(&mut silent).unwrap();
    }

    pair.exchange(30);
    let open_meanwhile = still_open(&halfway) && still_open(&silent);
    let exchanged = opened.elapsed();
    assert!(
        open_meanwhile || exchanged >= hello_timeout,
        "closed before their hello timeout"
    );
    for (stranger, what) in [(&mut halfway, "halfway"), (&mut silent, "silent")] {
        assert!(closed_within(stranger, PATIENCE), "{what}");
        let tag = remote_tag(stranger);
        assert!(
            wait_for_warning(&[&tag, "no handshake in time"]).is_some(),
            "{what}: {:?}",
            warnings(&tag)
        );
    }
    assert!(opened.elapsed() >= hello_timeout);
    pair.exchange(10);
    pair.quiet();
}

#[test]
fn tls_handshakes_in_progress_count_against_the_cap() {
    const CAP: usize = 3;
    const STALLED: usize = 8;
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let hello_timeout = Duration::from_secs(3);
    let mut pair = Pair::with(&ca, Endpoint::Role(48), |config| TcpConfig {
        hello_timeout,
        max_handshakes: CAP,
        ..config
    });
    let opened = Instant::now();
    let half = half_a_client_hello(&ca, Endpoint::Role(48));
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut stream = TcpStream::connect(pair.at()).unwrap();
            stream.write_all(&half).unwrap();
            stream
        })
        .collect();
    // A new peer gets in all the same, and frames flow.
    let mut late = TcpTransport::<u64>::new(node(3), tls_config(&ca, node(3))).unwrap();
    late.connect(pair.server.local(), &pair.at()).unwrap();
    late.send(pair.server.local(), 99).unwrap();
    late.flush().unwrap();
    assert_eq!(frame(&mut pair.server), (node(3), 99));
    pair.exchange(20);
    assert!(
        opened.elapsed() < hello_timeout,
        "the peers waited for the stalled handshakes"
    );
    let mut evicted = 0;
    for stream in &mut stalled {
        assert!(closed_within(stream, PATIENCE));
        let tag = remote_tag(stream);
        let why = wait_for_warning(&[&tag, "refused a connection"])
            .unwrap_or_else(|| panic!("no warning for {tag}"));
        if why.contains("too many handshakes in progress") {
            evicted += 1;
        } else {
            assert!(why.contains("no handshake in time"), "{why}");
        }
    }
    assert!(evicted >= STALLED - CAP, "{evicted} evicted");
    pair.exchange(10);
}

// ---------------------------------------------------------------------------------
// A proxy that flips a byte of the stream after the handshake.
// ---------------------------------------------------------------------------------

/// What a frame carries: text that must never be seen on the wire.
fn payload(n: u64) -> String {
    format!("frame {n:04} with a plaintext marker")
}

/// A TCP proxy on 127.0.0.1 for one connection, to `target`: forwards both ways,
/// keeps what the client sent, and once `flip` is set flips the last byte of the next
/// piece it forwards from the client.
struct Proxy {
    at: String,
    flip: Arc<AtomicBool>,
    flipped: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<u8>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

/// Forwards `from` to `to` until either ends (or nothing comes for [`PATIENCE`]).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<(Arc<AtomicBool>, Arc<AtomicBool>)>,
    seen: Option<Arc<Mutex<Vec<u8>>>>,
) {
    from.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(seen) = &seen {
            seen.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
        if let Some((flip, flipped)) = &flip
            && flip.load(Ordering::SeqCst)
            && !flipped.swap(true, Ordering::SeqCst)
        {
            buffer[n - 1] ^= 0x01;
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Proxy {
    fn new(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = listener.local_addr().unwrap().to_string();
        let flip = Arc::new(AtomicBool::new(false));
        let flipped = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (flip2, flipped2, seen2) = (flip.clone(), flipped.clone(), seen.clone());
        let accepting = thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(target).unwrap();
            let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let up =
                thread::spawn(move || pump(client, server, Some((flip2, flipped2)), Some(seen2)));
            pump(server2, client2, None, None);
            up.join().unwrap();
        });
        Proxy {
            at,
            flip,
            flipped,
            seen,
            threads: vec![accepting],
        }
    }

    fn join(self) -> Vec<u8> {
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

/// Endpoints of either form, as the proxy test drives them.
type Make<T> = dyn Fn(Endpoint, TcpConfig) -> T;

/// `a` sends frames to `b` through the proxy; a byte flipped in a record after the
/// handshake: `b` drops the connection with a warning and reports `a` departed, `a`
/// reports `b` departed and its sends fail, and `b` was given exactly the frames
/// before the tampered record, intact. The proxy never saw the plaintext.
fn tampering_is_detected<T: Transport<String>>(make: &Make<T>, b_role: u16) {
    capture_warnings();
    let ca = Ca::new(CLUSTER).unwrap();
    let (a_end, b_end) = (node(1), Endpoint::Role(b_role));
    let mut a = make(a_end, tls_config(&ca, a_end));
    let mut b = make(b_end, tls_config(&ca, b_end));
    let proxy = Proxy::new(b.address());
    a.connect(b_end, &proxy.at).unwrap();
    b.connect(a_end, &a.address()).unwrap();

    let mut received = Vec::new();
    let mut sent = Vec::new();
    for n in 0..20 {
        a.send(b_end, payload(n)).unwrap();
        sent.push(payload(n));
    }
    a.flush().unwrap();
    while received.len() < sent.len() {
        match b.recv_timeout(PATIENCE).unwrap() {
            Some(Incoming::Frame(from, frame)) if from == a_end => received.push(frame),
            other => panic!("{other:?}"),
        }
    }
    // Replies go the other way, untouched.
    b.send(a_end, "reply".to_string()).unwrap();
    b.flush().unwrap();
    assert_eq!(
        a.recv_timeout(PATIENCE).unwrap(),
        Some(Incoming::Frame(b_end, "reply".to_string()))
    );

    proxy.flip.store(true, Ordering::SeqCst);
    a.send(b_end, payload(20)).unwrap();
    sent.push(payload(20));
    a.flush().unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "b never dropped a");
        match b.recv_timeout(PATIENCE).unwrap() {
            Some(Incoming::Frame(from, frame)) if from == a_end => received.push(frame),
            Some(Incoming::Departed(peer)) if peer == a_end => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(proxy.flipped.load(Ordering::SeqCst));
    assert!(
        sent.starts_with(&received),
        "b received frames that a did not send: {received:?}"
    );
    assert_eq!(
        received.len(),
        20,
        "only the frames before the flipped byte"
    );
    let local = format!("local={b_end}");
    assert!(
        wait_for_warning(&[
            &local,
            "peer=node 1",
            "the peer's TLS records do not verify"
        ])
        .is_some(),
        "{:?}",
        warnings(&local)
    );

    // a hears of it: b has departed, and sends to it fail.
    assert!(departed(
        a.recv_timeout(PATIENCE)
            .and_then(|incoming| { incoming.ok_or(TransportError::Closed) }),
        b_end
    ));
    assert!(is_gone(a.send(b_end, payload(21)), b_end));
    drop(a);
    drop(b);
    let seen = proxy.join();
    assert!(seen.len() > 20 * 30, "the proxy saw the records");
    let marker = b"plaintext marker";
    assert!(
        !seen.windows(marker.len()).any(|window| window == marker),
        "the plaintext went through the proxy in the clear"
    );
}

#[test]
fn a_flipped_byte_is_detected_and_no_corrupt_frame_is_delivered() {
    tampering_is_detected(
        &|endpoint, config| TcpTransport::<String>::new(endpoint, config).unwrap(),
        60,
    );
}

/// An [`AsyncTcpTransport`] whose calls block on a runtime of its own.
struct Blocking {
    transport: Option<AsyncTcpTransport<String>>,
    runtime: Arc<Runtime>,
}

impl Blocking {
    fn new(endpoint: Endpoint, config: TcpConfig, runtime: Arc<Runtime>) -> Self {
        let transport = runtime
            .block_on(AsyncTcpTransport::bind(endpoint, config))
            .unwrap();
        Blocking {
            transport: Some(transport),
            runtime,
        }
    }

    fn call<R>(
        &mut self,
        call: impl AsyncFnOnce(&mut AsyncTcpTransport<String>) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let transport = self.transport.as_mut().ok_or(TransportError::Closed)?;
        self.runtime.block_on(call(transport))
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        let _inside = self.runtime.enter();
        drop(self.transport.take());
    }
}

impl Transport<String> for Blocking {
    fn local(&self) -> Endpoint {
        self.transport
            .as_ref()
            .map_or(Endpoint::Role(1), AsyncTransport::local)
    }
    fn address(&self) -> String {
        self.transport
            .as_ref()
            .map(AsyncTransport::address)
            .unwrap_or_default()
    }
    fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        self.call(async |t| t.connect(peer, address).await)
    }
    fn send(&mut self, to: Endpoint, frame: String) -> Result<(), TransportError> {
        self.call(async |t| t.send(to, frame).await)
    }
    fn flush(&mut self) -> Result<(), TransportError> {
        self.call(async |t| t.flush().await)
    }
    fn recv(&mut self) -> Result<Incoming<String>, TransportError> {
        self.call(async |t| t.recv().await)
    }
    fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<String>>, TransportError> {
        self.call(async |t| t.recv_timeout(timeout).await)
    }
}

#[test]
fn a_flipped_byte_is_detected_by_the_async_form_too() {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    tampering_is_detected(
        &move |endpoint, config| Blocking::new(endpoint, config, Arc::clone(&runtime)),
        61,
    );
}
