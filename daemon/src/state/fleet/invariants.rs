//! What must hold of the fleet after every command. `Fleet::apply` checks
//! it under `debug_assert!` (TigerBeetle's paired assertions: apply changes
//! the state, this reads it back), so every test that applies a command,
//! from the property tests to the multi-node runs, checks it too.

use super::Fleet;
use blixard_shared::limits::{
    EVENT_RING_LEN, MAX_JOIN_TOKENS, MAX_REQUEST_CLIENTS, MAX_REQUEST_IDS_PER_CLIENT, MAX_TOKENS,
    MAX_VMS,
};
use blixard_shared::validate;
use std::collections::BTreeSet;

/// An invariant of the fleet that does not hold: a bug in apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fleet invariant broken: {0}")]
pub struct InvariantViolation(pub String);

impl Fleet {
    /// Checks every invariant of the state; the first broken one is the error.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let broken = |what: String| Err(InvariantViolation(what));
        if self.events.len() > EVENT_RING_LEN {
            return broken(format!(
                "{} events in a ring of {EVENT_RING_LEN}",
                self.events.len()
            ));
        }
        let mut revisions = self.events.iter().map(|e| e.revision);
        if let Some(first) = revisions.next() {
            let mut previous = first;
            for revision in revisions {
                if revision <= previous {
                    return broken(format!("event revision {revision} follows {previous}"));
                }
                previous = revision;
            }
            if previous > self.revision {
                return broken(format!(
                    "event at {previous} past the fleet's revision {}",
                    self.revision
                ));
            }
        }
        if self.departed.len() > MAX_VMS {
            return broken(format!(
                "{} departed names, more than {MAX_VMS}",
                self.departed.len()
            ));
        }
        let (clients, ids) = self.requests.sizes();
        if clients > MAX_REQUEST_CLIENTS
            || ids > MAX_REQUEST_IDS_PER_CLIENT
            || !self.requests.consistent()
        {
            return broken(format!(
                "request memory out of bounds or inconsistent ({clients} clients, {ids} ids)"
            ));
        }
        if self.nodes.contains_key(&0) {
            return broken("a node record has id 0".into());
        }
        for vm in self.vms.values() {
            if validate::vm_name(&vm.name).is_err() {
                return broken(format!("vm name {:?} is not a valid name", vm.name));
            }
            if vm.spec.vcpus == 0 || vm.spec.memory_mib == 0 {
                return broken(format!("vm {:?} asks for no vCPUs or no memory", vm.name));
            }
            if vm.node_id != 0 && !self.nodes.contains_key(&vm.node_id) {
                return broken(format!(
                    "vm {:?} is on node {}, which has no record",
                    vm.name, vm.node_id
                ));
            }
            if vm.node_id != 0 && vm.epoch == 0 {
                return broken(format!("vm {:?} is placed without an epoch", vm.name));
            }
        }
        let weight: u64 = self
            .vms
            .values()
            .map(|vm| super::vms::spec_weight(&vm.spec))
            .sum();
        if weight != self.spec_bytes {
            return broken(format!(
                "specs weigh {weight} bytes but the fleet counts {}",
                self.spec_bytes
            ));
        }
        if self.index != super::FleetIndex::build(&self.vms, &self.departed) {
            return broken("the derived indexes differ from a rebuild from the records".into());
        }
        if self.audit.records.len() > self.audit.capacity as usize
            || self.quotas.len() > blixard_shared::limits::MAX_QUOTAS
        {
            return broken("the audit ring or the quotas are past their bounds".into());
        }
        let mut seqs = self.audit.records.iter().map(|r| r.seq);
        if let Some(first) = seqs.next() {
            let last = seqs.try_fold(first, |previous, seq| (seq == previous + 1).then_some(seq));
            if last != Some(self.audit.last_seq) {
                return broken("audit sequence numbers are not gap-free up to last_seq".into());
            }
        }
        self.check_tokens()
    }

    /// Tokens: within their limits, keyed by well-formed hashes, client
    /// tokens under unique valid names, join tokens spent by real node ids.
    /// (Messages name tokens, never their hashes.)
    fn check_tokens(&self) -> Result<(), InvariantViolation> {
        let broken = |what: String| Err(InvariantViolation(what));
        if self.tokens.len() > MAX_TOKENS || self.join_tokens.len() > MAX_JOIN_TOKENS {
            return broken(format!(
                "{} tokens and {} join tokens, more than {MAX_TOKENS} and {MAX_JOIN_TOKENS}",
                self.tokens.len(),
                self.join_tokens.len()
            ));
        }
        let mut names = BTreeSet::new();
        for (hash, token) in &self.tokens {
            if validate::token_hash("hash", hash).is_err() {
                return broken(format!(
                    "token {:?} is stored under a malformed hash",
                    token.name
                ));
            }
            if validate::dns_label("name", &token.name).is_err() {
                return broken(format!("token name {:?} is not a valid name", token.name));
            }
            if !names.insert(token.name.as_str()) {
                return broken(format!("two tokens are named {:?}", token.name));
            }
        }
        for (hash, token) in &self.join_tokens {
            if validate::token_hash("hash", hash).is_err() || token.used_by == Some(0) {
                return broken("a join token has a malformed hash or was used by node 0".into());
            }
        }
        Ok(())
    }
}
