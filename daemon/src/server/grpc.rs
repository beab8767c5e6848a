//! The gRPC phase of a node's start: bind the listener, then serve every
//! service (health, reflection, the public API and the internal
//! `RaftService`) on it until the node stops.
//!
//! Every call passes, outermost first: the audit layer (which records
//! mutating and refused calls, `crate::audit`), the gate (who is calling,
//! and may they), the request rate of that caller, then the call's deadline and
//! its connection's share of the handlers (`call_limits`). tonic's
//! `Server::layer` wraps earlier layers around later ones, so this order
//! is the order of the `.layer` calls below.

use super::call_limits::CallLimitsLayer;
use super::tasks::{Lifetime, Tasks};
use super::StartError;
use crate::api::{
    audit::AuditApi, cluster::ClusterApi, node::NodeApi, policy::PolicyApi, quota::QuotaApi,
    token::TokenApi, vm::VmApi, watch::WatchApi,
};
use crate::audit::layer::AuditLayer;
use crate::core::Core;
use crate::raft::service::RaftServer;
use crate::security::gate::GateLayer;
use crate::security::rate_layer::RateLayer;
use crate::security::ratelimit::RateLimiter;
use crate::transport::{HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT};
use blixard_shared::limits::{
    MAX_PEER_MESSAGE_BYTES, MAX_POLICY_BYTES, MAX_RATE_LIMITED_IDENTITIES, MAX_REQUEST_BYTES,
};
use blixard_shared::proto::v1 as pb;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::server::Router;
use tonic_health::pb::health_server::{Health, HealthServer};

/// Where the node's gRPC server accepts connections.
pub(super) enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// An address on a simulation's network.
    Sim(crate::sim::net::SimIncoming),
}

/// Binds `address` on `transport`, returning the listener and the address
/// it got (on TCP, port 0 asks the OS for one).
pub(super) async fn bind(
    address: SocketAddr,
    transport: &crate::transport::Transport,
) -> Result<(Listener, SocketAddr), StartError> {
    let bind_err = |source| StartError::Bind { address, source };
    match transport {
        crate::transport::Transport::Tcp => {
            let (listener, local) = bind_tcp(address).await?;
            Ok((Listener::Tcp(listener), local))
        }
        crate::transport::Transport::Sim(net) => {
            Ok((Listener::Sim(net.bind(address).map_err(bind_err)?), address))
        }
    }
}

/// Binds a TCP `address` (the metrics server's too).
pub(super) async fn bind_tcp(address: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bind_err = |source| StartError::Bind { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

/// The services whose health `grpc.health.v1` reports (besides the
/// overall server, `""`), as the health judge sets it.
pub(super) const SERVICES: &[&str] = &[
    <pb::cluster_service_server::ClusterServiceServer<ClusterApi> as NamedService>::NAME,
    <pb::node_service_server::NodeServiceServer<NodeApi> as NamedService>::NAME,
    <pb::vm_service_server::VmServiceServer<VmApi> as NamedService>::NAME,
    <pb::watch_service_server::WatchServiceServer<WatchApi> as NamedService>::NAME,
    <pb::token_service_server::TokenServiceServer<TokenApi> as NamedService>::NAME,
    <pb::policy_service_server::PolicyServiceServer<PolicyApi> as NamedService>::NAME,
    <pb::audit_service_server::AuditServiceServer<AuditApi> as NamedService>::NAME,
    <pb::quota_service_server::QuotaServiceServer<QuotaApi> as NamedService>::NAME,
];

/// Serves the node's gRPC services on `listener` until the node stops; a
/// server that fails is fatal to the node.
pub(super) fn serve(
    core: &Arc<Core>,
    listener: Listener,
    health: HealthServer<impl Health>,
    tasks: &mut Tasks,
) -> Result<(), StartError> {
    let router = router(core, health)?;
    let signal = core.shutdown.signal();
    tasks.spawn("grpc server", Lifetime::UntilShutdown, async move {
        let served = match listener {
            Listener::Tcp(listener) => {
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            Listener::Sim(incoming) => router.serve_with_incoming_shutdown(incoming, signal).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok(())
}

/// The layers every call passes, outermost first (see the module doc).
type Layers = tower_layer::Stack<
    CallLimitsLayer,
    tower_layer::Stack<
        RateLayer,
        tower_layer::Stack<GateLayer, tower_layer::Stack<AuditLayer, tower_layer::Identity>>,
    >,
>;

/// Every service the node serves, with its message size limits.
fn router(
    core: &Arc<Core>,
    health: HealthServer<impl Health>,
) -> Result<Router<Layers>, StartError> {
    let health_service = health;
    // Reflection v1 and v1alpha: Python's stock grpcio-reflection speaks
    // only v1alpha, grpcurl either.
    let reflector = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflector()
        .build_v1()
        .map_err(|e| StartError::Grpc(e.to_string()))?;
    let reflection_v1alpha = reflector()
        .build_v1alpha()
        .map_err(|e| StartError::Grpc(e.to_string()))?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &core.tls {
        server = server
            .tls_config(crate::security::tls::server_config(tls))
            .map_err(|e| StartError::Grpc(format!("TLS: {e}")))?;
    }
    let node_id = core.id;
    Ok(server
        .trace_fn(move |req| call_span(node_id, req))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(AuditLayer::new(core.clone()))
        .layer(GateLayer::new(core.clone()))
        .layer(RateLayer::new(Arc::new(RateLimiter::new(
            core.config.token_requests_per_sec,
            core.config.token_request_burst,
            MAX_RATE_LIMITED_IDENTITIES,
            core.metrics.clone(),
        ))))
        .layer(CallLimitsLayer::new(core.metrics.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(
            pb::cluster_service_server::ClusterServiceServer::new(ClusterApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::node_service_server::NodeServiceServer::new(NodeApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::vm_service_server::VmServiceServer::new(VmApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::watch_service_server::WatchServiceServer::new(WatchApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::token_service_server::TokenServiceServer::new(TokenApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::policy_service_server::PolicyServiceServer::new(PolicyApi::new(core.clone()))
                .max_decoding_message_size(2 * MAX_POLICY_BYTES + 4096),
        )
        .add_service(
            pb::audit_service_server::AuditServiceServer::new(AuditApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::quota_service_server::QuotaServiceServer::new(QuotaApi::new(core.clone()))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::raft_service_server::RaftServiceServer::new(RaftServer::new(core.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        ))
}

/// The span of one call when this node exports traces: it continues the
/// caller's trace when the call carries one. Raft's own traffic
/// (heartbeats, replication) and health checks get none unless they carry
/// a trace: they would drown every other span.
fn call_span(node_id: u64, req: &tonic::codegen::http::Request<()>) -> tracing::Span {
    if !blixard_shared::telemetry::enabled() {
        return tracing::Span::none();
    }
    let path = req.uri().path();
    let traced = req
        .headers()
        .contains_key(blixard_shared::telemetry::TRACEPARENT);
    let chatter = path.starts_with("/blixard.v1.RaftService/") || path.starts_with("/grpc.");
    if chatter && !traced {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        node_id
    );
    blixard_shared::telemetry::continue_from_headers(&span, req.headers());
    span
}
