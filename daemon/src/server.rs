//! Starting and stopping one node: open the redb file, start Raft, serve
//! the gRPC API (with health and reflection) and metrics, bootstrap or join
//! the cluster, register this host, and watch peer liveness when leading.

use crate::agent::Agent;
use crate::api::{cluster::ClusterApi, node::NodeApi, vm::VmApi, watch::WatchApi};
use crate::backend::process::ProcessBackend;
use crate::backend::qemu::QemuBackend;
use crate::backend::VmBackend;
use crate::config::BackendKind;
use crate::config::Config;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerPool};
use crate::raft::service::RaftServer;
use crate::raft::state_machine::StateMachine;
use crate::raft::Raft;
use crate::{host, liveness, registration, scheduler};
use blixard_shared::limits::{MAX_PEER_MESSAGE_BYTES, MAX_REQUEST_BYTES};
use blixard_shared::proto::v1 as pb;
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or redb file could not be opened.
    #[error("data dir {path}: {message}")]
    Storage {
        /// Path.
        path: String,
        /// Cause.
        message: String,
    },
    /// A listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// Address.
        address: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Raft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The gRPC server could not be built.
    #[error("grpc: {0}")]
    Grpc(String),
    /// The VM backend cannot run on this host.
    #[error("backend: {0}")]
    Backend(String),
}

/// How often console logs are checked for rotation.
const LOG_ROTATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the agent (and log rotation) for `backend`.
fn spawn_agent<B: VmBackend>(
    core: Arc<Core>,
    backend: Arc<B>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) {
    let config = &core.config;
    let (lease_tx, lease_rx) = watch::channel(crate::fence::LeaseStatus::default());
    tasks.push(tokio::spawn(crate::fence::keep_lease(
        core.clone(),
        config.fence_lease,
        Some(config.data_dir.clone()),
        lease_tx,
        shutdown.clone(),
    )));
    let exe = config
        .fence_watchdog
        .clone()
        .or_else(crate::fence::Watchdog::default_exe)
        .unwrap_or_else(|| "blixard-fence".into());
    let watchdog =
        crate::fence::Watchdog::new(exe, config.data_dir.clone(), config.data_dir.join("vms"));
    let fencing = crate::agent::Fencing {
        lease: lease_rx,
        watchdog: Some(Arc::new(watchdog)),
    };
    let agent = Agent::new(
        core.clone(),
        backend.clone(),
        config.vm_stop_timeout,
        fencing,
    );
    tasks.push(tokio::spawn(agent.run(shutdown.clone())));
    let mut stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_ROTATION_INTERVAL) => backend.rotate_logs(),
                _ = stop.changed() => return,
            }
        }
    }));
}

/// The backend this node runs, chosen before anything else starts.
enum AnyBackend {
    Qemu(Arc<QemuBackend>),
    Process(Arc<ProcessBackend>),
}

/// A running node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    /// The node core (Raft, state, metrics).
    pub core: Arc<Core>,
    /// The bound gRPC address.
    pub address: SocketAddr,
    /// The bound metrics address, if metrics are served.
    pub metrics_address: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops serving, stops Raft and waits for the node's tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(node_id = self.core.id, "node stopped");
    }
}

/// Resolves once the node starts to stop (or is gone); long-lived calls
/// and servers end on it.
pub(crate) fn shutdown_signal(
    rx: &watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// How often an HTTP/2 connection is pinged: by the server on every
/// connection, and by each daemon on its channels to its peers.
pub(crate) const HTTP2_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is closed.
pub(crate) const HTTP2_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Per-node-id step of the election timeout stagger [ms]: more than the
/// skew between two followers' last heartbeats, small beside the timeout.
const LEASE_STAGGER_MS: u64 = 10;

fn storage_err(path: &std::path::Path, e: impl std::fmt::Display) -> StartError {
    StartError::Storage {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Starts a node with `config` and returns once it is serving.
pub async fn start(mut config: Config) -> Result<NodeHandle, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| storage_err(&config.data_dir, e))?;
    // One spelling of the data dir for the whole node: VM processes carry
    // paths under it and the fence watchdog matches them exactly.
    config.data_dir =
        std::fs::canonicalize(&config.data_dir).map_err(|e| storage_err(&config.data_dir, e))?;
    let backend = match config.backend {
        BackendKind::Qemu => AnyBackend::Qemu(Arc::new(
            QemuBackend::new(
                &config.data_dir,
                config.image_dir.clone(),
                config.qemu_binary.clone(),
                config.accel,
            )
            .map_err(|e| StartError::Backend(e.to_string()))?,
        )),
        BackendKind::Process => AnyBackend::Process(Arc::new(
            ProcessBackend::new(&config.data_dir)
                .map_err(|e| StartError::Backend(e.to_string()))?,
        )),
    };
    let db_path = config.data_dir.join("blixard.redb");
    let db = {
        let path = db_path.clone();
        tokio::task::spawn_blocking(move || redb::Database::create(&path))
            .await
            .map_err(|e| storage_err(&db_path, e))?
            .map_err(|e| storage_err(&db_path, e))?
    };
    let db = Arc::new(db);
    let mut log_store = LogStore::open(db.clone()).map_err(|e| storage_err(&db_path, e))?;
    log_store
        .give_up_leadership_of_restored_term(config.node_id)
        .await
        .map_err(|e| storage_err(&db_path, e))?;
    let startup_log = log_store
        .startup_position()
        .await
        .map_err(|e| storage_err(&db_path, e))?;
    let state_machine = StateMachine::open(db.clone(), log_store.write_queue())
        .map_err(|e| storage_err(&db_path, e))?;
    let view = state_machine.view();
    let snapshot_bytes = state_machine.snapshot_bytes();

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: config.listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| StartError::Bind {
        address: config.listen,
        source,
    })?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| address.to_string());

    // openraft's followers refuse to vote while their leader lease (the
    // election timeout maximum) runs, so after a leader dies their leases
    // end at the same moment and both would stand at once (a split vote,
    // another timeout). Staggering the timeouts by node id lets one lease
    // end first: its owner is the first to ask once the others' have
    // ended too, and wins.
    let lease_stagger = LEASE_STAGGER_MS * (config.node_id % 4);
    let raft_config = openraft::Config {
        cluster_name: "blixard".into(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64 + lease_stagger,
        election_timeout_max: config.election_timeout_max.as_millis() as u64 + lease_stagger,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        max_in_snapshot_log_to_keep: (config.snapshot_threshold / 5).max(1),
        purge_batch_size: (config.snapshot_threshold / 4).clamp(1, 256),
        max_payload_entries: 512,
        enable_pre_vote: Some(true),
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let pool = PeerPool::default();
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        Network::new(pool.clone()),
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;

    let metrics = Metrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let core = Arc::new(Core {
        id: config.node_id,
        address: advertise.clone(),
        raft: raft.clone(),
        view,
        pool,
        metrics: metrics.clone(),
        config: config.clone(),
        shutdown: shutdown_rx.clone(),
        startup_log,
    });

    let mut tasks = Vec::new();

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::cluster_service_server::ClusterServiceServer<ClusterApi>>()
        .await;
    health_reporter
        .set_serving::<pb::vm_service_server::VmServiceServer<VmApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Grpc(e.to_string()))?;

    let router = tonic::transport::Server::builder()
        // Finds peers and clients that vanished without closing their
        // connection (power loss, partition), so their long-lived calls
        // (StreamAppend, Watch) end instead of waiting on TCP's timeouts.
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(reflection)
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
            pb::raft_service_server::RaftServiceServer::new(RaftServer::new(core.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let signal = shutdown_signal(&shutdown_rx);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
            tracing::error!(error = %e, "gRPC server failed");
        }
    }));

    let mut metrics_address = None;
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                address: addr,
                source,
            })?;
        metrics_address = listener.local_addr().ok();
        let signal = shutdown_signal(&shutdown_rx);
        let m = metrics.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, m, signal).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    tasks.push(tokio::spawn(crate::metrics_sync::run(
        core.clone(),
        snapshot_bytes,
        shutdown_rx.clone(),
    )));

    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if config.init && !initialized {
        let members = BTreeMap::from([(config.node_id, BasicNode::new(advertise.clone()))]);
        raft.initialize(members)
            .await
            .map_err(|e| StartError::Raft(format!("bootstrap failed: {e}")))?;
        tracing::info!(node_id = config.node_id, %advertise, "bootstrapped a new cluster");
    } else if config.init {
        tracing::info!("--init ignored: this data dir already belongs to a cluster");
    }
    if let Some(seed) = config.join.clone() {
        if initialized {
            tracing::info!(
                "--join ignored: this data dir already belongs to a cluster; rejoining on its own"
            );
        } else {
            tasks.push(tokio::spawn(registration::join(
                seed,
                config.node_id,
                advertise.clone(),
                shutdown_rx.clone(),
            )));
        }
    }
    let registration = host::registration(&config, &advertise);
    tasks.push(tokio::spawn(registration::register(
        core.clone(),
        registration,
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(liveness::run(
        core.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(scheduler::run(
        core.clone(),
        shutdown_rx.clone(),
    )));
    match backend {
        AnyBackend::Qemu(b) => spawn_agent(core.clone(), b, &shutdown_rx, &mut tasks),
        AnyBackend::Process(b) => spawn_agent(core.clone(), b, &shutdown_rx, &mut tasks),
    }

    if let Some(path) = &config.ready_file {
        let ready = serde_json::json!({
            "node_id": config.node_id,
            "address": address.to_string(),
            "metrics_address": metrics_address.map(|a| a.to_string()),
        });
        if let Err(e) = std::fs::write(path, ready.to_string()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write ready file");
        }
    }
    tracing::info!(node_id = config.node_id, %address, %advertise, "node serving");
    Ok(NodeHandle {
        core,
        address,
        metrics_address,
        shutdown_tx,
        tasks,
    })
}
