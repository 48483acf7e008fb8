//! Building blocks for those who write a [`Transport`](crate::Transport): how long a
//! receive waits ([`Patience`]) and whether it spins first ([`Spin`]), who the peers
//! are and which have departed ([`Peers`]), a cheap map keyed by endpoint
//! ([`EndpointMap`]), the order a flush writes in ([`flush_order`]), and, with the
//! `codec` feature, the inbound side of a transport over byte streams (`Inbound`).

use crate::Endpoint;
use std::time::{Duration, Instant};

mod routes;
pub use routes::{EndpointHasher, EndpointMap, EndpointSet};

#[cfg(feature = "codec")]
mod inbound;
#[cfg(feature = "codec")]
pub use inbound::{Inbound, Turn};

/// How long a transport's receive waits at each look, for those who write a
/// [`Transport`](crate::Transport): polls without sleeping for a while (the spin), then sleeps until a
/// deadline, if there is one, or for ever.
///
/// Make one per call to `recv` or `recv_timeout`, and ask it before each wait:
///
/// ```
/// use snapshot_core::stream::Patience;
/// use std::time::{Duration, Instant};
///
/// let patience = Patience::new(Some(Instant::now()), Duration::ZERO);
/// // A deadline already passed: one last look that does not wait.
/// let look = patience.look();
/// assert_eq!((look.timeout, look.last), (Some(Duration::ZERO), true));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    deadline: Option<Instant>,
    /// `Some(None)`: a spin too long to represent, which never ends.
    spin_until: Option<Option<Instant>>,
}

/// What to do at one look: see [`Patience::look`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// How long to wait for something to arrive: `None` for ever, zero not at all.
    pub timeout: Option<Duration>,
    /// The deadline has passed: if this look finds nothing, give up.
    pub last: bool,
    /// Still spinning: if this look finds nothing, look again at once (after
    /// [`std::hint::spin_loop`]).
    pub spinning: bool,
}

impl Patience {
    /// Until `deadline` (`None`: for ever), spinning for `spin` first.
    pub fn new(deadline: Option<Instant>, spin: Duration) -> Self {
        Patience {
            deadline,
            spin_until: (!spin.is_zero()).then(|| Instant::now().checked_add(spin)),
        }
    }

    /// What the next wait should be. Reads the clock only if there is a deadline or a
    /// spin.
    pub fn look(&self) -> Look {
        let now = (self.deadline.is_some() || self.spin_until.is_some()).then(Instant::now);
        let spinning = self
            .spin_until
            .is_some_and(|until| until.is_none_or(|until| now.is_some_and(|now| now < until)));
        let (timeout, last) = match (self.deadline, now) {
            // One last look, then give up.
            (Some(deadline), Some(now)) if now >= deadline => (Some(Duration::ZERO), true),
            _ if spinning => (Some(Duration::ZERO), false),
            (Some(deadline), Some(now)) => (Some(deadline - now), false),
            _ => (None, false),
        };
        Look {
            timeout,
            last,
            spinning,
        }
    }
}

/// Whether a transport's receive spins before it sleeps, learned from the waits
/// before it: a spin that the answer outlasted was a core taken from those that were
/// working on it, and on a machine with few cores the endpoints it waits for are among
/// them. After a wait longer than the spin, the next waits sleep at once; one that
/// ends within the spin's length turns spinning back on.
///
/// ```
/// use snapshot_core::stream::Spin;
/// use std::time::Duration;
///
/// let mut spin = Spin::new(Duration::from_micros(200));
/// assert_eq!(spin.next(), Duration::from_micros(200));
/// spin.waited(Duration::from_millis(3)); // a start-up: the spin was wasted
/// assert_eq!(spin.next(), Duration::ZERO);
/// spin.waited(Duration::from_micros(40)); // a round trip: spinning pays again
/// assert_eq!(spin.next(), Duration::from_micros(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spin {
    length: Duration,
    pays: bool,
}

impl Spin {
    /// Spins of up to `length` (zero: never spin), on until a wait outlasts one.
    pub fn new(length: Duration) -> Self {
        Spin { length, pays: true }
    }

    /// The longest spin, whether or not spinning is on.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// How long the next wait spins before it sleeps.
    pub fn next(&self) -> Duration {
        if self.pays {
            self.length
        } else {
            Duration::ZERO
        }
    }

    /// A wait ended (with something, or at its deadline) `waited` after it began.
    pub fn waited(&mut self, waited: Duration) {
        self.pays = waited <= self.length;
    }

    /// When a wait begins: the clock, read only if there is a spin to learn about.
    /// Give it back to [`ended`](Self::ended) when the wait ends.
    pub fn begin(&self) -> Option<Instant> {
        (!self.length.is_zero()).then(Instant::now)
    }

    /// The wait that [`begin`](Self::begin) gave `began` for has ended.
    pub fn ended(&mut self, began: Option<Instant>) {
        if let Some(began) = began {
            self.waited(began.elapsed());
        }
    }
}

/// The peers of an endpoint, as the [`Transport`](crate::Transport) contract counts
/// them: those it connected to and those it heard from, and which of them have
/// departed.
///
/// ```
/// use snapshot_core::stream::Peers;
/// use snapshot_core::{Endpoint, NodeId};
///
/// let (a, b) = (Endpoint::Node(NodeId(1)), Endpoint::Node(NodeId(2)));
/// let mut peers = Peers::default();
/// assert!(!peers.is_closed(), "no peer yet: wait for one");
/// peers.add(a);
/// peers.add(b);
/// assert!(peers.depart(a), "the first news of a departure is reported");
/// assert!(!peers.depart(a), "and only the first");
/// assert!(!peers.is_closed());
/// peers.depart(b);
/// assert!(peers.is_closed(), "every peer has gone");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Peers {
    live: EndpointSet,
    departed: EndpointSet,
    /// The peer last added, while it is live: frames come in runs from one peer,
    /// and each is counted without a hash.
    last: Option<Endpoint>,
}

impl Peers {
    /// Counts `peer` as a peer (connected to, or heard from). A peer that has
    /// departed stays departed. Says whether it is live.
    #[inline]
    pub fn add(&mut self, peer: Endpoint) -> bool {
        if self.last == Some(peer) {
            return true;
        }
        if self.departed.contains(&peer) {
            return false;
        }
        self.live.insert(peer);
        self.last = Some(peer);
        true
    }

    /// Whether `peer` is a live peer.
    pub fn is_live(&self, peer: Endpoint) -> bool {
        self.live.contains(&peer)
    }

    /// Records that `peer` has gone. Says whether this is the first news of it, which
    /// the transport reports as [`Incoming::Departed`](crate::Incoming::Departed).
    pub fn depart(&mut self, peer: Endpoint) -> bool {
        if self.last == Some(peer) {
            self.last = None;
        }
        self.live.remove(&peer);
        self.departed.insert(peer)
    }

    /// Whether `peer` has departed.
    pub fn has_departed(&self, peer: Endpoint) -> bool {
        self.departed.contains(&peer)
    }

    /// Whether there were peers and every one has departed: receiving returns
    /// [`TransportError::Closed`](crate::TransportError::Closed).
    pub fn is_closed(&self) -> bool {
        self.live.is_empty() && !self.departed.is_empty()
    }

    /// The live peers.
    pub fn live(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.live.iter().copied()
    }
}

/// Puts `last_from` first in `dirty`, the peers a flush is about to write to (in the
/// order they were first sent to), if it is there; the others keep their order.
///
/// In request-reply traffic the peer whose frame was received last is the one
/// waiting, for the reply just queued, while frames to the others are consequences of
/// the request: writing to it first shortens the round trip.
pub fn flush_order(dirty: &mut [Endpoint], last_from: Endpoint) {
    if let Some(at) = dirty.iter().position(|&peer| peer == last_from) {
        dirty[..=at].rotate_right(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_received_from_last_is_flushed_first() {
        let [a, b, c] = [1, 2, 3].map(|n| Endpoint::Node(crate::NodeId(n)));
        let mut dirty = [a, b, c];
        flush_order(&mut dirty, c);
        assert_eq!(dirty, [c, a, b]);
        flush_order(&mut dirty, Endpoint::Node(crate::NodeId(9)));
        assert_eq!(
            dirty,
            [c, a, b],
            "a peer not waiting for anything changes nothing"
        );
    }

    #[test]
    fn a_peer_added_again_after_its_departure_stays_departed() {
        let [a, b] = [1, 2].map(|n| Endpoint::Node(crate::NodeId(n)));
        let mut peers = Peers::default();
        assert!(peers.add(a));
        assert!(peers.add(a), "the same peer again: still live");
        assert!(peers.depart(a));
        assert!(!peers.add(a), "the peer added last has departed since");
        assert!(!peers.is_live(a));
        assert!(peers.add(b));
        assert!(peers.depart(b));
        assert!(peers.is_closed());
    }

    #[test]
    fn without_deadline_or_spin_a_look_waits_for_ever() {
        let look = Patience::new(None, Duration::ZERO).look();
        assert_eq!(
            look,
            Look {
                timeout: None,
                last: false,
                spinning: false
            }
        );
    }

    #[test]
    fn a_spin_polls_first_and_a_deadline_bounds_the_wait() {
        let far = Instant::now() + Duration::from_secs(3600);
        let look = Patience::new(Some(far), Duration::from_secs(60)).look();
        assert_eq!(
            (look.timeout, look.last, look.spinning),
            (Some(Duration::ZERO), false, true)
        );
        let look = Patience::new(Some(far), Duration::ZERO).look();
        assert!(!look.last && !look.spinning);
        assert!(look.timeout.is_some_and(|t| t > Duration::from_secs(3500)));
        // A spin too long to represent never ends; without a deadline it never gives up.
        let look = Patience::new(None, Duration::MAX).look();
        assert_eq!(
            (look.timeout, look.last, look.spinning),
            (Some(Duration::ZERO), false, true)
        );
    }

    #[test]
    fn a_passed_deadline_gives_one_last_look_even_while_spinning() {
        let patience = Patience::new(Some(Instant::now()), Duration::from_secs(60));
        let look = patience.look();
        assert_eq!((look.timeout, look.last), (Some(Duration::ZERO), true));
    }
}
