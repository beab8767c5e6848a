//! Stopping a node: one [`ShutdownTrigger`] that [`crate::server::NodeHandle`]
//! holds, and a [`Shutdown`] that every long-lived task and call of the node
//! holds and waits on (as mini-redis's `Shutdown`). A type of its own rather
//! than a bare `watch::Receiver<bool>`, so "has the node begun to stop" and
//! "wait until it does" read the same everywhere and cannot be confused with
//! any other flag.

use std::future::Future;
use tokio::sync::watch;

/// The sending side: starts the node's stop once.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// The receiving side, cloned into every task that must end with the node.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A trigger and the first listener of it.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Tells every [`Shutdown`] that the node is stopping.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Another listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// Whether the node has begun to stop.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the node begins to stop, at once if it already has or
    /// if the trigger is gone. Cancel-safe: use it in `select!` loops.
    pub async fn recv(&mut self) {
        // An error means the trigger is gone: the node is gone too.
        let _ = self.rx.wait_for(|stopping| *stopping).await;
    }

    /// [`Shutdown::recv`] as a future that owns its own listener, for
    /// servers that take a `'static` stop signal.
    pub fn signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut own = self.clone();
        async move { own.recv().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_trigger_even_one_subscribed_late() {
        let (trigger, mut first) = channel();
        assert!(!first.is_shutdown());
        let signal = first.signal();
        trigger.trigger();
        first.recv().await;
        signal.await;
        let mut late = trigger.subscribe();
        assert!(late.is_shutdown());
        late.recv().await;
    }

    #[tokio::test]
    async fn a_dropped_trigger_ends_the_wait() {
        let (trigger, mut listener) = channel();
        drop(trigger);
        listener.recv().await;
    }
}
