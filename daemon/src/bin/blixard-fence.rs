//! `blixard-fence`: the per-host fence watchdog. `blixardd` starts it; it
//! outlives the daemon on purpose and SIGKILLs the host's VMs once the
//! daemon's fencing lease has run out (see `blixard_daemon::host::fence`).

use clap::Parser;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Kills this host's VMs when the node's fencing lease runs out.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The node's data dir (holds `fence.lease`).
    #[arg(long)]
    data_dir: PathBuf,
    /// The runtime root of the node's VMs (`DATA_DIR/vms`).
    #[arg(long)]
    vm_root: PathBuf,
}

fn main() -> color_eyre::Result<()> {
    blixard_daemon::logging::install_error_reports()?;
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .with_target(false)
        .with_ansi(false)
        .init();
    blixard_daemon::host::fence::run_watchdog(&args.data_dir, &args.vm_root);
    Ok(())
}
