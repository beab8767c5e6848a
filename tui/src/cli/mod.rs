//! The `blixard` CLI: parse (see [`args`]), connect, and hand the command
//! to its group's module. Each group lives in its own file, as mini-redis
//! keeps one file per command:
//!
//! - [`cluster`]: `cluster status|members|transfer-leader|remove-node|join-token create`
//! - [`node`]: `node list|get|cordon|uncordon`
//! - [`vm`]: `vm create|list|get|start|stop|restart|delete|logs`
//! - [`events`]: `events watch`
//! - [`token`]: `token create|list|revoke`
//! - [`dev`]: `dev`, a local cluster
//!
//! [`output`] holds what printing they share, [`duration`] the durations
//! operators type, and [`exit`] the errors and exit codes. How calls are
//! secured (`--ca-cert`, `--token-file`, `BLIXARD_TOKEN`) is
//! [`blixard_tui::connect`], shared with the console.

mod args;
mod audit;
mod backup;
mod cluster;
mod dev;
mod duration;
mod events;
pub mod exit;
mod node;
mod output;
mod policy;
mod quota;
mod token;
mod vm;

pub use args::Cli;
use args::{AuditCmd, Command, EventsCmd};
use blixard_shared::proto::v1 as pb;
use blixard_shared::BlixardClient;
pub use exit::CliError;

/// The consistency reads ask for: linearizable unless `--local` was given.
fn consistency(local: bool) -> pb::Consistency {
    if local {
        pb::Consistency::Local
    } else {
        pb::Consistency::Linearizable
    }
}

impl Cli {
    /// Whether this invocation draws the console (its logs must not go to
    /// the terminal then).
    pub fn draws_console(&self) -> bool {
        matches!(&self.command, Command::Dev(args) if dev::console_wanted(args))
    }
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let Cli {
        endpoint,
        json,
        local,
        connect,
        command,
        otlp_endpoint: _,
    } = cli;
    let cons = consistency(local);
    // Every group but `dev` (which starts its own cluster and makes its own
    // credentials) talks to the cluster given by --endpoint, with the
    // credentials the connection flags give.
    let client = || -> Result<BlixardClient, CliError> {
        Ok(BlixardClient::new(&endpoint)?.with_credentials(connect.credentials()?))
    };
    let result = match command {
        Command::Cluster(cmd) => cluster::run(&mut client()?, cmd, json, cons).await,
        Command::Node(cmd) => node::run(&mut client()?, cmd, json, cons).await,
        Command::Vm(cmd) => vm::run(&mut client()?, cmd, json, cons).await,
        Command::Events(EventsCmd::Watch {
            from,
            oldest,
            count,
        }) => events::watch(client()?, from, oldest, count, json).await,
        Command::Token(cmd) => token::run(&mut client()?, cmd, json).await,
        Command::Policy(cmd) => policy::run(&mut client()?, cmd, json).await,
        Command::Audit(AuditCmd::List {
            since,
            principal,
            action,
            follow,
        }) => {
            audit::list(
                client()?,
                audit::filter(since, principal, action),
                follow,
                json,
            )
            .await
        }
        Command::Quota(cmd) => quota::run(&mut client()?, cmd, json).await,
        Command::Version => cluster::version(&mut client()?, json, cons).await,
        // Its failures are not this command line's credentials' to explain.
        Command::Dev(args) => return dev::run(args).await,
        Command::Man { out } => {
            use clap::CommandFactory;
            std::fs::create_dir_all(&out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out))
                .map_err(|e| {
                    CliError::other(format!("writing man pages into {}: {e}", out.display()))
                })?;
            return Ok(());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut cmd = Cli::command();
            // Into memory first: the generator panics on a failed write
            // (`| head` closing the pipe); a write error here is one line.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "blixard", &mut script);
            let mut out = std::io::stdout().lock();
            return match out.write_all(&script).and_then(|()| out.flush()) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(CliError::other(format!(
                    "writing the completion script: {e}"
                ))),
            };
        }
    };
    // Without a CA the client talked plaintext (see `connect`).
    let insecure = connect.ca_cert.is_none();
    result.map_err(|e| e.with_insecure_hint(insecure))
}
