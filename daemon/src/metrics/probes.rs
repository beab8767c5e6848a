//! What `/healthz` and `/readyz` on the metrics port answer, as the node's
//! supervision (`server::tasks`) and its health judge (`server::health`)
//! publish it. Here, beside the HTTP server that reads it, so the metrics
//! module imports nothing from the server above it.

use tokio::sync::watch;

/// Whether the node should take traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// It knows a leader that a quorum follows and has applied what it
    /// committed.
    Ready,
    /// Why not (no leader, catching up, a leader without its quorum).
    NotReady(String),
}

/// The receiving ends the probes read.
#[derive(Debug, Clone)]
pub struct Probes {
    /// The health judge's verdict.
    pub ready: watch::Receiver<Readiness>,
    /// Set once a long-lived task of the node failed; the process stops.
    pub fatal: watch::Receiver<Option<String>>,
}

impl Probes {
    /// `/healthz`: `None` while the node's tasks all live, else why not.
    pub fn unhealthy(&self) -> Option<String> {
        self.fatal.borrow().clone()
    }

    /// `/readyz`: `None` when ready, else why not.
    pub fn unready(&self) -> Option<String> {
        if let Some(fatal) = self.unhealthy() {
            return Some(fatal);
        }
        match &*self.ready.borrow() {
            Readiness::Ready => None,
            Readiness::NotReady(why) => Some(why.clone()),
        }
    }
}
