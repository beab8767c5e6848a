//! The key every per-identity limit counts under (stream caps, request
//! rates): who a [`Caller`] is for the purpose of sharing a quota. A client
//! token is its name (never its secret), a member node its id, and every
//! anonymous caller (open methods; every caller of an `--insecure` node)
//! one shared key: anonymous callers cannot be told apart, so they share.

use super::Caller;
use std::fmt;

/// Whose quota a call counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A client token, by name.
    Token(String),
    /// A member node, by id.
    Node(u64),
    /// All anonymous callers together.
    Anonymous,
}

impl Identity {
    /// The identity `caller` counts as.
    pub fn of(caller: &Caller) -> Self {
        match caller {
            Caller::Token { name, .. } => Identity::Token(name.clone()),
            Caller::Node(id) => Identity::Node(*id),
            Caller::Anonymous => Identity::Anonymous,
        }
    }

    /// Whether this is a member node: per-identity caps and rates do not
    /// apply to members (see `blixard_shared::limits`), only per-node totals.
    pub fn is_node(&self) -> bool {
        matches!(self, Identity::Node(_))
    }
}

/// Whether `path` is a method of the daemon-to-daemon `RaftService`
/// (votes, appends, snapshots, forwarded writes, read indexes). Per-identity
/// rates and the per-connection cap leave these alone as they leave members
/// alone: with TLS only members reach them (the gate sees to it), and under
/// `--insecure`, where every caller is anonymous, limiting them would put
/// the cluster's heartbeats in the clients' shared bucket.
pub fn is_peer_method(path: &str) -> bool {
    use blixard_shared::proto::v1::raft_service_server::SERVICE_NAME;
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(SERVICE_NAME))
        .is_some_and(|rest| rest.starts_with('/'))
}

impl fmt::Display for Identity {
    /// How refusals name the identity (a token's name, never its secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Token(name) => write!(f, "token {name:?}"),
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::Anonymous => write!(f, "anonymous callers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::auth::Role;

    #[test]
    fn tokens_share_by_name_and_anonymous_callers_share_one_key() {
        let a = Caller::Token {
            name: "ci".into(),
            role: Role::Viewer,
            labels: Default::default(),
        };
        let b = Caller::Token {
            name: "ci".into(),
            role: Role::Admin,
            labels: Default::default(),
        };
        assert_eq!(Identity::of(&a), Identity::of(&b));
        assert_eq!(Identity::of(&a).to_string(), "token \"ci\"");
        assert_eq!(Identity::of(&Caller::Anonymous), Identity::Anonymous);
        assert!(Identity::of(&Caller::Node(3)).is_node());
        assert!(!Identity::of(&a).is_node());
    }

    #[test]
    fn peer_methods_are_the_raft_service_only() {
        assert!(is_peer_method("/blixard.v1.RaftService/AppendEntries"));
        assert!(is_peer_method("/blixard.v1.RaftService/Forward"));
        assert!(!is_peer_method("/blixard.v1.RaftServiceX/Vote"));
        assert!(!is_peer_method("/blixard.v1.VmService/CreateVm"));
        assert!(!is_peer_method("blixard.v1.RaftService/Vote"));
    }
}
