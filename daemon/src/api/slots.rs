//! Caps on concurrent long-lived streams (`Watch`, `StreamVmLogs`): a total
//! per node and a share per identity (see `security::identity`), so one
//! client cannot take every slot and lock others (the console) out. A slot
//! is an RAII guard the stream holds: it is given back when the stream
//! ends for any reason, the client going away included (the server drops
//! the stream then).

use crate::metrics::{Limit, Metrics};
use crate::security::identity::Identity;
use crate::security::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tonic::Status;

/// The caps of one kind of stream on one node, and its open streams.
#[derive(Clone)]
pub struct StreamCaps {
    kind: &'static str,
    per_node: (usize, Limit),
    per_identity: (usize, Limit),
    open: Arc<Mutex<Open>>,
    metrics: Metrics,
}

/// Streams open now: in all, and by identity (members not kept per id).
#[derive(Default)]
struct Open {
    total: usize,
    by_identity: HashMap<Identity, usize>,
}

/// One open stream's place; dropping it gives the place back.
pub struct StreamSlot {
    open: Arc<Mutex<Open>>,
    identity: Option<Identity>,
}

fn lock(open: &Mutex<Open>) -> MutexGuard<'_, Open> {
    // Counting is finished before anything can panic under the lock.
    open.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(identity) = self.identity.take() {
            if let Some(n) = open.by_identity.get_mut(&identity) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.by_identity.remove(&identity);
                }
            }
        }
    }
}

impl StreamCaps {
    /// Caps for streams of `kind` (the method name, for messages): at most
    /// `per_node` in all and `per_identity` for any one identity but a
    /// member's, each counted in `metrics` under its [`Limit`] when hit.
    pub fn new(
        kind: &'static str,
        per_node: (usize, Limit),
        per_identity: (usize, Limit),
        metrics: Metrics,
    ) -> Self {
        Self {
            kind,
            per_node,
            per_identity,
            open: Arc::default(),
            metrics,
        }
    }

    /// A slot for a new stream of `caller`, or `ResourceExhausted` naming
    /// the cap it would pass and its value.
    pub fn acquire(&self, caller: &Caller) -> Result<StreamSlot, Status> {
        let identity = Identity::of(caller);
        let mut open = lock(&self.open);
        let (max_total, node_limit) = self.per_node;
        if open.total >= max_total {
            drop(open);
            return Err(self.refuse(
                node_limit,
                &identity,
                format!(
                    "{}: this node already serves {max_total} {} streams, the most it allows; use another member",
                    node_limit.name(),
                    self.kind
                ),
            ));
        }
        let (max_own, identity_limit) = self.per_identity;
        if !identity.is_node() {
            let own = open.by_identity.get(&identity).copied().unwrap_or(0);
            if own >= max_own {
                drop(open);
                return Err(self.refuse(
                    identity_limit,
                    &identity,
                    format!(
                        "{}: {identity} already holds {max_own} {} streams on this node, the most one identity may; close one first",
                        identity_limit.name(),
                        self.kind
                    ),
                ));
            }
            *open.by_identity.entry(identity.clone()).or_insert(0) += 1;
        }
        open.total += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            identity: (!identity.is_node()).then_some(identity),
        })
    }

    /// Streams open now, in all and for `caller`'s identity.
    pub fn open(&self, caller: &Caller) -> (usize, usize) {
        let open = lock(&self.open);
        let own = open
            .by_identity
            .get(&Identity::of(caller))
            .copied()
            .unwrap_or(0);
        (open.total, own)
    }

    fn refuse(&self, limit: Limit, identity: &Identity, message: String) -> Status {
        self.metrics.limit_hit(limit);
        tracing::info!(limit = limit.name(), kind = self.kind, %identity, "stream refused at its cap");
        Status::resource_exhausted(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::auth::Role;

    fn token(name: &str) -> Caller {
        Caller::Token {
            name: name.into(),
            role: Role::Viewer,
            labels: Default::default(),
        }
    }

    fn caps(per_node: usize, per_identity: usize) -> (StreamCaps, Metrics) {
        let metrics = Metrics::new();
        let caps = StreamCaps::new(
            "Watch",
            (per_node, Limit::WatchersPerNode),
            (per_identity, Limit::WatchersPerIdentity),
            metrics.clone(),
        );
        (caps, metrics)
    }

    #[test]
    fn an_identity_stops_at_its_share_and_others_go_on() {
        let (caps, metrics) = caps(10, 2);
        let a1 = caps.acquire(&token("a")).unwrap();
        let _a2 = caps.acquire(&token("a")).unwrap();
        let err = caps.acquire(&token("a")).err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("watchers_per_identity"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("token \"a\" already holds 2"),
            "{}",
            err.message()
        );
        assert_eq!(metrics.limit_hit_count(Limit::WatchersPerIdentity), 1);
        let _b = caps.acquire(&token("b")).unwrap();
        assert_eq!(caps.open(&token("a")), (3, 2));
        drop(a1);
        assert_eq!(caps.open(&token("a")), (2, 1));
        let _a3 = caps.acquire(&token("a")).unwrap();
    }

    #[test]
    fn the_node_total_binds_everyone_members_included() {
        let (caps, metrics) = caps(3, 2);
        let held: Vec<_> = (0..3)
            .map(|_| caps.acquire(&Caller::Node(7)).unwrap())
            .collect();
        assert_eq!(caps.open(&Caller::Node(7)), (3, 0), "members have no share");
        let err = caps.acquire(&token("a")).err().unwrap();
        assert!(
            err.message().contains("watchers_per_node"),
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("already serves 3"),
            "{}",
            err.message()
        );
        assert!(caps.acquire(&Caller::Node(7)).is_err());
        assert_eq!(metrics.limit_hit_count(Limit::WatchersPerNode), 2);
        drop(held);
        assert_eq!(caps.open(&Caller::Node(7)), (0, 0));
        assert!(caps.acquire(&Caller::Anonymous).is_ok());
    }

    #[test]
    fn anonymous_callers_share_one_key() {
        let (caps, _) = caps(10, 1);
        let _one = caps.acquire(&Caller::Anonymous).unwrap();
        let err = caps.acquire(&Caller::Anonymous).err().unwrap();
        assert!(
            err.message().contains("anonymous callers"),
            "{}",
            err.message()
        );
    }
}
