//! The newest request ids of each client, with a fingerprint of the write
//! each named and the outcome it got, so a retried write is answered
//! instead of applied twice (see `blixard_shared::request_id`). Part of the
//! replicated state: every replica answers a repeat the same way, and a new
//! leader remembers what the old one applied. Bounded: the newest
//! `MAX_REQUEST_IDS_PER_CLIENT` ids of each of the `MAX_REQUEST_CLIENTS`
//! clients heard from most recently; a retry of a forgotten id is applied
//! again. A VM write's outcome keeps the record it returned for the newest
//! `FULL_ANSWERS` ids of a client, so a repeat gets exactly the first
//! answer (the record at the revision the write made) even if the VM has
//! changed or gone since; older ids, and other records, keep only the
//! record's key, and a repeat of those answers with the record as it is
//! now.

use crate::state::command::{Action, CommandOutcome, CommandResult, Rejection, RejectionCode};
use crate::state::fleet::Fleet;
use crate::state::model::VmRecord;
use blixard_shared::limits::{MAX_REQUEST_CLIENTS, MAX_REQUEST_IDS_PER_CLIENT};
use blixard_shared::request_id::client_of;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Recent requests by client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentRequests {
    clients: BTreeMap<String, ClientRequests>,
    /// Revision a client was last heard at -> the client, to find the one
    /// heard from least recently (revisions are unique per apply).
    by_use: BTreeMap<u64, String>,
}

/// One client's newest ids, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ClientRequests {
    last_used: u64,
    recent: VecDeque<Remembered>,
}

/// One remembered write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remembered {
    id: String,
    /// Fingerprint of the write the id named.
    write: u64,
    outcome: Outcome,
}

/// Newest ids of a client whose VM outcome keeps the whole record: a
/// retry comes within seconds of its write, and records are the bulk of
/// what is remembered (at most `MAX_REQUEST_CLIENTS` x this many).
const FULL_ANSWERS: usize = 4;

/// An outcome: which record it returned, or (a VM write among the newest
/// ids) the record itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Done,
    Node(u64),
    Vm(String),
    /// The VM record the write returned, as it was then.
    VmRecord(Box<VmRecord>),
    /// A client token's name.
    Token(String),
    Refused(Rejection),
}

impl Outcome {
    fn of(result: &CommandResult) -> Self {
        match result {
            Ok(CommandOutcome::Done) => Self::Done,
            Ok(CommandOutcome::Node(n)) => Self::Node(n.id),
            Ok(CommandOutcome::Vm(vm)) => Self::VmRecord(Box::new(vm.clone())),
            Ok(CommandOutcome::Token(t)) => Self::Token(t.name.clone()),
            Err(r) => Self::Refused(r.clone()),
        }
    }
}

/// A deterministic fingerprint of a write (FNV-1a over its JSON form, whose
/// maps are ordered), so an id reused for another write is noticed.
pub(super) fn fingerprint(action: &Action) -> u64 {
    let bytes = serde_json::to_vec(action).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl RecentRequests {
    /// What a repeat of `id` for the write fingerprinted `write` is
    /// answered with, if `id` is remembered: its first outcome, with the
    /// records as `fleet` holds them now; a refusal if `id` named another
    /// write.
    pub fn answer(&self, fleet: &Fleet, id: &str, write: u64) -> Option<CommandResult> {
        let seen = self
            .clients
            .get(client_of(id))?
            .recent
            .iter()
            .find(|r| r.id == id)?;
        if seen.write != write {
            return Some(Err(Rejection::new(
                RejectionCode::InvalidArgument,
                format!("x-blixard-request-id: {id:?} was already used for a different write"),
            )));
        }
        Some(match &seen.outcome {
            Outcome::Done => Ok(CommandOutcome::Done),
            Outcome::Refused(r) => Err(r.clone()),
            Outcome::VmRecord(vm) => Ok(CommandOutcome::Vm((**vm).clone())),
            Outcome::Node(n) => fleet
                .nodes
                .get(n)
                .map(|node| CommandOutcome::Node(node.clone()))
                .ok_or_else(|| {
                    Rejection::new(
                        RejectionCode::NotFound,
                        format!("node {n} was removed since"),
                    )
                }),
            Outcome::Vm(name) => fleet
                .vms
                .get(name)
                .map(|vm| CommandOutcome::Vm((**vm).clone()))
                .ok_or_else(|| {
                    Rejection::new(
                        RejectionCode::NotFound,
                        format!("vm {name:?} was deleted since"),
                    )
                }),
            Outcome::Token(name) => fleet
                .tokens
                .values()
                .find(|t| t.name == *name)
                .map(|t| CommandOutcome::Token(t.info()))
                .ok_or_else(|| {
                    Rejection::new(
                        RejectionCode::NotFound,
                        format!("token {name:?} was revoked since"),
                    )
                }),
        })
    }

    /// Remembers that the write fingerprinted `write` with `id` got `result`
    /// at `revision`.
    pub fn remember(&mut self, id: &str, write: u64, revision: u64, result: &CommandResult) {
        let client = client_of(id);
        if !self.clients.contains_key(client) && self.clients.len() >= MAX_REQUEST_CLIENTS {
            if let Some((_, stale)) = self.by_use.pop_first() {
                self.clients.remove(&stale);
            }
        }
        let entry = self.clients.entry(client.to_string()).or_default();
        self.by_use.remove(&entry.last_used);
        entry.last_used = revision;
        self.by_use.insert(revision, client.to_string());
        while entry.recent.len() >= MAX_REQUEST_IDS_PER_CLIENT {
            entry.recent.pop_front();
        }
        entry.recent.push_back(Remembered {
            id: id.to_string(),
            write,
            outcome: Outcome::of(result),
        });
        // Past the newest few, a VM outcome keeps only the record's key.
        if let Some(older) = entry.recent.len().checked_sub(FULL_ANSWERS + 1) {
            if let Some(r) = entry.recent.get_mut(older) {
                if let Outcome::VmRecord(vm) = &r.outcome {
                    r.outcome = Outcome::Vm(vm.name.clone());
                }
            }
        }
    }

    /// How many clients are remembered, and the most ids of one.
    pub fn sizes(&self) -> (usize, usize) {
        let ids = self
            .clients
            .values()
            .map(|c| c.recent.len())
            .max()
            .unwrap_or(0);
        (self.clients.len(), ids)
    }

    /// Whether the index of last use matches the clients.
    pub fn consistent(&self) -> bool {
        self.by_use.len() == self.clients.len()
            && self
                .by_use
                .iter()
                .all(|(rev, c)| self.clients.get(c).is_some_and(|e| e.last_used == *rev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_ids_of_the_most_recent_clients() {
        let fleet = Fleet::default();
        let mut r = RecentRequests::default();
        let mut revision = 0;
        for n in 0..MAX_REQUEST_IDS_PER_CLIENT + 1 {
            revision += 1;
            r.remember(&format!("a:{n}"), 7, revision, &Ok(CommandOutcome::Done));
        }
        assert!(
            r.answer(&fleet, "a:0", 7).is_none(),
            "the oldest id of a client goes first"
        );
        let newest = format!("a:{MAX_REQUEST_IDS_PER_CLIENT}");
        assert_eq!(r.answer(&fleet, &newest, 7), Some(Ok(CommandOutcome::Done)));
        assert!(
            matches!(r.answer(&fleet, &newest, 8), Some(Err(e)) if e.code == RejectionCode::InvalidArgument),
            "the same id for another write is refused"
        );
        for c in 0..MAX_REQUEST_CLIENTS {
            revision += 1;
            r.remember(&format!("c{c}:1"), 7, revision, &Ok(CommandOutcome::Done));
        }
        assert!(
            r.answer(&fleet, "a:5", 7).is_none(),
            "the least recently heard client goes"
        );
        assert_eq!(r.sizes().0, MAX_REQUEST_CLIENTS);
        assert!(r.consistent());
    }
}
