//! Why a VM is where it is, or why it waits: the refusals of a decision
//! counted by kind, in one line an operator reads at a glance ("no node
//! fits: 2 lack memory (need 2048 MiB, most free 1024), 1 cordoned"). Each
//! node's own verdict reads as `Refusal::describe`.

use super::{Decision, Refusal};
use crate::state::model::VmRecord;
use std::collections::BTreeMap;

/// The refusals of one decision, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Nodes that fit.
    pub fits: u32,
    need_memory: u64,
    need_vcpus: u32,
    memory: u32,
    most_free_memory: u64,
    vcpus: u32,
    most_free_vcpus: u32,
    constraint_texts: Vec<String>,
    constraints: BTreeMap<usize, u32>,
    group_name: String,
    group_max: u32,
    group_full: u32,
    backend: u32,
    cordoned: u32,
    draining: u32,
    suspect: u32,
    down: u32,
    pinned_elsewhere: u32,
    moving_off: u32,
    /// A rule of the VM's own that cannot be read (only a bug gets here).
    pub broken: Option<String>,
}

impl Tally {
    /// An empty tally for `vm`.
    pub fn new(vm: &VmRecord) -> Self {
        Self {
            need_memory: vm.spec.memory_mib,
            need_vcpus: vm.spec.vcpus,
            constraint_texts: vm.spec.constraints.clone(),
            group_name: vm.spec.group.clone(),
            group_max: vm.spec.max_per_node,
            ..Self::default()
        }
    }

    /// Counts one node's refusal.
    pub fn count(&mut self, refusal: &Refusal) {
        match refusal {
            Refusal::NotPinned | Refusal::NotTarget(_) => self.pinned_elsewhere += 1,
            Refusal::MovingOff => self.moving_off += 1,
            Refusal::Down => self.down += 1,
            Refusal::Suspect => self.suspect += 1,
            Refusal::Cordoned => self.cordoned += 1,
            Refusal::Draining => self.draining += 1,
            Refusal::Backend => self.backend += 1,
            Refusal::Constraint(i) => *self.constraints.entry(*i).or_default() += 1,
            Refusal::GroupFull => self.group_full += 1,
            Refusal::Memory { free, .. } => {
                self.memory += 1;
                self.most_free_memory = self.most_free_memory.max(*free);
            }
            Refusal::Vcpus { free, .. } => {
                self.vcpus += 1;
                self.most_free_vcpus = self.most_free_vcpus.max(*free);
            }
        }
    }

    /// The refusals in one line, most telling first: "2 lack memory (need
    /// 2048 MiB, most free 1024), 1 cordoned".
    pub fn refusals(&self) -> String {
        let mut parts = Vec::new();
        if let Some(broken) = &self.broken {
            parts.push(broken.clone());
        }
        if self.memory > 0 {
            parts.push(format!(
                "{} lack memory (need {} MiB, most free {})",
                self.memory, self.need_memory, self.most_free_memory
            ));
        }
        if self.vcpus > 0 {
            parts.push(format!(
                "{} lack vCPUs (need {}, most free {})",
                self.vcpus, self.need_vcpus, self.most_free_vcpus
            ));
        }
        for (i, n) in &self.constraints {
            let text = self.constraint_texts.get(*i).map_or("?", String::as_str);
            parts.push(format!("{n} do not match {text}"));
        }
        if self.group_full > 0 {
            parts.push(format!(
                "{} would exceed group {} max {} per node",
                self.group_full, self.group_name, self.group_max
            ));
        }
        for (n, what) in [
            (self.backend, "cannot run it on their backend"),
            (self.cordoned, "cordoned"),
            (self.draining, "draining"),
            (self.suspect, "suspect"),
            (self.down, "down"),
            (self.pinned_elsewhere, "not the pinned or target node"),
            (self.moving_off, "the node it is moving off"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        parts.join(", ")
    }
}

impl Decision {
    /// The decision in one line: where it goes, or why it waits.
    pub fn summary(&self) -> String {
        match self.node {
            Some(node) => format!(
                "fits on {} node(s); {} picks node {node}",
                self.tally.fits,
                self.strategy.word()
            ),
            None => {
                let refusals = self.tally.refusals();
                if refusals.is_empty() {
                    "no node has registered yet".into()
                } else {
                    format!("no node fits: {refusals}")
                }
            }
        }
    }
}
