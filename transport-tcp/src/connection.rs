//! The tasks behind an endpoint: the listener, one reader per incoming connection, one
//! writer per outgoing connection.
//!
//! Readers drain their connection into the endpoint's inbox, on the runtime that
//! accepted the connection, unless the endpoint reads its connections itself
//! ([`Shared::handover`](crate::Shared)): then they are handed over after the
//! handshake.

use crate::Shared;
use crate::handshake;
use serde::de::DeserializeOwned;
use snapshot_core::Endpoint;
use snapshot_core::codec::FrameDecoder;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// How much one `read` takes from a connection at most.
const CHUNK: usize = 64 * 1024;

/// A writer that finds several small batches waiting joins them into one write, up to
/// about this size.
const COALESCE: usize = 64 * 1024;

/// After a failed `accept` (out of descriptors, say), the listener waits this long
/// before trying again, rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What the readers hand to their endpoint.
pub(crate) enum Event<F> {
    /// Frames from a peer, in the order it sent them.
    Frames(Endpoint, Vec<F>),
    /// The connection from that peer has ended: the peer closed it, it broke, or the
    /// peer broke the framing. Sent exactly once per authenticated connection, as its
    /// last word.
    Ended(Endpoint),
}

/// Resolves when the endpoint is dropped (its end of the channel is).
async fn stopped(shutdown: &mut watch::Receiver<()>) {
    while shutdown.changed().await.is_ok() {}
}

/// Accepts connections until the endpoint is dropped; each one is served by a task of
/// its own, so that a slow or silent client delays nobody.
pub(crate) async fn accept<F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedSender<Event<F>>,
    mut shutdown: watch::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
{
    let local = shared.local;
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                tokio::spawn(serve(
                    stream,
                    remote,
                    Arc::clone(&shared),
                    inbox.clone(),
                    shutdown.clone(),
                ));
            }
            Err(error) => {
                tracing::warn!(%local, %error, "accepting a connection failed");
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Runs the handshake on one accepted connection, then reads frames from it.
async fn serve<F>(
    mut stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedSender<Event<F>>,
    mut shutdown: watch::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
{
    let local = shared.local;
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%local, %remote, %error, "could not set TCP_NODELAY");
    }
    let admit = |peer| {
        shared
            .incoming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(peer)
    };
    let handshake = tokio::time::timeout(
        shared.hello_timeout,
        handshake::server(&mut stream, &shared, admit),
    );
    let outcome = tokio::select! {
        biased;
        () = stopped(&mut shutdown) => return,
        outcome = handshake => outcome,
    };
    let peer = match outcome {
        Ok(Ok(peer)) => peer,
        Ok(Err(error)) => {
            tracing::warn!(%local, %remote, %error, "refused a connection");
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
    tracing::debug!(%local, %peer, %remote, "accepted a connection");
    let Some(handover) = shared.handover.clone() else {
        read_frames(peer, stream, &shared, inbox, shutdown).await;
        return;
    };
    // Handed over to the thread that reads: the socket leaves this runtime.
    handover.deliver(peer, stream.into_std());
}

/// Sends [`Event::Ended`] however the reader leaves, a panic in a frame's
/// `Deserialize` included.
struct EndNotice<'a, F> {
    peer: Endpoint,
    inbox: &'a mpsc::UnboundedSender<Event<F>>,
}

impl<F> Drop for EndNotice<'_, F> {
    fn drop(&mut self) {
        let _ = self.inbox.send(Event::Ended(self.peer));
    }
}

/// Drains an authenticated connection into the inbox until the peer closes it, it
/// breaks, a frame is bad, or the endpoint is dropped.
async fn read_frames<F>(
    peer: Endpoint,
    mut stream: TcpStream,
    shared: &Shared,
    inbox: mpsc::UnboundedSender<Event<F>>,
    mut shutdown: watch::Receiver<()>,
) where
    F: DeserializeOwned + Send + 'static,
{
    let local = shared.local;
    let _notice = EndNotice {
        peer,
        inbox: &inbox,
    };
    let mut decoder = FrameDecoder::new(shared.max_frame);
    let mut chunk = vec![0; CHUNK];
    let mut batch_hint = 0;
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            read = stream.read(&mut chunk) => read,
        };
        let n = match read {
            Ok(0) => {
                if decoder.has_partial() {
                    tracing::warn!(%local, %peer, "the peer closed its connection in the middle of a frame");
                } else {
                    tracing::debug!(%local, %peer, "the peer closed its connection");
                }
                return;
            }
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%local, %peer, %error, "reading from the peer failed; dropping it");
                return;
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
        if !batch.is_empty() && inbox.send(Event::Frames(peer, batch)).is_err() {
            return;
        }
        if let Some(error) = broken {
            tracing::warn!(%local, %peer, %error, "bad frame from the peer; dropping it");
            return;
        }
    }
}

/// Writes the batches of one outgoing connection, in order, until the endpoint closes
/// the channel (then it ends the connection cleanly) or the connection breaks.
///
/// The endpoint writes to the socket itself while `pending` (the batches it has queued
/// here and that are not yet written) is 0, and queues here otherwise: the writer is
/// what waits when the socket is full, so that the endpoint never does.
///
/// The peer never writes on this connection after the handshake, so anything read
/// from it means the peer has gone (end of stream, error) or is broken (bytes): either
/// way the writer stops, which closes the channel and makes the next send to that
/// peer fail.
pub(crate) async fn write_batches(
    local: Endpoint,
    peer: Endpoint,
    stream: TcpStream,
    mut batches: mpsc::Receiver<Vec<u8>>,
    pending: Arc<AtomicUsize>,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut probe = [0; 1];
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
                    tracing::debug!(%local, %peer, %error, "writing to the peer failed");
                    return;
                }
                // Once it reaches 0, the endpoint may write directly again: nothing of
                // ours is left to go before its bytes.
                pending.fetch_sub(taken, Ordering::Release);
            }
            read = reader.read(&mut probe) => {
                match read {
                    Ok(0) => tracing::debug!(%local, %peer, "the peer closed the connection"),
                    Ok(_) => tracing::warn!(%local, %peer, "the peer wrote on a connection it must only read; dropping it"),
                    Err(error) => tracing::debug!(%local, %peer, %error, "the connection broke"),
                }
                return;
            }
        }
    }
}
