//! The tower layer that applies the [`RateLimiter`] to every call. It must
//! sit inside the gate (`server/grpc.rs` adds it after `GateLayer`; tonic's
//! `Server::layer` makes the first layer added the outermost), so the gate
//! has put the [`Caller`] into the request before this layer reads it. A
//! request without one counts as anonymous, so a wrong order would show as
//! every token sharing one bucket (a test in `tests/limits.rs` checks it).
//! Daemon-to-daemon methods are not limited (see [`is_peer_method`]).

use super::admit::{Admit, AdmitLayer};
use super::identity::is_peer_method;
use super::ratelimit::RateLimiter;
use super::Caller;
use std::sync::Arc;

/// The rate limit's layer: every call is checked against one shared limiter.
pub type RateLayer = AdmitLayer<RateCheck>;

impl RateLayer {
    /// A layer checking every call against `limiter`.
    pub fn new(limiter: Arc<RateLimiter>) -> Self {
        AdmitLayer {
            check: RateCheck { limiter },
        }
    }
}

/// Refuses a call over its caller's rate before the inner service sees it.
#[derive(Clone)]
pub struct RateCheck {
    limiter: Arc<RateLimiter>,
}

impl Admit for RateCheck {
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), tonic::Status> {
        if is_peer_method(req.uri().path()) {
            return Ok(());
        }
        let anonymous = Caller::Anonymous;
        let caller = req.extensions().get::<Caller>().unwrap_or(&anonymous);
        self.limiter.check(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use std::task::{Context, Poll};
    use tower_layer::Layer;
    use tower_service::Service;

    /// A service that answers every call with OK.
    #[derive(Clone)]
    struct Ok200;

    impl tower_service::Service<http::Request<()>> for Ok200 {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(tonic::body::Body::default())))
        }
    }

    /// The status a response carries (`Ok` when it carries none).
    fn code(resp: &http::Response<tonic::body::Body>) -> tonic::Code {
        tonic::Status::from_header_map(resp.headers()).map_or(tonic::Code::Ok, |s| s.code())
    }

    fn request(path: &str, caller: Caller) -> http::Request<()> {
        let mut req = http::Request::builder().uri(path).body(()).unwrap();
        req.extensions_mut().insert(caller);
        req
    }

    #[tokio::test]
    async fn raft_traffic_and_members_pass_clients_are_limited() {
        let limiter = Arc::new(RateLimiter::new(1, 1, 16, Metrics::new()));
        let mut svc = RateLayer::new(limiter).layer(Ok200);
        let get = "/blixard.v1.VmService/GetVm";
        let answer = svc.call(request(get, Caller::Anonymous)).await.unwrap();
        assert_eq!(code(&answer), tonic::Code::Ok);
        let answer = svc.call(request(get, Caller::Anonymous)).await.unwrap();
        assert_eq!(code(&answer), tonic::Code::ResourceExhausted);
        assert!(answer
            .headers()
            .contains_key(crate::security::ratelimit::RETRY_AFTER_KEY));
        // An `--insecure` cluster's Raft traffic is anonymous too, and never
        // in the clients' bucket; members are never limited.
        for _ in 0..100 {
            let raft = request("/blixard.v1.RaftService/AppendEntries", Caller::Anonymous);
            assert_eq!(code(&svc.call(raft).await.unwrap()), tonic::Code::Ok);
            let member = request(get, Caller::Node(2));
            assert_eq!(code(&svc.call(member).await.unwrap()), tonic::Code::Ok);
        }
    }
}
