//! Graceful stops in the background. A graceful stop waits for the guest
//! (up to `vm_stop_timeout_ms`, then QEMU's quit and a kill): awaited inline,
//! N stops held the agent for N times that, during which nothing started,
//! nothing reported, and a lapse of the lease went unseen. Each stop now
//! runs as a task of its own, at most [`MAX_CONCURRENT_STOPS`] at once, and
//! the agent's pass goes on; when a stop ends it wakes the agent.

use crate::backend::VmBackend;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

/// Most graceful stops in flight at once on one host; more wait for a slot.
/// Each holds a QMP connection and a timer, little beside a VM.
pub const MAX_CONCURRENT_STOPS: usize = 16;

/// The graceful stops in flight, by VM name.
pub struct Stops {
    tasks: BTreeMap<String, JoinHandle<bool>>,
    slots: Arc<Semaphore>,
    done: Arc<Notify>,
}

impl Default for Stops {
    fn default() -> Self {
        Self {
            tasks: BTreeMap::new(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_STOPS)),
            done: Arc::new(Notify::new()),
        }
    }
}

impl Stops {
    /// Starts a graceful stop of `name` unless one is in flight already.
    pub fn begin<B: VmBackend>(&mut self, backend: &Arc<B>, name: &str, timeout: Duration) {
        if self.tasks.contains_key(name) {
            return;
        }
        let (backend, slots, done) = (backend.clone(), self.slots.clone(), self.done.clone());
        let vm = name.to_string();
        let task = tokio::spawn(async move {
            // The semaphore is never closed; without a permit, stop anyway.
            let _permit = slots.acquire_owned().await.ok();
            let stopped = match backend.stop(&vm, timeout).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(vm = %vm, error = %e, "stopping vm failed; trying again");
                    false
                }
            };
            done.notify_one();
            stopped
        });
        self.tasks.insert(name.to_string(), task);
    }

    /// Whether a graceful stop of `name` is in flight.
    pub fn in_flight(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// Gives up on the graceful stop of `name` (the caller kills it).
    pub fn abandon(&mut self, name: &str) {
        if let Some(task) = self.tasks.remove(name) {
            task.abort();
        }
    }

    /// The names whose stop has ended since the last call, each with
    /// whether the instance stopped (a failed stop is tried again).
    pub fn finished(&mut self) -> Vec<(String, bool)> {
        let ended: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|name| {
                let task = self.tasks.remove(&name)?;
                // Finished: `now_or_never` cannot miss its result.
                let stopped = futures_util::FutureExt::now_or_never(task)
                    .and_then(Result::ok)
                    .unwrap_or(false);
                Some((name, stopped))
            })
            .collect()
    }

    /// Resolves when a stop ends (wakes the agent's loop).
    pub fn wait_any(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let done = self.done.clone();
        async move { done.notified().await }
    }
}

impl Drop for Stops {
    fn drop(&mut self) {
        // The agent is gone (node stopping): VMs outlive their daemon by
        // design, so a graceful stop in flight is not finished for it.
        for task in self.tasks.values() {
            task.abort();
        }
    }
}
