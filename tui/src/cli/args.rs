//! The command line of `blixard` as clap types: every flag, argument and
//! help line of the CLI except `dev`'s (in `dev.rs`) is here, so the public
//! surface can be read, and kept stable, in one file. The `///` comments on
//! commands, arguments and flags are the help text users see, except where
//! `help = None` keeps one out; plain `//` comments are for readers only.

use super::dev;
use super::duration::parse_duration;
use blixard_shared::auth::Role;
use blixard_tui::connect::ConnectArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

/// Lines of console history `vm logs` prints before following (the
/// server's own default for a tail of 0).
const DEFAULT_TAIL_LINES: u32 = 100;

/// Scripting CLI for a Blixard microVM cluster.
#[derive(Debug, Parser)]
#[command(
    name = "blixard",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 other failure, 2 bad usage or invalid argument, 3 not found, 4 conflict (already exists / wrong state), 5 unavailable (retry), 6 limit reached, 7 not allowed (missing, invalid or too weak credentials)."
)]
pub struct Cli {
    /// Cluster members to talk to (host:port, comma-separated); tries each and follows the leader.
    #[arg(
        long,
        env = "BLIXARD_ENDPOINT",
        default_value = "127.0.0.1:7001",
        global = true,
        value_delimiter = ','
    )]
    pub endpoint: Vec<String>,
    /// Print machine-readable JSON (stable snake_case schema).
    #[arg(long, global = true)]
    pub json: bool,
    /// Serve reads from the contacted node's local state (fast, possibly stale).
    #[arg(long, global = true)]
    pub local: bool,
    /// Send a trace of the command to this OpenTelemetry collector (OTLP/gRPC, http://HOST:4317).
    #[arg(long, env = "BLIXARD_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,
    /// How calls prove themselves and check the cluster (TLS CA, token).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The command group to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The command groups; each has its own file under `cli/`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Hosts of the fleet.
    #[command(subcommand)]
    Node(NodeCmd),
    /// MicroVMs.
    #[command(subcommand)]
    Vm(VmCmd),
    /// The cluster event stream.
    #[command(subcommand)]
    Events(EventsCmd),
    /// Client tokens: create (the secret is shown once), list, revoke (admin).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The cluster's Cedar authorization policies (admin).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The audit trail: who did what, and every refused call (admin).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Quotas per label: what the VMs carrying a label may use together.
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Start a local 3-node cluster for trying things out; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// This CLI's release and every member's (a mixed cluster says so).
    Version,
    /// Print a shell completion script (e.g. `blixard completions bash > /etc/bash_completion.d/blixard`).
    /// Write the man pages of `blixard` and its subcommands into a directory (for packagers).
    #[command(hide = true)]
    Man {
        /// Where to write `blixard.1`, `blixard-vm.1`, ...
        #[arg(long)]
        out: std::path::PathBuf,
    },
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `blixard cluster ...` (run by `cluster.rs`).
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, indexes and members.
    Status,
    /// Members with role, health and replication lag.
    Members,
    /// Hand leadership to another voter (the most up-to-date one if --to is not given).
    TransferLeader {
        /// Target node id.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// Node id.
        id: u64,
    },
    /// One-time tokens that let a new node join (admin).
    #[command(subcommand)]
    JoinToken(JoinTokenCmd),
    /// Write a checksummed copy of the replicated state, taken on the
    /// leader, to FILE (admin); `blixardd restore --from FILE` seeds a new
    /// cluster from it.
    Backup {
        /// Where to write it (replaced only once the copy is complete and checked).
        file: std::path::PathBuf,
    },
}

/// Lifetime of a join token unless `--ttl` says otherwise (the server's
/// own default).
const DEFAULT_JOIN_TOKEN_TTL: &str = "1h";

/// `blixard cluster join-token ...` (run by `cluster.rs`).
#[derive(Debug, Subcommand)]
pub enum JoinTokenCmd {
    /// Create a one-time join token and print the blixardd line that uses it.
    Create {
        /// How long the token may be used (30m, 1h, 7d, 3600s; at most 7d).
        #[arg(long, default_value = DEFAULT_JOIN_TOKEN_TTL, value_parser = parse_duration)]
        ttl: Duration,
    },
}

/// `--role` of `token create`: what the token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Everything, including membership and tokens.
    Admin,
    /// Reads plus VM and node lifecycle.
    Operator,
    /// Reads, watches and logs only.
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(arg: RoleArg) -> Self {
        match arg {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

/// `blixard policy ...` (run by `policy.rs`).
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Replace the policies on every node. With --file, the given policy files (and --schema, else the schema in force); without, the contacted node reloads its policy_dir. A policy that does not parse or validate is refused with the line and the reason; the old ones stay.
    Reload {
        /// A Cedar policy file (repeatable; concatenated in order).
        #[arg(long = "file", value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        /// A Cedar schema file (default: the schema in force).
        #[arg(long, value_name = "FILE")]
        schema: Option<std::path::PathBuf>,
    },
    /// Print the policies in force (and, with --json, the schema and revision).
    Get,
}

/// `blixard audit ...` (run by `audit.rs`).
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List the records held, oldest first (and, with --follow, new ones as they are written).
    List {
        /// Only records of the last DURATION (30m, 1h, 7d).
        #[arg(long, value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only this principal: token:NAME, node:ID or anonymous.
        #[arg(long)]
        principal: Option<String>,
        /// Only this action (vm.create), or a prefix ending in '.' (vm.).
        #[arg(long)]
        action: Option<String>,
        /// Keep printing new records until stopped (one JSON object a line with --json).
        #[arg(long)]
        follow: bool,
    },
}

/// `blixard quota ...` (run by `quota.rs`).
#[derive(Debug, Subcommand)]
pub enum QuotaCmd {
    /// Set the quota of a label (admin): creates and starts past it are refused. Replaces the label's whole quota: a limit not given (or 0) is no limit.
    Set {
        /// The label, KEY=VALUE (team=web).
        #[arg(value_name = "KEY=VALUE")]
        label: String,
        /// Most vCPUs the label's running VMs may have together.
        #[arg(long)]
        vcpus: Option<u32>,
        /// Most memory the label's running VMs may have together, MiB.
        #[arg(long)]
        memory_mib: Option<u64>,
        /// Most VMs the label may have, in any state.
        #[arg(long)]
        vms: Option<u32>,
    },
    /// List quotas with what their VMs use now.
    List,
    /// Delete the quota of a label (admin).
    Delete {
        /// The label, KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        label: String,
    },
}

/// `blixard token ...` (run by `token.rs`).
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a client token; its secret is printed once and never again.
    Create {
        /// What the token may do.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// How long the token is valid (30m, 1h, 7d, 3600s); without it the token never expires.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Unique name (DNS label; default: ROLE-UNIXSECONDS).
        #[arg(long)]
        name: Option<String>,
        /// A label KEY=VALUE scoping the token: with the default policies it acts only on VMs carrying all its labels (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List tokens: name, role, creation and expiry (never their secrets).
    List,
    /// Revoke a token; every node refuses it from then on.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `blixard node ...` (run by `node.rs`).
// The `id` arguments have never had a help line; `help = None` keeps their
// `///` comments (for readers) out of `--help`.
#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// List nodes.
    List,
    /// Show one node.
    Get {
        /// The node's id.
        #[arg(help = None, long_help = None)]
        id: u64,
    },
    /// Stop placing new VMs on a node.
    Cordon {
        /// The node's id.
        #[arg(help = None, long_help = None)]
        id: u64,
    },
    /// Allow placing VMs on a node again (ends a drain).
    Uncordon {
        /// The node's id.
        #[arg(help = None, long_help = None)]
        id: u64,
    },
    /// Cordon a node and move its VMs away; `node get` shows the progress.
    Drain {
        /// The node's id.
        #[arg(help = None, long_help = None)]
        id: u64,
        /// How long the drain may take (e.g. 10m, 1h); VMs still there at
        /// the deadline stay and are reported.
        #[arg(long, value_parser = super::duration::parse_duration, default_value = "1h")]
        deadline: std::time::Duration,
        /// Most VMs moving at once (1 to 64).
        #[arg(long, default_value_t = 2)]
        parallel: u32,
        /// Return at once instead of waiting for the drain to end.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `--restart-policy` of `vm create`: what the VM's node does when the VM
/// exits without being asked to.
// The variants' `///` comments are for readers only: `help = None` keeps
// them out of `--help`, whose list of possible values stays as it is.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RestartPolicyArg {
    /// Restart whenever the VM exits, cleanly or not.
    #[value(help = None)]
    Always,
    /// Restart only after an exit with a failure.
    #[value(help = None)]
    OnFailure,
    /// Never restart (a failed exit leaves the VM failed).
    #[value(help = None)]
    Never,
}

/// Everything `vm create` takes (boxed in `VmCmd` because it is large).
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// VM name (DNS label: a-z, 0-9, '-', at most 63 characters).
    pub name: String,
    /// Virtual CPUs.
    #[arg(long)]
    pub vcpus: u32,
    /// Memory in MiB (`--memory` is the same flag).
    #[arg(long = "memory-mib", visible_alias = "memory")]
    pub memory: u64,
    /// Guest image name (default: "default").
    #[arg(long, conflicts_with_all = ["kernel", "runner"])]
    pub image: Option<String>,
    /// Kernel path on the host.
    #[arg(long, conflicts_with = "runner")]
    pub kernel: Option<String>,
    /// Initrd path on the host (with --kernel).
    #[arg(long, requires = "kernel")]
    pub initrd: Option<String>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Prepared runner executable (e.g. microvm.nix's microvm-run).
    #[arg(long)]
    pub runner: Option<String>,
    /// Pin to this node.
    #[arg(long)]
    pub node: Option<u64>,
    /// Label K=V (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Placement constraint (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Anti-affinity group.
    #[arg(long)]
    pub group: Option<String>,
    /// Spread the group across this topology key (zone, rack or a label).
    #[arg(long, requires = "group")]
    pub spread_by: Option<String>,
    /// Placement strategy: binpack or spread (default: the cluster's).
    #[arg(long)]
    pub strategy: Option<String>,
    /// Most VMs of the group per node.
    #[arg(long, requires = "group")]
    pub max_per_node: Option<u32>,
    /// Priority (-1000 to 1000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// May be preempted by higher-priority VMs.
    #[arg(long)]
    pub preemptible: bool,
    /// Restart policy.
    #[arg(long, value_enum, default_value = "always")]
    pub restart_policy: RestartPolicyArg,
    /// Create without starting.
    #[arg(long)]
    pub stopped: bool,
}

/// `blixard vm ...` (run by `vm.rs`).
// The `name` arguments have never had a help line; `help = None` keeps their
// `///` comments (for readers) out of `--help`.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Create a VM (and start it unless --stopped).
    Create(Box<CreateArgs>),
    /// List VMs (all pages).
    List {
        /// Only VMs on this node.
        #[arg(long)]
        node: Option<u64>,
        /// Only VMs in this state (pending, running, stopped, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only VMs with this label K=V (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Show one VM.
    Get {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
        /// Also print the placement engine's whole decision (as `vm explain`).
        #[arg(long)]
        explain: bool,
    },
    /// Set a VM's desired state to running.
    Start {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
    },
    /// Set a VM's desired state to stopped.
    Stop {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
    },
    /// Restart a running VM on its node.
    Restart {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
    },
    /// Print a VM's serial console; --follow keeps streaming.
    Logs {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
        /// Keep streaming new output.
        #[arg(long, short)]
        follow: bool,
        /// Lines of history to print first (at most 100000).
        #[arg(long, default_value_t = DEFAULT_TAIL_LINES)]
        tail: u32,
    },
    /// Move a VM to another node: stopped where it is, then started on the
    /// new node (never running on both).
    Migrate {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
        /// Target node (default: the scheduler's pick).
        #[arg(long)]
        to: Option<u64>,
        /// Live migration (not offered yet: refused with the reason).
        #[arg(long)]
        live: bool,
    },
    /// Why a VM is where it is, or why it waits: every node's verdict.
    Explain {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
    },
    /// Delete a VM (refused while it runs unless --force).
    Delete {
        /// The VM's name.
        #[arg(help = None, long_help = None)]
        name: String,
        /// Delete even if it is running.
        #[arg(long)]
        force: bool,
    },
}

/// `blixard events ...` (run by `events.rs`).
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Stream events as they happen; survives member failures by resuming elsewhere.
    Watch {
        /// Start after this revision (default: from now).
        #[arg(long)]
        from: Option<u64>,
        /// Start from the oldest event still held.
        #[arg(long, conflicts_with = "from")]
        oldest: bool,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Parses a `--label K=V` value (clap value parser of `vm create` and
/// `vm list`), so both commands accept and reject the same spellings.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must be KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::exit::ExitCode;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_connection_flags_are_global() {
        let cli = Cli::try_parse_from([
            "blixard",
            "vm",
            "list",
            "--ca-cert",
            "/tmp/ca.pem",
            "--token-file",
            "/tmp/t",
        ])
        .unwrap();
        assert_eq!(
            cli.connect.ca_cert.as_deref(),
            Some(std::path::Path::new("/tmp/ca.pem"))
        );
        assert_eq!(
            cli.connect.token_file.as_deref(),
            Some(std::path::Path::new("/tmp/t"))
        );
    }

    #[test]
    fn token_and_join_token_commands_parse() {
        let cli = Cli::try_parse_from([
            "blixard", "token", "create", "--role", "viewer", "--ttl", "7d",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Token(TokenCmd::Create {
                role: RoleArg::Viewer,
                ttl: Some(t),
                name: None,
                ..
            }) if t == Duration::from_secs(7 * 86_400)
        ));
        assert!(Cli::try_parse_from(["blixard", "token", "create", "--role", "root"]).is_err());
        let cli = Cli::try_parse_from(["blixard", "cluster", "join-token", "create"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCmd::JoinToken(JoinTokenCmd::Create { ttl }))
                if ttl == Duration::from_secs(3600)
        ));
    }

    #[test]
    fn labels_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_label("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_label("nolabel").is_err());
    }

    #[test]
    fn the_help_lists_every_exit_code() {
        let help = Cli::command()
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for code in [
            ExitCode::Success,
            ExitCode::Failure,
            ExitCode::Usage,
            ExitCode::NotFound,
            ExitCode::Conflict,
            ExitCode::Unavailable,
            ExitCode::LimitReached,
            ExitCode::NotAllowed,
        ] {
            let number = u8::from(code);
            assert!(help.contains(&format!(" {number} ")), "{code:?} in {help}");
        }
    }
}
