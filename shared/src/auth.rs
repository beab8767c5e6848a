//! Who may call what, in the words both sides share: the roles a client
//! token carries, and how a token travels on a call. The daemon decides;
//! the CLI and the console only need to name roles and send tokens.

use std::fmt;
use std::str::FromStr;

/// Metadata key that carries a client token (`authorization: Bearer …`).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The scheme in front of the token in [`AUTHORIZATION_HEADER`].
pub const BEARER_PREFIX: &str = "Bearer ";
/// Every client token starts with this, so a leaked one is recognisable
/// (secret scanners, log greps) and never mistaken for another kind of string.
pub const TOKEN_PREFIX: &str = "blxt_";
/// Every join token starts with this: a join token is not a client token,
/// and the prefix says which is which before either is looked up.
pub const JOIN_TOKEN_PREFIX: &str = "blxj_";

/// What a client token allows. Ordered: each role may do everything the
/// roles before it may (until Cedar policies refine it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads, watches and logs.
    Viewer,
    /// Also VM and node lifecycle.
    Operator,
    /// Also membership, leadership and tokens.
    Admin,
}

impl Role {
    /// Every role, weakest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The role's name on the command line, in JSON and in the proto.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected admin, operator or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// A secret (a token) that never shows in `Debug` output, so a config or
/// request that is logged whole does not leak it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends or hashes it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_order() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_secret_does_not_debug_print() {
        let s = Secret::new("blxt_hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "blxt_hunter2");
    }
}
