//! Tokens in the replicated state (issue "Security I"): client tokens and
//! one-time join tokens are stored under the hash of their secret, judged
//! against the command's time, and never recorded as events.

use super::command::{Action, Command, CommandOutcome, NodeRegistration, Rejection, RejectionCode};
use super::fleet::{Fleet, JOIN_TOKEN_INVALID};
use super::model::*;
use blixard_shared::auth::Role;
use blixard_shared::limits::{MAX_JOIN_TOKENS, MAX_TOKENS};
use std::collections::BTreeMap;

/// The commands' time in these tests.
const NOW: u64 = 1_000_000;

/// A fleet, the next revision to apply at and the time commands carry.
struct Run {
    fleet: Fleet,
    revision: u64,
    now: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            fleet: Fleet::default(),
            revision: 0,
            now: NOW,
        }
    }

    fn apply(&mut self, action: Action) -> Result<CommandOutcome, Rejection> {
        self.revision += 1;
        let cmd = Command {
            time_ms: self.now,
            trace: None,
            action,
        };
        self.fleet.apply(self.revision, &cmd)
    }

    fn ok(&mut self, action: Action) -> CommandOutcome {
        let shown = format!("{action:?}");
        self.apply(action)
            .unwrap_or_else(|r| panic!("{shown} refused: {r}"))
    }

    /// Applies an action that must be refused, checks that nothing but the
    /// revision changed, and returns the refusal.
    fn refused(&mut self, action: Action) -> Rejection {
        let mut before = self.fleet.clone();
        let shown = format!("{action:?}");
        let Err(rejection) = self.apply(action) else {
            panic!("{shown} was accepted");
        };
        before.revision = self.fleet.revision;
        assert_eq!(self.fleet, before, "refused {shown} changed the state");
        rejection
    }

    fn code(&mut self, action: Action) -> RejectionCode {
        self.refused(action).code
    }
}

/// A well-formed hash (64 lowercase hex digits), distinct per `n`.
fn hash(n: usize) -> String {
    format!("{n:064x}")
}

fn create(name: &str, n: usize, expires_ms: Option<u64>) -> Action {
    Action::CreateToken {
        name: name.into(),
        role: Role::Operator,
        hash: hash(n),
        expires_ms,
        labels: Default::default(),
    }
}

fn create_join(n: usize, expires_ms: u64) -> Action {
    Action::CreateJoinToken {
        hash: hash(n),
        expires_ms,
    }
}

fn redeem(n: usize, node_id: u64) -> Action {
    Action::RedeemJoinToken {
        hash: hash(n),
        node_id,
    }
}

#[test]
fn a_token_is_stored_by_hash_and_shown_without_it() {
    let mut run = Run::new();
    let out = run.ok(create("ci", 1, Some(NOW + 10)));
    let expected = TokenInfo {
        name: "ci".into(),
        role: Role::Operator,
        created_ms: NOW,
        expires_ms: Some(NOW + 10),
        labels: Default::default(),
    };
    assert_eq!(out, CommandOutcome::Token(expected));
    assert!(
        !format!("{out:?}").contains(&hash(1)),
        "no hash in the outcome"
    );
    run.ok(create("admin-1", 2, None));
    let names: Vec<&str> = run.fleet.tokens().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin-1", "ci"], "listed by name");
    assert_eq!(
        run.fleet.token_by_hash(&hash(1), NOW).map(|t| t.role),
        Some(Role::Operator)
    );
    assert!(run.fleet.token_by_hash(&hash(3), NOW).is_none());
    assert!(run.fleet.events.is_empty(), "tokens record no events");
}

#[test]
fn tokens_are_refused_for_taken_names_and_secrets_bad_fields_and_past_expiry() {
    let mut run = Run::new();
    run.ok(create("ci", 1, None));
    assert_eq!(
        run.code(create("ci", 2, None)),
        RejectionCode::AlreadyExists
    );
    assert_eq!(
        run.code(create("other", 1, None)),
        RejectionCode::AlreadyExists
    );
    assert_eq!(
        run.code(create("Not A Label", 2, None)),
        RejectionCode::InvalidArgument
    );
    let mut bad_hash = create("ok", 2, None);
    if let Action::CreateToken { hash, .. } = &mut bad_hash {
        *hash = hash.to_uppercase().replace('0', "A");
    }
    assert_eq!(run.code(bad_hash), RejectionCode::InvalidArgument);
    let past = run.refused(create("late", 2, Some(NOW)));
    assert_eq!(past.code, RejectionCode::InvalidArgument);
    assert!(past.message.starts_with("expires_ms"), "{past}");
    run.ok(create("late", 2, Some(NOW + 1)));
}

#[test]
fn a_token_expires_at_its_time_and_stays_listed_until_revoked() {
    let mut run = Run::new();
    run.ok(create("short", 1, Some(NOW + 10)));
    assert!(run.fleet.token_by_hash(&hash(1), NOW + 9).is_some());
    assert!(run.fleet.token_by_hash(&hash(1), NOW + 10).is_none());
    assert_eq!(run.fleet.tokens().count(), 1);
    assert_eq!(
        run.ok(Action::RevokeToken {
            name: "short".into()
        }),
        CommandOutcome::Done
    );
    assert_eq!(run.fleet.tokens().count(), 0);
    let again = Action::RevokeToken {
        name: "short".into(),
    };
    assert_eq!(run.code(again), RejectionCode::NotFound);
    let bad = Action::RevokeToken { name: "-x".into() };
    assert_eq!(run.code(bad), RejectionCode::InvalidArgument);
}

#[test]
fn the_cluster_holds_at_most_max_tokens() {
    let mut run = Run::new();
    for n in 0..MAX_TOKENS {
        run.ok(create(&format!("t{n}"), n, None));
    }
    let one_more = create("more", MAX_TOKENS, None);
    assert_eq!(run.code(one_more.clone()), RejectionCode::ResourceExhausted);
    run.ok(Action::RevokeToken { name: "t0".into() });
    run.ok(one_more);
}

#[test]
fn a_join_token_is_redeemed_once_by_a_new_node() {
    let mut run = Run::new();
    run.ok(Action::RegisterNode(NodeRegistration {
        id: 1,
        address: "10.0.0.1:7000".into(),
        capacity: Resources::default(),
        labels: BTreeMap::new(),
        zone: String::new(),
        rack: String::new(),
        backend: "process".into(),
        version: String::new(),
    }));
    let events = run.fleet.events.len();
    run.ok(create_join(1, NOW + 60_000));
    assert_eq!(
        run.code(create_join(1, NOW + 60_000)),
        RejectionCode::AlreadyExists
    );
    assert_eq!(
        run.code(create_join(2, NOW)),
        RejectionCode::InvalidArgument
    );
    assert_eq!(run.code(redeem(1, 0)), RejectionCode::FailedPrecondition);
    assert_eq!(run.code(redeem(1, 1)), RejectionCode::FailedPrecondition);
    assert_eq!(run.ok(redeem(1, 7)), CommandOutcome::Done);
    assert_eq!(run.fleet.join_tokens[&hash(1)].used_by, Some(7));
    assert_eq!(
        run.fleet.events.len(),
        events,
        "join tokens record no events"
    );
}

#[test]
fn unknown_used_and_expired_join_tokens_get_one_refusal() {
    let mut run = Run::new();
    run.ok(create_join(1, NOW + 10));
    run.ok(create_join(2, NOW + 10));
    run.ok(redeem(1, 7));
    let used = run.refused(redeem(1, 8));
    let unknown = run.refused(redeem(3, 8));
    run.now = NOW + 10;
    let expired = run.refused(redeem(2, 8));
    for r in [used, unknown, expired] {
        assert_eq!(r.code, RejectionCode::Unauthenticated);
        assert_eq!(r.message, JOIN_TOKEN_INVALID);
    }
    // Node id 0 with an invalid token: the token is judged first.
    assert_eq!(run.code(redeem(3, 0)), RejectionCode::Unauthenticated);
}

#[test]
fn spent_and_expired_join_tokens_make_room_and_are_dropped_by_the_next_create() {
    let mut run = Run::new();
    for n in 0..MAX_JOIN_TOKENS {
        let expires = if n < 2 { NOW + 10 } else { NOW + 60_000 };
        run.ok(create_join(n, expires));
    }
    let more = |n| create_join(n, NOW + 60_000);
    assert_eq!(run.code(more(1000)), RejectionCode::ResourceExhausted);
    run.ok(redeem(5, 7));
    run.now = NOW + 10;
    // Refused for its own reason: nothing is dropped.
    assert_eq!(
        run.code(create_join(1001, NOW)),
        RejectionCode::InvalidArgument
    );
    assert_eq!(run.fleet.join_tokens.len(), MAX_JOIN_TOKENS);
    run.ok(more(1000));
    assert_eq!(run.fleet.join_tokens.len(), MAX_JOIN_TOKENS - 3 + 1);
    for n in [0, 1, 5] {
        assert!(!run.fleet.join_tokens.contains_key(&hash(n)), "{n} dropped");
    }
    run.ok(more(1001));
    run.ok(more(1002));
    assert_eq!(run.code(more(1003)), RejectionCode::ResourceExhausted);
}

#[test]
fn a_retried_token_create_is_answered_with_its_first_outcome() {
    let mut run = Run::new();
    let retryable = Action::Retryable {
        request_id: "cli-1:1".into(),
        action: Box::new(create("ci", 1, None)),
    };
    let first = run.ok(retryable.clone());
    assert_eq!(run.ok(retryable.clone()), first);
    assert_eq!(run.fleet.tokens().count(), 1);
    run.ok(Action::RevokeToken { name: "ci".into() });
    assert_eq!(
        run.code(retryable),
        RejectionCode::NotFound,
        "revoked since"
    );
}

#[test]
fn a_snapshot_from_before_tokens_still_loads() {
    let mut run = Run::new();
    run.ok(create("ci", 1, None));
    run.ok(create_join(1, NOW + 10));
    let mut value = serde_json::to_value(&run.fleet).expect("encode");
    let object = value.as_object_mut().expect("an object");
    object.remove("tokens");
    object.remove("join_tokens");
    let old: Fleet = serde_json::from_value(value).expect("decode");
    assert!(old.tokens.is_empty() && old.join_tokens.is_empty());
    assert_eq!(old.check_invariants(), Ok(()));
}
