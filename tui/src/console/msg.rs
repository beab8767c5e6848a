//! Messages into the console's update function, and commands out of it.

use blixard_shared::proto::v1 as pb;
use ratatui::crossterm::event::{KeyEvent, MouseEvent};

/// How the console is connected right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Loading the initial state from `endpoint`.
    Connecting {
        /// Member being tried.
        endpoint: String,
    },
    /// Streaming events from `endpoint`.
    Live {
        /// Member in use.
        endpoint: String,
    },
    /// The stream broke; trying members again since `since_ms`.
    Reconnecting {
        /// Member being tried next.
        endpoint: String,
        /// When the link went down (ms since the Unix epoch).
        since_ms: u64,
        /// Why.
        reason: String,
    },
}

impl Link {
    /// The one word for the link, as the header shows it.
    pub fn word(&self) -> &'static str {
        match self {
            Link::Connecting { .. } => "connecting",
            Link::Live { .. } => "live",
            Link::Reconnecting { .. } => "reconnecting",
        }
    }
}

/// Everything that can happen to the console.
#[derive(Debug, Clone)]
pub enum Msg {
    /// A key press.
    Key(KeyEvent),
    /// A mouse event.
    Mouse(MouseEvent),
    /// The terminal was resized.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Time passes (drives "since" displays and status line expiry).
    Tick {
        /// Wall clock, ms since the Unix epoch.
        now_ms: u64,
    },
    /// The whole state, loaded once per (re)connection that cannot resume.
    Loaded {
        /// Nodes.
        nodes: Vec<pb::Node>,
        /// VMs.
        vms: Vec<pb::Vm>,
        /// Revision the lists were read at.
        revision: u64,
    },
    /// An event from the watch stream.
    Event(pb::Event),
    /// A VM record, fetched after an event named it.
    VmChanged(pb::Vm),
    /// A VM no longer exists.
    VmGone(String),
    /// A node record, fetched after an event named it.
    NodeChanged(pb::Node),
    /// A node no longer exists.
    NodeGone(u64),
    /// Fresh cluster status (polled).
    Status(pb::ClusterStatus),
    /// The link changed.
    Link(Link),
    /// Console output of the VM whose logs are open.
    LogData {
        /// VM name.
        vm: String,
        /// Raw bytes.
        data: Vec<u8>,
    },
    /// The log stream ended.
    LogEnded {
        /// VM name.
        vm: String,
        /// Why.
        reason: String,
    },
    /// An action finished: a message for the status line, or an error.
    ActionDone(Result<String, String>),
    /// A record of the audit trail.
    Audit(pb::AuditRecord),
    /// Why the audit trail cannot be shown.
    AuditUnavailable(String),
    /// What the console's token may do (`CheckAccess`).
    Access(super::access::AccessReport),
}

/// An operation on the cluster the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create (and start) a VM.
    CreateVm {
        /// Name.
        name: String,
        /// vCPUs.
        vcpus: u32,
        /// Memory in MiB.
        memory_mib: u64,
        /// Image (empty: default).
        image: String,
    },
    /// Start a VM.
    StartVm(String),
    /// Stop a VM.
    StopVm(String),
    /// Restart a VM.
    RestartVm(String),
    /// Delete a VM.
    DeleteVm {
        /// Name.
        name: String,
        /// Even if running.
        force: bool,
    },
    /// Cordon a node.
    Cordon(u64),
    /// Uncordon a node (ends its drain).
    Uncordon(u64),
    /// Drain a node (default deadline and parallelism).
    Drain(u64),
    /// Migrate a VM to the scheduler's pick.
    MigrateVm(String),
    /// Transfer leadership (to a node, or the best other voter).
    TransferLeader(Option<u64>),
}

impl Action {
    /// Whether the operator must confirm it first.
    pub fn destructive(&self) -> bool {
        !matches!(
            self,
            Action::CreateVm { .. } | Action::StartVm(_) | Action::Uncordon(_)
        )
    }

    /// One line describing it, for dialogs and the status line.
    pub fn describe(&self) -> String {
        match self {
            Action::CreateVm {
                name,
                vcpus,
                memory_mib,
                image,
            } => format!(
                "create vm {name} ({vcpus} vCPU, {memory_mib} MiB, image {})",
                if image.is_empty() { "default" } else { image }
            ),
            Action::StartVm(n) => format!("start vm {n}"),
            Action::StopVm(n) => format!("stop vm {n}"),
            Action::RestartVm(n) => format!("restart vm {n}"),
            Action::DeleteVm { name, force: true } => format!("force-delete vm {name}"),
            Action::DeleteVm { name, .. } => format!("delete vm {name}"),
            Action::Cordon(id) => format!("cordon node {id}"),
            Action::Uncordon(id) => format!("uncordon node {id}"),
            Action::Drain(id) => format!("drain node {id} (move its VMs away, 2 at a time)"),
            Action::MigrateVm(n) => format!("migrate vm {n} (stop it, start it on another node)"),
            Action::TransferLeader(Some(id)) => format!("transfer leadership to node {id}"),
            Action::TransferLeader(None) => {
                "transfer leadership to the most up-to-date voter".into()
            }
        }
    }
}

/// What update asks the outside world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// Run an action against the cluster.
    Run(Action),
    /// Open (stream) a VM's console log.
    OpenLogs(String),
    /// Stop streaming logs.
    CloseLogs,
    /// Ask the daemon what the console's token may do.
    CheckAccess(Vec<super::access::AccessKey>),
    /// Leave the console.
    Quit,
}
