//! The asynchronous driver: the [`Node`] methods that use a transport, over an
//! [`AsyncTransport`]. Runtime-agnostic: it awaits the transport and nothing else.
//!
//! The steps are the sync driver's ([`Step`], [`Arrival`] and the private helpers of
//! `node.rs`); only the calls to the transport differ.

use super::{Arrival, Node, NodeError, NodeEvent, NodeFrame, Step};
use crate::{AsyncTransport, Endpoint, Envelope, Event, Frame, NodeId, Outcome, Process};
use crate::{Incoming, SnapshotId, TransportError};

impl<P: Process> Node<P> {
    /// Sends the application message `message` on the channel `self -> to`: the twin
    /// of [`send`](Self::send). The message is counted once the transport has
    /// accepted it.
    pub async fn send_async<C, T>(
        &mut self,
        transport: &mut T,
        to: NodeId,
        message: P::Message,
    ) -> Result<(), NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        let channel = self.engine.outgoing_channel(to)?;
        transport
            .send(Endpoint::Node(to), Frame::Peer(Envelope::App(message)))
            .await?;
        self.engine.count_sent(channel);
        Ok(())
    }

    /// Starts a new snapshot at this node: the twin of [`initiate`](Self::initiate).
    /// Returns its id, and what the step did.
    pub async fn initiate_async<C, T>(
        &mut self,
        transport: &mut T,
    ) -> Result<(SnapshotId, Outcome<P::State, P::Record>), NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        let (id, step) = self.start_snapshot()?;
        let outcome = self.carry_out_async(transport, step, None).await?;
        Ok((id, outcome))
    }

    /// Handles `envelope`, taken from the channel `from -> self`: the twin of
    /// [`deliver`](Self::deliver).
    pub async fn deliver_async<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        envelope: Envelope<P::Message>,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        match envelope {
            Envelope::App(message) => {
                self.deliver_message_async(transport, from, message).await?;
                Ok(Outcome::default())
            }
            Envelope::Marker(id) => self.deliver_marker_async(transport, from, id, false).await,
        }
    }

    /// Runs the node free until something needs the application: the twin of
    /// [`next_event`](Self::next_event).
    ///
    /// Not cancel-safe: a frame received and not yet handled when the future is
    /// dropped is lost. Run it to completion (a node task loops on it), rather than
    /// racing it with other futures.
    pub async fn next_event_async<C, T>(
        &mut self,
        transport: &mut T,
    ) -> Result<NodeEvent<P, C>, NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        loop {
            let received = transport.recv().await?;
            if let Some(event) = self.on_frame_async(transport, received).await? {
                return Ok(event);
            }
        }
    }

    /// Handles one received frame; returns what needs the application, if anything.
    async fn on_frame_async<C, T>(
        &mut self,
        transport: &mut T,
        incoming: Incoming<NodeFrame<P, C>>,
    ) -> Result<Option<NodeEvent<P, C>>, NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        match Self::sort(incoming)? {
            Arrival::Message(from, message) => {
                self.deliver_message_async(transport, from, message).await?;
                Ok(None)
            }
            Arrival::Marker(from, id) => Ok(self
                .deliver_marker_async(transport, from, id, true)
                .await?
                .completed
                .map(Event::Completed)),
            Arrival::Initiate(from) => {
                let step = self.initiated_by(from)?;
                Ok(self
                    .carry_out_async(transport, step, None)
                    .await?
                    .completed
                    .map(Event::Completed))
            }
            Arrival::Abort(from, id) => {
                let (to, frame) = self.abort(from, id);
                transport.send(to, frame).await?;
                Ok(Some(Event::Aborted(id)))
            }
            Arrival::Event(event) => Ok(Some(event)),
        }
    }

    /// An application message from `from`: counted and recorded by the engine,
    /// handled by the process, whose replies are sent.
    async fn deliver_message_async<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        message: P::Message,
    ) -> Result<(), NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        self.take_message(from, message)?;
        if self.outbox.is_empty() {
            return Ok(());
        }
        let mut outbox = std::mem::take(&mut self.outbox);
        let mut sent = Ok(());
        for (to, reply) in outbox.drain() {
            sent = self.send_async(transport, to, reply).await;
            if sent.is_err() {
                break;
            }
        }
        // The outbox goes back, emptied (a drain empties it even when left early),
        // with its allocation.
        self.outbox = outbox;
        sent
    }

    /// A marker from `from`: to the engine, whose markers are sent; with `spread`,
    /// the marker back to `from` last, as in the sync driver.
    async fn deliver_marker_async<C, T>(
        &mut self,
        transport: &mut T,
        from: NodeId,
        id: SnapshotId,
        spread: bool,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        let step = self.take_marker(from, id)?;
        self.carry_out_async(transport, step, spread.then_some(from))
            .await
    }

    /// Sends the frames of `step`, in order; returns its outcome. The marker back to
    /// `back`, if any, goes last, once the others are flushed.
    async fn carry_out_async<C, T>(
        &self,
        transport: &mut T,
        step: Step<P>,
        back: Option<NodeId>,
    ) -> Result<Outcome<P::State, P::Record>, NodeError>
    where
        T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
        NodeFrame<P, C>: Send + 'static,
    {
        let (mut frames, mut outcome) = self.frames(step);
        let last = back.and_then(|from| super::marker_back(&mut frames, from));
        let flush_first = last.is_some() && !frames.is_empty();
        for (to, frame) in frames {
            send_step_frame::<P, C, T>(transport, to, frame, &mut outcome).await?;
        }
        if let Some((to, frame)) = last {
            if flush_first {
                transport.flush().await?;
            }
            send_step_frame::<P, C, T>(transport, to, frame, &mut outcome).await?;
        }
        Ok(outcome)
    }
}

/// Sends one frame of a step, counting it in `outcome` if it is a marker. A peer
/// that has gone needs no marker; the others still do.
async fn send_step_frame<P, C, T>(
    transport: &mut T,
    to: Endpoint,
    frame: NodeFrame<P, C>,
    outcome: &mut Outcome<P::State, P::Record>,
) -> Result<(), NodeError>
where
    P: Process,
    T: AsyncTransport<NodeFrame<P, C>> + ?Sized,
    NodeFrame<P, C>: Send + 'static,
{
    let marker = super::marker_to(to, &frame);
    match transport.send(to, frame).await {
        Err(TransportError::Disconnected(_)) => Ok(()),
        sent => {
            sent?;
            outcome.markers.extend(marker);
            Ok(())
        }
    }
}
