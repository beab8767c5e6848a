//! The last phase of a node's start: the VM backend it runs, and the
//! long-lived loops every node runs until it stops (registration, the
//! leader's loops, the host agent with fencing, log rotation, metrics).

use super::tasks::{Lifetime, Tasks};
use super::StartError;
use crate::backend::fake::FakeBackend;
use crate::backend::process::ProcessBackend;
use crate::backend::qemu::QemuBackend;
use crate::backend::VmBackend;
use crate::config::{BackendKind, Config};
use crate::core::Core;
use crate::host::agent::{Agent, Fencing, Heartbeat};
use crate::host::fence::{keep_lease, LeaseClock, LeaseStatus, Watchdog};
use crate::host::{facts, registration};
use crate::leader::{liveness, scheduler};
use crate::metrics::probes::Probes;
use crate::shutdown::Shutdown;
use openraft::async_runtime::WatchReceiver;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often console logs are checked for rotation.
const LOG_ROTATION_INTERVAL: Duration = Duration::from_secs(10);
/// The watchdog binary's name, looked for beside `blixardd` and on `PATH`.
const WATCHDOG_BINARY: &str = "blixard-fence";

/// The backend this node runs, chosen before anything else starts (a host
/// that cannot run it refuses to start rather than fail every VM later).
pub(super) enum AnyBackend {
    Qemu(Arc<QemuBackend>),
    Process(Arc<ProcessBackend>),
    /// A simulated host's test backend (`Config::sim`).
    Fake(Arc<FakeBackend>),
}

impl AnyBackend {
    /// Opens the backend the config names.
    pub(super) fn open(config: &Config) -> Result<Self, StartError> {
        let backend_err = |e: crate::backend::BackendError| StartError::Backend(e.to_string());
        if let Some(host) = &config.sim {
            return Ok(Self::Fake(host.backend.clone()));
        }
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

/// Starts every loop of the node as supervised tasks.
pub(super) fn spawn_loops(core: &Arc<Core>, backend: AnyBackend, tasks: &mut Tasks) {
    let registration = facts::registration(&core.config, &core.address);
    let register = registration::register(core.clone(), registration, core.shutdown.clone());
    tasks.spawn("registration", Lifetime::UntilShutdown, register);
    let liveness = liveness::run(core.clone(), core.shutdown.clone());
    tasks.spawn("liveness", Lifetime::UntilShutdown, liveness);
    let scheduler = scheduler::run(core.clone(), core.shutdown.clone());
    tasks.spawn("scheduler", Lifetime::UntilShutdown, scheduler);
    let audit = crate::audit::recorder::run(core.clone(), core.shutdown.clone());
    tasks.spawn("audit recorder", Lifetime::UntilShutdown, audit);
    let pruning = prune_peer_pool(core.clone(), core.shutdown.clone());
    tasks.spawn("peer pool pruning", Lifetime::UntilShutdown, pruning);
    match backend {
        AnyBackend::Qemu(b) => spawn_agent(core, b, tasks),
        AnyBackend::Process(b) => spawn_agent(core, b, tasks),
        AnyBackend::Fake(b) => spawn_agent(core, b, tasks),
    }
}

/// Keeps the peer pool to the current membership's addresses: each time
/// the membership changes, channels to addresses no longer in it are
/// dropped. Runs until shutdown or until Raft stops.
async fn prune_peer_pool(core: Arc<Core>, mut shutdown: Shutdown) {
    let mut rx = core.raft.metrics();
    let mut seen = None;
    loop {
        let members = {
            // Read in place, and only act on a new membership: the metrics
            // change several times per write batch.
            let m = rx.borrow_watched();
            let config = &m.membership_config;
            let log_id = *config.log_id();
            (seen.as_ref() != Some(&log_id)).then(|| {
                seen = Some(log_id);
                config
                    .membership()
                    .nodes()
                    .map(|(_, node)| node.addr.clone())
                    .collect::<HashSet<String>>()
            })
        };
        // A node without a membership yet (joining) keeps what it has.
        if let Some(members) = members.filter(|m| !m.is_empty()) {
            core.pool.retain_members(&members);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
}

/// Starts the lease keeper, the agent and log rotation for `backend`. The
/// keeper renews only while the agent's heartbeat is fresh: an agent stuck
/// or dead must not keep a lease that keeps its VMs from being healed.
fn spawn_agent<B: VmBackend>(core: &Arc<Core>, backend: Arc<B>, tasks: &mut Tasks) {
    let config = &core.config;
    // A simulated host keeps its lease on its own clock, and has no lease
    // file and no watchdog process: its VMs are the test backend's.
    let clock = config.sim.as_ref().map_or(LeaseClock::BootTime, |h| {
        LeaseClock::Simulated(h.clock.clone())
    });
    let simulated = config.sim.is_some();
    let (lease_tx, lease_rx) = watch::channel(LeaseStatus {
        clock: clock.clone(),
        ..LeaseStatus::default()
    });
    let heartbeat = Heartbeat::new(clock);
    let keeper = keep_lease(
        core.clone(),
        config.fence_lease,
        (!simulated).then(|| config.data_dir.clone()),
        lease_tx,
        heartbeat.clone(),
        core.shutdown.clone(),
    );
    tasks.spawn("lease keeper", Lifetime::UntilShutdown, keeper);
    let watchdog = (!simulated).then(|| {
        let exe = config
            .fence_watchdog
            .clone()
            .or_else(Watchdog::default_exe)
            .unwrap_or_else(|| PathBuf::from(WATCHDOG_BINARY));
        Arc::new(Watchdog::new(
            exe,
            config.data_dir.clone(),
            config.data_dir.join("vms"),
        ))
    });
    if let Some(host) = config.sim.clone() {
        let watchdog = crate::sim::watchdog::run(host, lease_rx.clone(), core.shutdown.clone());
        tasks.spawn(
            "simulated fence watchdog",
            Lifetime::UntilShutdown,
            watchdog,
        );
    }
    let fencing = Fencing {
        lease: lease_rx,
        watchdog,
        heartbeat,
    };
    let agent = Agent::new(
        core.clone(),
        backend.clone(),
        config.vm_stop_timeout,
        fencing,
    );
    tasks.spawn(
        "agent",
        Lifetime::UntilShutdown,
        agent.run(core.shutdown.clone()),
    );
    let mut stop = core.shutdown.clone();
    let rotation = async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LOG_ROTATION_INTERVAL) => {}
                _ = stop.recv() => return,
            }
            // Copying megabytes of console log is no work for the runtime's
            // threads, which carry heartbeats.
            let backend = backend.clone();
            if let Err(e) = crate::sim::blocking::run(move || backend.rotate_logs()).await {
                tracing::warn!(error = %e, "console log rotation did not finish");
            }
        }
    };
    tasks.spawn("log rotation", Lifetime::UntilShutdown, rotation);
}

/// Serves `/metrics` (with `/healthz` and `/readyz` from `probes`) when the
/// config asks for it, and keeps Raft's metrics copied into the registry;
/// returns the bound metrics address.
pub(super) async fn spawn_metrics(
    core: &Arc<Core>,
    snapshot_bytes: Arc<AtomicU64>,
    probes: Probes,
    tasks: &mut Tasks,
) -> Result<Option<SocketAddr>, StartError> {
    let mut metrics_address = None;
    if let Some(address) = core.config.metrics_listen {
        let (listener, local) = super::grpc::bind_tcp(address).await?;
        metrics_address = Some(local);
        let signal = core.shutdown.signal();
        let metrics = core.metrics.clone();
        let refresh =
            crate::metrics::fleet::Refresh::new(core.view.clone(), core.config.data_dir.clone());
        let server = async move {
            if let Err(e) = crate::metrics::serve(listener, metrics, refresh, probes, signal).await
            {
                tracing::error!(error = %e, "metrics server failed");
            }
        };
        tasks.spawn("metrics server", Lifetime::UntilShutdown, server);
    }
    let sync = crate::metrics::sync::run(core.clone(), snapshot_bytes, core.shutdown.clone());
    tasks.spawn("metrics sync", Lifetime::UntilShutdown, sync);
    Ok(metrics_address)
}
