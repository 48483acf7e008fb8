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

use crate::Shared;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use snapshot_core::Endpoint;
use snapshot_core::codec::{self, LENGTH_PREFIX};
use std::io;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    Io(#[from] io::Error),
    #[error("the other side closed the connection during the handshake")]
    Closed,
    #[error("a handshake message of {0} bytes, over the {HANDSHAKE_MAX}-byte bound")]
    TooLarge(usize),
    #[error("a handshake message that does not decode")]
    Garbage(#[from] postcard::Error),
    #[error("not a snapshot-rs TCP hello")]
    BadMagic,
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

async fn write<T: Serialize>(stream: &mut TcpStream, message: &T) -> Result<(), HandshakeError> {
    let mut bytes = Vec::new();
    codec::encode_into(message, &mut bytes, HANDSHAKE_MAX).map_err(|error| match error {
        codec::CodecError::TooLarge { size, .. } => HandshakeError::TooLarge(size),
        codec::CodecError::Postcard(error) => HandshakeError::Garbage(error),
        other => HandshakeError::Io(io::Error::other(other.to_string())),
    })?;
    stream.write_all(&bytes).await?;
    Ok(())
}

async fn read<T: DeserializeOwned>(stream: &mut TcpStream) -> Result<T, HandshakeError> {
    let eof = |error: io::Error| {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            HandshakeError::Closed
        } else {
            HandshakeError::Io(error)
        }
    };
    let mut prefix = [0; LENGTH_PREFIX];
    stream.read_exact(&mut prefix).await.map_err(eof)?;
    let size = u32::from_le_bytes(prefix) as usize;
    if size > HANDSHAKE_MAX {
        return Err(HandshakeError::TooLarge(size));
    }
    let mut body = vec![0; size];
    stream.read_exact(&mut body).await.map_err(eof)?;
    Ok(postcard::from_bytes(&body)?)
}

/// The connecting side: proves to `server` that `shared.local` belongs, and checks
/// that `server` does too.
pub(crate) async fn client(
    stream: &mut TcpStream,
    shared: &Shared,
    server: Endpoint,
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
    let challenge: Challenge = read(stream).await?;
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
    let Welcome = read(stream).await?;
    Ok(())
}

/// The accepting side: checks that the client belongs and proves that this endpoint
/// does. Returns who the client is, once it has proved itself; the caller decides
/// whether it may connect (it may not twice), and then [welcomes](welcome) it or
/// closes the connection.
pub(crate) async fn server(
    stream: &mut TcpStream,
    shared: &Shared,
) -> Result<Endpoint, HandshakeError> {
    let hello: Hello = read(stream).await?;
    if hello.magic != MAGIC {
        return Err(HandshakeError::BadMagic);
    }
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
    let proof: Proof = read(stream).await?;
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
pub(crate) async fn welcome(stream: &mut TcpStream) -> Result<(), HandshakeError> {
    write(stream, &Welcome).await
}
