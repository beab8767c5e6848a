//! The last phase of a node's start: the VM backend it runs, and the
//! long-lived loops every node runs until it stops (registration, the
//! leader's loops, the host agent with fencing, log rotation, metrics).

use super::StartError;
use crate::backend::process::ProcessBackend;
use crate::backend::qemu::QemuBackend;
use crate::backend::VmBackend;
use crate::config::{BackendKind, Config};
use crate::core::Core;
use crate::host::agent::{Agent, Fencing};
use crate::host::fence::{keep_lease, LeaseStatus, Watchdog};
use crate::host::{facts, registration};
use crate::leader::{liveness, scheduler};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often console logs are checked for rotation.
const LOG_ROTATION_INTERVAL: Duration = Duration::from_secs(10);
/// The watchdog binary's name, looked for beside `blixardd` and on `PATH`.
const WATCHDOG_BINARY: &str = "blixard-fence";

/// The backend this node runs, chosen before anything else starts (a host
/// that cannot run it refuses to start rather than fail every VM later).
pub(super) enum AnyBackend {
    Qemu(Arc<QemuBackend>),
    Process(Arc<ProcessBackend>),
}

impl AnyBackend {
    /// Opens the backend the config names.
    pub(super) fn open(config: &Config) -> Result<Self, StartError> {
        let backend_err = |e: crate::backend::BackendError| StartError::Backend(e.to_string());
        Ok(match config.backend {
            BackendKind::Qemu => Self::Qemu(Arc::new(
                QemuBackend::new(
                    &config.data_dir,
                    config.image_dir.clone(),
                    config.qemu_binary.clone(),
                    config.accel,
                )
                .map_err(backend_err)?,
            )),
            BackendKind::Process => Self::Process(Arc::new(
                ProcessBackend::new(&config.data_dir).map_err(backend_err)?,
            )),
        })
    }
}

/// Starts every loop of the node; their tasks go to `tasks`.
pub(super) fn spawn_loops(core: &Arc<Core>, backend: AnyBackend, tasks: &mut Vec<JoinHandle<()>>) {
    let registration = facts::registration(&core.config, &core.address);
    tasks.push(tokio::spawn(registration::register(
        core.clone(),
        registration,
        core.shutdown.clone(),
    )));
    tasks.push(tokio::spawn(liveness::run(
        core.clone(),
        core.shutdown.clone(),
    )));
    tasks.push(tokio::spawn(scheduler::run(
        core.clone(),
        core.shutdown.clone(),
    )));
    match backend {
        AnyBackend::Qemu(b) => spawn_agent(core, b, tasks),
        AnyBackend::Process(b) => spawn_agent(core, b, tasks),
    }
}

/// Starts the lease keeper, the agent and log rotation for `backend`.
fn spawn_agent<B: VmBackend>(core: &Arc<Core>, backend: Arc<B>, tasks: &mut Vec<JoinHandle<()>>) {
    let config = &core.config;
    let (lease_tx, lease_rx) = watch::channel(LeaseStatus::default());
    tasks.push(tokio::spawn(keep_lease(
        core.clone(),
        config.fence_lease,
        Some(config.data_dir.clone()),
        lease_tx,
        core.shutdown.clone(),
    )));
    let exe = config
        .fence_watchdog
        .clone()
        .or_else(Watchdog::default_exe)
        .unwrap_or_else(|| PathBuf::from(WATCHDOG_BINARY));
    let watchdog = Watchdog::new(exe, config.data_dir.clone(), config.data_dir.join("vms"));
    let fencing = Fencing {
        lease: lease_rx,
        watchdog: Some(Arc::new(watchdog)),
    };
    let agent = Agent::new(
        core.clone(),
        backend.clone(),
        config.vm_stop_timeout,
        fencing,
    );
    tasks.push(tokio::spawn(agent.run(core.shutdown.clone())));
    let mut stop = core.shutdown.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_ROTATION_INTERVAL) => backend.rotate_logs(),
                _ = stop.recv() => return,
            }
        }
    }));
}

/// Serves `/metrics` when the config asks for it, and keeps Raft's metrics
/// copied into the registry; returns the bound metrics address.
pub(super) async fn spawn_metrics(
    core: &Arc<Core>,
    snapshot_bytes: Arc<AtomicU64>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<Option<SocketAddr>, StartError> {
    let mut metrics_address = None;
    if let Some(address) = core.config.metrics_listen {
        let (listener, local) = super::grpc::bind(address).await?;
        metrics_address = Some(local);
        let signal = core.shutdown.signal();
        let metrics = core.metrics.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, metrics, signal).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }));
    }
    tasks.push(tokio::spawn(crate::metrics::sync::run(
        core.clone(),
        snapshot_bytes,
        core.shutdown.clone(),
    )));
    Ok(metrics_address)
}
