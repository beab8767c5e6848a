//! `blixard vm create|list|get|start|stop|restart|delete|logs`: the
//! microVMs, their spec, their state and their serial console.

use super::args::{CreateArgs, RestartPolicyArg, VmCmd};
use super::output::{known_word, node_cell, print_json, print_table, NO_NODE};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use blixard_shared::words::{parse_vm_state, vm_state_word, VM_STATES};
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// JSON view of a VM (`vm get --json` and the other single-VM commands, and
/// each element of `vm list --json`). The README promises at least `name`,
/// `state`, `node_id`, `epoch`, `vcpus`, `memory_mib`, `reason`.
#[derive(Debug, Serialize)]
pub struct VmView {
    /// VM name.
    pub name: String,
    /// Observed state (pending, running, stopped, ...).
    pub state: String,
    /// What the operator asked for (running or stopped).
    pub desired_state: String,
    /// Node it is placed on (0: not placed).
    pub node_id: u64,
    /// Fencing epoch of the placement.
    pub epoch: u64,
    /// vCPUs it asked for.
    pub vcpus: u32,
    /// Memory it asked for (MiB).
    pub memory_mib: u64,
    /// Why it is in its state.
    pub reason: String,
    /// Guest image name.
    pub image: String,
    /// Kernel path on the host.
    pub kernel: String,
    /// Initrd path on the host.
    pub initrd: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Prepared runner executable.
    pub runner: String,
    /// Its labels, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Placement constraints.
    pub constraints: Vec<String>,
    /// Anti-affinity group.
    pub group: String,
    /// Most VMs of the group per node.
    pub max_per_node: u32,
    /// Scheduling priority.
    pub priority: i32,
    /// Whether higher-priority VMs may preempt it.
    pub preemptible: bool,
    /// always, on_failure or never.
    pub restart_policy: String,
    /// Node it is pinned to (0: not pinned).
    pub pinned_node_id: u64,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When its record last changed (ms since the Unix epoch).
    pub updated_at_ms: u64,
    /// Revision (Raft log index) of the last change to its record.
    pub revision: u64,
    /// Host process id of the running instance (0 if none).
    pub pid: u32,
    /// When the instance started (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Restarts under the restart policy since it was placed.
    pub restarts: u32,
    /// Why it is where it is, or why it waits for a node.
    pub placement: String,
    /// Placement strategy it asked for (empty: the cluster's).
    pub strategy: String,
    /// Topology key its group is spread across.
    pub spread_by: String,
    /// The node it is moving off (0: not moving).
    pub moving_from: u64,
}

/// JSON view of `vm explain`.
#[derive(Debug, Serialize)]
pub struct ExplainView {
    /// Where it is or would go, or why it waits, with counts.
    pub summary: String,
    /// binpack or spread.
    pub strategy: String,
    /// The node the engine picks now (0: none fits).
    pub chosen_node_id: u64,
    /// The node it is placed on (0: none).
    pub node_id: u64,
    /// Every node's verdict.
    pub nodes: Vec<VerdictView>,
}

/// One node's verdict in `vm explain --json`.
#[derive(Debug, Serialize)]
pub struct VerdictView {
    /// Node id.
    pub node_id: u64,
    /// Whether it passes every rule.
    pub fits: bool,
    /// Its score when it fits (higher is better).
    pub score: i64,
    /// The rule it breaks when it does not.
    pub reason: String,
}

impl From<&pb::ExplainVmResponse> for ExplainView {
    fn from(e: &pb::ExplainVmResponse) -> Self {
        Self {
            summary: e.summary.clone(),
            strategy: e.strategy.clone(),
            chosen_node_id: e.chosen_node_id,
            node_id: e.node_id,
            nodes: e
                .nodes
                .iter()
                .map(|n| VerdictView {
                    node_id: n.node_id,
                    fits: n.fits,
                    score: n.score,
                    reason: n.reason.clone(),
                })
                .collect(),
        }
    }
}

/// Prints the whole decision: the summary, then one line per node.
fn print_explain(e: &pb::ExplainVmResponse) {
    println!("placement:      {}", e.summary);
    println!("strategy:       {}", e.strategy);
    for n in &e.nodes {
        let mark = if n.node_id == e.chosen_node_id && n.fits {
            " (chosen)"
        } else if n.node_id == e.node_id {
            " (current)"
        } else {
            ""
        };
        if n.fits {
            println!("  node {}: fits, score {}{mark}", n.node_id, n.score);
        } else {
            println!("  node {}: {}{mark}", n.node_id, n.reason);
        }
    }
}

impl From<&pb::Vm> for VmView {
    fn from(vm: &pb::Vm) -> Self {
        let spec = vm.spec.clone().unwrap_or_default();
        let observed = vm.observed.unwrap_or_default();
        Self {
            name: vm.name.clone(),
            state: vm_state_word(vm.state).to_string(),
            desired_state: known_word(pb::DesiredState::try_from(vm.desired_state)),
            node_id: vm.node_id,
            epoch: vm.epoch,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            reason: vm.reason.clone(),
            image: spec.image,
            kernel: spec.kernel,
            initrd: spec.initrd,
            cmdline: spec.cmdline,
            runner: spec.runner,
            labels: spec.labels.into_iter().collect(),
            constraints: spec.constraints,
            group: spec.group,
            max_per_node: spec.max_per_node,
            priority: spec.priority,
            preemptible: spec.preemptible,
            restart_policy: restart_policy_word(spec.restart_policy).into(),
            pinned_node_id: spec.node_id,
            created_at_ms: vm.created_at_ms,
            updated_at_ms: vm.updated_at_ms,
            revision: vm.revision,
            pid: observed.pid,
            started_at_ms: observed.started_at_ms,
            restarts: observed.restarts,
            placement: vm.placement.clone(),
            strategy: spec.strategy,
            spread_by: spec.spread_by,
            moving_from: vm.moving_from,
        }
    }
}

/// The word for a restart policy; unspecified (and unknown) values read
/// "always", as the API treats them.
fn restart_policy_word(policy: i32) -> &'static str {
    match pb::RestartPolicy::try_from(policy) {
        Ok(pb::RestartPolicy::OnFailure) => "on_failure",
        Ok(pb::RestartPolicy::Never) => "never",
        _ => "always",
    }
}

impl From<RestartPolicyArg> for pb::RestartPolicy {
    fn from(arg: RestartPolicyArg) -> Self {
        match arg {
            RestartPolicyArg::Always => pb::RestartPolicy::Always,
            RestartPolicyArg::OnFailure => pb::RestartPolicy::OnFailure,
            RestartPolicyArg::Never => pb::RestartPolicy::Never,
        }
    }
}

/// Runs one `vm` command.
pub async fn run(
    client: &mut BlixardClient,
    cmd: VmCmd,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let vm = match cmd {
        VmCmd::Create(a) => {
            let req = create_request(&a);
            blixard_shared::validate::create_vm(&req)?;
            client.create_vm(req).await?
        }
        VmCmd::List {
            node,
            state,
            labels,
        } => return list(client, node, state.as_deref(), labels, json, cons).await,
        VmCmd::Get { name, explain } => {
            blixard_shared::validate::vm_name(&name)?;
            let vm = client.get_vm(&name, cons).await?;
            if explain {
                let decision = client.explain_vm(&name, cons).await?;
                if json {
                    print_json(&serde_json::json!({
                        "vm": VmView::from(&vm),
                        "explain": ExplainView::from(&decision),
                    }));
                } else {
                    print_vm(&vm, false);
                    print_explain(&decision);
                }
                return Ok(());
            }
            vm
        }
        VmCmd::Explain { name } => {
            blixard_shared::validate::vm_name(&name)?;
            let decision = client.explain_vm(&name, cons).await?;
            if json {
                print_json(&ExplainView::from(&decision));
            } else {
                print_explain(&decision);
            }
            return Ok(());
        }
        VmCmd::Migrate { name, to, live } => {
            blixard_shared::validate::vm_name(&name)?;
            if to == Some(0) {
                return Err(CliError::usage(
                    "--to: must be a positive node id (leave it out for the scheduler's pick)",
                ));
            }
            client
                .migrate_vm(&name, to.unwrap_or(NO_NODE), live)
                .await?
        }
        VmCmd::Start { name } => {
            blixard_shared::validate::vm_name(&name)?;
            client.start_vm(&name).await?
        }
        VmCmd::Stop { name } => {
            blixard_shared::validate::vm_name(&name)?;
            client.stop_vm(&name).await?
        }
        VmCmd::Restart { name } => {
            blixard_shared::validate::vm_name(&name)?;
            client.restart_vm(&name).await?
        }
        VmCmd::Logs { name, follow, tail } => {
            blixard_shared::validate::vm_name(&name)?;
            return logs(client, name, follow, tail).await;
        }
        VmCmd::Delete { name, force } => return delete(client, name, force, json).await,
    };
    print_vm(&vm, json);
    Ok(())
}

/// The `CreateVm` request `vm create` sends; unset options are the API's
/// zero values ("default image", "no limit", "let the scheduler choose").
fn create_request(a: &CreateArgs) -> pb::CreateVmRequest {
    pb::CreateVmRequest {
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
            max_per_node: a.max_per_node.unwrap_or_default(),
            strategy: a.strategy.clone().unwrap_or_default(),
            spread_by: a.spread_by.clone().unwrap_or_default(),
            priority: a.priority,
            preemptible: a.preemptible,
            restart_policy: pb::RestartPolicy::from(a.restart_policy) as i32,
            node_id: a.node.unwrap_or(NO_NODE),
        }),
        stopped: a.stopped,
    }
}

/// The state `--state` names, or a usage error listing the states there are.
fn parse_state_filter(word: &str) -> Result<pb::VmState, CliError> {
    parse_vm_state(word).ok_or_else(|| {
        let states: Vec<&str> = VM_STATES.into_iter().map(vm_state_word).collect();
        CliError::usage(format!(
            "--state: unknown state {word:?}; use one of {}",
            states.join(", ")
        ))
    })
}

/// `vm list`: every VM the filters select, all pages, as a JSON array or a
/// table.
async fn list(
    client: &mut BlixardClient,
    node: Option<u64>,
    state: Option<&str>,
    labels: Vec<(String, String)>,
    json: bool,
    cons: pb::Consistency,
) -> Result<(), CliError> {
    let state = state
        .map(parse_state_filter)
        .transpose()?
        .unwrap_or(pb::VmState::Unspecified);
    let filter = pb::ListVmsRequest {
        consistency: cons as i32,
        node_id: node.unwrap_or(NO_NODE),
        state: state as i32,
        labels: labels.into_iter().collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    let (vms, _revision) = client.list_all_vms(filter).await?;
    let views: Vec<VmView> = vms.iter().map(VmView::from).collect();
    if json {
        print_json(&views);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .into_iter()
        .map(|v| {
            vec![
                v.name,
                v.state,
                v.desired_state,
                node_cell(v.node_id),
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
    Ok(())
}

/// `vm delete`.
async fn delete(
    client: &mut BlixardClient,
    name: String,
    force: bool,
    json: bool,
) -> Result<(), CliError> {
    blixard_shared::validate::vm_name(&name)?;
    client.delete_vm(&name, force).await?;
    if json {
        print_json(&serde_json::json!({ "deleted": name }));
    } else {
        println!("vm {name} deleted");
    }
    Ok(())
}

/// Prints one VM as JSON or as labelled lines (what every single-VM
/// command answers with).
fn print_vm(vm: &pb::Vm, json: bool) {
    let v = VmView::from(vm);
    if json {
        print_json(&v);
        return;
    }
    println!("name:           {}", v.name);
    println!("state:          {} (desired {})", v.state, v.desired_state);
    println!("reason:         {}", v.reason);
    if !v.placement.is_empty() {
        println!("placement:      {}", v.placement);
    }
    if v.moving_from != 0 {
        println!("moving from:    node {}", v.moving_from);
    }
    println!(
        "node:           {} (epoch {})",
        node_cell(v.node_id),
        v.epoch
    );
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
    println!(
        "priority:       {}{}",
        v.priority,
        if v.preemptible { " (preemptible)" } else { "" }
    );
    if !v.constraints.is_empty() {
        println!("constraints:    {}", v.constraints.join("; "));
    }
    if !v.group.is_empty() {
        let max = match v.max_per_node {
            0 => "no limit per node".to_string(),
            n => format!("at most {n} per node"),
        };
        let spread = if v.spread_by.is_empty() {
            String::new()
        } else {
            format!(", spread by {}", v.spread_by)
        };
        println!("group:          {} ({max}{spread})", v.group);
    }
    if v.pinned_node_id != 0 {
        println!("pinned to:      node {}", v.pinned_node_id);
    }
    if !v.strategy.is_empty() {
        println!("strategy:       {}", v.strategy);
    }
    if !v.labels.is_empty() {
        let labels: Vec<String> = v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("labels:         {}", labels.join(","));
    }
    println!("revision:       {}", v.revision);
}

/// `vm logs`: streams a VM's console to stdout as raw bytes (with or
/// without --json: a console is not JSON).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_filter_error_lists_every_state() {
        let e = parse_state_filter("bogus").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "--state: unknown state \"bogus\"; use one of pending, scheduled, starting, \
                 running, stopping, stopped, failed, lost"
            )
        );
        assert_eq!(
            parse_state_filter("Running").ok(),
            Some(pb::VmState::Running)
        );
    }

    #[test]
    fn restart_policies_read_as_the_api_treats_them() {
        assert_eq!(
            restart_policy_word(pb::RestartPolicy::Unspecified as i32),
            "always"
        );
        assert_eq!(
            restart_policy_word(pb::RestartPolicy::OnFailure as i32),
            "on_failure"
        );
        assert_eq!(
            restart_policy_word(pb::RestartPolicy::Never as i32),
            "never"
        );
    }
}
