//! What a call acted on, noted while it runs: the audit layer gives each
//! audited call a [`Note`] (in the request's extensions, for the gate,
//! and as the task's [`NOTE`], for the handler), and reads it when the
//! call's answer is ready.

use crate::security::Caller;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    /// The note of the audited call this task handles (unset elsewhere).
    pub static NOTE: Arc<Note>;
}

/// One call's note.
#[derive(Debug, Default)]
pub struct Note {
    inner: Mutex<Noted>,
}

/// What a note holds.
#[derive(Debug, Default, Clone)]
pub struct Noted {
    /// Who the gate found the caller to be.
    pub caller: Option<Caller>,
    /// The resource the call acted on.
    pub target: Option<String>,
    /// The action asked about, when a handler named it.
    pub action: Option<String>,
    /// A refusal was noted: its target stays.
    denied: bool,
}

impl Note {
    /// A copy of what was noted.
    pub fn read(&self) -> Noted {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes the caller the gate established.
    pub fn set_caller(&self, caller: Caller) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).caller = Some(caller);
    }

    fn decision(&self, action: &str, target: impl FnOnce() -> String, allowed: bool) {
        let mut noted = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if noted.denied {
            return;
        }
        if !allowed || noted.target.is_none() {
            noted.target = Some(target());
            noted.action = Some(action.to_string());
            noted.denied = !allowed;
        }
    }
}

/// Notes an authorization decision of the current call: the first one
/// names the target, a refusal replaces it (and stays).
pub fn decision(action: &str, target: impl FnOnce() -> String, allowed: bool) {
    let _ = NOTE.try_with(|note| note.decision(action, target, allowed));
}

/// Names the current call's target more precisely than its authorization
/// did (`Token::"ci"` where the policies were asked about the cluster).
pub fn target(target: String) {
    let _ = NOTE.try_with(|note| {
        let mut noted = note.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !noted.denied {
            noted.target = Some(target);
        }
    });
}
