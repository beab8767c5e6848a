//! The node's long-lived tasks, supervised. A task that ends while the node
//! is not stopping (a panic, a server that failed, a loop that returned) is
//! fatal: before, it was only logged, and the daemon lived on as a zombie
//! that health checks still called serving. The first fatal reason is
//! published; `blixardd` then stops cleanly and exits non-zero, so its
//! service manager restarts it.

use crate::shutdown::Shutdown;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Whether a task is meant to run until the node stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Ending before the node stops is fatal.
    UntilShutdown,
    /// Ends on its own when done (a join); only a panic is fatal.
    UntilDone,
}

/// Reports a fatal failure of the node (the first one wins).
#[derive(Debug, Clone)]
pub(crate) struct FatalReporter {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl FatalReporter {
    /// Records `why` as the node's fatal failure unless one was recorded.
    pub fn report(&self, why: String) {
        tracing::error!(reason = %why, "fatal: the node stops");
        self.tx.send_if_modified(|fatal| {
            if fatal.is_some() {
                return false;
            }
            *fatal = Some(why);
            true
        });
    }
}

/// The supervised tasks of one node.
pub(crate) struct Tasks {
    watchers: Vec<JoinHandle<()>>,
    shutdown: Shutdown,
    fatal: FatalReporter,
}

impl Tasks {
    /// Tasks of a node that stops on `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        let (tx, _) = watch::channel(None);
        Self {
            watchers: Vec::new(),
            shutdown,
            fatal: FatalReporter { tx: Arc::new(tx) },
        }
    }

    /// Where fatal failures found outside a task's end are reported.
    pub fn fatal_reporter(&self) -> FatalReporter {
        self.fatal.clone()
    }

    /// A receiver of the fatal failure, `None` while there is none.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.tx.subscribe()
    }

    /// Runs `task` named `name`, watched as `lifetime` says.
    pub fn spawn<F>(&mut self, name: &'static str, lifetime: Lifetime, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let inner = tokio::spawn(task);
        let shutdown = self.shutdown.clone();
        let fatal = self.fatal.clone();
        self.watchers.push(tokio::spawn(async move {
            let ended = inner.await;
            if shutdown.is_shutdown() {
                return;
            }
            match (ended, lifetime) {
                (Ok(()), Lifetime::UntilDone) => {}
                (Ok(()), Lifetime::UntilShutdown) => {
                    fatal.report(format!("the {name} task ended while the node runs"))
                }
                (Err(e), _) if e.is_panic() => fatal.report(format!("the {name} task panicked")),
                (Err(e), _) => fatal.report(format!("the {name} task failed: {e}")),
            }
        }));
    }

    /// Waits for every task to end (after the node's stop was triggered).
    pub async fn join(self) {
        for watcher in self.watchers {
            let _ = watcher.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn first_fatal(mut rx: watch::Receiver<Option<String>>) -> String {
        let fatal = rx.wait_for(Option::is_some).await.expect("reporter alive");
        fatal.clone().unwrap_or_default()
    }

    #[tokio::test]
    async fn a_task_that_ends_or_panics_while_the_node_runs_is_fatal() {
        let (_trigger, shutdown) = crate::shutdown::channel();
        let mut tasks = Tasks::new(shutdown);
        let fatal = tasks.fatal();
        tasks.spawn("join", Lifetime::UntilDone, async {});
        tasks.spawn("scheduler", Lifetime::UntilShutdown, async {});
        let why = first_fatal(fatal).await;
        assert_eq!(why, "the scheduler task ended while the node runs");

        let (_trigger, shutdown) = crate::shutdown::channel();
        let mut tasks = Tasks::new(shutdown);
        let fatal = tasks.fatal();
        tasks.spawn("agent", Lifetime::UntilDone, async { panic!("boom") });
        assert_eq!(first_fatal(fatal).await, "the agent task panicked");
    }

    #[tokio::test]
    async fn tasks_that_end_with_the_node_are_not_fatal() {
        let (trigger, shutdown) = crate::shutdown::channel();
        let mut tasks = Tasks::new(shutdown.clone());
        let fatal = tasks.fatal();
        let mut stop = shutdown;
        tasks.spawn("agent", Lifetime::UntilShutdown, async move {
            stop.recv().await
        });
        trigger.trigger();
        tasks.join().await;
        assert_eq!(*fatal.borrow(), None);
    }
}
