//! The `blixard` CLI: parse (see [`args`]), connect, and hand the command
//! to its group's module. Each group lives in its own file, as mini-redis
//! keeps one file per command:
//!
//! - [`cluster`]: `cluster status|members|transfer-leader|remove-node`
//! - [`node`]: `node list|get|cordon|uncordon`
//! - [`vm`]: `vm create|list|get|start|stop|restart|delete|logs`
//! - [`events`]: `events watch`
//! - [`dev`]: `dev`, a local cluster
//!
//! [`output`] holds what printing they share and [`exit`] the errors and
//! exit codes.

mod args;
mod cluster;
mod dev;
mod events;
pub mod exit;
mod node;
mod output;
mod vm;

pub use args::Cli;
use args::{Command, EventsCmd};
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
        command,
    } = cli;
    let cons = consistency(local);
    // Every group but `dev` talks to the cluster given by --endpoint.
    let client = || BlixardClient::new(&endpoint);
    match command {
        Command::Cluster(cmd) => cluster::run(&mut client()?, cmd, json, cons).await,
        Command::Node(cmd) => node::run(&mut client()?, cmd, json, cons).await,
        Command::Vm(cmd) => vm::run(&mut client()?, cmd, json, cons).await,
        Command::Events(EventsCmd::Watch {
            from,
            oldest,
            count,
        }) => events::watch(client()?, from, oldest, count, json).await,
        Command::Dev(args) => dev::run(args).await,
    }
}
