//! Placement constraints: the small language a VM spec uses to say which
//! nodes it may run on. Parsed here, in the crate both sides share, so the
//! CLI refuses a malformed one with the daemon's own words before sending
//! it, the API refuses it with `InvalidArgument` naming the field, and the
//! scheduler matches nodes against the parsed form only.
//!
//! Grammar (whitespace between tokens is free):
//!
//! ```text
//! key=value          key!=value
//! key in (a, b)      key not in (a, b)
//! key exists         key not exists
//! ```
//!
//! `zone` and `rack` name the node's topology fields; every other key is
//! one of the node's labels. A node without the key fails `=`, `in` and
//! `exists` and passes `!=`, `not in` and `not exists`.

use crate::limits::{MAX_CONSTRAINT_LEN, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN};
use std::fmt;

/// Most values one `in (...)` list may name.
pub const MAX_IN_VALUES: usize = 32;

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    /// The node attribute it looks at (`zone`, `rack` or a label key).
    pub key: String,
    /// What it asks of that attribute.
    pub op: Op,
}

/// What a constraint asks of a node's attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Present and equal.
    Eq(String),
    /// Absent, or present and different.
    Ne(String),
    /// Present and one of these.
    In(Vec<String>),
    /// Absent, or present and none of these.
    NotIn(Vec<String>),
    /// Present, whatever its value.
    Exists,
    /// Absent.
    NotExists,
}

/// Why a constraint text does not parse: said so a user knows what to type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(pub String);

/// The forms accepted, quoted in every parse error.
pub const FORMS: &str =
    "expected key=value, key!=value, key in (a,b), key not in (a,b), key exists or key not exists";

impl Constraint {
    /// Parses one constraint expression.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let fail = |why: &str| Err(ConstraintError(format!("{why}: {FORMS}; got {text:?}")));
        if text.len() > MAX_CONSTRAINT_LEN {
            return Err(ConstraintError(format!(
                "at most {MAX_CONSTRAINT_LEN} bytes, got {}",
                text.len()
            )));
        }
        let text_trim = text.trim();
        if text_trim.is_empty() {
            return fail("empty");
        }
        if let Some((key, value)) = text_trim.split_once("!=") {
            return Ok(Self {
                key: key_of(key, text)?,
                op: Op::Ne(value_of(value, text)?),
            });
        }
        if let Some((key, value)) = text_trim.split_once('=') {
            let value = value.strip_prefix('=').unwrap_or(value);
            return Ok(Self {
                key: key_of(key, text)?,
                op: Op::Eq(value_of(value, text)?),
            });
        }
        let words: Vec<&str> = text_trim.splitn(2, char::is_whitespace).collect();
        let [key, rest] = words.as_slice() else {
            return fail("no operator");
        };
        let key = key_of(key, text)?;
        let rest = rest.trim();
        let op = if rest == "exists" {
            Op::Exists
        } else if let Some(after) = word_prefix(rest, "not") {
            if after == "exists" {
                Op::NotExists
            } else if let Some(list) = word_prefix(after, "in") {
                Op::NotIn(list_of(list, text)?)
            } else {
                return fail("unknown operator");
            }
        } else if let Some(list) = word_prefix(rest, "in") {
            Op::In(list_of(list, text)?)
        } else {
            return fail("unknown operator");
        };
        Ok(Self { key, op })
    }

    /// Whether a node whose attribute `key` has `value` (`None`: absent)
    /// satisfies it.
    pub fn admits(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(want), Some(v)) => v == want,
            (Op::Eq(_), None) => false,
            (Op::Ne(want), v) => v != Some(want.as_str()),
            (Op::In(set), Some(v)) => set.iter().any(|s| s == v),
            (Op::In(_), None) => false,
            (Op::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            (Op::Exists, v) => v.is_some(),
            (Op::NotExists, v) => v.is_none(),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.op {
            Op::Eq(v) => write!(f, "{key}={v}"),
            Op::Ne(v) => write!(f, "{key}!={v}"),
            Op::In(vs) => write!(f, "{key} in ({})", vs.join(",")),
            Op::NotIn(vs) => write!(f, "{key} not in ({})", vs.join(",")),
            Op::Exists => write!(f, "{key} exists"),
            Op::NotExists => write!(f, "{key} not exists"),
        }
    }
}

/// Parses every constraint of a spec; the error names the index.
pub fn parse_all(texts: &[String]) -> Result<Vec<Constraint>, (usize, ConstraintError)> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Constraint::parse(t).map_err(|e| (i, e)))
        .collect()
}

/// `rest` without the leading word `word` and the space after it.
fn word_prefix<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(word)?;
    if after.is_empty() || after.starts_with(char::is_whitespace) || after.starts_with('(') {
        Some(after.trim_start())
    } else {
        None
    }
}

fn key_of(key: &str, text: &str) -> Result<String, ConstraintError> {
    let key = key.trim();
    let ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(ConstraintError(format!(
            "the key must be 1 to {MAX_LABEL_KEY_LEN} letters, digits, '.', '_', '-' or '/' ({FORMS}); got {text:?}"
        )))
    }
}

fn value_of(value: &str, text: &str) -> Result<String, ConstraintError> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= MAX_LABEL_VALUE_LEN
        && !value.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '(' | ')' | ',' | '=' | '!')
        });
    if ok {
        Ok(value.to_string())
    } else {
        Err(ConstraintError(format!(
            "the value must be 1 to {MAX_LABEL_VALUE_LEN} bytes without spaces, '=', '!', ',' or parentheses ({FORMS}); got {text:?}"
        )))
    }
}

fn list_of(list: &str, text: &str) -> Result<Vec<String>, ConstraintError> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| {
            ConstraintError(format!(
                "a list is written in parentheses, like (a,b) ({FORMS}); got {text:?}"
            ))
        })?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| value_of(v, text))
        .collect::<Result<_, _>>()?;
    if values.len() > MAX_IN_VALUES {
        return Err(ConstraintError(format!(
            "at most {MAX_IN_VALUES} values in a list, got {}",
            values.len()
        )));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Constraint {
        Constraint::parse(t).unwrap_or_else(|e| panic!("{t:?}: {e}"))
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        for (text, shown) in [
            ("zone=mars", "zone=mars"),
            (" zone == mars ", "zone=mars"),
            ("disk!=hdd", "disk!=hdd"),
            ("zone in (a, b)", "zone in (a,b)"),
            ("zone in(a,b)", "zone in (a,b)"),
            ("rack not in (r1)", "rack not in (r1)"),
            ("gpu exists", "gpu exists"),
            ("gpu not exists", "gpu not exists"),
        ] {
            assert_eq!(p(text).to_string(), shown, "{text}");
            assert_eq!(p(shown), p(text), "round trip of {text}");
        }
    }

    #[test]
    fn malformed_ones_are_refused_with_the_forms() {
        for bad in [
            "",
            "zone",
            "=mars",
            "zone=",
            "zone in a,b",
            "zone in (a,,b)",
            "zone within (a)",
            "zone not (a)",
            "zo ne=mars",
            "zone=ma rs",
            "zone in ()",
            "gpu exist",
        ] {
            let e = Constraint::parse(bad).expect_err(bad);
            assert!(e.0.contains("got"), "{bad}: {e}");
        }
    }

    #[test]
    fn absent_keys_fail_positive_forms_and_pass_negative_ones() {
        assert!(!p("zone=a").admits(None));
        assert!(p("zone!=a").admits(None));
        assert!(!p("zone in (a)").admits(None));
        assert!(p("zone not in (a)").admits(None));
        assert!(!p("zone exists").admits(None));
        assert!(p("zone not exists").admits(None));
        assert!(p("zone in (a,b)").admits(Some("b")));
        assert!(!p("zone not in (a,b)").admits(Some("b")));
        assert!(!p("zone!=a").admits(Some("a")));
    }
}
