//! What the console's token may do, as the daemon's policies answer it
//! (`PolicyService.CheckAccess`): the console asks about every action it
//! offers, on every VM and node it shows, and greys out or refuses what
//! the answer denies. It copies no policy logic: a question it has no
//! answer to yet is left to the daemon, which decides every call anyway.

use super::keys::{KeyAction, KeyBinding};
use super::model::{Model, View};
use super::msg::Action;
use std::collections::HashMap;

/// How often the console asks again (policies may be reloaded, VMs
/// relabelled), ms.
pub const ACCESS_REFRESH_MS: u64 = 5_000;
/// Most questions one refresh asks (VMs and nodes past it are left to the
/// daemon's answer when acted on).
pub const MAX_ACCESS_QUESTIONS: usize = 4096;

/// The actions the console offers on each VM.
const VM_ACTIONS: [&str; 5] = [
    "vm.start",
    "vm.stop",
    "vm.restart",
    "vm.delete",
    "vm.migrate",
];
/// The actions the console offers on each node.
const NODE_ACTIONS: [&str; 3] = ["node.cordon", "node.uncordon", "node.drain"];

/// One question: may the console's token do `action` on this?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessKey {
    /// The Cedar action.
    pub action: &'static str,
    /// "vm", "node" or "cluster".
    pub kind: &'static str,
    /// The VM's name or the node's id; empty for the cluster (and for a
    /// VM yet to be created).
    pub name: String,
}

impl AccessKey {
    fn vm(action: &'static str, name: &str) -> Self {
        Self {
            action,
            kind: "vm",
            name: name.to_string(),
        }
    }

    fn node(action: &'static str, id: u64) -> Self {
        Self {
            action,
            kind: "node",
            name: id.to_string(),
        }
    }

    fn cluster(action: &'static str) -> Self {
        Self {
            action,
            kind: "cluster",
            name: String::new(),
        }
    }
}

/// Who the console runs as and what it may do.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `token:NAME` (or `anonymous` on an `--insecure` cluster); `None`
    /// until the daemon answered.
    pub principal: Option<String>,
    /// The token's role.
    pub role: String,
    /// The token's scoping labels.
    pub labels: Vec<String>,
    /// The answers of the last refresh.
    pub allowed: HashMap<AccessKey, bool>,
    /// When the console last asked, ms since the Unix epoch.
    pub asked_at_ms: u64,
}

/// The daemon's answer to one refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessReport {
    /// Who the console runs as.
    pub principal: String,
    /// Its role.
    pub role: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Each question with its answer.
    pub answers: Vec<(AccessKey, bool)>,
}

impl Access {
    /// Whether the policies deny `key` (unknown: not denied).
    pub fn denies(&self, key: &AccessKey) -> bool {
        self.allowed.get(key) == Some(&false)
    }

    /// Takes a fresh answer, replacing the last one.
    pub fn take(&mut self, report: AccessReport) {
        self.principal = Some(report.principal);
        self.role = report.role;
        self.labels = report.labels;
        self.allowed = report.answers.into_iter().collect();
    }

    /// "token:ops (operator, team=web)", for the header.
    pub fn identity(&self) -> Option<String> {
        let principal = self.principal.as_ref()?;
        let mut details: Vec<&str> = Vec::new();
        if !self.role.is_empty() {
            details.push(&self.role);
        }
        details.extend(self.labels.iter().map(String::as_str));
        Some(if details.is_empty() {
            principal.clone()
        } else {
            format!("{principal} ({})", details.join(", "))
        })
    }
}

/// Every question worth asking about what `model` shows, at most
/// [`MAX_ACCESS_QUESTIONS`].
pub fn questions(model: &Model) -> Vec<AccessKey> {
    let mut keys = vec![
        AccessKey::cluster("cluster.transfer_leader"),
        AccessKey::vm("vm.create", ""),
    ];
    for id in model.nodes.keys() {
        keys.extend(NODE_ACTIONS.iter().map(|a| AccessKey::node(a, *id)));
    }
    for name in model.vms.keys() {
        keys.extend(VM_ACTIONS.iter().map(|a| AccessKey::vm(a, name)));
    }
    keys.truncate(MAX_ACCESS_QUESTIONS);
    keys
}

impl Action {
    /// The question this action depends on.
    pub fn access_key(&self) -> AccessKey {
        match self {
            Action::CreateVm { .. } => AccessKey::vm("vm.create", ""),
            Action::StartVm(n) => AccessKey::vm("vm.start", n),
            Action::StopVm(n) => AccessKey::vm("vm.stop", n),
            Action::RestartVm(n) => AccessKey::vm("vm.restart", n),
            Action::DeleteVm { name, .. } => AccessKey::vm("vm.delete", name),
            Action::Cordon(id) => AccessKey::node("node.cordon", *id),
            Action::Uncordon(id) => AccessKey::node("node.uncordon", *id),
            Action::Drain(id) => AccessKey::node("node.drain", *id),
            Action::MigrateVm(n) => AccessKey::vm("vm.migrate", n),
            Action::TransferLeader(_) => AccessKey::cluster("cluster.transfer_leader"),
        }
    }
}

/// Whether the footer should grey `binding` out: it acts on the selection
/// (or creates), and the policies deny that.
pub fn greyed(model: &Model, binding: &KeyBinding) -> bool {
    binding.keys.iter().any(|(_, action)| {
        let action = match (action, model.view) {
            (KeyAction::Vm(verb), View::Vms) => model.vm_selected.clone().map(|n| verb.action(n)),
            (KeyAction::Node(verb), View::Nodes) => model.node_selected.map(|id| verb.action(id)),
            (KeyAction::CreateForm, _) => Some(Action::CreateVm {
                name: String::new(),
                vcpus: 0,
                memory_mib: 0,
                image: String::new(),
            }),
            (KeyAction::TransferLeader, _) => Some(Action::TransferLeader(None)),
            _ => None,
        };
        action.is_some_and(|a| model.access.denies(&a.access_key()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_the_console_offers_is_asked_about() {
        use crate::console::keys::{NodeVerb, VmVerb};
        let vm_verbs = [
            VmVerb::Start,
            VmVerb::Stop,
            VmVerb::Restart,
            VmVerb::Delete,
            VmVerb::ForceDelete,
            VmVerb::Migrate,
        ];
        for verb in vm_verbs {
            let action = verb.action("a".into()).access_key().action;
            assert!(VM_ACTIONS.contains(&action), "{verb:?}");
        }
        for verb in [NodeVerb::Cordon, NodeVerb::Uncordon, NodeVerb::Drain] {
            let action = verb.action(1).access_key().action;
            assert!(NODE_ACTIONS.contains(&action), "{verb:?}");
        }
    }

    #[test]
    fn a_denied_answer_denies_and_an_unknown_one_does_not() {
        let mut access = Access::default();
        let stop = AccessKey::vm("vm.stop", "web-1");
        assert!(!access.denies(&stop), "no answer yet: the daemon decides");
        access.take(AccessReport {
            principal: "token:web".into(),
            role: "operator".into(),
            labels: vec!["team=web".into()],
            answers: vec![(stop.clone(), false)],
        });
        assert!(access.denies(&stop));
        assert_eq!(
            access.identity().as_deref(),
            Some("token:web (operator, team=web)")
        );
    }
}
