//! The mutual challenge-response that opens every connection.
//!
//! ```text
//! client -> server  Hello     { magic, version, cluster, from: client, to: server, client_nonce }
//! server -> client  Challenge { server_nonce, HMAC(key, "server" | transcript) }
//! client -> server  Proof     { HMAC(key, "client" | transcript) }
//! server -> client  Welcome
//! ```
//!
//! where the transcript is `cluster, client, server, client_nonce, server_nonce`. Each
//! side proves it knows the key by a MAC over a nonce the other side just drew, so a
//! recorded handshake cannot be replayed, and the roles are in the MAC so that one
//! side's answer cannot be reflected back as the other's. MACs are checked in constant
//! time. Messages are codec frames of at most [`HANDSHAKE_MAX`] bytes, read exactly (no
//! byte past the handshake is consumed).
//!
//! Under TLS ([`TcpConfig::tls`](crate::TcpConfig::tls)) the same hello travels
//! inside the TLS stream, once the TLS handshake is over, and the server answers it
//! with the welcome at once:
//!
//! ```text
//! client -> server  Hello     { magic, version, cluster, from: client, to: server, client_nonce }
//! server -> client  Welcome
//! ```
//!
//! The challenge and the proof are left out: the TLS handshake has proved both sides
//! (each certificate chains to the cluster's authority, the server's names the
//! endpoint the client meant to reach, and the server checks that the client's names
//! the endpoint its hello claims), and its keys protect everything after it. The
//! cluster key is not used.
//!
//! No length is trusted before the bytes that tell this protocol apart from others:
//! the server reads the hello's length prefix together with the magic that opens the
//! hello, and the client knows the size of every message it expects (they are all of
//! fixed size), so it checks each length prefix against it byte by byte. A peer that
//! fails either check does not speak this protocol, and is named so with the first
//! bytes it sent ([`HandshakeError::Foreign`]), rather than read as announcing some
//! absurd length.

use crate::Shared;
use hmac::{Hmac, KeyInit, Mac};
use rustls::ServerConnection;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use snapshot_core::Endpoint;
use snapshot_core::codec::{self, LENGTH_PREFIX};
use std::fmt;
use std::io::{self, Write as _};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on one handshake message.
pub(crate) const HANDSHAKE_MAX: usize = 1024;

/// Opens every hello, so that a stray client of another protocol is told apart from a
/// peer of another version.
const MAGIC: [u8; 8] = *b"snap-tcp";

/// The version of this handshake and of the framing that follows it.
const VERSION: u16 = 1;

/// Keeps these MACs apart from any other use of the same key.
const DOMAIN: &[u8] = b"snapshot-rs transport-tcp v1\0";

type HmacSha256 = Hmac<Sha256>;
type Nonce = [u8; 32];
type Tag = [u8; 32];

/// The encoded size of a [`Challenge`]: a nonce and a MAC.
const CHALLENGE_SIZE: usize = 64;

/// The encoded size of a [`Proof`]: a MAC.
const PROOF_SIZE: usize = 32;

/// The encoded size of a [`Welcome`]: nothing.
const WELCOME_SIZE: usize = 0;

/// How many of the first bytes of a peer that does not speak this protocol are kept
/// to say what it sent.
const SAMPLE: usize = 32;

/// How long a peer found not to speak this protocol is given for the rest of
/// [`SAMPLE`] to come: what is already there is taken at once.
const SAMPLE_WAIT: Duration = Duration::from_millis(20);

/// The magic comes first: the hello's encoding opens with it, right after the length
/// prefix.
#[derive(Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    version: u16,
    cluster: String,
    from: Endpoint,
    to: Endpoint,
    nonce: Nonce,
}

#[derive(Serialize, Deserialize)]
struct Challenge {
    nonce: Nonce,
    mac: Tag,
}

#[derive(Serialize, Deserialize)]
struct Proof {
    mac: Tag,
}

#[derive(Serialize, Deserialize)]
struct Welcome;

/// Why a handshake failed.
#[derive(Debug, Error)]
pub(crate) enum HandshakeError {
    #[error(transparent)]
    Io(io::Error),
    #[error("the other side closed the connection during the handshake")]
    Closed,
    #[error("a handshake message of {0} bytes, over the {HANDSHAKE_MAX}-byte bound")]
    TooLarge(usize),
    #[error("a handshake message that does not decode")]
    Garbage(#[from] postcard::Error),
    #[error("the peer does not speak the snapshot-rs protocol (it sent \"{0}\")")]
    Foreign(Sample),
    #[error("handshake version {0}, this endpoint speaks {VERSION}")]
    Version(u16),
    #[error("a hello for cluster {0:?}")]
    WrongCluster(String),
    #[error("a hello for {0}, but this is another endpoint")]
    NotForMe(Endpoint),
    #[error("the other side failed to prove it knows the cluster key")]
    BadMac,
    #[error("{0} is already connected, or has been and gone")]
    Duplicate(Endpoint),
    #[error("the key is empty")]
    EmptyKey,
    #[error("no random bytes for a nonce: {0}")]
    Random(getrandom::Error),
    #[error("the TLS handshake failed: {0}")]
    Tls(rustls::Error),
    #[error(
        "the peer speaks plain text (a snapshot-rs hello without TLS), and this endpoint \
         requires TLS"
    )]
    PlainToTls,
    #[error("the peer speaks TLS (it sent \"{0}\"), and this endpoint is configured without TLS")]
    UnexpectedTls(Sample),
    #[error(
        "the server does not speak TLS 1.3 (it answered with a protocol_version alert): an \
         endpoint configured without TLS?"
    )]
    ServerWithoutTls,
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("the peer claims to be {claimed}, but its certificate names {names}, not {expected}")]
    WrongName {
        claimed: Endpoint,
        expected: String,
        names: String,
    },
}

/// The rustls error behind an I/O error from `tokio-rustls`, if there is one.
pub(crate) fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

impl HandshakeError {
    /// An I/O error of the handshake, or the TLS error it carries.
    pub(crate) fn from_io(error: io::Error) -> Self {
        match rustls_error(&error) {
            Some(tls) => HandshakeError::Tls(tls.clone()),
            None => HandshakeError::Io(error),
        }
    }
}

/// Whether `bytes` open a TLS record (a handshake message or an alert), as a peer
/// speaking TLS sends first or answers a plain hello with.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 0x03, ..])
}

/// The first bytes a peer sent, shown escaped (`\r`, `\x00`, ...) and cut after
/// [`SAMPLE`] bytes (`…`).
#[derive(Debug)]
pub(crate) struct Sample {
    bytes: Vec<u8>,
    /// Whether more may have followed.
    cut: bool,
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bytes.escape_ascii())?;
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// The peer has sent `seen`, which no peer of this protocol would: takes whatever it
/// sent after it, up to [`SAMPLE`] bytes in all and waiting at most [`SAMPLE_WAIT`],
/// to say what it sent.
async fn foreign<S: AsyncRead + Unpin>(stream: &mut S, seen: &[u8]) -> HandshakeError {
    let mut bytes = vec![0; SAMPLE];
    let mut taken = seen.len().min(SAMPLE);
    bytes[..taken].copy_from_slice(&seen[..taken]);
    let deadline = tokio::time::Instant::now() + SAMPLE_WAIT;
    while taken < SAMPLE {
        match tokio::time::timeout_at(deadline, stream.read(&mut bytes[taken..])).await {
            Ok(Ok(n)) if n > 0 => taken += n,
            // The end of the stream, an error or the deadline: that is all there is.
            _ => break,
        }
    }
    let cut = taken == SAMPLE;
    bytes.truncate(taken);
    if looks_like_tls(&bytes) {
        HandshakeError::UnexpectedTls(Sample { bytes, cut })
    } else {
        HandshakeError::Foreign(Sample { bytes, cut })
    }
}

/// Reads exactly `buffer.len()` bytes, checking them as they come with `check`, which
/// is given every byte read so far and says whether they could still be this
/// protocol's. Fails with [`HandshakeError::Foreign`] as soon as they cannot, and with
/// [`HandshakeError::Closed`] if the stream ends first.
async fn read_checked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut [u8],
    check: impl Fn(&[u8]) -> bool,
) -> Result<(), HandshakeError> {
    let mut got = 0;
    while got < buffer.len() {
        // Through TLS, an end without a close_notify is an error: an end all the same.
        let n = stream.read(&mut buffer[got..]).await.map_err(eof)?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        got += n;
        if !check(&buffer[..got]) {
            return Err(foreign(stream, &buffer[..got]).await);
        }
    }
    Ok(())
}

fn nonce() -> Result<Nonce, HandshakeError> {
    let mut nonce = [0; 32];
    getrandom::fill(&mut nonce).map_err(HandshakeError::Random)?;
    Ok(nonce)
}

/// The MAC one side sends, `role` being `b"server"` or `b"client"`.
fn mac(
    shared: &Shared,
    role: &[u8],
    client: Endpoint,
    server: Endpoint,
    client_nonce: &Nonce,
    server_nonce: &Nonce,
) -> Result<HmacSha256, HandshakeError> {
    let mut mac = HmacSha256::new_from_slice(&shared.key).map_err(|_| HandshakeError::EmptyKey)?;
    mac.update(DOMAIN);
    mac.update(role);
    // postcard prefixes the cluster name with its length: the transcript is
    // unambiguous.
    let transcript =
        postcard::to_allocvec(&(&shared.cluster, client, server, client_nonce, server_nonce))?;
    mac.update(&transcript);
    Ok(mac)
}

/// Encodes a handshake message, with its length prefix, at the end of `bytes`.
fn encode<T: Serialize>(message: &T, bytes: &mut Vec<u8>) -> Result<(), HandshakeError> {
    codec::encode_into(message, bytes, HANDSHAKE_MAX).map_err(|error| match error {
        codec::CodecError::TooLarge { size, .. } => HandshakeError::TooLarge(size),
        codec::CodecError::Postcard(error) => HandshakeError::Garbage(error),
        other => HandshakeError::Io(io::Error::other(other.to_string())),
    })
}

async fn write<S: AsyncWrite + Unpin, T: Serialize>(
    stream: &mut S,
    message: &T,
) -> Result<(), HandshakeError> {
    let mut bytes = Vec::new();
    encode(message, &mut bytes)?;
    stream
        .write_all(&bytes)
        .await
        .map_err(HandshakeError::from_io)?;
    // Through TLS, the records go out on a flush.
    stream.flush().await.map_err(HandshakeError::from_io)?;
    Ok(())
}

/// Maps the end of the stream to [`HandshakeError::Closed`].
fn eof(error: io::Error) -> HandshakeError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        HandshakeError::Closed
    } else {
        HandshakeError::from_io(error)
    }
}

/// Reads a message whose encoding is `size` bytes: its length prefix must say so,
/// which is checked byte by byte as it comes.
async fn read_fixed<S: AsyncRead + Unpin, T: DeserializeOwned>(
    stream: &mut S,
    size: usize,
) -> Result<T, HandshakeError> {
    let expected = u32::try_from(size)
        .map_err(|_| HandshakeError::TooLarge(size))?
        .to_le_bytes();
    let mut prefix = [0; LENGTH_PREFIX];
    read_checked(stream, &mut prefix, |seen| expected.starts_with(seen)).await?;
    let mut body = vec![0; size];
    stream.read_exact(&mut body).await.map_err(eof)?;
    Ok(postcard::from_bytes(&body)?)
}

/// Reads the hello: its length prefix and the magic that opens it, checking the magic
/// as it comes, and only then the rest, if the length is within the bound.
async fn read_hello<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Hello, HandshakeError> {
    let mut head = [0; LENGTH_PREFIX + MAGIC.len()];
    read_checked(stream, &mut head, |seen| {
        seen.get(LENGTH_PREFIX..)
            .is_none_or(|magic| MAGIC.starts_with(magic))
    })
    .await?;
    let mut prefix = [0; LENGTH_PREFIX];
    prefix.copy_from_slice(&head[..LENGTH_PREFIX]);
    let size = u32::from_le_bytes(prefix) as usize;
    if size > HANDSHAKE_MAX {
        return Err(HandshakeError::TooLarge(size));
    }
    if size < MAGIC.len() {
        // The magic cannot be part of the message: not a hello of this protocol.
        return Err(foreign(stream, &head).await);
    }
    let mut body = vec![0; size];
    body[..MAGIC.len()].copy_from_slice(&head[LENGTH_PREFIX..]);
    stream
        .read_exact(&mut body[MAGIC.len()..])
        .await
        .map_err(eof)?;
    Ok(postcard::from_bytes(&body)?)
}

/// The connecting side: proves to `server` that `shared.local` belongs, and checks
/// that `server` does too. Without `keyed`, inside TLS, only says who it is and waits
/// for the welcome.
pub(crate) async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    server: Endpoint,
    keyed: bool,
) -> Result<(), HandshakeError> {
    let client = shared.local;
    let client_nonce = nonce()?;
    write(
        stream,
        &Hello {
            magic: MAGIC,
            version: VERSION,
            cluster: shared.cluster.clone(),
            from: client,
            to: server,
            nonce: client_nonce,
        },
    )
    .await?;
    if !keyed {
        let Welcome = read_fixed(stream, WELCOME_SIZE).await?;
        return Ok(());
    }
    let challenge: Challenge = read_fixed(stream, CHALLENGE_SIZE).await?;
    mac(
        shared,
        b"server",
        client,
        server,
        &client_nonce,
        &challenge.nonce,
    )?
    .verify_slice(&challenge.mac)
    .map_err(|_| HandshakeError::BadMac)?;
    let proof = mac(
        shared,
        b"client",
        client,
        server,
        &client_nonce,
        &challenge.nonce,
    )?;
    write(
        stream,
        &Proof {
            mac: proof.finalize().into_bytes().into(),
        },
    )
    .await?;
    let Welcome = read_fixed(stream, WELCOME_SIZE).await?;
    Ok(())
}

/// The accepting side: checks that the client belongs and proves that this endpoint
/// does. Returns who the client is, once it has proved itself; the caller decides
/// whether it may connect (it may not twice), and then [welcomes](welcome) it or
/// closes the connection. Without `keyed`, inside TLS, checks the hello only: the
/// caller checks that the client's certificate names the endpoint it claims to be.
pub(crate) async fn server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    shared: &Shared,
    keyed: bool,
) -> Result<Endpoint, HandshakeError> {
    let hello = match read_hello(stream).await {
        Ok(hello) => hello,
        Err(error @ HandshakeError::UnexpectedTls(_)) => {
            // Answered as a TLS server answers a client of a version it does not
            // speak, so that the client can say what it met.
            let _ = stream.write_all(&PROTOCOL_VERSION_ALERT).await;
            let _ = stream.flush().await;
            return Err(error);
        }
        Err(error) => return Err(error),
    };
    debug_assert_eq!(hello.magic, MAGIC, "checked as it came");
    if hello.version != VERSION {
        return Err(HandshakeError::Version(hello.version));
    }
    if hello.cluster != shared.cluster {
        return Err(HandshakeError::WrongCluster(hello.cluster));
    }
    if hello.to != shared.local {
        return Err(HandshakeError::NotForMe(hello.to));
    }
    let (client, server) = (hello.from, shared.local);
    if !keyed {
        return Ok(client);
    }
    let server_nonce = nonce()?;
    let ours = mac(
        shared,
        b"server",
        client,
        server,
        &hello.nonce,
        &server_nonce,
    )?;
    write(
        stream,
        &Challenge {
            nonce: server_nonce,
            mac: ours.finalize().into_bytes().into(),
        },
    )
    .await?;
    let proof: Proof = read_fixed(stream, PROOF_SIZE).await?;
    mac(
        shared,
        b"client",
        client,
        server,
        &hello.nonce,
        &server_nonce,
    )?
    .verify_slice(&proof.mac)
    .map_err(|_| HandshakeError::BadMac)?;
    Ok(client)
}

/// The server's last word: the client is in.
pub(crate) async fn welcome<S: AsyncWrite + Unpin>(stream: &mut S) -> Result<(), HandshakeError> {
    write(stream, &Welcome).await
}

/// [`welcome`], through `session`, the TLS session over `stream` whose handshake is
/// over.
pub(crate) async fn welcome_sealed(
    stream: &mut TcpStream,
    session: &mut ServerConnection,
) -> Result<(), HandshakeError> {
    let mut plain = Vec::new();
    encode(&Welcome, &mut plain)?;
    session
        .writer()
        .write_all(&plain)
        .map_err(HandshakeError::Io)?;
    let mut sealed = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut sealed).map_err(HandshakeError::Io)?;
    }
    stream.write_all(&sealed).await.map_err(HandshakeError::Io)
}

/// A fatal `unexpected_message` alert, in the clear: what a TLS endpoint answers a
/// peer that does not speak TLS, so that a plain snapshot-rs client can say what it
/// met.
const ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x0a];

/// A fatal `protocol_version` alert, in the clear: what an endpoint without TLS
/// answers a TLS client, so that the client can say what it met.
const PROTOCOL_VERSION_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46];

/// For an endpoint that requires TLS: looks at the first bytes of an accepted
/// connection, without taking them, and refuses a peer that does not open with a TLS
/// handshake record (answering it with a TLS alert).
pub(crate) async fn expect_tls(stream: &mut TcpStream) -> Result<(), HandshakeError> {
    let mut head = [0; LENGTH_PREFIX + MAGIC.len()];
    let n = stream.peek(&mut head).await.map_err(HandshakeError::Io)?;
    let head = &head[..n];
    let plain_hello = head.get(LENGTH_PREFIX..) == Some(&MAGIC[..]);
    match head.first() {
        None => Err(HandshakeError::Closed),
        Some(0x16) if !plain_hello => Ok(()),
        Some(_) => {
            let error = match foreign(stream, &[]).await {
                HandshakeError::Foreign(sample) if is_plain_hello(&sample.bytes) => {
                    HandshakeError::PlainToTls
                }
                // TLS, but not a handshake record to open with: not this protocol.
                HandshakeError::UnexpectedTls(sample) => HandshakeError::Foreign(sample),
                other => other,
            };
            let _ = stream.write_all(&ALERT).await;
            Err(error)
        }
    }
}

fn is_plain_hello(bytes: &[u8]) -> bool {
    bytes.get(LENGTH_PREFIX..LENGTH_PREFIX + MAGIC.len()) == Some(&MAGIC[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_core::NodeId;

    fn encoded<T: Serialize>(message: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        codec::encode_into(message, &mut bytes, HANDSHAKE_MAX).unwrap();
        bytes
    }

    /// The client checks every length prefix against these sizes.
    #[test]
    fn the_messages_after_the_hello_have_the_sizes_the_client_expects() {
        let challenge = encoded(&Challenge {
            nonce: [1; 32],
            mac: [2; 32],
        });
        assert_eq!(challenge.len(), LENGTH_PREFIX + CHALLENGE_SIZE);
        assert_eq!(challenge[..LENGTH_PREFIX], 64u32.to_le_bytes());
        assert_eq!(
            encoded(&Proof { mac: [3; 32] }).len(),
            LENGTH_PREFIX + PROOF_SIZE
        );
        assert_eq!(encoded(&Welcome).len(), LENGTH_PREFIX + WELCOME_SIZE);
    }

    /// The server checks the magic right after the length prefix.
    #[test]
    fn a_hello_opens_with_the_magic_after_its_length() {
        let hello = encoded(&Hello {
            magic: MAGIC,
            version: VERSION,
            cluster: "c".repeat(300),
            from: Endpoint::Node(NodeId(u32::MAX)),
            to: Endpoint::Role(u16::MAX),
            nonce: [4; 32],
        });
        assert_eq!(hello[LENGTH_PREFIX..LENGTH_PREFIX + MAGIC.len()], MAGIC);
    }

    #[test]
    fn a_sample_is_escaped_and_says_when_it_was_cut() {
        let whole = Sample {
            bytes: b"HTTP/1.1 400\r\n\"\0\xff".to_vec(),
            cut: false,
        };
        assert_eq!(whole.to_string(), r#"HTTP/1.1 400\r\n\"\x00\xff"#);
        let cut = Sample {
            bytes: b"GET /".to_vec(),
            cut: true,
        };
        assert_eq!(
            HandshakeError::Foreign(cut).to_string(),
            "the peer does not speak the snapshot-rs protocol (it sent \"GET /…\")"
        );
    }
}
