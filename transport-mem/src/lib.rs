//! An in-process [`Transport`] for `snapshot-core`: endpoints are threads of one
//! process, and frames move through unbounded crossbeam channels without being
//! serialized.
//!
//! A [`MemNetwork`] is the directory of endpoints; each endpoint takes its
//! [`MemTransport`] from it and may be moved to a thread of its own. Endpoints can join
//! at any time, and every other endpoint can reach them at once.
//!
//! Guarantees, as [`Transport`] asks: frames from one endpoint to another arrive in the
//! order they were sent (each endpoint has one FIFO inbox, and a sender's frames enter
//! it in order); nothing is lost or duplicated while both ends are alive; sending to an
//! endpoint that has gone away fails with [`TransportError::Disconnected`].
//!
//! ```
//! use snapshot_core::{Endpoint, NodeId, Transport};
//! use transport_mem::MemNetwork;
//!
//! let network = MemNetwork::<String>::new();
//! let mut a = network.endpoint(Endpoint::Node(NodeId(1))).unwrap();
//! let mut b = network.endpoint(Endpoint::Node(NodeId(2))).unwrap();
//! a.send(b.local(), "hello".to_string()).unwrap();
//! assert_eq!(b.recv().unwrap(), (a.local(), "hello".to_string()));
//! ```

#![deny(missing_docs)]

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use snapshot_core::{Endpoint, Transport, TransportError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

type Inbox<F> = Sender<(Endpoint, F)>;

/// The directory of the endpoints of one in-process system.
///
/// Cloning it is cheap and gives another handle on the same directory.
pub struct MemNetwork<F> {
    directory: Arc<Mutex<HashMap<Endpoint, Inbox<F>>>>,
}

impl<F> Clone for MemNetwork<F> {
    fn clone(&self) -> Self {
        MemNetwork {
            directory: Arc::clone(&self.directory),
        }
    }
}

impl<F> Default for MemNetwork<F> {
    fn default() -> Self {
        MemNetwork {
            directory: Arc::default(),
        }
    }
}

impl<F> std::fmt::Debug for MemNetwork<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork").finish_non_exhaustive()
    }
}

impl<F: Send> MemNetwork<F> {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the network as `endpoint`. Fails if that endpoint is already taken.
    pub fn endpoint(&self, endpoint: Endpoint) -> Result<MemTransport<F>, TransportError> {
        let (tx, rx) = unbounded();
        let mut directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if directory.contains_key(&endpoint) {
            return Err(TransportError::Protocol(format!(
                "{endpoint} has already joined this network"
            )));
        }
        directory.insert(endpoint, tx);
        Ok(MemTransport {
            local: endpoint,
            inbox: rx,
            network: self.clone(),
            routes: HashMap::new(),
        })
    }

    fn route(&self, to: Endpoint) -> Option<Inbox<F>> {
        let directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        directory.get(&to).cloned()
    }
}

/// One endpoint of a [`MemNetwork`].
///
/// Dropping it takes the endpoint out of the network: frames sent to it afterwards
/// fail with [`TransportError::Disconnected`].
pub struct MemTransport<F> {
    local: Endpoint,
    inbox: Receiver<(Endpoint, F)>,
    network: MemNetwork<F>,
    /// Senders already looked up, so that a send takes no lock.
    routes: HashMap<Endpoint, Inbox<F>>,
}

impl<F> std::fmt::Debug for MemTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTransport")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<F> Drop for MemTransport<F> {
    fn drop(&mut self) {
        let mut directory = self
            .network
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        directory.remove(&self.local);
    }
}

impl<F: Send> Transport<F> for MemTransport<F> {
    fn local(&self) -> Endpoint {
        self.local
    }

    fn send(&mut self, to: Endpoint, frame: F) -> Result<(), TransportError> {
        let route = match self.routes.get(&to) {
            Some(route) => route,
            None => {
                let route = self
                    .network
                    .route(to)
                    .ok_or(TransportError::UnknownEndpoint(to))?;
                self.routes.entry(to).or_insert(route)
            }
        };
        if route.send((self.local, frame)).is_err() {
            self.routes.remove(&to);
            return Err(TransportError::Disconnected(to));
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    fn recv(&mut self) -> Result<(Endpoint, F), TransportError> {
        self.inbox.recv().map_err(|_| TransportError::Closed)
    }

    fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<(Endpoint, F)>, TransportError> {
        match self.inbox.recv_timeout(timeout) {
            Ok(item) => Ok(Some(item)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Closed),
        }
    }
}
