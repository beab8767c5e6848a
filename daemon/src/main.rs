//! `blixardd`: runs one Blixard node until SIGINT or SIGTERM.

use blixard_daemon::config::{Config, DaemonCommand, Flags};
use clap::Parser;
use color_eyre::eyre::{eyre, Result, WrapErr};

/// mimalloc instead of glibc malloc: the write path allocates many small,
/// short-lived buffers across threads, and glibc's arenas spent about a
/// tenth of the leader's CPU on them (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest a clean stop may take (systemd's TimeoutStopSec is 30 s).
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);

#[tokio::main]
async fn main() -> Result<()> {
    blixard_daemon::logging::install_error_reports()?;
    let mut flags = Flags::parse();
    match flags.command.take() {
        Some(DaemonCommand::Restore(args)) => return restore(args).await,
        Some(DaemonCommand::Man { out }) => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out)
                .and_then(|()| clap_mangen::generate_to(Flags::command(), &out))
                .wrap_err_with(|| format!("writing man pages into {}", out.display()))?;
            return Ok(());
        }
        None => {}
    }
    let config = Config::resolve(flags)?;
    let telemetry = blixard_daemon::logging::init(
        &config.log,
        config.log_format,
        config.node_id,
        config.otlp_endpoint.as_deref(),
    )?;
    let result = run(config).await;
    if let Some(t) = telemetry {
        t.shutdown();
    }
    result
}

/// Runs the node until a signal or a fatal failure.
async fn run(config: Config) -> Result<()> {
    let node = blixard_daemon::server::start(config).await?;
    // A node that failed for good (a task died, Raft stopped) stops what it
    // can and exits non-zero, so its service manager restarts it.
    let fatal = tokio::select! {
        signal = wait_for_signal(node.core.clone()) => {
            signal?;
            None
        }
        why = node.fatal() => Some(why),
    };
    tracing::info!("stopping");
    // A stop that hangs (a peer that never closes its calls) must not keep
    // a failed node alive: past the deadline it exits anyway.
    if tokio::time::timeout(SHUTDOWN_DEADLINE, node.shutdown())
        .await
        .is_err()
    {
        return Err(eyre!(
            "the node did not stop within {SHUTDOWN_DEADLINE:?}{}",
            fatal
                .map(|why| format!(" after it failed: {why}"))
                .unwrap_or_default()
        ));
    }
    match fatal {
        None => Ok(()),
        Some(why) => Err(eyre!("the node failed: {why}")),
    }
}

/// Waits for SIGINT or SIGTERM; each SIGHUP meanwhile reloads the
/// node's policies (`policy_dir`) for the whole cluster, logging the
/// outcome (a broken policy file is refused; the old policies stay).
async fn wait_for_signal(core: std::sync::Arc<blixard_daemon::core::Core>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).wrap_err("installing SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).wrap_err("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.wrap_err("waiting for Ctrl-C"),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => {
                match blixard_daemon::api::policy::reload_from_config(&core).await {
                    Ok(revision) => tracing::info!(revision, "SIGHUP: policies reloaded"),
                    Err(e) => tracing::error!(error = %e.message(), "SIGHUP: policies not reloaded; the old ones stay in force"),
                }
            }
        }
    }
}

/// `blixardd restore`: seeds the data dir and says how to start the node.
async fn restore(args: blixard_daemon::backup::restore::RestoreArgs) -> Result<()> {
    blixard_daemon::logging::init(
        "info",
        blixard_daemon::logging::LogFormat::Text,
        args.node_id,
        None,
    )?;
    let node_id = args.node_id;
    let data_dir = args.data_dir.clone();
    let restored = blixard_daemon::backup::restore::run(args)
        .await
        .wrap_err("restore failed")?;
    let seeded = &restored.seeded;
    println!(
        "restored revision {} into {} as the one-node cluster of node {node_id} (advertised at {}; state revision {})",
        restored.source_revision,
        data_dir.display(),
        seeded.advertise,
        seeded.revision,
    );
    if let Some(fingerprint) = &seeded.ca_fingerprint {
        println!("new cluster CA fingerprint: {fingerprint}");
    }
    if let Some(token) = &seeded.admin_token {
        println!("new admin token: {}", token.display());
    }
    println!(
        "start it with: blixardd --node-id {node_id} --data-dir {} --listen {}{}",
        data_dir.display(),
        seeded.advertise,
        if seeded.ca_fingerprint.is_none() {
            " --insecure"
        } else {
            ""
        }
    );
    Ok(())
}
