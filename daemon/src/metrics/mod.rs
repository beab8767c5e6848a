//! Prometheus metrics of one daemon, and the small HTTP server that serves
//! them as text at `/metrics` (`--metrics-listen`); `sync` copies Raft's
//! own metrics into them.

pub mod fleet;
pub mod probes;
pub mod sync;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

/// Labels of the VM count by node and state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    /// Node id ("0": not placed).
    pub node: String,
    /// VM state (pending, running, failed, ...).
    pub state: &'static str,
}

/// Labels of the cluster-wide VM count by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// VM state.
    pub state: &'static str,
}

/// Labels of the cluster-wide node count by health.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// alive, suspect or down.
    pub health: &'static str,
}

/// Labels of the node health gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node id.
    pub node: String,
    /// alive, suspect or down, as the leader judged it.
    pub health: &'static str,
}

/// The log writer's own measurements, shared with its thread (see
/// `raft::log_store`): recorded there, exported here.
#[derive(Clone, Debug)]
pub struct LogWriterStats {
    /// Writes per redb transaction (group commit's batch size).
    pub batch_writes: Histogram,
    /// Time of one transaction, fsync included.
    pub commit_seconds: Histogram,
}

impl Default for LogWriterStats {
    fn default() -> Self {
        Self {
            batch_writes: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

/// Labels of per-method gRPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// RPC name, e.g. `CreateVm`.
    pub method: &'static str,
    /// Status code name, e.g. `ok`, `not_found`.
    pub code: &'static str,
}

/// Labels of the gate's refusals.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeOnly {
    /// Status code name: `unauthenticated`, `permission_denied`, ...
    pub code: &'static str,
}

/// Labels of per-method latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodOnly {
    /// RPC name.
    pub method: &'static str,
}

/// Labels of [`Metrics::limit_hits`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which limit: [`Limit::name`].
    pub limit: &'static str,
}

/// Every limit whose hits are counted (`limit_hits{limit}`), so an
/// operator sees which bound a node runs into; each is a constant of
/// `blixard_shared::limits` or a config setting defaulting to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `MAX_WATCHERS_PER_NODE`: a Watch refused, the node full.
    WatchersPerNode,
    /// `MAX_WATCHERS_PER_IDENTITY`: a Watch refused, its caller at its cap.
    WatchersPerIdentity,
    /// `MAX_LOG_STREAMS_PER_NODE`: a `StreamVmLogs` refused, the node full.
    LogStreamsPerNode,
    /// `MAX_LOG_STREAMS_PER_IDENTITY`: a `StreamVmLogs` refused, its
    /// caller at its cap.
    LogStreamsPerIdentity,
    /// The request rate of one identity: a call refused.
    RequestRate,
    /// `CALL_DEADLINE` / `JOIN_CALL_DEADLINE`: a call cut off.
    CallDeadline,
    /// `MAX_CALLS_PER_CONNECTION`: a call that had to wait for a slot.
    CallsPerConnection,
    /// The snapshot size cap: a transfer refused.
    SnapshotBytes,
    /// `MAX_SNAPSHOT_TRANSFERS`: a transfer refused, another in progress.
    SnapshotTransfers,
    /// `SNAPSHOT_CHUNK_TIMEOUT`: a transfer that stalled, ended.
    SnapshotChunkTimeout,
    /// `MAX_PEER_CHANNELS`: a peer channel evicted to make room.
    PeerChannels,
    /// `MAX_AUDIT_QUEUE`: an audit record dropped, the node's queue full.
    AuditQueue,
    /// `AUDIT_DENIALS_PER_SEC`: a refused call not recorded, over budget.
    AuditDenials,
}

impl Limit {
    /// The `limit` label value.
    pub fn name(self) -> &'static str {
        match self {
            Limit::WatchersPerNode => "watchers_per_node",
            Limit::WatchersPerIdentity => "watchers_per_identity",
            Limit::LogStreamsPerNode => "log_streams_per_node",
            Limit::LogStreamsPerIdentity => "log_streams_per_identity",
            Limit::RequestRate => "request_rate",
            Limit::CallDeadline => "call_deadline",
            Limit::CallsPerConnection => "calls_per_connection",
            Limit::SnapshotBytes => "snapshot_bytes",
            Limit::SnapshotTransfers => "snapshot_transfers",
            Limit::SnapshotChunkTimeout => "snapshot_chunk_timeout",
            Limit::PeerChannels => "peer_channels",
            Limit::AuditQueue => "audit_queue",
            Limit::AuditDenials => "audit_denials",
        }
    }
}

type U64Gauge = Gauge<u64, AtomicU64>;

/// Every metric a daemon exports. Cheap to clone (all handles are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Current Raft term.
    pub raft_term: U64Gauge,
    /// Times this node saw the leader change.
    pub raft_leader_changes: Counter,
    /// Whether this node is the leader (0 or 1).
    pub raft_is_leader: U64Gauge,
    /// Highest committed log index known here.
    pub raft_commit_index: U64Gauge,
    /// Highest applied log index.
    pub raft_applied_index: U64Gauge,
    /// Last log index.
    pub raft_last_log_index: U64Gauge,
    /// Entries in the log (last index less purged index).
    pub raft_log_entries: U64Gauge,
    /// Size of the newest snapshot in bytes.
    pub raft_snapshot_bytes: U64Gauge,
    /// Log index covered by the newest snapshot.
    pub raft_snapshot_index: U64Gauge,
    /// Time from proposing a command to its application (seconds).
    pub proposal_latency: Histogram,
    /// gRPC requests by method and result code.
    pub grpc_requests: Family<MethodLabels, Counter>,
    /// gRPC request latency by method (seconds).
    pub grpc_latency: Family<MethodOnly, Histogram>,
    /// Calls the gate refused before any service saw them, by code.
    pub auth_refusals: Family<CodeOnly, Counter>,
    /// Watch streams open on this node.
    pub watchers_connected: U64Gauge,
    /// Times a limit was hit, by limit (see [`Limit`]).
    pub limit_hits: Family<LimitLabels, Counter>,
    /// Whether this node holds its fencing lease (0 or 1): at 0 its VMs
    /// are stopped and none start.
    pub fence_lease_valid: U64Gauge,
    /// Times this node's fencing lease ran out.
    pub fence_lease_lapses: Counter,
    /// VMs this node, as leader, took off nodes whose lease had run out.
    pub vms_rescheduled: Counter,
    /// Placements this node, as leader, committed.
    pub vms_placed: Counter,
    /// Preemptions this node, as leader, committed.
    pub vms_preempted: Counter,
    /// VMs this node, as leader, moved off draining nodes.
    pub vms_drained: Counter,
    /// Placement decisions apply refused as stale.
    pub placements_refused: Counter,
    /// VMs by node and state (the replicated state, refreshed per scrape).
    pub vms: Family<VmLabels, U64Gauge>,
    /// 1 for each node's current health (refreshed per scrape).
    pub nodes: Family<NodeLabels, U64Gauge>,
    /// VMs by state, every state present (zero included), for alerts.
    pub vms_by_state: Family<StateLabels, U64Gauge>,
    /// Nodes by health, every health present (zero included), for alerts.
    pub nodes_by_health: Family<HealthLabels, U64Gauge>,
    /// Free bytes on the data dir's file system (refreshed per scrape).
    pub data_dir_free_bytes: U64Gauge,
    /// Size of the data dir's file system (refreshed per scrape).
    pub data_dir_size_bytes: U64Gauge,
    /// Reconcile passes of this host's agent.
    pub agent_passes: Counter,
    /// Duration of one agent pass.
    pub agent_pass_seconds: Histogram,
    /// VM instances this host started.
    pub vm_starts: Counter,
    /// Time from a start to the backend's first report of it running.
    pub vm_boot_seconds: Histogram,
    /// The Raft log writer's batches and commit times.
    pub log_writer: LogWriterStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("blixard");
        let m = Self {
            registry: Arc::new(Registry::default()),
            raft_term: Default::default(),
            raft_leader_changes: Default::default(),
            raft_is_leader: Default::default(),
            raft_commit_index: Default::default(),
            raft_applied_index: Default::default(),
            raft_last_log_index: Default::default(),
            raft_log_entries: Default::default(),
            raft_snapshot_bytes: Default::default(),
            raft_snapshot_index: Default::default(),
            proposal_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            grpc_requests: Default::default(),
            auth_refusals: Default::default(),
            grpc_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            watchers_connected: Default::default(),
            limit_hits: Default::default(),
            fence_lease_valid: Default::default(),
            fence_lease_lapses: Default::default(),
            vms_rescheduled: Default::default(),
            vms_placed: Default::default(),
            vms_preempted: Default::default(),
            vms_drained: Default::default(),
            placements_refused: Default::default(),
            vms: Default::default(),
            nodes: Default::default(),
            vms_by_state: Default::default(),
            nodes_by_health: Default::default(),
            data_dir_free_bytes: Default::default(),
            data_dir_size_bytes: Default::default(),
            agent_passes: Default::default(),
            agent_pass_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            vm_starts: Default::default(),
            vm_boot_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            log_writer: LogWriterStats::default(),
        };
        registry.register("raft_term", "Current Raft term", m.raft_term.clone());
        registry.register(
            "raft_leader_changes",
            "Leader changes seen by this node",
            m.raft_leader_changes.clone(),
        );
        registry.register(
            "raft_is_leader",
            "1 if this node is the Raft leader",
            m.raft_is_leader.clone(),
        );
        registry.register(
            "raft_commit_index",
            "Highest committed log index known here",
            m.raft_commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Highest applied log index",
            m.raft_applied_index.clone(),
        );
        registry.register(
            "raft_last_log_index",
            "Last log index",
            m.raft_last_log_index.clone(),
        );
        registry.register(
            "raft_log_entries",
            "Entries held in the log",
            m.raft_log_entries.clone(),
        );
        registry.register(
            "raft_snapshot_bytes",
            "Size of the newest snapshot",
            m.raft_snapshot_bytes.clone(),
        );
        registry.register(
            "raft_snapshot_index",
            "Log index covered by the newest snapshot",
            m.raft_snapshot_index.clone(),
        );
        registry.register(
            "proposal_latency_seconds",
            "Time from proposal to application",
            m.proposal_latency.clone(),
        );
        registry.register(
            "grpc_requests",
            "gRPC requests by method and code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "auth_refusals",
            "Calls refused for missing, wrong or too weak credentials, by code",
            m.auth_refusals.clone(),
        );
        registry.register(
            "grpc_request_latency_seconds",
            "gRPC request latency by method",
            m.grpc_latency.clone(),
        );
        registry.register(
            "watchers_connected",
            "Watch streams open on this node",
            m.watchers_connected.clone(),
        );
        registry.register(
            "limit_hits",
            "Times a limit was hit (a call refused, cut off or made to wait), by limit",
            m.limit_hits.clone(),
        );
        registry.register(
            "fence_lease_valid",
            "1 while this node holds its fencing lease",
            m.fence_lease_valid.clone(),
        );
        registry.register(
            "fence_lease_lapses",
            "Times this node's fencing lease ran out",
            m.fence_lease_lapses.clone(),
        );
        registry.register(
            "vms_rescheduled",
            "VMs taken off nodes whose fencing lease ran out (by this node as leader)",
            m.vms_rescheduled.clone(),
        );
        for (name, help, counter) in [
            (
                "vms_placed",
                "VMs placed (by this node as leader)",
                &m.vms_placed,
            ),
            (
                "vms_preempted",
                "Preemptions committed (by this node as leader)",
                &m.vms_preempted,
            ),
            (
                "vms_drained",
                "VMs moved off draining nodes (by this node as leader)",
                &m.vms_drained,
            ),
            (
                "placements_refused",
                "Placement decisions refused by apply as stale",
                &m.placements_refused,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        m.register_operator_view(&mut registry);
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// The cluster as an operator watches it: VMs and nodes, the agent,
    /// boots, the data dir's disk and the log writer.
    fn register_operator_view(&self, registry: &mut Registry) {
        registry.register(
            "vms",
            "VMs by node and state, in the replicated state (node 0: not placed)",
            self.vms.clone(),
        );
        registry.register(
            "nodes",
            "1 for each node's current health (alive, suspect, down)",
            self.nodes.clone(),
        );
        registry.register(
            "vms_by_state",
            "VMs by state in the replicated state, every state present",
            self.vms_by_state.clone(),
        );
        registry.register(
            "nodes_by_health",
            "Nodes by health, every health present",
            self.nodes_by_health.clone(),
        );
        registry.register(
            "data_dir_free_bytes",
            "Free bytes on the file system of this node's data dir",
            self.data_dir_free_bytes.clone(),
        );
        registry.register(
            "data_dir_size_bytes",
            "Size of the file system of this node's data dir",
            self.data_dir_size_bytes.clone(),
        );
        registry.register(
            "agent_passes",
            "Reconcile passes of this host's agent",
            self.agent_passes.clone(),
        );
        registry.register(
            "agent_pass_seconds",
            "Duration of one reconcile pass of this host's agent",
            self.agent_pass_seconds.clone(),
        );
        registry.register(
            "vm_starts",
            "VM instances this host started",
            self.vm_starts.clone(),
        );
        registry.register(
            "vm_boot_seconds",
            "Time from starting a VM instance to its first report as running",
            self.vm_boot_seconds.clone(),
        );
        registry.register(
            "log_writer_batch_writes",
            "Writes per Raft log transaction (group commit)",
            self.log_writer.batch_writes.clone(),
        );
        registry.register(
            "log_writer_commit_seconds",
            "Time of one Raft log transaction, fsync included",
            self.log_writer.commit_seconds.clone(),
        );
    }

    /// Counts one hit of `limit`.
    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits
            .get_or_create(&LimitLabels {
                limit: limit.name(),
            })
            .inc();
    }

    /// Hits of `limit` so far (for tests and the console).
    pub fn limit_hit_count(&self, limit: Limit) -> u64 {
        self.limit_hits
            .get_or_create(&LimitLabels {
                limit: limit.name(),
            })
            .get()
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// Runs one gRPC handler, counting it by method and result code and
    /// timing it.
    pub async fn observe<T, F>(&self, method: &'static str, fut: F) -> Result<T, tonic::Status>
    where
        F: Future<Output = Result<T, tonic::Status>>,
    {
        let started = Instant::now();
        let result = fut.await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.grpc_requests
            .get_or_create(&MethodLabels {
                method,
                code: blixard_shared::client::code_name(code),
            })
            .inc();
        self.grpc_latency
            .get_or_create(&MethodOnly { method })
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// Serves `/metrics`, `/healthz` (200 while every long-lived task of the
/// node lives, 503 once one failed) and `/readyz` (200 when the node knows
/// a leader and has caught up, 503 with the reason otherwise) on
/// `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    refresh: fleet::Refresh,
    probes: probes::Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let verdict = |problem: Option<String>| match problem {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    let (health, ready) = (probes.clone(), probes);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                refresh.run(&metrics);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || async move { verdict(health.unhealthy()) }),
        )
        .route(
            "/readyz",
            get(move || async move { verdict(ready.unready()) }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
