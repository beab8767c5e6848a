//! Applying the commands that change tokens: client tokens (created and
//! revoked by name) and one-time join tokens (created, then redeemed by the
//! node that joins with one). Only SHA-256 hashes of secrets are stored,
//! expiry is judged against the command's time (apply reads no clock), and
//! no event is recorded: tokens stay out of the event ring.

use super::{Fleet, Stamp};
use crate::state::command::*;
use crate::state::model::*;
use blixard_shared::auth::Role;
use blixard_shared::limits::{MAX_JOIN_TOKENS, MAX_TOKENS};
use std::collections::BTreeMap;

/// The one refusal of a join token that cannot be redeemed, whatever the
/// reason: a guesser learns nothing from it.
pub const JOIN_TOKEN_INVALID: &str = "join token is not valid: unknown, used or expired";

impl Fleet {
    /// The client token whose secret hashes to `hash`, if it is accepted at
    /// `now_ms` (`None` for an unknown or expired one).
    pub fn token_by_hash(&self, hash: &str, now_ms: u64) -> Option<&TokenRecord> {
        self.tokens.get(hash).filter(|t| t.live_at(now_ms))
    }

    /// Every client token, expired ones too (until revoked), sorted by name.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        let mut tokens: Vec<&TokenRecord> = self.tokens.values().collect();
        tokens.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        tokens.into_iter()
    }

    /// Creates a client token under the hash of its secret.
    pub(super) fn create_token(
        &mut self,
        at: Stamp,
        name: &str,
        role: Role,
        hash: &str,
        expires_ms: Option<u64>,
        labels: &BTreeMap<String, String>,
    ) -> CommandResult {
        if expires_ms.is_some_and(|t| t <= at.time_ms) {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                "expires_ms: must be later than now",
            ));
        }
        if self.tokens.values().any(|t| t.name == name) {
            return Err(Rejection::new(
                RejectionCode::AlreadyExists,
                format!("token {name:?} already exists"),
            ));
        }
        if self.tokens.contains_key(hash) {
            return Err(Rejection::new(
                RejectionCode::AlreadyExists,
                "a token with the same secret already exists",
            ));
        }
        if self.tokens.len() >= MAX_TOKENS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("the cluster holds the maximum of {MAX_TOKENS} tokens; revoke unused ones"),
            ));
        }
        let record = TokenRecord {
            name: name.to_string(),
            role,
            created_ms: at.time_ms,
            expires_ms,
            labels: labels.clone(),
        };
        let info = record.info();
        self.tokens.insert(hash.to_string(), record);
        Ok(CommandOutcome::Token(info))
    }

    /// Revokes the client token named `name`.
    pub(super) fn revoke_token(&mut self, name: &str) -> CommandResult {
        let hash = self
            .tokens
            .iter()
            .find(|(_, t)| t.name == name)
            .map(|(hash, _)| hash.clone())
            .ok_or_else(|| {
                Rejection::new(RejectionCode::NotFound, format!("token {name:?} not found"))
            })?;
        self.tokens.remove(&hash);
        Ok(CommandOutcome::Done)
    }

    /// Creates a join token, dropping the spent and expired ones first so
    /// only redeemable ones count against the limit (and only on success:
    /// a refused command changes nothing).
    pub(super) fn create_join_token(
        &mut self,
        at: Stamp,
        hash: &str,
        expires_ms: u64,
    ) -> CommandResult {
        if expires_ms <= at.time_ms {
            return Err(Rejection::new(
                RejectionCode::InvalidArgument,
                "expires_ms: must be later than now",
            ));
        }
        let live = |t: &JoinTokenRecord| t.redeemable_at(at.time_ms);
        if self.join_tokens.get(hash).is_some_and(live) {
            return Err(Rejection::new(
                RejectionCode::AlreadyExists,
                "a join token with the same secret already exists",
            ));
        }
        if self.join_tokens.values().filter(|t| live(t)).count() >= MAX_JOIN_TOKENS {
            return Err(Rejection::new(
                RejectionCode::ResourceExhausted,
                format!("{MAX_JOIN_TOKENS} join tokens are waiting to be used; use or let some expire first"),
            ));
        }
        self.join_tokens.retain(|_, t| live(t));
        self.join_tokens.insert(
            hash.to_string(),
            JoinTokenRecord {
                created_ms: at.time_ms,
                expires_ms,
                used_by: None,
            },
        );
        Ok(CommandOutcome::Done)
    }

    /// Spends a join token for node `node_id`, which must not have a record
    /// yet. The token is judged first, so without a valid one nothing about
    /// the cluster's nodes is told. Spending it again for the same node
    /// (before its expiry) is answered as the first time: a joining node
    /// whose answer was lost retries, and gets its certificate.
    pub(super) fn redeem_join_token(
        &mut self,
        at: Stamp,
        hash: &str,
        node_id: u64,
    ) -> CommandResult {
        let redeemable = self.join_tokens.get(hash).is_some_and(|t| {
            t.redeemable_at(at.time_ms) || (t.used_by == Some(node_id) && at.time_ms < t.expires_ms)
        });
        if !redeemable {
            return Err(Rejection::new(
                RejectionCode::Unauthenticated,
                JOIN_TOKEN_INVALID,
            ));
        }
        if node_id == 0 {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                "node_id: must be a positive node id",
            ));
        }
        if self.nodes.contains_key(&node_id) {
            return Err(Rejection::new(
                RejectionCode::FailedPrecondition,
                format!("node {node_id} is already a member of the cluster"),
            ));
        }
        if let Some(token) = self.join_tokens.get_mut(hash) {
            token.used_by = Some(node_id);
        }
        Ok(CommandOutcome::Done)
    }
}
