//! The `Transport` contract, checked by snapshot-core's conformance suite: on a plain
//! network, and on a batching one.

use snapshot_core::conformance::{Network, Probe};
use snapshot_core::{Endpoint, TransportError};
use transport_mem::{BATCH, MemNetwork, MemOptions, MemTransport};

/// A network's channels hold this many parcels: small, so that the memory bound is
/// checked quickly.
const CAPACITY: usize = 16;

struct Mem {
    network: MemNetwork<Probe>,
    batch: bool,
}

impl Mem {
    fn new(batch: bool) -> Self {
        let options = MemOptions::default().capacity(CAPACITY);
        let options = if batch { options.batching() } else { options };
        Mem {
            network: MemNetwork::with_options(options),
            batch,
        }
    }
}

impl Network for Mem {
    type Transport = MemTransport<Probe>;

    fn endpoint(&mut self, endpoint: Endpoint) -> Result<Self::Transport, TransportError> {
        self.network.endpoint(endpoint)
    }

    /// A parcel is a frame, or a batch of frames: the channel's capacity in parcels,
    /// and the batch a batching sender gathers before it hands it over.
    fn held_bound(&self) -> Option<usize> {
        Some(match self.batch {
            false => CAPACITY,
            true => CAPACITY * BATCH + BATCH,
        })
    }
}

mod plain {
    snapshot_core::conformance_tests!(super::Mem::new(false));
}

mod batching {
    snapshot_core::conformance_tests!(super::Mem::new(true));
}
