//! `blixard`: the scripting CLI for a Blixard cluster. Every command takes
//! `--json` for a stable, snake_case output schema; failures print one line
//! to stderr and exit non-zero with a code scripts can branch on (see
//! [`cli::exit`]).

mod cli;

use clap::{CommandFactory, FromArgMatches};

/// "vm create", "cluster status": the subcommands named on the command line.
fn command_name(matches: &clap::ArgMatches) -> String {
    let mut words = Vec::new();
    let mut at = matches;
    while let Some((name, sub)) = at.subcommand() {
        words.push(name.to_string());
        at = sub;
    }
    words.join(" ")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = cli::Cli::command().get_matches();
    let name = command_name(&matches);
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if let Err(e) = color_eyre::install() {
        eprintln!("warning: cannot install error reporter: {e}");
    }
    if args.draws_console() {
        // Logs go to the console's own log view, never over the screen.
        use tracing_subscriber::prelude::*;
        if let Err(e) = tui_logger::init_logger(tui_logger::LevelFilter::Info) {
            eprintln!("warning: cannot start the console log: {e}");
        }
        tracing_subscriber::registry()
            .with(tui_logger::TuiTracingSubscriberLayer)
            .init();
        return finish(cli::run(args).await);
    }
    let telemetry = match init_logs(args.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // One span over the whole command: with --otlp-endpoint, the root of
    // its trace, which every call it makes carries on.
    let span = tracing::info_span!("blixard", otel.name = %format!("blixard {name}"));
    let result = tracing::Instrument::instrument(cli::run(args), span).await;
    if let Some(t) = telemetry {
        t.shutdown();
    }
    finish(result)
}

/// Logs to stderr (`BLIXARD_LOG`, default warn), and with `endpoint` the
/// command's trace to that OTLP collector.
fn init_logs(
    endpoint: Option<&str>,
) -> Result<Option<blixard_shared::telemetry::Telemetry>, blixard_shared::telemetry::TelemetryError>
{
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLIXARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(lines);
    let (traces, telemetry) = match endpoint {
        Some(endpoint) => {
            let (layer, telemetry) =
                blixard_shared::telemetry::layer(endpoint, "blixard", "cli".to_string())?;
            let ours = tracing_subscriber::filter::Targets::new()
                .with_target("blixard", tracing::Level::INFO)
                .with_target("blixard_shared", tracing::Level::INFO);
            (Some(layer.with_filter(ours)), Some(telemetry))
        }
        None => (None, None),
    };
    registry.with(traces).init();
    Ok(telemetry)
}

/// The exit code of a command's result (its error printed).
fn finish(result: Result<(), cli::CliError>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
