//! The native form: an endpoint driven by the application's own tokio runtime.

use crate::TcpConfig;
use crate::connection::{Event, Readers};
use crate::outbound::{Outbound, Stall};
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use snapshot_core::stream::Peers;
use snapshot_core::{AsyncTransport, Endpoint, Incoming, TransportError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

/// One endpoint talking TCP, on the tokio runtime it was created on: implements
/// [`AsyncTransport`].
///
/// Each incoming connection has a reader task, which decodes what comes into a
/// bounded inbox ([`TcpConfig::inbox`]) whatever the application is doing, and stops
/// reading its socket while the inbox is full. A `send` or `flush` that waits for a
/// writer that is behind goes on taking in what the readers decoded, and keeps it for
/// `recv`: two endpoints flooding each other cannot deadlock.
///
/// See the [crate documentation](crate) for how it works and what it guarantees. Its
/// tasks run on the runtime that [`bind`](Self::bind) was called on; dropping it stops
/// the listener and the readers, and lets the writers finish what was flushed (and
/// what was sent but not flushed, as far as the writers' queues take it without
/// waiting). [`close`](Self::close) does all that and waits for the writers.
pub struct AsyncTcpTransport<F> {
    outbound: Outbound,
    /// What the readers decoded, bounded.
    inbox: mpsc::Receiver<Event<F>>,
    /// Taken from the inbox while a send or flush waited, not handed out yet.
    taken: VecDeque<Event<F>>,
    /// The frames of the batch being handed out, and who sent them.
    batch: std::vec::IntoIter<F>,
    batch_from: Endpoint,
    /// Departures to hand out that no reader reports: peers whose connection from
    /// this endpoint broke, with none to this endpoint.
    departed: VecDeque<Endpoint>,
    peers: Peers,
}

impl<F> std::fmt::Debug for AsyncTcpTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTcpTransport")
            .field("outbound", &self.outbound)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl<F> AsyncTcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    /// The endpoint `local` of the cluster that `config` describes: listens on
    /// `config.bind` at once, on the current tokio runtime, and accepts peers that
    /// prove they belong.
    ///
    /// Fails with [`TransportError::Config`] if the key is empty or the inbox holds
    /// nothing, and otherwise if the address cannot be bound. Must be called within a
    /// tokio runtime (with I/O and time enabled).
    pub async fn bind(local: Endpoint, config: TcpConfig) -> Result<Self, TransportError> {
        config.check()?;
        let (inbox_tx, inbox) = mpsc::channel(config.inbox);
        let outbound = Outbound::start(local, config, Readers::Tasks(inbox_tx)).await?;
        Ok(AsyncTcpTransport {
            outbound,
            inbox,
            taken: VecDeque::new(),
            batch: Vec::new().into_iter(),
            batch_from: local,
            departed: VecDeque::new(),
            peers: Peers::default(),
        })
    }
}

impl<F> AsyncTcpTransport<F> {
    /// The address the listener is bound to (with the port the OS chose).
    pub fn local_addr(&self) -> SocketAddr {
        self.outbound.address()
    }

    /// Flushes, closes every outgoing connection once its writer has written
    /// everything, stops listening and reading, and waits for the writers to finish.
    ///
    /// Dropping the transport does the same without waiting (and so without knowing
    /// whether the last frames were written). A peer that stops reading holds it up:
    /// wrap it in a timeout if that matters.
    pub async fn close(mut self) -> Result<(), TransportError> {
        self.flush_all().await;
        self.outbound.finish(self.batch_from).await;
        Ok(())
    }

    /// Waits until the writer behind `stall` can take another batch, taking in what
    /// the readers decoded meanwhile, for `recv`: a peer that floods this endpoint
    /// while this endpoint floods it gets on, and then reads what we write.
    async fn wait_taking_in(&mut self, stall: Stall) {
        let writer = stall.wait();
        tokio::pin!(writer);
        loop {
            tokio::select! {
                biased;
                () = &mut writer => return,
                event = self.inbox.recv() => match event {
                    Some(event) => self.taken.push_back(event),
                    None => return writer.await,
                },
            }
        }
    }

    /// Hands every buffered frame to the writers, waiting (and taking in) while one is
    /// behind.
    async fn flush_all(&mut self) {
        while let Some(stall) = self.outbound.try_flush(self.batch_from) {
            self.wait_taking_in(stall).await;
        }
    }

    /// Takes in the connections from this endpoint found broken: the peer has gone.
    /// Its departure is reported when its connection to this endpoint ends, after its
    /// last frame, or at once if it has none.
    fn take_lost(&mut self) {
        while let Some(peer) = self.outbound.next_lost() {
            if !self.peers.has_departed(peer) && !self.outbound.admitted(peer) {
                self.peers.depart(peer);
                self.departed.push_back(peer);
            }
        }
    }

    /// `peer` has departed, if that is news: the pair is closed both ways.
    fn depart(&mut self, peer: Endpoint) -> Option<Incoming<F>> {
        self.outbound.close_route(peer);
        self.peers.depart(peer).then_some(Incoming::Departed(peer))
    }

    /// Takes in `event`; returns what to hand out first, if anything.
    fn take(&mut self, event: Event<F>) -> Option<Incoming<F>> {
        match event {
            Event::Joined(peer) => {
                self.peers.add(peer);
                None
            }
            Event::Frames(from, frames) => {
                // A peer that has departed says nothing more: its frames are dropped.
                if !self.peers.add(from) {
                    return None;
                }
                self.batch_from = from;
                self.batch = frames.into_iter();
                self.batch.next().map(|frame| Incoming::Frame(from, frame))
            }
            Event::Ended(peer) => self.depart(peer),
        }
    }

    /// The next frame or departure, if one has arrived; never waits.
    fn try_next(&mut self) -> Option<Incoming<F>> {
        loop {
            if let Some(frame) = self.batch.next() {
                return Some(Incoming::Frame(self.batch_from, frame));
            }
            self.take_lost();
            if let Some(peer) = self.departed.pop_front() {
                self.outbound.close_route(peer);
                return Some(Incoming::Departed(peer));
            }
            let event = match self.taken.pop_front() {
                Some(event) => event,
                None => match self.inbox.try_recv() {
                    Ok(event) => event,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
                },
            };
            if let Some(incoming) = self.take(event) {
                return Some(incoming);
            }
        }
    }

    /// Waits for the next frame or departure until `deadline` (`None`: for ever).
    /// Cancel-safe: nothing is taken from the inbox that is not kept.
    async fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Incoming<F>>, TransportError> {
        self.flush_all().await;
        let deadline = deadline.map(tokio::time::Instant::from_std);
        loop {
            if let Some(incoming) = self.try_next() {
                return Ok(Some(incoming));
            }
            if self.peers.is_closed() {
                return Err(TransportError::Closed);
            }
            let timeout = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                event = self.inbox.recv() => match event {
                    Some(event) => self.taken.push_back(event),
                    // Nothing is left to read from: the runtime is going away.
                    None => return Err(TransportError::Closed),
                },
                () = self.outbound.lost() => {}
                () = timeout => {
                    // One last look, at what came just now.
                    return Ok(self.try_next());
                }
            }
        }
    }
}

/// Every method is cancel-safe: a `send` cancelled while it waits has queued its
/// frame, and a cancelled `recv` has taken nothing.
#[async_trait]
impl<F> AsyncTransport<F> for AsyncTcpTransport<F>
where
    F: Serialize + DeserializeOwned + Send + 'static,
{
    fn local(&self) -> Endpoint {
        self.outbound.local()
    }

    /// The listener's address, `ip:port`.
    fn address(&self) -> String {
        self.outbound.address().to_string()
    }

    /// Opens the one connection that carries frames from this endpoint to `peer`,
    /// listening at `address` (`ip:port`, or `host:port`), and runs the handshake on
    /// it; gives up after [`TcpConfig::hello_timeout`]. A peer that does not prove it
    /// knows the key, or that is another endpoint or another cluster, is refused with
    /// [`TransportError::Protocol`]. Connecting to a peer again does nothing, even if
    /// it has departed since.
    async fn connect(&mut self, peer: Endpoint, address: &str) -> Result<(), TransportError> {
        if self.peers.has_departed(peer) {
            return Ok(());
        }
        self.outbound.open(peer, address).await?;
        self.peers.add(peer);
        Ok(())
    }

    /// Queues `frame` for `to`, which must have been [connected](Self::connect)
    /// ([`TransportError::UnknownEndpoint`] otherwise). Frames are written in batches:
    /// when the buffer for `to` is full, and on flush; a full writer queue makes it
    /// wait, taking in what arrives meanwhile. Fails with
    /// [`TransportError::Disconnected`] once `to` has departed or its connection is
    /// known to have broken, and with [`TransportError::FrameTooLarge`] for a frame
    /// over [`TcpConfig::max_frame`] (nothing is queued then, and the connection
    /// stays up).
    async fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        if let Some(stall) = self.outbound.queue(to, &frame)? {
            self.wait_taking_in(stall).await;
        }
        Ok(())
    }

    /// Hands every buffered frame to the writers, waiting (and taking in what
    /// arrives) while one is behind. Frames for a peer whose connection has broken
    /// are dropped: its departure is reported by receiving.
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.flush_all().await;
        Ok(())
    }

    /// Flushes, then waits for the next frame or departure. A peer departs when its
    /// connection to this endpoint ends (after every frame that came on it), or when
    /// the connection from this endpoint to it breaks and it has none to this
    /// endpoint. Once every peer has departed, and each departure has been returned,
    /// fails with [`TransportError::Closed`]. Before any peer, waits.
    async fn recv(&mut self) -> Result<Incoming<F>, TransportError> {
        loop {
            // Without a deadline, `next` gives up only with an error.
            if let Some(incoming) = self.next(None).await? {
                return Ok(incoming);
            }
        }
    }

    async fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Incoming<F>>, TransportError> {
        // A timeout too long to represent is no timeout.
        self.next(Instant::now().checked_add(timeout)).await
    }
}
