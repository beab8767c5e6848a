//! Command-line definition and dispatch of `blixard`.

mod dev;
pub mod exit;
mod output;

use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::{
    cluster_service_client::ClusterServiceClient, node_service_client::NodeServiceClient,
    vm_service_client::VmServiceClient, watch_service_client::WatchServiceClient,
};
use blixard_shared::BlixardClient;
use clap::{Args, Parser, Subcommand, ValueEnum};
pub use exit::CliError;
use output::*;
use std::time::Duration;

/// Scripting CLI for a Blixard microVM cluster.
#[derive(Debug, Parser)]
#[command(
    name = "blixard",
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 other failure, 2 bad usage or invalid argument, 3 not found, 4 conflict (already exists / wrong state), 5 unavailable (retry), 6 limit reached."
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
    endpoint: Vec<String>,
    /// Print machine-readable JSON (stable snake_case schema).
    #[arg(long, global = true)]
    json: bool,
    /// Serve reads from the contacted node's local state (fast, possibly stale).
    #[arg(long, global = true)]
    local: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Start a local 3-node cluster for trying things out; Ctrl-C stops it.
    Dev(dev::DevArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
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
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// List nodes.
    List,
    /// Show one node.
    Get { id: u64 },
    /// Stop placing new VMs on a node.
    Cordon { id: u64 },
    /// Allow placing VMs on a node again.
    Uncordon { id: u64 },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RestartPolicyArg {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// VM name (DNS label: a-z, 0-9, '-', at most 63 characters).
    name: String,
    /// Virtual CPUs.
    #[arg(long)]
    vcpus: u32,
    /// Memory in MiB.
    #[arg(long)]
    memory: u64,
    /// Guest image name (default: "default").
    #[arg(long, conflicts_with_all = ["kernel", "runner"])]
    image: Option<String>,
    /// Kernel path on the host.
    #[arg(long, conflicts_with = "runner")]
    kernel: Option<String>,
    /// Initrd path on the host (with --kernel).
    #[arg(long, requires = "kernel")]
    initrd: Option<String>,
    /// Kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Prepared runner executable (e.g. microvm.nix's microvm-run).
    #[arg(long)]
    runner: Option<String>,
    /// Pin to this node.
    #[arg(long)]
    node: Option<u64>,
    /// Label K=V (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Placement constraint (repeatable).
    #[arg(long = "constraint")]
    constraints: Vec<String>,
    /// Anti-affinity group.
    #[arg(long)]
    group: Option<String>,
    /// Most VMs of the group per node.
    #[arg(long, requires = "group")]
    max_per_node: Option<u32>,
    /// Priority (-1000 to 1000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// May be preempted by higher-priority VMs.
    #[arg(long)]
    preemptible: bool,
    /// Restart policy.
    #[arg(long, value_enum, default_value = "always")]
    restart_policy: RestartPolicyArg,
    /// Create without starting.
    #[arg(long)]
    stopped: bool,
}

#[derive(Debug, Subcommand)]
enum VmCmd {
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
    Get { name: String },
    /// Set a VM's desired state to running.
    Start { name: String },
    /// Set a VM's desired state to stopped.
    Stop { name: String },
    /// Restart a running VM on its node.
    Restart { name: String },
    /// Print a VM's serial console; --follow keeps streaming.
    Logs {
        name: String,
        /// Keep streaming new output.
        #[arg(long, short)]
        follow: bool,
        /// Lines of history to print first (at most 100000).
        #[arg(long, default_value_t = 100)]
        tail: u32,
    },
    /// Delete a VM (refused while it runs unless --force).
    Delete {
        name: String,
        /// Delete even if it is running.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCmd {
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

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must be KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

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
    if let Command::Dev(args) = cli.command {
        return dev::run(args).await;
    }
    let mut client = BlixardClient::new(&cli.endpoint)?;
    let json = cli.json;
    let cons = consistency(cli.local);
    match cli.command {
        Command::Cluster(cmd) => cluster(&mut client, cmd, json, cons).await,
        Command::Node(cmd) => node(&mut client, cmd, json, cons).await,
        Command::Vm(cmd) => vm(&mut client, cmd, json, cons).await,
        Command::Events(EventsCmd::Watch {
            from,
            oldest,
            count,
        }) => watch(client, from.unwrap_or(0), oldest, count, json).await,
        Command::Dev(_) => Ok(()),
    }
}

async fn cluster(
    client: &mut BlixardClient,
    cmd: ClusterCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    match cmd {
        ClusterCmd::Status | ClusterCmd::Members => {
            let members_only = matches!(cmd, ClusterCmd::Members);
            let status = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .get_status(pb::GetStatusRequest {
                            consistency: cons as i32,
                        })
                        .await
                })
                .await?;
            let view = StatusView::from(&status);
            if json {
                if members_only {
                    print_json(&view.members);
                } else {
                    print_json(&view);
                }
                return Ok(());
            }
            if !members_only {
                println!(
                    "leader: {} ({})  term: {}  commit: {}  applied: {}  answered by: node {}",
                    if view.leader_id == 0 {
                        "none".to_string()
                    } else {
                        view.leader_id.to_string()
                    },
                    view.leader_address,
                    view.term,
                    view.commit_index,
                    view.applied_index,
                    view.node_id
                );
                println!();
            }
            let rows: Vec<Vec<String>> = view
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node_id.to_string(),
                        m.address.clone(),
                        m.role.clone(),
                        m.health.clone(),
                        m.matched_index.to_string(),
                        m.lag.to_string(),
                    ]
                })
                .collect();
            print_table(
                &["ID", "ADDRESS", "ROLE", "HEALTH", "MATCHED", "LAG"],
                &rows,
            );
            Ok(())
        }
        ClusterCmd::TransferLeader { to } => {
            let new_leader_id = client.transfer_leadership(to).await?;
            if json {
                print_json(&serde_json::json!({ "new_leader_id": new_leader_id }));
            } else {
                println!("leader is now node {new_leader_id}");
            }
            Ok(())
        }
        ClusterCmd::RemoveNode { id } => {
            client.remove_node(id).await?;
            if json {
                print_json(&serde_json::json!({ "removed_node_id": id }));
            } else {
                println!("node {id} removed");
            }
            Ok(())
        }
    }
}

fn print_nodes(nodes: &[pb::Node], json: bool) {
    let views: Vec<NodeView> = nodes.iter().map(NodeView::from).collect();
    if json {
        print_json(&views);
        return;
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                n.address.clone(),
                n.health.clone(),
                n.schedulability.clone(),
                format!("{}/{}", n.allocated_vcpus, n.vcpus),
                format!("{}/{}", n.allocated_memory_mib, n.memory_mib),
                n.vms.len().to_string(),
                n.zone.clone(),
                n.backend.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "ADDRESS",
            "HEALTH",
            "SCHEDULING",
            "VCPUS",
            "MEMORY_MIB",
            "VMS",
            "ZONE",
            "BACKEND",
        ],
        &rows,
    );
}

async fn node(
    client: &mut BlixardClient,
    cmd: NodeCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let node = match cmd {
        NodeCmd::List => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page_token = token.clone();
                let resp = client
                    .call(|ch| {
                        let page_token = page_token.clone();
                        async move {
                            NodeServiceClient::new(ch)
                                .list_nodes(pb::ListNodesRequest {
                                    consistency: cons as i32,
                                    page_size: blixard_shared::limits::MAX_PAGE_SIZE,
                                    page_token,
                                })
                                .await
                        }
                    })
                    .await?;
                all.extend(resp.nodes);
                if resp.next_page_token.is_empty() {
                    break;
                }
                token = resp.next_page_token;
            }
            print_nodes(&all, json);
            return Ok(());
        }
        NodeCmd::Get { id } => client.get_node(id, cons).await?,
        NodeCmd::Cordon { id } => client.cordon_node(id).await?,
        NodeCmd::Uncordon { id } => client.uncordon_node(id).await?,
    };
    if json {
        print_json(&NodeView::from(&node));
    } else {
        print_nodes(std::slice::from_ref(&node), false);
    }
    Ok(())
}

fn print_vm(vm: &pb::Vm, json: bool) {
    let v = VmView::from(vm);
    if json {
        print_json(&v);
        return;
    }
    let node = if v.node_id == 0 {
        "-".to_string()
    } else {
        v.node_id.to_string()
    };
    println!("name:           {}", v.name);
    println!("state:          {} (desired {})", v.state, v.desired_state);
    println!("reason:         {}", v.reason);
    println!("node:           {node} (epoch {})", v.epoch);
    println!("vcpus/memory:   {} / {} MiB", v.vcpus, v.memory_mib);
    if !v.image.is_empty() {
        println!("image:          {}", v.image);
    }
    if !v.kernel.is_empty() {
        println!("kernel:         {}", v.kernel);
    }
    if !v.runner.is_empty() {
        println!("runner:         {}", v.runner);
    }
    println!("restart policy: {}", v.restart_policy);
    if !v.labels.is_empty() {
        let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("labels:         {}", labels.join(","));
    }
    println!("revision:       {}", v.revision);
}

fn parse_state(s: &str) -> Result<i32, CliError> {
    let wanted = s.to_ascii_lowercase();
    (1..=8)
        .find(|i| vm_state_word(*i) == wanted)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--state: unknown state {s:?}; use one of pending, scheduled, starting, running, stopping, stopped, failed, lost"
            ))
        })
}

async fn vm(
    client: &mut BlixardClient,
    cmd: VmCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let vm = match cmd {
        VmCmd::Create(a) => {
            let req = pb::CreateVmRequest {
                name: a.name.clone(),
                spec: Some(pb::VmSpec {
                    vcpus: a.vcpus,
                    memory_mib: a.memory,
                    image: a.image.clone().unwrap_or_default(),
                    kernel: a.kernel.clone().unwrap_or_default(),
                    initrd: a.initrd.clone().unwrap_or_default(),
                    cmdline: a.cmdline.clone().unwrap_or_default(),
                    runner: a.runner.clone().unwrap_or_default(),
                    labels: a.labels.iter().cloned().collect(),
                    constraints: a.constraints.clone(),
                    group: a.group.clone().unwrap_or_default(),
                    max_per_node: a.max_per_node.unwrap_or(0),
                    priority: a.priority,
                    preemptible: a.preemptible,
                    restart_policy: match a.restart_policy {
                        RestartPolicyArg::Always => pb::RestartPolicy::Always,
                        RestartPolicyArg::OnFailure => pb::RestartPolicy::OnFailure,
                        RestartPolicyArg::Never => pb::RestartPolicy::Never,
                    } as i32,
                    node_id: a.node.unwrap_or(0),
                }),
                stopped: a.stopped,
            };
            blixard_shared::validate::create_vm(&req)?;
            Some(client.create_vm(req).await?)
        }
        VmCmd::List {
            node,
            state,
            labels,
        } => {
            let state = state.as_deref().map(parse_state).transpose()?.unwrap_or(0);
            let labels: std::collections::HashMap<String, String> = labels.into_iter().collect();
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let req = pb::ListVmsRequest {
                    consistency: cons as i32,
                    page_size: blixard_shared::limits::MAX_PAGE_SIZE,
                    page_token: token.clone(),
                    node_id: node.unwrap_or(0),
                    state,
                    labels: labels.clone(),
                };
                let resp = client
                    .call(|ch| {
                        let req = req.clone();
                        async move { VmServiceClient::new(ch).list_vms(req).await }
                    })
                    .await?;
                all.extend(resp.vms);
                if resp.next_page_token.is_empty() {
                    break;
                }
                token = resp.next_page_token;
            }
            if json {
                let views: Vec<VmView> = all.iter().map(VmView::from).collect();
                print_json(&views);
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(VmView::from)
                    .map(|v| {
                        vec![
                            v.name,
                            v.state,
                            v.desired_state,
                            if v.node_id == 0 {
                                "-".into()
                            } else {
                                v.node_id.to_string()
                            },
                            v.vcpus.to_string(),
                            v.memory_mib.to_string(),
                            v.reason,
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAME",
                        "STATE",
                        "DESIRED",
                        "NODE",
                        "VCPUS",
                        "MEMORY_MIB",
                        "REASON",
                    ],
                    &rows,
                );
            }
            return Ok(());
        }
        VmCmd::Get { name } => {
            blixard_shared::validate::vm_name(&name)?;
            Some(client.get_vm(&name, cons).await?)
        }
        VmCmd::Start { name } => {
            blixard_shared::validate::vm_name(&name)?;
            Some(client.start_vm(&name).await?)
        }
        VmCmd::Stop { name } => {
            blixard_shared::validate::vm_name(&name)?;
            Some(client.stop_vm(&name).await?)
        }
        VmCmd::Restart { name } => {
            blixard_shared::validate::vm_name(&name)?;
            Some(client.restart_vm(&name).await?)
        }
        VmCmd::Logs { name, follow, tail } => {
            blixard_shared::validate::vm_name(&name)?;
            return logs(client, name, follow, tail).await;
        }
        VmCmd::Delete { name, force } => {
            blixard_shared::validate::vm_name(&name)?;
            client.delete_vm(&name, force).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": name }));
            } else {
                println!("vm {name} deleted");
            }
            return Ok(());
        }
    };
    let vm = vm.ok_or_else(|| CliError::other("the server returned no vm"))?;
    print_vm(&vm, json);
    Ok(())
}

/// Most consecutive failed attempts to (re)open the stream before giving up.
const WATCH_MAX_FAILURES: u32 = 20;

async fn watch(
    client: BlixardClient,
    from: u64,
    oldest: bool,
    count: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    use tokio_stream::StreamExt;
    let mut client = client.with_request_timeout(None);
    let mut last = from;
    let mut from_oldest = oldest;
    let mut seen = 0u64;
    let mut failures = 0u32;
    loop {
        let channel = client.current_channel()?;
        let opened = WatchServiceClient::new(channel)
            .watch(pb::WatchRequest {
                from_revision: last,
                from_oldest,
            })
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                failures += 1;
                if failures > WATCH_MAX_FAILURES {
                    return Err(status.into());
                }
                tracing::warn!(endpoint = client.current_endpoint(), error = %status.message(), "watch unavailable; trying the next member");
                client.rotate();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(resp) => {
                    failures = 0;
                    let Some(event) = resp.event else { continue };
                    last = event.revision;
                    from_oldest = false;
                    if json {
                        print_json(&EventView::from(&event));
                    } else {
                        println!(
                            "{:>8}  {:<22} {:<16} {}",
                            event.revision, event.kind, event.subject, event.message
                        );
                    }
                    seen += 1;
                    if count.is_some_and(|c| seen >= c) {
                        return Ok(());
                    }
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        || status.code() == tonic::Code::Unknown =>
                {
                    tracing::warn!(error = %status.message(), "watch stream broke; resuming");
                    break;
                }
                Err(status) => return Err(status.into()),
            }
        }
        failures += 1;
        if failures > WATCH_MAX_FAILURES {
            return Err(CliError {
                code: 5,
                message: "unavailable: the watch stream kept breaking".into(),
            });
        }
        client.rotate();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Streams a VM's console to stdout as raw bytes (with or without --json:
/// a console is not JSON).
async fn logs(
    client: &mut BlixardClient,
    name: String,
    follow: bool,
    tail: u32,
) -> Result<(), CliError> {
    use std::io::Write;
    use tokio_stream::StreamExt;
    let mut stream = {
        let mut streaming = client.clone().with_request_timeout(None);
        streaming
            .call(|ch| {
                let req = pb::StreamVmLogsRequest {
                    name: name.clone(),
                    follow,
                    tail_lines: tail,
                };
                async move { VmServiceClient::new(ch).stream_vm_logs(req).await }
            })
            .await?
    };
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out
            .write_all(&chunk.data)
            .and_then(|_| out.flush())
            .is_err()
        {
            // The reader went away (e.g. piped into head): done.
            return Ok(());
        }
    }
    Ok(())
}
