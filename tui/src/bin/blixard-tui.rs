//! `blixard-tui`: the live operations console for a Blixard cluster.

use blixard_tui::connect::ConnectArgs;
use clap::Parser;
use color_eyre::eyre::{Result, WrapErr};
use tracing_subscriber::prelude::*;

/// Live console for a Blixard microVM cluster (k9s-style: `:` commands,
/// `/` filters, `?` help).
#[derive(Debug, Parser)]
#[command(name = "blixard-tui", version)]
struct Args {
    /// Cluster members (host:port, comma-separated); the console fails over between them.
    #[arg(
        long,
        env = "BLIXARD_ENDPOINT",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    endpoint: Vec<String>,
    /// Watch only: every action is removed.
    #[arg(long)]
    read_only: bool,
    /// How calls prove themselves and check the cluster (TLS CA, token).
    #[command(flatten)]
    connect: ConnectArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    color_eyre::install()?;
    let args = Args::parse();
    // Before the screen is taken over, so a bad file (or the plaintext
    // warning) is readable.
    let credentials = args
        .connect
        .credentials()
        .wrap_err("loading the connection credentials")?;
    // The console's own logs go to its console view, never to the terminal.
    tui_logger::init_logger(tui_logger::LevelFilter::Info).wrap_err("starting the console log")?;
    tracing_subscriber::registry()
        .with(tui_logger::TuiTracingSubscriberLayer)
        .init();
    tracing::info!(
        endpoints = ?args.endpoint,
        read_only = args.read_only,
        insecure = credentials.is_insecure(),
        "console started"
    );
    blixard_tui::console::run(args.endpoint, args.read_only, credentials)
        .await
        .wrap_err("running the console")
}
