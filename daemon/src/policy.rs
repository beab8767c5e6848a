//! Cedar policies as data: the built-in defaults (`assets/policies/`), and
//! the one function that turns a policy text and a schema into something
//! to decide with, refusing a text that does not parse or validate with
//! the line and the reason. Pure, so the API (before proposing new
//! policies), apply (re-validating them) and the authorizer share it.

use cedar_policy::{PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use std::str::FromStr;

/// The default policies: viewer reads, operator runs VM and node
/// lifecycle, admin everything; a labelled token stays within its labels.
pub const DEFAULT_POLICIES: &str = include_str!("../../assets/policies/default.cedar");
/// The schema policies are validated against.
pub const DEFAULT_SCHEMA: &str = include_str!("../../assets/policies/schema.cedarschema");

/// Why a policy text or schema was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Larger than [`blixard_shared::limits::MAX_POLICY_BYTES`].
    #[error("{what}: larger than {max} bytes")]
    TooLarge {
        /// `policies` or `schema`.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The schema does not parse.
    #[error("schema: {0}")]
    Schema(String),
    /// A policy does not parse.
    #[error("policies: {0}")]
    Parse(String),
    /// A policy does not validate against the schema.
    #[error("policies: {0}")]
    Invalid(String),
}

/// Policies ready to decide with.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The parsed, validated policies.
    pub policies: PolicySet,
    /// Their schema (also used to check the entities of each request).
    pub schema: Schema,
}

/// "line L, column C" of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// The first error of a Cedar diagnostic, with where it is in `text`.
fn describe(text: &str, err: &dyn Diagnostic) -> String {
    let offset = |d: &dyn Diagnostic| d.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let first_related = err.related().and_then(|mut r| r.next());
    let at = offset(err)
        .or_else(|| first_related.and_then(offset))
        .map(|o| format!("{}: ", position(text, o)))
        .unwrap_or_default();
    let mut message = err.to_string();
    if let Some(related) = first_related {
        message = format!("{message}: {related}");
    }
    if let Some(help) = err.help() {
        message = format!("{message} ({help})");
    }
    format!("{at}{message}")
}

/// Parses and validates (strictly) `policies` against `schema`.
pub fn compile(policies: &str, schema: &str) -> Result<Compiled, PolicyError> {
    use blixard_shared::limits::MAX_POLICY_BYTES;
    for (what, text) in [("policies", policies), ("schema", schema)] {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                what,
                max: MAX_POLICY_BYTES,
            });
        }
    }
    let (schema, _warnings) = Schema::from_cedarschema_str(schema)
        .map_err(|e| PolicyError::Schema(describe(schema, &e)))?;
    let set =
        PolicySet::from_str(policies).map_err(|e| PolicyError::Parse(describe(policies, &e)))?;
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if let Some(err) = result.validation_errors().next() {
        return Err(PolicyError::Invalid(describe(policies, err)));
    }
    Ok(Compiled {
        policies: set,
        schema,
    })
}

/// The built-in defaults, compiled.
pub fn defaults() -> Result<Compiled, PolicyError> {
    compile(DEFAULT_POLICIES, DEFAULT_SCHEMA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_compile() {
        defaults().expect("the shipped policies validate against the shipped schema");
    }

    #[test]
    fn a_broken_policy_is_refused_with_its_line() {
        let text = "permit(principal, action, resource);\npermit(principal, action == Blixard::Action::\"vm.fly\", resource);\n";
        let err = compile(text, DEFAULT_SCHEMA).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        let err = compile("permit(principal, action, resource", DEFAULT_SCHEMA).unwrap_err();
        assert!(matches!(err, PolicyError::Parse(_)), "{err}");
        let err = compile(DEFAULT_POLICIES, "namespace {").unwrap_err();
        assert!(matches!(err, PolicyError::Schema(_)), "{err}");
    }
}
