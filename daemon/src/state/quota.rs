//! Quotas per label: what the VMs carrying one label (`team=web`) may use
//! together. Checked at apply, against the state as it is, so two creates
//! racing on two nodes cannot both slip under the same quota. Pure rules;
//! the fleet calls them from `create_vm` and `set_desired`.

use super::model::{DesiredState, VmRecord, VmSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A quota's limits; 0 means no limit on that resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// vCPUs of the label's VMs meant to run.
    pub vcpus: u32,
    /// Memory of the label's VMs meant to run, MiB.
    pub memory_mib: u64,
    /// The label's VMs, whatever their state.
    pub vms: u32,
}

impl QuotaLimits {
    /// Whether at least one limit is set (a quota of none is refused).
    pub fn any(&self) -> bool {
        self.vcpus > 0 || self.memory_mib > 0 || self.vms > 0
    }
}

/// What a label's VMs use (the same shape as the limits).
pub type QuotaUse = QuotaLimits;

/// Splits `key=value`.
pub fn split_label(label: &str) -> Option<(&str, &str)> {
    label.split_once('=')
}

/// Whether `spec` carries `label` (`key=value`).
pub fn carries(spec: &VmSpec, label: &str) -> bool {
    split_label(label).is_some_and(|(k, v)| spec.labels.get(k).is_some_and(|have| have == v))
}

/// What the VMs carrying `label` use now.
pub fn usage(vms: &BTreeMap<String, Arc<VmRecord>>, label: &str) -> QuotaUse {
    let mut used = QuotaUse::default();
    for vm in vms.values().filter(|vm| carries(&vm.spec, label)) {
        count(&mut used, vm);
    }
    used
}

/// Adds one VM to a label's use: every VM counts, its vCPUs and memory
/// only while it is meant to run.
fn count(used: &mut QuotaUse, vm: &VmRecord) {
    used.vms = used.vms.saturating_add(1);
    if vm.desired == DesiredState::Running {
        used.vcpus = used.vcpus.saturating_add(vm.spec.vcpus);
        used.memory_mib = used.memory_mib.saturating_add(vm.spec.memory_mib);
    }
}

/// What the VMs carrying each quota's label use now, in one pass over the
/// VMs (each VM's labels looked up among the quotas): for listing every
/// quota without a pass per quota.
pub fn usage_all(
    quotas: &BTreeMap<String, QuotaLimits>,
    vms: &BTreeMap<String, Arc<VmRecord>>,
) -> BTreeMap<String, QuotaUse> {
    let mut used: BTreeMap<String, QuotaUse> = BTreeMap::new();
    if quotas.is_empty() {
        return used;
    }
    let mut label = String::new();
    for vm in vms.values() {
        for (k, v) in &vm.spec.labels {
            label.clear();
            label.push_str(k);
            label.push('=');
            label.push_str(v);
            if !quotas.contains_key(&label) {
                continue;
            }
            count(used.entry(label.clone()).or_default(), vm);
        }
    }
    used
}

/// What one change adds to a label's use.
#[derive(Debug, Clone, Copy)]
pub struct Addition {
    /// A new VM record.
    pub vm: bool,
    /// A VM starting to be meant to run (its vCPUs and memory).
    pub runs: bool,
}

/// Refuses a change that would take any quota `spec` falls under past its
/// limit, naming the quota and the numbers.
pub fn check(
    quotas: &BTreeMap<String, QuotaLimits>,
    vms: &BTreeMap<String, Arc<VmRecord>>,
    spec: &VmSpec,
    add: Addition,
) -> Result<(), String> {
    for (label, limits) in quotas.iter().filter(|(l, _)| carries(spec, l)) {
        let used = usage(vms, label);
        if add.vm && limits.vms > 0 && used.vms.saturating_add(1) > limits.vms {
            return Err(format!(
                "quota {label}: vms would be {} of {} (in use {})",
                u64::from(used.vms) + 1,
                limits.vms,
                used.vms
            ));
        }
        if !add.runs {
            continue;
        }
        let vcpus = u64::from(used.vcpus) + u64::from(spec.vcpus);
        if limits.vcpus > 0 && vcpus > u64::from(limits.vcpus) {
            return Err(format!(
                "quota {label}: vcpus would be {vcpus} of {} (in use {}, this VM {})",
                limits.vcpus, used.vcpus, spec.vcpus
            ));
        }
        let memory = used.memory_mib.saturating_add(spec.memory_mib);
        if limits.memory_mib > 0 && memory > limits.memory_mib {
            return Err(format!(
                "quota {label}: memory_mib would be {memory} of {} (in use {}, this VM {})",
                limits.memory_mib, used.memory_mib, spec.memory_mib
            ));
        }
    }
    Ok(())
}
