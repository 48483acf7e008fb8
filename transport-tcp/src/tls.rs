//! TLS 1.3 with mutual authentication: an endpoint's identity, the rustls
//! configurations made from it, the names certificates carry, and the record layer of
//! the connections once their handshake is over.
//!
//! Handshakes run on tokio, with `tokio-rustls`. Afterwards each side of a connection
//! keeps its rustls session and does the record layer itself, where the plain
//! transport reads and writes bytes:
//!
//! - the connecting side encrypts a batch of frames into TLS records where the batch
//!   is made ([`Sealer`]), and the bytes it gives go where plain bytes go: written by
//!   the sending thread while the writer task is idle, by the writer task otherwise;
//! - the accepting side decrypts where the plain transport reads: in the thread that
//!   polls a [`TcpTransport`](crate::TcpTransport)'s sockets ([`TlsReader`], a
//!   non-blocking [`Read`]), in an [`AsyncTcpTransport`](crate::AsyncTcpTransport)'s
//!   reader task ([`AsyncTlsReader`], an [`AsyncRead`]).

use crate::handshake::HandshakeError;
use rustls::client::Resumption;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use snapshot_core::{Endpoint, TransportError};
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name that the certificate of `endpoint` of the cluster `cluster` carries
/// as a subject alternative name: `node-<id>.<cluster>` for a node,
/// `master.<cluster>` for `Role(0)`, `role-<n>.<cluster>` for the other roles.
///
/// ```
/// use snapshot_core::{Endpoint, NodeId};
/// use transport_tcp::tls_name;
///
/// assert_eq!(tls_name(Endpoint::Node(NodeId(3)), "bank"), "node-3.bank");
/// assert_eq!(tls_name(Endpoint::Role(0), "bank"), "master.bank");
/// assert_eq!(tls_name(Endpoint::Role(2), "bank"), "role-2.bank");
/// ```
pub fn tls_name(endpoint: Endpoint, cluster: &str) -> String {
    match endpoint {
        Endpoint::Node(id) => format!("node-{}.{cluster}", id.0),
        Endpoint::Role(0) => format!("master.{cluster}"),
        Endpoint::Role(role) => format!("role-{role}.{cluster}"),
    }
}

/// What an endpoint needs for TLS: the cluster's certificate authority, its own
/// certificate (signed by that authority, naming the endpoint: see [`tls_name`]) and
/// that certificate's private key.
///
/// The certificate must be valid for both server and client authentication (an
/// endpoint is the server of the connections it accepts and the client of those it
/// opens), or carry no extended key usage at all.
pub struct TlsIdentity {
    /// The certificates of the authorities that sign the cluster's certificates (one,
    /// usually): a peer whose certificate does not chain to one of them is refused.
    pub ca: Vec<CertificateDer<'static>>,
    /// This endpoint's certificate, then any intermediate certificates between it and
    /// the authority.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The private key of the first certificate of `cert_chain` (PKCS#8, PKCS#1 or
    /// SEC1).
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity {
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Shows the certificates' sizes, not the key.
impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("ca", &format_args!("<{} certificates>", self.ca.len()))
            .field(
                "cert_chain",
                &format_args!("<{} certificates>", self.cert_chain.len()),
            )
            .field("key", &format_args!("<private key>"))
            .finish()
    }
}

fn pem_error(what: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Config(format!("reading {what}: {error}"))
}

fn certificates(
    what: &str,
    iter: impl Iterator<Item = Result<CertificateDer<'static>, rustls::pki_types::pem::Error>>,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certificates = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(what, error))?;
    if certificates.is_empty() {
        return Err(TransportError::Config(format!(
            "reading {what}: no certificate in it"
        )));
    }
    Ok(certificates)
}

impl TlsIdentity {
    /// Reads an identity from three PEM files: the authority's certificates (`ca`),
    /// this endpoint's certificate chain (`cert`, its own certificate first) and its
    /// private key (`key`). Fails with [`TransportError::Config`], naming the file, if
    /// a file cannot be read or holds no certificate, or no key.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        let (ca, cert, key) = (ca.as_ref(), cert.as_ref(), key.as_ref());
        let what = |kind: &str, path: &Path| format!("the {kind} from {}", path.display());
        let ca_what = what("CA certificates", ca);
        let ca = certificates(
            &ca_what,
            CertificateDer::pem_file_iter(ca).map_err(|error| pem_error(&ca_what, error))?,
        )?;
        let cert_what = what("certificate chain", cert);
        let cert_chain = certificates(
            &cert_what,
            CertificateDer::pem_file_iter(cert).map_err(|error| pem_error(&cert_what, error))?,
        )?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|error| pem_error(&what("private key", key), error))?;
        Ok(TlsIdentity {
            ca,
            cert_chain,
            key,
        })
    }

    /// Reads an identity from PEM text: the authority's certificates, this endpoint's
    /// certificate chain and its private key, as [`from_pem_files`](Self::from_pem_files)
    /// reads them from files.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Self, TransportError> {
        let ca = certificates(
            "the CA certificates",
            CertificateDer::pem_slice_iter(ca.as_bytes()),
        )?;
        let cert_chain = certificates(
            "the certificate chain",
            CertificateDer::pem_slice_iter(cert.as_bytes()),
        )?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|error| pem_error("the private key", error))?;
        Ok(TlsIdentity {
            ca,
            cert_chain,
            key,
        })
    }

    /// The DNS names that this identity's certificate carries, if it parses.
    pub fn names(&self) -> Vec<String> {
        self.cert_chain
            .first()
            .map(|cert| dns_names(cert))
            .unwrap_or_default()
    }
}

/// The DNS subject alternative names of `cert`, if it parses.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|cert| cert.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The name `endpoint` of `cluster` must be found under, as rustls takes it.
pub(crate) fn server_name(
    endpoint: Endpoint,
    cluster: &str,
) -> Result<ServerName<'static>, TransportError> {
    let name = tls_name(endpoint, cluster);
    if cluster.is_empty() {
        // `master.` would pass as a name, under an authority constrained to nothing.
        return Err(TransportError::Config(
            "the cluster's name is empty: under TLS it must be a DNS name (letters, digits, \
             hyphens and dots)"
                .to_string(),
        ));
    }
    ServerName::try_from(name.clone()).map_err(|_| {
        TransportError::Config(format!(
            "{name:?} is not a DNS name: under TLS the cluster's name must be one (letters, \
             digits, hyphens and dots)"
        ))
    })
}

/// An endpoint's TLS configurations, both sides.
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    pub(crate) acceptor: TlsAcceptor,
}

fn config_error(what: &str) -> impl FnOnce(rustls::Error) -> TransportError + '_ {
    move |error| TransportError::Config(format!("{what}: {error}"))
}

impl Tls {
    /// The configurations of `local`, of the cluster `cluster`, with `identity`:
    /// TLS 1.3 only, ring's cryptography, client certificates required and checked
    /// against the cluster's authority, no session resumption. Checks that the
    /// endpoint's own certificate chains to that authority, is valid now for both
    /// sides of a connection and names `local`: a mistake there is found here, not by
    /// every peer.
    pub(crate) fn new(
        identity: &TlsIdentity,
        local: Endpoint,
        cluster: &str,
    ) -> Result<Self, TransportError> {
        let name = server_name(local, cluster)?;
        let provider = Arc::new(provider());
        if identity.ca.is_empty() {
            return Err(TransportError::Config(
                "the TLS identity has no CA certificate".into(),
            ));
        }
        let Some((leaf, intermediates)) = identity.cert_chain.split_first() else {
            return Err(TransportError::Config(
                "the TLS identity has no certificate".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        for ca in &identity.ca {
            roots
                .add(ca.clone())
                .map_err(config_error("a CA certificate of the TLS identity"))?;
        }
        let roots = Arc::new(roots);
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|error| TransportError::Config(format!("the client verifier: {error}")))?;
        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots,
            Arc::clone(&provider),
        )
        .build()
        .map_err(|error| TransportError::Config(format!("the server verifier: {error}")))?;

        // This endpoint's own certificate, as its peers will check it.
        let now = UnixTime::now();
        let own = |error: rustls::Error| {
            TransportError::Config(format!(
                "this endpoint's certificate ({}) is not one its peers accept as {local}: \
                 {error}",
                describe_names(&dns_names(leaf)),
            ))
        };
        servers
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .map_err(own)?;
        clients
            .verify_client_cert(leaf, intermediates, now)
            .map_err(own)?;

        let versions = [&rustls::version::TLS13];
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(config_error("the TLS server configuration"))?
            .with_client_cert_verifier(clients)
            .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
            .map_err(config_error("this endpoint's certificate and key"))?;
        // No resumption: nothing is sent after the handshake but what the transport
        // sends, and nothing is kept.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(config_error("the TLS client configuration"))?
            .with_webpki_verifier(servers)
            .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())
            .map_err(config_error("this endpoint's certificate and key"))?;
        client.resumption = Resumption::disabled();
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

/// ring's provider, its TLS 1.3 suites only, AES-128-GCM with SHA-256 first: the
/// key schedule on SHA-256, which processors compute in hardware (SHA-384 they do
/// not), and fewer AES rounds per record. Both sides of every connection are this
/// transport, so the order is what is used.
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

fn describe_names(names: &[String]) -> String {
    if names.is_empty() {
        "no DNS name".to_owned()
    } else {
        names.join(", ")
    }
}

/// Checks that the certificate the client presented (rustls has checked its chain)
/// names the endpoint the client claims to be, of this cluster.
pub(crate) fn check_peer(
    connection: &ServerConnection,
    claimed: Endpoint,
    cluster: &str,
) -> Result<(), HandshakeError> {
    let expected = tls_name(claimed, cluster);
    let Some(leaf) = connection.peer_certificates().and_then(<[_]>::first) else {
        return Err(HandshakeError::NoCertificate);
    };
    let name = ServerName::try_from(expected.as_str()).map_err(|_| HandshakeError::WrongName {
        claimed,
        expected: expected.clone(),
        names: describe_names(&dns_names(leaf)),
    })?;
    let valid = webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok());
    if valid {
        Ok(())
    } else {
        Err(HandshakeError::WrongName {
            claimed,
            expected,
            names: describe_names(&dns_names(leaf)),
        })
    }
}

/// The connecting side's record layer: encrypts batches of frames into TLS records.
pub(crate) struct Sealer {
    connection: ClientConnection,
    /// Records not yet handed to the socket or the writer task.
    pub(crate) sealed: Vec<u8>,
}

impl Sealer {
    /// Takes over `connection`, whose handshake is over.
    pub(crate) fn new(mut connection: ClientConnection) -> Self {
        // The records go to `sealed`, which takes them all: no bound is needed on
        // rustls's own buffer.
        connection.set_buffer_limit(None);
        Sealer {
            connection,
            sealed: Vec::new(),
        }
    }

    /// Encrypts `plain` into records at the end of `sealed`, and empties it.
    pub(crate) fn seal(&mut self, plain: &mut Vec<u8>) -> io::Result<()> {
        self.connection.writer().write_all(plain)?;
        plain.clear();
        self.drain()
    }

    /// Adds a `close_notify` alert to `sealed`: the connection ends cleanly after
    /// what was sealed before.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.connection.send_close_notify();
        self.drain()
    }

    fn drain(&mut self) -> io::Result<()> {
        while self.connection.wants_write() {
            self.connection.write_tls(&mut self.sealed)?;
        }
        Ok(())
    }
}

/// How much ciphertext one read of a socket takes at most.
const CIPHER_CHUNK: usize = 64 * 1024;

/// What a read of a TLS connection fails with when a record does not verify: the
/// error that names the cause to whoever reads the peer's departure.
#[derive(Debug, thiserror::Error)]
#[error("its TLS records do not verify, corrupted or tampered with on the way ({0})")]
pub(crate) struct RecordsDoNotVerify(rustls::Error);

impl RecordsDoNotVerify {
    /// Whether `error` is a read's failure on a record that did not verify.
    pub(crate) fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<RecordsDoNotVerify>())
    }
}

/// The accepting side's record layer: ciphertext in, plaintext out, for a reader
/// that reads the socket itself ([`TlsReader`], [`AsyncTlsReader`]).
struct Opener {
    connection: ServerConnection,
    local: Endpoint,
    peer: Endpoint,
    /// Ciphertext read from the socket that rustls has not taken yet:
    /// `cipher[start..end]`. Allocated on the first read.
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket has ended; rustls has been told once `told_eof` is set.
    eof: bool,
    told_eof: bool,
}

/// What [`Opener::plaintext`] found.
enum Plain {
    /// This many bytes of plaintext.
    Bytes(usize),
    /// The TLS stream has ended, cleanly or not.
    End,
    /// Nothing until more ciphertext comes.
    Empty,
}

impl Opener {
    fn new(connection: ServerConnection, local: Endpoint, peer: Endpoint) -> Self {
        Opener {
            connection,
            local,
            peer,
            cipher: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            told_eof: false,
        }
    }

    /// Takes decrypted plaintext into `buf` (not empty).
    fn plaintext(&mut self, buf: &mut [u8]) -> io::Result<Plain> {
        match self.connection.reader().read(buf) {
            // The peer closed the TLS session cleanly.
            Ok(0) => Ok(Plain::End),
            Ok(n) => Ok(Plain::Bytes(n)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(Plain::Empty),
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                // The connection ended without a close_notify: the peer exited, or
                // its end was closed without one. An end all the same, with every
                // record before it verified.
                tracing::debug!(local = %self.local, peer = %self.peer, "the peer closed its connection without a TLS close_notify");
                Ok(Plain::End)
            }
            Err(error) => Err(error),
        }
    }

    /// Whether the ciphertext read so far is all taken, and the socket is to be read.
    fn wants_bytes(&self) -> bool {
        self.start == self.end && !self.eof
    }

    /// Where the socket's next bytes go.
    fn space(&mut self) -> &mut [u8] {
        if self.cipher.is_empty() {
            self.cipher = vec![0; CIPHER_CHUNK];
        }
        &mut self.cipher
    }

    /// `n` bytes were read into [`space`](Self::space); 0 is the end of the socket.
    fn received(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        } else {
            self.start = 0;
            self.end = n;
        }
    }

    /// Gives rustls the ciphertext read (or the end of the socket) and has it
    /// decrypted. `Ok(false)` if there was nothing to give. A record that does not
    /// verify is an error, logged here.
    fn open(&mut self) -> io::Result<bool> {
        if self.start < self.end {
            let taken = self
                .connection
                .read_tls(&mut &self.cipher[self.start..self.end])?;
            if taken == 0 {
                return Err(io::Error::other("rustls took no ciphertext"));
            }
            self.start += taken;
        } else if self.eof && !self.told_eof {
            // An empty read is how rustls hears of the end.
            self.connection.read_tls(&mut io::empty())?;
            self.told_eof = true;
        } else {
            return Ok(false);
        }
        if let Err(error) = self.connection.process_new_packets() {
            tracing::warn!(
                local = %self.local,
                peer = %self.peer,
                %error,
                "the peer's TLS records do not verify (corrupted or tampered with on the way); \
                 dropping it"
            );
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                RecordsDoNotVerify(error),
            ));
        }
        Ok(true)
    }

    /// What rustls has queued to send (an alert after an error, the answer to a key
    /// update), if anything. The socket carries nothing else this way, so its buffer
    /// is empty and these few bytes go at once.
    fn queued(&mut self) -> Option<Vec<u8>> {
        if !self.connection.wants_write() {
            return None;
        }
        let mut out = Vec::new();
        while self.connection.wants_write() {
            if self.connection.write_tls(&mut out).is_err() {
                break;
            }
        }
        Some(out)
    }
}

/// The accepting side's record layer for the thread that polls a
/// [`TcpTransport`](crate::TcpTransport)'s sockets: a non-blocking [`Read`] of the
/// plaintext.
///
/// A read fills the buffer it is given, or reads the socket until a read of it comes
/// back short (or would block): a short read means that the socket, and what rustls
/// holds, are empty for now, so the next bytes raise a new readiness event, as they do
/// for a plain connection. (Only the end, or an error, can wait behind a short read:
/// then [`pending`](Self::pending) says so.)
pub(crate) struct TlsReader {
    socket: mio::net::TcpStream,
    opener: Opener,
    /// This read has found the socket empty (a read of it came back short): the next
    /// read of it waits for the next call, which a readiness event brings.
    drained: bool,
    /// The TLS stream has ended: the next read says so.
    ended: bool,
    /// What ended the stream, kept while the plaintext before it is handed out.
    failed: Option<io::Error>,
}

impl TlsReader {
    /// Reads `connection`'s records from `socket`, the connection from `peer` to
    /// `local`.
    pub(crate) fn new(
        socket: mio::net::TcpStream,
        connection: ServerConnection,
        local: Endpoint,
        peer: Endpoint,
    ) -> Self {
        TlsReader {
            socket,
            opener: Opener::new(connection, local, peer),
            drained: false,
            ended: false,
            failed: None,
        }
    }

    /// The socket, to register with a poll.
    pub(crate) fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.socket
    }

    /// Whether a read would give something (the end, an error) that no readiness
    /// event will announce.
    pub(crate) fn pending(&self) -> bool {
        self.failed.is_some() || self.ended || self.opener.eof
    }

    fn send_queued(&mut self) {
        if let Some(out) = self.opener.queued() {
            let _ = self.socket.write(&out);
        }
    }

    /// Gives rustls more ciphertext, reading the socket if need be. `Ok(false)` if the
    /// socket has nothing now (or has ended and rustls knows).
    fn feed(&mut self) -> io::Result<bool> {
        if self.opener.wants_bytes() {
            if self.drained {
                return Ok(false);
            }
            loop {
                let space = self.opener.space();
                let room = space.len();
                match self.socket.read(space) {
                    Ok(n) => {
                        // A short read has emptied the socket: another now would
                        // only find that it would block.
                        self.drained = n > 0 && n < room;
                        self.opener.received(n);
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(error) => return Err(error),
                }
                break;
            }
        }
        let opened = self.opener.open();
        self.send_queued();
        opened
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        self.drained = false;
        let mut filled = 0;
        while filled < buf.len() {
            match self.opener.plaintext(&mut buf[filled..]) {
                Ok(Plain::Bytes(n)) => {
                    filled += n;
                    continue;
                }
                Ok(Plain::End) => {
                    self.ended = true;
                    break;
                }
                Ok(Plain::Empty) => {}
                Err(error) => {
                    self.failed = Some(error);
                    break;
                }
            }
            match self.feed() {
                Ok(true) => {}
                Ok(false) if filled > 0 => return Ok(filled),
                Ok(false) if self.opener.told_eof => break,
                Ok(false) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(error) => {
                    self.failed = Some(error);
                    break;
                }
            }
        }
        if filled == 0
            && let Some(error) = self.failed.take()
        {
            return Err(error);
        }
        Ok(filled)
    }
}

/// The accepting side's record layer for an
/// [`AsyncTcpTransport`](crate::AsyncTcpTransport)'s reader task: an [`AsyncRead`]
/// of the plaintext.
pub(crate) struct AsyncTlsReader {
    socket: TcpStream,
    opener: Opener,
}

impl AsyncTlsReader {
    /// Reads `connection`'s records from `socket`, the connection from `peer` to
    /// `local`.
    pub(crate) fn new(
        socket: TcpStream,
        connection: ServerConnection,
        local: Endpoint,
        peer: Endpoint,
    ) -> Self {
        AsyncTlsReader {
            socket,
            opener: Opener::new(connection, local, peer),
        }
    }

    fn send_queued(&mut self) {
        if let Some(out) = self.opener.queued() {
            let _ = self.socket.try_write(&out);
        }
    }
}

impl AsyncRead for AsyncTlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.opener.plaintext(buf.initialize_unfilled())? {
                Plain::Bytes(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Plain::End => return Poll::Ready(Ok(())),
                Plain::Empty => {}
            }
            if this.opener.wants_bytes() {
                let mut space = ReadBuf::new(this.opener.space());
                ready!(Pin::new(&mut this.socket).poll_read(cx, &mut space))?;
                let n = space.filled().len();
                this.opener.received(n);
            }
            let opened = this.opener.open();
            this.send_queued();
            if !opened? {
                // The end, told: the plaintext says so next.
                if this.opener.told_eof {
                    continue;
                }
                return Poll::Ready(Err(io::Error::other("a TLS stream that makes no progress")));
            }
        }
    }
}

#[cfg(all(test, feature = "certs"))]
mod tests {
    use super::*;
    use crate::Ca;
    use rustls::ConnectionCommon;
    use snapshot_core::NodeId;
    use std::ops::DerefMut;

    const CLIENT: Endpoint = Endpoint::Node(NodeId(1));
    const SERVER: Endpoint = Endpoint::Role(0);

    /// Moves what `from` has to send to `to`, and has `to` process it.
    fn transfer<A, B>(
        from: &mut impl DerefMut<Target = ConnectionCommon<A>>,
        to: &mut impl DerefMut<Target = ConnectionCommon<B>>,
    ) -> Result<(), rustls::Error> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).unwrap();
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).unwrap();
        }
        to.process_new_packets().map(|_| ())
    }

    /// A client session and a server one, of two endpoints of one cluster, with their
    /// handshake done in memory.
    fn sessions() -> (ClientConnection, ServerConnection) {
        let ca = Ca::new("unit").unwrap();
        let client = Tls::new(&ca.issue(CLIENT).unwrap(), CLIENT, "unit").unwrap();
        let server = Tls::new(&ca.issue(SERVER).unwrap(), SERVER, "unit").unwrap();
        let name = server_name(SERVER, "unit").unwrap();
        let mut client =
            ClientConnection::new(Arc::clone(client.connector.config()), name).unwrap();
        let mut server = ServerConnection::new(Arc::clone(server.acceptor.config())).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            transfer(&mut client, &mut server).unwrap();
            transfer(&mut server, &mut client).unwrap();
        }
        assert!(!server.wants_write(), "no session tickets");
        (client, server)
    }

    /// Feeds `sealed` to `opener` as a socket would, and takes the plaintext.
    fn open_all(opener: &mut Opener, sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut plain = Vec::new();
        let mut rest = sealed;
        let mut buf = [0; 4096];
        loop {
            match opener.plaintext(&mut buf)? {
                Plain::Bytes(n) => {
                    plain.extend_from_slice(&buf[..n]);
                    continue;
                }
                Plain::End => return Ok(plain),
                Plain::Empty => {}
            }
            if opener.wants_bytes() {
                if rest.is_empty() {
                    return Ok(plain);
                }
                let n = rest.len().min(1000);
                opener.space()[..n].copy_from_slice(&rest[..n]);
                opener.received(n);
                rest = &rest[n..];
            }
            opener.open()?;
        }
    }

    #[test]
    fn sealed_batches_open_in_order_across_a_key_update() {
        let (client, server) = sessions();
        let mut sealer = Sealer::new(client);
        let mut opener = Opener::new(server, SERVER, CLIENT);
        let mut batch = b"first batch".to_vec();
        sealer.seal(&mut batch).unwrap();
        assert!(batch.is_empty());
        let first = std::mem::take(&mut sealer.sealed);
        assert_eq!(open_all(&mut opener, &first).unwrap(), b"first batch");
        assert!(opener.queued().is_none());

        // A key update, as rustls makes when a key has sealed enough records: the
        // records after it open with the new keys. (Its answer is owed before the
        // accepting side writes data, which it never does: the connecting side goes
        // on without it.)
        sealer.connection.refresh_traffic_keys().unwrap();
        let mut batch = vec![7; 100_000];
        sealer.seal(&mut batch).unwrap();
        let second = std::mem::take(&mut sealer.sealed);
        assert_eq!(open_all(&mut opener, &second).unwrap(), vec![7; 100_000]);
        let mut batch = b"after the update".to_vec();
        sealer.seal(&mut batch).unwrap();
        let third = std::mem::take(&mut sealer.sealed);
        assert_eq!(open_all(&mut opener, &third).unwrap(), b"after the update");

        sealer.close().unwrap();
        let last = std::mem::take(&mut sealer.sealed);
        let mut buf = [0; 16];
        assert!(open_all(&mut opener, &last).unwrap().is_empty());
        assert!(matches!(opener.plaintext(&mut buf), Ok(Plain::End)));
    }

    #[test]
    fn a_flipped_byte_fails_to_open_and_nothing_of_its_record_comes_out() {
        let (client, server) = sessions();
        let mut sealer = Sealer::new(client);
        let mut opener = Opener::new(server, SERVER, CLIENT);
        let mut batch = b"intact".to_vec();
        sealer.seal(&mut batch).unwrap();
        let mut batch = b"tampered with".to_vec();
        sealer.seal(&mut batch).unwrap();
        let mut sealed = std::mem::take(&mut sealer.sealed);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        let mut plain = Vec::new();
        let mut buf = [0; 64];
        opener.space()[..sealed.len()].copy_from_slice(&sealed);
        opener.received(sealed.len());
        let failed = loop {
            match opener.open() {
                Ok(_) => {}
                Err(error) => break error,
            }
            while let Ok(Plain::Bytes(n)) = opener.plaintext(&mut buf) {
                plain.extend_from_slice(&buf[..n]);
            }
        };
        assert_eq!(failed.kind(), io::ErrorKind::InvalidData);
        while let Ok(Plain::Bytes(n)) = opener.plaintext(&mut buf) {
            plain.extend_from_slice(&buf[..n]);
        }
        assert!(b"intact".starts_with(&plain), "{plain:?}");
        assert!(opener.queued().is_some(), "an alert for the peer");
    }
}
