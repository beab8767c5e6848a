//! `blixard`: the scripting CLI for a Blixard cluster. Every command takes
//! `--json` for a stable, snake_case output schema; failures print one line
//! to stderr and exit non-zero with a code scripts can branch on (see
//! [`cli::exit`]).

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
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
    } else {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BLIXARD_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init();
    }
    match cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
