//! The console's whole state. Only `update` changes it; `view` only reads it.

use super::msg::{Action, Link};
use blixard_shared::proto::v1 as pb;
use blixard_shared::words::vm_state_word;
use std::collections::{BTreeMap, VecDeque};

/// Console log lines kept per VM; older lines are dropped.
pub const MAX_LOG_LINES: usize = 100_000;
/// Cluster events kept for the events view.
pub const MAX_EVENTS: usize = 10_000;
/// Audit records the console keeps; the oldest go first.
pub const MAX_AUDIT_ROWS: usize = 10_000;
/// Leadership changes remembered for the Raft view.
pub const MAX_LEADER_HISTORY: usize = 100;
/// How long a status line message stays (ms).
pub const STATUS_LINE_MS: u64 = 8_000;
/// Longest unterminated console line kept before it is cut into a line.
const MAX_PARTIAL_LINE: usize = 4096;
/// Terminal size (columns, rows) assumed until the terminal reports its own.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);
/// Views remembered for Esc; the oldest is forgotten past this.
pub const MAX_VIEW_HISTORY: usize = 32;
/// Longest `:` command, `/` filter or `/` search the input line takes.
pub const MAX_INPUT_LEN: usize = 256;
/// Longest value a create-form field takes.
pub const MAX_FORM_FIELD_LEN: usize = 64;
/// vCPUs of a VM created without saying (form and `:vm create`).
pub const DEFAULT_VCPUS: u32 = 1;
/// Memory (MiB) of a VM created without saying (form and `:vm create`).
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The image word that means "the cluster's default image"; the form sends
/// it as an empty image.
pub const DEFAULT_IMAGE: &str = "default";

/// The screens, one keystroke away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Cluster health at a glance.
    Overview,
    /// Hosts.
    Nodes,
    /// MicroVMs.
    Vms,
    /// A VM's serial console.
    Logs,
    /// The cluster event stream.
    Events,
    /// Raft members and leadership history.
    Raft,
    /// The console's own logs.
    Console,
    /// The cluster's audit trail (needs `audit.read`).
    Audit,
}

impl View {
    /// Every view, in footer order.
    pub const ALL: [View; 8] = [
        View::Overview,
        View::Nodes,
        View::Vms,
        View::Logs,
        View::Events,
        View::Raft,
        View::Console,
        View::Audit,
    ];

    /// Name used in the footer and by `:` commands.
    pub const fn name(self) -> &'static str {
        match self {
            View::Overview => "overview",
            View::Nodes => "nodes",
            View::Vms => "vms",
            View::Logs => "logs",
            View::Events => "events",
            View::Raft => "raft",
            View::Console => "console",
            View::Audit => "audit",
        }
    }
}

/// Columns the VM table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmSort {
    /// Name.
    Name,
    /// Observed state.
    State,
    /// Node.
    Node,
    /// Memory.
    Memory,
    /// Uptime.
    Uptime,
    /// Restarts.
    Restarts,
}

impl VmSort {
    /// The next sort column.
    pub fn next(self) -> Self {
        match self {
            VmSort::Name => VmSort::State,
            VmSort::State => VmSort::Node,
            VmSort::Node => VmSort::Memory,
            VmSort::Memory => VmSort::Uptime,
            VmSort::Uptime => VmSort::Restarts,
            VmSort::Restarts => VmSort::Name,
        }
    }

    /// Column title.
    pub fn title(self) -> &'static str {
        match self {
            VmSort::Name => "NAME",
            VmSort::State => "STATE",
            VmSort::Node => "NODE",
            VmSort::Memory => "MEMORY",
            VmSort::Uptime => "UPTIME",
            VmSort::Restarts => "RESTARTS",
        }
    }
}

/// The VM create form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateForm {
    /// Field values, in [`CreateForm::LABELS`] order.
    pub fields: [String; 4],
    /// Focused field.
    pub focus: usize,
    /// Last validation error.
    pub error: Option<String>,
}

impl CreateForm {
    /// The fields' labels, as the form shows them.
    pub const LABELS: [&'static str; 4] = ["name", "vCPUs", "memory MiB", "image"];
    /// Index of the name field.
    pub const NAME: usize = 0;
    /// Index of the vCPUs field.
    pub const VCPUS: usize = 1;
    /// Index of the memory field.
    pub const MEMORY_MIB: usize = 2;
    /// Index of the image field.
    pub const IMAGE: usize = 3;
}

impl Default for CreateForm {
    fn default() -> Self {
        Self {
            fields: [
                String::new(),
                DEFAULT_VCPUS.to_string(),
                DEFAULT_MEMORY_MIB.to_string(),
                DEFAULT_IMAGE.into(),
            ],
            focus: Self::NAME,
            error: None,
        }
    }
}

/// What the keyboard is doing right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Input {
    /// Keys are shortcuts.
    #[default]
    Normal,
    /// Typing a `:` command.
    Command(String),
    /// Typing a `/` filter for the current list.
    Filter(String),
    /// Typing a `/` search in the logs.
    Search(String),
    /// Asking before a destructive action.
    Confirm(Action),
    /// Filling in the create form.
    Form(CreateForm),
}

/// The log pane.
#[derive(Debug, Clone, Default)]
pub struct LogPane {
    /// VM whose console is shown.
    pub vm: Option<String>,
    /// Complete lines, oldest first, at most [`MAX_LOG_LINES`].
    pub lines: VecDeque<String>,
    /// Output after the last newline.
    pub partial: String,
    /// Stick to the newest output.
    pub follow: bool,
    /// Lines scrolled up from the bottom (when not following).
    pub scroll: usize,
    /// Highlighted search term.
    pub search: String,
    /// Why the stream ended, if it did.
    pub ended: Option<String>,
}

impl LogPane {
    /// Appends console output, splitting it into lines.
    pub fn push(&mut self, data: &[u8]) {
        let text = String::from_utf8_lossy(data);
        for ch in text.chars() {
            match ch {
                '\n' => {
                    let line = std::mem::take(&mut self.partial);
                    self.push_line(line);
                }
                '\r' => {}
                c => {
                    self.partial.push(c);
                    if self.partial.len() >= MAX_PARTIAL_LINE {
                        let line = std::mem::take(&mut self.partial);
                        self.push_line(line);
                    }
                }
            }
        }
    }

    fn push_line(&mut self, line: String) {
        if self.lines.len() == MAX_LOG_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(blixard_shared::text::printable(&line));
        if !self.follow {
            // Keep the view still while new lines arrive below it.
            self.scroll = (self.scroll + 1).min(self.lines.len());
        }
    }
}

/// The console's state.
#[derive(Debug, Clone)]
pub struct Model {
    /// Current screen.
    pub view: View,
    /// Screen to return to on Esc.
    pub previous: Vec<View>,
    /// No actions at all.
    pub read_only: bool,
    /// Calls go in plaintext without a token (no CA was given): the header
    /// says INSECURE, so nobody mistakes it for a secured session.
    pub insecure: bool,
    /// Connection state.
    pub link: Link,
    /// Highest revision applied.
    pub revision: u64,
    /// Latest cluster status.
    pub status: Option<pb::ClusterStatus>,
    /// Leadership changes: (time ms, leader id, term), newest last.
    pub leader_history: VecDeque<(u64, u64, u64)>,
    /// Nodes by id.
    pub nodes: BTreeMap<u64, pb::Node>,
    /// VMs by name.
    pub vms: BTreeMap<String, pb::Vm>,
    /// Recent events, newest last.
    pub events: VecDeque<pb::Event>,
    /// Selected VM (by name, so it survives updates).
    pub vm_selected: Option<String>,
    /// VM list filter.
    pub vm_filter: String,
    /// Only VMs on this node (after Enter on a node).
    pub vm_node_filter: Option<u64>,
    /// VM sort column.
    pub vm_sort: VmSort,
    /// Reverse the sort.
    pub vm_sort_desc: bool,
    /// Selected node.
    pub node_selected: Option<u64>,
    /// Node list filter.
    pub node_filter: String,
    /// Events filter (kind or subject contains it).
    pub events_filter: String,
    /// Events scrolled up from the newest.
    pub events_scroll: usize,
    /// Selected Raft member.
    pub member_selected: Option<u64>,
    /// Log pane.
    pub logs: LogPane,
    /// Keyboard mode.
    pub input: Input,
    /// Status line: message, is-error, shown at (ms).
    pub status_line: Option<(String, bool, u64)>,
    /// Help overlay shown.
    pub show_help: bool,
    /// Wall clock of the last tick (ms since the Unix epoch).
    pub now_ms: u64,
    /// Set when the operator quits.
    pub quit: bool,
    /// Draw with colours (false when `NO_COLOR` is set).
    pub color: bool,
    /// Terminal size (columns, rows), for mapping mouse clicks to rows.
    pub size: (u16, u16),
    /// Who the console runs as and what the policies let it do.
    pub access: super::access::Access,
    /// The newest audit records, oldest first, at most `MAX_AUDIT_ROWS`.
    pub audit: VecDeque<pb::AuditRecord>,
    /// Why no audit records come (the token may not read them).
    pub audit_note: Option<String>,
    /// Audit filter (principal, action, target or result contains it).
    pub audit_filter: String,
    /// Audit records scrolled up from the newest.
    pub audit_scroll: usize,
}

impl Model {
    /// A fresh model for a console talking to `endpoint`.
    pub fn new(endpoint: &str, read_only: bool) -> Self {
        Self {
            view: View::Overview,
            previous: Vec::new(),
            read_only,
            insecure: false,
            link: Link::Connecting {
                endpoint: endpoint.to_string(),
            },
            revision: 0,
            status: None,
            leader_history: VecDeque::new(),
            nodes: BTreeMap::new(),
            vms: BTreeMap::new(),
            events: VecDeque::new(),
            vm_selected: None,
            vm_filter: String::new(),
            vm_node_filter: None,
            vm_sort: VmSort::Name,
            vm_sort_desc: false,
            node_selected: None,
            node_filter: String::new(),
            events_filter: String::new(),
            events_scroll: 0,
            member_selected: None,
            logs: LogPane {
                follow: true,
                ..Default::default()
            },
            input: Input::Normal,
            status_line: None,
            show_help: false,
            now_ms: 0,
            access: Default::default(),
            audit: VecDeque::new(),
            audit_note: None,
            audit_filter: String::new(),
            audit_scroll: 0,
            quit: false,
            color: true,
            size: DEFAULT_SIZE,
        }
    }

    /// Seconds a VM has been up (0 unless running).
    pub fn uptime_s(&self, vm: &pb::Vm) -> u64 {
        if vm.state != pb::VmState::Running as i32 {
            return 0;
        }
        let started = vm.observed.as_ref().map_or(0, |o| o.started_at_ms);
        if started == 0 {
            return 0;
        }
        self.now_ms.saturating_sub(started) / 1000
    }

    /// Whether `vm` passes the VM table's filters.
    pub fn vm_visible(&self, vm: &pb::Vm) -> bool {
        let filter = self.vm_filter.to_lowercase();
        self.vm_node_filter.is_none_or(|n| vm.node_id == n)
            && (filter.is_empty()
                || vm.name.contains(&filter)
                || vm_state_word(vm.state).contains(&filter)
                || vm.node_id.to_string() == filter)
    }

    /// The VMs shown in the VM table, filtered and sorted.
    pub fn visible_vms(&self) -> Vec<&pb::Vm> {
        let mut rows: Vec<&pb::Vm> = self.vms.values().filter(|vm| self.vm_visible(vm)).collect();
        let key = self.vm_sort;
        rows.sort_by(|a, b| {
            let ord = match key {
                VmSort::Name => a.name.cmp(&b.name),
                VmSort::State => vm_state_word(a.state).cmp(vm_state_word(b.state)),
                VmSort::Node => a.node_id.cmp(&b.node_id),
                VmSort::Memory => mem(a).cmp(&mem(b)),
                VmSort::Uptime => self.uptime_s(a).cmp(&self.uptime_s(b)),
                VmSort::Restarts => restarts(a).cmp(&restarts(b)),
            }
            .then_with(|| a.name.cmp(&b.name));
            if self.vm_sort_desc {
                ord.reverse()
            } else {
                ord
            }
        });
        rows
    }

    /// The nodes shown in the node table.
    pub fn visible_nodes(&self) -> Vec<&pb::Node> {
        let filter = self.node_filter.to_lowercase();
        self.nodes
            .values()
            .filter(|n| {
                filter.is_empty()
                    || n.id.to_string() == filter
                    || n.address.contains(&filter)
                    || n.zone.to_lowercase().contains(&filter)
                    || node_state_word(n).contains(&filter)
            })
            .collect()
    }

    /// The events shown in the events view (oldest first).
    pub fn visible_events(&self) -> Vec<&pb::Event> {
        let f = self.events_filter.to_lowercase();
        self.events
            .iter()
            .filter(|e| f.is_empty() || e.kind.contains(&f) || e.subject.contains(&f))
            .collect()
    }

    /// Audit records passing the filter, oldest first.
    pub fn visible_audit(&self) -> Vec<&pb::AuditRecord> {
        let f = self.audit_filter.to_lowercase();
        self.audit
            .iter()
            .filter(|r| {
                f.is_empty()
                    || [&r.principal, &r.action, &r.target, &r.result]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&f))
            })
            .collect()
    }

    /// The leader's id, if known.
    pub fn leader_id(&self) -> Option<u64> {
        self.status
            .as_ref()
            .map(|s| s.leader_id)
            .filter(|l| *l != 0)
    }

    /// Sets the status line.
    pub fn say(&mut self, text: impl Into<String>, error: bool) {
        self.status_line = Some((text.into(), error, self.now_ms));
    }
}

fn mem(vm: &pb::Vm) -> u64 {
    vm.spec.as_ref().map_or(0, |s| s.memory_mib)
}

/// Restarts the owning node reported.
pub fn restarts(vm: &pb::Vm) -> u32 {
    vm.observed.as_ref().map_or(0, |o| o.restarts)
}

/// The one word for a node's condition: down and suspect win over
/// scheduling state.
pub fn node_state_word(n: &pb::Node) -> &'static str {
    match pb::NodeHealth::try_from(n.health) {
        Ok(pb::NodeHealth::Down) => return "down",
        Ok(pb::NodeHealth::Suspect) => return "suspect",
        _ => {}
    }
    match pb::Schedulability::try_from(n.schedulability) {
        Ok(pb::Schedulability::Cordoned) => "cordoned",
        Ok(pb::Schedulability::Draining) => "draining",
        _ => "ready",
    }
}
