//! Raft for Blixard: openraft's type configuration, the redb-backed log and
//! state machine, the tonic transport between daemons and the service that
//! receives it.
//!
//! openraft is pinned to `=0.10.0-alpha.37` for leadership transfer,
//! pre-vote and follower read support; see `docs/architecture.md`.

pub mod log_store;
pub mod network;
pub mod runtime;
pub mod service;
pub mod snapshot_inbox;
pub mod state_machine;

use crate::state::{Command, CommandResult};
use serde::{Deserialize, Serialize};

/// What applying one log entry produced: the command's result, or `None`
/// for entries without a command (leader blanks, membership changes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse(pub Option<CommandResult>);

openraft::declare_raft_types!(
    /// Blixard's Raft types: node ids are `u64`, nodes are reached at one
    /// gRPC address, log entries carry [`Command`]s.
    pub TypeConfig:
        D = Command,
        R = ApplyResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = runtime::BlixardRuntime,
);

/// The Raft handle every part of the daemon shares.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;
/// A log id.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its bytes.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.action)
    }
}

/// Turns any error into the `io::Error` openraft's storage traits expect.
pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}
