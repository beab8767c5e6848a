//! Applying the quota commands (the rules a quota holds VMs to are in
//! `state::quota`, called from `vms.rs`).

use super::Fleet;
use crate::state::command::*;
use crate::state::quota::QuotaLimits;
use blixard_shared::limits::MAX_QUOTAS;

impl Fleet {
    /// Sets the quota of `label` (its fields checked in `validate.rs`).
    pub(super) fn set_quota(&mut self, label: &str, limits: QuotaLimits) -> CommandResult {
        if !self.quotas.contains_key(label) && self.quotas.len() >= MAX_QUOTAS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("the cluster holds the maximum of {MAX_QUOTAS} quotas; delete one first"),
            ));
        }
        self.quotas.insert(label.to_string(), limits);
        Ok(CommandOutcome::Done)
    }

    /// Removes the quota of `label`.
    pub(super) fn delete_quota(&mut self, label: &str) -> CommandResult {
        match self.quotas.remove(label) {
            Some(_) => Ok(CommandOutcome::Done),
            None => Err(Rejection::new(
                RejectionCode::NotFound,
                format!("no quota for label {label:?}"),
            )),
        }
    }
}
