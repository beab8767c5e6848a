//! Placement explanations for the API: the `placement` line every VM
//! carries (and the counts a waiting VM's `reason` gains), and the whole
//! decision `ExplainVm` returns. Any node answers, running the placement
//! engine over its applied state; the leader's lease judgements are not
//! known there, so a node whose lease ran out shows as it last reported.

use crate::state::placement::{self, Input, Policy, Verdict};
use crate::state::{model, Fleet};
use blixard_shared::proto::v1 as pb;
use std::collections::BTreeSet;

/// What a VM's `placement` says, and whether it waits for a node.
pub fn placement_line(fleet: &Fleet, vm: &model::VmRecord, policy: Policy) -> (String, bool) {
    if vm.node_id != 0 {
        return (
            format!("placed on node {} (epoch {})", vm.node_id, vm.epoch),
            false,
        );
    }
    if vm.desired == model::DesiredState::Stopped {
        return ("not placed: desired state is stopped".into(), false);
    }
    if let Some(old) = fleet.departed.get(&vm.name) {
        return (
            format!("waiting for node {old} to confirm its old instance stopped"),
            true,
        );
    }
    let lost = BTreeSet::new();
    let decision = placement::decide(&Input::of(fleet, &lost, policy), vm, false);
    let line = match decision.node {
        Some(_) => format!("not yet placed: {}", decision.summary()),
        None => decision.summary(),
    };
    (line, true)
}

/// Wire form of a VM with its placement line; a waiting VM's reason
/// carries the explanation too ("waiting for placement: no node fits: 2
/// lack memory ...").
pub fn vm_with_placement(fleet: &Fleet, vm: &model::VmRecord, policy: Policy) -> pb::Vm {
    let mut out = super::convert::vm_to_pb(vm);
    let (line, waiting) = placement_line(fleet, vm, policy);
    if waiting && !out.reason.contains(&line) {
        out.reason = format!("{}: {line}", out.reason);
    }
    out.placement = line;
    out
}

/// The whole decision for `vm`, every node's verdict included.
pub fn explain(fleet: &Fleet, vm: &model::VmRecord, policy: Policy) -> pb::ExplainVmResponse {
    let lost = BTreeSet::new();
    // A placed VM is judged as if it were placed anew (its own share of its
    // node counted out), so the answer says whether it would land there
    // again and what else would take it.
    let probe = model::VmRecord {
        node_id: 0,
        ..vm.clone()
    };
    let input = Input {
        load: placement::Load::of(fleet).without(vm),
        ..Input::of(fleet, &lost, policy)
    };
    let decision = placement::decide(&input, &probe, true);
    let (summary, _) = placement_line(fleet, vm, policy);
    let summary = if vm.node_id != 0 {
        format!("{summary}; {}", decision.summary())
    } else {
        summary
    };
    pb::ExplainVmResponse {
        summary,
        strategy: decision.strategy.word().to_string(),
        nodes: decision
            .verdicts
            .iter()
            .map(|(id, verdict)| match verdict {
                Verdict::Fits(score) => pb::NodeVerdict {
                    node_id: *id,
                    fits: true,
                    score: *score,
                    reason: String::new(),
                },
                Verdict::Refused(r) => pb::NodeVerdict {
                    node_id: *id,
                    fits: false,
                    score: 0,
                    reason: r.describe(vm),
                },
            })
            .collect(),
        chosen_node_id: decision.node.unwrap_or(0),
        node_id: vm.node_id,
        revision: fleet.revision,
    }
}
