//! Request rate per identity: a token bucket for each client token (and
//! one for all anonymous callers together; see `identity`), refilled at
//! `token_requests_per_sec` up to `token_request_burst`. A call that finds
//! its bucket empty is refused with `ResourceExhausted`, saying how long to
//! wait, in the message and as `retry-after-ms` metadata. Member nodes are
//! never limited: Raft traffic and the writes members forward for their own
//! (limited) clients are bounded by Raft itself, and limiting them would let
//! a busy client stall replication. `rate_layer` also lets every
//! `RaftService` method through, for `--insecure` clusters, where members
//! call as anonymous too (see `identity::is_peer_method`).
//!
//! Memory is bounded: at most `max_identities` buckets. A new identity past
//! it first drops every idle bucket (one refilled to the burst is the same
//! as none), then, if all are busy, the one used least recently.

use super::identity::Identity;
use super::Caller;
use crate::metrics::{Limit, Metrics};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;

/// Metadata key of a rate refusal: milliseconds until a retry can pass
/// (the client library waits it out: `blixard_shared::client`).
pub use blixard_shared::client::RETRY_AFTER_KEY;

/// One identity's bucket: tokens left when it was last used.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one node (see the module doc).
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_identities: usize,
    buckets: Mutex<HashMap<Identity, Bucket>>,
    metrics: Metrics,
}

impl RateLimiter {
    /// A limiter allowing each identity `per_sec` requests a second on
    /// average and `burst` at once, tracking at most `max_identities`
    /// identities; hits are counted in `metrics` (`request_rate`). A zero
    /// rate or burst is taken as one.
    pub fn new(per_sec: u32, burst: u32, max_identities: usize, metrics: Metrics) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            burst: f64::from(burst.max(1)),
            max_identities: max_identities.max(1),
            buckets: Mutex::default(),
            metrics,
        }
    }

    /// Whether `caller` may make one more request now; if not,
    /// `ResourceExhausted` with the wait in its message and metadata.
    pub fn check(&self, caller: &Caller) -> Result<(), Status> {
        self.check_at(caller, Instant::now())
    }

    /// [`RateLimiter::check`] at time `now` (tests drive the clock).
    pub fn check_at(&self, caller: &Caller, now: Instant) -> Result<(), Status> {
        let identity = Identity::of(caller);
        if identity.is_node() {
            return Ok(());
        }
        let Err(wait) = self.take(&identity, now) else {
            return Ok(());
        };
        self.metrics.limit_hit(Limit::RequestRate);
        // Whole milliseconds, rounded up (a float's 99.99999 ms is 100).
        let ms = wait.as_micros().div_ceil(1000).max(1);
        // Debug, not info: a client over its rate would otherwise make the
        // node write a line per refused call (the metric counts them).
        tracing::debug!(%identity, retry_after_ms = ms as u64, "call refused: request rate");
        let mut status = Status::resource_exhausted(format!(
            "request_rate: {identity} is over its {} requests/s (burst {}) on this node; retry in {ms} ms",
            self.per_sec, self.burst
        ));
        if let Ok(value) = ms.to_string().parse() {
            status.metadata_mut().insert(RETRY_AFTER_KEY, value);
        }
        Err(status)
    }

    /// Identities tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Bucket>> {
        // Nothing under the lock can panic halfway through an update.
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tokens `bucket` holds at `now`.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_sec).min(self.burst)
    }

    /// Takes one token from `identity`'s bucket, or says how long until
    /// one is there.
    fn take(&self, identity: &Identity, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.lock();
        if !buckets.contains_key(identity) && buckets.len() >= self.max_identities {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(identity.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(bucket, now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            return Ok(());
        }
        bucket.tokens = tokens;
        Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
    }

    /// Drops every idle bucket, and the least recently used one if none was.
    fn make_room(&self, buckets: &mut HashMap<Identity, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(b, now) < self.burst);
        if buckets.len() < self.max_identities {
            return;
        }
        let oldest = buckets
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(id, _)| id.clone());
        if let Some(id) = oldest {
            tracing::debug!(identity = %id, "rate bucket evicted: too many identities");
            buckets.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::auth::Role;

    fn token(name: &str) -> Caller {
        Caller::Token {
            name: name.into(),
            role: Role::Operator,
            labels: Default::default(),
        }
    }

    fn limiter(per_sec: u32, burst: u32, max: usize) -> RateLimiter {
        RateLimiter::new(per_sec, burst, max, Metrics::new())
    }

    #[test]
    fn a_burst_passes_then_the_rate_and_the_refusal_says_when() {
        let l = limiter(10, 3, 16);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check_at(&token("a"), t0).unwrap();
        }
        let err = l.check_at(&token("a"), t0).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("request_rate"), "{}", err.message());
        assert!(
            err.message().contains("retry in 100 ms"),
            "{}",
            err.message()
        );
        let hint = err
            .metadata()
            .get(RETRY_AFTER_KEY)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(hint, "100");
        assert_eq!(l.metrics.limit_hit_count(Limit::RequestRate), 1);
        // A tenth of a second later, one more.
        let t1 = t0 + Duration::from_millis(100);
        l.check_at(&token("a"), t1).unwrap();
        assert!(l.check_at(&token("a"), t1).is_err());
        // A refusal costs nothing: after 100 ms the next passes.
        l.check_at(&token("a"), t1 + Duration::from_millis(100))
            .unwrap();
    }

    #[test]
    fn the_bucket_refills_to_the_burst_only() {
        let l = limiter(100, 5, 16);
        let t0 = Instant::now();
        l.check_at(&token("a"), t0).unwrap();
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            l.check_at(&token("a"), later).unwrap();
        }
        assert!(
            l.check_at(&token("a"), later).is_err(),
            "no more than the burst"
        );
    }

    #[test]
    fn identities_have_their_own_buckets_and_members_none() {
        let l = limiter(1, 1, 16);
        let t0 = Instant::now();
        l.check_at(&token("a"), t0).unwrap();
        assert!(l.check_at(&token("a"), t0).is_err());
        l.check_at(&token("b"), t0).unwrap();
        l.check_at(&Caller::Anonymous, t0).unwrap();
        assert!(
            l.check_at(&Caller::Anonymous, t0).is_err(),
            "anonymous callers share"
        );
        for _ in 0..1000 {
            l.check_at(&Caller::Node(2), t0).unwrap();
        }
        assert_eq!(l.tracked(), 3, "members are not tracked");
    }

    #[test]
    fn memory_is_bounded_idle_buckets_go_first() {
        let l = limiter(1, 2, 3);
        let t0 = Instant::now();
        // "busy" drained; "idle" used once and refilled by t1.
        l.check_at(&token("busy"), t0).unwrap();
        l.check_at(&token("busy"), t0).unwrap();
        l.check_at(&token("idle"), t0).unwrap();
        let t1 = t0 + Duration::from_millis(1500);
        l.check_at(&token("busy"), t1).unwrap();
        l.check_at(&token("third"), t1).unwrap();
        assert_eq!(l.tracked(), 3);
        // A fourth: the idle one goes, the busy one keeps its (empty) bucket.
        l.check_at(&token("fourth"), t1).unwrap();
        assert_eq!(l.tracked(), 3);
        assert!(
            l.check_at(&token("busy"), t1).is_err(),
            "busy kept its state"
        );
        // All busy: the least recently used is evicted.
        for name in ["fifth", "sixth", "seventh"] {
            l.check_at(&token(name), t1).unwrap();
            assert_eq!(l.tracked(), 3);
        }
        for i in 0..100 {
            l.check_at(&token(&format!("churn-{i}")), t1).unwrap();
        }
        assert_eq!(l.tracked(), 3, "never more than the cap");
    }
}
