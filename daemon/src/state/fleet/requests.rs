//! The newest request ids of each client and the outcome each got, so a
//! retried write is answered with its first outcome instead of being
//! applied twice (see `blixard_shared::request_id`). Part of the replicated
//! state: every replica answers a repeat the same way, and a new leader
//! remembers what the old one applied. Bounded: the newest
//! `MAX_REQUEST_IDS_PER_CLIENT` ids of each of the `MAX_REQUEST_CLIENTS`
//! clients heard from most recently; a retry of a forgotten id is applied
//! again.

use crate::state::command::CommandResult;
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
    recent: VecDeque<(String, CommandResult)>,
}

impl RecentRequests {
    /// The outcome the write with `id` got, if it is remembered.
    pub fn outcome(&self, id: &str) -> Option<&CommandResult> {
        self.clients
            .get(client_of(id))?
            .recent
            .iter()
            .find(|(seen, _)| seen == id)
            .map(|(_, result)| result)
    }

    /// Remembers that the write with `id` got `result` at `revision`.
    pub fn remember(&mut self, id: &str, revision: u64, result: CommandResult) {
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
        entry.recent.push_back((id.to_string(), result));
    }

    /// How many clients and ids are remembered (for the invariant check).
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
    use crate::state::command::CommandOutcome;

    #[test]
    fn remembers_the_newest_ids_of_the_most_recent_clients() {
        let mut r = RecentRequests::default();
        let mut revision = 0;
        for n in 0..MAX_REQUEST_IDS_PER_CLIENT + 1 {
            revision += 1;
            r.remember(&format!("a:{n}"), revision, Ok(CommandOutcome::Done));
        }
        assert!(
            r.outcome("a:0").is_none(),
            "the oldest id of a client goes first"
        );
        assert!(r
            .outcome(&format!("a:{MAX_REQUEST_IDS_PER_CLIENT}"))
            .is_some());
        for c in 0..MAX_REQUEST_CLIENTS {
            revision += 1;
            r.remember(&format!("c{c}:1"), revision, Ok(CommandOutcome::Done));
        }
        assert!(
            r.outcome("a:5").is_none(),
            "the least recently heard client goes"
        );
        assert_eq!(r.sizes().0, MAX_REQUEST_CLIENTS);
        assert!(r.consistent());
    }
}
