//! Every field of every command, checked before apply looks at the state.
//! The API validates requests, but a command can reach the log by other
//! routes (a forged forward, a bug in a proposer): apply holds each one to
//! the same rules, the shared ones of `blixard_shared::validate`, so the
//! state only ever holds what the API would have accepted. What depends on
//! the state (existence, limits, epochs) is checked by each action's own
//! method; what depends on the command's time (token expiry) too.

use crate::state::audit::AuditBatch;
use crate::state::command::{Action, NodeRegistration, Rejection, RejectionCode};
use crate::state::model::VmReport;
use blixard_shared::request_id::REQUEST_ID_KEY;
use blixard_shared::validate::{self as rules, FieldError};

/// Checks every field of `action` (and of the write a `Retryable` wraps);
/// a bad one is refused `InvalidArgument`, naming the field.
pub fn validate_action(action: &Action) -> Result<(), Rejection> {
    check(action).map_err(|e| Rejection::new(RejectionCode::InvalidArgument, e.to_string()))
}

/// The rules of each action, by its fields.
fn check(action: &Action) -> Result<(), FieldError> {
    match action {
        Action::RegisterNode(reg) => registration(reg),
        Action::RemoveNode { id }
        | Action::SetSchedulability { id, .. }
        | Action::SetNodeHealth { id, .. } => rules::node_id("id", *id),
        Action::RenewLease { id, lease_ms } => {
            rules::node_id("id", *id)?;
            rules::lease_ms("lease_ms", *lease_ms)
        }
        Action::CreateVm { name, spec, .. } => {
            rules::vm_name(name)?;
            rules::spec_fields("spec", &spec.fields())
        }
        Action::SetDesired { name, .. }
        | Action::RestartVm { name }
        | Action::DeleteVm { name, .. } => rules::vm_name(name),
        Action::PlaceVm { name, node_id, .. }
        | Action::RescheduleVm { name, node_id, .. }
        | Action::ForgetDeparted { name, node_id, .. } => {
            rules::vm_name(name)?;
            rules::node_id("node_id", *node_id)
        }
        Action::ReportVmStatus {
            node_id,
            reports,
            gone,
        } => status_report(*node_id, reports, gone),
        Action::PreemptVms {
            for_vm,
            node_id,
            victims,
        } => {
            rules::vm_name(for_vm)?;
            rules::node_id("node_id", *node_id)?;
            if victims.is_empty() || victims.len() > blixard_shared::limits::MAX_PREEMPT_VICTIMS {
                return Err(FieldError::new(
                    "victims",
                    format!(
                        "between 1 and {} victims",
                        blixard_shared::limits::MAX_PREEMPT_VICTIMS
                    ),
                ));
            }
            for (i, (name, _)) in victims.iter().enumerate() {
                rules::dns_label(&format!("victims[{i}]"), name)?;
            }
            Ok(())
        }
        Action::MoveVm { name, cause, .. } => {
            rules::vm_name(name)?;
            if !matches!(cause.as_str(), "drain" | "migrate") {
                return Err(FieldError::new("cause", "must be drain or migrate"));
            }
            Ok(())
        }
        Action::DrainNode { id, parallel, .. } => {
            rules::node_id("id", *id)?;
            rules::drain_parallel("parallel", *parallel)
        }
        Action::FinishDrain {
            id,
            outcome,
            failed,
        } => {
            rules::node_id("id", *id)?;
            if !matches!(outcome.as_str(), "complete" | "deadline passed" | "stuck") {
                return Err(FieldError::new(
                    "outcome",
                    "must be complete, deadline passed or stuck",
                ));
            }
            if failed.len() > crate::state::model::MAX_DRAIN_FAILURES {
                return Err(FieldError::new("failed", "too many failures listed"));
            }
            for (i, (name, reason)) in failed.iter().enumerate() {
                rules::dns_label(&format!("failed[{i}]"), name)?;
                rules::report_reason(&format!("failed[{i}].reason"), reason)?;
            }
            Ok(())
        }
        Action::CreateToken {
            name, hash, labels, ..
        } => {
            rules::dns_label("name", name)?;
            rules::label_pairs(
                "labels",
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
            rules::token_hash("hash", hash)
        }
        Action::SetPolicies { policies, schema } => crate::policy::compile(policies, schema)
            .map(drop)
            .map_err(|e| FieldError::new("policies", e.to_string())),
        Action::RevokeToken { name } => rules::dns_label("name", name),
        // A join token's node id 0 is refused by its apply (with the
        // token judged first), not here.
        Action::CreateJoinToken { hash, .. } | Action::RedeemJoinToken { hash, .. } => {
            rules::token_hash("hash", hash)
        }
        Action::RecordAudit(batch) => audit_batch(batch),
        Action::SetQuota { label, limits } => {
            rules::quota_label("label", label)?;
            if !limits.any() {
                return Err(FieldError::new(
                    "limits",
                    "set at least one of vcpus, memory_mib and vms",
                ));
            }
            Ok(())
        }
        Action::DeleteQuota { label } => rules::quota_label("label", label),
        Action::Retryable { request_id, action } => retryable(request_id, action),
    }
}

/// A node's audit batch: bounded count, bounded fields, a ring size in range.
fn audit_batch(batch: &AuditBatch) -> Result<(), FieldError> {
    use blixard_shared::limits::{AUDIT_RING_LEN_RANGE, MAX_AUDIT_BATCH, MAX_AUDIT_FIELD_LEN};
    rules::node_id("node_id", batch.node_id)?;
    if batch.entries.len() > MAX_AUDIT_BATCH {
        return Err(FieldError::new(
            "entries",
            format!(
                "at most {MAX_AUDIT_BATCH} records a batch, got {}",
                batch.entries.len()
            ),
        ));
    }
    if let Some(capacity) = batch.capacity {
        if !AUDIT_RING_LEN_RANGE.contains(&capacity) {
            return Err(FieldError::new(
                "capacity",
                format!(
                    "must be between {} and {}, got {capacity}",
                    AUDIT_RING_LEN_RANGE.start(),
                    AUDIT_RING_LEN_RANGE.end()
                ),
            ));
        }
    }
    for (i, e) in batch.entries.iter().enumerate() {
        let fields = [
            ("principal", &e.principal),
            ("peer", &e.peer),
            ("method", &e.method),
            ("action", &e.action),
            ("target", &e.target),
            ("code", &e.code),
        ];
        for (name, value) in fields {
            if value.len() > MAX_AUDIT_FIELD_LEN {
                return Err(FieldError::new(
                    format!("entries[{i}].{name}"),
                    format!("at most {MAX_AUDIT_FIELD_LEN} bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// What a node says about itself: the rules its daemon's config is held to.
fn registration(reg: &NodeRegistration) -> Result<(), FieldError> {
    rules::node_id("id", reg.id)?;
    rules::node_address("address", &reg.address)?;
    let labels = reg.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    rules::label_pairs("labels", labels)?;
    rules::topology("zone", &reg.zone)?;
    rules::topology("rack", &reg.rack)?;
    rules::backend("backend", &reg.backend)?;
    if reg.version.len() > 64 || reg.version.chars().any(char::is_control) {
        return Err(FieldError::new(
            "version",
            "at most 64 bytes, without control characters",
        ));
    }
    Ok(())
}

/// An agent's status report: bounded counts, VM names, bounded reasons.
fn status_report(node_id: u64, reports: &[VmReport], gone: &[String]) -> Result<(), FieldError> {
    rules::node_id("node_id", node_id)?;
    rules::report_counts(reports.len(), gone.len())?;
    for (i, report) in reports.iter().enumerate() {
        rules::dns_label(&format!("reports[{i}].name"), &report.name)?;
        rules::report_reason(&format!("reports[{i}].reason"), &report.reason)?;
    }
    for (i, name) in gone.iter().enumerate() {
        rules::dns_label(&format!("gone[{i}]"), name)?;
    }
    Ok(())
}

/// A request id and the write it carries, which is never itself retryable.
fn retryable(request_id: &str, action: &Action) -> Result<(), FieldError> {
    rules::request_id(REQUEST_ID_KEY, request_id)?;
    if matches!(action, Action::Retryable { .. }) {
        return Err(FieldError::new(
            "action",
            "a retryable write cannot wrap another",
        ));
    }
    check(action)
}
