//! A deadline on every unary call, and a cap on calls in the handlers at
//! once per client connection: a tower layer inside the gate (it reads the
//! [`Caller`] the gate put into the request).
//!
//! Why not tonic's own `Server::timeout` and `concurrency_limit_per_connection`:
//! tonic's timeout runs until a handler returns its response, which for a
//! client-streaming call (`InstallSnapshot`) is after the whole upload, so
//! a large snapshot would be cut off; it also answers `Cancelled`, not
//! `DeadlineExceeded`. Both of tonic's layers sit outside every layer of
//! ours, so their hits could not be counted, and the connection limit would
//! also hold back the one pooled connection a member forwards all its
//! clients' writes on. Here the deadline is per method (none for streams,
//! longer for `Join`), and the connection cap applies to clients only (not
//! to members, nor to `RaftService` methods: see `is_peer_method`).

use crate::metrics::{Limit, Metrics};
use crate::security::identity::is_peer_method;
use crate::security::Caller;
use blixard_shared::limits::{CALL_DEADLINE, JOIN_CALL_DEADLINE, MAX_CALLS_PER_CONNECTION};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// Methods that stream (either way) and so have no deadline: each ends
/// when its client or the node ends it, and has its own bounds (stream
/// caps, the snapshot chunk timeout, Raft's own timeouts). A test checks
/// this list against every streaming method the node serves.
pub const STREAMING_METHODS: &[&str] = &[
    "/blixard.v1.WatchService/Watch",
    "/blixard.v1.AuditService/WatchAudit",
    "/blixard.v1.VmService/StreamVmLogs",
    "/blixard.v1.ClusterService/Backup",
    "/blixard.v1.RaftService/StreamAppend",
    "/blixard.v1.RaftService/InstallSnapshot",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// `Join` waits for the new node to catch up.
const JOIN_METHOD: &str = "/blixard.v1.ClusterService/Join";

/// The server's deadline for a call to `path`; `None` for streams.
pub fn deadline_for(path: &str) -> Option<Duration> {
    if STREAMING_METHODS.contains(&path) {
        None
    } else if path == JOIN_METHOD {
        Some(JOIN_CALL_DEADLINE)
    } else {
        Some(CALL_DEADLINE)
    }
}

/// Calls in the handlers per client connection, by the connection's
/// remote address (unique while the connection is open).
struct Connections {
    slots: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
    per_connection: usize,
}

/// Entries past which a new connection first drops the entries nobody
/// holds (left by a call cancelled while it waited).
const CONNECTIONS_SWEEP_AT: usize = 1024;

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Semaphore>>> {
        // Nothing under the lock can panic halfway through an update.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A call's place on its connection; dropping it gives the place back and
/// forgets the connection when nobody else holds or waits for a place.
struct ConnectionSlot {
    permit: Option<OwnedSemaphorePermit>,
    semaphore: Arc<Semaphore>,
    addr: SocketAddr,
    connections: Arc<Connections>,
}

impl ConnectionSlot {
    /// Takes a place on `addr`'s connection, waiting for one when all are
    /// taken (counted as a hit).
    async fn acquire(connections: Arc<Connections>, addr: SocketAddr, metrics: &Metrics) -> Self {
        let semaphore = {
            let mut slots = connections.lock();
            if !slots.contains_key(&addr) && slots.len() >= CONNECTIONS_SWEEP_AT {
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
            slots
                .entry(addr)
                .or_insert_with(|| Arc::new(Semaphore::new(connections.per_connection)))
                .clone()
        };
        let mut slot = Self {
            permit: None,
            semaphore,
            addr,
            connections,
        };
        match slot.semaphore.clone().try_acquire_owned() {
            Ok(permit) => slot.permit = Some(permit),
            Err(_) => {
                metrics.limit_hit(Limit::CallsPerConnection);
                tracing::debug!(remote = %addr, "call waits: its connection has {} calls in progress", slot.connections.per_connection);
                // Never closed, so this only fails if it were.
                slot.permit = slot.semaphore.clone().acquire_owned().await.ok();
            }
        }
        slot
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut slots = self.connections.lock();
        // The map's reference and ours: nobody else holds or waits.
        if Arc::strong_count(&self.semaphore) <= 2
            && slots
                .get(&self.addr)
                .is_some_and(|s| Arc::ptr_eq(s, &self.semaphore))
        {
            slots.remove(&self.addr);
        }
    }
}

/// The layer (see the module doc); clones share the connection table.
#[derive(Clone)]
pub struct CallLimitsLayer {
    connections: Arc<Connections>,
    /// The deadline of a call by its path ([`deadline_for`]; tests shorten it).
    deadlines: fn(&str) -> Option<Duration>,
    metrics: Metrics,
}

impl CallLimitsLayer {
    /// Deadlines per [`deadline_for`] and [`MAX_CALLS_PER_CONNECTION`],
    /// hits counted in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self::with_per_connection(MAX_CALLS_PER_CONNECTION, metrics)
    }

    /// Like [`CallLimitsLayer::new`] with `per_connection` calls at once.
    pub fn with_per_connection(per_connection: usize, metrics: Metrics) -> Self {
        Self {
            connections: Arc::new(Connections {
                slots: Mutex::default(),
                per_connection: per_connection.max(1),
            }),
            deadlines: deadline_for,
            metrics,
        }
    }

    /// Client connections with a call in progress or waiting.
    pub fn connections(&self) -> usize {
        self.connections.lock().len()
    }
}

impl<S> tower_layer::Layer<S> for CallLimitsLayer {
    type Service = CallLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits {
            layer: self.clone(),
            inner,
        }
    }
}

/// The service [`CallLimitsLayer`] makes.
#[derive(Clone)]
pub struct CallLimits<S> {
    layer: CallLimitsLayer,
    inner: S,
}

use crate::service::BoxFuture;

/// The remote address of the connection `req` came on, if known.
fn remote_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| {
            ext.get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr)
        })
}

impl<S, B> tower_service::Service<http::Request<B>> for CallLimits<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let deadline = (self.layer.deadlines)(&path);
        let member = matches!(req.extensions().get::<Caller>(), Some(Caller::Node(_)))
            || is_peer_method(&path);
        let connection = (!member).then(|| remote_addr(&req)).flatten();
        let mut inner = crate::service::take_ready(&mut self.inner);
        let (connections, metrics) = (self.layer.connections.clone(), self.layer.metrics.clone());
        let call = async move {
            let _slot = match connection {
                Some(addr) => Some(ConnectionSlot::acquire(connections, addr, &metrics).await),
                None => None,
            };
            inner.call(req).await
        };
        let Some(deadline) = deadline else {
            return Box::pin(call);
        };
        let metrics = self.layer.metrics.clone();
        Box::pin(async move {
            match tokio::time::timeout(deadline, call).await {
                Ok(answer) => answer,
                Err(_) => {
                    metrics.limit_hit(Limit::CallDeadline);
                    tracing::info!(%path, ?deadline, "call cut off at the server's deadline");
                    Ok(Status::deadline_exceeded(format!(
                        "call_deadline: the call took longer than this node allows ({deadline:?}); a write may or may not have been applied"
                    ))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every streaming method the node serves, from the descriptors it
    /// registers for reflection.
    fn streaming_methods() -> Vec<String> {
        let mut found = Vec::new();
        for bytes in [
            blixard_shared::proto::v1::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        if method.client_streaming() || method.server_streaming() {
                            found.push(format!(
                                "/{}.{}/{}",
                                file.package(),
                                service.name(),
                                method.name()
                            ));
                        }
                    }
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn every_streaming_method_and_only_those_go_without_a_deadline() {
        let mut listed: Vec<String> = STREAMING_METHODS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(streaming_methods(), listed);
        for path in STREAMING_METHODS {
            assert_eq!(deadline_for(path), None, "{path}");
        }
        assert_eq!(
            deadline_for("/blixard.v1.VmService/CreateVm"),
            Some(CALL_DEADLINE)
        );
        assert_eq!(deadline_for(JOIN_METHOD), Some(JOIN_CALL_DEADLINE));
    }

    #[tokio::test]
    async fn a_connection_past_its_calls_waits_and_its_entry_goes_with_the_last() {
        let metrics = Metrics::new();
        let layer = CallLimitsLayer::with_per_connection(2, metrics.clone());
        let addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let a = ConnectionSlot::acquire(layer.connections.clone(), addr, &metrics).await;
        let b = ConnectionSlot::acquire(layer.connections.clone(), addr, &metrics).await;
        let other: SocketAddr = "10.0.0.1:5001".parse().unwrap();
        let c = ConnectionSlot::acquire(layer.connections.clone(), other, &metrics).await;
        assert_eq!(metrics.limit_hit_count(Limit::CallsPerConnection), 0);
        let connections = layer.connections.clone();
        let m = metrics.clone();
        let third =
            tokio::spawn(async move { ConnectionSlot::acquire(connections, addr, &m).await });
        // The third waits (and counts) until a place is free.
        common_poll(|| metrics.limit_hit_count(Limit::CallsPerConnection) == 1).await;
        assert!(!third.is_finished());
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("the third gets the freed place")
            .unwrap();
        assert_eq!(layer.connections(), 2);
        drop((b, third, c));
        assert_eq!(layer.connections(), 0, "no entry outlives its calls");
    }

    /// A service whose calls never finish.
    #[derive(Clone)]
    struct Never;

    impl tower_service::Service<http::Request<()>> for Never {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            std::future::pending()
        }
    }

    /// [`deadline_for`] in milliseconds instead of seconds.
    fn short(path: &str) -> Option<Duration> {
        deadline_for(path).map(|d| Duration::from_millis(d.as_secs()))
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    #[tokio::test]
    async fn a_unary_call_is_cut_at_its_deadline_and_a_stream_is_not() {
        use tower_layer::Layer;
        use tower_service::Service;
        let metrics = Metrics::new();
        let mut layer = CallLimitsLayer::new(metrics.clone());
        layer.deadlines = short;
        let mut svc = layer.layer(Never);
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            svc.call(request("/blixard.v1.VmService/CreateVm")),
        )
        .await
        .expect("cut off at 30 ms")
        .unwrap();
        let status = tonic::Status::from_header_map(answer.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(
            status.message().contains("call_deadline"),
            "{}",
            status.message()
        );
        assert_eq!(metrics.limit_hit_count(Limit::CallDeadline), 1);
        // Join has its longer deadline; streams none at all.
        let started = tokio::time::Instant::now();
        let join = svc.call(request(JOIN_METHOD)).await.unwrap();
        assert_eq!(
            tonic::Status::from_header_map(join.headers()).map(|s| s.code()),
            Some(tonic::Code::DeadlineExceeded)
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        let watch = svc.call(request("/blixard.v1.WatchService/Watch"));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), watch)
                .await
                .is_err(),
            "a stream outlives every deadline"
        );
        assert_eq!(metrics.limit_hit_count(Limit::CallDeadline), 2);
    }

    /// Polls `done` with a deadline.
    async fn common_poll(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
