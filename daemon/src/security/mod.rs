//! The trust boundary: the cluster PKI (`pki`), token secrets (`secrets`),
//! what each method needs (`rules`), the layer that checks every call
//! (`gate`), the rules for daemon-to-daemon messages (`peer`), the TLS
//! configuration of servers and clients (`tls`) and a joining node's
//! side (`join`); per-identity request rates (`identity`, `ratelimit`,
//! applied by `rate_layer`). `docs/security.md` has the threat model.

pub mod admit;
pub mod authz;
pub mod gate;
pub mod identity;
pub mod join;
pub mod peer;
pub mod pki;
pub mod rate_layer;
pub mod ratelimit;
pub mod rules;
pub mod secrets;
pub mod tls;

use blixard_shared::auth::Role;

/// Who made a call, as the gate established it; in each request's
/// extensions for the handlers that need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A client token.
    Token {
        /// The token's name (never its secret).
        name: String,
        /// Its role.
        role: Role,
        /// Its scoping labels.
        labels: std::collections::BTreeMap<String, String>,
    },
    /// A cluster node, by the id its certificate names.
    Node(u64),
    /// Nobody was asked: an open method, or an `--insecure` cluster.
    Anonymous,
}

/// Metadata key on a forwarded write naming the client it is forwarded for
/// (`token:NAME`); trusted only from a member node, which authenticated
/// the client itself. For the leader's logs now, the audit trail later.
pub const ON_BEHALF_OF_HEADER: &str = "x-blixard-on-behalf-of";

impl Caller {
    /// How [`ON_BEHALF_OF_HEADER`] names this caller (never a secret).
    pub fn describe(&self) -> String {
        match self {
            Caller::Token { name, .. } => format!("token:{name}"),
            Caller::Node(id) => format!("node:{id}"),
            Caller::Anonymous => "anonymous".into(),
        }
    }

    /// The caller of `req` (Anonymous when the gate did not run, as in
    /// unit tests of handlers).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }
}
