//! Records of the replicated model: nodes, VMs, events and tokens. These are the
//! state machine's own types (serde, stable field names); the API converts
//! records to and from `blixard.v1` messages at the edge. The VM state maps
//! one to one onto its wire form here, so event messages use the same words
//! as the CLI and the console (`blixard_shared::words`).

use blixard_shared::auth::Role;
use blixard_shared::proto::v1 as pb;
use blixard_shared::validate::SpecFields;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Resources of a host or requested by a VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in MiB.
    pub disk_mib: u64,
}

/// Whether the scheduler may place new VMs on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedulability {
    /// New VMs may be placed here.
    #[default]
    Schedulable,
    /// No new VMs; existing ones stay.
    Cordoned,
    /// No new VMs; existing ones are being moved away.
    Draining,
}

/// Liveness of a node, judged by the leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    /// Heard from recently.
    #[default]
    Alive,
    /// Missed a few heartbeats.
    Suspect,
    /// Not heard from for longer than the down threshold.
    Down,
}

impl NodeHealth {
    /// Every health, for gauges that show each (zero included).
    pub const ALL: [NodeHealth; 3] = [NodeHealth::Alive, NodeHealth::Suspect, NodeHealth::Down];

    /// Lower-case word for the health, as in the CLI and metrics.
    pub fn word(self) -> &'static str {
        match self {
            NodeHealth::Alive => "alive",
            NodeHealth::Suspect => "suspect",
            NodeHealth::Down => "down",
        }
    }
}

/// A host of the fleet, as registered by its own daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id (also its Raft id).
    pub id: u64,
    /// gRPC address (host:port) other daemons and clients use.
    pub address: String,
    /// Capacity offered to VMs (host resources less the configured reserve).
    pub capacity: Resources,
    /// Operator labels from the node's config.
    pub labels: BTreeMap<String, String>,
    /// Failure-domain zone.
    pub zone: String,
    /// Failure-domain rack.
    pub rack: String,
    /// Backend this node runs VMs with.
    pub backend: String,
    /// Scheduling state.
    pub schedulability: Schedulability,
    /// Liveness.
    pub health: NodeHealth,
    /// When the node first registered (proposer's clock, ms since epoch).
    pub registered_at_ms: u64,
    /// Last change to this record (proposer's clock).
    pub updated_at_ms: u64,
    /// How many times the node's agent renewed its fencing lease. The
    /// leader re-places the node's VMs only after this stopped moving for
    /// longer than the lease (see `fence`), and the re-placement names the
    /// value it saw, so a renewal committed first makes it stale.
    #[serde(default)]
    pub lease_seq: u64,
    /// The lease the node's agent holds after each renewal, in ms (0: none
    /// renewed yet).
    #[serde(default)]
    pub lease_ms: u64,
    /// The node's drain, running or finished (cleared by an uncordon).
    #[serde(default)]
    pub drain: Option<DrainRecord>,
    /// The release its daemon last registered with (empty: from before
    /// versions were registered).
    #[serde(default)]
    pub version: String,
}

/// A drain: its settings and its progress, replicated so every node (and
/// a new leader) knows where it stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// When it started (proposer's clock, ms since epoch).
    pub started_ms: u64,
    /// When it gives up on the VMs still here (proposer's clock).
    pub deadline_ms: u64,
    /// Most VMs moving at once.
    pub parallel: u32,
    /// VMs moved off and placed elsewhere.
    pub moved: u32,
    /// VMs on their way: stopped here, not yet placed elsewhere.
    pub in_flight: std::collections::BTreeSet<String>,
    /// VMs it could not move, with the reason (at most
    /// `MAX_DRAIN_FAILURES`).
    pub failed: BTreeMap<String, String>,
    /// How it ended (`complete`, `deadline passed`, `stuck`, `ended`);
    /// `None` while it runs.
    pub outcome: Option<String>,
}

/// Most VMs a drain lists as failed; the rest are counted in the outcome.
pub const MAX_DRAIN_FAILURES: usize = 100;

/// A VM on its way off a node: placed again, with a new epoch, only once
/// the old instance is confirmed stopped (`Fleet::departed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// The node it leaves (never placed back there by this move).
    pub from: u64,
    /// The node asked for (0: the scheduler's pick).
    pub to: u64,
    /// Why: `drain` or `migrate`.
    pub cause: String,
}

/// What the operator wants a VM to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Keep it running.
    Running,
    /// Keep it stopped.
    Stopped,
}

/// Observed status of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Accepted, not yet placed or started.
    Pending,
    /// Placed on a node, not yet started.
    Scheduled,
    /// Booting.
    Starting,
    /// Running.
    Running,
    /// Shutting down.
    Stopping,
    /// Stopped.
    Stopped,
    /// Failed; see the reason.
    Failed,
    /// Its node is gone.
    Lost,
}

impl VmState {
    /// Every state, for gauges that show each (zero included).
    pub const ALL: [VmState; 8] = [
        VmState::Pending,
        VmState::Scheduled,
        VmState::Starting,
        VmState::Running,
        VmState::Stopping,
        VmState::Stopped,
        VmState::Failed,
        VmState::Lost,
    ];

    /// Lower-case word for the state, as in events, the CLI and the console.
    pub fn word(self) -> &'static str {
        blixard_shared::words::vm_state_word(pb::VmState::from(self))
    }

    /// Model form of a wire VM state filter (`None` for "any").
    pub fn from_pb(s: pb::VmState) -> Option<Self> {
        Some(match s {
            pb::VmState::Unspecified => return None,
            pb::VmState::Pending => Self::Pending,
            pb::VmState::Scheduled => Self::Scheduled,
            pb::VmState::Starting => Self::Starting,
            pb::VmState::Running => Self::Running,
            pb::VmState::Stopping => Self::Stopping,
            pb::VmState::Stopped => Self::Stopped,
            pb::VmState::Failed => Self::Failed,
            pb::VmState::Lost => Self::Lost,
        })
    }
}

impl From<VmState> for pb::VmState {
    fn from(s: VmState) -> Self {
        match s {
            VmState::Pending => Self::Pending,
            VmState::Scheduled => Self::Scheduled,
            VmState::Starting => Self::Starting,
            VmState::Running => Self::Running,
            VmState::Stopping => Self::Stopping,
            VmState::Stopped => Self::Stopped,
            VmState::Failed => Self::Failed,
            VmState::Lost => Self::Lost,
        }
    }
}

/// When the agent restarts a VM that exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Whatever the exit.
    #[default]
    Always,
    /// Only after a failure.
    OnFailure,
    /// Never.
    Never,
}

/// What a VM is: resources, what to boot and where it may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Guest image name (empty when kernel or runner is given).
    pub image: String,
    /// Kernel path on the host.
    pub kernel: String,
    /// Initrd path on the host.
    pub initrd: String,
    /// Kernel command line.
    pub cmdline: String,
    /// Prepared runner executable (microvm.nix style).
    pub runner: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Placement constraints.
    pub constraints: Vec<String>,
    /// Anti-affinity group.
    pub group: String,
    /// Most VMs of the group per node (0: no limit).
    pub max_per_node: u32,
    /// Scheduling priority.
    pub priority: i32,
    /// May be preempted by higher priority VMs.
    pub preemptible: bool,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Pinned node (0: scheduler chooses).
    pub node_id: u64,
    /// Placement strategy, `binpack` or `spread` (empty: the cluster's).
    #[serde(default)]
    pub strategy: String,
    /// Topology key the VM's group is spread across (`zone`, `rack` or a
    /// label key; empty: none).
    #[serde(default)]
    pub spread_by: String,
}

impl VmSpec {
    /// The spec as plain values, for the rules the API holds the wire spec
    /// to (`blixard_shared::validate::spec_fields`): apply re-checks them.
    pub fn fields(&self) -> SpecFields<'_> {
        SpecFields {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            image: &self.image,
            kernel: &self.kernel,
            initrd: &self.initrd,
            cmdline: &self.cmdline,
            runner: &self.runner,
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            constraints: &self.constraints,
            group: &self.group,
            max_per_node: self.max_per_node,
            priority: self.priority,
            strategy: &self.strategy,
            spread_by: &self.spread_by,
        }
    }
}

/// A VM record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// Unique name (DNS label).
    pub name: String,
    /// What it is.
    pub spec: VmSpec,
    /// What the operator wants.
    pub desired: DesiredState,
    /// Node it is placed on (0: none).
    pub node_id: u64,
    /// Fencing epoch of the placement.
    pub epoch: u64,
    /// Observed status.
    pub state: VmState,
    /// Why it is in that state.
    pub reason: String,
    /// Creation time (proposer's clock, ms since epoch).
    pub created_at_ms: u64,
    /// Last change (proposer's clock).
    pub updated_at_ms: u64,
    /// Revision of the last change.
    pub revision: u64,
    /// Bumped by every restart request; the owning agent restarts the VM
    /// when it sees a new value.
    #[serde(default)]
    pub restart_nonce: u64,
    /// What the owning node last reported about the running instance.
    #[serde(default)]
    pub observed: Observed,
    /// The move under way, if any (cleared when it is placed again).
    #[serde(default)]
    pub moving: Option<MoveRecord>,
    /// The trace context of the command that last created, started or
    /// restarted it (empty: none), for the host's start to join.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent: String,
}

/// Details of the running instance, as reported by the owning node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Host process id of the VM (QEMU or the supervised process); 0 if none.
    pub pid: u32,
    /// When the instance was started (owning node's clock, ms since epoch).
    pub started_at_ms: u64,
    /// Restarts the agent made under the restart policy since placement.
    pub restarts: u32,
    /// The `restart_nonce` the agent has acted on.
    pub restart_nonce: u64,
}

/// One VM's status as the owning node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmReport {
    /// VM name.
    pub name: String,
    /// Placement epoch the report is about; stale epochs are ignored.
    pub epoch: u64,
    /// Observed state.
    pub state: VmState,
    /// Why (failure reason, last console lines).
    pub reason: String,
    /// Instance details.
    pub observed: Observed,
}

/// One entry of the replicated event ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Raft log index of the command that produced it.
    pub revision: u64,
    /// Proposer's clock (ms since epoch).
    pub time_ms: u64,
    /// Dotted kind, e.g. `vm.created`.
    pub kind: String,
    /// Subject, e.g. `vm/web-1`.
    pub subject: String,
    /// Human message.
    pub message: String,
}

/// A client token, stored under the SHA-256 of its secret (the secret
/// itself never reaches the replicated state, so a copy of the state or
/// of the log does not let anyone call the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Unique name (DNS label), how operators list and revoke it.
    pub name: String,
    /// What the token allows.
    pub role: Role,
    /// When it was created (proposer's clock, ms since epoch).
    pub created_ms: u64,
    /// When it stops being accepted (proposer's clock; `None`: never).
    pub expires_ms: Option<u64>,
    /// Labels that scope the token: with the default policies it acts only
    /// on VMs carrying all of them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl TokenRecord {
    /// Whether the token is still accepted at `now_ms` (an expiry at or
    /// before `now_ms` has passed).
    pub fn live_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|at| at > now_ms)
    }

    /// What may be shown about the token: everything but its hash.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            name: self.name.clone(),
            role: self.role,
            labels: self.labels.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
        }
    }
}

/// A client token as the API shows it: no hash, so a listing does not
/// hand out what a guess could be checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Unique name.
    pub name: String,
    /// What the token allows.
    pub role: Role,
    /// When it was created (proposer's clock, ms since epoch).
    pub created_ms: u64,
    /// When it stops being accepted (`None`: never).
    pub expires_ms: Option<u64>,
    /// The token's scoping labels.
    pub labels: BTreeMap<String, String>,
}

/// The cluster's Cedar policies and schema, replicated so every node
/// decides the same (see `crate::policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The policy text.
    pub policies: String,
    /// The schema text.
    pub schema: String,
    /// The revision that set them: the authorizer recompiles when it moves.
    pub revision: u64,
}

/// A one-time join token, stored under the SHA-256 of its secret: a new
/// node presents the secret once, and the token is spent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// When it was created (proposer's clock, ms since epoch).
    pub created_ms: u64,
    /// When it stops being accepted (proposer's clock).
    pub expires_ms: u64,
    /// The node that redeemed it (`None`: not yet used).
    pub used_by: Option<u64>,
}

impl JoinTokenRecord {
    /// Whether a node may still redeem it at `now_ms`: unused and unexpired.
    pub fn redeemable_at(&self, now_ms: u64) -> bool {
        self.used_by.is_none() && self.expires_ms > now_ms
    }
}
