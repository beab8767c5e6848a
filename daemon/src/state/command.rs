//! Commands: the only way cluster state changes. One command is one Raft
//! log entry; its outcome is returned to whoever proposed it.

use super::model::*;
use blixard_shared::auth::Role;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A change to the fleet, stamped with the proposer's clock so apply never
/// reads a clock of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Proposer's wall clock, ms since the Unix epoch.
    pub time_ms: u64,
    /// What to change.
    pub action: Action,
    /// The W3C trace context of the call that proposed it, when tracing:
    /// a VM it creates or starts keeps it, so the host's start of that VM
    /// joins the same trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// What a node tells the cluster about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// Node id.
    pub id: u64,
    /// gRPC address.
    pub address: String,
    /// Capacity offered to VMs.
    pub capacity: Resources,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Zone.
    pub zone: String,
    /// Rack.
    pub rack: String,
    /// VM backend.
    pub backend: String,
    /// The daemon's release (`blixard version`, mixed-version clusters).
    #[serde(default)]
    pub version: String,
}

impl NodeRegistration {
    /// Whether `node` already says everything this registration says (a
    /// registration that does is a no-op).
    pub fn matches(&self, node: &NodeRecord) -> bool {
        node.address == self.address
            && node.capacity == self.capacity
            && node.labels == self.labels
            && node.zone == self.zone
            && node.rack == self.rack
            && node.backend == self.backend
            && node.version == self.version
    }
}

/// The changes the state machine knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    /// Adds or refreshes a node record (keeps its schedulability and health).
    RegisterNode(NodeRegistration),
    /// Removes a node record; VMs placed there become `lost`.
    RemoveNode {
        /// Node id.
        id: u64,
    },
    /// Cordons, uncordons or drains a node.
    SetSchedulability {
        /// Node id.
        id: u64,
        /// New value.
        value: Schedulability,
    },
    /// Records the leader's judgement of a node's liveness.
    SetNodeHealth {
        /// Node id.
        id: u64,
        /// New value.
        health: NodeHealth,
    },
    /// Creates a VM record.
    CreateVm {
        /// Unique name.
        name: String,
        /// Spec (already validated at the API; re-checked here where state matters).
        spec: VmSpec,
        /// Initial desired state.
        desired: DesiredState,
    },
    /// Changes a VM's desired state.
    SetDesired {
        /// VM name.
        name: String,
        /// New desired state.
        desired: DesiredState,
    },
    /// Places a VM on a node (the scheduler's decision), bumping its epoch.
    PlaceVm {
        /// VM name.
        name: String,
        /// Target node.
        node_id: u64,
        /// The epoch the scheduler saw; a different current epoch means the
        /// decision is stale and is refused.
        expected_epoch: u64,
    },
    /// A node's agent renews its fencing lease: while renewals commit, its
    /// VMs stay where they are. Records no event (it happens every second).
    RenewLease {
        /// Node id.
        id: u64,
        /// How long the agent's lease lasts from the renewal's sending, ms.
        lease_ms: u64,
    },
    /// The leader takes a VM off a node whose lease has surely run out (the
    /// node's agent and watchdog have stopped it), with a new epoch, so it
    /// can be placed again.
    RescheduleVm {
        /// VM name.
        name: String,
        /// The node it is taken from.
        node_id: u64,
        /// The epoch the leader saw.
        expected_epoch: u64,
        /// The node's `lease_seq` the leader saw run out; a renewal since
        /// makes the decision stale.
        expected_lease_seq: u64,
    },
    /// Status reports from one node's agent, applied where the node still
    /// owns the VM at the reported epoch and ignored otherwise.
    ReportVmStatus {
        /// Reporting node.
        node_id: u64,
        /// One report per VM.
        reports: Vec<VmReport>,
        /// Names of VMs deleted while placed here whose instance this node
        /// no longer runs: their names may be placed again (see
        /// `Fleet::departed`).
        #[serde(default)]
        gone: Vec<String>,
    },
    /// The leader forgets that a deleted VM may still run on a node whose
    /// lease has surely run out (or that was removed long enough ago), so
    /// its name may be placed again.
    ForgetDeparted {
        /// VM name.
        name: String,
        /// The node the deleted instance ran on.
        node_id: u64,
        /// The node's `lease_seq` the leader saw run out; a renewal since
        /// makes the decision stale.
        expected_lease_seq: u64,
    },
    /// The leader displaces lower-priority preemptible VMs from a node to
    /// make room for `for_vm`, which the next pass places. Each victim
    /// goes back to pending, placed again once its old instance is
    /// confirmed stopped.
    PreemptVms {
        /// The VM the room is made for (pending, meant to run).
        for_vm: String,
        /// The node the victims leave.
        node_id: u64,
        /// Victims, by name, with the epoch the leader saw.
        victims: Vec<(String, u64)>,
    },
    /// Moves a placed VM off its node (a drain or a migration): it is
    /// unplaced with a new epoch, and placed again, on `to` or the
    /// scheduler's pick, only once its old instance is confirmed stopped.
    MoveVm {
        /// VM name.
        name: String,
        /// The epoch the proposer saw.
        expected_epoch: u64,
        /// Target node (0: the scheduler's pick).
        to: u64,
        /// Why: `drain` or `migrate`.
        cause: String,
    },
    /// Starts draining a node: cordoned, its VMs moved away at most
    /// `parallel` at a time until `deadline_ms`.
    DrainNode {
        /// Node id.
        id: u64,
        /// When the drain gives up on the VMs still there.
        deadline_ms: u64,
        /// Most VMs moving at once.
        parallel: u32,
    },
    /// The leader ends a node's drain with its outcome; the node stays
    /// cordoned.
    FinishDrain {
        /// Node id.
        id: u64,
        /// `complete`, `deadline passed` or `stuck`.
        outcome: String,
        /// VMs it could not move, with the reason.
        failed: Vec<(String, String)>,
    },
    /// Asks the owning agent to restart a VM.
    RestartVm {
        /// VM name.
        name: String,
    },
    /// Removes a VM record.
    DeleteVm {
        /// VM name.
        name: String,
        /// Delete even if it is running or wanted running.
        force: bool,
    },
    /// Creates a client token. Only the hash of its secret is replicated;
    /// records no event (tokens stay out of the event ring).
    CreateToken {
        /// Unique name (DNS label).
        name: String,
        /// What it allows.
        role: Role,
        /// SHA-256 of the secret, lowercase hex.
        hash: String,
        /// When it stops being accepted (`None`: never); must be later
        /// than the command's time.
        expires_ms: Option<u64>,
        /// Labels scoping the token (see `TokenRecord::labels`).
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
    /// Replaces the cluster's Cedar policies and schema (validated again
    /// here: a text that does not compile is refused, the old ones stay).
    SetPolicies {
        /// The policy text.
        policies: String,
        /// The schema text.
        schema: String,
    },
    /// Revokes the client token named `name`.
    RevokeToken {
        /// Token name.
        name: String,
    },
    /// Creates a one-time join token (dropping spent and expired ones
    /// first, so they never count against the limit).
    CreateJoinToken {
        /// SHA-256 of the secret, lowercase hex.
        hash: String,
        /// When it stops being accepted; must be later than the command's
        /// time.
        expires_ms: u64,
    },
    /// Spends a join token for a new node. Unknown, used and expired
    /// tokens are refused alike, so the refusal tells a guesser nothing.
    RedeemJoinToken {
        /// SHA-256 of the presented secret, lowercase hex.
        hash: String,
        /// The node joining with it (not yet in the cluster).
        node_id: u64,
    },
    /// Writes a node's batch of audit records to the trail (once per
    /// batch: see `state::audit`). Records no event.
    RecordAudit(super::audit::AuditBatch),
    /// Sets (creates or replaces) the quota of one label.
    SetQuota {
        /// `key=value`.
        label: String,
        /// At least one limit set.
        limits: super::quota::QuotaLimits,
    },
    /// Removes the quota of one label.
    DeleteQuota {
        /// `key=value`.
        label: String,
    },
    /// A client's write carrying its request id (see
    /// `blixard_shared::request_id`): a second one with the same id and the
    /// same write is answered with the first one's outcome instead of being
    /// applied again; the same id with a different write is refused. A
    /// variant of its own, not a field, so a daemon from before it cannot
    /// decode it and stops loudly instead of applying retries twice.
    Retryable {
        /// The client's id for this write.
        request_id: String,
        /// The write (never itself `Retryable`).
        action: Box<Action>,
    },
}

/// Why a command was refused; maps one to one onto gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// A field is invalid against current state.
    InvalidArgument,
    /// The subject does not exist.
    NotFound,
    /// The subject already exists.
    AlreadyExists,
    /// The subject is not in a state that allows this.
    FailedPrecondition,
    /// A cluster-wide limit is reached.
    ResourceExhausted,
    /// A presented credential (a join token) is not valid.
    Unauthenticated,
}

/// A refused command: the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Category.
    pub code: RejectionCode,
    /// What was wrong, naming the field or subject.
    pub message: String,
}

impl Rejection {
    pub(crate) fn new(code: RejectionCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What an accepted command produced, for the proposer's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandOutcome {
    /// Nothing to return (deletes, membership entries).
    Done,
    /// The node record after the change.
    Node(NodeRecord),
    /// The VM record after the change.
    Vm(VmRecord),
    /// The client token created (without its hash).
    Token(TokenInfo),
}

/// The state machine's answer to one log entry.
pub type CommandResult = Result<CommandOutcome, Rejection>;
