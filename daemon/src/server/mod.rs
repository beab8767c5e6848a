//! Starting and stopping one node. [`start`] reads as the list of its
//! phases, each a function of its own: claim the data dir and choose the
//! backend, open storage (`storage`), bind gRPC, start Raft with the
//! settings `raft_config` derives, serve gRPC (`grpc`) and metrics,
//! bootstrap or join (`membership`), then the node's loops (`loops`).

mod grpc;
mod loops;
mod membership;
pub mod raft_config;
mod storage;

use crate::config::Config;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::raft::network::{Network, PeerPool};
use crate::raft::Raft;
use crate::shutdown::{self, ShutdownTrigger};
use loops::AnyBackend;
use std::net::SocketAddr;
use std::sync::Arc;
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

/// A running node. Dropping it does not stop it; call [`NodeHandle::shutdown`].
pub struct NodeHandle {
    /// The node core (Raft, state, metrics).
    pub core: Arc<Core>,
    /// The bound gRPC address.
    pub address: SocketAddr,
    /// The bound metrics address, if metrics are served.
    pub metrics_address: Option<SocketAddr>,
    trigger: ShutdownTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stops serving, stops Raft and waits for the node's tasks to end.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!(node_id = self.core.id, "node stopped");
    }
}

/// Starts a node with `config` and returns once it is serving.
pub async fn start(mut config: Config) -> Result<NodeHandle, StartError> {
    config.data_dir = storage::claim_data_dir(&config.data_dir)?;
    let backend = AnyBackend::open(&config)?;
    let storage = storage::open(&config).await?;
    let (listener, address) = grpc::bind(config.listen).await?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| address.to_string());
    let (trigger, shutdown) = shutdown::channel();
    let snapshot_bytes = storage.snapshot_bytes.clone();
    let core = start_raft(config, advertise, storage, shutdown).await?;
    let mut tasks = vec![grpc::serve(&core, listener).await?];
    let metrics_address = loops::spawn_metrics(&core, snapshot_bytes, &mut tasks).await?;
    tasks.extend(membership::bootstrap_or_join(&core).await?);
    loops::spawn_loops(&core, backend, &mut tasks);
    write_ready_file(&core.config, address, metrics_address);
    tracing::info!(node_id = core.id, %address, advertise = %core.address, "node serving");
    Ok(NodeHandle {
        core,
        address,
        metrics_address,
        trigger,
        tasks,
    })
}

/// Starts Raft over the opened storage and builds the node core around it.
async fn start_raft(
    config: Config,
    advertise: String,
    storage: storage::Storage,
    shutdown: shutdown::Shutdown,
) -> Result<Arc<Core>, StartError> {
    let settings =
        raft_config::raft_config(&config).map_err(|e| StartError::Raft(e.to_string()))?;
    let pool = PeerPool::default();
    let raft = Raft::new(
        config.node_id,
        Arc::new(settings),
        Network::new(pool.clone()),
        storage.log_store,
        storage.state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(Arc::new(Core {
        id: config.node_id,
        address: advertise,
        raft,
        view: storage.view,
        pool,
        metrics: Metrics::new(),
        config,
        shutdown,
        startup_log: storage.startup_log,
    }))
}

/// Tells whoever started the node (`--ready-file`: tests, `blixard dev`)
/// where it serves; a failure to write is logged, not fatal.
fn write_ready_file(config: &Config, address: SocketAddr, metrics_address: Option<SocketAddr>) {
    let Some(path) = &config.ready_file else {
        return;
    };
    let ready = serde_json::json!({
        "node_id": config.node_id,
        "address": address.to_string(),
        "metrics_address": metrics_address.map(|a| a.to_string()),
    });
    if let Err(e) = std::fs::write(path, ready.to_string()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write ready file");
    }
}
