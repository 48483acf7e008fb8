//! The tasks behind an endpoint: the listener, one reader per incoming connection, one
//! writer per outgoing connection.
//!
//! Readers drain their connection into the endpoint's bounded inbox, on the runtime
//! that accepted the connection, unless the endpoint reads its connections itself
//! ([`Readers::Handover`]): then they are handed over after the handshake.

use crate::Shared;
use crate::direct::{self, Handover};
use crate::handshake::{self, HandshakeError};
use crate::tls::AsyncTlsReader;
use rustls::ServerConnection;
use serde::de::DeserializeOwned;
use snapshot_core::Endpoint;
use snapshot_core::codec::FrameDecoder;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

/// How much one `read` takes from a connection at most: a batch of frames is what one
/// read decoded.
const CHUNK: usize = 64 * 1024;

/// A writer that finds several small batches waiting joins them into one write, up to
/// about this size.
const COALESCE: usize = 64 * 1024;

/// After a failed `accept` (out of descriptors, say), the listener waits this long
/// before trying again, rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the readers hand to their endpoint, each reader in order.
pub(crate) enum Event<F> {
    /// A peer has connected to this endpoint and proved itself: it is a peer.
    Joined(Endpoint),
    /// Frames from a peer, in the order it sent them.
    Frames(Endpoint, Vec<F>),
    /// The connection from that peer has ended: the peer closed it, it broke, or the
    /// peer broke the framing. Sent exactly once per admitted connection, as its last
    /// word.
    Ended(Endpoint),
}

/// Who reads the connections an endpoint accepts.
pub(crate) enum Readers<F> {
    /// A task per connection, into this inbox (the asynchronous form).
    Tasks(mpsc::Sender<Event<F>>),
    /// The thread behind this handover (the synchronous form).
    Handover(Arc<Handover>),
}

impl<F> Clone for Readers<F> {
    fn clone(&self) -> Self {
        match self {
            Readers::Tasks(inbox) => Readers::Tasks(inbox.clone()),
            Readers::Handover(handover) => Readers::Handover(Arc::clone(handover)),
        }
    }
}

/// Resolves when the endpoint is dropped (its end of the channel is).
async fn stopped(shutdown: &mut watch::Receiver<()>) {
    while shutdown.changed().await.is_ok() {}
}

/// Accepts connections until the endpoint is dropped; each one is served by a task of
/// its own, so that a slow or silent client delays nobody.
///
/// At most [`Shared::max_handshakes`] of those tasks are in their handshake at once: a
/// connection that comes when that many are closes the one that has been in its
/// handshake longest. That bounds the sockets that connections which never prove
/// themselves can hold, without shutting out a peer that proves itself at once.
pub(crate) async fn accept<F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    readers: Readers<F>,
    mut shutdown: watch::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
{
    let local = shared.local;
    // One per handshake in progress, oldest first: sending on it closes that
    // connection, and its task drops the other end once its handshake is over.
    let mut handshakes: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                handshakes.retain(|handshake| !handshake.is_closed());
                while handshakes.len() >= shared.max_handshakes {
                    let Some(oldest) = handshakes.pop_front() else {
                        break;
                    };
                    // Its handshake may have ended meanwhile: then there is room.
                    let _ = oldest.send(());
                }
                let (evict, evicted) = oneshot::channel();
                handshakes.push_back(evict);
                tokio::spawn(serve(
                    stream,
                    remote,
                    Arc::clone(&shared),
                    readers.clone(),
                    shutdown.clone(),
                    evicted,
                ));
            }
            Err(error) => {
                tracing::warn!(%local, error = &error as &dyn std::error::Error, "accepting a connection failed");
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// The server's side of the handshake on an accepted connection: the TLS handshake
/// first, if this endpoint requires TLS, then the hello. Returns who the client is,
/// once it has proved itself, and the TLS session.
///
/// The socket stays the caller's: a connection refused is closed once the refusal is
/// logged.
async fn handshake(
    stream: &mut TcpStream,
    shared: &Shared,
) -> Result<(Endpoint, Option<Box<ServerConnection>>), HandshakeError> {
    match &shared.tls {
        None => {
            let peer = handshake::server(stream, shared, true).await?;
            Ok((peer, None))
        }
        // Boxed: a TLS handshake's state is large, and a plain endpoint's tasks need
        // not carry room for it.
        Some(tls) => Box::pin(tls_handshake(stream, shared, tls)).await,
    }
}

/// [`handshake`] under TLS.
async fn tls_handshake(
    stream: &mut TcpStream,
    shared: &Shared,
    tls: &crate::tls::Tls,
) -> Result<(Endpoint, Option<Box<ServerConnection>>), HandshakeError> {
    handshake::expect_tls(stream).await?;
    let mut stream = tls.acceptor.accept(stream).await.map_err(|error| {
        match HandshakeError::from_io(error) {
            HandshakeError::Io(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                HandshakeError::Closed
            }
            other => other,
        }
    })?;
    let peer = handshake::server(&mut stream, shared, false).await?;
    crate::tls::check_peer(stream.get_ref().1, peer, &shared.cluster)?;
    let (_, session) = stream.into_inner();
    Ok((peer, Some(Box::new(session))))
}

/// Runs the handshake on one accepted connection, then hands it to its reader. Gives
/// up on it if `evicted` says so first: too many handshakes are in progress, and this
/// one has been longest.
async fn serve<F>(
    mut stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    readers: Readers<F>,
    mut shutdown: watch::Receiver<()>,
    mut evicted: oneshot::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
{
    let local = shared.local;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%local, %remote, error = &error as &dyn std::error::Error, "could not set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(shared.hello_timeout, handshake(&mut stream, &shared));
    let outcome = tokio::select! {
        biased;
        () = stopped(&mut shutdown) => return,
        Ok(()) = &mut evicted => {
            tracing::warn!(
                %local,
                %remote,
                limit = shared.max_handshakes,
                "refused a connection: too many handshakes in progress, and this one had been \
                 in progress longest"
            );
            return;
        }
        outcome = handshake => outcome,
    };
    // The handshake is over: it no longer counts against the listener's limit.
    drop(evicted);
    let (peer, mut session) = match outcome {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            tracing::warn!(%local, %remote, error = &error as &dyn std::error::Error, "refused a connection");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %local,
                %remote,
                timeout = ?shared.hello_timeout,
                "refused a connection: no handshake in time"
            );
            return;
        }
    };
    if !shared.admit(peer) {
        let error = HandshakeError::Duplicate(peer);
        tracing::warn!(%local, %remote, error = &error as &dyn std::error::Error, "refused a connection");
        return;
    }
    // Admitted: from here on the endpoint hears of the connection's end, however it
    // comes (it waits for that before it reports a departure its writer noticed).
    let welcomed = match &mut session {
        None => handshake::welcome(&mut stream).await,
        Some(session) => handshake::welcome_sealed(&mut stream, session).await,
    };
    match readers {
        Readers::Tasks(inbox) => {
            if let Err(error) = welcomed {
                tracing::debug!(%local, %peer, error = &error as &dyn std::error::Error, "the connection broke at the handshake's end");
                let _ = inbox.send(Event::Ended(peer)).await;
                return;
            }
            tracing::debug!(%local, %peer, %remote, "accepted a connection");
            match session {
                None => read_frames(peer, stream, &shared, inbox, shutdown).await,
                Some(session) => {
                    // Boxed, as the session is: a plain reader's task need not carry
                    // room for it.
                    let stream = Box::new(AsyncTlsReader::new(stream, *session, local, peer));
                    read_frames(peer, stream, &shared, inbox, shutdown).await;
                }
            }
        }
        Readers::Handover(handover) => {
            let socket = match welcomed {
                Ok(()) => stream.into_std().map(|stream| match session {
                    None => direct::Socket::Plain(stream),
                    Some(session) => direct::Socket::Tls(stream, session),
                }),
                Err(error) => Err(io::Error::other(error.to_string())),
            };
            tracing::debug!(%local, %peer, %remote, "accepted a connection");
            // Handed over to the thread that reads: the socket leaves this runtime.
            handover.deliver(peer, socket);
        }
    }
}

/// Makes sure [`Event::Ended`] is sent however the reader leaves, a panic in a frame's
/// `Deserialize` included. The normal way is [`send`](Self::send), which waits for
/// room in the inbox; a drop that comes first sends it if there is room, or leaves it
/// to a task.
struct EndNotice<F: Send + 'static> {
    peer: Endpoint,
    inbox: Option<mpsc::Sender<Event<F>>>,
}

impl<F: Send + 'static> EndNotice<F> {
    async fn send(&mut self) {
        if let Some(inbox) = self.inbox.take() {
            let _ = inbox.send(Event::Ended(self.peer)).await;
        }
    }

    /// The endpoint is going away: nobody is left to tell.
    fn disarm(&mut self) {
        self.inbox = None;
    }
}

impl<F: Send + 'static> Drop for EndNotice<F> {
    fn drop(&mut self) {
        let Some(inbox) = self.inbox.take() else {
            return;
        };
        if let Err(TrySendError::Full(event)) = inbox.try_send(Event::Ended(self.peer))
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { inbox.send(event).await });
        }
    }
}

/// How a reader's loop ended.
enum Stop {
    /// The connection ended: the endpoint is to hear of it.
    Ended,
    /// The endpoint is going away.
    Shutdown,
}

/// Drains an authenticated connection into the inbox until the peer closes it, it
/// breaks, a frame is bad, or the endpoint is dropped; then says it has ended. Waits
/// while the inbox is full, and does not read the socket meanwhile.
async fn read_frames<F, S>(
    peer: Endpoint,
    stream: S,
    shared: &Shared,
    inbox: mpsc::Sender<Event<F>>,
    mut shutdown: watch::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
    S: AsyncRead + Unpin,
{
    let mut notice = EndNotice {
        peer,
        inbox: Some(inbox.clone()),
    };
    if let Stop::Ended = pump(peer, stream, shared, &inbox, &mut shutdown).await {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => {}
            () = notice.send() => {}
        }
    }
    // Sent, or the endpoint is going away.
    notice.disarm();
}

/// The reader's loop: see [`read_frames`].
async fn pump<F, S>(
    peer: Endpoint,
    mut stream: S,
    shared: &Shared,
    inbox: &mpsc::Sender<Event<F>>,
    shutdown: &mut watch::Receiver<()>,
) -> Stop
where
    F: DeserializeOwned + Send + 'static,
    S: AsyncRead + Unpin,
{
    let local = shared.local;
    // Waits for room in the inbox, unless the endpoint goes away first.
    macro_rules! hand {
        ($event:expr) => {
            tokio::select! {
                biased;
                () = stopped(shutdown) => return Stop::Shutdown,
                sent = inbox.send($event) => if sent.is_err() {
                    return Stop::Shutdown;
                },
            }
        };
    }
    hand!(Event::Joined(peer));
    let mut decoder = FrameDecoder::new(shared.max_frame);
    let mut chunk = vec![0; CHUNK];
    let mut batch_hint = 0;
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(shutdown) => return Stop::Shutdown,
            read = stream.read(&mut chunk) => read,
        };
        let n = match read {
            Ok(0) => {
                if decoder.has_partial() {
                    tracing::warn!(%local, %peer, "the peer closed its connection in the middle of a frame");
                } else {
                    tracing::debug!(%local, %peer, "the peer closed its connection");
                }
                return Stop::Ended;
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                // From TLS only: the connection ended without a close_notify, after
                // records that all verified. An end like any other.
                tracing::debug!(%local, %peer, "the peer closed its connection without a TLS close_notify");
                return Stop::Ended;
            }
            Err(error) => {
                if crate::tls::RecordsDoNotVerify::is(&error) {
                    // Its TLS records do not verify: the record layer has said so.
                    tracing::debug!(%local, %peer, error = &error as &dyn std::error::Error, "dropped the peer");
                } else {
                    tracing::warn!(%local, %peer, error = &error as &dyn std::error::Error, "reading from the peer failed; dropping it");
                }
                return Stop::Ended;
            }
        };
        decoder.feed(&chunk[..n]);
        let mut batch = Vec::with_capacity(batch_hint);
        let broken = loop {
            match decoder.next_frame::<F>() {
                Ok(Some(frame)) => batch.push(frame),
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        batch_hint = batch.len();
        if !batch.is_empty() {
            hand!(Event::Frames(peer, batch));
        }
        if let Some(error) = broken {
            tracing::warn!(%local, %peer, error = &error as &dyn std::error::Error, "bad frame from the peer; dropping it");
            return Stop::Ended;
        }
    }
}

/// Writes the batches of one outgoing connection, in order, until the endpoint closes
/// the channel (then it ends the connection cleanly) or the connection breaks (then it
/// tells the endpoint that the peer has gone: [`Shared::writer_lost`]).
///
/// The endpoint writes to the socket itself while `pending` (the batches it has queued
/// here and that are not yet written) is 0, and queues here otherwise: the writer is
/// what waits when the socket is full, so that the endpoint never does.
///
/// The peer never writes on this connection after the handshake, so anything read
/// from it means the peer has gone (end of stream, error) or is broken (bytes): either
/// way the writer stops, which closes the channel and makes the next send to that
/// peer fail. Under TLS the peer's records (an answer to a key update, an alert before
/// it closes) are skipped, and only the connection's end stops the writer.
pub(crate) async fn write_batches(
    shared: Arc<Shared>,
    peer: Endpoint,
    stream: TcpStream,
    mut batches: mpsc::Receiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
) {
    let local = shared.local;
    let (mut reader, mut writer) = stream.into_split();
    let mut probe = [0; 64];
    loop {
        tokio::select! {
            biased;
            batch = batches.recv() => {
                let Some(mut batch) = batch else {
                    // The endpoint is done with this peer: everything queued is
                    // written, so say so.
                    let _ = writer.shutdown().await;
                    tracing::debug!(%local, %peer, "closed the connection");
                    return;
                };
                let mut taken = 1;
                while batch.len() < COALESCE {
                    match batches.try_recv() {
                        Ok(more) => {
                            batch.extend_from_slice(&more);
                            taken += 1;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(error) = writer.write_all(&batch).await {
                    tracing::debug!(%local, %peer, error = &error as &dyn std::error::Error, "writing to the peer failed");
                    break;
                }
                // Once it reaches 0, the endpoint may write directly again: nothing of
                // ours is left to go before its bytes.
                pending.fetch_sub(taken, Ordering::Release);
            }
            read = reader.read(&mut probe) => {
                match read {
                    Ok(0) => tracing::debug!(%local, %peer, "the peer closed the connection"),
                    // Under TLS the peer may answer a key update, or send an alert
                    // before it closes the connection: its records are not read here,
                    // and its end is what counts.
                    Ok(_) if shared.tls.is_some() => continue,
                    Ok(_) => tracing::warn!(%local, %peer, "the peer wrote on a connection it must only read; dropping it"),
                    Err(error) => tracing::debug!(%local, %peer, error = &error as &dyn std::error::Error, "the connection broke"),
                }
                break;
            }
        }
    }
    // Stop taking batches before the endpoint hears of it: a send that then finds
    // the channel open will find it closed once told.
    batches.close();
    shared.writer_lost(peer);
}
