//! Starting and stopping one node. [`start`] reads as the list of its
//! phases, each a function of its own: claim the data dir and choose the
//! backend, open storage (`storage`), bind gRPC, start Raft with the
//! settings `raft_config` derives, serve gRPC (`grpc`) and metrics,
//! bootstrap or join (`membership`), then the node's loops (`loops`) and
//! its health judge (`health`). Every long-lived task is supervised
//! (`tasks`): one that fails is fatal to the node.

pub mod call_limits;
pub mod credentials;
mod grpc;
pub mod health;
mod loops;
mod membership;
pub mod raft_config;
pub(crate) mod storage;
mod tasks;

use crate::config::Config;
use crate::core::Core;
use crate::metrics::probes::{Probes, Readiness};
use crate::metrics::Metrics;
use crate::raft::network::{Network, PeerPool};
use crate::raft::Raft;
use crate::shutdown::{self, ShutdownTrigger};
use loops::AnyBackend;
use std::net::SocketAddr;
use std::sync::Arc;
use tasks::{Lifetime, Tasks};
use tokio::sync::watch;

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
    /// The node's TLS material or tokens could not be made or obtained.
    #[error("credentials: {0}")]
    Credentials(String),
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
    tasks: Tasks,
    fatal: watch::Receiver<Option<String>>,
}

impl NodeHandle {
    /// Stops serving, stops Raft and waits for the node's tasks to end.
    pub async fn shutdown(self) {
        self.trigger.trigger();
        // The audit recorder's last batch needs Raft.
        self.core
            .audit
            .wait_stopped(crate::audit::recorder::STOP_WAIT)
            .await;
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown failed");
        }
        self.tasks.join().await;
        tracing::info!(node_id = self.core.id, "node stopped");
    }

    /// Resolves with the reason once the node has failed for good (a
    /// long-lived task ended or panicked, Raft stopped): the caller stops
    /// it and, for `blixardd`, exits non-zero so it is restarted.
    pub async fn fatal(&self) -> String {
        let mut fatal = self.fatal.clone();
        let why = match fatal.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the node's supervision ended".into(),
        };
        why
    }
}

/// Starts a node with `config` and returns once it is serving.
pub async fn start(mut config: Config) -> Result<NodeHandle, StartError> {
    config.data_dir = storage::claim_data_dir(&config.data_dir)?;
    crate::raft::snapshot_inbox::clear(&config.data_dir).map_err(|e| {
        storage::storage_err(&crate::raft::snapshot_inbox::dir(&config.data_dir), e)
    })?;
    let backend = AnyBackend::open(&config)?;
    let tls = credentials::prepare(&config, config.listen).await?;
    let metrics = Metrics::new();
    let mut storage = storage::open(&config, &metrics).await?;
    let (listener, address) = grpc::bind(config.listen, &config.transport).await?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| address.to_string());
    let (trigger, shutdown) = shutdown::channel();
    let snapshot_bytes = storage.snapshot_bytes.clone();
    let archive = storage.archive.take();
    let core = start_raft(config, advertise, storage, shutdown, tls, metrics).await?;
    let mut tasks = Tasks::new(core.shutdown.clone());
    if let Some((writer, rx)) = archive {
        let shutdown = core.shutdown.clone();
        tasks.spawn("archive", Lifetime::UntilShutdown, async move {
            if let Err(e) = writer.run(rx, shutdown).await {
                tracing::error!(error = %e, "the archive writer stopped");
            }
        });
    }
    let (ready_tx, ready) = watch::channel(Readiness::NotReady("starting".into()));
    let probes = Probes {
        ready,
        fatal: tasks.fatal(),
    };
    let (reporter, health_service) = tonic_health::server::health_reporter();
    grpc::serve(&core, listener, health_service, &mut tasks)?;
    let metrics_address = loops::spawn_metrics(&core, snapshot_bytes, probes, &mut tasks).await?;
    membership::bootstrap_or_join(&core, &mut tasks).await?;
    loops::spawn_loops(&core, backend, &mut tasks);
    let judge = health::run(
        core.clone(),
        reporter,
        grpc::SERVICES,
        ready_tx,
        tasks.fatal_reporter(),
        core.shutdown.clone(),
    );
    tasks.spawn("health", Lifetime::UntilShutdown, judge);
    write_ready_file(&core.config, address, metrics_address);
    tracing::info!(node_id = core.id, %address, advertise = %core.address, "node serving");
    Ok(NodeHandle {
        core,
        address,
        metrics_address,
        trigger,
        fatal: tasks.fatal(),
        tasks,
    })
}

/// Starts Raft over the opened storage and builds the node core around it.
async fn start_raft(
    config: Config,
    advertise: String,
    storage: storage::Storage,
    shutdown: shutdown::Shutdown,
    tls: Option<crate::security::pki::TlsMaterial>,
    metrics: Metrics,
) -> Result<Arc<Core>, StartError> {
    let settings =
        raft_config::raft_config(&config).map_err(|e| StartError::Raft(e.to_string()))?;
    let pool = PeerPool::new(
        tls.as_ref().map(crate::security::tls::peer_client_config),
        metrics.clone(),
    );
    let pool = match &config.transport {
        crate::transport::Transport::Tcp => pool,
        crate::transport::Transport::Sim(net) => pool.over_sim(net.clone(), config.listen),
    };
    let raft = Raft::new(
        config.node_id,
        Arc::new(settings),
        Network::new(pool.clone()),
        storage.log_store,
        storage.state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let audit = Arc::new(crate::audit::Recorder::new(config.node_id, metrics.clone()));
    let config_paused = config.placement_paused;
    Ok(Arc::new(Core {
        id: config.node_id,
        address: advertise,
        raft,
        view: storage.view,
        pool,
        metrics,
        config,
        shutdown,
        startup_log: storage.startup_log,
        tls,
        authz: Default::default(),
        audit,
        placement_paused: config_paused.into(),
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
